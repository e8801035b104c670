"""Measure on this machine the costs the simulator's defaults use (drizzle/sim/model.py).

Every number is CPU time of the event loop's thread (``time.thread_time``), so work
that zmq's I/O threads or the executor's worker threads do elsewhere is not counted,
and each is the median over ``--rounds`` rounds:

* messages: a node sending and receiving over zmq (tcp, loopback, no CURVE): encode and
  send, and receive and decode, per message, for a 74-byte ``TaskResult`` and a message
  with a 64 KiB block (the difference gives the per-byte costs); plus what a ``Node``
  adds on top of its transport (outbox, sender task, receive loop, dispatch to the
  actor), measured end to end over zmq and split evenly between the two sides;
* the driver's handling of one result (its own ``results_s`` counter, ``local[2]``);
* one event between two actors of one node (a ``Node`` posting to itself);
* planning and placing a group (``DagState.plan_group`` and
  ``GroupSchedulerState.place``): a least-squares fit of fixed + per micro-batch +
  per task over groups of 1 to 50 micro-batches of 4 to 128 tasks;
* an executor's event-loop work per task (launch handling, local scheduling, handing
  the task to a worker and taking its output back, the result message): an
  ``ExecutorActor`` fed one launch of 400 one-partition tasks, its messages captured;
* a task's pipeline (``execute``: unpickle, sum integers, pickle): fixed + per byte of
  input and output, from partitions of 100 and 20,000 integers.

    python scripts/calibrate_sim.py [--rounds 5] [--json calibration.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import numpy as np

from drizzle import Context
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.node import Actor, Node
from drizzle.executor.runner import PipelineCache, PreparedEnv, execute
from drizzle.executor.store import BlockStore
from drizzle.scheduler.dag import BatchRequest, DagState
from drizzle.scheduler.group import GroupSchedulerState
from drizzle.transport.base import Transport, TransportOptions
from drizzle.transport.inproc import InProcNetwork, InProcTransport
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.codec import Envelope, encode
from drizzle.wire.messages import InlineBlock, LaunchGroup, MapOutputReady, TaskResult

SMALL = TaskResult(1, 2, 3, 4, 5, 0, "tcp://127.0.0.1:40001", b"x" * 20)
LARGE = MapOutputReady(1, 2, 3, "tcp://127.0.0.1:40001", (65536,), (InlineBlock(0, b"y" * 65536),))


def cpu() -> float:
    return time.thread_time()


# ----------------------------------------------------------------------------- messages


async def zmq_pair() -> tuple[Transport, Transport]:
    a = ZmqTransport("tcp://127.0.0.1:0", TransportOptions())
    b = ZmqTransport("tcp://127.0.0.1:0", TransportOptions())
    await a.start()
    await b.start()
    for _ in range(50):  # connect and warm up
        await a.send(b.address, Envelope("x", "y", SMALL))
        await b.recv()
    return a, b


async def transport_costs(message: Any, n: int, rounds: int) -> tuple[float, float]:
    """(send, receive) CPU seconds per message over zmq, transport level."""
    a, b = await zmq_pair()
    env = Envelope("driver", "executor", message)
    sends, recvs = [], []
    try:
        for _ in range(rounds):
            t0 = cpu()
            for _ in range(n):
                await a.send(b.address, env)
            t1 = cpu()
            for _ in range(n):
                await b.recv()
            t2 = cpu()
            sends.append((t1 - t0) / n)
            recvs.append((t2 - t1) / n)
    finally:
        await a.close()
        await b.close()
    return statistics.median(sends), statistics.median(recvs)


class Counter(Actor):
    name = "counter"

    def __init__(self, node: Node, want: int) -> None:
        super().__init__(node)
        self.want = want
        self.seen = 0
        self.done = asyncio.Event()

    def receive(self, peer: str, sender: str, message: Any) -> None:
        self.seen += 1
        if self.seen >= self.want:
            self.done.set()


async def per_message(
    sender: Node, to: str, counter: Counter, message: Any, n: int, rounds: int
) -> float:
    """Median over ``rounds`` of the CPU seconds per message of posting ``n`` messages
    from ``sender`` to ``counter`` (at node ``to``) until all have arrived."""
    samples = []
    for _ in range(rounds):
        counter.seen = 0
        counter.done.clear()
        t0 = cpu()
        for _ in range(n):
            sender.post(to, "counter", message, "bench")
        async with asyncio.timeout(30):
            await counter.done.wait()
        samples.append((cpu() - t0) / n)
    return statistics.median(samples)


async def node_costs(message: Any, n: int, rounds: int) -> float:
    """CPU seconds per message from ``Node.post`` on one node to the actor on another."""
    sender = Node(ZmqTransport("tcp://127.0.0.1:0", TransportOptions()))
    receiver = Node(ZmqTransport("tcp://127.0.0.1:0", TransportOptions()))
    counter = Counter(receiver, 50)
    receiver.add(counter)
    await sender.start()
    await receiver.start()
    for _ in range(50):  # connect and warm up
        sender.post(receiver.address, "counter", message, "bench")
    async with asyncio.timeout(30):
        await counter.done.wait()
    counter.want = n
    try:
        return await per_message(sender, receiver.address, counter, message, n, rounds)
    finally:
        await sender.close()
        await receiver.close()


async def internal_cost(n: int, rounds: int) -> float:
    """CPU seconds per event a node posts to one of its own actors."""
    node = Node(InProcTransport("inproc://calibrate/self", network=InProcNetwork()))
    counter = Counter(node, n)
    node.add(counter)
    await node.start()
    try:
        return await per_message(node, node.address, counter, SMALL, n, rounds)
    finally:
        await node.close()


# ----------------------------------------------------------------------------- driver


async def result_handling(rounds: int) -> float:
    """The driver's seconds per result, by its own counter, on ``local[2]``."""
    samples = []
    for _ in range(rounds):
        async with Context("local[2]") as ctx:
            nums = ctx.parallelize(range(800), num_partitions=8)
            batches = [nums.map(lambda x, i=i: x + i) for i in range(60)]
            await ctx.run_jobs(batches, sum, group_size=20)
            driver = ctx.cluster.driver
            assert driver is not None
            samples.append(driver.results_s / (60 * 8))
    return statistics.median(samples)


async def group_overhead(rounds: int) -> float:
    """CPU seconds per group of all the work a group adds, end to end in one process:
    CPU per micro-batch at G=1 minus at G=100, on ``local[1]`` with one task each."""
    samples = []
    for _ in range(rounds):
        async with Context("local[1]") as ctx:
            nums = ctx.parallelize(list(range(100)), num_partitions=1).cache()
            await ctx.run_jobs([nums.map(lambda x: x)], sum)
            per_batch = []
            for group_size in (1, 100):
                batches = [nums.map(lambda x, i=i: x + i) for i in range(200)]
                t0 = time.process_time()
                await ctx.run_jobs(batches, sum, group_size=group_size)
                per_batch.append((time.process_time() - t0) / 200)
            samples.append(per_batch[0] - per_batch[1])
    return statistics.median(samples)


def plan_and_place(rounds: int) -> tuple[float, float, float]:
    """(fixed, per micro-batch, per task) CPU seconds of planning and placing a group."""
    ctx = Context("local[1]")  # only makes datasets: never started
    rows: list[tuple[int, int, float]] = []
    for batches, tasks_per_batch in (
        (1, 4),
        (1, 32),
        (1, 128),
        (10, 4),
        (10, 64),
        (50, 4),
        (50, 32),
        (20, 128),
    ):
        samples = []
        for _ in range(rounds):
            dag = DagState()
            group = GroupSchedulerState()
            for i in range(32):
                group.register(f"tcp://10.0.0.{i}:7000", 4, 0.0)
            nums = ctx.parallelize(range(tasks_per_batch * 10), num_partitions=tasks_per_batch)
            requests = [
                BatchRequest(b, nums.map(lambda x, b=b: x + b), sum) for b in range(batches)
            ]
            t0 = cpu()
            plan = dag.plan_group(0, requests)
            group.place(plan)
            samples.append(cpu() - t0)
        rows.append((batches, group.tasks_placed_one_by_one(plan), statistics.median(samples)))
    a = np.array([[1.0, b, t] for b, t, _ in rows])
    y = np.array([s for _, _, s in rows])
    (fixed, per_batch, per_task), *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(fixed), float(per_batch), float(per_task)


# ----------------------------------------------------------------------------- executor


def one_launch(ctx: Context, tasks: int, executor: str) -> LaunchGroup:
    nums = ctx.parallelize(range(10), num_partitions=1)
    requests = [BatchRequest(b, nums.map(lambda x, b=b: x + b), sum) for b in range(tasks)]
    group = GroupSchedulerState()
    group.register(executor, 1, 0.0)
    placement = group.place(DagState().plan_group(0, requests))
    return placement.launches[executor]


class ResultSink:
    """A network hook that takes every message and counts the results."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.results = 0
        self.done = asyncio.Event()

    def capture(self, src: InProcTransport, dst: InProcTransport, env: Envelope) -> bool:
        if isinstance(env.message, TaskResult):
            self.results += 1
            if self.results == self.want:
                self.done.set()
        return True  # taken: nothing reaches the driver side


async def executor_overhead(tasks: int, rounds: int) -> tuple[float, float]:
    """(loop CPU per task, worker time per task) of an ExecutorActor with one slot."""
    ctx = Context("local[1]")
    samples, worker = [], []
    for r in range(rounds):
        sink = ResultSink(tasks)
        network = InProcNetwork(hook=sink.capture)
        driver = InProcTransport(f"inproc://calibrate-{r}/driver", network=network)
        await driver.start()
        node = Node(InProcTransport(f"inproc://calibrate-{r}/executor", network=network))
        actor = ExecutorActor(node, driver.address, 1)
        node.add(actor)
        await node.start()
        actor.state.executor_id = actor.executor_id
        launch = one_launch(ctx, tasks, actor.executor_id)
        t0 = cpu()
        actor.receive(driver.address, "group", launch)
        async with asyncio.timeout(60):
            await sink.done.wait()
        samples.append((cpu() - t0) / tasks)
        worker.append((actor.counters["compute_s"] + actor.counters["deserialize_s"]) / tasks)
        await node.close()
        await driver.close()
    return statistics.median(samples), statistics.median(worker)


def pipeline_costs(rounds: int) -> tuple[float, float]:
    """(fixed, per byte) CPU seconds of ``execute`` for a task summing integers."""
    ctx = Context("local[1]")
    points: list[tuple[int, float]] = []
    for size in (100, 20_000):
        nums = ctx.parallelize(list(range(size)), num_partitions=1)
        plan = DagState().plan_group(0, [BatchRequest(0, nums.map(lambda x: x + 1), sum)])
        stage = plan.batches[0].stages[0]
        blobs = {**plan.payloads, **plan.blobs}
        digest = stage.tasks[0].blobs[0]
        samples = []
        for _ in range(rounds):
            pipelines = PipelineCache(blobs)
            env = PreparedEnv(BlockStore(), blobs, {}, {})
            execute(pipelines, stage.payload, 0, env, 0.0)  # unpickles the pipeline once
            n = 2000 if size <= 100 else 20
            t0 = cpu()
            for _ in range(n):
                output = execute(pipelines, stage.payload, 0, env, 0.0)[0]
            samples.append((cpu() - t0) / n)
        assert isinstance(output, bytes)
        points.append((len(blobs[digest]) + len(output), statistics.median(samples)))
    (b0, t0), (b1, t1) = points
    per_byte = (t1 - t0) / (b1 - b0)
    return t0 - per_byte * b0, per_byte


# ----------------------------------------------------------------------------- report


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.2f} µs"


def ns(seconds: float) -> str:
    return f"{seconds * 1e9:.3f} ns"


async def measure_async(rounds: int) -> dict[str, float]:
    small_send, small_recv = await transport_costs(SMALL, 2000, rounds)
    large_send, large_recv = await transport_costs(LARGE, 200, rounds)
    small_node = await node_costs(SMALL, 2000, rounds)
    small_size = len(encode(Envelope("driver", "executor", SMALL)))
    large_size = len(encode(Envelope("driver", "executor", LARGE)))
    node_extra = max(0.0, small_node - small_send - small_recv)
    send_byte = max(0.0, (large_send - small_send) / (large_size - small_size))
    recv_byte = max(0.0, (large_recv - small_recv) / (large_size - small_size))
    loop_task, worker_task = await executor_overhead(400, rounds)
    return {
        "zmq_send_s": small_send,
        "zmq_recv_s": small_recv,
        "node_end_to_end_s": small_node,
        "node_overhead_s": node_extra,
        "send_s": small_send + node_extra / 2,
        "recv_s": small_recv + node_extra / 2,
        "send_byte_s": send_byte,
        "recv_byte_s": recv_byte,
        "internal_s": await internal_cost(2000, rounds),
        "handle_s": await result_handling(rounds),
        "group_end_to_end_s": await group_overhead(rounds),
        "task_overhead_s": loop_task,
        "worker_per_task_s": worker_task,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        found = runner.run(measure_async(args.rounds))
    found["plan_fixed_s"], found["batch_plan_s"], found["task_plan_s"] = plan_and_place(args.rounds)
    found["group_s"] = max(found["plan_fixed_s"], found["group_end_to_end_s"])
    found["task_s"], found["byte_s"] = pipeline_costs(args.rounds)
    rows = [
        ("zmq send (encode + send), 74 B", us(found["zmq_send_s"]), ""),
        ("zmq receive (read + decode), 74 B", us(found["zmq_recv_s"]), ""),
        ("Node post -> actor over zmq, 74 B", us(found["node_end_to_end_s"]), ""),
        ("  of which Node (outbox, loops, dispatch)", us(found["node_overhead_s"]), ""),
        ("send one message", us(found["send_s"]), "CpuModel.send_s"),
        ("send, per byte", ns(found["send_byte_s"]), "CpuModel.send_byte_s"),
        ("receive one message", us(found["recv_s"]), "CpuModel.recv_s"),
        ("receive, per byte", ns(found["recv_byte_s"]), "CpuModel.recv_byte_s"),
        ("driver: handle one result", us(found["handle_s"]), "CpuModel.handle_s"),
        ("event between actors of a node", us(found["internal_s"]), "CpuModel.internal_s"),
        ("plan + place a group, fixed", us(found["plan_fixed_s"]), ""),
        ("a group end to end (G=1 minus G=100)", us(found["group_end_to_end_s"]), ""),
        ("  the larger of the two", us(found["group_s"]), "CpuModel.group_s"),
        ("plan + place, per micro-batch", us(found["batch_plan_s"]), "CpuModel.batch_plan_s"),
        ("plan + place, per task", us(found["task_plan_s"]), "CpuModel.task_plan_s"),
        ("executor loop, per task", us(found["task_overhead_s"]), "CpuModel.task_overhead_s"),
        ("  (worker thread, per tiny task)", us(found["worker_per_task_s"]), ""),
        ("task pipeline, fixed", us(found["task_s"]), "ComputeModel.task_s"),
        ("task pipeline, per byte in + out", ns(found["byte_s"]), "ComputeModel.byte_s"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"python {sys.version.split()[0]}, uvloop, CPU time of the event loop's thread")
    for name, value, field in rows:
        print(f"{name:<{width}}  {value:>12}  {field}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(found, out, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
