"""What keeping the engine's counters on costs (docs/benchmarks.md, "Cost of the counters").

The executors' and schedulers' counters cannot be switched off without editing the
actors, so their cost is measured directly: ``timeit`` of the exact statements each
adds per task (executor), per result (driver) and per group (DAG and group
schedulers, driver summary), set against W1's measured latency per micro-batch. The
per-group bookkeeping of the ``Context`` (metrics and tuner samples) can be switched
off from here, so it is also measured end to end: W1 on a real cluster with it on and
off, alternating, plus the time of its calls.

    python scripts/counters_cost.py --master "local-cluster[4]" --rounds 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import timeit
from collections.abc import Callable, Iterator
from typing import Any

import drizzle
from drizzle import Context, Dataset
from drizzle.actors.driver import GroupSummary
from drizzle.metrics import MetricsCollector

NUMBER = 200_000


def per_call_ns(stmt: Callable[[], Any], number: int = NUMBER) -> float:
    """Best of 5 repeats, nanoseconds per call, minus the cost of calling a no-op."""
    best = min(timeit.repeat(stmt, number=number, repeat=5)) / number

    def noop() -> None:
        return None

    empty = min(timeit.repeat(noop, number=number, repeat=5)) / number
    return max(0.0, best - empty) * 1e9


def executor_task_counters() -> None:
    """The statements ``ExecutorActor._run_task`` and ``runner.execute`` add per task."""
    pc = time.perf_counter
    counters = COUNTERS
    began = pc()
    submitted = pc()
    counters["fetch_s"] += submitted - began
    started = pc()
    loaded = pc()
    waited, load, computed = started - submitted, loaded - started, pc() - loaded
    counters["queue_wait_s"] += waited
    counters["deserialize_s"] += load
    counters["compute_s"] += computed
    finished = pc()
    counters["notify_s"] += pc() - finished


COUNTERS: dict[str, float] = dict.fromkeys(
    ("compute_s", "deserialize_s", "fetch_s", "notify_s", "queue_wait_s"), 0.0
)


class _Totals:
    results_s = 0.0
    run_results_s = 0.0


def driver_result_counters() -> None:
    """``DriverActor.receive`` per ``TaskResult``."""
    began = time.perf_counter()
    spent = time.perf_counter() - began
    _Totals.results_s += spent
    _Totals.run_results_s += spent


LOG = logging.getLogger("drizzle.driver")


def driver_group_counters() -> None:
    """Per group: the DAG's and group scheduler's timers, the driver's summary and its
    (disabled, at the default WARNING level) INFO line."""
    began = time.perf_counter()
    _Totals.results_s += time.perf_counter() - began  # DAG plan_s
    began = time.perf_counter()
    _Totals.results_s += time.perf_counter() - began  # group place_s
    summary = GroupSummary(1, 100, 400, 4, 0.1, 0.01)
    LOG.info("group %d: G=%d tasks=%d", summary.group_id, summary.batches, summary.tasks)


def partition_sum(it: Iterator[int]) -> int:
    return sum(it)


async def w1(ctx: Context, base: Dataset, group: int, micro_batches: int) -> float:
    """Median latency per micro-batch of W1 at group size ``group`` (one group per call)."""
    per_batch = []
    for start in range(0, micro_batches, group):
        batches = [base.map(lambda x, i=i: x + i) for i in range(start, start + group)]
        began = time.perf_counter()
        await ctx.run_jobs(batches, partition_sum, group_size=group)
        per_batch.append((time.perf_counter() - began) / group)
    return statistics.median(per_batch)


async def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    started = MetricsCollector.group_started
    finished = MetricsCollector.group_finished
    spent = {"calls": 0, "s": 0.0}

    def timed(func: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            began = time.perf_counter()
            try:
                return func(*a, **k)
            finally:
                spent["s"] += time.perf_counter() - began
                spent["calls"] += 1

        return wrapper

    out: dict[str, Any] = {}
    async with Context(args.master) as ctx:
        base = ctx.parallelize(range(4000), 4).cache()
        await base.count()
        await w1(ctx, base, 10, 200)  # warm-up
        for group in args.groups:
            on: list[float] = []
            off: list[float] = []
            spent.update(calls=0, s=0.0)
            for _ in range(args.rounds):
                for enabled in (True, False):
                    if enabled:
                        MetricsCollector.group_started = timed(started)  # type: ignore[method-assign]
                        MetricsCollector.group_finished = timed(finished)  # type: ignore[method-assign]
                    else:
                        MetricsCollector.group_started = _off_started  # type: ignore[method-assign]
                        MetricsCollector.group_finished = _off_finished  # type: ignore[method-assign]
                    try:
                        result = await w1(ctx, base, group, max(args.iters, group * 5))
                    finally:
                        MetricsCollector.group_started = started  # type: ignore[method-assign]
                        MetricsCollector.group_finished = finished  # type: ignore[method-assign]
                    (on if enabled else off).append(result)
            out[f"G={group}"] = {
                "on_ms": statistics.median(on) * 1000,
                "off_ms": statistics.median(off) * 1000,
                "context_us_per_group": spent["s"] / max(1, spent["calls"] // 2) * 1e6,
            }
    return out


def _off_started(self: MetricsCollector, cluster: Any) -> Any:
    return None


def _off_finished(self: MetricsCollector, *args: Any) -> Any:
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--master", default="local-cluster[4]")
    p.add_argument("--groups", nargs="+", type=int, default=[1, 100])
    p.add_argument("--iters", type=int, default=400, help="micro-batches per measurement")
    p.add_argument("--rounds", type=int, default=5, help="alternations of on and off")
    args = p.parse_args()

    task_ns = per_call_ns(executor_task_counters)
    result_ns = per_call_ns(driver_result_counters)
    group_ns = per_call_ns(driver_group_counters, NUMBER // 4)
    print("timeit of the counter statements (ns per call, best of 5):")
    print(f"  executor, per task:   {task_ns:8.0f}")
    print(f"  driver, per result:   {result_ns:8.0f}")
    print(f"  schedulers+driver, per group: {group_ns:8.0f}")
    print("W1 per micro-batch: 4 tasks, 4 results, 1/G of a group:")
    for g in args.groups:
        ns = 4 * task_ns + 4 * result_ns + group_ns / g
        print(f"  G={g}: {ns / 1000:.2f} us per micro-batch")
    print(f"end to end on {args.master} (Context bookkeeping on vs off, {args.rounds} rounds):")
    for name, row in drizzle.run(end_to_end(args)).items():
        print(
            f"  {name}: on {row['on_ms']:.3f} ms, off {row['off_ms']:.3f} ms per micro-batch; "
            f"Context calls {row['context_us_per_group']:.1f} us per group"
        )


if __name__ == "__main__":
    main()
