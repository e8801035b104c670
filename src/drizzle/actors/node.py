"""A node: one transport endpoint hosting one or more actors.

Actors have synchronous handlers (``receive``) that update their state machine and
``post`` messages; posting never blocks. Each peer gets an outbox drained by one sender
task, so per-peer FIFO order holds and a slow or dead peer delays only its own
messages; a failed delivery is reported to ``on_unreachable`` callbacks. Every task a
node starts is owned by the node and cancelled when it closes. Time is the event
loop's clock.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from drizzle.errors import DrizzleError, PeerUnreachable, TransportClosed
from drizzle.transport.base import Transport
from drizzle.wire.codec import Envelope

log = logging.getLogger("drizzle.node")


class Actor:
    """Base of every actor shell."""

    name: str = "actor"
    handles: tuple[type[Any], ...] = ()
    """Wire messages this actor accepts from peers (checked by the test suite)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def receive(self, peer: str, sender: str, message: Any) -> None:
        raise NotImplementedError

    def on_peer_unreachable(self, peer: str, error: Exception) -> None:
        """A message to ``peer`` could not be delivered."""

    async def aclose(self) -> None:
        """Release what the actor holds; the node closes the transport afterwards."""


class Node:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.actors: dict[str, Actor] = {}
        self._outboxes: dict[str, collections.deque[Envelope]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self.rejected_messages = 0
        self._last_reject_log = 0.0
        self.loop = asyncio.get_running_loop()
        self.clock: Callable[[], float] = time.perf_counter
        """What the actors' duration counters read: ``time.perf_counter`` (the loop's
        clock may tick in whole milliseconds), or the virtual clock under simulation."""

    @property
    def address(self) -> str:
        return self.transport.address

    def add(self, actor: Actor) -> None:
        if actor.name in self.actors:
            raise ValueError(f"actor {actor.name} already on this node")
        self.actors[actor.name] = actor

    async def start(self) -> None:
        await self.transport.start()
        self.spawn(self._receive_loop(), name=f"recv {self.address}")

    def now(self) -> float:
        return self.loop.time()

    # ------------------------------------------------------------------------ tasks

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Start a task owned by the node; its failure is logged, never lost."""
        if self._closed:
            coro.close()
            raise TransportClosed("node is closed")
        task = self.loop.create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------------ sending

    def post(self, peer: str, target: str, message: Any, sender: str) -> None:
        """Queue ``message`` for actor ``target`` on node ``peer``; never blocks."""
        if self._closed:
            return
        envelope = Envelope(target, sender, message)
        if peer == self.address:
            self.loop.call_soon(self._deliver, peer, envelope)
            return
        box = self._outboxes.get(peer)
        if box is None:
            box = self._outboxes[peer] = collections.deque()
        box.append(envelope)
        if peer not in self._senders:
            self._senders[peer] = self.spawn(self._drain(peer, box), name=f"send {peer}")

    async def _drain(self, peer: str, box: collections.deque[Envelope]) -> None:
        try:
            while box:
                envelope = box[0]
                try:
                    await self.transport.send(peer, envelope)
                except (PeerUnreachable, TransportClosed, DrizzleError) as exc:
                    lost = len(box)
                    box.clear()
                    if not self._closed:
                        log.warning("%d message(s) to %s undeliverable: %s", lost, peer, exc)
                        for actor in list(self.actors.values()):
                            actor.on_peer_unreachable(peer, exc)
                    return
                box.popleft()
        finally:
            self._senders.pop(peer, None)
            if box and not self._closed:  # posted while the last send failed
                self._senders[peer] = self.spawn(self._drain(peer, box), name=f"send {peer}")

    async def forget_peer(self, peer: str) -> None:
        self._outboxes.pop(peer, None)
        task = self._senders.pop(peer, None)
        if task is not None:
            task.cancel()
        await self.transport.disconnect(peer)

    # ------------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        while True:
            try:
                peer, envelope = await self.transport.recv()
            except TransportClosed:
                return
            self._deliver(peer, envelope)

    def _deliver(self, peer: str, envelope: Envelope) -> None:
        actor = self.actors.get(envelope.target)
        if actor is None:
            self._reject(peer, f"no actor {envelope.target!r}")
            return
        try:
            actor.receive(peer, envelope.sender, envelope.message)
        except UnexpectedMessage as exc:
            self._reject(peer, str(exc))
        except Exception:
            log.exception(
                "actor %s failed on %s from %s", actor.name, type(envelope.message).__name__, peer
            )

    def _reject(self, peer: str, reason: str) -> None:
        self.rejected_messages += 1
        now = time.monotonic()
        if now - self._last_reject_log >= 1.0:
            self._last_reject_log = now
            log.warning(
                "rejected a message from %s: %s (%d so far)", peer, reason, self.rejected_messages
            )

    # ------------------------------------------------------------------------ closing

    async def close(self) -> None:
        if self._closed:
            return
        for actor in list(self.actors.values()):
            try:
                await actor.aclose()
            except Exception:
                log.exception("closing actor %s", actor.name)
        # Let queued messages leave (bounded), then stop.
        senders = list(self._senders.values())
        if senders:
            await asyncio.wait(senders, timeout=1.0)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        await self.transport.close()


class UnexpectedMessage(DrizzleError):
    """An actor got a message type it does not handle."""


def timer(node: Node, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return node.loop.call_later(delay, callback)
