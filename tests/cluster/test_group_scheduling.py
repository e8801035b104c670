"""Group scheduling and pre-scheduling, observed through the messages actors post.

``post_log`` wraps ``Node.post``, through which every actor sends, and records
(node, peer node, target actor, message). Counting those messages shows the two
techniques of the Drizzle paper at work: one ``LaunchGroup`` per executor per group of
G micro-batches, and map tasks pushing ``MapOutputReady`` straight to the executors
of their reducers, which then fetch from the mappers without asking the driver.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import math
import operator
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from drizzle import Context
from drizzle.wire.messages import LaunchGroup, MapOutputReady, MapOutputsReady, TaskSpec
from drizzle.wire.repeat import all_tasks as expand

from .conftest import WAIT, MakeContext, PostLog

N = 20
"""Micro-batches per run."""
M = 4
"""Map partitions per micro-batch."""


def executor_ids(ctx: Context) -> list[str]:
    return [e.executor_id for e in ctx.cluster.executors]


def driver_address(ctx: Context) -> str:
    node = ctx.cluster.driver_node
    assert node is not None
    return node.address


def launched_tasks(post_log: PostLog) -> list[tuple[int, str, TaskSpec]]:
    """(group id, executor, task) of every task launched while the log was recording."""
    return [
        (p.message.group_id, p.peer, spec)
        for p in post_log.of("LaunchGroup")
        if isinstance(p.message, LaunchGroup)
        for spec in expand(p.message)
    ]


def two_stage_jobs(ctx: Context, reducers: int) -> list[Any]:
    src = ctx.parallelize(range(400), M)
    return [
        src.map(lambda x, i=i: (x % 8, x + i)).reduce_by_key(operator.add, reducers)
        for i in range(N)
    ]


def expected_sums(i: int) -> list[tuple[int, int]]:
    sums: dict[int, int] = collections.defaultdict(int)
    for x in range(400):
        sums[x % 8] += x + i
    return sorted(sums.items())


TRANSFERS = {"pull": 0, "inline": 64 * 1024}
"""``inline_block_limit`` per mode: reducers pull every block from the mappers, or small
blocks ride inside the notices (every block of these tests is small)."""


@pytest.mark.parametrize("transfer", sorted(TRANSFERS))
async def test_an_executor_sends_its_notices_of_a_shuffle_to_each_reader_in_one_message(
    make_context: MakeContext, post_log: PostLog, transfer: str
) -> None:
    """Eight map partitions on four executors: each executor's two map outputs of a
    shuffle reach every other executor holding a reducer in one message."""
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", inline_block_limit=TRANSFERS[transfer])
        driver = driver_address(ctx)
        src = ctx.parallelize(range(400), 2 * M)
        jobs = [
            src.map(lambda x, i=i: (x % 8, x + i)).reduce_by_key(operator.add, 4) for i in range(N)
        ]
        post_log.clear()
        results = await ctx.run_jobs(jobs, group_size=5)
        assert [sorted(r for part in parts for r in part) for parts in results] == [
            expected_sums(i) for i in range(N)
        ]
        maps_on: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
        for _, executor, spec in launched_tasks(post_log):
            if spec.shuffle_output is not None:
                maps_on[(executor, spec.shuffle_output.shuffle_id)].add(spec.partition)
        assert {len(m) for m in maps_on.values()} == {2}
        heard: dict[tuple[str, str, int], list[set[int]]] = collections.defaultdict(list)
        for p in post_log.remote():
            if p.peer == driver or p.kind not in ("MapOutputReady", "MapOutputsReady"):
                continue
            if isinstance(p.message, MapOutputsReady):
                outputs = {(o.shuffle_id, o.map_id) for o in p.message.outputs}
            else:
                assert isinstance(p.message, MapOutputReady)
                outputs = {(p.message.shuffle_id, p.message.map_id)}
            [shuffle_id] = {s for s, _ in outputs}
            heard[(p.node, p.peer, shuffle_id)].append({m for _, m in outputs})
        # One message per (mapper executor, reducer executor, shuffle), naming its maps.
        assert len(heard) == N * M * (M - 1)
        for (node, _, shuffle_id), messages in heard.items():
            assert messages == [maps_on[(node, shuffle_id)]]
        if TRANSFERS[transfer]:
            batched = [p.message for p in post_log.of("MapOutputsReady") if p.peer != driver]
            assert batched
            assert all(
                o.inline for m in batched if isinstance(m, MapOutputsReady) for o in m.outputs
            )


@pytest.mark.parametrize("transfer", sorted(TRANSFERS))
@pytest.mark.parametrize("reducers", [4, 2])
@pytest.mark.parametrize("group_size", [1, 5, 20])
async def test_one_launch_per_executor_per_group_and_pushed_notices(
    make_context: MakeContext, post_log: PostLog, group_size: int, reducers: int, transfer: str
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]", inline_block_limit=TRANSFERS[transfer])
        executors = executor_ids(ctx)
        driver = driver_address(ctx)
        jobs = two_stage_jobs(ctx, reducers)
        sent_before = sum(e.state.stats.notices_sent for e in ctx.cluster.executors)
        received_before = sum(e.state.stats.notices_received for e in ctx.cluster.executors)
        post_log.clear()

        results = await ctx.run_jobs(jobs, group_size=group_size)

        assert [sorted(r for part in parts for r in part) for parts in results] == [
            expected_sums(i) for i in range(N)
        ]
        groups = math.ceil(N / group_size)

        # --- group scheduling: one LaunchGroup per executor per group, nothing per task.
        launches = post_log.of("LaunchGroup")
        assert {(p.node, p.target) for p in launches} == {(driver, "executor")}
        per_executor = collections.Counter(p.peer for p in launches)
        assert set(per_executor) == set(executors)  # 4 map partitions use all 4 executors
        assert all(count <= groups for count in per_executor.values()), per_executor
        assert len(launches) == groups * len(executors)
        assert len({(p.peer, p.message.group_id) for p in launches}) == len(launches)
        tasks = launched_tasks(post_log)
        assert len(tasks) == N * (M + reducers)  # every task of every micro-batch, once
        to_executors = {p.kind for p in post_log.remote() if p.node == driver}
        assert to_executors <= {"LaunchGroup", "HeartbeatAck"}, to_executors

        # --- pre-scheduling: map tasks notify their reducers' executors directly.
        by_group: dict[int, list[tuple[str, TaskSpec]]] = collections.defaultdict(list)
        for group_id, executor, spec in tasks:
            by_group[group_id].append((executor, spec))
        assert len(by_group) == groups
        notices = [
            p
            for p in post_log.of("MapOutputReady")
            if p.peer != driver and isinstance(p.message, MapOutputReady)
        ]
        assert {(p.target, p.node in executors, p.peer in executors) for p in notices} <= {
            ("executor", True, True)
        }
        total_notified = 0
        for group_id, placed in by_group.items():
            batches = {spec.batch for _, spec in placed}
            maps = [(e, s) for e, s in placed if s.shuffle_output is not None]
            reduce_executors: dict[int, set[str]] = collections.defaultdict(set)
            for e, s in placed:
                for inp in s.shuffle_inputs:
                    reduce_executors[inp.shuffle_id].add(e)
            distinct_reducer_executors = min(reducers, len(executors))
            for _, s in maps:
                assert s.shuffle_output is not None
                assert set(s.shuffle_output.notify) == reduce_executors[s.shuffle_output.shuffle_id]
            # Every map task sends one notice to each distinct executor holding a reducer of
            # its shuffle; the one to its own executor (if it holds a reducer too) is applied
            # in place and never posted. Placement puts the reducers first, round-robin, so
            # with R reducers on 4 executors, map partition p shares an executor with a
            # reducer for exactly min(R, M) of the M map partitions. Hence, per group:
            #   posted = G * M * (distinct reducer executors) - G * (co-located map tasks)
            colocated = sum(
                1 for e, s in maps if s.shuffle_output is not None and e in s.shuffle_output.notify
            )
            assert colocated == len(batches) * min(reducers, M)
            posted = [p for p in notices if p.message.group_id == group_id]
            expected = len(batches) * M * distinct_reducer_executors - colocated
            assert len(posted) == expected
            assert expected == len(batches) * {4: 12, 2: 6}[reducers]
            assert all(p.node != p.peer for p in posted)
            total_notified += len(batches) * M * distinct_reducer_executors
            # ...and one notice per map task to the driver's tracker, which no one asks.
            tracked = [
                p
                for p in post_log.of("MapOutputReady")
                if p.peer == driver and p.message.group_id == group_id
            ]
            assert {p.target for p in tracked} == {"tracker"}
            assert len(tracked) == len(batches) * M
            assert not any(p.message.inline for p in tracked), "the tracker gets no data"
        sent = sum(e.state.stats.notices_sent for e in ctx.cluster.executors) - sent_before
        received = (
            sum(e.state.stats.notices_received for e in ctx.cluster.executors) - received_before
        )
        assert sent == received == total_notified == N * M * min(reducers, len(executors))

        # --- reducers get each remote map's blocks without asking the driver: pulled from
        # the mapper (one request per mapper executor per reduce task), or carried by the
        # notice, which then holds exactly the blocks of the reduce partitions the
        # receiving executor runs.
        fetches = post_log.of("FetchBlocks")
        assert all(p.node in executors and p.peer in executors for p in fetches)
        expected_fetches = 0
        for group_id, placed in by_group.items():
            map_executors: dict[tuple[int, int], set[str]] = collections.defaultdict(set)
            reduce_partitions: dict[tuple[int, str], set[int]] = collections.defaultdict(set)
            for e, s in placed:
                if s.shuffle_output is not None:
                    map_executors[(s.batch, s.shuffle_output.shuffle_id)].add(e)
                for inp in s.shuffle_inputs:
                    reduce_partitions[(inp.shuffle_id, e)].add(inp.partition)
            for e, s in placed:
                for inp in s.shuffle_inputs:
                    expected_fetches += len(map_executors[(s.batch, inp.shuffle_id)] - {e})
            for p in notices:
                if p.message.group_id == group_id:
                    carried = {b.reduce for b in p.message.inline}
                    wanted = reduce_partitions[(p.message.shuffle_id, p.peer)]
                    assert carried == (wanted if transfer == "inline" else set())
        if transfer == "pull":
            assert len(fetches) == expected_fetches > 0
        else:
            assert fetches == []
        assert len(post_log.of("BlocksFetched")) == len(fetches)

        # --- executors tell the driver only results, tracker notices and heartbeats.
        to_driver = [p for p in post_log.remote() if p.peer == driver]
        kinds = {(p.target, p.kind) for p in to_driver}
        assert kinds <= {
            ("driver", "TaskResult"),
            ("tracker", "MapOutputReady"),
            ("group", "Heartbeat"),
            ("group", "RegisterExecutor"),
        }, kinds
        results_sent = [p for p in to_driver if p.kind == "TaskResult"]
        assert len(results_sent) == N * reducers  # one per result partition, no more
        assert ctx.cluster.driver is not None
        assert not ctx.cluster.driver.groups


# ------------------------------------------------------------------------ running sum


def load_running_sum() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "examples" / "running_sum.py"
    spec = importlib.util.spec_from_file_location("drizzle_example_running_sum", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def running_sum_reference(n: int, reducers: int, iters: int) -> list[list[list[tuple[int, int]]]]:
    """Each iteration's state, computed on plain lists: partition k holds (k, sum)."""
    state = [0] * reducers
    out = []
    for i in range(iters):
        for x in range(1, n + 1):
            v = x + i * n
            state[v % reducers] += v
        out.append([[(k, state[k])] for k in range(reducers)])
    return out


def running_sum_closed_form(n: int, i: int) -> tuple[int, int]:
    """Even and odd running sums after iteration ``i`` (n even, two reducers)."""
    half = n // 2
    evens, odds = half * (half + 1), half * half  # sums of even / odd x in 1..n
    shift = n * half * i * (i + 1) // 2  # each iteration j adds j*n to the n/2 values
    return (i + 1) * evens + shift, (i + 1) * odds + shift


async def test_running_sum_identical_for_every_group_size(ctx: Context, post_log: PostLog) -> None:
    async with asyncio.timeout(WAIT):
        example = load_running_sum()
        iters = 30
        outputs = {}
        for group_size in (1, 7, 30):
            args = example.parse_args(["--iters", str(iters), "--group-size", str(group_size)])
            assert (args.elems, args.reducers, args.partitions) == (4000, 2, 4)
            post_log.clear()
            outputs[group_size] = await ctx.run_jobs(
                example.build_iterations(ctx, args), group_size=args.group_size
            )
            per_executor = collections.Counter(p.peer for p in post_log.of("LaunchGroup"))
            assert max(per_executor.values()) == math.ceil(iters / group_size)
        assert outputs[1] == outputs[7] == outputs[30]
        assert outputs[1] == running_sum_reference(4000, 2, iters)
        for i, parts in enumerate(outputs[1]):
            even, odd = running_sum_closed_form(4000, i)
            assert parts == [[(0, even)], [(1, odd)]]
        assert outputs[1][0] == [[(0, 4002000)], [(1, 4000000)]]  # as the example says
        assert outputs[1][9] == [[(0, 400020000)], [(1, 400000000)]]
        formatted = example.format_partition(outputs[30][29][0])
        assert formatted == f"(0,{running_sum_closed_form(4000, 29)[0]})"


# ---------------------------------------------------------------------- streaming results

_RELEASE = threading.Event()
NOT_RELEASED = "micro-batch 9 was not released: results did not stream"


def gated(it: Iterator[int]) -> Any:
    """Micro-batch 9's job function: waits until the caller has micro-batch 0's result."""
    if not _RELEASE.wait(timeout=WAIT / 2):
        return NOT_RELEASED
    return list(it)


async def test_iter_jobs_streams_results_within_a_group(ctx: Context, post_log: PostLog) -> None:
    """With one group of 10, micro-batch 0's result must reach the caller while micro-batch
    9 is still running: 9 waits for the caller to have 0 (bounded; if results only came at
    the end of the group, 9 would give up and return ``NOT_RELEASED``)."""
    _RELEASE.clear()
    try:
        async with asyncio.timeout(WAIT):
            src = ctx.parallelize(range(40), 4)
            jobs = [src.map(lambda x, i=i: x * i) for i in range(10)]
            funcs = [list] * 9 + [gated]
            got: list[list[Any]] = []
            async for parts in ctx.iter_jobs(jobs, funcs, group_size=10):
                if not got:
                    assert not _RELEASE.is_set()
                    _RELEASE.set()
                got.append(parts)
            per_executor = collections.Counter(p.peer for p in post_log.of("LaunchGroup"))
            assert set(per_executor.values()) == {1}, "all ten micro-batches in one group"
            assert len(got) == 10
            for i, parts in enumerate(got):
                assert parts != [NOT_RELEASED] * 4, NOT_RELEASED
                assert [x for part in parts for x in part] == [x * i for x in range(40)]
    finally:
        _RELEASE.set()  # never leave a worker thread waiting


# ------------------------------------------------------------ waiting reducers, barrier

_STARTS: list[tuple[int, str, int]] = []
_STARTS_LOCK = threading.Lock()


class Traced:
    """A partition function that records (worker thread, stage, micro-batch) when it runs.

    Each ``local[N]`` executor runs tasks on its own single worker thread, so the thread
    identifies the executor."""

    def __init__(self, stage: str, batch: int) -> None:
        self.stage = stage
        self.batch = batch

    def __call__(self, it: Iterator[Any]) -> Iterator[Any]:
        with _STARTS_LOCK:
            _STARTS.append((threading.get_ident(), self.stage, self.batch))
        return it


def traced_jobs(ctx: Context, n: int, maps: int, reducers: int) -> list[Any]:
    src = ctx.parallelize(range(60), maps)
    return [
        src.map_partitions(Traced("map", i))
        .map(lambda x, i=i: (x % 5, x * i))
        .reduce_by_key(operator.add, reducers)
        .map_partitions(Traced("reduce", i))
        for i in range(n)
    ]


def expected_scaled(i: int) -> list[tuple[int, int]]:
    return sorted({k: sum(x * i for x in range(60) if x % 5 == k) for k in range(5)}.items())


async def test_waiting_reducers_hold_no_slot(make_context: MakeContext) -> None:
    """One executor with one core: every reducer of the group is launched before its maps
    ran, and waits without its slot, so the maps can run and the group completes."""
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[1]")
        [executor] = ctx.cluster.executors
        started = executor.state.stats.tasks_started
        results = await ctx.run_jobs(traced_jobs(ctx, 6, 3, 2), group_size=6)
        assert [sorted(r for p in parts for r in p) for parts in results] == [
            expected_scaled(i) for i in range(6)
        ]
        assert executor.state.stats.tasks_started - started == 6 * (3 + 2)  # none restarted


async def test_barrier_runs_micro_batches_in_order_on_each_executor(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        with _STARTS_LOCK:
            _STARTS.clear()
        results = await ctx.run_jobs(traced_jobs(ctx, 8, 4, 4), group_size=8)
        assert [sorted(r for p in parts for r in p) for parts in results] == [
            expected_scaled(i) for i in range(8)
        ]
        with _STARTS_LOCK:
            starts = list(_STARTS)
        assert len(starts) == 8 * (4 + 4)
        per_thread: dict[int, list[tuple[int, str]]] = collections.defaultdict(list)
        for thread, stage, batch in starts:
            per_thread[thread].append((batch, stage))
        assert len(per_thread) == 4  # four executors, one worker thread each
        for order in per_thread.values():
            batches = [b for b, _ in order]
            assert batches == sorted(batches), order


async def test_large_blocks_are_pulled_and_small_ones_carried(
    make_context: MakeContext, post_log: PostLog
) -> None:
    """With the default inline limit, exactly the remote blocks above it are fetched."""
    async with asyncio.timeout(WAIT):
        limit = 64 * 1024
        ctx = await make_context("local[3]", inline_block_limit=limit)
        big = "x" * (2 * limit)
        data = [(k, big if k % 2 else "small") for k in range(12)]
        ds = ctx.parallelize(data, 3).partition_by(3).map_values(len)
        post_log.clear()
        got = sorted(await ds.collect())
        assert got == sorted((k, len(v)) for k, v in data)

        tasks = [(e, s) for _, e, s in launched_tasks(post_log)]
        map_at = {s.partition: e for e, s in tasks if s.shuffle_output is not None}
        sizes = {
            p.message.map_id: p.message.sizes
            for p in post_log.of("MapOutputReady")
            if p.target == "tracker"
        }
        big_remote = [
            (e, m, inp.partition)
            for e, s in tasks
            for inp in s.shuffle_inputs
            for m in range(inp.num_maps)
            if map_at[m] != e and sizes[m][inp.partition] > limit
        ]
        assert big_remote, "the data must put some large block on another executor"
        fetched = [key for p in post_log.of("FetchBlocks") for key in p.message.keys]
        assert sorted((k.index, k.reduce) for k in fetched) == sorted(
            (m, r) for _, m, r in big_remote
        )
        carried = [b for p in post_log.of("MapOutputReady") for b in p.message.inline]
        assert carried
        assert all(len(b.data) <= limit for b in carried)
