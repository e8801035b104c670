"""The node CLI and local-cluster with keys: how a secured cluster is started, and
what a node without the right keys is told."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drizzle import Context
from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.node import Node
from drizzle.transport.base import TransportOptions
from drizzle.transport.security import SECRET_ENV, keys_from_secret, new_secret
from drizzle.transport.zmq import ZmqTransport

from .support import WAIT, flatten, free_port, legit_batches, legit_expected

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]


def executor_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env.update(extra)
    return env


def test_help_documents_the_security_options() -> None:
    executor = subprocess.run(
        [sys.executable, "-m", "drizzle.node", "executor", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    ).stdout
    for option in ("--secret-file", "--keys", "--key-name", "--insecure", "--max-frame"):
        assert option in executor
    assert SECRET_ENV in executor
    keygen = subprocess.run(
        [sys.executable, "-m", "drizzle.node", "keygen", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=WAIT,
    ).stdout
    for option in ("--secret", "--out", "--name"):
        assert option in keygen


def test_executor_refuses_to_listen_beyond_loopback_without_keys() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "drizzle.node",
            "executor",
            "--driver",
            "tcp://127.0.0.1:1",
            "--bind",
            "tcp://0.0.0.0:0",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env=executor_env(),
    )
    assert done.returncode == 2
    assert "refusing to listen on non-loopback address" in done.stderr
    for hint in (SECRET_ENV, "keygen", "--insecure"):
        assert hint in done.stderr


async def test_executor_with_the_wrong_secret_is_told_at_once() -> None:
    # A driver-side node holding one secret; an executor process holding another.
    keys = keys_from_secret(new_secret())
    node = Node(ZmqTransport("tcp://127.0.0.1:0", TransportOptions(curve=keys)))
    group = GroupSchedulerActor(node)
    node.add(group)
    await node.start()
    try:
        start = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "drizzle.node",
            "executor",
            "--driver",
            node.address,
            stderr=asyncio.subprocess.PIPE,
            env=executor_env(**{SECRET_ENV: new_secret()}),
        )
        async with asyncio.timeout(WAIT):
            _, stderr = await proc.communicate()
        assert proc.returncode == 1
        assert time.monotonic() - start < WAIT / 2  # not the 30 s registration deadline
        text = stderr.decode()
        assert "could not register with the driver" in text
        assert "handshake failed" in text
        assert "same cluster keys" in text
        assert not group.state.executors
    finally:
        await node.close()


async def test_multi_host_setup_on_loopback(tmp_path: Path) -> None:
    """The docs' recipe: keygen, then a driver and executors that all hold the keys
    (one with the shared secret file, one with a key directory)."""
    secret_file = tmp_path / "cluster.secret"
    keys_dir = tmp_path / "keys"
    for args in (("--secret", str(secret_file)), ("--out", str(keys_dir))):
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "drizzle.node", "keygen", *args],
            check=True,
            capture_output=True,
            timeout=WAIT,
        )
    secret = str(secret_file)
    await run_secured_cluster({"secret_file": secret}, ["--secret-file", secret])
    await run_secured_cluster({"keys": str(keys_dir)}, ["--keys", str(keys_dir)])


async def run_secured_cluster(ctx_keys: dict[str, str], executor_keys: list[str]) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    procs: list[asyncio.subprocess.Process] = []
    async with asyncio.timeout(60):
        ctx = Context(address, executors=2, **ctx_keys)  # type: ignore[arg-type]
        starting = asyncio.ensure_future(ctx.start())
        try:
            for _ in range(2):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "drizzle.node",
                        "executor",
                        "--driver",
                        address,
                        *executor_keys,
                        env=executor_env(),
                        cwd=ROOT,
                    )
                )
            await starting
            assert ctx.cluster.curve is not None
            results = await ctx.run_jobs(legit_batches(ctx, 3), group_size=3)
            assert flatten(results) == legit_expected(3)
        finally:
            if not starting.done():
                starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await ctx.close()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def read_proc(pid: int, what: str) -> bytes:
    return Path(f"/proc/{pid}/{what}").read_bytes()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
async def test_local_cluster_keys_itself_without_secrets_on_the_command_line() -> None:
    before = os.environ.get(SECRET_ENV)
    async with asyncio.timeout(60):
        async with Context("local-cluster[2]") as ctx:
            curve = ctx.cluster.curve
            assert curve is not None  # authenticated and encrypted by default
            transport = ctx.cluster.driver_node.transport  # type: ignore[union-attr]
            assert transport.options.curve is curve  # type: ignore[attr-defined]
            for proc in ctx.cluster.processes:
                cmdline = read_proc(proc.pid, "cmdline")
                environ = read_proc(proc.pid, "environ")
                secret = next(
                    line.partition(b"=")[2]
                    for line in environ.split(b"\0")
                    if line.startswith(SECRET_ENV.encode() + b"=")
                )
                assert keys_from_secret(secret) == curve  # the keys came by environment
                assert secret not in cmdline
                assert curve.client_secret not in cmdline
            assert await ctx.parallelize(range(100), 4).count() == 100
        async with Context("local-cluster[1]") as other:
            assert other.cluster.curve is not None
            assert other.cluster.curve.server_public != curve.server_public  # fresh keys
    assert os.environ.get(SECRET_ENV) == before
