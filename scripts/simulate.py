"""The Drizzle paper's Figures 4(a) and 5(b) on a simulated cluster, and a 1,024-executor run.

Every point is a ``Context(master="sim[K,S]")``: the real driver, schedulers and
executors on a virtual clock over a modelled network (``drizzle.sim``, defaults
calibrated by ``scripts/calibrate_sim.py``). Workloads, as in the paper's §5.2:

* ``single`` (Figure 4(a)): one stage, one task per slot, each summing its cached
  partition plus the micro-batch number; the driver gets one sum per task.
* ``shuffle`` (Figure 5(b)): the same map stage, then ``reduce_by_key`` into 16
  reduce tasks, pre-scheduled.

Each task computes for ``--task-ms`` of virtual time (0.5 ms by default, close to the
paper's per-task compute), whatever its size. For K machines with S slots, G in the
group sizes and ``--batches`` micro-batches (after one warm-up micro-batch that caches
the input), the time per micro-batch is the virtual time of the run divided by the
number of micro-batches.
Every result is checked against plain Python. Writes a CSV, and a PNG with matplotlib
(the ``plot`` extra).

    python scripts/simulate.py --csv docs/simulation.csv --png docs/simulation.png
    python scripts/simulate.py --scale            # 1,024 executors, G=100, with a failure
"""

from __future__ import annotations

import argparse
import csv
import operator
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import drizzle.sim
from drizzle import Context, Dataset
from drizzle.sim import ComputeModel, SimConfig

MACHINES = (4, 8, 16, 32, 64, 128)
GROUP_SIZES = (1, 10, 25, 50, 100)
RECORDS = 10
"""Records per partition (the data is small: the compute time is modelled)."""
REDUCERS = 16

# The paper's numbers (ms per micro-batch, read off its figures; digest §7.2).
PAPER: dict[str, dict[str, tuple[float, ...]]] = {
    "single": {
        "Spark": (15, 21, 32, 55, 100, 200),
        "G=25": (3.1, 3.4, 4.0, 4.9, 5.4, 9.5),
        "G=50": (2.6, 2.7, 3.2, 3.6, 4.4, 5.8),
        "G=100": (2.2, 2.3, 2.5, 3.0, 3.6, 4.3),
    },
    "shuffle": {
        "Spark": (40, 45, 62, 90, 138, 245),
        "G=1": (35, 40, 52, 80, 128, 228),
        "G=10": (16, 17, 20, 25, 33, 57),
        "G=100": (14, 14, 17, 21, 26, 43),
    },
}


@dataclass
class Point:
    workload: str
    machines: int
    slots: int
    group_size: int
    batches: int
    ms_per_batch: float
    driver_busy: float
    """Share of the run's virtual time the driver's CPU was busy."""
    messages_to_driver: int
    virtual_s: float
    wall_s: float
    correct: bool
    failure: str = ""
    recomputed_maps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def batches_for(base: Dataset, workload: str, count: int, first: int = 0) -> list[Dataset]:
    if workload == "single":
        return [base.map(lambda x, i=i: x + i) for i in range(first, first + count)]
    return [
        base.map(lambda x, i=i: (x % 64, x + i)).reduce_by_key(operator.add, REDUCERS)
        for i in range(first, first + count)
    ]


def expected(workload: str, data: list[int], batch: int) -> Any:
    if workload == "single":
        return sum(data) + batch * len(data)
    sums: dict[int, int] = {}
    for x in data:
        sums[x % 64] = sums.get(x % 64, 0) + x + batch
    return sums


def observed(workload: str, result: list[Any]) -> Any:
    if workload == "single":
        return sum(result)
    return dict(kv for partition in result for kv in partition)


def as_list(it: Iterator[Any]) -> list[Any]:
    return list(it)


async def run_point(
    workload: str,
    machines: int,
    slots: int,
    group_size: int,
    batches: int,
    config: SimConfig,
    kill_at: float | None = None,
) -> Point:
    wall = time.perf_counter()
    async with Context(f"sim[{machines},{slots}]", sim=config) as ctx:
        net = ctx.cluster.sim
        driver = ctx.cluster.driver
        assert net is not None
        assert driver is not None
        tasks = machines * slots
        data = list(range(tasks * RECORDS))
        base = ctx.parallelize(data, num_partitions=tasks).cache()
        func = sum if workload == "single" else as_list
        await ctx.run_jobs(batches_for(base, workload, 1), func)  # caches the input
        datasets = batches_for(base, workload, batches, first=1)
        address = driver.node.address
        busy0 = net.cpus[address].busy_s
        received0 = net.stats[address].received
        t0 = net.loop.time()
        victim = ""
        if kill_at is not None:
            victim = sorted(a for a in net.nodes if a != address)[len(net.nodes) // 3]
            net.kill(victim, at=t0 + kill_at, silent=True)
        results = await ctx.run_jobs(datasets, func, group_size=group_size)
        elapsed = net.loop.time() - t0
        correct = all(
            observed(workload, r) == expected(workload, data, 1 + i) for i, r in enumerate(results)
        )
        point = Point(
            workload,
            machines,
            slots,
            group_size,
            batches,
            elapsed / batches * 1000,
            (net.cpus[address].busy_s - busy0) / elapsed,
            net.stats[address].received - received0,
            elapsed,
            0.0,
            correct,
            failure=f"{victim} at +{kill_at:g}s" if kill_at is not None else "",
            recomputed_maps=driver.recomputed_maps,
        )
        if kill_at is not None:
            point.extra = {
                "killed_at_s": net.kills[0][0] - t0 if net.kills else None,
                "detected_at_s": driver.losses[0][0] - t0 if driver.losses else None,
                "relaunched_tasks": driver.relaunched_tasks,
            }
    point.wall_s = time.perf_counter() - wall
    return point


def sweep(args: argparse.Namespace, config: SimConfig) -> list[Point]:
    points = []
    for workload in args.workloads:
        for machines in args.machines:
            for group_size in args.group_sizes:
                point = drizzle.sim.run(
                    run_point(workload, machines, args.slots, group_size, args.batches, config)
                )
                points.append(point)
                print(
                    f"{workload:7s} machines={machines:4d} G={group_size:3d} "
                    f"{point.ms_per_batch:8.3f} ms/micro-batch  driver busy "
                    f"{point.driver_busy:6.1%}  wall {point.wall_s:5.1f}s"
                    f"{'' if point.correct else '  WRONG RESULTS'}",
                    flush=True,
                )
    return points


def table(points: list[Point], workload: str) -> str:
    sizes = sorted({p.machines for p in points if p.workload == workload})
    groups = sorted({p.group_size for p in points if p.workload == workload})
    lines = ["| G | " + " | ".join(str(m) for m in sizes) + " |"]
    lines.append("|---|" + "---|" * len(sizes))
    for g in groups:
        row = {
            p.machines: p.ms_per_batch
            for p in points
            if p.workload == workload and p.group_size == g
        }
        lines.append(f"| {g} | " + " | ".join(f"{row[m]:.2f}" for m in sizes) + " |")
    return "\n".join(lines)


def plot(points: list[Point], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[plot]'): no PNG written")
        return
    workloads = [w for w in ("single", "shuffle") if any(p.workload == w for p in points)]
    fig, axes = plt.subplots(1, len(workloads), figsize=(6.5 * len(workloads), 4.8), squeeze=False)
    titles = {
        "single": "single stage (paper Fig. 4(a))",
        "shuffle": "with shuffle (paper Fig. 5(b))",
    }
    for ax, workload in zip(axes[0], workloads, strict=True):
        for g in sorted({p.group_size for p in points if p.workload == workload}):
            mine = sorted(
                (p.machines, p.ms_per_batch)
                for p in points
                if p.workload == workload and p.group_size == g
            )
            ax.plot(*zip(*mine, strict=True), marker="o", label=f"sim G={g}")
        for label, values in PAPER[workload].items():
            ax.plot(MACHINES, values, linestyle="--", color="grey", alpha=0.6, linewidth=1)
            ax.annotate(
                f"paper {label}",
                (MACHINES[-1], values[-1]),
                fontsize=7,
                color="grey",
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(MACHINES, [str(m) for m in MACHINES])
        ax.set_xlabel("machines (4 slots each)")
        ax.set_ylabel("time per micro-batch (ms)")
        ax.set_title(titles[workload])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def write_csv(points: list[Point], path: str) -> None:
    with open(path, "w", newline="") as out:
        fields = [f for f in Point.__dataclass_fields__ if f != "extra"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for p in points:
            row = asdict(p)
            row.pop("extra")
            for key in ("ms_per_batch", "driver_busy", "virtual_s", "wall_s"):
                row[key] = round(row[key], 6)
            writer.writerow(row)
    print(f"wrote {path}")


def scale(args: argparse.Namespace, config: SimConfig) -> list[Point]:
    points = []
    for kill_at in (None, args.kill_at):
        point = drizzle.sim.run(
            run_point(
                "single", args.executors, args.slots, 100, args.batches, config, kill_at=kill_at
            )
        )
        points.append(point)
        what = (
            f"executor {point.failure} killed (silently)" if kill_at is not None else "no failure"
        )
        print(
            f"{args.executors} executors x {args.slots} slots, {args.batches} micro-batches, "
            f"G=100, {what}: wall {point.wall_s:.1f}s, virtual {point.virtual_s:.3f}s "
            f"({point.ms_per_batch:.2f} ms/micro-batch), results "
            f"{'correct' if point.correct else 'WRONG'}",
            flush=True,
        )
        if kill_at is not None and point.extra["detected_at_s"] is None:
            print("  the run ended before the loss was detected: nothing to recover")
        elif kill_at is not None:
            print(
                f"  loss detected {point.extra['detected_at_s']:.3f}s into the run "
                f"(killed at {point.extra['killed_at_s']:.3f}s); "
                f"{point.extra['relaunched_tasks']} task(s) run again, "
                f"{point.recomputed_maps} of them maps"
            )
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", nargs="+", choices=("single", "shuffle"), default=["single", "shuffle"]
    )
    parser.add_argument("--machines", nargs="+", type=int, default=list(MACHINES))
    parser.add_argument("--group-sizes", nargs="+", type=int, default=list(GROUP_SIZES))
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--task-ms", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="write the points here")
    parser.add_argument("--png", help="plot them here (needs matplotlib)")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="instead: --executors executors at G=100, then again with one "
        "killed --kill-at virtual seconds into the run",
    )
    parser.add_argument("--executors", type=int, default=1024)
    parser.add_argument("--kill-at", type=float, default=0.3)
    args = parser.parse_args()
    config = SimConfig(seed=args.seed)
    config = replace(config, compute=ComputeModel(task_s=args.task_ms / 1000, byte_s=0.0))
    began = time.perf_counter()
    points = scale(args, config) if args.scale else sweep(args, config)
    if not args.scale:
        for workload in args.workloads:
            print(f"\n{workload}: ms per micro-batch (rows: G, columns: machines)")
            print(table(points, workload))
    if args.csv:
        write_csv(points, args.csv)
    if args.png and not args.scale:
        plot(points, args.png)
    print(f"total wall time {time.perf_counter() - began:.1f}s")
    if not all(p.correct for p in points):
        sys.exit(1)


if __name__ == "__main__":
    main()
