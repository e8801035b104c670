"""Per-micro-batch latency of the two reference workloads, at several group sizes.

W1 single-stage: 4 partitions, each task sums 1,000 ints; the 4 sums are collected.
W2 shuffle: 4 map partitions each emit 1,000 (key, 1) pairs over keys 0..99,
reduce_by_key to 4 partitions, collect, and add into a running dict at the driver.

Each micro-batch is one job. For group size G, micro-batches run through
``Context.iter_jobs(..., group_size=G)``; the time per micro-batch of a group is the
group's wall time divided by G (for G=1, one job's latency). Reported: median and p95
over the measured groups, after warm-up.

    python scripts/bench.py --master "local-cluster[4]" --groups 1 10 100 --iters 100
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import drizzle
from drizzle import Context, Dataset
from drizzle.progress import progress


def partition_sum(it: Iterator[int]) -> int:
    return sum(it)


def w1_batches(base: Dataset, n: int, start: int) -> list[Dataset]:
    return [base.map(lambda x, i=i: x + i) for i in range(start, start + n)]


def w2_batches(base: Dataset, n: int, start: int) -> list[Dataset]:
    return [
        base.map(lambda x, i=i: ((x + i) % 100, 1)).reduce_by_key(operator.add, 4)
        for i in range(start, start + n)
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(ctx: Context, workload: str, group: int, iters: int, warmup: int) -> list[float]:
    base = ctx.parallelize(range(4000), 4).cache()
    await base.count()
    make = w1_batches if workload == "W1" else w2_batches
    func = partition_sum if workload == "W1" else None
    running: Counter[int] = Counter()
    per_batch: list[float] = []
    total = warmup + iters
    done = 0
    with progress(total, f"{workload} G={group}") as bar:  # drawn only on a terminal
        while done < total:
            batches = make(base, group, done)
            begin = time.perf_counter()
            async for result in ctx.iter_jobs(batches, func, group_size=group):
                if workload == "W2":
                    for part in result:
                        running.update(dict(part))
            took = time.perf_counter() - begin
            if done >= warmup:
                per_batch.append(took / group)
            done += group
            bar.update(group, ms=f"{took * 1000 / group:.3f}")
    if workload == "W2":
        batches_run = done
        if running != Counter({k: 40 * batches_run for k in range(100)}):
            raise AssertionError("W2 running counts are wrong")
    return per_batch


DRIVER_PARTS = ("plan", "place", "results")
EXECUTOR_PARTS = ("queue_wait", "deserialize", "compute", "fetch", "notify")


async def counters(ctx: Context) -> dict[str, float]:
    """Driver-side seconds so far, and executor-side seconds summed over executors.

    Executors report with their heartbeats; wait for two so every executor has spoken.
    """
    cluster = ctx.cluster
    assert cluster.dag
    assert cluster.group
    assert cluster.driver
    await asyncio.sleep(2.2 * ctx.options.heartbeat_interval)
    out = {
        "plan": cluster.dag.plan_s,
        "place": cluster.group.place_s,
        "results": cluster.driver.results_s,
    }
    reports = list(cluster.group.counters.values())
    for part in EXECUTOR_PARTS:
        out[part] = sum(getattr(r, f"{part}_s") for r in reports)
    return out


async def main(args: argparse.Namespace) -> None:
    async with Context(args.master, insecure=args.insecure) as ctx:
        print(f"master={args.master} iters={args.iters}")
        header = f"{'workload':8} {'G':>5} {'median ms':>10} {'p95 ms':>8} {'groups':>7}"
        if args.breakdown:
            header += " | per micro-batch ms: driver " + "/".join(DRIVER_PARTS)
            header += "; executors (summed) " + "/".join(EXECUTOR_PARTS)
        print(header)
        for workload in args.workloads:
            for group in args.groups:
                iters = max(args.iters, group * args.min_groups)
                warmup = max(args.warmup, group)
                before = await counters(ctx) if args.breakdown else {}
                samples = await measure(ctx, workload, group, iters, warmup)
                ms = [s * 1000 for s in samples]
                line = (
                    f"{workload:8} {group:>5} {statistics.median(ms):>10.3f} "
                    f"{percentile(ms, 0.95):>8.3f} {len(ms):>7}"
                )
                if args.breakdown:
                    after = await counters(ctx)
                    n = iters + warmup + 1
                    per = {k: (after[k] - before[k]) * 1000 / n for k in after}
                    line += " | driver " + "/".join(f"{per[k]:.3f}" for k in DRIVER_PARTS)
                    line += "; executors " + "/".join(f"{per[k]:.3f}" for k in EXECUTOR_PARTS)
                print(line, flush=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--master", default="local-cluster[4]")
    p.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=["W1", "W2"])
    p.add_argument("--groups", nargs="+", type=int, default=[1, 10, 100])
    p.add_argument("--iters", type=int, default=100, help="measured micro-batches (default 100)")
    p.add_argument("--min-groups", type=int, default=5, help="measured groups at least")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument(
        "--insecure",
        action="store_true",
        help="local-cluster without CURVE authentication and encryption (for comparison)",
    )
    p.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="skip the per-part time breakdown",
    )
    return p.parse_args()


if __name__ == "__main__":
    drizzle.run(main(parse_args()))
