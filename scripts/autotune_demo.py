"""The Drizzle paper's Figure 11 on a real cluster: the group size tuner at work.

A stream of micro-batches (each: ``--partitions`` tasks that each sleep about
``--short-ms`` or ``--long-ms`` milliseconds, then sum their partition) runs with
``group_size="auto"``; every completed group's G and overhead is recorded. By default
there are two runs, one per micro-batch length, each on a fresh context (so each starts
at the tuner's start G, as in the paper); ``--continuous`` instead runs one stream whose
micro-batches switch from the short to the long compute time halfway, on one context.

Writes a CSV (one row per group) and, with matplotlib installed (the ``plot`` extra), a
PNG: G and the overhead against time. Exits 1 unless the shorter micro-batch settled on
the larger G (median G over the last third of each run's groups).

    python scripts/autotune_demo.py --master "local-cluster[4]" --seconds 40 \\
        --csv docs/autotune.csv --png docs/autotune.png
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import drizzle
from drizzle import Context, Dataset, TunerConfig
from drizzle.progress import progress


@dataclass(frozen=True)
class Row:
    run: str
    compute_ms: float
    t_s: float
    group_id: int
    group_size: int
    batches: int
    wall_ms: float
    coordination_ms: float
    compute_est_ms: float
    overhead: float
    driver_overhead: float
    smoothed: float
    action: str
    next_group_size: int


FIELDS = list(Row.__dataclass_fields__)


def sleepy_sum(it: Iterator[int], ms: float) -> int:
    time.sleep(ms / 1000)
    return sum(it)


def batches_for(base: Dataset, count: int) -> list[Dataset]:
    return [base.map(lambda x, i=i: x + i) for i in range(count)]


async def stream(
    ctx: Context,
    base: Dataset,
    label: str,
    compute_ms: float,
    seconds: float,
    warmup: float,
    began: float | None,
    rows: list[Row],
) -> float:
    """Run micro-batches of ``compute_ms`` for ``seconds``, stopping at a group boundary.

    Times are from ``began`` (default: the end of the warm-up), which is returned.
    """
    count = int(seconds * 1000 / compute_ms * 1.5) + 2000
    datasets = batches_for(base, count)

    def func(it: Iterator[int], ms: float = compute_ms) -> int:
        return sleepy_sum(it, ms)

    # Warm up at G=1 (not measured): executors load the code, and the tuner's compute
    # estimate (executor counters, which arrive with heartbeats) is rid of the tasks
    # of earlier work before the first auto group.
    warm = time.perf_counter() + warmup
    while time.perf_counter() < warm:
        await ctx.run_jobs(batches_for(base, 1), func, group_size=1)
    if began is None:
        began = time.perf_counter()
    until = time.perf_counter() + seconds
    seen = ctx.metrics().groups_completed
    results = ctx.iter_jobs(datasets, func, group_size="auto")
    with progress(None, f"{label} {compute_ms:g} ms") as bar:
        try:
            async for _ in results:
                metrics = ctx.metrics()
                if metrics.groups_completed == seen:
                    continue
                seen = metrics.groups_completed
                g = metrics.last_group
                assert g is not None
                rows.append(
                    Row(
                        run=label,
                        compute_ms=compute_ms,
                        t_s=round(time.perf_counter() - began, 4),
                        group_id=g.group_id,
                        group_size=g.group_size,
                        batches=g.batches,
                        wall_ms=round(g.wall_s * 1000, 3),
                        coordination_ms=round(g.coordination_s * 1000, 3),
                        compute_est_ms=round((g.compute_s or 0.0) * 1000, 3),
                        overhead=round(g.overhead, 5),
                        driver_overhead=round(g.driver_overhead, 5),
                        smoothed=round(g.smoothed_overhead or 0.0, 5),
                        action=g.action,
                        next_group_size=g.next_group_size,
                    )
                )
                bar.update(g.batches, G=g.group_size, overhead=f"{g.overhead:.1%}")
                if time.perf_counter() >= until:
                    break  # the group just completed: nothing is left running
        finally:
            await results.aclose()
    return began


async def run_all(args: argparse.Namespace) -> list[Row]:
    config = TunerConfig(
        lower=args.lower,
        upper=args.upper,
        start=args.start,
        maximum=args.maximum,
        measure=args.measure,
    )
    rows: list[Row] = []
    phases = [("short", args.short_ms), ("long", args.long_ms)]
    if args.continuous:
        async with Context(args.master, tuner=config) as ctx:
            base = ctx.parallelize(range(4000), args.partitions).cache()
            await base.count()
            began: float | None = None
            for i, (label, ms) in enumerate(phases):
                warmup = args.warmup if i == 0 else 0.0
                began = await stream(ctx, base, "continuous", ms, args.seconds, warmup, began, rows)
                print(f"{label}: G is now {ctx.metrics().group_size}", flush=True)
        return rows
    for label, ms in phases:
        async with Context(args.master, tuner=config) as ctx:
            base = ctx.parallelize(range(4000), args.partitions).cache()
            await base.count()
            await stream(ctx, base, label, ms, args.seconds, args.warmup, None, rows)
    return rows


def settled(rows: list[Row]) -> float:
    """Median G over the last third of the groups (by time)."""
    tail = rows[len(rows) - max(1, len(rows) // 3) :]
    return statistics.median(r.group_size for r in tail)


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=FIELDS)
        out.writeheader()
        for r in rows:
            out.writerow({k: getattr(r, k) for k in FIELDS})


def read_csv(path: Path) -> list[Row]:
    types = Row.__annotations__
    with path.open(newline="") as f:
        return [
            Row(**{k: _convert(types[k], v) for k, v in record.items()})  # type: ignore[arg-type]
            for record in csv.DictReader(f)
        ]


def _convert(kind: str, value: str) -> object:
    return {"int": int, "float": float}.get(kind, str)(value)


def plot(rows: list[Row], path: Path, args: argparse.Namespace) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install 'drizzle[plot]')")
        return False
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    series: dict[tuple[str, float], list[Row]] = {}
    for r in rows:
        series.setdefault((r.run, r.compute_ms), []).append(r)
    for (run, ms), rs in series.items():
        label = f"{ms:g} ms micro-batch" + (" (continuous run)" if run == "continuous" else "")
        t = [r.t_s for r in rs]
        line = top.step(t, [r.group_size for r in rs], where="post", label=label)[0]
        bottom.plot(t, [100 * r.smoothed for r in rs], color=line.get_color(), label=label)
        bottom.plot(
            t, [100 * r.overhead for r in rs], ".", color=line.get_color(), alpha=0.35, ms=3
        )
    top.set_ylabel("group size G")
    top.set_yscale("log", base=2)
    top.legend(loc="best")
    top.set_title(
        f"group_size='auto' on {args.master}\n"
        f"band {args.lower:.0%}-{args.upper:.0%}, start G={args.start}, measure={args.measure}",
        fontsize=10,
    )
    bottom.axhspan(100 * args.lower, 100 * args.upper, color="grey", alpha=0.15, label="band")
    bottom.set_ylabel("overhead % (dots: per group,\nline: smoothed)")
    bottom.set_xlabel("seconds since the run started")
    bottom.set_ylim(0, min(100, max(40, 100 * max(r.smoothed for r in rows) * 1.1)))
    bottom.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return True


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--master", default="local-cluster[4]")
    p.add_argument("--partitions", type=int, default=4, help="tasks per micro-batch (default 4)")
    p.add_argument("--short-ms", type=float, default=10.0, help="short compute (default 10)")
    p.add_argument("--long-ms", type=float, default=50.0, help="long compute (default 50)")
    p.add_argument("--seconds", type=float, default=40.0, help="seconds per phase (default 40)")
    p.add_argument("--continuous", action="store_true", help="one run that switches halfway")
    p.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of G=1 before each run (default 1)"
    )
    p.add_argument("--lower", type=float, default=0.05)
    p.add_argument("--upper", type=float, default=0.10)
    p.add_argument("--start", type=int, default=2)
    p.add_argument("--maximum", type=int, default=1000)
    p.add_argument("--measure", choices=["non_compute", "driver"], default="non_compute")
    p.add_argument("--csv", type=Path, default=Path("autotune.csv"))
    p.add_argument("--png", type=Path, default=Path("autotune.png"))
    p.add_argument("--log-level", default="WARNING", help="drizzle.* logging (INFO: per group)")
    p.add_argument("--from-csv", type=Path, help="no run: plot and check this CSV")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    logging.basicConfig(format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("drizzle").setLevel(args.log_level.upper())
    if args.from_csv:
        rows = read_csv(args.from_csv)
        args.continuous = any(r.run == "continuous" for r in rows)
    else:
        rows = drizzle.run(run_all(args))
        write_csv(rows, args.csv)
        print(f"wrote {len(rows)} groups to {args.csv}")
    if plot(rows, args.png, args):
        print(f"wrote {args.png}")
    if args.continuous:
        half = [r for r in rows if r.compute_ms == args.short_ms]
        rest = [r for r in rows if r.compute_ms == args.long_ms]
    else:
        half = [r for r in rows if r.run == "short"]
        rest = [r for r in rows if r.run == "long"]
    if not half or not rest:
        print("no groups recorded")
        return 1
    short_g, long_g = settled(half), settled(rest)
    for name, rs, g in (("short", half, short_g), ("long", rest, long_g)):
        tail = rs[len(rs) - max(1, len(rs) // 3) :]
        print(
            f"{name} ({rs[0].compute_ms:g} ms): {len(rs)} groups, settled G = {g:g}, "
            f"path {' '.join(str(r.group_size) for r in _changes(rs))}, mean overhead "
            f"of the last third {statistics.mean(r.overhead for r in tail):.1%}"
        )
    ok = short_g > long_g
    print(
        ("OK" if ok else "NOT OK") + f": the shorter micro-batch settled on G={short_g:g}, "
        f"the longer on G={long_g:g}"
    )
    return 0 if ok else 1


def _changes(rows: list[Row]) -> list[Row]:
    out: list[Row] = []
    for r in rows:
        if not out or r.group_size != out[-1].group_size:
            out.append(r)
    return out


if __name__ == "__main__":
    sys.exit(main())
