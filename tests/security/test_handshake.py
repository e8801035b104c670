"""Version handshake at registration: a mismatch is refused with a message naming
the versions, on the driver's side (log, ``RegistrationRefused``) and on the
executor's (``ExecutorActor.register`` raises it; the CLI prints it)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
from collections.abc import AsyncIterator

import cloudpickle
import pytest

from drizzle import Context, DrizzleError, __version__
from drizzle.actors import group_scheduler
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.node import Node
from drizzle.transport.base import TransportOptions
from drizzle.transport.security import SECRET_ENV, CurveKeys, keys_from_secret, new_secret
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.codec import Envelope
from drizzle.wire.messages import PROTOCOL_VERSION, RegisterExecutor, RegistrationRefused

from .support import WAIT

pytestmark = pytest.mark.cluster

PYTHON = sys.version.split()[0]


async def test_a_mismatched_registration_is_refused_naming_every_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="drizzle.group")
    async with asyncio.timeout(60), Context("local-cluster[1]") as ctx:
        keys = ctx.cluster.curve
        driver = ctx.cluster.driver_node
        assert keys is not None
        assert driver is not None
        client = ZmqTransport("tcp://127.0.0.1:0", TransportOptions(curve=keys))
        await client.start()
        try:
            register = RegisterExecutor(
                client.address, client.address, 1, PROTOCOL_VERSION + 1, "0.0.1", "2.7.18", "0.1"
            )
            await client.send(driver.address, Envelope("group", "executor", register))
            sender, reply = await asyncio.wait_for(client.recv(), WAIT)
        finally:
            await client.close()
        assert sender == driver.address
        assert isinstance(reply.message, RegistrationRefused)
        reason = reply.message.reason
        for expected in (
            f"protocol {PROTOCOL_VERSION + 1} (driver has {PROTOCOL_VERSION})",
            f"drizzle 0.0.1 (driver has {__version__})",
            f"python 2.7.18 (driver has {PYTHON})",
            f"cloudpickle 0.1 (driver has {cloudpickle.__version__})",
        ):
            assert expected in reason
        assert any(reason in r.getMessage() for r in caplog.records)  # driver side
        assert len(ctx.executors()) == 1  # the refused peer did not join


@pytest.fixture
async def mismatched_driver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Node, str]]:
    """A driver-side node whose group scheduler believes it runs another drizzle."""
    monkeypatch.setattr(group_scheduler, "__version__", "0.0.0+other")
    secret = new_secret()
    node = Node(ZmqTransport("tcp://127.0.0.1:0", TransportOptions(curve=keys_from_secret(secret))))
    node.add(GroupSchedulerActor(node))
    await node.start()
    try:
        yield node, secret
    finally:
        await node.close()


MISMATCH = f"version mismatch: drizzle {__version__} (driver has 0.0.0+other)"


async def test_executor_register_raises_the_mismatch(mismatched_driver: tuple[Node, str]) -> None:
    driver, secret = mismatched_driver
    keys: CurveKeys = keys_from_secret(secret)
    node = Node(ZmqTransport("tcp://127.0.0.1:0", TransportOptions(curve=keys)))
    actor = ExecutorActor(node, driver.address)
    node.add(actor)
    await node.start()
    try:
        with pytest.raises(DrizzleError, match=re.escape(MISMATCH)):
            await asyncio.wait_for(actor.register(), WAIT)
    finally:
        await node.close()


async def test_executor_process_prints_the_mismatch(mismatched_driver: tuple[Node, str]) -> None:
    driver, secret = mismatched_driver
    env = dict(os.environ, **{SECRET_ENV: secret})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "drizzle.node",
        "executor",
        "--driver",
        driver.address,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(WAIT):
        _, stderr = await proc.communicate()
    assert proc.returncode == 1
    assert MISMATCH in stderr.decode()
