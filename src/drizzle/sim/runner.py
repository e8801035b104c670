"""Running tasks under simulation: the real pipeline, inline, for a modelled time.

A ``SimTaskRunner`` is an executor's task runner (``ExecutorActor(task_runner=...)``)
for simulated nodes. It charges the executor's CPU its per-task overhead, runs the
task's real pipeline on the event loop (no threads: under simulation that takes no
virtual time), and resolves the task's future once the slot has been held for the time
the ``ComputeModel`` gives, on the virtual clock. Results are exactly those of a real
run.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from drizzle.actors.executor import TaskOutput
from drizzle.executor.runner import PipelineCache, PreparedEnv
from drizzle.pipeline import run_task
from drizzle.wire.messages import TaskSpec

if TYPE_CHECKING:
    from drizzle.sim.network import SimNetwork


class SimTaskRunner:
    def __init__(self, network: SimNetwork, address: str) -> None:
        self.network = network
        self.address = address
        self.tasks = 0
        self.compute_s = 0.0

    def __call__(
        self, pipelines: PipelineCache, spec: TaskSpec, env: PreparedEnv, submitted: float
    ) -> asyncio.Future[TaskOutput]:
        network = self.network
        config = network.config
        done: asyncio.Future[TaskOutput] = network.loop.create_future()
        started = network.work(self.address, config.cpu.task_overhead_s)
        try:
            output = run_task(pipelines.get(spec.payload), spec.partition, env)
        except Exception as exc:
            done.set_exception(exc)
            return done
        read = sum(len(env.blob(digest)) for digest in spec.blobs)
        for inp in spec.shuffle_inputs:
            read += sum(len(b) for b in env.shuffle_blocks(inp.shuffle_id, inp.partition))
        written = len(output) if isinstance(output, bytes) else sum(len(b) for b in output)
        compute = config.compute
        seconds = compute.seconds(spec, read, written)
        if compute.jitter > 0:
            seconds *= 1.0 + compute.jitter * network.rng.random()
        self.tasks += 1
        self.compute_s += seconds
        outcome: TaskOutput = (output, started - submitted, 0.0, seconds)
        network.at(started + seconds, self._finish, done, outcome)
        return done

    def _finish(self, done: asyncio.Future[TaskOutput], outcome: TaskOutput) -> None:
        if done.done():
            return
        if self.address in self.network.dead:
            done.cancel()  # the machine is gone: its task never finishes
        else:
            done.set_result(outcome)
