"""A group whose later micro-batches are its first one renamed is launched as the first
micro-batch's tasks plus one ``BatchRepeat`` per later micro-batch.

The check that matters: expanding the repeats (the executors' code) gives exactly the
tasks, launches, cached-partition locations and recovery record that placing every
micro-batch task by task gives, for every shape of job. Nothing runs.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest

from drizzle.dataset import Dataset, ParallelizedDataset, collect_partition
from drizzle.scheduler.dag import BatchRequest, DagState, GroupPlan
from drizzle.scheduler.group import GroupSchedulerState, Placement
from drizzle.scheduler.renaming import renaming
from drizzle.wire.repeat import all_tasks

EXECUTORS = ("e0", "e1", "e2")


class StubCtx:
    def __init__(self) -> None:
        self.n = itertools.count()

    def _next_dataset_id(self) -> int:
        return next(self.n)


def _plus(x: int, off: int) -> int:
    return x + off


def _pair(x: int, off: int) -> tuple[int, int]:
    return ((x + off) % 3, x + off)


def _zero(k: int) -> tuple[int, int]:
    return (k, 0)


def _add_state(
    groups: Iterator[tuple[int, int]], state: Iterator[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    for (_, total), (key, previous) in zip(groups, state, strict=True):
        yield (key, previous + total)


def _keep_state(state: Iterator[tuple[int, int]], data: Iterator[int]) -> Iterator[tuple[int, int]]:
    extra = sum(data)
    for key, previous in state:
        yield (key, previous + extra)


def single_stage_cached(ctx: StubCtx, n: int) -> list[Dataset]:
    base = ParallelizedDataset(ctx, range(40), 4).cache()
    return [base.map(functools.partial(_plus, off=i)) for i in range(n)]


def single_stage_source(ctx: StubCtx, n: int) -> list[Dataset]:
    base = ParallelizedDataset(ctx, range(40), 5)
    return [base.map(functools.partial(_plus, off=i)) for i in range(n)]


def new_data_every_batch(ctx: StubCtx, n: int) -> list[Dataset]:
    return [ParallelizedDataset(ctx, range(i, i + 40), 4) for i in range(n)]


def shuffle(ctx: StubCtx, n: int) -> list[Dataset]:
    base = ParallelizedDataset(ctx, range(40), 4).cache()
    return [
        base.map(functools.partial(_pair, off=i)).reduce_by_key(operator.add, 3) for i in range(n)
    ]


def join_and_union(ctx: StubCtx, n: int) -> list[Dataset]:
    left = ParallelizedDataset(ctx, range(30), 3).cache()
    right = ParallelizedDataset(ctx, range(20), 2)
    out = []
    for i in range(n):
        keyed = left.map(functools.partial(_pair, off=i))
        other = right.map(functools.partial(_pair, off=2 * i))
        out.append(keyed.join(other, 2).union(keyed.partition_by(2)))
    return out


def running_sum(ctx: StubCtx, n: int) -> list[Dataset]:
    """State kept per reducer partition; each micro-batch adds a shuffle's sums to it."""
    base = ParallelizedDataset(ctx, range(40), 4).cache()
    state = ParallelizedDataset(ctx, range(3), 3).map(_zero).cache()
    out = []
    for i in range(n):
        sums = base.map(functools.partial(_pair, off=i)).reduce_by_key(operator.add, 3)
        state = sums.zip_partitions(state, _add_state).cache()
        out.append(state)
    return out


def state_read_by_another_stage(ctx: StubCtx, n: int) -> list[Dataset]:
    """The state is written by a map stage and read by the next micro-batch's map stage
    of a join whose other side has more partitions: its readers may be elsewhere."""
    data = ParallelizedDataset(ctx, range(30), 3).cache()
    state = ParallelizedDataset(ctx, range(3), 3).map(_zero).cache()
    out = []
    for i in range(n):
        state = state.zip_partitions(data.map(functools.partial(_plus, off=i)), _keep_state)
        state = state.cache()
        out.append(state.reduce_by_key(operator.add, 2))
    return out


def _first(pair: tuple[int, int]) -> int:
    return pair[0]


def state_joined_with_new_data(ctx: StubCtx, n: int) -> list[Dataset]:
    """The state is read by the map side of a join and written by its reduce side."""
    base = ParallelizedDataset(ctx, range(40), 4).cache()
    state = ParallelizedDataset(ctx, range(3), 3).map(_zero).cache()
    out = []
    for i in range(n):
        new = base.map(functools.partial(_pair, off=i))
        state = state.join(new, 3).map_values(_first).cache()
        out.append(state)
    return out


def _same(x: Any) -> Any:
    return x


def cached_partitions_written_by_two_stages(ctx: StubCtx, n: int) -> list[Dataset]:
    """A cached dataset feeding two shuffles is computed, and written, by both map
    stages; the next micro-batch reads it."""
    base = ParallelizedDataset(ctx, range(40), 4)
    previous = ParallelizedDataset(ctx, range(40), 4).map(functools.partial(_pair, off=-1))
    previous = previous.cache()
    out = []
    for i in range(n):
        x = base.map(functools.partial(_pair, off=i)).cache()
        joined = x.reduce_by_key(operator.add, 3).join(x.partition_by(2), 3)
        out.append(joined.union(previous.map(_same)))
        previous = x
    return out


JOBS: dict[str, Callable[[StubCtx, int], list[Dataset]]] = {
    "single stage, cached input": single_stage_cached,
    "single stage, same data": single_stage_source,
    "new data every micro-batch": new_data_every_batch,
    "shuffle": shuffle,
    "join and union": join_and_union,
    "running sum": running_sum,
    "state read by another stage": state_read_by_another_stage,
    "state joined with new data": state_joined_with_new_data,
    "cached partitions written by two stages": cached_partitions_written_by_two_stages,
}


@dataclass
class Placed:
    plan: GroupPlan
    placement: Placement
    gs: GroupSchedulerState


def place_all(
    jobs: list[Dataset],
    group_size: int,
    *,
    rename: bool,
    before: dict[int, Callable[[GroupSchedulerState], Any]] | None = None,
) -> list[Placed]:
    """Plan and place every job in groups, completing each group before the next;
    ``before[g]`` changes the membership before group g. Without ``rename`` the
    planner never finds a renaming: every micro-batch is planned and placed task by
    task, the reference."""
    dag, gs = DagState(), GroupSchedulerState()
    for e in EXECUTORS:
        gs.register(e, 2, 0.0)
    placed, done, group = [], 0, 0
    with contextlib.ExitStack() as stack:
        if not rename:
            stack.enter_context(mock.patch("drizzle.scheduler.dag.renaming", return_value=None))
        while done < len(jobs):
            if before and group in before:
                before[group](gs)
            chunk = jobs[done : done + group_size]
            plan = dag.plan_group(
                group, [BatchRequest(done + i, d, collect_partition) for i, d in enumerate(chunk)]
            )
            one_by_one = gs.tasks_placed_one_by_one(plan)  # what the simulator charges
            placement = gs.place(plan)
            assert one_by_one == sum(len(launch.tasks) for launch in placement.launches.values())
            dag.group_placed(group, placement.produced)
            dag.group_completed(group)
            gs.group_completed(set(placement.launches), plan.shuffle_ids)
            placed.append(Placed(plan, placement, gs))
            done += len(plan.batches)
            group += 1
    return placed


def launched(placement: Placement) -> dict[str, list[Any]]:
    return {e: list(all_tasks(launch)) for e, launch in placement.launches.items()}


def assert_same_placements(repeated: list[Placed], explicit: list[Placed]) -> None:
    assert [len(p.plan.batches) for p in repeated] == [len(p.plan.batches) for p in explicit]
    for r, x in zip(repeated, explicit, strict=True):
        assert launched(r.placement) == launched(x.placement)
        assert r.placement.produced == x.placement.produced
        assert r.placement.result_tasks == x.placement.result_tasks
        assert r.placement.num_tasks == x.placement.num_tasks
        for e, launch in r.placement.launches.items():
            other = x.placement.launches[e]
            assert launch.release_shuffles == other.release_shuffles
            assert {b.digest: b.data for b in launch.blobs} == {
                b.digest: b.data for b in other.blobs
            }
        group = r.plan.group_id
        record, expected = r.gs.records[group], x.gs.records[group]
        assert record.participants == expected.participants
        assert record.placed_on == expected.placed_on
        assert record.tasks == expected.tasks
        assert record.map_task == expected.map_task
        assert record.producer == expected.producer
        assert record.result_task == expected.result_task
    assert repeated[-1].gs.next_task_id == explicit[-1].gs.next_task_id


@pytest.mark.parametrize("group_size", [2, 4])
@pytest.mark.parametrize("name", sorted(JOBS))
def test_repeats_expand_to_exactly_the_tasks_of_placing_every_micro_batch(
    name: str, group_size: int
) -> None:
    jobs = JOBS[name](StubCtx(), 12)
    assert_same_placements(
        place_all(jobs, group_size, rename=True), place_all(jobs, group_size, rename=False)
    )


def test_a_group_whose_state_is_read_on_another_executor_is_placed_task_by_task() -> None:
    """An executor that sorts first joins: the state's writers move, its readers stay
    with the copies of the last group's state, so writes notify remote readers, except
    in the group's last micro-batch. That group is not a repetition; the next one is."""
    jobs = state_joined_with_new_data(StubCtx(), 12)
    joins = {1: lambda gs: gs.register("a0", 2, 0.0)}
    repeated = place_all(jobs, 4, rename=True, before=joins)
    assert_same_placements(repeated, place_all(jobs, 4, rename=False, before=joins))
    notify = [
        b.notify
        for launch in repeated[1].placement.launches.values()
        for t in launch.tasks
        for b in t.block_outputs
    ]
    assert any(notify)
    assert all(not launch.repeats for launch in repeated[1].placement.launches.values())
    assert all(len(launch.repeats) == 3 for launch in repeated[2].placement.launches.values())


EXPECT_REPEATS = {
    "single stage, cached input": True,
    "single stage, same data": True,
    "new data every micro-batch": False,
    "shuffle": True,
    "join and union": True,
    "running sum": True,
    "state read by another stage": True,
    "state joined with new data": True,
    "cached partitions written by two stages": False,  # remote readers, not the last
}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_groups_after_the_first_use_repeats_when_their_micro_batches_are_renamings(
    name: str,
) -> None:
    placed = place_all(JOBS[name](StubCtx(), 12), 4, rename=True)
    steady = placed[-1]  # the first group may build the state its successors read
    assert len(steady.plan.batches) == 4
    launches = steady.placement.launches.values()
    uses_repeats = all(len(launch.repeats) == 3 for launch in launches)
    assert uses_repeats == EXPECT_REPEATS[name]
    if uses_repeats:
        one_batch = sum(len(launch.tasks) for launch in launches)
        assert one_batch * 4 == steady.placement.num_tasks
        assert steady.gs.tasks_placed_one_by_one(steady.plan) == one_batch


def test_renaming_keeps_functions_apart_but_not_data_or_partition_counts() -> None:
    ctx = StubCtx()
    base = ParallelizedDataset(ctx, range(40), 4)
    dag = DagState()
    plans = dag.plan_group(
        0,
        [
            BatchRequest(0, base.map(functools.partial(_plus, off=1)), collect_partition),
            BatchRequest(1, base.map(functools.partial(_plus, off=2)), collect_partition),
            BatchRequest(2, ParallelizedDataset(ctx, range(1, 41), 4), collect_partition),
        ],
    )
    first, second, third = plans.batches
    found = renaming(first, second)
    assert found is not None
    assert found.stage_offset == 1
    assert found.shuffle_offset == 0
    assert found.datasets == {}
    assert found.payloads == (second.stages[0].payload,) != (first.stages[0].payload,)
    assert renaming(first, third) is None  # other data blobs
    assert plans.repeats is None
    gs = GroupSchedulerState()
    gs.register("e0", 2, 0.0)
    assert gs.tasks_placed_one_by_one(plans) == 12
    fewer = ParallelizedDataset(ctx, range(40), 3).map(functools.partial(_plus, off=1))
    other = DagState().plan_group(0, [BatchRequest(0, fewer, collect_partition)])
    assert renaming(first, other.batches[0]) is None


def test_tasks_kept_on_a_draining_executor_still_copy_the_state_they_write() -> None:
    """A draining executor is placed no more work, except tasks that follow the cached
    state it holds; what they write must still get its copy elsewhere, or the state
    is lost when the executor leaves (also when only one other executor is left)."""
    jobs = running_sum(StubCtx(), 12)
    drain_one = {1: lambda gs: gs.drain("e1")}
    drain_two = {1: lambda gs: (gs.drain("e1"), gs.drain("e2"))}
    for before in (drain_one, drain_two):
        placed = place_all(jobs, 4, rename=True, before=before)
        assert_same_placements(placed, place_all(jobs, 4, rename=False, before=before))
        on_e1 = [b for t in all_tasks(placed[1].placement.launches["e1"]) for b in t.block_outputs]
        assert on_e1
        assert all(b.replicas and "e1" not in b.replicas for b in on_e1)
