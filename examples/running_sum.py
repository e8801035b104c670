"""Running sum: a two-stage, stateful micro-batch job (the Drizzle prototype's RunningSum).

Each iteration i maps the cached input x -> ((x + i*N) mod R, x + i*N), groups by key
into R partitions, and adds each key's values to the previous iteration's state (a
cached dataset with one (key, sum) record per partition). After iteration i, key 0
holds the running sum of the even values and key 1 that of the odd values; with the
defaults, (0,4002000) and (1,4000000) after the first iteration and (0,400020000) and
(1,400000000) after the tenth.

    python examples/running_sum.py --master "local-cluster[4]" --iters 10 --group-size 10

``--group-size auto`` lets the engine pick each group's size (see docs/autotune.md);
a progress bar is drawn on standard error when it is a terminal and tqdm is installed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import drizzle
from drizzle import Context, Dataset
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
    p.add_argument("--partitions", type=int, default=4, help="map partitions (default 4)")
    p.add_argument("--trials", type=int, default=5, help="trials (default 5)")
    p.add_argument("--elems", type=int, default=None, help="elements (default 1000 x partitions)")
    p.add_argument("--reducers", type=int, default=2, help="reduce partitions (default 2)")
    args = p.parse_args(argv)
    if args.elems is None:
        args.elems = 1000 * args.partitions
    return args


def add_group_to_state(groups: Iterator[Any], state: Iterator[Any]) -> Iterator[Any]:
    for (_, values), (state_key, previous) in zip(groups, state, strict=True):
        yield (state_key, previous + sum(values))


def build_iterations(ctx: Context, args: argparse.Namespace) -> list[Dataset]:
    n, r = args.elems, args.reducers
    rdd = ctx.parallelize(range(1, n + 1), args.partitions).cache()
    state = ctx.parallelize(range(r), r).map(lambda k: (k, 0)).cache()
    states = []
    for i in range(args.iters):
        offset = i * n
        data = rdd.map(lambda x, offset=offset: ((x + offset) % r, x + offset))
        state = data.group_by_key(r).zip_partitions(state, add_group_to_state).cache()
        states.append(state)
    return states


def format_partition(records: list[tuple[int, int]]) -> str:
    return ",".join(f"({k},{v})" for k, v in records)


async def main(args: argparse.Namespace) -> None:
    async with Context(args.master) as ctx:
        await ctx.parallelize(range(args.partitions), args.partitions).count()  # warm-up
        for _ in range(args.trials):
            iterations = build_iterations(ctx, args)
            begin = time.perf_counter()
            auto = args.group_size == "auto"
            with progress(args.iters, "running sum") as bar:
                async for partitions in ctx.iter_jobs(iterations, group_size=args.group_size):
                    for records in partitions:
                        bar.write(format_partition(records))
                    bar.update(1, G=ctx.tuner.group_size if auto else args.group_size)
            took_ms = (time.perf_counter() - begin) * 1000
            size = args.group_size
            if auto:
                size = f"auto (now {ctx.tuner.group_size})"
            print(
                f"Drizzle: Running {args.iters} iters {size} batchSize "
                f"took {took_ms:.0f} ms ({took_ms / args.iters:.2f} ms per micro-batch)"
            )


if __name__ == "__main__":
    drizzle.run(main(parse_args()))
