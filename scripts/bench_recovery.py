"""Recovery from the loss of an executor in the middle of a group.

Runs the running-sum stateful job (examples/running_sum.py) on local-cluster[4] at
several group sizes, SIGKILLs one executor process in the middle of a group, and
prints the time per micro-batch before, during and after the failure, the detection
time (kill to the driver learning of the loss) and the recovery time (detection to the
end of the group that lost the executor). Results are checked against the closed form.

Targets: the worst micro-batch latency during recovery is at most the detection
timeout plus 3x the steady-state group duration, and micro-batches are back to their
steady-state time within one group after detection.

    python scripts/bench_recovery.py --groups 10 50 100
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
from pathlib import Path

import drizzle
from drizzle import Context

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from running_sum import add_group_to_state


def iterations(ctx: Context, count: int, n: int, reducers: int) -> list[drizzle.Dataset]:
    rdd = ctx.parallelize(range(1, n + 1), 4).cache()
    state = ctx.parallelize(range(reducers), reducers).map(lambda k: (k, 0)).cache()
    out = []
    for i in range(count):
        data = rdd.map(lambda x, off=i * n: ((x + off) % reducers, x + off))
        state = data.group_by_key(reducers).zip_partitions(state, add_group_to_state).cache()
        out.append(state)
    return out


def expected(count: int, n: int) -> list[list[list[tuple[int, int]]]]:
    even = odd = 0
    out = []
    for i in range(count):
        values = range(i * n + 1, (i + 1) * n + 1)
        even += sum(v for v in values if v % 2 == 0)
        odd += sum(v for v in values if v % 2 == 1)
        out.append([[(0, even)], [(1, odd)]])
    return out


async def run_one(args: argparse.Namespace, group: int) -> None:
    groups = args.num_groups
    count = groups * group
    kill_at = (groups // 2) * group + group // 2  # middle of the middle group
    async with Context(
        args.master,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
    ) as ctx:
        await ctx.run_jobs(iterations(ctx, 2 * group, args.elems, 2), group_size=group)
        datasets = iterations(ctx, count, args.elems, 2)
        # The driver stamps losses with its loop's clock; use the same clock here.
        loop_time = ctx.cluster.driver_node.loop.time  # type: ignore[union-attr]
        arrivals: list[float] = []
        results = []
        killed_at = 0.0
        start = loop_time()
        async for result in ctx.iter_jobs(datasets, group_size=group):
            results.append(result)
            arrivals.append(loop_time())
            if len(results) == kill_at:
                victim = ctx.cluster.processes[1]
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = loop_time()
        if results != expected(count, args.elems):
            raise AssertionError("results differ from the failure-free closed form")
        driver = ctx.cluster.driver
        assert driver is not None
        detected_at = driver.losses[-1][0] if driver.losses else float("nan")

    gaps = [b - a for a, b in zip([start, *arrivals], arrivals, strict=False)]

    def group_end(g: int) -> float:
        return arrivals[min(len(arrivals), (g + 1) * group) - 1]

    group_walls = [group_end(g) - (group_end(g - 1) if g else start) for g in range(groups)]
    killed_group = kill_at // group
    # The group that recovers is the one running when the loss is detected: the group
    # hit by the kill can finish without the lost executor when it needed nothing more
    # from it, and then the next group is the one that recovers.
    recovering = next(g for g in range(groups) if group_end(g) >= detected_at)
    steady_group = statistics.median(group_walls[:killed_group])
    before = gaps[: killed_group * group]
    during = gaps[kill_at : (recovering + 1) * group]
    after = gaps[(recovering + 1) * group : (recovering + 2) * group]
    detection = detected_at - killed_at
    recovery = group_end(recovering) - detected_at
    worst = max(during)
    bound = args.heartbeat_timeout + 3 * steady_group
    first_after = statistics.median(after) if after else float("nan")
    steady_again = bool(after) and first_after <= 2 * statistics.median(before)
    print(
        f"G={group:<4} per micro-batch ms: before {statistics.median(before) * 1e3:7.2f}  "
        f"worst during {worst * 1e3:8.1f}  next group {first_after * 1e3:7.2f} | "
        f"detection {detection:5.2f} s  recovery {recovery * 1e3:7.1f} ms | "
        f"steady group {steady_group * 1e3:7.1f} ms  bound {bound * 1e3:7.1f} ms  "
        f"{'OK' if worst <= bound else 'OVER'}, steady again: {'yes' if steady_again else 'NO'} "
        f"| maps recomputed {driver.recomputed_maps}",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    print(f"master={args.master} heartbeat {args.heartbeat_interval}s/{args.heartbeat_timeout}s")
    for group in args.groups:
        await run_one(args, group)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--master", default="local-cluster[4]")
    p.add_argument("--groups", nargs="+", type=int, default=[10, 50, 100])
    p.add_argument("--num-groups", type=int, default=5, help="groups per run (default 5)")
    p.add_argument("--elems", type=int, default=4000)
    p.add_argument("--heartbeat-interval", type=float, default=0.5)
    p.add_argument("--heartbeat-timeout", type=float, default=3.0)
    return p.parse_args()


if __name__ == "__main__":
    drizzle.run(main(parse_args()))
