"""``group_size="auto"`` over an in-process cluster: results, and G as the tuner says."""

from __future__ import annotations

import asyncio
import collections
import operator
from typing import Any

import pytest

from drizzle import Context, GroupMetrics, TunerConfig
from drizzle.scheduler.tuner import GroupSample, GroupSizeTuner

from .conftest import WAIT, MakeContext

M = 4
"""Map partitions per micro-batch."""


def jobs(ctx: Context, n: int, offset: int = 0) -> list[Any]:
    src = ctx.parallelize(range(400), M)
    return [
        src.map(lambda x, i=i: (x % 8, x + i)).reduce_by_key(operator.add, 2)
        for i in range(offset, offset + n)
    ]


def expected(i: int) -> list[tuple[int, int]]:
    sums: dict[int, int] = collections.defaultdict(int)
    for x in range(400):
        sums[x % 8] += x + i
    return sorted(sums.items())


def flat(results: list[list[Any]]) -> list[list[tuple[int, int]]]:
    return [sorted(r for part in parts for r in part) for parts in results]


def auto_groups(ctx: Context) -> list[GroupMetrics]:
    return [g for g in ctx.metrics().groups if g.auto]


def assert_sizes_follow_the_tuner(groups: list[GroupMetrics], config: TunerConfig) -> None:
    """Replay the samples the context measured through a fresh tuner: every group ran
    the size the tuner had chosen after the group before it."""
    replay = GroupSizeTuner(config)
    for g in groups:
        assert g.group_size == replay.group_size
        assert g.batches <= g.group_size
        if g.action == "skip" and g.batches == g.group_size:
            continue  # no fresh compute measurement: not fed to the tuner
        decision = replay.observe(GroupSample(g.batches, 1.0, g.overhead))
        assert (decision.action, decision.next_group_size) == (g.action, g.next_group_size)


async def test_auto_results_equal_fixed_results(make_context: MakeContext) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]")
        batches = jobs(ctx, 30)
        fixed = await ctx.run_jobs(batches, group_size=5)
        auto = await ctx.run_jobs(batches, group_size="auto")
        streamed = [r async for r in ctx.iter_jobs(batches, group_size="auto")]
        assert flat(auto) == flat(fixed) == flat(streamed) == [expected(i) for i in range(30)]
        groups = auto_groups(ctx)
        assert sum(g.batches for g in groups) == 60
        assert_sizes_follow_the_tuner(groups, ctx.tuner.config)


async def test_g_doubles_while_overhead_is_above_the_band(make_context: MakeContext) -> None:
    # Any real group has some driver-side coordination: above 0.2 %, so G doubles each
    # group (no smoothing, no confirmation) up to the maximum; the last group is cut short.
    config = TunerConfig(
        lower=0.001, upper=0.002, weight=1.0, window=1, confirm=1, maximum=16, measure="driver"
    )
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", tuner=config)
        results = await ctx.run_jobs(jobs(ctx, 60), group_size="auto")
        assert flat(results) == [expected(i) for i in range(60)]
        groups = auto_groups(ctx)
        assert [g.batches for g in groups] == [2, 4, 8, 16, 16, 14]
        assert [g.action for g in groups] == ["grow", "grow", "grow", "keep", "keep", "skip"]
        assert ctx.metrics().group_size == 16
        assert_sizes_follow_the_tuner(groups, config)


async def test_g_steps_down_below_the_band_and_persists_across_calls(
    make_context: MakeContext,
) -> None:
    config = TunerConfig(
        lower=0.99, upper=0.995, start=16, step=5, weight=1.0, window=1, confirm=1, measure="driver"
    )
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", tuner=config)
        first = await ctx.run_jobs(jobs(ctx, 16), group_size="auto")
        assert ctx.tuner.group_size == 11
        second = [r async for r in ctx.iter_jobs(jobs(ctx, 22, offset=16), group_size="auto")]
        assert flat(first + second) == [expected(i) for i in range(38)]
        groups = auto_groups(ctx)
        assert [g.batches for g in groups] == [16, 11, 6, 1, 1, 1, 1, 1]
        assert ctx.metrics().group_size == 1
        assert_sizes_follow_the_tuner(groups, config)


async def test_fixed_group_sizes_do_not_touch_the_tuner(make_context: MakeContext) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]")
        await ctx.run_jobs(jobs(ctx, 10), group_size=5)
        assert (ctx.tuner.samples, ctx.tuner.group_size) == (0, 2)
        assert [(g.group_size, g.action, g.auto) for g in ctx.metrics().groups] == [
            (5, "fixed", False),
            (5, "fixed", False),
        ]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "AUTO", "fast", None])
async def test_bad_group_sizes_are_refused(make_context: MakeContext, bad: Any) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[1]")
        with pytest.raises(ValueError, match="group_size"):
            await ctx.run_jobs(jobs(ctx, 2), group_size=bad)


def test_tuner_option_must_be_a_config() -> None:
    with pytest.raises(TypeError, match="TunerConfig"):
        Context("local[1]", tuner={"start": 4})  # type: ignore[arg-type]
    assert Context("local[1]", tuner=TunerConfig(start=4)).tuner.group_size == 4
