"""CURVE at the transport: who gets in, what a refused peer is told, the bind policy."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from drizzle.errors import ClusterError, PeerUnreachable
from drizzle.transport.base import TransportOptions
from drizzle.transport.security import keys_from_secret
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.codec import Envelope, encode
from drizzle.wire.messages import BlocksFetched, Heartbeat

from .support import WAIT, wait_until

KEYS = keys_from_secret("transport-auth-test-secret-1")
OTHER = keys_from_secret("transport-auth-test-secret-2")


def envelope(seq: int) -> Envelope:
    return Envelope("t", "s", Heartbeat("e", seq))


class Endpoints:
    def __init__(self) -> None:
        self.opened: list[ZmqTransport] = []

    async def open(self, address: str = "tcp://127.0.0.1:0", **options: object) -> ZmqTransport:
        transport = ZmqTransport(address, TransportOptions(**options))  # type: ignore[arg-type]
        self.opened.append(transport)
        await asyncio.wait_for(transport.start(), WAIT)
        return transport


@pytest.fixture
async def endpoints() -> AsyncIterator[Endpoints]:
    e = Endpoints()
    try:
        yield e
    finally:
        for t in e.opened:
            await asyncio.wait_for(t.close(), WAIT)


async def test_peers_with_the_same_keys_talk(endpoints: Endpoints) -> None:
    a = await endpoints.open(curve=KEYS)
    b = await endpoints.open(curve=KEYS)
    await asyncio.wait_for(a.send(b.address, envelope(1)), WAIT)
    assert await asyncio.wait_for(b.recv(), WAIT) == (a.address, envelope(1))
    assert b.refused_connections() == 0


async def test_a_key_not_on_the_allow_list_is_refused_at_once(
    endpoints: Endpoints, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="drizzle.transport")
    server = await endpoints.open(curve=KEYS)
    # Right server key, but a client key the server does not allow.
    intruder_keys = replace(
        KEYS, client_public=OTHER.client_public, client_secret=OTHER.client_secret
    )
    intruder = await endpoints.open(curve=intruder_keys, connect_timeout=WAIT)
    start = time.monotonic()
    with pytest.raises(PeerUnreachable, match=r"refused the connection: authentication refused"):
        await asyncio.wait_for(intruder.send(server.address, envelope(1)), WAIT)
    assert time.monotonic() - start < WAIT / 2  # told at once, not at the deadline
    await wait_until(lambda: server.refused_connections() >= 1)
    assert any("refused an inbound connection" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("client", "server"), [(None, KEYS), (KEYS, None)])
async def test_curve_and_plain_peers_do_not_mix(
    endpoints: Endpoints, client: object, server: object
) -> None:
    s = await endpoints.open(curve=server)
    c = await endpoints.open(curve=client, connect_timeout=WAIT)
    with pytest.raises(PeerUnreachable, match="security mismatch"):
        await asyncio.wait_for(c.send(s.address, envelope(1)), WAIT)


async def test_a_wrong_server_key_times_out_with_the_reason(endpoints: Endpoints) -> None:
    server = await endpoints.open(curve=KEYS)
    confused = await endpoints.open(
        curve=replace(KEYS, server_public=OTHER.server_public), connect_timeout=1.0
    )
    with pytest.raises(PeerUnreachable, match=r"within 1 s \(last error: handshake failed"):
        await asyncio.wait_for(confused.send(server.address, envelope(1)), WAIT)
    await wait_until(lambda: server.refused_connections() >= 1)


@pytest.mark.parametrize("address", ["tcp://0.0.0.0:0", "tcp://10.1.2.3:0"])
async def test_non_loopback_without_keys_is_refused_with_instructions(address: str) -> None:
    t = ZmqTransport(address, TransportOptions())
    try:
        with pytest.raises(ClusterError) as info:
            await asyncio.wait_for(t.start(), WAIT)
    finally:
        await t.close()
    text = str(info.value)
    for hint in ("DRIZZLE_SECRET", "--secret-file", "keygen", "docs/security.md", "--insecure"):
        assert hint in text


async def test_non_loopback_with_keys_is_allowed(endpoints: Endpoints) -> None:
    server = await endpoints.open("tcp://0.0.0.0:0", curve=KEYS)
    port = server.address.rpartition(":")[2]
    client = await endpoints.open(curve=KEYS)
    await asyncio.wait_for(client.send(f"tcp://127.0.0.1:{port}", envelope(5)), WAIT)
    assert (await asyncio.wait_for(server.recv(), WAIT))[1] == envelope(5)


async def test_frame_limit_is_exact_under_curve(endpoints: Endpoints) -> None:
    # CURVE adds bytes on the wire; a frame of exactly max_frame must still pass, and
    # one just over it is counted as rejected (not silently cut with its connection).
    limit = 128 * 1024
    server = await endpoints.open(curve=KEYS, max_frame=limit)
    client = await endpoints.open(curve=KEYS, max_frame=limit + 200 * 1024)

    def fitting(extra: int) -> Envelope:
        probe = Envelope("t", "s", BlocksFetched(0, (b"x" * limit,), ()))  # same header size
        size = limit - (len(encode(probe)) - limit) + extra
        return Envelope("t", "s", BlocksFetched(0, (b"x" * size,), ()))

    exact = fitting(0)
    assert len(encode(exact)) == limit
    await asyncio.wait_for(client.send(server.address, exact), WAIT)
    assert (await asyncio.wait_for(server.recv(), WAIT))[1] == exact
    await asyncio.wait_for(client.send(server.address, fitting(1)), WAIT)
    await asyncio.wait_for(client.send(server.address, envelope(9)), WAIT)
    assert (await asyncio.wait_for(server.recv(), WAIT))[1] == envelope(9)
    assert server.rejected_frames() == 1

    # Far over the limit: libzmq cuts the frame off with its connection; the client
    # reconnects by itself and the server goes on (frames sent meanwhile may be lost).
    await asyncio.wait_for(client.send(server.address, fitting(150 * 1024)), WAIT)
    async with asyncio.timeout(WAIT):
        seq = 100
        while True:
            await client.send(server.address, envelope(seq))
            try:
                _, got = await asyncio.wait_for(server.recv(), 0.2)
                break
            except TimeoutError:
                seq += 1
    assert got.message.seq >= 100
    assert server.rejected_frames() == 1
