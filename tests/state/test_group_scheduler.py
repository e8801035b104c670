"""Placement of planned groups by ``GroupSchedulerState``, with plans from real datasets.

Datasets are built on a stub context (``Dataset`` only needs ``_next_dataset_id``) and
planned by ``DagState.plan_group``; nothing runs. The last tests drive the launches
through ``ExecutorState`` machines to check that placement and the executor agree.
"""

from __future__ import annotations

import itertools
import operator
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from drizzle.dataset import Dataset, ParallelizedDataset, collect_partition
from drizzle.executor.state import (
    ExecutorState,
    GroupLaunched,
    SendToDriver,
    SendToPeer,
    StartTask,
    TaskSucceeded,
    noticed,
)
from drizzle.scheduler.dag import BatchRequest, DagState, GroupPlan
from drizzle.scheduler.group import GroupSchedulerState, NoExecutors, Placement
from drizzle.wire.messages import TaskResult, TaskSpec
from drizzle.wire.repeat import all_tasks as expand


class StubCtx:
    def __init__(self) -> None:
        self.n = itertools.count()

    def _next_dataset_id(self) -> int:
        return next(self.n)


def _pair(x: int) -> tuple[int, int]:
    return (x % 5, x)


def _double(x: int) -> int:
    return 2 * x


def shuffle_job(ctx: Any, maps: int, reducers: int) -> Dataset:
    return (
        ParallelizedDataset(ctx, range(40), maps).map(_pair).reduce_by_key(operator.add, reducers)
    )


def requests(datasets: Sequence[Dataset], first_batch: int = 0) -> list[BatchRequest]:
    return [BatchRequest(first_batch + i, d, collect_partition) for i, d in enumerate(datasets)]


def scheduler(*executors: str, cores: int = 2) -> GroupSchedulerState:
    gs = GroupSchedulerState()
    for e in executors:
        gs.register(e, cores, now=0.0)
    return gs


def positions(plan: GroupPlan) -> dict[int, int]:
    """Stage id → stage position."""
    return {s.stage_id: s.position for b in plan.batches for s in b.stages}


def layout(plan: GroupPlan, placement: Placement) -> dict[tuple[int, int, int], str]:
    """(batch, stage position, partition) → executor."""
    pos = positions(plan)
    return {
        (t.batch, pos[t.stage_id], t.partition): e
        for e, launch in placement.launches.items()
        for t in expand(launch)
    }


def all_tasks(placement: Placement) -> Iterator[tuple[str, TaskSpec]]:
    for e, launch in placement.launches.items():
        for t in expand(launch):
            yield e, t


# ------------------------------------------------------------------------ launches


def test_one_launch_per_executor_holding_every_task_of_the_group() -> None:
    ctx = StubCtx()
    G, M, R = 3, 4, 2
    dag = DagState()
    plan = dag.plan_group(7, requests([shuffle_job(ctx, M, R) for _ in range(G)]))
    gs = scheduler("e0", "e1", "e2")
    placement = gs.place(plan)

    assert set(placement.launches) == {"e0", "e1", "e2"}
    assert all(launch.group_id == 7 for launch in placement.launches.values())
    assert gs.launches_sent == 3
    assert placement.num_tasks == G * (M + R)
    assert sum(len(expand(launch)) for launch in placement.launches.values()) == G * (M + R)
    assert placement.result_tasks == {b: R for b in range(G)}

    ids = [t.task_id for _, t in all_tasks(placement)]
    assert len(set(ids)) == len(ids)
    expected = {
        (b.batch, s.stage_id, p)
        for b in plan.batches
        for s in b.stages
        for p in range(s.num_partitions)
    }
    assert {(t.batch, t.stage_id, t.partition) for _, t in all_tasks(placement)} == expected
    assert all(t.attempt == 0 for _, t in all_tasks(placement))

    # Each executor holds the same (stage position, partition) slots in every micro-batch.
    pos = positions(plan)
    for launch in placement.launches.values():
        per_batch: dict[int, set[tuple[int, int]]] = defaultdict(set)
        for t in expand(launch):
            per_batch[t.batch].add((pos[t.stage_id], t.partition))
        assert set(per_batch) == set(range(G))
        assert len({frozenset(v) for v in per_batch.values()}) == 1


def test_map_tasks_notify_exactly_the_executors_of_their_reducers() -> None:
    ctx = StubCtx()
    M, R = 5, 3
    plan = DagState().plan_group(0, requests([shuffle_job(ctx, M, R) for _ in range(2)]))
    gs = scheduler("e0", "e1", "e2", "e3", "e4", "e5")
    placement = gs.place(plan)

    readers: dict[int, set[str]] = defaultdict(set)
    for e, t in all_tasks(placement):
        for inp in t.shuffle_inputs:
            readers[inp.shuffle_id].add(e)
            assert inp.num_maps == M
            assert inp.partition == t.partition
    maps = [(e, t) for e, t in all_tasks(placement) if t.shuffle_output is not None]
    assert len(maps) == 2 * M
    assert {t.shuffle_output.shuffle_id for _, t in maps if t.shuffle_output} == set(
        plan.shuffle_ids
    )
    for _, t in maps:
        out = t.shuffle_output
        assert out is not None
        assert not t.is_result
        assert out.num_reducers == R
        assert set(out.notify) == readers[out.shuffle_id]
        assert len(out.notify) == len(set(out.notify))
        assert len(readers[out.shuffle_id]) == R  # 3 reducers on 3 distinct executors
    for _, t in all_tasks(placement):
        assert t.is_result == (t.shuffle_output is None)


@pytest.mark.parametrize(("maps", "reducers"), [(4, 4), (3, 4), (4, 3), (6, 2)])
def test_reducers_are_placed_first_round_robin_over_sorted_executors(
    maps: int, reducers: int
) -> None:
    ctx = StubCtx()
    plan = DagState().plan_group(0, requests([shuffle_job(ctx, maps, reducers)]))
    gs = scheduler("e2", "e0", "e3", "e1")  # registration order does not matter
    placement = gs.place(plan)
    where = layout(plan, placement)
    order = ["e0", "e1", "e2", "e3"]
    for p in range(reducers):
        assert where[(0, 1, p)] == order[p % 4]
    for p in range(maps):
        assert where[(0, 0, p)] == order[(reducers + p) % 4]


def test_payloads_and_blobs_are_sent_once_per_executor() -> None:
    ctx = StubCtx()
    source = ParallelizedDataset(ctx, range(40), 4)
    ds = source.map(_double)
    dag = DagState()
    gs = scheduler("e0", "e1")
    plan = dag.plan_group(0, requests([ds, ds]))
    assert len(plan.payloads) == 1
    assert len(plan.blobs) == 4
    placement = gs.place(plan)
    for launch in placement.launches.values():
        needed = {t.payload for t in expand(launch)} | {b for t in expand(launch) for b in t.blobs}
        digests = [b.digest for b in launch.blobs]
        assert len(digests) == len(set(digests))
        assert set(digests) == needed
        for blob in launch.blobs:
            assert blob.data == {**plan.payloads, **plan.blobs}[blob.digest]

    plan2 = dag.plan_group(1, requests([ds, ds], first_batch=2))
    assert plan2.payloads == plan.payloads
    placement2 = gs.place(plan2)
    assert set(placement2.launches) == {"e0", "e1"}
    assert all(launch.blobs == () for launch in placement2.launches.values())

    received = {e: {b.digest for b in launch.blobs} for e, launch in placement.launches.items()}
    gs.register("e9", 2, now=0.0)  # a newcomer receives what it lacks, the others only
    placement3 = gs.place(dag.plan_group(2, requests([ds], first_batch=4)))  # new partitions
    where = {t.partition: e for e, launch in placement3.launches.items() for t in expand(launch)}
    assert where == {0: "e0", 1: "e1", 2: "e9", 3: "e0"}
    digests = source.digests
    e9 = {b.digest for b in placement3.launches["e9"].blobs}
    assert e9 == {next(iter(plan.payloads)), digests[2]}
    e0 = {b.digest for b in placement3.launches["e0"].blobs}
    assert e0 == {digests[3]}
    assert not e0 & received["e0"]
    assert placement3.launches["e1"].blobs == ()


def test_second_group_sends_only_new_payloads_not_data_again() -> None:
    ctx = StubCtx()
    data = ParallelizedDataset(ctx, range(40), 2).map(_pair)
    dag = DagState()
    gs = scheduler("e0", "e1")
    gs.place(dag.plan_group(0, requests([data.reduce_by_key(operator.add, 2)])))
    plan = dag.plan_group(1, requests([data.reduce_by_key(operator.add, 2)], first_batch=1))
    placement = gs.place(plan)
    sent = {b.digest for launch in placement.launches.values() for b in launch.blobs}
    assert sent  # new shuffle ids, so new stage payloads
    assert sent <= set(plan.payloads)
    assert not sent & set(plan.blobs)


def test_placement_is_sticky_across_groups() -> None:
    ctx = StubCtx()
    dag = DagState()
    gs = scheduler("e0", "e1", "e2")
    plan_a = dag.plan_group(0, requests([shuffle_job(ctx, 5, 4) for _ in range(2)]))
    plan_b = dag.plan_group(1, requests([shuffle_job(ctx, 5, 4) for _ in range(2)], 2))
    a = layout(plan_a, gs.place(plan_a))
    b = layout(plan_b, gs.place(plan_b))
    assert {(pos, p): e for (_, pos, p), e in a.items()} == {
        (pos, p): e for (_, pos, p), e in b.items()
    }
    assert len(a) == len(b) == 2 * (5 + 4)


def test_task_reading_a_materialized_partition_goes_where_it_is() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 4).map(_double).cache()
    dag = DagState()
    gs = scheduler("e0", "e1", "e2", "e3")
    # Primary first, then the copy; the task follows the primary.
    located = {0: ("e2", "e3"), 1: ("e0", "e1"), 2: ("e3", "e0"), 3: ("e1", "e2")}
    dag.materialized.update({(cached.id, p): e for p, e in located.items()})
    plan = dag.plan_group(0, requests([cached.map(_double)]))
    assert plan.materialized == {(cached.id, p): e for p, e in located.items()}
    placement = gs.place(plan)
    assert len(list(all_tasks(placement))) == 4
    for e, t in all_tasks(placement):
        assert e == located[t.partition][0]
        [inp] = t.block_inputs
        assert (inp.dataset_id, inp.partition, inp.location) == (cached.id, t.partition, e)
        assert t.blobs == ()


def test_materialized_partition_on_an_unknown_executor_falls_back_to_round_robin() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 2).cache()
    dag = DagState()
    dag.materialized.update({(cached.id, 0): ("gone",), (cached.id, 1): ("e0",)})
    plan = dag.plan_group(0, requests([cached.map(_double)]))
    placement = scheduler("e0", "e1").place(plan)
    where = layout(plan, placement)
    assert where == {(0, 0, 0): "e0", (0, 0, 1): "e0"}
    locations = {t.partition: t.block_inputs[0].location for _, t in all_tasks(placement)}
    assert locations == {0: "", 1: "e0"}


def test_materialized_partition_whose_primary_is_gone_follows_its_copy() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 2).cache()
    dag = DagState()
    dag.materialized.update({(cached.id, 0): ("gone", "e1"), (cached.id, 1): ("e0", "e1")})
    plan = dag.plan_group(0, requests([cached.map(_double)]))
    placement = scheduler("e0", "e1").place(plan)
    assert layout(plan, placement) == {(0, 0, 0): "e1", (0, 0, 1): "e0"}
    locations = {t.partition: t.block_inputs[0].location for _, t in all_tasks(placement)}
    assert locations == {0: "e1", 1: "e0"}


def test_cached_partitions_written_by_a_group_are_read_in_place_by_the_next() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 4).map(_double).cache()
    dag = DagState()
    gs = scheduler("e0", "e1", "e2")
    plan0 = dag.plan_group(0, requests([cached.map(_pair).reduce_by_key(operator.add, 2)]))
    p0 = gs.place(plan0)
    assert set(p0.produced) == {(cached.id, p) for p in range(4)}
    order = ["e0", "e1", "e2"]
    writers = {
        (t.block_outputs[0].dataset_id, t.block_outputs[0].partition): e
        for e, t in all_tasks(p0)
        if t.block_outputs
    }
    for block, holders in p0.produced.items():
        # Primary (the writer) first, then one copy on the next executor in order.
        primary = writers[block]
        assert holders == (primary, order[(order.index(primary) + 1) % 3])
    dag.group_placed(0, p0.produced)
    assert dag.materialized == {}
    dag.group_completed(0)
    assert dag.materialized == p0.produced

    plan1 = dag.plan_group(1, requests([cached.map(_pair).reduce_by_key(operator.add, 2)], 1))
    p1 = gs.place(plan1)
    assert p1.produced == {}
    for e, t in all_tasks(p1):
        for inp in t.block_inputs:
            assert inp.location == p0.produced[(inp.dataset_id, inp.partition)][0] == e
    assert sum(len(t.block_inputs) for _, t in all_tasks(p1)) == 4


def test_block_output_notifies_remote_readers_of_the_same_group() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(8), 2).cache()
    other = ParallelizedDataset(ctx, range(8, 16), 2)
    plan = DagState().plan_group(0, requests([cached.union(other), other.union(cached)]))
    assert len(plan.batches) == 2
    gs = scheduler("e0", "e1", "e2", "e3")
    placement = gs.place(plan)
    where = layout(plan, placement)
    # Batch 0 writes cached partitions 0, 1 at union partitions 0, 1 (e0, e1);
    # batch 1 reads them at union partitions 2, 3 (e2, e3).
    for e, t in all_tasks(placement):
        if t.batch == 0 and t.partition < 2:
            [out] = t.block_outputs
            assert (out.dataset_id, out.partition) == (cached.id, t.partition)
            assert out.notify == (where[(1, 0, t.partition + 2)],)
            assert e not in out.notify
            assert out.replicas == ({"e0": "e1", "e1": "e2"}[e],)
        if t.batch == 1 and t.partition >= 2:
            [inp] = t.block_inputs
            assert (inp.dataset_id, inp.partition, inp.location) == (cached.id, t.partition - 2, "")
    assert placement.produced == {(cached.id, 0): ("e0", "e1"), (cached.id, 1): ("e1", "e2")}


# ---------------------------------------------------------------------- membership


def test_no_executors() -> None:
    plan = DagState().plan_group(0, requests([ParallelizedDataset(StubCtx(), range(4), 2)]))
    with pytest.raises(NoExecutors):
        GroupSchedulerState().place(plan)
    gs = scheduler("e0")
    assert gs.remove("e0")
    with pytest.raises(NoExecutors):
        gs.place(plan)


def test_expired_removes_executors_with_stale_heartbeats() -> None:
    gs = GroupSchedulerState(heartbeat_timeout=3.0)
    gs.register("e0", 1, now=0.0)
    gs.register("e1", 1, now=0.0)
    gs.register("e2", 1, now=1.0)
    assert gs.heartbeat("e1", now=2.5)
    assert gs.next_expiry() == 3.0  # e0's heartbeats become overdue first
    assert gs.expired(now=3.0) == []  # exactly the timeout is not yet stale
    assert gs.expired(now=3.5) == ["e0"]
    assert set(gs.executors) == {"e1", "e2"}
    assert not gs.heartbeat("e0", now=3.6)
    assert gs.expired(now=4.5) == ["e2"]
    assert gs.next_expiry() == 5.5
    assert gs.expired(now=100.0) == ["e1"]
    assert gs.executors == {}
    assert gs.next_expiry() is None

    plan = DagState().plan_group(0, requests([ParallelizedDataset(StubCtx(), range(4), 2)]))
    with pytest.raises(NoExecutors):
        gs.place(plan)


def test_expired_executor_gets_no_tasks() -> None:
    gs = GroupSchedulerState(heartbeat_timeout=3.0)
    gs.register("e0", 1, now=0.0)
    gs.register("e1", 1, now=5.0)
    assert gs.expired(now=6.0) == ["e0"]
    plan = DagState().plan_group(0, requests([shuffle_job(StubCtx(), 3, 2)]))
    assert set(gs.place(plan).launches) == {"e1"}


def test_release_is_piggybacked_on_the_next_launch_after_group_completed() -> None:
    ctx = StubCtx()
    dag = DagState()
    gs = scheduler("e0", "e1", "e2")
    plan0 = dag.plan_group(0, requests([shuffle_job(ctx, 3, 3) for _ in range(2)]))
    p0 = gs.place(plan0)
    assert all(launch.release_shuffles == () for launch in p0.launches.values())
    assert len(plan0.shuffle_ids) == 2
    gs.group_completed({"e0", "e1"}, plan0.shuffle_ids)

    p1 = gs.place(dag.plan_group(1, requests([shuffle_job(ctx, 3, 3)], 2)))
    assert p1.launches["e0"].release_shuffles == plan0.shuffle_ids
    assert p1.launches["e1"].release_shuffles == plan0.shuffle_ids
    assert p1.launches["e2"].release_shuffles == ()

    p2 = gs.place(dag.plan_group(2, requests([shuffle_job(ctx, 3, 3)], 3)))
    assert all(launch.release_shuffles == () for launch in p2.launches.values())


def test_release_for_a_removed_executor_is_dropped() -> None:
    gs = scheduler("e0", "e1")
    gs.group_completed({"e0", "e1", "never-registered"}, (4, 5))
    assert gs.remove("e1")
    gs.register("e1", 1, now=0.0)
    plan = DagState().plan_group(0, requests([ParallelizedDataset(StubCtx(), range(4), 2)]))
    p = gs.place(plan)
    assert p.launches["e0"].release_shuffles == (4, 5)
    assert p.launches["e1"].release_shuffles == ()


# ------------------------------------------------- placement driven through executors


def run_group(
    placement: Placement, cores: int = 1, barrier: bool = True
) -> tuple[list[TaskResult], dict[str, ExecutorState], int]:
    """Deliver the launches to fresh ``ExecutorState``s and complete every started task at
    once, routing peer notices; returns the results, the states and the notices sent."""
    states = {e: ExecutorState(e, cores, barrier=barrier) for e in placement.launches}
    queue: list[tuple[str, Any]] = [
        (e, GroupLaunched(launch)) for e, launch in placement.launches.items()
    ]
    results: list[TaskResult] = []
    peer_notices = 0
    while queue:
        executor, event = queue.pop(0)
        for cmd in states[executor].handle(event):
            if isinstance(cmd, StartTask):
                spec = cmd.spec
                for inp in spec.shuffle_inputs:
                    assert len(cmd.map_locations[inp.shuffle_id]) == inp.num_maps
                for b in spec.block_inputs:
                    assert (b.dataset_id, b.partition) in cmd.block_locations
                sizes = spec.shuffle_output.num_reducers * (1,) if spec.shuffle_output else ()
                queue.append((executor, TaskSucceeded(spec.task_id, sizes, b"r")))
            elif isinstance(cmd, SendToPeer):
                peer_notices += 1
                queue.extend((cmd.peer, event) for event in noticed(cmd.message))
            elif isinstance(cmd, SendToDriver) and cmd.target == "driver":
                assert isinstance(cmd.message, TaskResult), cmd.message
                results.append(cmd.message)
    return results, states, peer_notices


@pytest.mark.parametrize("barrier", [True, False])
def test_placed_group_runs_to_completion_on_executor_states(barrier: bool) -> None:
    ctx = StubCtx()
    G, M, R = 4, 3, 2
    plan = DagState().plan_group(0, requests([shuffle_job(ctx, M, R) for _ in range(G)]))
    placement = scheduler("e0", "e1", "e2").place(plan)
    results, states, _ = run_group(placement, barrier=barrier)
    assert sorted((r.batch, r.partition) for r in results) == [
        (b, p) for b in range(G) for p in range(R)
    ]
    assert all(s.unfinished_tasks() == 0 and s.running == 0 for s in states.values())


def test_stateful_group_runs_to_completion_on_executor_states() -> None:
    ctx = StubCtx()
    state: Dataset = ParallelizedDataset(ctx, [], 2).cache()
    chain = []
    for i in range(5):
        data = ParallelizedDataset(ctx, [(i % 2, i)], 2)
        state = data.group_by_key(2).zip_partitions(state, _concat).cache()
        chain.append(state)
    plan = DagState().plan_group(0, requests(chain))
    assert len(plan.batches) == 5
    placement = scheduler("e0", "e1", "e2").place(plan)
    results, _, _ = run_group(placement)
    assert len(results) == 5 * 2


def _concat(*its: Iterator[Any]) -> Iterator[Any]:
    return itertools.chain(*its)
