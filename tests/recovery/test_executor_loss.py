"""Losing an executor in the middle of a group, on running clusters.

The job is the running sum of the multi-process tests: a cached input of four
partitions, shuffled every micro-batch to two reducers that add their sums to a cached
state. One map function of micro-batch ``k`` is a gate: the first time it meets the
first element of one input partition it stops, so the executor running that map task
is lost at a known point (micro-batches before ``k`` delivered, none after) and the
test needs no sleeps. In-process, the gate is a pair of ``threading.Event``s and the
"crash" closes the executor's node (its heartbeats stop, messages to it fail); with
processes, the gate writes its pid to a file and the test SIGKILLs that process.

Every run must give the failure-free results, each (micro-batch, partition) result
accepted by the driver exactly once, and recompute only lost map outputs: the count
is checked against the group's placement, captured when the group scheduler plans
the recovery.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import drizzle.actors.group_scheduler as group_scheduler
from drizzle import ClusterError, Context, Dataset, JobFailed
from drizzle.actors.driver import _MISSING, DriverActor, GroupRun
from drizzle.scheduler.dag import GroupPlan
from drizzle.scheduler.group import GroupRecord, GroupSchedulerState, Placement
from drizzle.scheduler.recovery import RecoveryPlan
from drizzle.scheduler.recovery import plan_recovery as real_plan_recovery
from drizzle.scheduler.tracker import MapOutputTrackerState
from drizzle.wire.messages import MapOutputReady, TaskSpec

ROOT = Path(__file__).resolve().parents[2]
N = 400
"""Elements of the cached input (four partitions of 100)."""
INPUTS, REDUCERS = 4, 2
WAIT = 20.0
"""Longest a gate holds its task if the test never releases it."""


# ----------------------------------------------------------------------------- the job


def _zero(k: int) -> tuple[int, int]:
    return (k, 0)


def _keyed(x: int, off: int) -> tuple[int, int]:
    return ((x + off) % REDUCERS, x + off)


def _add(
    groups: Iterator[tuple[int, list[int]]], state: Iterator[tuple[int, int]]
) -> Iterator[tuple[int, int]]:
    for (_, values), (key, previous) in zip(groups, state, strict=True):
        yield (key, previous + sum(values))


def first_element(partition: int) -> int:
    """The first element of input partition ``partition`` (``parallelize`` slices)."""
    return 1 + N * partition // INPUTS


Gate = Callable[..., tuple[int, int]]
"""A map function of the running sum: ``fn(x, off=...)``."""


def running_sum(ctx: Context, iters: int, gates: dict[int, Gate] | None = None) -> list[Dataset]:
    """The running sum; micro-batch i maps with ``gates[i]`` if given."""
    rdd = ctx.parallelize(range(1, N + 1), INPUTS).cache()
    state = ctx.parallelize(range(REDUCERS), REDUCERS).map(_zero).cache()
    out = []
    for i in range(iters):
        fn = (gates or {}).get(i, _keyed)
        data = rdd.map(functools.partial(fn, off=i * N))
        state = data.group_by_key(REDUCERS).zip_partitions(state, _add).cache()
        out.append(state)
    return out


def expected_sums(iters: int) -> list[list[list[tuple[int, int]]]]:
    out = []
    even = odd = 0
    for i in range(iters):
        values = range(i * N + 1, (i + 1) * N + 1)
        even += sum(v for v in values if v % 2 == 0)
        odd += sum(v for v in values if v % 2 == 1)
        out.append([[(0, even)], [(1, odd)]])
    return out


# ------------------------------------------------------------------ in-process gate

_REACHED = threading.Event()
"""Set when a stopping gate is reached."""
_RELEASE = threading.Event()
"""Lets every gate's task go on (the test sets it once the executor is gone)."""
_ARMED: set[int] = set()
_LOCK = threading.Lock()


def _gated_in_process(x: int, off: int, stop: int = -1, hold: int = -1) -> tuple[int, int]:
    """At element ``stop``, signal ``_REACHED`` and wait; at ``hold``, just wait. Only
    the first attempt waits (each gate is armed once): a re-run goes through."""
    if x in (stop, hold):
        with _LOCK:
            fire = x in _ARMED
            _ARMED.discard(x)
        if fire:
            if x == stop:
                _REACHED.set()
            _RELEASE.wait(WAIT)
    return _keyed(x, off)


@pytest.fixture
def gate() -> Iterator[Callable[..., Gate]]:
    """``gate(stop=p, hold=q)``: a map function with gates armed on the first element
    of input partitions p and q."""

    def arm(stop: int = -1, hold: int = -1) -> Gate:
        xs = {name: first_element(p) for name, p in (("stop", stop), ("hold", hold)) if p >= 0}
        _ARMED.update(xs.values())
        return functools.partial(_gated_in_process, **xs)

    _REACHED.clear()
    _RELEASE.clear()
    _ARMED.clear()
    yield arm
    _ARMED.clear()
    _RELEASE.set()  # never leave a worker thread waiting


# ------------------------------------------------------------------ process gate


def _gated_process(x: int, off: int, flag: str, at: int) -> tuple[int, int]:
    if x == at:
        mine = f"{flag}.{os.getpid()}"
        Path(mine).write_text(str(os.getpid()))
        try:
            os.link(mine, flag)  # atomic: only the first attempt anywhere stops
        except FileExistsError:
            pass
        else:
            time.sleep(WAIT)  # SIGKILLed here
    return _keyed(x, off)


def process_gate(tmp_path: Path, partition: int) -> tuple[Path, Gate]:
    flag = tmp_path / "gate"
    return flag, functools.partial(_gated_process, flag=str(flag), at=first_element(partition))


async def wait_for_file(path: Path, within: float) -> str:
    async with asyncio.timeout(within):
        # The gate is in another process: nothing to wait on but the file system.
        while not await asyncio.to_thread(path.exists):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    return await asyncio.to_thread(path.read_text)


# ------------------------------------------------------------------ observation


@dataclass
class Recovery:
    """One recovery the group scheduler planned, with the group as it was before."""

    lost: frozenset[str]
    delivered: frozenset[tuple[int, int]]
    tasks: dict[int, tuple[str, TaskSpec]]
    """Task id → (executor, spec) before the recovery moved anything."""
    results: frozenset[tuple[int, int]]
    plan: RecoveryPlan

    def lost_maps(self) -> int:
        """Map tasks of the group that were on a lost executor."""
        return sum(
            1 for e, s in self.tasks.values() if e in self.lost and s.shuffle_output is not None
        )

    def expected_recomputed(self) -> int:
        """Map tasks on a lost executor of micro-batches with a result still missing."""
        undelivered = {b for b, p in self.results - self.delivered}
        return sum(
            1
            for e, s in self.tasks.values()
            if e in self.lost and s.shuffle_output is not None and s.batch in undelivered
        )


@pytest.fixture
def recoveries(monkeypatch: pytest.MonkeyPatch) -> list[Recovery]:
    seen: list[Recovery] = []

    def recording(
        record: GroupRecord,
        alive: list[str],
        lost: set[str],
        delivered: set[tuple[int, int]],
        *rest: Any,
        **options: Any,
    ) -> RecoveryPlan:
        tasks = {tid: (t.executor, t.spec) for tid, t in record.tasks.items()}
        plan = real_plan_recovery(record, alive, lost, delivered, *rest, **options)
        seen.append(
            Recovery(
                frozenset(lost), frozenset(delivered), tasks, frozenset(record.result_task), plan
            )
        )
        return plan

    monkeypatch.setattr(group_scheduler, "plan_recovery", recording)
    return seen


@pytest.fixture
def accepted(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[int, int]]:
    """(micro-batch, partition) → results the driver accepted (not dropped as repeats)."""
    counts: Counter[tuple[int, int]] = Counter()
    original = DriverActor._deliver

    def counting(
        self: DriverActor, run: GroupRun, peer: str, batch: int, partition: int, value: bytes
    ) -> None:
        slots = run.pending.get(batch)
        empty = slots is not None and slots[partition] is _MISSING
        original(self, run, peer, batch, partition, value)
        if empty and slots is not None and slots[partition] is not _MISSING:
            counts[(batch, partition)] += 1

    monkeypatch.setattr(DriverActor, "_deliver", counting)
    return counts


def once_each(iters: int) -> Counter[tuple[int, int]]:
    return Counter({(b, r): 1 for b in range(iters) for r in range(REDUCERS)})


def running_map(ctx: Context, batch: int, partition: int) -> str:
    """The executor of the map task of (micro-batch, input partition) in the running group."""
    group = ctx.cluster.group
    assert group is not None
    [executor] = {
        t.executor
        for record in group.state.records.values()
        for t in record.tasks.values()
        if t.spec.batch == batch
        and t.spec.shuffle_output is not None
        and t.spec.partition == partition
    }
    return executor


# --------------------------------------------------------------------- in process


@pytest.mark.parametrize(
    ("k", "partition"),
    [(14, 0), (14, 2), (4, 2)],
    ids=["maps-only-executor", "reducer-executor", "first-group"],
)
async def test_executor_crash_mid_group_in_process(
    k: int,
    partition: int,
    gate: Callable[..., Gate],
    recoveries: list[Recovery],
    accepted: Counter[tuple[int, int]],
) -> None:
    G, iters = 10, 20
    ctx = Context("local[4]", check_codec=True, heartbeat_interval=0.05, heartbeat_timeout=0.3)
    async with asyncio.timeout(30):
        await ctx.start()
        try:
            jobs = running_sum(ctx, iters, {k: gate(stop=partition)})
            results: list[Any] = []
            async for result in ctx.iter_jobs(jobs, group_size=G):
                results.append(result)
                if len(results) == k:  # micro-batches before k are in; k's gate holds
                    assert await asyncio.to_thread(_REACHED.wait, WAIT)
                    victim = running_map(ctx, k, partition)
                    [node] = [n for n in ctx.cluster.executor_nodes if n.address == victim]
                    await node.close()  # heartbeats stop; messages to it fail
                    _RELEASE.set()
            driver = ctx.cluster.driver
            assert driver is not None
            assert results == expected_sums(iters)
            assert accepted == once_each(iters)
            [recovery] = recoveries
            assert recovery.lost == {victim}
            first = k - k % G
            assert recovery.delivered == {(b, r) for b in range(first, k) for r in range(REDUCERS)}
            # Map `partition` of micro-batches k..end of the group: nothing else.
            assert driver.recomputed_maps == recovery.expected_recomputed() == G - k % G
            holds_reducer = any(
                e == victim and s.is_result and s.batch >= k for e, s in recovery.tasks.values()
            )
            assert holds_reducer == (partition == 2)
            assert driver.relaunched_tasks == (G - k % G) * (2 if holds_reducer else 1)
            assert [e for _, e in driver.losses] == [victim]
            assert victim not in ctx.executors()
            assert len(ctx.executors()) == 3
        finally:
            _RELEASE.set()
            await ctx.close()


async def test_a_failed_fetch_from_a_crashed_executor_is_reported_and_recovered(
    gate: Callable[..., Gate],
    recoveries: list[Recovery],
    accepted: Counter[tuple[int, int]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Blocks travel only by fetch, and heartbeats would take 10 s to miss: the loss
    must be found by the reducers' failed fetch. The victim (map 0 of every
    micro-batch) announced its output of micro-batch k and stops in k+1; the reducers
    of k wait for map 3 of k, held until the victim is gone, then fetch from it."""
    G, iters, k = 10, 20, 13
    announced = asyncio.Event()
    notices: set[tuple[int, int]] = set()
    record = MapOutputTrackerState.record

    def recording(self: MapOutputTrackerState, notice: MapOutputReady) -> None:
        record(self, notice)
        notices.add((notice.shuffle_id, notice.map_id))
        announced.set()

    monkeypatch.setattr(MapOutputTrackerState, "record", recording)
    ctx = Context(
        "local[4]",
        check_codec=True,
        heartbeat_interval=0.05,
        heartbeat_timeout=10.0,
        inline_block_limit=0,
    )
    async with asyncio.timeout(30):
        await ctx.start()
        try:
            jobs = running_sum(ctx, iters, {k: gate(hold=3), k + 1: gate(stop=0)})
            results: list[Any] = []
            async for result in ctx.iter_jobs(jobs, group_size=G):
                results.append(result)
                if len(results) == k:
                    assert await asyncio.to_thread(_REACHED.wait, WAIT)
                    victim = running_map(ctx, k + 1, 0)
                    assert running_map(ctx, k, 0) == victim
                    shuffle = shuffle_of(ctx, k)
                    while (shuffle, 0) not in notices:  # its output of k is announced
                        announced.clear()
                        await announced.wait()
                    [node] = [n for n in ctx.cluster.executor_nodes if n.address == victim]
                    await node.close()
                    _RELEASE.set()
            driver = ctx.cluster.driver
            assert driver is not None
            assert results == expected_sums(iters)
            assert accepted == once_each(iters)
            [recovery] = recoveries
            assert recovery.lost == {victim}
            assert recovery.delivered == {(b, r) for b in range(10, k) for r in range(REDUCERS)}
            # Map 0 of k (announced, then lost) and of every later micro-batch.
            assert driver.recomputed_maps == recovery.expected_recomputed() == G - k % G
            assert driver.relaunched_tasks == G - k % G
            assert f"executor {victim} lost: fetch failed" in caplog.text
        finally:
            _RELEASE.set()
            await ctx.close()


def shuffle_of(ctx: Context, batch: int) -> int:
    """The shuffle micro-batch ``batch`` of the running group writes."""
    group = ctx.cluster.group
    assert group is not None
    [shuffle] = {
        t.spec.shuffle_output.shuffle_id
        for record in group.state.records.values()
        for t in record.tasks.values()
        if t.spec.batch == batch and t.spec.shuffle_output is not None
    }
    return shuffle


# ------------------------------------------------------------------------ processes


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("G", "iters", "k", "partition", "form"),
    [(10, 20, 14, 2, "run_jobs"), (100, 100, 50, 0, "iter_jobs")],
    ids=["G=10", "G=100"],
)
async def test_sigkill_of_an_executor_process_mid_group(
    tmp_path: Path,
    G: int,
    iters: int,
    k: int,
    partition: int,
    form: str,
    recoveries: list[Recovery],
    accepted: Counter[tuple[int, int]],
) -> None:
    async with asyncio.timeout(60):
        async with Context(
            "local-cluster[4]", heartbeat_interval=0.2, heartbeat_timeout=1.0
        ) as ctx:
            pids = {p.pid: p for p in ctx.cluster.processes}
            flag, fn = process_gate(tmp_path, partition)
            jobs = running_sum(ctx, iters, {k: fn})

            async def kill_at_the_gate() -> int:
                pid = int(await wait_for_file(flag, 30))
                assert pid in pids
                os.kill(pid, signal.SIGKILL)
                return pid

            killer = asyncio.ensure_future(kill_at_the_gate())
            try:
                if form == "run_jobs":
                    results = await ctx.run_jobs(jobs, group_size=G)
                else:
                    results = [r async for r in ctx.iter_jobs(jobs, group_size=G)]
            finally:
                if not killer.done():
                    killer.cancel()
            pid = await killer
            assert await pids[pid].wait() == -signal.SIGKILL
            driver = ctx.cluster.driver
            assert driver is not None
            assert results == expected_sums(iters)
            assert accepted == once_each(iters)
            [victim] = {e for _, e in driver.losses}
            [recovery] = recoveries
            assert recovery.lost == {victim}
            share = recovery.lost_maps()
            assert share == G  # one map slot of every micro-batch of the group
            assert 0 < driver.recomputed_maps <= share
            # At least the lost maps of micro-batches with a result missing; more only if
            # the kill beat a copy of the last state the lost executor wrote.
            assert driver.recomputed_maps >= recovery.expected_recomputed() >= G - k % G
            assert len(ctx.executors()) == 3


@pytest.mark.cluster
async def test_losing_every_executor_fails_clearly_and_does_not_hang(tmp_path: Path) -> None:
    async with asyncio.timeout(30):
        async with Context(
            "local-cluster[2]", heartbeat_interval=0.2, heartbeat_timeout=1.0
        ) as ctx:
            flag, fn = process_gate(tmp_path, 0)
            jobs = running_sum(ctx, 10, {3: fn})

            async def kill_everyone() -> None:
                await wait_for_file(flag, 20)
                for p in ctx.cluster.processes:
                    p.send_signal(signal.SIGKILL)

            killer = asyncio.ensure_future(kill_everyone())
            began = time.monotonic()
            with pytest.raises(JobFailed, match=r"no executors are left|lost"):
                await ctx.run_jobs(jobs, group_size=10)
            await killer
            # Detection (1 s of silence) plus one liveness period, with slack.
            assert time.monotonic() - began < 10
            with pytest.raises(ClusterError, match="no executors"):
                await ctx.parallelize(range(10), 2).count()


# ---------------------------------------------------------------------- elasticity


@pytest.mark.cluster
async def test_an_executor_that_joins_gets_tasks_from_the_next_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    placed: list[tuple[int, frozenset[str], frozenset[str]]] = []
    """(group id, executors registered, executors launched) of every placement."""
    original = GroupSchedulerState.place

    def recording(self: GroupSchedulerState, plan: GroupPlan) -> Placement:
        registered = frozenset(self.executors)
        placement = original(self, plan)
        placed.append((plan.group_id, registered, frozenset(placement.launches)))
        return placement

    monkeypatch.setattr(GroupSchedulerState, "place", recording)
    G, groups = 4, 8
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    newcomer: asyncio.subprocess.Process | None = None
    try:
        async with asyncio.timeout(60):
            async with Context("local-cluster[2]") as ctx:
                driver, node = ctx.cluster.driver, ctx.cluster.driver_node
                assert driver is not None
                assert node is not None
                before = set(ctx.executors())
                source = ctx.parallelize(range(N), INPUTS)
                jobs = [
                    source.map(functools.partial(_keyed, off=i * N)).reduce_by_key(
                        operator.add, REDUCERS
                    )
                    for i in range(G * groups)
                ]
                results = []
                async for result in ctx.iter_jobs(jobs, group_size=G):
                    results.append(result)
                    if len(results) == G + 1:  # in the middle of the second group
                        # The newcomer joins with the cluster's key material, as any
                        # executor of an authenticated cluster must.
                        extra_env = getattr(ctx.cluster, "_executor_env", {})
                        extra_args = getattr(ctx.cluster, "_executor_args", [])
                        newcomer = await asyncio.create_subprocess_exec(
                            *(sys.executable, "-m", "drizzle.node", "executor"),
                            *("--driver", node.address, "--cores", "1", *extra_args),
                            env={**env, **extra_env},
                            cwd=ROOT,
                            stdin=asyncio.subprocess.DEVNULL,
                        )
                    if len(results) == G * (groups - 3):  # three groups still to come
                        await driver.wait_executors(len(before) + 1, within=20)
                [joined] = set(ctx.executors()) - before
            assert newcomer is not None
            assert await newcomer.wait() == 0  # told to stop when the context closed
    finally:
        if newcomer is not None and newcomer.returncode is None:
            newcomer.kill()
            await newcomer.wait()

    for i, result in enumerate(results):
        values = [x + i * N for x in range(N)]
        reference = {r: sum(v for v in values if v % REDUCERS == r) for r in range(REDUCERS)}
        assert sorted(kv for part in result for kv in part) == sorted(reference.items())
    assert [g for g, _, _ in placed] == list(range(groups))
    after = [launched for _, registered, launched in placed if joined in registered]
    assert len(after) >= 3
    assert all(joined in launched for launched in after)  # from the first group it could
    assert all(
        joined not in launched for _, registered, launched in placed if joined not in registered
    )
