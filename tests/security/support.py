"""Helpers of the security tests: raw pyzmq peers, a payload that leaves a marker file
when unpickled, and a zmq cluster whose executors live in this process.

The raw peers are plain pyzmq DEALERs, not Drizzle transports: they hold exactly the
keys a test gives them (or none) and report what their handshake did through a socket
monitor, which is the positive evidence that a refused peer was refused (rather than
a test that merely saw nothing happen).
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from drizzle import Context
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.node import Node
from drizzle.transport.base import TransportOptions
from drizzle.transport.security import CurveKeys, keys_from_secret, new_secret
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.codec import Envelope, encode

WAIT = 30.0
"""Upper bound, in seconds, on any single wait of these tests."""


async def wait_until(predicate: Callable[[], bool], within: float = WAIT) -> None:
    """Wait for a condition no event announces (a counter, a file)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 (polling a condition, bounded)
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Marker:
    """Unpickling this creates the directory ``path``: evidence that bytes from the
    network were unpickled (a stand-in for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (self.path,))


def marker_payload(path: Path) -> bytes:
    return cloudpickle.dumps(Marker(path))


def frame(target: str, message: Any, sender: str = "executor") -> bytes:
    return encode(Envelope(target, sender, message))


@dataclass(frozen=True)
class RawKeys:
    """What a raw client presents: its keypair and the server key it expects."""

    public: bytes
    secret: bytes
    server: bytes


def cluster_client_keys(keys: CurveKeys) -> RawKeys:
    return RawKeys(keys.client_public, keys.client_secret, keys.server_public)


HANDSHAKE_EVENTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


async def raw_send(
    address: str,
    frames: list[bytes],
    *,
    keys: RawKeys | None,
    routing_id: bytes = b"tcp://127.0.0.1:1",
) -> str:
    """Connect a raw DEALER, queue ``frames`` and return how its handshake ended
    (``HANDSHAKE_SUCCEEDED`` or a ``HANDSHAKE_FAILED_*`` name). Frames queued before
    the handshake are sent only if it succeeds; then the socket lingers until they are
    flushed (in a thread: the event loop, which may host the cluster, never blocks)."""
    ctx = zmq.asyncio.Context()
    dealer = ctx.socket(zmq.DEALER)
    monitor = dealer.get_monitor_socket(HANDSHAKE_EVENTS)
    event = "none"
    try:
        dealer.setsockopt(zmq.ROUTING_ID, routing_id)
        if keys is not None:
            dealer.setsockopt(zmq.CURVE_SERVERKEY, keys.server)
            dealer.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
            dealer.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        dealer.connect(address)
        for f in frames:
            await dealer.send(f)
        async with asyncio.timeout(WAIT):
            event = zmq.Event(parse_monitor_message(await monitor.recv_multipart())["event"]).name
        return event
    finally:
        with contextlib.suppress(zmq.ZMQError):
            dealer.disable_monitor()
        monitor.close(linger=0)
        dealer.close(linger=5000 if event == "HANDSHAKE_SUCCEEDED" else 0)
        await asyncio.to_thread(ctx.term)


@dataclass
class InProcessZmqCluster:
    """A driver (``Context`` on ``tcp://``) and executors in this process, all over
    CURVE-authenticated zmq: every node's counters can be read directly."""

    ctx: Context
    keys: CurveKeys
    executor_nodes: list[Node]

    @property
    def driver_node(self) -> Node:
        node = self.ctx.cluster.driver_node
        assert node is not None
        return node

    def nodes(self) -> list[Node]:
        return [self.driver_node, *self.executor_nodes]


@contextlib.asynccontextmanager
async def in_process_zmq_cluster(
    executors: int = 2, **options: Any
) -> AsyncIterator[InProcessZmqCluster]:
    secret = new_secret()
    keys = keys_from_secret(secret)
    driver = f"tcp://127.0.0.1:{free_port()}"
    ctx = Context(driver, executors=executors, secret=secret, start_timeout=WAIT, **options)
    transport_options = TransportOptions(
        curve=keys, max_frame=ctx.options.max_frame, connect_timeout=WAIT
    )
    nodes: list[Node] = []
    starting = asyncio.ensure_future(ctx.start())
    try:
        async with asyncio.timeout(WAIT):
            for _ in range(executors):
                node = Node(ZmqTransport("tcp://127.0.0.1:0", transport_options))
                actor = ExecutorActor(node, driver, 1, max_task_attempts=1)
                node.add(actor)
                nodes.append(node)
                await node.start()
                await actor.register()
            await starting
        yield InProcessZmqCluster(ctx, keys, nodes)
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        async with asyncio.timeout(WAIT):
            await ctx.close()
            for node in nodes:
                await node.close()


# ------------------------------------------------------------------ a legitimate job


@dataclass(frozen=True)
class KeyBy:
    """``x -> ((x + offset) % keys, x + offset)``."""

    offset: int
    keys: int = 10

    def __call__(self, x: int) -> tuple[int, int]:
        return ((x + self.offset) % self.keys, x + self.offset)


def legit_batches(ctx: Context, iters: int, n: int = 2000) -> list[Any]:
    base = ctx.parallelize(range(n), 4)
    return [base.map(KeyBy(i)).reduce_by_key(operator.add, 2) for i in range(iters)]


def legit_expected(iters: int, n: int = 2000) -> list[list[tuple[int, int]]]:
    out = []
    for i in range(iters):
        sums: dict[int, int] = {}
        for x in range(n):
            key, value = KeyBy(i)(x)
            sums[key] = sums.get(key, 0) + value
        out.append(sorted(sums.items()))
    return out


def flatten(results: list[list[list[tuple[int, int]]]]) -> list[list[tuple[int, int]]]:
    return [sorted(pair for part in batch for pair in part) for batch in results]
