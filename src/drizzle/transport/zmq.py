"""ZeroMQ transport: the backend for ``tcp://`` and ``ipc://`` addresses.

This is the only module of Drizzle that imports ``zmq``. Each transport owns one
``zmq.asyncio.Context``. Inbound, one ROUTER is bound at the transport's address and a
single long-lived reader decodes its frames into a bounded mailbox (``recv`` only reads
the mailbox, so it never cancels an in-flight zmq read); the reader drains the socket
without blocking from its FD callback, which saves pyzmq's per-frame future and a loop
iteration on the hot path. Outbound, one DEALER per peer is created on
first send, with ``routing_id`` set to this transport's own address: the receiving
ROUTER reports it as the sender. DEALERs use ``ZMQ_IMMEDIATE`` so nothing is queued for
a peer that is not connected, and a socket monitor tracks the ZMTP handshake: while a
peer is connected a send is one non-blocking ``zmq_send``; while it is not, the send
waits for the connection at most ``connect_timeout`` and then raises
``PeerUnreachable``. A full high-water mark on a connected peer is backpressure, not
unreachability, and waits. Frames are never trusted: those that fail to decode are
counted, logged (rate-limited) and dropped. There is no authentication, so binding a
non-loopback TCP address is refused unless ``TransportOptions.insecure`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from typing import cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from drizzle.errors import ClusterError, PeerUnreachable, ProtocolError, TransportClosed
from drizzle.transport.base import Transport, TransportOptions
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
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED


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


class _Peer:
    """The outbound connection to one peer."""

    __slots__ = (
        "address",
        "closed",
        "connected",
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


class ZmqTransport(Transport):
    """A node endpoint over ZeroMQ (``tcp://host:port`` or ``ipc://path``)."""

    def __init__(self, address: str, options: TransportOptions | None = None) -> None:
        self.address = address
        self.options = options or TransportOptions()
        self._ctx: zmq.asyncio.Context | None = None
        self._router: zmq.Socket[bytes] | None = None
        self._queue: asyncio.Queue[tuple[str, Envelope] | None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._peers: dict[str, _Peer] = {}
        self._closed = False
        self._rejected = 0
        self._last_warning = -_WARN_INTERVAL_S

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        if self._ctx is not None:
            raise RuntimeError(f"{self.address} is already started")
        host = _tcp_host(self.address)
        if host is not None and not _is_loopback(host) and not self.options.insecure:
            raise ClusterError(
                f"refusing to listen on non-loopback address {self.address}: the ZeroMQ "
                "transport has no authentication (CURVE is required for that and not yet "
                "supported); bind 127.0.0.1 or pass --insecure (TransportOptions.insecure) "
                "on a trusted network"
            )
        ctx = zmq.asyncio.Context()
        router: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.ROUTER)  # read synchronously
        try:
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            router.setsockopt(zmq.ROUTER_HANDOVER, 1)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.SNDHWM, _HWM)
            router.setsockopt(zmq.RCVHWM, _HWM)
            router.setsockopt(zmq.MAXMSGSIZE, self.options.max_frame)
            router.setsockopt(zmq.IPV6, int(_wants_ipv6(self.address)))
            router.bind(self.address)
            resolved = router.getsockopt(zmq.LAST_ENDPOINT)
            assert isinstance(resolved, bytes)
            if len(resolved) > _MAX_ROUTING_ID:
                raise ValueError(f"address {resolved!r} is longer than {_MAX_ROUTING_ID} bytes")
        except BaseException:
            router.close(linger=0)
            ctx.term()
            raise
        self.address = resolved.decode()
        self._ctx = ctx
        self._router = router
        self._queue = asyncio.Queue(self.options.mailbox_size)
        self._reader = asyncio.create_task(self._read(router), name=f"zmq-reader {self.address}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [p.watcher for p in self._peers.values() if p.watcher is not None]
        for peer in list(self._peers.values()):
            self._drop_peer(peer)
        if self._reader is not None:
            self._reader.cancel()  # losing an in-flight frame is fine: we are closing
            tasks.append(self._reader)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._router is not None:
            self._router.close(linger=0)
        if self._queue is not None:
            self._end_mailbox(self._queue)
        if self._ctx is not None:
            # Every socket is closed with a bounded linger, so term returns within it;
            # a thread keeps the loop responsive meanwhile.
            await asyncio.to_thread(self._ctx.term)

    @staticmethod
    def _end_mailbox(queue: asyncio.Queue[tuple[str, Envelope] | None]) -> None:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)

    # ------------------------------------------------------------------ inbound

    async def recv(self) -> tuple[str, Envelope]:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        if self._queue is None:
            raise RuntimeError(f"{self.address} is not started")
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # wake the next receiver too
            raise TransportClosed(f"{self.address} is closed")
        return item

    def rejected_frames(self) -> int:
        return self._rejected

    async def _read(self, router: zmq.Socket[bytes]) -> None:
        """The one reader of the ROUTER; it never awaits a zmq recv, so none is lost.

        While the mailbox has room, frames are read without blocking straight from the
        socket's (edge-triggered) FD callback: no pyzmq future and no task wake-up per
        frame. When the mailbox is full, the frame in hand is parked here and reading
        stops until ``put`` finds room (backpressure then reaches senders through the
        zmq high-water marks and TCP).
        """
        queue = self._queue
        assert queue is not None
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
                    self._end_mailbox(queue)
                    return
                item = self._parse(frames)
                if item is None:
                    continue
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:
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
                await queue.put(held.pop())  # the callback stays off meanwhile (FIFO)
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
                    raise PeerUnreachable(
                        f"no connection to {conn.address} within {self.options.connect_timeout:g} s"
                    )
            # With ZMQ_IMMEDIATE the send completes only once a connection has room.
            sent = asyncio.ensure_future(conn.sock.send(frame, copy=copy))
            try:
                if not sent.done():
                    await asyncio.wait((sent,), timeout=wait)
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
        sock.setsockopt(zmq.RCVHWM, _HWM)
        sock.setsockopt(zmq.RECONNECT_IVL, _RECONNECT_IVL_MS)
        sock.setsockopt(zmq.IPV6, int(_wants_ipv6(peer)))
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
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
                event = parse_monitor_message(await conn.monitor.recv_multipart())["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    conn.connected.set()
                elif event == zmq.EVENT_DISCONNECTED:
                    conn.connected.clear()

    def _drop_peer(self, conn: _Peer) -> None:
        conn.closed = True
        if self._peers.get(conn.address) is conn:
            del self._peers[conn.address]
        if conn.watcher is not None:
            conn.watcher.cancel()
        conn.monitor.close(linger=0)
        conn.sock.close(linger=_LINGER_MS)  # cancels sends waiting in pyzmq

    async def disconnect(self, peer: str) -> None:
        conn = self._peers.get(peer)
        if conn is None:
            return
        self._drop_peer(conn)
        if conn.watcher is not None:
            await asyncio.gather(conn.watcher, return_exceptions=True)
