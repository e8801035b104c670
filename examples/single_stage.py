"""Single stage: a one-stage, stateless micro-batch job (the Drizzle prototype's
DrizzleSingleStageExample).

The input 1..N is doubled and cached; each micro-batch adds an offset and sums every
partition. As in the prototype, with --group-size G > 1 one list of G datasets
(offsets 0..G-1) is built once and run ceil(iters / G) times, so "Got sum" differs
between modes: with the defaults, 160220000 for G=1 and G=10, 160120000 for G=5.

    python examples/single_stage.py --master "local-cluster[4]" --iters 100 --group-size 10

``--group-size auto`` runs the iters micro-batches (offsets 0..iters-1, so "Got sum" is
G=1's) in groups whose size the engine picks (see docs/autotune.md). A progress bar is
drawn on standard error when it is a terminal and tqdm is installed.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator

import drizzle
from drizzle import Context
from drizzle.progress import progress


def group_size(text: str) -> int | str:
    """A positive int, or ``auto``."""
    if text == "auto":
        return text
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"group size must be positive or auto, not {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--master", default="local-cluster[4]")
    p.add_argument("--iters", type=int, default=10, help="micro-batches per trial (default 10)")
    p.add_argument(
        "--group-size",
        type=group_size,
        default=5,
        help="micro-batches per group, or auto (default 5)",
    )
    p.add_argument("--partitions", type=int, default=4, help="partitions (default 4)")
    p.add_argument("--trials", type=int, default=5, help="trials (default 5)")
    p.add_argument("--elems", type=int, default=None, help="elements (default 1000 x partitions)")
    args = p.parse_args(argv)
    if args.elems is None:
        args.elems = 1000 * args.partitions
    return args


def partition_sum(it: Iterator[int]) -> int:
    return sum(it)


async def main(args: argparse.Namespace) -> None:
    print(
        f"Single stage: numIters {args.iters} batchSize {args.group_size} "
        f"partitions {args.partitions} numTrials {args.trials} numElems {args.elems}"
    )
    async with Context(args.master) as ctx:
        rdd = ctx.parallelize(range(1, args.elems + 1), args.partitions).map(lambda x: 2 * x)
        rdd = rdd.cache()
        await rdd.count()
        for _ in range(args.trials):
            begin = time.perf_counter()
            total = 0
            with progress(args.iters, "single stage") as bar:
                if args.group_size == "auto":
                    batches = [rdd.map(lambda x, i=i: x + i) for i in range(args.iters)]
                    async for parts in ctx.iter_jobs(batches, partition_sum, group_size="auto"):
                        total += sum(parts)
                        bar.update(1, G=ctx.tuner.group_size)
                elif args.group_size == 1:
                    for i in range(args.iters):
                        ds = rdd.map(lambda x, i=i: x + i)
                        total += sum(await ctx.run_job(ds, partition_sum))
                        bar.update(1)
                else:
                    g = args.group_size
                    group = [rdd.map(lambda x, i=i: x + i) for i in range(g)]
                    for _ in range(math.ceil(args.iters / g)):
                        results = await ctx.run_jobs(group, partition_sum, group_size=g)
                        total += sum(sum(parts) for parts in results)
                        bar.update(g)
            took_ms = (time.perf_counter() - begin) * 1000
            print(f"Got sum {total}")
            print(
                f"Drizzle: Running {args.iters} iters {args.group_size} batchSize "
                f"took {took_ms:.0f} ms ({took_ms / args.iters:.2f} ms per micro-batch)"
            )


if __name__ == "__main__":
    drizzle.run(main(parse_args()))
