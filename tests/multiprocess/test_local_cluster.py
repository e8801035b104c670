"""Real executor processes over ZeroMQ: local-cluster, tcp:// masters, process lifecycle."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import drizzle
from drizzle import Context, JobFailed

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def running_sum(ctx: Context, iters: int, n: int = 400, reducers: int = 2) -> list[drizzle.Dataset]:
    rdd = ctx.parallelize(range(1, n + 1), 4).cache()
    state = ctx.parallelize(range(reducers), reducers).map(lambda k: (k, 0)).cache()
    out = []
    for i in range(iters):
        data = rdd.map(lambda x, off=i * n: ((x + off) % reducers, x + off))
        state = data.group_by_key(reducers).zip_partitions(state, _add).cache()
        out.append(state)
    return out


def _add(groups: Iterator[tuple[int, list[int]]], state: Iterator[tuple[int, int]]):
    for (_, values), (key, previous) in zip(groups, state, strict=True):
        yield (key, previous + sum(values))


def expected_sums(iters: int, n: int = 400) -> list[list[list[tuple[int, int]]]]:
    out = []
    even = odd = 0
    for i in range(iters):
        values = range(i * n + 1, (i + 1) * n + 1)
        even += sum(v for v in values if v % 2 == 0)
        odd += sum(v for v in values if v % 2 == 1)
        out.append([[(0, even)], [(1, odd)]])
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of this process still answers kill(0); reap and look again.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        done = 0
    return done == 0 and Path(f"/proc/{pid}").exists()


async def wait_until(condition, within: float, what: str) -> None:
    async with asyncio.timeout(within):
        # Orphans are not our children: nothing to wait on but the process table.
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert condition(), what


async def test_running_sum_on_processes_for_several_group_sizes() -> None:
    async with asyncio.timeout(90):
        async with Context("local-cluster[2]") as ctx:
            assert len(ctx.cluster.processes) == 2
            for group_size in (1, 4, 12):
                results = await ctx.run_jobs(running_sum(ctx, 12), group_size=group_size)
                assert results == expected_sums(12)


def _noise(i: int) -> list[tuple[int, bytes]]:
    rng = random.Random(i)
    return [(k, rng.randbytes(1000)) for k in range(90)]


def _count(records: Iterator[object]) -> int:
    return sum(1 for _ in records)


async def test_notices_sent_together_stay_within_a_small_frame_limit() -> None:
    """Each map output here carries a 45 KB inline block to the other executor; two
    of them together would exceed the 80 KB frame limit, so they travel apart."""
    async with asyncio.timeout(60):
        async with Context(
            "local-cluster[2,1]", max_frame=80_000, inline_block_limit=64 * 1024, group_timeout=15.0
        ) as ctx:
            shuffled = ctx.parallelize(list(range(4)), 4).flat_map(_noise).partition_by(2)
            assert await ctx.run_job(shuffled, _count) == [180, 180]


async def test_user_error_carries_remote_traceback_across_processes() -> None:
    def explode(x: int) -> int:
        if x == 7:
            raise ZeroDivisionError("seven is forbidden")
        return x

    async with asyncio.timeout(60):
        async with Context("local-cluster[2]", max_task_attempts=2) as ctx:
            with pytest.raises(JobFailed) as info:
                await ctx.parallelize(range(20), 4).map(explode).collect()
    err = info.value
    assert err.partition == 1
    assert err.attempts == 2
    assert err.executor
    assert err.executor.startswith("tcp://127.0.0.1:")
    assert "seven is forbidden" in err.remote_traceback
    assert "ZeroDivisionError" in str(err)


async def test_executor_processes_exit_with_the_context() -> None:
    async with asyncio.timeout(60):
        async with Context("local-cluster[3]") as ctx:
            pids = [p.pid for p in ctx.cluster.processes]
            assert await ctx.parallelize(range(10), 3).count() == 10
        assert not any(alive(pid) for pid in pids)


DRIVER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from drizzle import Context

    async def main():
        async with Context("local-cluster[2]") as ctx:
            await ctx.parallelize(range(10), 2).count()
            print(" ".join(str(p.pid) for p in ctx.cluster.processes), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_executors_exit_when_the_driver_process_is_killed() -> None:
    async with asyncio.timeout(60):
        driver = subprocess.Popen(  # noqa: ASYNC220 (its pipe is read in a thread)
            [sys.executable, "-c", DRIVER_SCRIPT], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            assert driver.stdout is not None
            line = await asyncio.to_thread(driver.stdout.readline)
            pids = [int(p) for p in line.split()]
            assert len(pids) == 2
            assert all(alive(p) for p in pids)
            driver.send_signal(signal.SIGKILL)
            driver.wait()
            # Heartbeat timeout is 3 s; the parent watch notices sooner.
            await wait_until(lambda: not any(alive(p) for p in pids), 10, "orphan executors")
        finally:
            driver.kill()
            driver.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_tcp_master_with_executors_started_by_hand() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    procs: list[subprocess.Popen[bytes]] = []
    async with asyncio.timeout(60):
        ctx = Context(address, executors=2)
        starting = asyncio.ensure_future(ctx.start())
        # Executors must import the modules of the job's functions (this test module).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            for _ in range(2):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 (waited for in a thread)
                        [
                            sys.executable,
                            "-m",
                            "drizzle.node",
                            "executor",
                            "--driver",
                            address,
                            "--cores",
                            "2",
                        ],
                        cwd=ROOT,
                        env=env,
                    )
                )
            await starting
            results = await ctx.run_jobs(running_sum(ctx, 6), group_size=3)
            assert results == expected_sums(6)
        finally:
            await ctx.close()
            for p in procs:
                try:
                    await asyncio.wait_for(asyncio.to_thread(p.wait), 10)
                except TimeoutError:
                    p.kill()
                    pytest.fail("executor did not exit when the driver closed")


def test_node_help_documents_every_role_and_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "drizzle.node", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "executor" in out
    sub = subprocess.run(
        [sys.executable, "-m", "drizzle.node", "executor", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--driver",
        "--cores",
        "--bind",
        "--parent-pid",
        "--max-task-attempts",
        "--no-barrier",
        "--insecure",
    ):
        assert option in sub


def test_executor_refuses_a_non_loopback_driver_without_bind() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "drizzle.node", "executor", "--driver", "tcp://10.1.2.3:7077"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "--bind" in proc.stderr
