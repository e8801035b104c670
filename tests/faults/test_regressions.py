"""Engine bugs the randomized fault scenarios found, pinned down one by one.

Each test names the seed of ``test_randomized.py`` that first showed it. A bug not
fixed yet is an ``xfail(strict=True)`` test: it turns into a failure once fixed, so that
the marker goes.
"""

from __future__ import annotations

import asyncio
import operator
import time
from dataclasses import dataclass
from typing import Any

from drizzle import Context, Dataset
from drizzle.executor.state import (
    ExecutorState,
    GroupLaunched,
    InputsLost,
    MapOutputNoticed,
    SendToPeer,
    StartTask,
    TaskSucceeded,
)
from drizzle.testing import Crash, FaultPlan, Match, Rule, faulty_context
from drizzle.wire.messages import (
    LaunchGroup,
    MapOutputReady,
    Reroute,
    ShuffleInput,
    ShuffleOutput,
    TaskSpec,
)

ME = "e1"
WAIT = 20.0


def reducer(task_id: int, shuffle_id: int, num_maps: int) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        batch=0,
        stage_id=1,
        partition=0,
        attempt=0,
        payload="payload-1",
        blobs=(),
        shuffle_inputs=(ShuffleInput(shuffle_id, num_maps, 0),),
        block_inputs=(),
        shuffle_output=None,
        block_outputs=(),
        is_result=True,
    )


def notice(shuffle_id: int, map_id: int, executor: str) -> MapOutputNoticed:
    return MapOutputNoticed(MapOutputReady(0, shuffle_id, map_id, executor, (1,)))


def starts(out: list[object]) -> list[StartTask]:
    return [c for c in out if isinstance(c, StartTask)]


def test_fetch_failure_after_the_recovery_launch_waits_for_the_re_run_map() -> None:
    """Seeds 7022, 7041, 7115, 7121: a reducer is fetching from an executor when the
    recovery launch naming that executor lost arrives (it fails the fetch and forgets
    the executor's map outputs). The fetch failure then found nothing left to forget and
    restarted the reducer at once, without the lost map's location: its block stayed
    empty, unpickling it raised ``EOFError`` on every attempt, and the job failed. The
    reducer must wait for the re-run map's notice instead."""
    state = ExecutorState(ME, cores=1)
    task = reducer(7, shuffle_id=0, num_maps=2)
    state.handle(GroupLaunched(LaunchGroup(0, (task,), (), (), ())))
    state.handle(notice(0, 0, ME))
    [started] = starts(state.handle(notice(0, 1, "e2")))
    assert started.map_locations == {0: {0: ME, 1: "e2"}}
    # Recovery: e2 is lost, the map re-runs on e3; then the fetch from e2 fails.
    recovery = LaunchGroup(0, (), (), (), (), lost_executors=("e2",))
    assert starts(state.handle(GroupLaunched(recovery))) == []
    out = state.handle(InputsLost(7, "e2", "executor lost"))
    assert starts(out) == [], "restarted without the lost map's location"
    [restarted] = starts(state.handle(notice(0, 1, "e3")))
    assert restarted.map_locations == {0: {0: ME, 1: "e3"}}


def test_a_late_notice_from_a_lost_executor_does_not_hide_the_re_run() -> None:
    """Found by reading the recovery path while diagnosing seed 500408 (reproduced here,
    not by a seed yet): a notice that a lost executor sent before it was lost, delayed
    past the re-run map's notice, replaced the re-run's location. The reducer then
    fetched from the lost executor, failed, forgot it again, and waited for a notice that
    had already come, until the group deadline. (With a "suspect" executor, declared
    lost but alive, such notices keep coming after its loss.)"""
    state = ExecutorState(ME, cores=1)
    task = reducer(7, shuffle_id=0, num_maps=3)
    state.handle(GroupLaunched(LaunchGroup(0, (task,), (), (), ())))
    state.handle(notice(0, 0, ME))
    state.handle(GroupLaunched(LaunchGroup(0, (), (), (), (), lost_executors=("e9",))))
    state.handle(notice(0, 1, "e3"))  # map 1, re-run on e3
    state.handle(notice(0, 1, "e9"))  # the lost executor's notice of map 1, late
    [started] = starts(state.handle(notice(0, 2, "e3")))
    assert started.map_locations == {0: {0: ME, 1: "e3", 2: "e3"}}


def test_notices_of_a_later_group_from_a_lost_executor_id_count() -> None:
    """An executor that joins again at the address of a lost one (a fixed ``--bind``)
    gets tasks from the next group on: its notices of that group count."""
    state = ExecutorState(ME, cores=1)
    state.handle(GroupLaunched(LaunchGroup(0, (), (), (), (), lost_executors=("e9",))))
    task = reducer(7, shuffle_id=4, num_maps=1)
    state.handle(GroupLaunched(LaunchGroup(1, (task,), (), (), ())))
    out = state.handle(MapOutputNoticed(MapOutputReady(1, 4, 0, "e9", (1,))))
    [started] = starts(out)
    assert started.map_locations == {4: {0: "e9"}}


def test_map_launched_after_its_recovery_launch_notifies_the_new_readers() -> None:
    """Seed 500408 (base 500000): a reorder on the driver -> executor-3 link let group
    1's recovery launch (executor-1 lost; the reader of shuffle 2 partition 2 moved to
    executor-2) overtake the group's own launch. The reroute found no map task of
    shuffle 2 to update yet; the map task registered afterwards kept notifying the lost
    executor, so the moved reader waited for a notice that never came, until the group
    deadline. A map task registered after a reroute of its shuffle must use it."""
    state = ExecutorState(ME, cores=1)
    reroute = Reroute(2, ("e1", "e2"), ((0, 1), (2,)))
    recovery = LaunchGroup(1, (), (), (), (), lost_executors=("e9",), reroutes=(reroute,))
    state.handle(GroupLaunched(recovery))
    mapper = TaskSpec(
        task_id=5,
        batch=0,
        stage_id=0,
        partition=1,
        attempt=0,
        payload="payload-0",
        blobs=(),
        shuffle_inputs=(),
        block_inputs=(),
        shuffle_output=ShuffleOutput(2, 3, ("e1", "e9"), ((0, 1), (2,))),
        block_outputs=(),
        is_result=False,
    )
    assert len(starts(state.handle(GroupLaunched(LaunchGroup(1, (mapper,), (), (), ()))))) == 1
    out = state.handle(TaskSucceeded(5, sizes=(1, 1, 1)))
    peers = sorted(c.peer for c in out if isinstance(c, SendToPeer))
    assert peers == ["e2"], "the map's notices still go to the lost executor"


# ------------------------------------------------------------------ on a whole cluster


@dataclass(frozen=True)
class Mod:
    k: int

    def __call__(self, x: int) -> int:
        return x % self.k


def running_sums(
    ctx: Context, batches: list[list[int]], keys: int = 2, maps: int = 2, reducers: int = 2
) -> list[Dataset]:
    state = ctx.parallelize([], reducers).cache()
    jobs = []
    for data in batches:
        kv = ctx.parallelize(data, maps).key_by(Mod(keys))
        sums = kv.reduce_by_key(operator.add, reducers)
        state = sums.union(state).reduce_by_key(operator.add, reducers).cache()
        jobs.append(state)
    return jobs


def running_sums_reference(batches: list[list[int]], keys: int = 2) -> list[list[Any]]:
    state: dict[int, int] = {}
    out = []
    for data in batches:
        for x in data:
            state[x % keys] = state.get(x % keys, 0) + x
        out.append(sorted(state.items()))
    return out


async def test_losing_the_writer_of_state_whose_copy_is_still_in_flight() -> None:
    """Seed 401696 (base 400000): the copy (``ReplicateBlock``) of a cached partition
    that group 0 wrote on executor-1 is still on its way to executor-0 when group 0
    completes; executor-1 is lost as group 1 starts. The DAG planned group 1 with the
    partition on both executors, but recovery only trusts the tracker, which has heard
    of the copy from no one yet: ``plan_recovery`` raises ``Unrecoverable`` and the run
    fails with "cannot recover: cached partition ... was only on executor-1", though
    the copy lands a moment later. Recovery now waits for a copy planned on a live
    executor (asking the tracker again each heartbeat interval, for up to the heartbeat
    timeout) before it gives up."""
    plan = FaultPlan(
        401696,
        rules=(Rule("delay", Match(kinds=frozenset({"ReplicateBlock"})), seconds=0.5),),
        crashes=(Crash("executor-1", after=2, kinds=frozenset({"LaunchGroup"})),),
    )
    options = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.3, "group_timeout": 5.0}
    batches = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    async with asyncio.timeout(WAIT), faulty_context(plan, "local[2]", **options) as (ctx, net):
        results = await ctx.run_jobs(running_sums(ctx, batches), group_size=1)
        assert "crash" in {f.action for f in net.injected()}
    assert [sorted(r for part in parts for r in part) for parts in results] == [
        [(0, 2), (1, 4)],
        [(0, 12), (1, 9)],
        [(0, 20), (1, 25)],
    ]


async def test_a_pause_of_the_whole_process_loses_no_executor() -> None:
    """Seeds 101578, 101746 (base 100000) and others under machine load: the driver's
    process pauses (here: its event loop is blocked for 0.5 s, as by a long GC pause or
    CPU starvation; this is the fault, not a way to wait). Executors heartbeated all
    along, but their heartbeats are read after the liveness check, which finds every
    executor silent for more than the timeout and declares them all lost: the group
    fails with "cannot recover: no executors are left". The check now skips a round in
    which it ran late, so the queued heartbeats are read first."""
    plan = FaultPlan(0, (Rule("delay", Match(kinds=frozenset({"TaskResult"})), seconds=0.8),))
    options = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.3, "group_timeout": 5.0}
    async with asyncio.timeout(WAIT), faulty_context(plan, "local[2]", **options) as (ctx, _):
        batches = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
        asyncio.get_running_loop().call_later(0.1, time.sleep, 0.5)
        results = await ctx.run_jobs(running_sums(ctx, batches), group_size=3)
    assert [sorted(r for part in parts for r in part) for parts in results] == [
        [(0, 2), (1, 4)],
        [(0, 12), (1, 9)],
        [(0, 20), (1, 25)],
    ]


async def test_state_rewritten_by_a_recovery_is_read_where_it_is() -> None:
    """Seed 601872 (base 600000): group 0 loses executor-2, which was to write the state
    partition (15, 2) with its copy on executor-3. The recovery re-runs the writer on
    executor-0, which keeps the partition and sends the copy to executor-3 (delayed
    here). The DAG still records the group's first placement minus the lost executor,
    so group 1 is planned with the partition on executor-3 only and places its reader
    there; the reader finds no local copy yet and fails at once, not retryably:
    "FetchFailed: local cached partition (15, 2) missing", after 1 attempt. The DAG
    should learn where recovery put the writer (or only confirmed copies), and a missing
    local copy that is announced as coming should be waited for."""
    plan = FaultPlan(
        601872,
        rules=(Rule("delay", Match(kinds=frozenset({"ReplicateBlock"})), seconds=0.05),),
        crashes=(Crash("executor-2", after=5),),
    )
    options = {"heartbeat_interval": 0.05, "heartbeat_timeout": 0.3, "group_timeout": 5.0}
    batches = [[-6], [-11], [33, 27, 17, 12, 7, -18], [-2, 37, 26, 11], [], []]
    async with asyncio.timeout(WAIT), faulty_context(plan, "local[4]", **options) as (ctx, net):
        jobs = running_sums(ctx, batches, keys=3, maps=4, reducers=3)
        results = await ctx.run_jobs(jobs, group_size=3)
        assert "crash" in {f.action for f in net.injected()}
    got = [sorted(r for part in parts for r in part) for parts in results]
    assert got == running_sums_reference(batches, keys=3)
