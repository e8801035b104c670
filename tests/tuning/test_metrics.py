"""``Context.metrics()``: a frozen snapshot of what the engine measured."""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from collections.abc import Iterator
from typing import Any

import pytest

from drizzle import Context, JobFailed, MetricsSnapshot
from drizzle.actors.node import Node
from drizzle.metrics import ComputeRate, critical_path_compute
from drizzle.wire.messages import MapOutputReady

from .conftest import WAIT, MakeContext


def two_stage(ctx: Context, n: int) -> list[Any]:
    src = ctx.parallelize(range(400), 4)
    return [src.map(lambda x, i=i: (x % 8, x + i)).reduce_by_key(operator.add, 2) for i in range(n)]


async def test_snapshot_after_a_shuffle_job(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Record the size of every map output announced to the tracker.
    announced: list[int] = []
    original = Node.post

    def post(self: Node, peer: str, target: str, message: Any, sender: str) -> None:
        if target == "tracker" and isinstance(message, MapOutputReady):
            announced.append(sum(message.sizes))
        original(self, peer, target, message, sender)

    monkeypatch.setattr(Node, "post", post)
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", inline_block_limit=0)
        await ctx.run_jobs(two_stage(ctx, 12), group_size=4)
        m = ctx.metrics()

    assert isinstance(m, MetricsSnapshot)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.group_size = 3  # type: ignore[misc]
    assert (m.groups_completed, m.batches_completed, m.last_group_size) == (3, 12, 4)
    assert len(m.groups) == 3
    assert m.last_group is m.groups[-1]
    last = m.last_group
    assert last is not None
    assert (last.group_size, last.batches, last.tasks, last.launch_messages) == (4, 4, 24, 4)
    assert 0 < last.coordination_s < last.wall_s
    assert last.launch_s > 0
    assert last.results_s > 0
    assert last.plan_s > 0
    assert last.place_s > 0
    assert last.compute_s is not None
    assert 0 < last.compute_s <= last.wall_s
    assert 0 <= last.overhead <= 1
    assert 0 < last.driver_overhead < 1
    assert m.plan_s >= sum(g.plan_s for g in m.groups) > 0
    assert m.place_s > 0
    assert m.results_s > 0
    assert m.wall_s == pytest.approx(sum(g.wall_s for g in m.groups))
    # Tasks: the counters of in-process executors are read live.
    assert m.tasks_done == 12 * (4 + 2)
    assert m.tasks_failed == 0
    assert [(e.alive, e.cores, e.live) for e in m.executors] == [(True, 1, True)] * 4
    assert sorted(e.executor_id for e in m.executors) == sorted(
        a.executor_id for a in ctx.cluster.executors
    )
    assert all(e.heartbeat_age_s is not None and e.heartbeat_age_s >= 0 for e in m.executors)
    assert sum(e.tasks for e in m.executors) == m.tasks_done
    assert sum(e.compute_s for e in m.executors) > 0
    # Bytes: every map output the tracker heard of, counted once; reducers pulled the
    # blocks of other executors (inline_block_limit=0).
    assert len(announced) == 12 * 4
    assert m.bytes_shuffled == sum(announced) == sum(g.bytes_shuffled for g in m.groups) > 0
    assert 0 < m.bytes_fetched <= m.bytes_shuffled


async def test_failed_tasks_are_counted(make_context: MakeContext) -> None:
    def boom(it: Iterator[int]) -> int:
        raise RuntimeError("boom")

    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]", max_task_attempts=1)
        ds = ctx.parallelize(range(10), 2)
        with pytest.raises(JobFailed):
            await ctx.run_job(ds, boom)
        await ctx.run_job(ds)
        m = ctx.metrics()
    assert m.tasks_failed >= 1
    assert m.tasks_done == 2
    assert m.groups_completed == 1  # the failed group is not a completed group


async def test_a_lost_executor_is_reported_not_alive(make_context: MakeContext) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]")
        await ctx.run_job(ctx.parallelize(range(10), 2))
        lost = ctx.cluster.executors[0].executor_id
        group = ctx.cluster.group
        assert group is not None
        group.state.remove(lost)
        m = ctx.metrics()
    by_id = {e.executor_id: e for e in m.executors}
    assert not by_id[lost].alive
    assert by_id[lost].heartbeat_age_s is None
    assert by_id[lost].tasks == 1  # its counters stay
    assert sum(e.alive for e in m.executors) == 1


def test_metrics_need_a_running_context() -> None:
    from drizzle import DrizzleError

    with pytest.raises(DrizzleError, match="not running"):
        Context("local[1]").metrics()


def test_critical_path_compute() -> None:
    # 4 tasks per micro-batch on 4 cores: one task's time per micro-batch.
    assert critical_path_compute(40, 10, 0.01, 4) == pytest.approx(0.1)
    # 8 tasks per micro-batch (two stages of 4) on 4 cores: two tasks' time.
    assert critical_path_compute(80, 10, 0.01, 4) == pytest.approx(0.2)
    # 2 tasks per micro-batch cannot use more than 2 cores.
    assert critical_path_compute(20, 10, 0.01, 8) == pytest.approx(0.1)
    assert critical_path_compute(0, 0, 0.01, 4) == 0.0


def test_compute_rate_uses_the_latest_window() -> None:
    rate = ComputeRate()
    assert rate.update(0, 0.0) is False
    assert rate.per_task_s is None
    assert rate.update(10, 1.0) is True
    assert rate.per_task_s == pytest.approx(0.1)
    assert rate.update(10, 1.0) is False
    assert rate.per_task_s == pytest.approx(0.1)
    assert rate.update(20, 1.5) is True
    assert rate.per_task_s == pytest.approx(0.05)
    assert rate.update(5, 0.2) is False  # totals went down: a new baseline
    assert rate.update(15, 1.2) is True
    assert rate.per_task_s == pytest.approx(0.1)
