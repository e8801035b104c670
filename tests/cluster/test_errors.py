"""Failures: user exceptions in tasks, retries, and arguments rejected up front.

Task functions that fail count their calls in a module-level counter: executors of
``local[N]`` run tasks on threads of this process, and module-level functions are
pickled by reference, so the counts are visible here.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import operator
import random
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from drizzle import Context, DrizzleError, JobFailed
from drizzle.wire.messages import LaunchGroup, TaskSpec
from drizzle.wire.repeat import all_tasks as expand

from .conftest import WAIT, MakeContext, PostLog

_CALLS: collections.Counter[tuple[str, int, int]] = collections.Counter()
_LOCK = threading.Lock()


def _count(kind: str, batch: int, partition: int) -> int:
    """Record one call; returns how many calls of this key there were, this one included."""
    with _LOCK:
        _CALLS[(kind, batch, partition)] += 1
        return _CALLS[(kind, batch, partition)]


def calls(kind: str, batch: int, partition: int) -> int:
    with _LOCK:
        return _CALLS[(kind, batch, partition)]


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    with _LOCK:
        _CALLS.clear()


class ExplodeInMap:
    """A map-side partition function of micro-batch ``batch`` that raises in ``bad``."""

    def __init__(self, batch: int, bad: int) -> None:
        self.batch = batch
        self.bad = bad

    def __call__(self, index: int, it: Iterator[int]) -> Iterator[tuple[int, int]]:
        if index == self.bad:
            _count("map", self.batch, index)
            raise ValueError(f"boom in map partition {index} of batch {self.batch}")
        return ((x % 4, x) for x in it)


def explode_in_result(it: Iterator[Any]) -> list[Any]:
    records = list(it)
    if any(k == 1 for k, _ in records):
        _count("result", 0, 0)
        raise KeyError("the reducer holding key 1 refuses to work")
    return records


class FailOnce:
    """Raises on the first attempt of each partition, then behaves."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, index: int, it: Iterator[int]) -> Iterator[int]:
        if _count(self.tag, 0, index) == 1:
            raise RuntimeError(f"transient failure of partition {index}")
        return it


def launches_of(post_log: PostLog, batch: int, stage: int, partition: int) -> list[tuple[str, int]]:
    """(executor, attempt) of every launch of one task, in the order they were sent."""
    return [
        (p.peer, spec.attempt)
        for p in post_log.of("LaunchGroup")
        if isinstance(p.message, LaunchGroup)
        for spec in expand(p.message)
        if (spec.batch, spec.stage_id, spec.partition) == (batch, stage, partition)
    ]


def spec_of(post_log: PostLog, error: JobFailed) -> tuple[str, TaskSpec]:
    """The launched attempt the error names (the last), with its executor."""
    assert error.attempts is not None
    found = [
        (p.peer, spec)
        for p in post_log.of("LaunchGroup")
        if isinstance(p.message, LaunchGroup)
        for spec in expand(p.message)
        if (spec.batch, spec.stage_id, spec.partition, spec.attempt)
        == (error.batch, error.stage, error.partition, error.attempts - 1)
    ]
    assert len(found) == 1, found
    return found[0]


def executor_ids(ctx: Context) -> list[str]:
    return [e.executor_id for e in ctx.cluster.executors]


# ----------------------------------------------------------------------- user exceptions


async def test_map_task_exception_names_where_it_happened(
    make_context: MakeContext, post_log: PostLog
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", max_task_attempts=2)
        src = ctx.parallelize(range(40), 4)
        jobs = [
            src.map_partitions_with_index(ExplodeInMap(i, bad=2 if i == 3 else -1)).reduce_by_key(
                operator.add, 4
            )
            for i in range(5)
        ]
        with pytest.raises(JobFailed) as info:
            await ctx.run_jobs(jobs, group_size=5)
        error = info.value
        assert (error.batch, error.partition, error.attempts) == (3, 2, 2)
        assert error.executor in executor_ids(ctx)
        assert error.cause_type == "ValueError"
        executor, spec = spec_of(post_log, error)
        assert executor == error.executor
        assert spec.shuffle_output is not None, "the failing task is the map task"
        # The message says all of it; the traceback shows the user's code and error.
        text = str(error)
        for part in (
            "micro-batch 3",
            f"stage {error.stage}",
            "partition 2",
            error.executor,
            "2 attempt(s)",
            "ValueError",
            "boom in map partition 2 of batch 3",
        ):
            assert part in text, (part, text)
        tb = error.remote_traceback
        assert "Traceback (most recent call last)" in tb
        assert 'raise ValueError(f"boom in map partition {index} of batch {self.batch}")' in tb
        assert "ValueError: boom in map partition 2 of batch 3" in tb
        assert "test_errors.py" in tb
        assert "in __call__" in tb
        assert calls("map", 3, 2) == 2  # exactly max_task_attempts attempts
        # The second attempt ran on another executor than the first.
        attempts = launches_of(post_log, 3, spec.stage_id, 2)
        assert [a for _, a in attempts] == [0, 1]
        assert attempts[0][0] != attempts[1][0]


async def test_result_task_exception_names_the_reducer(
    make_context: MakeContext, post_log: PostLog
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[3]", max_task_attempts=1)
        ds = ctx.parallelize(range(30), 3).map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 3)
        with pytest.raises(JobFailed) as info:
            await ctx.run_job(ds, explode_in_result)
        error = info.value
        executor, spec = spec_of(post_log, error)
        assert spec.is_result
        assert spec.shuffle_output is None
        assert error.batch == 0
        assert error.attempts == 1
        assert executor == error.executor
        assert error.cause_type == "KeyError"
        assert "the reducer holding key 1 refuses to work" in error.remote_traceback
        assert (
            'raise KeyError("the reducer holding key 1 refuses to work")' in error.remote_traceback
        )
        assert calls("result", 0, 0) == 1


async def test_default_attempts_is_four(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        ds = ctx.parallelize(range(8), 4).map_partitions_with_index(ExplodeInMap(0, bad=1))
        with pytest.raises(JobFailed) as info:
            await ds.collect()
        assert info.value.attempts == 4
        assert calls("map", 0, 1) == 4
        assert info.value.partition == 1
        assert info.value.batch == 0


async def test_task_failing_only_on_first_attempt_succeeds(
    make_context: MakeContext, post_log: PostLog
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", max_task_attempts=2)
        before = sum(e.state.stats.retries for e in ctx.cluster.executors)
        ds = ctx.parallelize(range(20), 4).map_partitions_with_index(FailOnce("once"))
        keyed = ds.map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 2)
        assert sorted(await keyed.collect()) == [(0, 63), (1, 70), (2, 57)]
        assert [calls("once", 0, p) for p in range(4)] == [2, 2, 2, 2]
        after = sum(e.state.stats.retries for e in ctx.cluster.executors)
        assert after - before == 4
        # Each partition's second attempt ran on another executor than its first.
        for partition in range(4):
            runs = [
                (peer, spec.attempt)
                for p in post_log.of("LaunchGroup")
                if isinstance(p.message, LaunchGroup)
                for spec in expand(p.message)
                if spec.partition == partition and spec.shuffle_output is not None
                for peer in [p.peer]
            ]
            assert [a for _, a in runs] == [0, 1], runs
            assert runs[0][0] != runs[1][0], runs
        # With one attempt allowed, the same transient failure fails the job.
        strict = await make_context("local[2]", max_task_attempts=1)
        with pytest.raises(JobFailed) as info:
            await strict.parallelize(range(4), 2).map_partitions_with_index(FailOnce("x")).count()
        assert info.value.attempts == 1
        assert "transient failure of partition" in info.value.remote_traceback


def group_once(records: Iterator[tuple[int, Any]]) -> list[tuple[int, list[Any]]]:
    """A reducer that fails on its first call in this test, then behaves."""
    groups = list(records)
    if _count("reducer", 0, 0) == 1:
        raise RuntimeError("transient failure of the reducer")
    return [(k, sorted(v)) for k, v in groups]


async def test_an_executor_a_retry_moved_away_from_releases_the_shuffle(
    make_context: MakeContext,
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[3]")
        src = ctx.parallelize(range(8), 2)

        def job() -> Any:
            return src.map(lambda x: (0, x)).group_by_key(1).map_partitions(group_once)

        for _ in range(5):  # the first group's reducer runs twice, on two executors
            [[result]] = await ctx.run_jobs([job()], group_size=1)
            assert result == [(0, list(range(8)))]
        assert calls("reducer", 0, 0) == 6
        # Shuffles are released with the next launch: only the last group's is left.
        held = {
            e.executor_id: set(e.store._shuffle_keys)
            for e in ctx.cluster.executors
            if e.store._shuffle_keys
        }
        assert len({sid for sids in held.values() for sid in sids}) == 1, held


_FLAKY_RNG = random.Random(0)
_FLAKY_SEEN: set[str] = set()


def _flaky(tag: object) -> None:
    """Fail the first call with this tag about half the time (the seeded draw)."""
    key = repr(tag)
    with _LOCK:
        fail = key not in _FLAKY_SEEN and _FLAKY_RNG.random() < 0.5
        _FLAKY_SEEN.add(key)
    if fail:
        raise RuntimeError(f"flaky failure of {key}")


def _keyed_flaky(x: int, off: int, i: int, reducers: int) -> tuple[int, int]:
    if x % 17 == 0:
        _flaky(("map", i, x))
    return ((x + off) % reducers, x + off)


def _add_flaky(
    i: int,
) -> Callable[[Iterator[tuple[int, list[int]]], Iterator[tuple[int, int]]], Iterator[Any]]:
    def add(groups: Iterator[tuple[int, list[int]]], state: Iterator[tuple[int, int]]) -> Any:
        groups_ = list(groups)
        sums = dict(state)
        _flaky(("add", i, sorted(sums)))
        for k, vs in groups_:
            sums[k] = sums.get(k, 0) + sum(vs)
        return iter(sorted(sums.items()))

    return add


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("barrier", [True, False])
@pytest.mark.parametrize("group_size", [1, 4])
@pytest.mark.parametrize("master", ["local[1]", "local[3]"])
async def test_stateful_job_with_flaky_tasks_gives_the_right_answer(
    make_context: MakeContext, master: str, group_size: int, barrier: bool, seed: int
) -> None:
    """Map and state-updating tasks fail on their first attempt at random; every
    failed attempt runs again (elsewhere where it can) and the sums come out right."""
    with _LOCK:
        _FLAKY_RNG.seed(seed)
        _FLAKY_SEEN.clear()
    iters, n, reducers = 8, 60, 3
    async with asyncio.timeout(WAIT):
        ctx = await make_context(master, barrier=barrier, max_task_attempts=6)
        rdd = ctx.parallelize(range(1, n + 1), 4).cache()
        state = ctx.parallelize(range(reducers), reducers).map(lambda k: (k, 0)).cache()
        jobs = []
        for i in range(iters):
            data = rdd.map(functools.partial(_keyed_flaky, off=i * n, i=i, reducers=reducers))
            state = data.group_by_key(reducers).zip_partitions(state, _add_flaky(i)).cache()
            jobs.append(state)
        got = await ctx.run_jobs(jobs, group_size=group_size)
    sums = [0] * reducers
    for i in range(iters):
        for x in range(1, n + 1):
            sums[(x + i * n) % reducers] += x + i * n
        assert got[i] == [[(k, sums[k])] for k in range(reducers)]
    retried = sum(e.state.stats.retries for e in ctx.cluster.executors)
    assert retried > 0, "no task failed: the test tested nothing"


async def test_unpicklable_result_fails_the_job(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        with pytest.raises(JobFailed) as info:
            await ctx.run_job(ctx.parallelize(range(4), 2), lambda it: (x for x in it))
        assert "pickle" in str(info.value)
        assert info.value.attempts == 4


# ----------------------------------------------------------------------- failed groups


async def test_failed_group_returns_no_partial_results(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        src = ctx.parallelize(range(16), 4)
        jobs = [
            src.map_partitions_with_index(ExplodeInMap(i, bad=0 if i == 4 else -1)).reduce_by_key(
                operator.add, 2
            )
            for i in range(5)
        ]
        with pytest.raises(JobFailed) as info:
            await ctx.run_jobs(jobs, group_size=5)
        assert info.value.batch == 4
        # The context is still usable, and the same micro-batches without the bad one run.
        good = await ctx.run_jobs(jobs[:4], group_size=4)
        expected = sorted({k: sum(x for x in range(16) if x % 4 == k) for k in range(4)}.items())
        assert [sorted(r for part in parts for r in part) for parts in good] == [expected] * 4


async def test_iter_jobs_stops_at_the_failed_group(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        src = ctx.parallelize(range(12), 3)
        jobs = [
            src.map_partitions_with_index(ExplodeInMap(i, bad=1 if i == 3 else -1)).reduce_by_key(
                operator.add, 2
            )
            for i in range(6)
        ]
        seen: list[int] = []
        expected = sorted({k: sum(x for x in range(12) if x % 4 == k) for k in range(4)}.items())

        async def consume() -> None:
            async for parts in ctx.iter_jobs(jobs, group_size=2):  # groups [0,1] [2,3] [4,5]
                assert sorted(r for part in parts for r in part) == expected
                seen.append(len(seen))

        with pytest.raises(JobFailed) as info:
            await consume()
        assert info.value.batch == 3
        assert seen in ([0, 1], [0, 1, 2]), "nothing after the failed micro-batch is yielded"
        assert ctx.cluster.driver is not None
        assert not ctx.cluster.driver.groups


# ------------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "master",
    [
        "",
        "local[0]",
        "local[-1]",
        "local[x]",
        "local-cluster[0]",
        "local-cluster[2,0]",
        "spark://host:7077",
        "tcp://host",
        "tcp://host:99999",
        "yarn",
    ],
)
def test_bad_master_url(master: str) -> None:
    with pytest.raises(ValueError, match="master"):
        Context(master)


def test_bad_context_options() -> None:
    with pytest.raises(TypeError):
        Context(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_task_attempts"):
        Context("local[1]", max_task_attempts=0)
    with pytest.raises(ValueError, match="max_task_attempts"):
        Context("local[1]", max_task_attempts=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="heartbeat"):
        Context("local[1]", heartbeat_interval=2.0, heartbeat_timeout=1.0)


async def test_context_not_started() -> None:
    ctx = Context("local[1]")
    with pytest.raises(DrizzleError, match="not running"):
        await ctx.run_job(ctx.parallelize([1], 1))


BAD_PARTITIONS = [0, -1, 1.5, True, "2"]


@pytest.mark.parametrize("n", BAD_PARTITIONS, ids=repr)
async def test_bad_num_partitions(ctx: Context, n: Any) -> None:
    async with asyncio.timeout(WAIT):
        kv = ctx.parallelize([(1, 2)], 1)
        with pytest.raises(ValueError, match="num_partitions"):
            ctx.parallelize([1, 2], n)
        with pytest.raises(ValueError, match="num_partitions"):
            kv.reduce_by_key(operator.add, n)
        with pytest.raises(ValueError, match="num_partitions"):
            kv.group_by_key(n)
        with pytest.raises(ValueError, match="num_partitions"):
            kv.partition_by(n)
        with pytest.raises(ValueError, match="num_partitions"):
            kv.join(kv, n)
        assert await kv.count() == 1


async def test_non_callables_are_refused(ctx: Context, post_log: PostLog) -> None:
    async with asyncio.timeout(WAIT):
        ds = ctx.parallelize([(1, 2)], 1)
        for transform in (
            ds.map,
            ds.filter,
            ds.flat_map,
            ds.map_partitions,
            ds.map_partitions_with_index,
            ds.key_by,
            ds.map_values,
        ):
            with pytest.raises(TypeError, match="callable"):
                transform(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            ds.reduce_by_key("add")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            ds.zip_partitions(ds, None)
        with pytest.raises(TypeError, match="callable"):
            await ds.reduce(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await ctx.run_job(ds, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not callable"):
            await ctx.run_jobs([ds], [5])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="not callable"):
            await ctx.run_job(ds, "f")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="functions"):
            await ctx.run_jobs([ds, ds], [list])
        assert not post_log.of("PlanGroup"), "nothing was submitted"


@pytest.mark.parametrize("group_size", [0, -1, 1.5, None], ids=repr)
async def test_bad_group_size(ctx: Context, post_log: PostLog, group_size: Any) -> None:
    async with asyncio.timeout(WAIT):
        ds = ctx.parallelize([1], 1)
        with pytest.raises(ValueError, match="group_size"):
            await ctx.run_jobs([ds], group_size=group_size)
        with pytest.raises(ValueError, match="group_size"):
            async for _ in ctx.iter_jobs([ds], group_size=group_size):
                pass
        assert not post_log.of("PlanGroup")


async def test_run_jobs_needs_a_list_of_datasets(
    make_context: MakeContext, post_log: PostLog
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]")
        other = await make_context("local[1]")
        ds = ctx.parallelize([1, 2], 2)
        with pytest.raises(TypeError, match="run_job"):
            await ctx.run_jobs(ds)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="Dataset"):
            await ctx.run_jobs([ds, [1, 2]])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="another context"):
            await ctx.run_jobs([other.parallelize([1], 1)])
        with pytest.raises(ValueError, match="different contexts"):
            ds.union(other.parallelize([1], 1))
        with pytest.raises(TypeError, match="Dataset"):
            ds.union([1, 2])  # type: ignore[arg-type]
        assert not post_log.of("PlanGroup")
        assert await ctx.run_jobs([ds], group_size=3) == [[[1], [2]]]


async def test_dataset_used_inside_a_task_is_refused(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        a = ctx.parallelize(range(4), 2)
        b = ctx.parallelize(range(4), 2)
        with pytest.raises(TypeError, match="Dataset cannot be pickled"):
            await a.map(lambda x: b.num_partitions + x).collect()
        assert await a.collect() == [0, 1, 2, 3]


# ------------------------------------------------------------------ deadlines and closing

_GATE = threading.Event()


def gated(it: Iterator[Any]) -> list[Any]:
    """Holds its worker thread until the test opens the gate (bounded)."""
    _GATE.wait(timeout=WAIT / 2)
    return list(it)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    _GATE.clear()
    try:
        yield _GATE
    finally:
        _GATE.set()  # never leave a worker thread waiting


async def test_group_timeout_fails_the_group(
    make_context: MakeContext, gate: threading.Event
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]", group_timeout=0.5)
        src = ctx.parallelize(range(4), 2)
        with pytest.raises(JobFailed, match="did not complete within"):
            await ctx.run_jobs([src, src], [list, gated], group_size=2)
        gate.set()
        assert await src.collect() == [0, 1, 2, 3]  # the context recovers


async def test_group_timeout_message_states_the_timeout(
    make_context: MakeContext, gate: threading.Event
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[1]", group_timeout=0.5)
        with pytest.raises(JobFailed) as info:
            await ctx.run_job(ctx.parallelize([1], 1), gated)
        assert "0.5" in str(info.value)


async def test_closing_the_context_fails_running_jobs(
    make_context: MakeContext, gate: threading.Event
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]")
        src = ctx.parallelize(range(4), 2)
        results = ctx.iter_jobs([src, src, src], [list, gated, list], group_size=3)
        assert await anext(results) == [[0, 1], [2, 3]]  # micro-batch 1 is now held
        await ctx.close()
        with pytest.raises(JobFailed, match="closed"):
            await anext(results)
        with pytest.raises(DrizzleError, match="not running"):
            await src.collect()


# -------------------------------------------------------------------------- deep lineage


def _deep(ctx: Context, depth: int) -> Any:
    ds = ctx.parallelize(range(4), 2)
    for _ in range(depth):
        ds = ds.map(operator.pos)
    return ds


async def test_deep_lineage_is_refused_with_advice(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        assert await _deep(ctx, 150).collect() == [0, 1, 2, 3]
        with pytest.raises(Exception, match=r"cache\(\)"):
            await _deep(ctx, 1000).collect()
        # Caching an intermediate dataset lets the chain grow.
        ds = ctx.parallelize(range(4), 2)
        for i in range(600):
            ds = ds.map(operator.pos)
            if i % 150 == 149:
                ds = ds.cache()
                assert await ds.count() == 4
        assert await ds.collect() == [0, 1, 2, 3]


async def test_deep_lineage_error_is_a_drizzle_error(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        with pytest.raises(DrizzleError, match=r"cache\(\)"):
            await _deep(ctx, 1000).collect()
