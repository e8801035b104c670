"""What CURVE costs end to end: a CURVE and a plain ``local-cluster[N]``, side by side.

Both clusters run at once and take turns, one micro-batch (or group) each, so that
both see the same background load; the paired difference of each turn is what CURVE
adds. Workloads are those of ``scripts/bench.py`` (W1 single stage, W2 shuffle).

    python scripts/bench_security.py --executors 4 --iters 300 --groups 1 10
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
from collections.abc import Iterator
from typing import Any

import drizzle
from drizzle import Context, Dataset


def partition_sum(it: Iterator[int]) -> int:
    return sum(it)


def batches(base: Dataset, workload: str, start: int, count: int) -> list[Dataset]:
    if workload == "W1":
        return [base.map(lambda x, k=k: x + k) for k in range(start, start + count)]
    return [
        base.map(lambda x, k=k: ((x + k) % 100, 1)).reduce_by_key(operator.add, 4)
        for k in range(start, start + count)
    ]


async def main(args: argparse.Namespace) -> None:
    master = f"local-cluster[{args.executors}]"
    async with Context(master) as curve, Context(master, insecure=True) as plain:
        assert curve.cluster.curve is not None
        assert plain.cluster.curve is None
        bases: dict[str, tuple[Context, Dataset]] = {}
        for name, ctx in (("curve", curve), ("plain", plain)):
            base = ctx.parallelize(range(4000), 4).cache()
            await base.count()
            bases[name] = (ctx, base)
        print(f"master={master} iters={args.iters} (per micro-batch, ms)")
        for workload in ("W1", "W2"):
            func: Any = partition_sum if workload == "W1" else None
            for group in args.groups:
                times: dict[str, list[float]] = {"curve": [], "plain": []}
                for i in range(args.warmup + args.iters):
                    order = ("curve", "plain") if i % 2 == 0 else ("plain", "curve")
                    for name in order:
                        ctx, base = bases[name]
                        jobs = batches(base, workload, i * group, group)
                        began = time.perf_counter()
                        await ctx.run_jobs(jobs, func, group_size=group)
                        if i >= args.warmup:
                            times[name].append((time.perf_counter() - began) * 1000 / group)
                diffs = [c - p for c, p in zip(times["curve"], times["plain"], strict=True)]
                print(
                    f"{workload} G={group:<4d} curve median {statistics.median(times['curve']):.3f}"
                    f"  plain median {statistics.median(times['plain']):.3f}"
                    f"  paired difference median {statistics.median(diffs):+.3f}",
                    flush=True,
                )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--executors", type=int, default=4)
    p.add_argument("--groups", nargs="+", type=int, default=[1, 10])
    p.add_argument("--iters", type=int, default=300, help="measured turns per cluster")
    p.add_argument("--warmup", type=int, default=20)
    return p.parse_args()


if __name__ == "__main__":
    drizzle.run(main(parse_args()))
