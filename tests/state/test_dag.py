"""Planning of micro-batches into stages by ``DagState.plan_group`` (and ``drizzle.plan``).

Datasets are built on a stub context; nothing runs. Covers stage cutting at shuffles,
multi-shuffle stages (join, union), cache boundaries inside a group and across groups,
the fallback to a shorter group when shapes differ, and a 10,000-step stateful chain.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from drizzle import serde
from drizzle.dataset import Dataset, ParallelizedDataset, collect_partition
from drizzle.executor.state import (
    ExecutorState,
    GroupLaunched,
    MapOutputNoticed,
    StartTask,
)
from drizzle.pipeline import CacheRead, CacheWrite, MapPartitions, Source, StagePipeline
from drizzle.plan import PlanError
from drizzle.scheduler.dag import BatchRequest, DagState, GroupPlan
from drizzle.scheduler.group import GroupSchedulerState
from drizzle.wire.messages import MapOutputReady
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


def _merge(new: Iterator[Any], old: Iterator[Any]) -> Iterator[Any]:
    return itertools.chain(old, new)


def requests(datasets: Sequence[Dataset], first_batch: int = 0) -> list[BatchRequest]:
    return [BatchRequest(first_batch + i, d, collect_partition) for i, d in enumerate(datasets)]


def pipeline(plan: GroupPlan, batch: int, position: int) -> StagePipeline:
    p = serde.loads(plan.payloads[plan.batches[batch].stages[position].payload])
    assert isinstance(p, StagePipeline)
    return p


def pairs(ctx: StubCtx, n: int, partitions: int) -> Dataset:
    return ParallelizedDataset(ctx, range(n), partitions).map(_pair)


# --------------------------------------------------------------------------- shapes


def test_single_stage_job() -> None:
    ctx = StubCtx()
    source = ParallelizedDataset(ctx, range(40), 4)
    plan = DagState().plan_group(3, requests([source.map(_double).filter(bool)]))
    assert plan.group_id == 3
    [batch] = plan.batches
    [stage] = batch.stages
    assert stage.is_result
    assert stage.shuffle_id is None
    assert (stage.position, stage.num_partitions, stage.parent_positions) == (0, 4, ())
    assert [t.blobs for t in stage.tasks] == [[d] for d in source.digests]
    assert all(t.shuffle_reads == [] and t.cache_reads == [] for t in stage.tasks)
    assert set(plan.payloads) == {stage.payload}
    assert plan.blobs == source.blobs
    assert plan.shuffle_ids == ()
    assert plan.materialized == {}
    assert isinstance(pipeline(plan, 0, 0).root, MapPartitions)


def test_reduce_by_key_gives_map_then_result_stage_with_fresh_shuffles() -> None:
    ctx = StubCtx()
    G, M, R = 4, 3, 2
    plan = DagState().plan_group(
        0, requests([pairs(ctx, 30, M).reduce_by_key(operator.add, R) for _ in range(G)])
    )
    assert len(plan.batches) == G
    shuffle_ids = []
    stage_ids = []
    for i, batch in enumerate(plan.batches):
        assert batch.batch == i
        mapper, result = batch.stages
        assert not mapper.is_result
        assert result.is_result
        assert (mapper.position, mapper.num_partitions, mapper.num_reducers) == (0, M, R)
        assert mapper.parent_positions == ()
        assert (result.position, result.num_partitions, result.parent_positions) == (1, R, (0,))
        assert mapper.stage_id < result.stage_id
        assert result.tasks[1].shuffle_reads == [(mapper.shuffle_id, M, 1)]
        assert all(t.shuffle_reads == [] for t in mapper.tasks)
        shuffle_ids.append(mapper.shuffle_id)
        stage_ids += [mapper.stage_id, result.stage_id]
    assert len(set(shuffle_ids)) == G
    assert plan.shuffle_ids == tuple(shuffle_ids)
    assert len(set(stage_ids)) == 2 * G
    assert len({b.shape for b in plan.batches}) == 1


def test_join_reads_both_shuffles_in_the_result_stage() -> None:
    ctx = StubCtx()
    left, right = pairs(ctx, 30, 3), pairs(ctx, 20, 2)
    plan = DagState().plan_group(0, requests([left.join(right, 4)]))
    [batch] = plan.batches
    a, b, result = batch.stages
    assert (a.num_partitions, b.num_partitions) == (3, 2)
    assert a.num_reducers == b.num_reducers == 4
    assert a.shuffle_id != b.shuffle_id
    assert result.is_result
    assert result.parent_positions == (0, 1)
    for p, task in enumerate(result.tasks):
        assert task.shuffle_reads == [(a.shuffle_id, 3, p), (b.shuffle_id, 2, p)]


def test_join_of_two_shuffled_datasets_waits_on_both_shuffles() -> None:
    ctx = StubCtx()
    left = pairs(ctx, 30, 3).reduce_by_key(operator.add, 2)
    right = pairs(ctx, 20, 2).group_by_key(3)
    plan = DagState().plan_group(0, requests([left.join(right, 2)]))
    stages = plan.batches[0].stages
    assert len(stages) == 5
    result = stages[-1]
    assert result.is_result
    assert len(result.parent_positions) == 2
    parents = [stages[p] for p in result.parent_positions]
    assert all(s.num_reducers == 2 and not s.is_result for s in parents)
    assert [s.num_partitions for s in parents] == [2, 3]  # both are themselves reducers
    sids = [s.shuffle_id for s in parents]
    for p, task in enumerate(result.tasks):
        assert task.shuffle_reads == [(sids[0], 2, p), (sids[1], 3, p)]

    # Placed and launched: the reducer waits for every map of both shuffles.
    placement = _one_executor().place(plan)
    [launch] = placement.launches.values()
    state = ExecutorState("e0", cores=64, barrier=False)  # slots never the constraint
    reducers = {t.task_id for t in expand(launch) if t.is_result}
    out = state.handle(GroupLaunched(launch))
    assert not reducers & _started(out)
    for m in range(2):
        out = state.handle(MapOutputNoticed(MapOutputReady(0, sids[0], m, "e0", (1, 1))))
        assert not reducers & _started(out)
    for m in range(2):
        out = state.handle(MapOutputNoticed(MapOutputReady(0, sids[1], m, "e0", (1, 1))))
        assert not reducers & _started(out)
    out = state.handle(MapOutputNoticed(MapOutputReady(0, sids[1], 2, "e0", (1, 1))))
    assert reducers <= _started(out)


def test_union_of_two_shuffled_datasets_reads_both_shuffles() -> None:
    ctx = StubCtx()
    a = pairs(ctx, 30, 3).reduce_by_key(operator.add, 2)
    b = pairs(ctx, 20, 4).reduce_by_key(operator.add, 3)
    plan = DagState().plan_group(0, requests([a.union(b)]))
    sa, sb, result = plan.batches[0].stages
    assert result.is_result
    assert result.parent_positions == (0, 1)
    assert result.num_partitions == 5
    assert plan.shuffle_ids == (sa.shuffle_id, sb.shuffle_id)
    assert [t.shuffle_reads for t in result.tasks] == [
        [(sa.shuffle_id, 3, 0)],
        [(sa.shuffle_id, 3, 1)],
        [(sb.shuffle_id, 4, 0)],
        [(sb.shuffle_id, 4, 1)],
        [(sb.shuffle_id, 4, 2)],
    ]


def test_two_different_shuffles_of_one_parent_get_two_map_stages() -> None:
    ctx = StubCtx()
    x = pairs(ctx, 30, 4)
    plan = DagState().plan_group(
        0, requests([x.reduce_by_key(operator.add, 2).union(x.group_by_key(3))])
    )
    stages = plan.batches[0].stages
    maps = [s for s in stages if not s.is_result]
    assert sorted(s.num_reducers for s in maps) == [2, 3]
    result = stages[-1]
    for task in result.tasks:
        [(sid, _, part)] = task.shuffle_reads
        [writer] = [s for s in maps if s.shuffle_id == sid]
        assert part < writer.num_reducers


def test_self_join_shares_one_map_stage() -> None:
    ctx = StubCtx()
    x = pairs(ctx, 30, 3)
    plan = DagState().plan_group(0, requests([x.join(x, 2)]))
    mapper, result = plan.batches[0].stages
    assert result.tasks[0].shuffle_reads == [(mapper.shuffle_id, 3, 0)] * 2


def test_too_deep_uncached_lineage_raises_plan_error() -> None:
    ds = ParallelizedDataset(StubCtx(), range(4), 2)
    for _ in range(520):
        ds = ds.map(_double)
    with pytest.raises(PlanError, match="cache"):
        DagState().plan_group(0, requests([ds]))


# ------------------------------------------------------------------- group fallback


def test_group_ends_before_a_micro_batch_of_another_shape() -> None:
    ctx = StubCtx()
    dag = DagState()
    shuffled = [pairs(ctx, 20, 2).reduce_by_key(operator.add, 2) for _ in range(2)]
    narrow = pairs(ctx, 20, 2)
    batches = [*shuffled, narrow, pairs(ctx, 20, 2).reduce_by_key(operator.add, 2)]
    plan = dag.plan_group(0, requests(batches))
    assert [b.batch for b in plan.batches] == [0, 1]
    assert len(plan.shuffle_ids) == 2
    last_stage = plan.batches[-1].stages[-1].stage_id

    # The rest runs as the next group; ids continue where the short group stopped.
    rest = dag.plan_group(1, requests(batches[2:], first_batch=2))
    assert [b.batch for b in rest.batches] == [2]
    assert [len(b.stages) for b in rest.batches] == [1]
    assert rest.batches[0].stages[0].stage_id == last_stage + 1
    after = dag.plan_group(2, requests(batches[3:], first_batch=3))
    assert after.shuffle_ids == (max(plan.shuffle_ids) + 1,)


def test_group_of_one_micro_batch_of_any_shape() -> None:
    with pytest.raises(ValueError, match="at least one"):
        DagState().plan_group(0, [])


def test_different_partition_count_is_a_different_shape() -> None:
    ctx = StubCtx()
    plan = DagState().plan_group(
        0,
        requests(
            [pairs(ctx, 20, 2).reduce_by_key(operator.add, 2) for _ in range(3)]
            + [pairs(ctx, 20, 2).reduce_by_key(operator.add, 3)]
        ),
    )
    assert len(plan.batches) == 3


# ---------------------------------------------------------------- cache boundaries


def test_cached_dataset_of_micro_batch_0_is_read_by_micro_batch_1() -> None:
    ctx = StubCtx()
    source = ParallelizedDataset(ctx, range(40), 4)
    cached = source.map(_double).cache()
    plan = DagState().plan_group(0, requests([cached.map(_pair), cached.map(_double)]))
    assert len(plan.batches) == 2
    first, second = (b.stages[0] for b in plan.batches)
    for p in range(4):
        assert first.tasks[p].cache_writes == [(cached.id, p)]
        assert first.tasks[p].cache_reads == []
        assert first.tasks[p].blobs == [source.digests[p]]
        assert second.tasks[p].cache_reads == [(cached.id, p)]
        assert second.tasks[p].cache_writes == []
        assert second.tasks[p].blobs == []  # the source is not recomputed
    root0 = pipeline(plan, 0, 0).root
    assert isinstance(root0, MapPartitions)
    assert isinstance(root0.parent, CacheWrite)
    assert isinstance(root0.parent.child, MapPartitions)
    assert isinstance(root0.parent.child.parent, Source)
    root1 = pipeline(plan, 1, 0).root
    assert isinstance(root1, MapPartitions)
    assert root1.parent == CacheRead(cached.id)
    assert plan.materialized == {}

    placement = _one_executor().place(plan)
    [launch] = placement.launches.values()
    readers = [t for t in expand(launch) if t.batch == 1]
    assert all(t.block_inputs[0].location == "" for t in readers)


def test_cached_dataset_upstream_of_a_shuffle_is_read_by_later_micro_batches() -> None:
    ctx = StubCtx()
    cached = pairs(ctx, 40, 3).cache()
    plan = DagState().plan_group(
        0, requests([cached.reduce_by_key(operator.add, 2) for _ in range(3)])
    )
    assert len(plan.batches) == 3
    for i, batch in enumerate(plan.batches):
        mapper = batch.stages[0]
        kind = [(t.cache_writes, t.cache_reads) for t in mapper.tasks]
        if i == 0:
            assert kind == [([(cached.id, p)], []) for p in range(3)]
        else:
            assert kind == [([], [(cached.id, p)]) for p in range(3)]


def test_partially_materialized_cache_is_recomputed() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 2).map(_double).cache()
    dag = DagState()
    dag.materialized[(cached.id, 0)] = ("e0",)  # partition 1 is missing
    plan = dag.plan_group(0, requests([cached.map(_double)]))
    assert [t.cache_writes for t in plan.batches[0].stages[0].tasks] == [
        [(cached.id, 0)],
        [(cached.id, 1)],
    ]
    assert plan.materialized == {}


def test_materialized_cache_from_an_earlier_group_and_its_loss() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 2).map(_double).cache()
    dag = DagState()
    gs = GroupSchedulerState()
    gs.register("e0", 1, 0.0)
    gs.register("e1", 1, 0.0)
    plan0 = dag.plan_group(0, requests([cached.map(_double)]))
    placement = gs.place(plan0)
    dag.group_placed(0, placement.produced)
    dag.group_completed(0)
    # Each partition on its writer (primary) and a copy on the other executor.
    assert dag.materialized == {(cached.id, 0): ("e0", "e1"), (cached.id, 1): ("e1", "e0")}

    plan1 = dag.plan_group(1, requests([cached.map(_double)], 1))
    assert plan1.materialized == dag.materialized
    assert [t.cache_reads for t in plan1.batches[0].stages[0].tasks] == [
        [(cached.id, 0)],
        [(cached.id, 1)],
    ]

    # Losing one executor loses no partition: the copies on e0 remain.
    dag.executor_lost("e1")
    assert dag.materialized == {(cached.id, 0): ("e0",), (cached.id, 1): ("e0",)}
    plan2 = dag.plan_group(2, requests([cached.map(_double)], 2))
    assert plan2.materialized == dag.materialized
    assert [t.cache_writes for t in plan2.batches[0].stages[0].tasks] == [[], []]

    # Losing the last copy forgets the partitions: a later plan recomputes them.
    dag.executor_lost("e0")
    assert dag.materialized == {}
    plan3 = dag.plan_group(3, requests([cached.map(_double)], 3))
    assert plan3.materialized == {}
    assert [t.cache_writes for t in plan3.batches[0].stages[0].tasks] == [
        [(cached.id, 0)],
        [(cached.id, 1)],
    ]

    dag.datasets_released({cached.id})
    assert dag.materialized == {}


def test_aborted_group_does_not_materialize() -> None:
    ctx = StubCtx()
    cached = ParallelizedDataset(ctx, range(40), 2).cache()
    dag = DagState()
    dag.group_placed(0, {(cached.id, 0): ("e0", "e1"), (cached.id, 1): ("e0", "e1")})
    dag.group_aborted(0)
    dag.group_completed(0)
    assert dag.materialized == {}


# ------------------------------------------------------------------ stateful chain


def test_long_stateful_chain_plans_in_constant_time_per_group() -> None:
    N, GROUP = 10_000, 100
    ctx = StubCtx()
    init = ParallelizedDataset(ctx, [], 2).cache()
    state = init
    chain: list[Dataset] = []
    for i in range(N):
        data = ParallelizedDataset(ctx, [(i % 2, i)], 2)
        state = data.group_by_key(2).zip_partitions(state, _merge).cache()
        chain.append(state)

    dag = DagState()
    gs = GroupSchedulerState()
    for e in ("e0", "e1", "e2"):
        gs.register(e, 2, 0.0)
    times: list[float] = []
    for g in range(N // GROUP):
        reqs = requests(chain[g * GROUP : (g + 1) * GROUP], first_batch=g * GROUP)
        t0 = time.perf_counter()
        plan = dag.plan_group(g, reqs)
        times.append(time.perf_counter() - t0)
        assert len(plan.batches) == GROUP
        assert all(len(b.stages) == 2 for b in plan.batches)
        # Every micro-batch reads the previous state and writes its own, never recomputes.
        for b in plan.batches:
            result = b.stages[1]
            i = b.batch
            for p, task in enumerate(result.tasks):
                if i > 0:
                    assert task.cache_writes == [(chain[i].id, p)]
                    assert task.cache_reads == [(chain[i - 1].id, p)]
                else:  # the initial state is computed (and cached) by micro-batch 0
                    assert task.cache_writes == [(chain[0].id, p), (init.id, p)]
                    assert task.cache_reads == []
        # Only the first micro-batch of a group reads a materialized partition.
        assert len(plan.materialized) == (0 if g == 0 else 2)
        placement = gs.place(plan)
        assert placement.num_tasks == GROUP * 4
        dag.group_placed(g, placement.produced)
        dag.group_completed(g)
        gs.group_completed(set(placement.launches), plan.shuffle_ids)

    # A complexity check, not a latency target: min over a few groups resists GC pauses.
    early = min(times[1:6])
    late = min(times[-5:])
    assert late <= 3 * early + 0.005, (early, late)


# ------------------------------------------------------------------------- helpers


def _one_executor() -> GroupSchedulerState:
    gs = GroupSchedulerState()
    gs.register("e0", 4, 0.0)
    return gs


def _started(out: Sequence[object]) -> set[int]:
    return {c.spec.task_id for c in out if isinstance(c, StartTask)}
