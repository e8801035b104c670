"""The simulated network: in-process endpoints with modelled time and per-node CPU.

``SimNetwork`` is an ``InProcNetwork`` whose endpoints (``SimTransport``) do not hand
envelopes over at once. Each node has one CPU (``Cpu``: busy until some virtual time);
a message costs its sender CPU to send, then waits for the sender's outgoing link
(bandwidth), travels (latency), and reaches its target actor when the receiver's CPU
is free; its receive cost then delays what that node does next. Events between the
actors of one node (the driver-side actors) cost the node's CPU too. So a node that
sends or receives many messages, like the driver, is a queue that fills: the
centralised bottleneck the group size is there to relieve.

All of this runs on one event heap ordered by (virtual time, sequence number), served
by a single timer of the ``VirtualEventLoop``; equal times keep their order, so runs
are deterministic and per-link FIFO holds. Messages are encoded by the real codec to
know their size. ``kill`` makes a node vanish at a virtual time, either ``silent``
(a machine that stops answering: messages to it are lost, only missing heartbeats
tell) or not (a closed process: sends to it fail at once). Depends on the inproc
transport, the codec and the simulation's models; never on wall-clock time.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.internal import PlaceGroup
from drizzle.errors import PeerUnreachable, TransportClosed
from drizzle.sim.loop import SimulationError, VirtualEventLoop
from drizzle.sim.model import SimConfig
from drizzle.transport.base import TransportOptions
from drizzle.transport.inproc import InProcNetwork, InProcTransport
from drizzle.wire.codec import Envelope, decode, encode

if TYPE_CHECKING:
    from drizzle.sim.node import SimNode


class TraceEntry(NamedTuple):
    """One delivered message: when, from which node to which node and actor, what."""

    time: float
    src: str
    dst: str
    target: str
    kind: str
    size: int


@dataclass
class Cpu:
    """One node's CPU: work is served one piece after the other, in request order."""

    busy_until: float = 0.0
    busy_s: float = 0.0
    """Total virtual seconds of work charged."""
    waiting: collections.deque[tuple[str, Envelope, int]] = field(default_factory=collections.deque)
    """Messages that arrived while the CPU was busy: (sender, envelope, size)."""
    serving: bool = False

    def reserve(self, now: float, seconds: float) -> float:
        """Charge ``seconds`` of work requested at ``now``; returns when it is done."""
        start = self.busy_until if self.busy_until > now else now
        self.busy_until = done = start + seconds
        self.busy_s += seconds
        return done


@dataclass
class NodeStats:
    sent: int = 0
    received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    lost: int = 0
    """Messages to or from this node dropped because it was killed."""


class SimTransport(InProcTransport):
    """An endpoint of a ``SimNetwork``; sending hands the envelope to the network."""

    def __init__(self, address: str, network: SimNetwork) -> None:
        super().__init__(address, TransportOptions(), network)
        self.sim = network
        self.sink: Callable[[str, Envelope], None] | None = None
        """Called with each delivered envelope instead of queueing it for ``recv``
        (the simulated node delivers straight to its actors)."""

    async def send(self, peer: str, envelope: Envelope) -> None:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        self.sim.transmit(self.address, peer, envelope)

    def deliver(self, sender: str, envelope: Envelope) -> None:
        if self.sink is not None:
            self.sink(sender, envelope)
        else:
            self.deliver_nowait(sender, envelope)

    async def close(self) -> None:
        if self.address in self.sim.silent:
            self._closed = True  # a frozen machine: peers cannot tell, messages vanish
            return
        await super().close()


class SimNetwork(InProcNetwork):
    """Endpoints, CPUs and the event heap of one simulated cluster.

    Must be made inside a running ``VirtualEventLoop``.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        super().__init__(check_codec=False)
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualEventLoop):
            raise SimulationError(
                "a simulated cluster runs on the virtual clock: start it inside "
                "drizzle.sim.run(...) (a VirtualEventLoop), not on a real event loop"
            )
        self.loop: VirtualEventLoop = loop
        self.config = config = config or SimConfig()
        self.rng = random.Random(config.seed)
        self.cpus: dict[str, Cpu] = {}
        self.stats: dict[str, NodeStats] = {}
        self.nodes: dict[str, SimNode] = {}
        self.trace: list[TraceEntry] = []
        self.kills: list[tuple[float, str, bool]] = []
        """(virtual time, address, silent) of every node killed."""
        self.dead: set[str] = set()
        self.silent: set[str] = set()
        self._sims: dict[str, SimTransport] = {}
        self._link_free: dict[str, float] = {}
        self._last_arrival: dict[tuple[str, str], float] = {}
        self._events: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._pumping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # ------------------------------------------------------------------ building

    def transport(self, address: str) -> SimTransport:
        transport = SimTransport(address, self)
        self._sims[address] = transport
        self.cpus[address] = Cpu(busy_until=self.loop.time())
        self.stats[address] = NodeStats()
        return transport

    def node(self, address: str) -> SimNode:
        """A node on a new endpoint at ``address``, on this network's clock (unstarted)."""
        from drizzle.sim.node import SimNode

        node = SimNode(self.transport(address))
        self.nodes[address] = node
        return node

    # ------------------------------------------------------------------ the event heap

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` at virtual time ``when`` (in order with equal times)."""
        heapq.heappush(self._events, (when, next(self._seq), fn, args))
        if self._pumping:
            return  # the pump re-arms the timer when it is done
        if self._timer is None or when < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(when, self._pump)
            self._timer_when = when

    def _pump(self) -> None:
        """Run every event that is due, then arm the timer for the next one."""
        self._timer = None
        self._pumping = True
        events = self._events
        now = self.loop.time()
        pop = heapq.heappop
        try:
            while events and events[0][0] <= now:
                _, _, fn, args = pop(events)
                fn(*args)
        finally:
            self._pumping = False
            if events and not self._closed:
                self._timer_when = when = events[0][0]
                self._timer = self.loop.call_at(when, self._pump)

    # ------------------------------------------------------------------ messages

    def transmit(self, src: str, peer: str, envelope: Envelope) -> None:
        """Send ``envelope`` from node ``src`` to node ``peer`` (called by transports).

        Raises ``PeerUnreachable`` if ``peer`` is unknown or closed, unless it vanished
        silently (then the message is lost on arrival).
        """
        if src in self.dead:
            return  # a killed node's last words go nowhere
        config = self.config
        frame = encode(envelope)
        if config.check_codec:
            envelope = decode(frame)
        size = len(frame)
        if peer not in self.silent:
            target = self._sims.get(peer)
            if target is None or target._closed:
                raise PeerUnreachable(f"no endpoint at {peer}")
        stats = self.stats[src]
        stats.sent += 1
        stats.bytes_sent += size
        now = self.loop.time()
        departs = self.cpus[src].reserve(now, config.cpu.send(size))
        network = config.network
        link_free = self._link_free.get(src, 0.0)
        on_wire = (departs if departs > link_free else link_free) + size / network.bandwidth_bps
        self._link_free[src] = on_wire
        arrives = on_wire + network.latency_s
        if network.jitter_s > 0:
            arrives += self.rng.random() * network.jitter_s
        link = (src, peer)
        last = self._last_arrival.get(link, 0.0)
        if arrives < last:
            arrives = last  # no overtaking on a link
        self._last_arrival[link] = arrives
        self.at(arrives, self._arrive, src, peer, envelope, size)

    def _arrive(self, src: str, dst: str, envelope: Envelope, size: int) -> None:
        """The message is at ``dst``: its actor gets it as soon as the node's CPU is
        free (messages wait in arrival order), and its receive cost then delays
        whatever the node does next."""
        cpu = self.cpus[dst]
        if cpu.waiting or cpu.busy_until > self.loop.time():
            cpu.waiting.append((src, envelope, size))
            if not cpu.serving:
                cpu.serving = True
                self.at(cpu.busy_until, self._serve, dst)
            return
        self._deliver(src, dst, envelope, size)

    def _serve(self, dst: str) -> None:
        cpu = self.cpus[dst]
        if cpu.busy_until > self.loop.time():  # work was charged meanwhile
            self.at(cpu.busy_until, self._serve, dst)
            return
        src, envelope, size = cpu.waiting.popleft()
        self._deliver(src, dst, envelope, size)
        if cpu.waiting:
            self.at(cpu.busy_until, self._serve, dst)
        else:
            cpu.serving = False

    def _deliver(self, src: str, dst: str, envelope: Envelope, size: int) -> None:
        target = self._sims.get(dst)
        if dst in self.dead or target is None or target._closed:
            self.stats[dst].lost += 1
            return
        now = self.loop.time()
        self.cpus[dst].reserve(now, self.config.cpu.receive(size))
        stats = self.stats[dst]
        stats.received += 1
        stats.bytes_received += size
        if self.config.trace:
            self.trace.append(
                TraceEntry(now, src, dst, envelope.target, type(envelope.message).__name__, size)
            )
        target.deliver(src, envelope)

    def local(self, node: SimNode, envelope: Envelope) -> None:
        """An event between two actors of ``node``: costs its CPU, then is delivered."""
        message = envelope.message
        cpu = self.config.cpu
        if isinstance(message, PlaceGroup):
            plan = message.plan
            group = node.actors.get("group")
            if isinstance(group, GroupSchedulerActor):  # what its placing is about to cost
                one_by_one = group.state.tasks_placed_one_by_one(plan)
            else:
                one_by_one = sum(s.num_partitions for b in plan.batches for s in b.stages)
            cost = cpu.place(len(plan.batches), one_by_one)
        else:
            cost = cpu.internal_s
        address = node.address
        done = self.cpus[address].reserve(self.loop.time(), cost)
        self.at(done, self._deliver_local, node, envelope)

    def _deliver_local(self, node: SimNode, envelope: Envelope) -> None:
        address = node.address
        if address in self.dead or node.closed:
            return
        if self.config.trace:
            self.trace.append(
                TraceEntry(
                    self.loop.time(),
                    address,
                    address,
                    envelope.target,
                    type(envelope.message).__name__,
                    0,
                )
            )
        node.deliver_local(envelope)

    def work(self, address: str, seconds: float) -> float:
        """Charge ``seconds`` of CPU on node ``address`` now; returns when it is done."""
        return self.cpus[address].reserve(self.loop.time(), seconds)

    # ------------------------------------------------------------------ failures

    def kill(self, address: str, *, at: float | None = None, silent: bool = True) -> None:
        """Make node ``address`` vanish at virtual time ``at`` (default: now).

        ``silent``: like a machine that stops: its endpoint stays known, messages to it
        are lost, and peers learn only from missing heartbeats (or timeouts). Otherwise
        like a process that exits: sends to it fail at once. Either way the node's own
        tasks stop and nothing it sends leaves any more.
        """
        if address not in self._sims:
            raise ValueError(f"no simulated node at {address!r}")
        when = self.loop.time() if at is None else max(at, self.loop.time())
        self.at(when, self._kill, address, silent)

    def _kill(self, address: str, silent: bool) -> None:
        if address in self.dead or self._closed:
            return
        self.dead.add(address)
        if silent:
            self.silent.add(address)
        self.kills.append((self.loop.time(), address, silent))
        node = self.nodes.get(address)
        if node is not None:
            task = self.loop.create_task(self._close_killed(node, silent), name=f"kill {address}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close_killed(self, node: SimNode, silent: bool) -> None:
        if not silent:
            await node.transport.close()  # first: peers' sends fail from now on
        await node.close()

    async def settle(self) -> None:
        """Wait (at most 10 virtual seconds) for killed nodes to finish closing."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)

    async def aclose(self) -> None:
        """Let killed nodes finish closing, then stop: nothing more is delivered."""
        await self.settle()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._events.clear()

    # ------------------------------------------------------------------ reporting

    def utilisation(self, address: str, since: float = 0.0) -> float:
        """Share of virtual time since ``since`` that node ``address``'s CPU was busy
        (work charged since then is not tracked separately: use from the start)."""
        elapsed = self.loop.time() - since
        return self.cpus[address].busy_s / elapsed if elapsed > 0 else 0.0
