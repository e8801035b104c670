"""Bad frames from an authenticated peer: at least 10,000 to every listening socket of
a running cluster, while a legitimate job runs; every one is counted, none is acted
on, and the job's results are right.

The cluster is a driver and two executors in this process, over CURVE-authenticated
zmq (so every node's counters can be read). A thread plays the hostile-but-keyed
peer: hypothesis generates batches of frames of every kind below, the thread sends
each frame to all three sockets, then waits until each node has counted exactly the
rejections the batch should cause (the property, per batch, so a failure shrinks to
a small batch):

* random bytes, truncated msgpack, multipart messages;
* envelopes with a malformed header, an unknown message type, or a field of the wrong
  type (the codec rejects them: ``Transport.rejected_frames``);
* frames over the size limit (within libzmq's slack: rejected and counted too);
* well-formed messages that must not be acted on: to an actor that does not exist, of
  a type the target actor does not handle, or claiming another sender (a
  ``MapOutputReady`` / ``BlockReady`` naming another executor, which the tracker
  refuses): ``Node.rejected_messages``.

Frames far over the limit are cut off by libzmq with their connection; that is checked
at the end on separate connections, after which the nodes still serve the job.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
import types
import typing
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from drizzle.actors.dag_scheduler import DagSchedulerActor
from drizzle.actors.driver import DriverActor
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.map_output_tracker import MapOutputTrackerActor
from drizzle.actors.node import Node
from drizzle.errors import ProtocolError
from drizzle.wire.codec import Envelope, decode, encode
from drizzle.wire.messages import BlockReady, MapOutputReady, MapOutputsReady
from drizzle.wire.schema import MESSAGE_TYPES, TYPE_IDS, to_wire

from .support import (
    WAIT,
    InProcessZmqCluster,
    cluster_client_keys,
    flatten,
    in_process_zmq_cluster,
    legit_batches,
    legit_expected,
)

pytestmark = pytest.mark.timeout(120)

MAX_FRAME = 128 * 1024
FRAMES_PER_SOCKET = 10_000
FUZZER = b"tcp://127.0.0.1:1"
ACTORS = {
    a.name: a
    for a in (
        DriverActor,
        DagSchedulerActor,
        MapOutputTrackerActor,
        GroupSchedulerActor,
        ExecutorActor,
    )
}

# ------------------------------------------------------------------ strategies
#
# Generating message dataclasses field by field is slow in hypothesis; valid messages
# come from a fixed pool of a few instances per type, built once from the type hints,
# and hypothesis chooses, cuts and mutates them.


def sample(tp: Any, variant: int) -> Any:
    """A value of type ``tp`` (as the schema sees it); ``variant`` varies it."""
    tp = getattr(tp, "__supertype__", tp)
    if tp is int:
        return (0, 1, 2**40)[variant % 3]
    if tp is float:
        return float(variant)
    if tp is bool:
        return bool(variant % 2)
    if tp is str:
        return ("", "x", "tcp://127.0.0.1:2")[variant % 3]
    if tp is bytes:
        return (b"", b"\x80\x04N.", b"z" * 100)[variant % 3]
    if tp is type(None):
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return sample(args[variant % len(args)], variant)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(sample(args[0], variant + k) for k in range(variant % 3))
        return tuple(sample(a, variant) for a in args)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        return tp(*(sample(hints[f.name], variant) for f in dataclasses.fields(tp)))
    raise TypeError(f"no sample for {tp!r}")


POOL = [
    sample(cls, variant)
    for cls in sorted(MESSAGE_TYPES.values(), key=TYPE_IDS.__getitem__)
    for variant in range(3)
]
UNHANDLED = [
    (name, message)
    for name, actor in sorted(ACTORS.items())
    for message in POOL
    if type(message) not in actor.handles
]
NOTICES = [m for m in POOL if isinstance(m, (MapOutputReady, MapOutputsReady, BlockReady))]
JUNK = [None, True, -1, 2**40, 1.5, "x", b"y", [], [1, "a"], [[None]], {"k": 1}]

messages = st.sampled_from(POOL)
actor_names = st.sampled_from(sorted(ACTORS))


def encodable(target: str, message: Any, sender: str = "fuzz") -> bytes:
    return encode(Envelope(target, sender, message))


@st.composite
def truncated(draw: st.DrawFn) -> bytes:
    whole = encodable(draw(actor_names), draw(messages))
    return whole[: draw(st.integers(0, len(whole) - 1))]


@st.composite
def wrong_field_type(draw: st.DrawFn) -> bytes:
    message = draw(messages)
    fields = to_wire(message)
    i = draw(st.integers(0, len(fields) - 1))
    j = draw(st.integers(0, len(JUNK) - 1))
    value = next(v for v in JUNK[j:] + JUNK[:j] if type(v) is not type(fields[i]))
    fields[i] = value
    # To an actor that does not exist: should a mutation still decode, it is refused
    # by the node instead of acted on.
    return msgpack.packb([TYPE_IDS[type(message)], "nobody", "fuzz", fields])


@st.composite
def bad_header(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(JUNK), max_size=6))
    return msgpack.packb(header)


@st.composite
def unknown_type(draw: st.DrawFn) -> bytes:
    type_id = draw(st.integers(-(2**63), 2**63 - 1).filter(lambda t: t not in MESSAGE_TYPES))
    return msgpack.packb([type_id, draw(actor_names), "fuzz", []])


@st.composite
def oversized(draw: st.DrawFn) -> bytes:
    return b"\x94" + b"\x00" * (MAX_FRAME + draw(st.integers(0, 32 * 1024)))


@st.composite
def unhandled(draw: st.DrawFn) -> bytes:
    """A valid message to a real actor that does not handle its type."""
    return encodable(*draw(st.sampled_from(UNHANDLED)))


@st.composite
def no_such_actor(draw: st.DrawFn) -> bytes:
    name = draw(st.text(max_size=12).filter(lambda t: t not in ACTORS))
    return encodable(name, draw(messages))


def claiming(other: str) -> st.SearchStrategy[bytes]:
    """Notices to the tracker naming an executor that is not the sender."""
    return st.sampled_from(NOTICES).map(
        lambda m: encodable("tracker", replace(m, executor_id=other))
    )


def frames(other_executor: str) -> st.SearchStrategy[bytes | list[bytes]]:
    return st.one_of(
        st.binary(max_size=200),
        truncated(),
        st.lists(st.binary(max_size=30), min_size=2, max_size=3),  # multipart
        wrong_field_type(),
        bad_header(),
        unknown_type(),
        oversized(),
        unhandled(),
        no_such_actor(),
        claiming(other_executor),
    )


def kind_of(item: bytes | list[bytes]) -> str:
    """Who must reject this frame: the transport (it does not decode) or the node."""
    if isinstance(item, list):
        return "transport"
    try:
        envelope = decode(item, MAX_FRAME)
    except ProtocolError:
        return "transport"
    actor = ACTORS.get(envelope.target)
    if actor is not None and type(envelope.message) in actor.handles:
        sender = getattr(envelope.message, "executor_id", None)
        if envelope.target != "tracker" or sender == FUZZER.decode():
            return "accepted"  # would be acted on: never sent (not a bad frame)
    return "node"


# ------------------------------------------------------------------ the hostile peer


class Fuzzer:
    """Runs in a thread with its own sockets; reads the nodes' counters (plain ints)."""

    def __init__(self, cluster: InProcessZmqCluster) -> None:
        self.nodes = cluster.nodes()
        self.keys = cluster_client_keys(cluster.keys)
        self.other_executor = cluster.executor_nodes[1].address
        self.sent = 0
        self.expected = [[n.transport.rejected_frames(), n.rejected_messages] for n in self.nodes]
        self.failure: BaseException | None = None

    def counts(self) -> list[list[int]]:
        return [[n.transport.rejected_frames(), n.rejected_messages] for n in self.nodes]

    def dealer(self, ctx: zmq.Context[zmq.Socket[bytes]], address: str, ident: bytes) -> Any:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.ROUTING_ID, ident)
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.keys.server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
        sock.connect(address)
        return sock

    def wait_counted(self) -> None:
        deadline = time.monotonic() + WAIT
        while self.counts() != self.expected:
            assert time.monotonic() < deadline, (self.counts(), self.expected)
            time.sleep(0.002)  # polling counters owned by the event loop's thread

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.failure = exc

    def _run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        socks = [self.dealer(ctx, n.address, FUZZER) for n in self.nodes]
        try:

            @settings(
                max_examples=40,
                deadline=None,
                database=None,
                phases=(Phase.generate, Phase.shrink),
                suppress_health_check=list(HealthCheck),
            )
            @given(st.lists(frames(self.other_executor), min_size=100, max_size=400))
            def batch(items: list[bytes | list[bytes]]) -> None:
                for item in items:
                    kind = kind_of(item)
                    if kind == "accepted":
                        continue
                    for sock, expected in zip(socks, self.expected, strict=True):
                        if isinstance(item, list):
                            sock.send_multipart(item)
                        else:
                            sock.send(item)
                        expected[0 if kind == "transport" else 1] += 1
                    self.sent += 1
                self.wait_counted()

            while self.sent < FRAMES_PER_SOCKET:
                batch()
            self._far_over_the_limit(ctx)
        finally:
            for sock in socks:
                sock.close()
            ctx.term()

    def _far_over_the_limit(self, ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
        """libzmq cuts such a frame off with its connection; nothing is counted."""
        for i, node in enumerate(self.nodes):
            sock = self.dealer(ctx, node.address, FUZZER + b"/big-%d" % i)
            monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            try:
                sock.send(b"\x94" + b"\x00" * (2 * MAX_FRAME))
                assert monitor.poll(WAIT * 1000), "the connection was not cut"
            finally:
                sock.disable_monitor()
                monitor.close(linger=0)
                sock.close(linger=0)
        assert self.counts() == self.expected


async def run_until(done: threading.Event, step: Callable[[], Any]) -> int:
    rounds = 0
    while rounds == 0 or not done.is_set():
        await step()
        rounds += 1
    return rounds


def log_lines(caplog: pytest.LogCaptureFixture, logger: str, text: str) -> int:
    return sum(1 for r in caplog.records if r.name == logger and text in r.getMessage())


async def test_malformed_frames_are_counted_while_a_job_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="drizzle")
    expected = legit_expected(4)
    async with in_process_zmq_cluster(2, max_frame=MAX_FRAME) as cluster:
        ctx = cluster.ctx

        async def legit_job() -> None:
            results = await asyncio.wait_for(
                ctx.run_jobs(legit_batches(ctx, 4), group_size=2), WAIT
            )
            assert flatten(results) == expected

        await legit_job()  # warm: no rejection comes from legitimate traffic
        nodes: list[Node] = cluster.nodes()
        assert all(n.rejected_messages == n.transport.rejected_frames() == 0 for n in nodes)

        fuzzer = Fuzzer(cluster)
        done = threading.Event()
        started = time.monotonic()

        def fuzz() -> None:
            try:
                fuzzer.run()
            finally:
                done.set()

        thread = threading.Thread(target=fuzz, name="fuzzer")
        thread.start()
        try:
            rounds = await run_until(done, legit_job)
        finally:
            await asyncio.to_thread(thread.join, WAIT)
        if fuzzer.failure is not None:
            raise fuzzer.failure
        elapsed = time.monotonic() - started

        assert fuzzer.sent >= FRAMES_PER_SOCKET
        assert rounds >= 1
        for node, (frames_rejected, messages_rejected) in zip(nodes, fuzzer.expected, strict=True):
            assert node.transport.rejected_frames() == frames_rejected
            assert node.rejected_messages == messages_rejected
            assert frames_rejected + messages_rejected == fuzzer.sent
            assert frames_rejected > 0
            assert messages_rejected > 0
        await legit_job()  # every node still serves

    # Each rejection is counted; logging is rate-limited (about one line per second
    # per node and kind).
    per_node = elapsed + 2
    dropped = log_lines(caplog, "drizzle.transport", "dropped an invalid frame")
    refused = log_lines(caplog, "drizzle.node", "rejected a message")
    assert 1 <= dropped <= 3 * per_node
    assert 1 <= refused <= 3 * per_node
