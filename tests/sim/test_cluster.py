"""The real actors on the virtual clock: results, determinism, scaling shape, failures.

Every test runs a small ``sim[N,cores]`` cluster inside ``drizzle.sim.run`` with a
virtual-time limit; each cluster operation has a (virtual) deadline too.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import drizzle.sim
from drizzle import Context, Dataset
from drizzle.master import parse_master
from drizzle.sim import ComputeModel, CpuModel, NetworkModel, SimConfig, SimNetwork, TraceEntry

LIMIT = 600.0
"""Virtual seconds any one simulation may run."""


def simulate(main: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(LIMIT / 2):
            return await main()

    return drizzle.sim.run(bounded(), time_limit=LIMIT)


def sim_of(ctx: Context) -> SimNetwork:
    sim = ctx.cluster.sim
    assert sim is not None
    return sim


def shuffle_batches(base: Dataset, count: int, first: int = 0) -> list[Dataset]:
    return [
        base.map(lambda x, i=i: (x % 5, x * i)).reduce_by_key(operator.add, 3)
        for i in range(first, first + count)
    ]


def shuffle_expected(data: list[int], count: int, first: int = 0) -> list[dict[int, int]]:
    out = []
    for i in range(first, first + count):
        sums: dict[int, int] = {}
        for x in data:
            sums[x % 5] = sums.get(x % 5, 0) + x * i
        out.append(sums)
    return out


def merged(result: list[list[tuple[int, int]]]) -> dict[int, int]:
    return dict(kv for partition in result for kv in partition)


def test_master_url() -> None:
    master = parse_master("sim[128, 4]")
    assert (master.kind, master.executors, master.cores) == ("sim", 128, 4)
    assert parse_master("sim[3]").cores == 1
    with pytest.raises(ValueError, match="sim"):
        parse_master("sim[0,4]")


def test_results_match_plain_python() -> None:
    data = list(range(200))

    async def main() -> None:
        async with Context("sim[4,2]", sim=SimConfig(check_codec=True)) as ctx:
            base = ctx.parallelize(data, num_partitions=8).cache()
            for group_size in (1, 4):
                results = await ctx.run_jobs(shuffle_batches(base, 8), group_size=group_size)
                assert [merged(r) for r in results] == shuffle_expected(data, 8)
            sums = await ctx.run_jobs([base.map(lambda x, i=i: x + i) for i in range(5)], sum)
            assert [sum(r) for r in sums] == [sum(data) + i * len(data) for i in range(5)]
            words = ctx.parallelize(["a b", "b c", "c a b"], num_partitions=2)
            counts = words.flat_map(str.split).key_by(lambda w: w).map_values(lambda _: 1)
            [result] = await ctx.run_jobs([counts.reduce_by_key(operator.add, 2)])
            assert merged(result) == {"a": 2, "b": 3, "c": 2}

    simulate(main)


def test_one_launch_per_executor_per_group_and_every_message_costs_time() -> None:
    async def main() -> None:
        async with Context("sim[4,2]", sim=SimConfig(trace=True)) as ctx:
            sim = sim_of(ctx)
            base = ctx.parallelize(range(80), num_partitions=8).cache()
            await ctx.run_job(base)
            start = len(sim.trace)
            began = sim.loop.time()
            await ctx.run_jobs(shuffle_batches(base, 10), group_size=10)
            launches = [e for e in sim.trace[start:] if e.kind == "LaunchGroup"]
            assert sorted(e.dst for e in launches) == sorted(sim.nodes)[1:]
            assert sim.loop.time() > began
            assert all(e.time >= began for e in sim.trace[start:])

    simulate(main)


def test_a_ten_second_heartbeat_timeout_costs_little_wall_time() -> None:
    async def main() -> tuple[float, float, str]:
        async with Context("sim[3,1]", heartbeat_interval=1.0, heartbeat_timeout=10.0) as ctx:
            sim = sim_of(ctx)
            victim = ctx.executors()[1]
            killed_at = sim.loop.time() + 0.5
            sim.kill(victim, at=killed_at)  # silently: only missing heartbeats tell
            driver = ctx.cluster.driver
            assert driver is not None
            await asyncio.sleep(15)  # the scenario: 15 s of a cluster with a silent machine
            [(lost_at, lost)] = driver.losses
            return killed_at, lost_at, lost

    began = time.perf_counter()
    killed_at, lost_at, lost = simulate(main)
    wall = time.perf_counter() - began
    assert lost.endswith("executor-0001")
    # The timeout after its last heartbeat, which came at most one interval before the kill.
    assert 9.0 <= lost_at - killed_at <= 10.1
    assert wall < (lost_at - killed_at) / 5


def run_traced(seed: int) -> tuple[list[TraceEntry], list[float], list[dict[int, int]]]:
    config = SimConfig(
        seed=seed,
        trace=True,
        network=NetworkModel(jitter_s=50e-6),
        compute=ComputeModel(task_s=200e-6, jitter=0.5),
    )

    async def main() -> tuple[list[TraceEntry], list[float], list[dict[int, int]]]:
        async with Context("sim[4,2]", sim=config) as ctx:
            base = ctx.parallelize(range(120), num_partitions=8).cache()
            times, results = [], []
            async for result in ctx.iter_jobs(shuffle_batches(base, 12), group_size=4):
                times.append(sim_of(ctx).loop.time())
                results.append(merged(result))
            return list(sim_of(ctx).trace), times, results

    return simulate(main)  # type: ignore[no-any-return]


def test_same_seed_same_trace_and_numbers() -> None:
    first, second = run_traced(7), run_traced(7)
    assert first == second
    other = run_traced(8)
    assert other[2] == first[2]  # results never depend on the seed
    assert other[0] != first[0]  # timings do


def per_batch_ms(machines: int, group_size: int, config: SimConfig) -> float:
    async def main() -> float:
        async with Context(f"sim[{machines},2]", sim=config) as ctx:
            base = ctx.parallelize(range(machines * 20), num_partitions=machines * 2).cache()
            await ctx.run_job(base)
            batches = [base.map(lambda x, i=i: x + i) for i in range(20)]
            began = sim_of(ctx).loop.time()
            await ctx.run_jobs(batches, sum, group_size=group_size)
            return (sim_of(ctx).loop.time() - began) / 20 * 1000

    return simulate(main)  # type: ignore[no-any-return]


def test_per_batch_time_grows_with_machines_at_g1_and_stays_flat_at_g20() -> None:
    # A costly launch message (an RPC-heavy scheduler): per-group work grows with the
    # number of executors; group scheduling pays it once per 20 micro-batches.
    config = SimConfig(cpu=CpuModel(send_s=200e-6), compute=ComputeModel(task_s=300e-6))
    g1 = [per_batch_ms(m, 1, config) for m in (2, 16)]
    g20 = [per_batch_ms(m, 20, config) for m in (2, 16)]
    assert g1[1] - g1[0] > 2.0  # 14 more launches of 0.2 ms each per micro-batch
    assert g20[1] - g20[0] < 0.25 * (g1[1] - g1[0])
    assert g20[1] < g1[1] / 2


@pytest.mark.parametrize("silent", [True, False])
def test_an_executor_killed_mid_group_is_recovered(silent: bool) -> None:
    data = list(range(160))

    async def main() -> None:
        async with Context("sim[4,2]", sim=SimConfig(compute=ComputeModel(task_s=2e-3))) as ctx:
            sim = sim_of(ctx)
            base = ctx.parallelize(data, num_partitions=8).cache()
            await ctx.run_job(base)  # caches it, with copies announced asynchronously
            victim = ctx.executors()[2]
            sim.kill(victim, at=sim.loop.time() + 0.01, silent=silent)
            results = await ctx.run_jobs(shuffle_batches(base, 20), group_size=10)
            assert [merged(r) for r in results] == shuffle_expected(data, 20)
            driver = ctx.cluster.driver
            assert driver is not None
            assert [lost for _, lost in driver.losses] == [victim]
            assert driver.recomputed_maps > 0
            assert victim not in ctx.executors()
            assert [(address, quiet) for _, address, quiet in sim.kills] == [(victim, silent)]

    simulate(main)


def test_the_group_size_tuner_runs_on_the_virtual_clock() -> None:
    async def main() -> None:
        async with Context("sim[4,2]") as ctx:
            base = ctx.parallelize(range(80), num_partitions=8).cache()
            batches = [base.map(lambda x, i=i: x + i) for i in range(60)]
            results = await ctx.run_jobs(batches, sum, group_size="auto")
            assert [sum(r) for r in results] == [sum(range(80)) + 80 * i for i in range(60)]
            groups = ctx.metrics().groups
            assert len({g.group_size for g in groups}) > 1  # the tuner changed G
            assert all(g.wall_s > 0 for g in groups)

    simulate(main)


def test_with_the_calibrated_costs_a_group_places_its_tasks_once() -> None:
    # Default costs: G=1 places every task of every micro-batch on the driver (its
    # time grows with the number of tasks); a group of 20 places the first
    # micro-batch's tasks and repeats them, so its time barely grows.
    config = SimConfig(compute=ComputeModel(task_s=300e-6))
    g1 = [per_batch_ms(m, 1, config) for m in (2, 64)]
    g20 = [per_batch_ms(m, 20, config) for m in (2, 64)]
    assert g1[1] - g1[0] > 0.8  # 124 more tasks placed, at 6.5 µs each, per micro-batch
    assert g20[1] - g20[0] < 0.5 * (g1[1] - g1[0])
    assert g20[1] < g1[1] / 2
