"""The driver's CPU for planning and placing one micro-batch, by cluster size and G.

The single-stage job of the simulated figures (docs/simulation.md): K executors with 4
slots, one task per slot, reading a cached input that a first group materialized;
each micro-batch maps it with its own function. Times ``DagState.plan_group`` plus
``GroupSchedulerState.place`` (the real code, no I/O) in CPU time of this thread and
prints, per (K, G), the median and the spread over ``--rounds`` rounds, per
micro-batch.

    python scripts/bench_placement.py [--executors 4 32 128] [--groups 1 10 100] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

from drizzle import Context
from drizzle.scheduler.dag import BatchRequest, DagState
from drizzle.scheduler.group import GroupSchedulerState

SLOTS = 4


def _plus(x: int, off: int) -> int:
    return x + off


def one_round(ctx: Context, executors: int, group_size: int) -> float:
    """CPU seconds per micro-batch to plan and place one group."""
    dag, gs = DagState(), GroupSchedulerState()
    for i in range(executors):
        gs.register(f"tcp://10.0.{i // 250}.{i % 250}:7000", SLOTS, 0.0)
    tasks = executors * SLOTS
    base = ctx.parallelize(range(tasks * 10), num_partitions=tasks).cache()
    warm = dag.plan_group(0, [BatchRequest(0, base, sum)])
    dag.group_placed(0, gs.place(warm).produced)
    dag.group_completed(0)
    requests = [
        BatchRequest(b, base.map(lambda x, b=b: _plus(x, b)), sum) for b in range(1, group_size + 1)
    ]
    began = time.thread_time()
    gs.place(dag.plan_group(1, requests))
    return (time.thread_time() - began) / group_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executors", type=int, nargs="+", default=[4, 32, 128])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    ctx = Context("local[1]")  # only makes datasets: never started
    print("executors  tasks/batch     G   median µs/micro-batch   (min-max)   µs/task")
    for executors in args.executors:
        for group_size in args.groups:
            samples = [one_round(ctx, executors, group_size) for _ in range(args.rounds)]
            median = statistics.median(samples) * 1e6
            low, high = min(samples) * 1e6, max(samples) * 1e6
            tasks = executors * SLOTS
            print(
                f"{executors:9d}  {tasks:11d}  {group_size:4d}   {median:10.1f}"
                f"             ({low:.1f}-{high:.1f})   {median / tasks:6.2f}"
            )


if __name__ == "__main__":
    main()
