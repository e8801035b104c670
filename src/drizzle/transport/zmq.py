"""ZeroMQ transport: the backend for ``tcp://`` and ``ipc://`` addresses.

This module and ``transport/security.py`` are the only ones of Drizzle that import
``zmq``. Each transport owns one ``zmq.asyncio.Context``. Inbound, one ROUTER is bound
at the transport's address and a single long-lived reader decodes its frames into a
bounded mailbox (``recv`` only reads the mailbox, so it never cancels an in-flight zmq
read); the reader drains the socket without blocking from its FD callback, which saves
pyzmq's per-frame future and a loop iteration on the hot path. The mailbox keeps one
FIFO per sender and hands envelopes out round-robin across senders, and ``recv`` yields
to the event loop every few envelopes: a peer that floods a node delays the others by
a few envelopes, not by a full mailbox (libzmq already reads the ROUTER's connections
fair-queued). When the mailbox is full the reader stops reading, and backpressure
reaches senders through the zmq high-water marks and TCP. Outbound, one DEALER per
peer is created on first send, with ``routing_id`` set to this transport's own
address: the receiving ROUTER reports it as the sender. DEALERs use ``ZMQ_IMMEDIATE``
so nothing is queued for a peer that is not connected, and a socket monitor tracks the
ZMTP handshake: while a peer is connected a send is one non-blocking ``zmq_send``;
while it is not, the send waits for the connection at most ``connect_timeout`` and
then raises ``PeerUnreachable`` (at once if the peer refused the handshake, naming
why). A full high-water mark on a connected peer is backpressure, not unreachability,
and waits. Frames are never trusted: those that fail to decode or exceed ``max_frame``
are counted, logged (rate-limited) and dropped; a frame more than 64 KiB over the
limit makes libzmq drop it with its connection (``MAXMSGSIZE``) before it is buffered.

Security: with ``TransportOptions.curve`` every connection, both ways, is CURVE
(authenticated and encrypted). The ROUTER is a CURVE server with the cluster's server
key and a ZAP handler (``AsyncioAuthenticator``, one per context, started before the
bind) that admits only the client keys on the allow-list (Ironhouse); handshakes it
refuses are counted and logged. Without keys, binding a non-loopback TCP address is
refused unless ``TransportOptions.insecure`` is set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import logging
import os
import time
from typing import cast

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from drizzle.errors import ClusterError, PeerUnreachable, ProtocolError, TransportClosed
from drizzle.transport.base import Transport, TransportOptions
from drizzle.transport.security import SETUP_HINT, CurveKeys, require_curve
from drizzle.wire.codec import Envelope, decode, encode

logger = logging.getLogger("drizzle.transport")

_LINGER_MS = 100
"""Time a closing socket may spend flushing queued frames (bounds ``close``)."""
_HWM = 10_000
"""Frames queued per connection each way before senders wait (the mailbox is the main
buffer; this only bounds what zmq holds in its pipes)."""
_RECONNECT_IVL_MS = 100
"""Fixed reconnect interval (no back-off) so a restarted peer is found within the
connect deadline."""
_COPY_THRESHOLD = 64 * 1024
"""Frames at least this large are sent zero-copy."""
_DRAIN_BATCH = 256
"""Frames read per FD callback before yielding to the event loop."""
_RECHECK_S = 0.05
"""How often a send blocked on backpressure re-checks that its peer is still connected."""
_WARN_INTERVAL_S = 1.0
_MAX_ROUTING_ID = 255
_CURVE_OVERHEAD = 33
"""Bytes CURVE adds to a message on the wire (MESSAGE command name, nonce, MAC, flags):
libzmq applies ``MAXMSGSIZE`` to the encrypted message."""
_OVERSIZE_SLACK = 64 * 1024
"""The codec enforces ``max_frame`` exactly and counts what it rejects; libzmq's
``MAXMSGSIZE``, this much higher, cuts off (with its connection) a frame too large to be
worth receiving whole."""
_DEALER_MAXMSGSIZE = 4096
"""Nothing is ever read from a DEALER: a peer that writes to one is cut off."""
_monitor_ids = itertools.count()
"""Numbers the inproc endpoints of socket monitors, which must be unique per context."""
_YIELD_EVERY = 64
"""``recv`` yields to the event loop after this many envelopes taken without waiting,
so that a mailbox kept full by a flood cannot monopolise the loop."""
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
_PROTOCOL_ERRORS: dict[int, str] = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: (
        "security mismatch: one side uses CURVE authentication and the other does not"
    ),
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: (
        "CURVE handshake failed: the two sides do not hold the same cluster keys"
    ),
}


def _handshake_failure(event: int, value: int, inbound: bool = False) -> tuple[str, bool]:
    """Why a handshake failed, from a monitor event, as seen by the connecting side (or
    by the listening side, ``inbound``); and whether retrying is pointless."""
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        if inbound:
            why = "the peer's CURVE key is not on this node's allow-list"
        else:
            why = "this node's CURVE key is not on the peer's allow-list"
        return f"authentication refused (ZAP status {value}): {why}", True
    if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        text = _PROTOCOL_ERRORS.get(value, f"ZMTP protocol error {value:#x}")
        return text, True
    reason = os.strerror(value) if value > 0 else "no detail"
    if inbound:
        return f"handshake failed ({reason})", False
    return (
        f"handshake failed ({reason}): the peer dropped the connection during the "
        "handshake, as it does when the two sides do not hold the same cluster keys",
        False,
    )


class _Mailbox:
    """Received envelopes not yet taken: one FIFO per sender, handed out round-robin
    across senders (per-sender order is kept), at most ``capacity`` in all."""

    __slots__ = (
        "_closed",
        "_getters",
        "_name",
        "_queues",
        "_ready",
        "_resume_at",
        "_room",
        "_streak",
        "capacity",
        "size",
    )

    def __init__(self, capacity: int, name: str) -> None:
        self.capacity = max(1, capacity)
        self.size = 0
        self._resume_at = self.capacity - max(1, self.capacity // 8)
        """A reader stopped by a full mailbox resumes at this size (hysteresis)."""
        self._name = name
        self._queues: dict[str, collections.deque[Envelope]] = {}
        """Non-empty queues only; a peer is here iff it is in ``_ready``."""
        self._ready: collections.deque[tuple[str, collections.deque[Envelope]]] = (
            collections.deque()
        )
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._room: asyncio.Future[None] | None = None
        self._streak = 0
        self._closed = False

    def put(self, peer: str, envelope: Envelope) -> bool:
        """Queue an envelope; False (and nothing queued) when full."""
        if self.size >= self.capacity:
            return False
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = collections.deque()
            self._ready.append((peer, queue))
        queue.append(envelope)
        self.size += 1
        self._wake_getter()
        return True

    def _wake_getter(self) -> None:
        getters = self._getters
        while getters:
            getter = getters.popleft()
            if not getter.done():
                getter.set_result(None)
                return

    def _take(self) -> tuple[str, Envelope] | None:
        if not self._ready:
            return None
        peer, queue = self._ready.popleft()
        envelope = queue.popleft()
        if queue:
            self._ready.append((peer, queue))
        else:
            del self._queues[peer]
        self.size -= 1
        room = self._room
        if room is not None and self.size <= self._resume_at and not room.done():
            room.set_result(None)
        return peer, envelope

    async def get(self) -> tuple[str, Envelope]:
        while True:
            if self._closed:
                raise TransportClosed(f"{self._name} is closed")
            if self._streak >= _YIELD_EVERY:
                self._streak = 0
                await asyncio.sleep(0)  # before taking: a cancellation here loses nothing
                continue
            item = self._take()
            if item is not None:
                self._streak += 1
                return item
            self._streak = 0
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except asyncio.CancelledError:
                if getter.done() and not getter.cancelled() and self._ready:
                    self._wake_getter()  # pass on a wake-up this getter will not use
                raise

    async def wait_room(self) -> None:
        """Return once the mailbox has drained to its resume level."""
        while self.size > self._resume_at and not self._closed:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None

    def close(self) -> None:
        self._closed = True
        self._queues.clear()
        self._ready.clear()
        self.size = 0
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(None)
        if self._room is not None and not self._room.done():
            self._room.set_result(None)


def _tcp_host(address: str) -> str | None:
    """The host part of a ``tcp://host:port`` address, or None for other schemes."""
    if not address.startswith("tcp://"):
        return None
    host, _, _ = address[len("tcp://") :].rpartition(":")
    return host


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _wants_ipv6(address: str) -> bool:
    host = _tcp_host(address)
    return host is not None and ":" in host


class _AllowList:
    """ZAP credentials provider: admits exactly the client keys of the allow-list."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.allowed


class _Peer:
    """The outbound connection to one peer."""

    __slots__ = (
        "address",
        "closed",
        "connected",
        "failed",
        "last_error",
        "lock",
        "monitor",
        "raw",
        "sock",
        "waiting",
        "watcher",
    )

    def __init__(self, address: str, sock: zmq.asyncio.Socket, monitor: zmq.asyncio.Socket) -> None:
        self.address = address
        self.sock = sock
        self.raw: zmq.Socket[bytes] = zmq.Socket.shadow(sock.underlying)
        """Synchronous view of ``sock`` for the non-blocking fast path."""
        self.monitor = monitor
        self.connected = asyncio.Event()
        self.lock = asyncio.Lock()
        self.waiting = 0
        """Sends on the slow path; while any, new sends queue behind them (FIFO)."""
        self.closed = False
        self.watcher: asyncio.Task[None] | None = None
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        """Set to the reason when the peer refused the handshake for good."""
        self.last_error = ""
        """The last handshake failure seen, for the connect-timeout message."""


class ZmqTransport(Transport):
    """A node endpoint over ZeroMQ (``tcp://host:port`` or ``ipc://path``)."""

    def __init__(self, address: str, options: TransportOptions | None = None) -> None:
        self.address = address
        self.options = options or TransportOptions()
        self._ctx: zmq.asyncio.Context | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._mailbox: _Mailbox | None = None
        self._reader: asyncio.Task[None] | None = None
        self._auth: AsyncioAuthenticator | None = None
        self._router_monitor: zmq.asyncio.Socket | None = None
        self._router_watcher: asyncio.Task[None] | None = None
        self._peers: dict[str, _Peer] = {}
        self._closed = False
        self._rejected = 0
        self._refused = 0
        self._last_warning = -_WARN_INTERVAL_S
        self._last_refusal_warning = -_WARN_INTERVAL_S

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        if self._ctx is not None:
            raise RuntimeError(f"{self.address} is already started")
        curve = self.options.curve
        host = _tcp_host(self.address)
        if curve is None and host is not None and not _is_loopback(host):
            if not self.options.insecure:
                raise ClusterError(
                    f"refusing to listen on non-loopback address {self.address} without "
                    "authentication: anyone who can reach it could run code on this "
                    f"cluster. To authenticate and encrypt it with CURVE, {SETUP_HINT}. "
                    "Or, on a trusted network only, pass --insecure "
                    "(Context(insecure=True))"
                )
            logger.warning(
                "%s: listening without authentication (--insecure): anyone who can reach "
                "this address can run code on the cluster",
                self.address,
            )
        if curve is not None:
            require_curve()
        ctx = zmq.asyncio.Context()
        router: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.ROUTER)  # read synchronously
        try:
            if curve is not None:
                # The ZAP handler must be bound before the first connection arrives:
                # without one, libzmq lets any CURVE client in (encrypted, unauthorised).
                self._auth = AsyncioAuthenticator(ctx, log=logging.getLogger("drizzle.zap"))
                self._auth.start()
                self._auth.configure_curve_callback("*", _AllowList(curve.allowed))
                router.setsockopt(zmq.CURVE_SERVER, 1)
                router.setsockopt(zmq.CURVE_SECRETKEY, curve.server_secret)
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.SNDHWM, _HWM)
            router.setsockopt(zmq.RCVHWM, _HWM)
            overhead = _OVERSIZE_SLACK + (_CURVE_OVERHEAD if curve is not None else 0)
            router.setsockopt(zmq.MAXMSGSIZE, self.options.max_frame + overhead)
            router.setsockopt(zmq.IPV6, int(_wants_ipv6(self.address)))
            router.bind(self.address)
            resolved = router.getsockopt(zmq.LAST_ENDPOINT)
            assert isinstance(resolved, bytes)
            if len(resolved) > _MAX_ROUTING_ID:
                raise ValueError(f"address {resolved!r} is longer than {_MAX_ROUTING_ID} bytes")
            monitor = router.get_monitor_socket(
                _HANDSHAKE_FAILED, addr=f"inproc://drizzle-monitor-{next(_monitor_ids)}"
            )
        except BaseException:
            router.close(linger=0)
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            ctx.term()
            raise
        self.address = resolved.decode()
        self._ctx = ctx
        self._router = router
        self._router_monitor = cast(zmq.asyncio.Socket, monitor)  # made by the asyncio context
        self._mailbox = _Mailbox(self.options.mailbox_size, self.address)
        self._reader = asyncio.create_task(self._read(router), name=f"zmq-reader {self.address}")
        self._router_watcher = asyncio.create_task(
            self._watch_router(self._router_monitor), name=f"zmq-router-monitor {self.address}"
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [p.watcher for p in self._peers.values() if p.watcher is not None]
        for peer in list(self._peers.values()):
            self._drop_peer(peer)
        for task in (self._reader, self._router_watcher):
            if task is not None:
                task.cancel()  # losing an in-flight frame is fine: we are closing
                tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._router_monitor is not None:
            assert self._router is not None
            with contextlib.suppress(zmq.ZMQError):
                self._router.disable_monitor()
            self._router_monitor.close(linger=0)
        if self._router is not None:
            self._router.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._mailbox is not None:
            self._mailbox.close()
        if self._ctx is not None:
            # Every socket is closed with a bounded linger, so term returns within it;
            # a thread keeps the loop responsive meanwhile.
            await asyncio.to_thread(self._ctx.term)

    # ------------------------------------------------------------------ inbound

    async def recv(self) -> tuple[str, Envelope]:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        if self._mailbox is None:
            raise RuntimeError(f"{self.address} is not started")
        return await self._mailbox.get()

    def rejected_frames(self) -> int:
        return self._rejected

    def refused_connections(self) -> int:
        return self._refused

    async def _watch_router(self, monitor: zmq.asyncio.Socket) -> None:
        """Count and log (rate-limited) inbound handshakes that failed: a peer without
        the cluster's keys, or not speaking CURVE, or not speaking ZMTP at all."""
        with contextlib.suppress(zmq.ZMQError, RuntimeError):
            while True:
                event = parse_monitor_message(await monitor.recv_multipart())
                self._refused += 1
                now = time.monotonic()
                if now - self._last_refusal_warning >= _WARN_INTERVAL_S:
                    self._last_refusal_warning = now
                    why, _ = _handshake_failure(event["event"], event["value"], inbound=True)
                    logger.warning(
                        "%s: refused an inbound connection: %s; %d refused so far",
                        self.address,
                        why,
                        self._refused,
                    )

    async def _read(self, router: zmq.Socket[bytes]) -> None:
        """The one reader of the ROUTER; it never awaits a zmq recv, so none is lost.

        While the mailbox has room, frames are read without blocking straight from the
        socket's (edge-triggered) FD callback: no pyzmq future and no task wake-up per
        frame. When the mailbox is full, the frame in hand is parked here and reading
        stops until the mailbox has drained to its resume level (backpressure then
        reaches senders through the zmq high-water marks and TCP).
        """
        mailbox = self._mailbox
        assert mailbox is not None
        loop = asyncio.get_running_loop()
        fd = router.fileno()
        blocked = asyncio.Event()
        held: list[tuple[str, Envelope]] = []

        def drain() -> None:
            for _ in range(_DRAIN_BATCH):
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    if cast(int, router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
                        continue
                    return  # drained: the FD fires again on the next arrival
                except zmq.ZMQError as exc:
                    loop.remove_reader(fd)
                    logger.error("%s: inbound socket failed, closing it: %s", self.address, exc)
                    mailbox.close()
                    return
                item = self._parse(frames)
                if item is None:
                    continue
                if not mailbox.put(*item):
                    held.append(item)
                    blocked.set()
                    return
            loop.call_soon(on_readable)  # more pending: yield to the loop, then go on

        def on_readable() -> None:
            if self._closed:
                return
            if blocked.is_set():
                router.getsockopt(zmq.EVENTS)  # reset the FD's signal, or the loop spins
            else:
                drain()

        loop.add_reader(fd, on_readable)
        try:
            drain()
            while True:
                await blocked.wait()
                await mailbox.wait_room()  # the callback stays off meanwhile (FIFO)
                mailbox.put(*held.pop())
                blocked.clear()
                drain()
        finally:
            loop.remove_reader(fd)

    def _parse(self, frames: list[bytes]) -> tuple[str, Envelope] | None:
        if len(frames) != 2:
            return self._reject(f"multipart message of {len(frames)} frames")
        ident, frame = frames
        if not ident or ident[0] == 0:
            return self._reject("sender did not announce its address")
        try:
            return ident.decode(), decode(frame, self.options.max_frame)
        except ProtocolError as exc:
            return self._reject(str(exc))
        except Exception as exc:  # never let a bad frame kill the reader
            return self._reject(f"{type(exc).__name__}: {exc}")

    def _reject(self, reason: str) -> tuple[str, Envelope] | None:
        """Count, log (at most once a second) and drop a frame; returns None."""
        self._rejected += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_INTERVAL_S:
            self._last_warning = now
            logger.warning(
                "%s: dropped an invalid frame (%s); %d rejected so far",
                self.address,
                reason,
                self._rejected,
            )
        return None

    # ------------------------------------------------------------------ outbound

    async def send(self, peer: str, envelope: Envelope) -> None:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        frame = encode(envelope)
        if len(frame) > self.options.max_frame:
            raise ProtocolError(
                f"frame of {len(frame)} bytes exceeds the limit of {self.options.max_frame}"
            )
        conn = self._peers.get(peer)
        if conn is not None and not conn.waiting:
            try:  # hot path: peer connected and its pipe has room
                conn.raw.send(frame, zmq.NOBLOCK, copy=len(frame) < _COPY_THRESHOLD)
                return
            except zmq.Again:
                pass
        await self._send_slow(peer, frame)

    async def _send_slow(self, peer: str, frame: bytes) -> None:
        conn = self._peers.get(peer) or self._open_peer(peer)
        conn.waiting += 1
        try:
            async with conn.lock:
                await self._deliver(conn, frame)
        finally:
            conn.waiting -= 1

    async def _deliver(self, conn: _Peer, frame: bytes) -> None:
        """Send once there is a connection with room; give up after the connect deadline
        spent without a connection (a full pipe on a live connection just waits)."""
        loop = asyncio.get_running_loop()
        copy = len(frame) < _COPY_THRESHOLD
        deadline: float | None = None
        while True:
            if self._closed:
                raise TransportClosed(f"{self.address} is closed")
            if conn.closed:
                raise PeerUnreachable(f"connection to {conn.address} was closed")
            if conn.failed.done():
                self._drop_peer(conn)
                raise PeerUnreachable(
                    f"{conn.address} refused the connection: {conn.failed.result()}. "
                    f"Every node needs the same keys: {SETUP_HINT}"
                )
            now = loop.time()
            if conn.connected.is_set():
                deadline = None
                wait = _RECHECK_S
            else:
                if deadline is None:
                    deadline = now + self.options.connect_timeout
                wait = deadline - now
                if wait <= 0:
                    self._drop_peer(conn)
                    last = f" (last error: {conn.last_error})" if conn.last_error else ""
                    raise PeerUnreachable(
                        f"no connection to {conn.address} within "
                        f"{self.options.connect_timeout:g} s{last}"
                    )
            # With ZMQ_IMMEDIATE the send completes only once a connection has room.
            sent = asyncio.ensure_future(conn.sock.send(frame, copy=copy))
            try:
                if not sent.done():
                    await asyncio.wait(
                        (sent, conn.failed), timeout=wait, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                if not sent.done():
                    sent.cancel()  # still queued in pyzmq, hence not sent: retry or give up
            if not sent.cancelled():  # cancelled: socket closed under us; the loop decides
                sent.result()
                return

    def _open_peer(self, peer: str) -> _Peer:
        if self._ctx is None:
            raise RuntimeError(f"{self.address} is not started")
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.address.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.LINGER, _LINGER_MS)
        sock.setsockopt(zmq.SNDHWM, _HWM)
        sock.setsockopt(zmq.RCVHWM, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, _DEALER_MAXMSGSIZE)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.IPV6, int(_wants_ipv6(peer)))
        curve: CurveKeys | None = self.options.curve
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.client_public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.client_secret)
        # A unique endpoint: pyzmq's default is named after the socket's FD, which a
        # reconnect to the same peer reuses while the old monitor may still be bound.
        monitor = sock.get_monitor_socket(
            _MONITOR_EVENTS, addr=f"inproc://drizzle-monitor-{next(_monitor_ids)}"
        )
        try:
            sock.connect(peer)
        except zmq.ZMQError as exc:
            monitor.close(linger=0)
            sock.close(linger=0)
            raise PeerUnreachable(f"cannot connect to {peer}: {exc}") from exc
        conn = _Peer(peer, sock, monitor)
        conn.watcher = asyncio.create_task(self._watch(conn), name=f"zmq-monitor {peer}")
        self._peers[peer] = conn
        return conn

    @staticmethod
    async def _watch(conn: _Peer) -> None:
        """Follow the connection state of one DEALER from its monitor events."""
        with contextlib.suppress(zmq.ZMQError, RuntimeError):
            while True:
                message = parse_monitor_message(await conn.monitor.recv_multipart())
                event = message["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    conn.last_error = ""
                    conn.connected.set()
                elif event == zmq.EVENT_DISCONNECTED:
                    conn.connected.clear()
                elif event & _HANDSHAKE_FAILED:
                    why, final = _handshake_failure(event, message["value"])
                    conn.last_error = why
                    if final and not conn.failed.done():
                        conn.failed.set_result(why)

    def _drop_peer(self, conn: _Peer) -> None:
        conn.closed = True
        if self._peers.get(conn.address) is conn:
            del self._peers[conn.address]
        if conn.watcher is not None:
            conn.watcher.cancel()
        # Stop the monitor before closing its socket: closing only the receiving end
        # could leave a later connection to the same peer without events (and stuck).
        with contextlib.suppress(zmq.ZMQError):
            conn.sock.disable_monitor()
        conn.monitor.close(linger=0)
        conn.sock.close(linger=_LINGER_MS)  # cancels sends waiting in pyzmq

    async def disconnect(self, peer: str) -> None:
        conn = self._peers.get(peer)
        if conn is None:
            return
        self._drop_peer(conn)
        if conn.watcher is not None:
            await asyncio.gather(conn.watcher, return_exceptions=True)
