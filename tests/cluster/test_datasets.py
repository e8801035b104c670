"""Semantics of every dataset operation and action, against plain-Python references.

Each test runs on an in-process ``local[4]`` cluster whose messages all pass through
the codec, twice: with small shuffle blocks carried inside the map-output notices, and
with reducers always pulling them from the mappers. It compares what the cluster
computes with the same computation on Python lists; ``run_job(ds)`` shows the
partitions themselves, so partitioning is checked too, not only the records.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import operator
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from drizzle import Context
from drizzle.partitioning import partition_of

from .conftest import WAIT, MakeContext, PostLog


@pytest.fixture(params=["inline", "pull"])
async def ctx(request: pytest.FixtureRequest, make_context: MakeContext) -> Context:
    """A ``local[4]`` context whose reducers get small shuffle blocks inside the map-output
    notices (``inline``), or always pull them from the mappers (``pull``)."""
    limit = 64 * 1024 if request.param == "inline" else 0
    return await make_context("local[4]", inline_block_limit=limit)


def slices(data: Iterable[Any], n: int) -> list[list[Any]]:
    """Reference partitioning of ``parallelize``: ``n`` contiguous, balanced slices."""
    items = list(data)
    return [items[len(items) * i // n : len(items) * (i + 1) // n] for i in range(n)]


def flat(parts: Iterable[Iterable[Any]]) -> list[Any]:
    return [x for part in parts for x in part]


def reduce_ref(pairs: Iterable[tuple[Any, Any]], fn: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in pairs:
        out[k] = fn(out[k], v) if k in out else v
    return out


def group_ref(pairs: Iterable[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = collections.defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return dict(out)


def assert_hash_partitioned(parts: list[list[Any]]) -> None:
    """Every record of partition ``p`` has a key whose portable hash maps to ``p``."""
    for p, part in enumerate(parts):
        for record in part:
            assert partition_of(record[0], len(parts)) == p, (record, p)


def words(n: int) -> list[str]:
    vocab = ["apple", "pear", "fig", "kiwi", "plum", "date", "lime", "ünïcode", ""]
    return [vocab[(i * 7 + i // 3) % len(vocab)] for i in range(n)]


# ----------------------------------------------------------------------------- parallelize


@pytest.mark.parametrize(
    ("data", "n"),
    [
        (list(range(10)), 3),
        (list(range(10)), 1),
        (list(range(3)), 5),
        ([], 4),
        (["a", "b", "c", "d", "e", "f", "g"], 4),
        (range(100), 7),
        (range(3, 50, 4), 3),
        (range(10, -10, -3), 4),
        (range(0), 2),
    ],
    ids=repr,
)
async def test_parallelize_partitions_contiguous_slices(ctx: Context, data: Any, n: int) -> None:
    async with asyncio.timeout(WAIT):
        ds = ctx.parallelize(data, n)
        assert ds.num_partitions == n
        parts = await ctx.run_job(ds)
        assert [list(p) for p in parts] == slices(data, n)
        assert await ds.collect() == list(data)
        assert await ds.count() == len(data)


async def test_parallelize_default_partitions_is_total_cores(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        ds = ctx.parallelize(range(10))
        assert ds.num_partitions == 4  # local[4]: four executors of one core
        assert await ctx.run_job(ds) == slices(range(10), 4)


async def test_parallelize_other_iterables_and_snapshot(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [3, 1, 2]
        ds = ctx.parallelize(data, 2)
        data.append(99)  # parallelize copies its input when called
        assert await ds.collect() == [3, 1, 2]
        gen = ctx.parallelize((x * x for x in range(5)), 2)
        assert await gen.collect() == [0, 1, 4, 9, 16]
        tuples = ctx.parallelize(((i, str(i)) for i in range(3)), 3)
        assert await ctx.run_job(tuples) == [[(0, "0")], [(1, "1")], [(2, "2")]]


# ------------------------------------------------------------------ narrow transformations


async def test_map_filter_flat_map(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = list(range(-7, 30))
        src = ctx.parallelize(data, 4)
        assert await ctx.run_job(src.map(lambda x: x * 3 + 1)) == [
            [x * 3 + 1 for x in s] for s in slices(data, 4)
        ]
        assert await ctx.run_job(src.filter(lambda x: x % 3 == 0)) == [
            [x for x in s if x % 3 == 0] for s in slices(data, 4)
        ]
        expanded = src.flat_map(lambda x: [x] * (x % 3))
        assert await ctx.run_job(expanded) == [
            [y for x in s for y in [x] * (x % 3)] for s in slices(data, 4)
        ]
        chained = src.map(abs).filter(lambda x: x > 4).flat_map(lambda x: (x, -x)).map(str)
        assert await chained.collect() == [
            str(y) for x in data if abs(x) > 4 for y in (abs(x), -abs(x))
        ]


async def test_map_partitions_and_with_index(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = list(range(23))
        src = ctx.parallelize(data, 5)
        sums = src.map_partitions(lambda it: [sum(it)])
        assert await ctx.run_job(sums) == [[sum(s)] for s in slices(data, 5)]
        tagged = src.map_partitions_with_index(lambda i, it: ((i, x) for x in it))
        assert await ctx.run_job(tagged) == [
            [(i, x) for x in s] for i, s in enumerate(slices(data, 5))
        ]
        # After a shuffle, the index is the reduce partition's.
        shuffled = src.key_by(lambda x: x % 4).partition_by(3)
        indexed = shuffled.map_partitions_with_index(lambda i, it: [(i, len(list(it)))])
        parts = await ctx.run_job(shuffled)
        assert await ctx.run_job(indexed) == [[(i, len(p))] for i, p in enumerate(parts)]


async def test_key_by_and_map_values(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = words(20)
        src = ctx.parallelize(data, 3)
        keyed = src.key_by(len)
        assert await ctx.run_job(keyed) == [[(len(w), w) for w in s] for s in slices(data, 3)]
        upper = keyed.map_values(str.upper)
        assert await upper.collect() == [(len(w), w.upper()) for w in data]


# ------------------------------------------------------------------------------- shuffles


@pytest.mark.parametrize(("parent", "reducers"), [(4, 3), (2, 5), (3, 1), (1, 4), (4, None)])
async def test_reduce_by_key(ctx: Context, parent: int, reducers: int | None) -> None:
    async with asyncio.timeout(WAIT):
        data = [(i % 7, i) for i in range(60)]
        ds = ctx.parallelize(data, parent).reduce_by_key(operator.add, reducers)
        expected_n = parent if reducers is None else reducers
        assert ds.num_partitions == expected_n
        parts = await ctx.run_job(ds)
        assert len(parts) == expected_n
        assert_hash_partitioned(parts)
        assert dict(flat(parts)) == reduce_ref(data, operator.add)
        assert len(flat(parts)) == len(reduce_ref(data, operator.add))  # one record per key


async def test_reduce_by_key_string_keys(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = words(200)
        counts = ctx.parallelize(data, 4).map(lambda w: (w, 1)).reduce_by_key(operator.add, 3)
        parts = await ctx.run_job(counts)
        assert_hash_partitioned(parts)
        assert dict(flat(parts)) == collections.Counter(data)
        # Tuple keys mixing strings and ints, non-commutative (but associative) merge.
        pairs = [((w, i % 2), w[:1]) for i, w in enumerate(data)]
        concat = ctx.parallelize(pairs, 4).reduce_by_key(operator.add, 2)
        got = dict(await concat.collect())
        assert got == reduce_ref(pairs, operator.add)


async def test_group_by_key(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [(w, i) for i, w in enumerate(words(50))] + [(None, -1), (None, -2)]
        ds = ctx.parallelize(data, 4).group_by_key(3)
        parts = await ctx.run_job(ds)
        assert len(parts) == 3
        assert_hash_partitioned(parts)
        got = {k: sorted(v) for k, v in flat(parts)}
        assert got == {k: sorted(v) for k, v in group_ref(data).items()}
        assert len(flat(parts)) == len(got)
        assert ctx.parallelize(data, 2).group_by_key().num_partitions == 2


async def test_partition_by_keeps_every_record(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [(i % 5, i) for i in range(40)] + [("k", "v")] * 3
        parts = await ctx.run_job(ctx.parallelize(data, 4).partition_by(3))
        assert len(parts) == 3
        assert_hash_partitioned(parts)
        assert sorted(flat(parts), key=repr) == sorted(data, key=repr)


async def test_join_inner_with_duplicate_keys(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        left = [("a", 1), ("a", 2), ("b", 3), ("c", 4), (1, "int"), ("a", 5)]
        right = [("a", "x"), ("a", "y"), ("c", "z"), ("d", "w"), (1, "one"), (1, "uno")]
        expected = sorted(
            ((k1, (v1, v2)) for k1, v1 in left for k2, v2 in right if k1 == k2), key=repr
        )
        for n in (None, 1, 4):
            joined = ctx.parallelize(left, 3).join(ctx.parallelize(right, 2), n)
            assert joined.num_partitions == (3 if n is None else n)
            parts = await ctx.run_job(joined)
            assert_hash_partitioned(parts)
            assert sorted(flat(parts), key=repr) == expected
        # No key in common: empty.
        disjoint = ctx.parallelize([(1, 1)], 1).join(ctx.parallelize([(2, 2)], 1))
        assert await disjoint.collect() == []


async def test_self_join(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [(i % 3, i) for i in range(9)]
        ds = ctx.parallelize(data, 3)
        expected = sorted((k, (a, b)) for k, a in data for k2, b in data if k == k2)
        assert sorted(await ds.join(ds, 2).collect()) == expected


# ------------------------------------------------------------------------ union and zip


async def test_union_of_narrow_datasets(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        a = ctx.parallelize(range(10), 3)
        b = ctx.parallelize(["x", "y"], 2).map(str.upper)
        c = ctx.parallelize([], 1)
        u = a.union(b, c)
        assert u.num_partitions == 6
        assert await ctx.run_job(u) == [*slices(range(10), 3), ["X"], ["Y"], []]
        # The same dataset twice, and a union of unions.
        twice = a.union(a).union(b)
        assert await twice.collect() == [*range(10), *range(10), "X", "Y"]


async def test_union_of_shuffled_datasets(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        left = [(i % 4, i) for i in range(30)]
        right = [(w, 1) for w in words(30)]
        a = ctx.parallelize(left, 3).reduce_by_key(operator.add, 2)
        b = ctx.parallelize(right, 4).reduce_by_key(operator.add, 3)
        u = a.union(b, ctx.parallelize([("narrow", 0)], 1))
        assert u.num_partitions == 6
        parts = await ctx.run_job(u)
        assert parts[:2] == await ctx.run_job(a)
        assert parts[2:5] == await ctx.run_job(b)
        assert parts[5] == [("narrow", 0)]
        assert dict(flat(parts[:2])) == reduce_ref(left, operator.add)
        assert dict(flat(parts[2:5])) == collections.Counter(w for w, _ in right)
        # A shuffle of the union.
        total = u.map(lambda kv: ("all", 1)).reduce_by_key(operator.add, 1)
        assert await total.collect() == [("all", len(flat(parts)))]


def _zip_state(shuffled: Iterator[Any], cached: Iterator[Any]) -> Iterator[Any]:
    return iter([(sorted(shuffled), list(cached))])


async def test_zip_partitions_of_shuffled_and_cached(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [(i % 6, i) for i in range(40)]
        shuffled = ctx.parallelize(data, 4).reduce_by_key(operator.add, 3)
        cached = ctx.parallelize(["p0", "p1", "p2"], 3).map(str.upper).cache()
        zipped = shuffled.zip_partitions(cached, _zip_state)
        assert zipped.num_partitions == 3
        reduced = reduce_ref(data, operator.add)
        expected = [
            [(sorted((k, v) for k, v in reduced.items() if partition_of(k, 3) == p), [f"P{p}"])]
            for p in range(3)
        ]
        # First run computes the cached side; the second reads it from the executors.
        assert await ctx.run_job(zipped) == expected
        assert await ctx.run_job(zipped) == expected
        again = shuffled.zip_partitions(cached, _zip_state)
        assert await ctx.run_job(again) == expected


async def test_zip_partitions_three_way_and_mismatch(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        a = ctx.parallelize(range(6), 2)
        b = ctx.parallelize("abcdef", 2)
        c = ctx.parallelize([10, 20], 2)
        z = a.zip_partitions(b, c, lambda x, y, z: [(list(x), "".join(y), list(z))])
        assert await ctx.run_job(z) == [
            [([0, 1, 2], "abc", [10])],
            [([3, 4, 5], "def", [20])],
        ]
        with pytest.raises(ValueError, match="partition"):
            a.zip_partitions(ctx.parallelize(range(6), 3), lambda x, y: x)


# ---------------------------------------------------------------------------------- cache

_CALLS: collections.Counter[str] = collections.Counter()
_CALLS_LOCK = threading.Lock()


def _counted(x: int) -> tuple[int, int]:
    """A map function that counts its calls; executors of ``local[N]`` share this module."""
    with _CALLS_LOCK:
        _CALLS["cached-map"] += 1
    return (x % 5, x)


def calls() -> int:
    with _CALLS_LOCK:
        return _CALLS["cached-map"]


async def test_cache_is_computed_once_and_reused(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        with _CALLS_LOCK:
            _CALLS.clear()
        data = list(range(50))
        cached = ctx.parallelize(data, 4).map(_counted).cache()
        assert cached.is_cached
        assert calls() == 0

        first = await ctx.run_job(cached.reduce_by_key(operator.add, 3))
        assert calls() == len(data)
        second = await ctx.run_job(cached.reduce_by_key(operator.add, 3))
        assert first == second
        assert dict(flat(second)) == reduce_ref([(x % 5, x) for x in data], operator.add)
        assert calls() == len(data), "the second job recomputed the cached dataset"

        # Other jobs over the cache, narrow and as one side of a join, still read it.
        assert await cached.count() == len(data)
        assert sorted(await cached.collect()) == sorted((x % 5, x) for x in data)
        side = ctx.parallelize([(k, k * 100) for k in range(5)], 2)
        joined = await cached.join(side, 3).collect()
        assert sorted(joined) == sorted((x % 5, (x, (x % 5) * 100)) for x in data)
        assert calls() == len(data)

        # A dataset derived from the cache is not itself cached.
        derived = cached.map_values(lambda v: v + 1)
        assert await derived.count() == len(data)
        assert calls() == len(data)


async def test_cache_within_one_group(ctx: Context) -> None:
    """Micro-batches of one group read the cached partitions an earlier one wrote."""
    async with asyncio.timeout(WAIT):
        with _CALLS_LOCK:
            _CALLS.clear()
        cached = ctx.parallelize(range(20), 4).map(_counted).cache()
        jobs = [
            cached.map_values(lambda v, i=i: v * i).reduce_by_key(operator.add, 2) for i in range(5)
        ]
        results = await ctx.run_jobs(jobs, group_size=5)
        assert calls() == 20
        base = reduce_ref([(x % 5, x) for x in range(20)], operator.add)
        for i, parts in enumerate(results):
            assert dict(flat(parts)) == {k: v * i for k, v in base.items()}


async def test_cached_partition_read_from_another_executor(ctx: Context, post_log: PostLog) -> None:
    """Zip two cached datasets that were computed on different executors: the task goes
    where the first one is and fetches the other's partition from its executor."""
    async with asyncio.timeout(WAIT):
        with _CALLS_LOCK:
            _CALLS.clear()
        first = ctx.parallelize(range(6), 3).map(_counted).cache()
        second = ctx.parallelize(range(6, 12), 3).map(_counted).cache()
        await first.count()  # result stage: partitions on the first three executors
        await second.partition_by(1).count()  # map stage: placed after the one reducer
        assert calls() == 12
        post_log.clear()
        zipped = first.zip_partitions(second, lambda a, b: [(list(a), list(b))])
        assert await ctx.run_job(zipped) == [
            [([(x % 5, x) for x in s], [(x % 5, x) for x in t])]
            for s, t in zip(slices(range(6), 3), slices(range(6, 12), 3), strict=True)
        ]
        assert calls() == 12, "cached partitions were recomputed"
        remote = [
            (p.peer, b)
            for p in post_log.of("LaunchGroup")
            for spec in p.message.tasks
            for b in spec.block_inputs
            if b.location != p.peer
        ]
        assert remote, "placement put no cached partition away from its reader"
        fetched = [k for p in post_log.of("FetchBlocks") for k in p.message.keys]
        assert sorted((k.id, k.index) for k in fetched if k.reduce == -1) == sorted(
            (b.dataset_id, b.partition) for _, b in remote
        )


# -------------------------------------------------------------------------------- actions


async def test_collect_count_reduce(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = list(range(1, 40))
        ds = ctx.parallelize(data, 6)
        assert await ds.collect() == data
        assert await ds.count() == len(data)
        assert await ds.reduce(operator.add) == sum(data)
        assert await ds.reduce(max) == max(data)
        # Partitions are reduced in order, records in order: a non-commutative fn.
        letters = ctx.parallelize(list("drizzle"), 10)  # some partitions empty
        assert await letters.reduce(operator.add) == "drizzle"
        assert await ctx.parallelize([7], 3).reduce(operator.mul) == 7


async def test_reduce_of_empty_dataset_raises(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        with pytest.raises(ValueError, match="empty"):
            await ctx.parallelize([], 3).reduce(operator.add)
        with pytest.raises(ValueError, match="empty"):
            await ctx.parallelize(range(10), 2).filter(lambda x: x > 100).reduce(operator.add)
        assert await ctx.parallelize([], 3).count() == 0
        assert await ctx.parallelize([], 3).collect() == []


async def test_run_job_with_function(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = list(range(17))
        ds = ctx.parallelize(data, 4)
        assert await ctx.run_job(ds, sum) == [sum(s) for s in slices(data, 4)]
        assert await ctx.run_job(ds, None) == slices(data, 4)
        assert await ctx.run_job(ds, lambda it: next(it, None)) == [s[0] for s in slices(data, 4)]
        # Per-dataset functions in run_jobs, results in order.
        results = await ctx.run_jobs([ds, ds.map(str)], [sum, "".join], group_size=2)
        assert results == [
            [sum(s) for s in slices(data, 4)],
            ["".join(map(str, s)) for s in slices(data, 4)],
        ]
        assert await ctx.run_jobs([]) == []


async def test_results_of_many_jobs_in_groups(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        src = ctx.parallelize(range(30), 3)
        jobs = [
            src.map(lambda x, i=i: (x % 3, x * i)).reduce_by_key(operator.add, 2) for i in range(9)
        ]
        for g in (1, 4, 9, 20):
            results = await ctx.run_jobs(jobs, group_size=g)
            assert len(results) == 9
            for i, parts in enumerate(results):
                assert dict(flat(parts)) == reduce_ref(
                    [(x % 3, x * i) for x in range(30)], operator.add
                )
        # Mixed shapes in one call: the group ends before a micro-batch of another shape.
        mixed = [jobs[0], src, jobs[1], src.map(str), jobs[2]]
        got = await ctx.run_jobs(mixed, group_size=5)
        assert got[1] == slices(range(30), 3)
        assert got[3] == [[str(x) for x in s] for s in slices(range(30), 3)]
        assert got[4] == await ctx.run_job(jobs[2])


# --------------------------------------------------------------------------- key hashing


HASHED_KEYS = ["'apple'", "('k', 1, 'ü')", "b'raw'", "12345", "-7", "2.5", "True", "(1, (2, 'x'))"]


def hashes_in_fresh_process(exprs: list[str], seed: str) -> list[str]:
    """``portable_hash`` of each expression, computed by a new Python process."""
    code = (
        "from drizzle.partitioning import portable_hash\n"
        f"for key in [{', '.join(exprs)}]:\n"
        "    print(portable_hash(key))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": seed},
    )
    return out.stdout.split()


def test_portable_hash_is_the_same_in_every_process() -> None:
    """Executors of local-cluster and tcp masters are separate processes: keys must agree
    there on their reducer, whatever each process's hash seed."""
    runs = [hashes_in_fresh_process(HASHED_KEYS, seed) for seed in ("1", "2", "3")]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == len(HASHED_KEYS)


def test_portable_hash_of_none_is_the_same_in_every_process() -> None:
    keys = ["None", "(None, 1)"]
    runs = [hashes_in_fresh_process(keys, seed) for seed in ("1", "1", "2")]
    assert runs[0] == runs[1] == runs[2]


# ------------------------------------------------------------- one parent, two shuffles


async def test_reduce_by_key_and_group_by_key_of_one_parent_in_one_job(ctx: Context) -> None:
    """Two different shuffles of the same parent dataset in one micro-batch: each keeps
    its own reducer count and map-side combiner (regression: the planner once shared one
    map stage per parent dataset)."""
    async with asyncio.timeout(WAIT):
        data = [(i % 2, i) for i in range(8)]
        parent = ctx.parallelize(data, 2)
        sums = parent.reduce_by_key(operator.add, 2)
        groups = parent.group_by_key(3).map_values(sorted)
        alone = sorted(await groups.collect())
        assert alone == sorted((k, sorted(v)) for k, v in group_ref(data).items())
        both = await sums.union(groups).collect()
        expected = list(reduce_ref(data, operator.add).items()) + alone
        assert sorted(both, key=repr) == sorted(expected, key=repr)
        # Same reducer count, another merge function.
        maxima = parent.reduce_by_key(max, 2)
        assert sorted(await sums.union(maxima).collect()) == sorted(
            [*reduce_ref(data, operator.add).items(), *reduce_ref(data, max).items()]
        )


async def test_join_of_two_shuffles_of_one_parent(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        data = [(i % 3, i) for i in range(12)]
        parent = ctx.parallelize(data, 3)
        sums = parent.reduce_by_key(operator.add)  # 3 partitions, combined map-side
        raw = parent.partition_by(3)  # 3 partitions, no combiner
        joined = sorted(await sums.join(raw).collect())
        reduced = reduce_ref(data, operator.add)
        assert joined == sorted((k, (reduced[k], v)) for k, v in data)


def test_helpers_agree() -> None:
    """The reference helpers themselves."""
    assert slices(range(5), 2) == [[0, 1], [2, 3, 4]]
    assert slices([], 2) == [[], []]
    assert reduce_ref([(1, 2), (1, 3)], operator.add) == {1: 5}
    assert group_ref([(1, 2), (1, 3)]) == {1: [2, 3]}
    assert list(itertools.chain(*slices(range(9), 4))) == list(range(9))
