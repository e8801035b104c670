"""The fault-injecting network itself: each fault does what it says, and is recorded.

Endpoints of one ``FaultyNetwork`` exchange ``FetchBlocks`` messages numbered by their
request id; a receiver collects what arrives. Waits are bounded by ``WAIT``; delays
are loop iterations or a few milliseconds of loop time.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import AsyncIterator

import pytest

from drizzle.errors import PeerUnreachable, TransportClosed
from drizzle.testing import Crash, FaultPlan, FaultyNetwork, Match, Rule, faulty_context, node_name
from drizzle.transport.inproc import InProcTransport
from drizzle.wire.codec import Envelope
from drizzle.wire.messages import FetchBlocks, HeartbeatAck

WAIT = 10.0

A = "inproc://net/executor-0"
B = "inproc://net/executor-1"
D = "inproc://net/driver"


def msg(i: int) -> Envelope:
    return Envelope("executor", "executor", FetchBlocks(i, ()))


class Nodes:
    def __init__(self, plan: FaultPlan) -> None:
        self.net = FaultyNetwork(plan)
        self.ends: dict[str, InProcTransport] = {}

    async def start(self, *addresses: str) -> None:
        for address in addresses:
            end = InProcTransport(address, network=self.net)
            await end.start()
            self.ends[address] = end
        self.net.arm()

    async def send(self, src: str, dst: str, *ids: int) -> None:
        for i in ids:
            await self.ends[src].send(dst, msg(i))

    async def received(self, address: str, count: int) -> list[int]:
        """The request ids of the next ``count`` envelopes ``address`` receives."""
        out = []
        async with asyncio.timeout(WAIT):
            for _ in range(count):
                _, env = await self.ends[address].recv()
                out.append(env.message.request_id)
        return out

    def pending(self, address: str) -> int:
        return self.ends[address]._queue.qsize()

    async def close(self) -> None:
        for end in self.ends.values():
            await end.close()
        await self.net.aclose()


@pytest.fixture
async def nodes() -> AsyncIterator[list[Nodes]]:
    made: list[Nodes] = []
    yield made
    for n in made:
        await n.close()


async def make(made: list[Nodes], *rules: Rule, crashes: tuple[Crash, ...] = ()) -> Nodes:
    n = Nodes(FaultPlan(1, tuple(rules), crashes))
    made.append(n)
    await n.start(A, B, D)
    return n


async def spin(iterations: int) -> None:
    for _ in range(iterations):
        await asyncio.sleep(0)


def actions(net: FaultyNetwork) -> list[str]:
    return [f.action for f in net.faults]


def test_node_names() -> None:
    assert node_name("inproc://drizzle-1-2/executor-3") == "executor-3"
    assert node_name(D) == "driver"


def test_match_filters_by_node_actor_and_kind() -> None:
    m = Match(src="executor", dst="executor-1", kinds=frozenset({"FetchBlocks"}))
    assert m("executor-0", "executor", "executor-1", "executor", "FetchBlocks")
    assert not m("driver", "group", "executor-1", "executor", "FetchBlocks")
    assert not m("executor-0", "executor", "executor-2", "executor", "FetchBlocks")
    assert not m("executor-0", "executor", "executor-1", "executor", "BlocksFetched")
    assert Match()("driver", "group", "executor-1", "executor", "LaunchGroup")
    assert not Match()("driver", "group", "executor-1", "executor", "HeartbeatAck")
    assert Match(dst_actor="tracker")("executor-0", "executor", "driver", "tracker", "BlockReady")
    assert not Match(dst_actor="tracker")("executor-0", "executor", "driver", "driver", "X")


def test_bad_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault action"):
        Rule("explode")
    with pytest.raises(ValueError, match="probability"):
        Rule("drop", probability=2.0)


async def test_without_faults_messages_pass_in_order(nodes: list[Nodes]) -> None:
    n = await make(nodes)
    await n.send(A, B, 1, 2, 3)
    assert await n.received(B, 3) == [1, 2, 3]
    assert n.net.faults == []


async def test_drop_skips_then_drops_up_to_its_limit(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("drop", Match(dst="executor-1"), skip=1, limit=2))
    await n.send(A, B, 1, 2, 3, 4)
    await n.send(A, D, 5)
    assert await n.received(B, 2) == [1, 4]
    assert await n.received(D, 1) == [5]
    assert actions(n.net) == ["drop", "drop"]
    assert [f.n for f in n.net.faults] == [2, 3]
    assert n.net.faults[0].src == "executor-0/executor"
    assert n.net.faults[0].kind == "FetchBlocks"


async def test_delay_by_iterations_lets_later_messages_overtake(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("delay", Match(), limit=1, iterations=5))
    await n.send(A, B, 1, 2)
    assert await n.received(B, 2) == [2, 1]
    assert actions(n.net) == ["delay", "release"]


async def test_delay_by_loop_time(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("delay", Match(), limit=1, seconds=0.01))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await n.send(A, B, 1)
    assert await n.received(B, 1) == [1]
    assert loop.time() - began >= 0.009


async def test_duplicate_delivers_a_copy_after_the_original(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("duplicate", Match(), limit=1, iterations=3))
    await n.send(A, B, 1, 2)
    assert await n.received(B, 3) == [1, 2, 1]
    assert actions(n.net) == ["duplicate", "release"]


async def test_reorder_releases_after_later_messages(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("reorder", Match(), limit=1, after=2, hold_seconds=WAIT))
    await n.send(A, B, 1, 2)
    await spin(5)
    assert n.pending(B) == 1  # 1 is held until a second later message passes
    await n.send(A, D, 9)  # another link does not count
    await n.send(A, B, 3)
    assert await n.received(B, 3) == [2, 3, 1]
    assert actions(n.net) == ["reorder", "release"]


async def test_heartbeats_do_not_release_a_held_message(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("reorder", Match(), limit=1, after=1, hold_seconds=WAIT))
    await n.send(A, B, 1)
    await n.ends[A].send(B, Envelope("executor", "group", HeartbeatAck(1)))
    await spin(5)
    assert n.pending(B) == 1
    await n.send(A, B, 2)
    _, first = await n.ends[B].recv()
    assert isinstance(first.message, HeartbeatAck)
    assert await n.received(B, 2) == [2, 1]


async def test_reorder_releases_after_its_hold_time_anyway(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("reorder", Match(), limit=1, after=3, hold_seconds=0.005))
    await n.send(A, B, 1)
    assert await n.received(B, 1) == [1]
    assert n.net.faults[-1].detail == "reordered (timeout)"


async def test_crash_closes_the_node_after_its_kth_message(nodes: list[Nodes]) -> None:
    n = await make(nodes, crashes=(Crash("executor-1", after=2),))
    await n.send(A, B, 1, 2)
    await spin(3)
    assert actions(n.net) == ["crash"]
    with pytest.raises(PeerUnreachable):
        await n.send(A, B, 3)
    with pytest.raises(TransportClosed):
        await n.ends[B].recv()


async def test_silent_crash_swallows_both_ways(nodes: list[Nodes]) -> None:
    n = await make(nodes, crashes=(Crash("executor-1", after=1, silent=True),))
    await n.send(A, B, 1)
    await spin(3)
    await n.send(A, B, 2)  # no error: the address is still bound
    await n.send(B, A, 3)
    await n.send(D, A, 4)
    assert await n.received(A, 1) == [4]
    assert actions(n.net) == ["crash", "swallow", "swallow"]
    assert n.pending(B) == 1  # only the message before the crash


async def test_not_armed_means_untouched(nodes: list[Nodes]) -> None:
    n = Nodes(FaultPlan(1, (Rule("drop"),)))
    nodes.append(n)
    await n.start(A, B)
    n.net.disarm()
    await n.send(A, B, 1)
    assert await n.received(B, 1) == [1]
    assert n.net.faults == []


async def test_same_seed_same_decisions(nodes: list[Nodes]) -> None:
    plan_rules = (Rule("drop", probability=0.5),)
    runs = []
    for _ in range(2):
        n = Nodes(FaultPlan(42, plan_rules))
        nodes.append(n)
        await n.start(A, B)
        await n.send(A, B, *range(40))
        runs.append([(f.action, f.n) for f in n.net.faults])
        await n.close()
        nodes.remove(n)
    assert runs[0] == runs[1]
    assert 5 < len(runs[0]) < 35


async def test_report_lists_the_plan_and_each_fault(nodes: list[Nodes]) -> None:
    n = await make(nodes, Rule("drop", Match(kinds=frozenset({"FetchBlocks"})), limit=1))
    await n.send(A, B, 1)
    report = n.net.report()
    assert "seed=1" in report
    assert "rule 0: drop" in report
    assert "drop      FetchBlocks#1 executor-0/executor -> executor-1/executor" in report


# ------------------------------------------------------------------- on a whole cluster


async def test_faulty_context_duplicating_everything_gives_right_answers() -> None:
    plan = FaultPlan(3, (Rule("duplicate", Match(), iterations=2),))
    async with asyncio.timeout(WAIT), faulty_context(plan, "local[3]") as (ctx, net):
        jobs = [
            ctx.parallelize(range(i, i + 20), 3)
            .key_by(lambda x: x % 3)
            # a shuffle: notices, fetches and results all duplicated
            .reduce_by_key(operator.add, 2)
            for i in range(4)
        ]
        results = await ctx.run_jobs(jobs, group_size=2)
        kinds = {f.kind for f in net.injected()}
    for i, parts in enumerate(results):
        want: dict[int, int] = {}
        for x in range(i, i + 20):
            want[x % 3] = want.get(x % 3, 0) + x
        assert sorted(r for p in parts for r in p) == sorted(want.items())
    assert {"LaunchGroup", "MapOutputReady", "TaskResult"} <= kinds


async def test_faulty_context_crash_of_an_executor_recovers() -> None:
    plan = FaultPlan(4, crashes=(Crash("executor-1", after=1, kinds=frozenset({"LaunchGroup"})),))
    options = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.3, "group_timeout": 5.0}
    async with asyncio.timeout(WAIT), faulty_context(plan, "local[3]", **options) as (ctx, net):
        ds = ctx.parallelize(range(30), 3).key_by(lambda x: x % 2).reduce_by_key(operator.add, 2)
        [parts] = await ctx.run_jobs([ds])
        assert [f.action for f in net.injected()] == ["crash"]
        assert ctx.cluster.driver is not None
        assert ctx.cluster.driver.relaunched_tasks > 0
    assert sorted(r for p in parts for r in p) == [(0, 210), (1, 225)]
