"""A fault-injecting in-process network for ``local[N]`` clusters.

A ``FaultyNetwork`` is an ``InProcNetwork`` whose send hook looks at every envelope
that crosses from one node to another and, as its ``FaultPlan`` says, lets it pass,
drops it, delays it, duplicates it, or holds it back until later ones on the same link
have overtaken it (reorder). It also crashes nodes (or cuts one actor off) after their
k-th message. Messages between actors of one node (the driver-side actors) never cross
the network and are never touched.

* Rules are tried in order; the first whose ``Match`` (sender node and actor, target
  node and actor, message type) fits and whose coin comes up applies.
* Every decision is drawn from ``random.Random`` seeded with the plan's seed and the
  message's identity (its link, type and ordinal among such messages), not from one
  shared stream, so a replay of a seed under a similar interleaving repeats the same
  decisions for the same messages.
* Every fault made is appended to ``FaultyNetwork.faults`` (``Fault`` records, with
  the loop time since the network was armed); ``report()`` prints the plan and them.
* Time is the event loop's: delays are loop iterations (``call_soon``) or a small
  ``call_later``; nothing here sleeps.

``faulty_context(plan, "local[3]", **context_options)`` starts a ``Context`` over such a
network (faults armed once every executor has registered) and closes both at the end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from drizzle.actors.node import Node
from drizzle.context import Context
from drizzle.errors import PeerUnreachable
from drizzle.transport.inproc import InProcNetwork, InProcTransport
from drizzle.wire.codec import Envelope, decode, encode

HEARTBEATS = frozenset({"Heartbeat", "HeartbeatAck"})
"""Message types a ``Match`` without ``kinds`` leaves alone, and that neither count as
"later messages" for a reorder nor towards a crash trigger."""

ACTIONS = ("drop", "delay", "duplicate", "reorder")


def node_name(address: str) -> str:
    """``inproc://drizzle-12-0/executor-1`` → ``executor-1`` (``driver`` for the driver)."""
    return address.rsplit("/", 1)[-1]


def _node_matches(pattern: str | None, name: str) -> bool:
    if pattern is None or pattern == name:
        return True
    return pattern == "executor" and name.startswith("executor-")


@dataclass(frozen=True)
class Match:
    """Which messages a rule applies to; ``None`` matches anything.

    ``src``/``dst`` name nodes: ``"driver"``, ``"executor-1"``, or ``"executor"`` for any
    executor. ``src_actor``/``dst_actor`` name actors (``driver``, ``group``, ``tracker``,
    ``dag`` on the driver node; ``executor`` on executors). ``kinds`` names message
    types (``"MapOutputReady"``); ``None`` is every type except heartbeats.
    """

    src: str | None = None
    dst: str | None = None
    src_actor: str | None = None
    dst_actor: str | None = None
    kinds: frozenset[str] | None = None

    def __call__(self, src: str, src_actor: str, dst: str, dst_actor: str, kind: str) -> bool:
        if self.kinds is None:
            if kind in HEARTBEATS:
                return False
        elif kind not in self.kinds:
            return False
        return (
            _node_matches(self.src, src)
            and _node_matches(self.dst, dst)
            and (self.src_actor is None or self.src_actor == src_actor)
            and (self.dst_actor is None or self.dst_actor == dst_actor)
        )

    def __str__(self) -> str:
        kinds = "*" if self.kinds is None else ",".join(sorted(self.kinds))
        return (
            f"{self.src or '*'}/{self.src_actor or '*'} -> "
            f"{self.dst or '*'}/{self.dst_actor or '*'} [{kinds}]"
        )


@dataclass(frozen=True)
class Rule:
    """One kind of fault on the messages ``match`` selects.

    ``drop``: the message is lost. ``delay``: it arrives ``iterations`` loop iterations
    later, or ``seconds`` of loop time later if set (messages sent after it on its link
    may overtake it). ``duplicate``: it arrives, and a copy arrives ``iterations`` loop
    iterations after it (0: at once). ``reorder``: it is held until ``after`` later
    non-heartbeat messages on its link (same sender node, same target node) have been
    delivered, or for at most ``hold_seconds``.
    """

    action: str
    match: Match = field(default_factory=Match)
    probability: float = 1.0
    skip: int = 0
    """Let the first ``skip`` matching messages pass untouched."""
    limit: int | None = None
    """Apply at most this many times (``None``: no limit)."""
    iterations: int = 0
    seconds: float = 0.0
    after: int = 1
    hold_seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {ACTIONS}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if self.iterations < 0 or self.seconds < 0 or self.after < 1 or self.hold_seconds < 0:
            raise ValueError("iterations, seconds and hold_seconds >= 0; after >= 1")

    def __str__(self) -> str:
        extra = {
            "drop": "",
            "delay": f" by {self.seconds:g}s" if self.seconds else f" by {self.iterations} it",
            "duplicate": f" copy +{self.iterations} it",
            "reorder": f" after {self.after} (max {self.hold_seconds:g}s)",
        }[self.action]
        limit = "" if self.limit is None else f" limit {self.limit}"
        skip = f" skip {self.skip}" if self.skip else ""
        return f"{self.action}{extra} p={self.probability:g}{skip}{limit}: {self.match}"


@dataclass(frozen=True)
class Crash:
    """Crash node ``node`` once ``after`` messages (sent or received by it; of ``kinds``,
    or of every type but heartbeats) have crossed the network: ``lag`` loop iterations
    after the one in which that message was delivered.

    By default the node's endpoint closes at once (peers' sends to it fail, as with a
    closed connection) and the node is then closed; nothing it sends leaves any more.
    ``silent``: the node freezes instead; its address stays bound, whatever it sends
    or is sent is lost, and only missing heartbeats reveal it. With ``actor``, only
    that actor is cut off (silently); the node's other actors go on.
    """

    node: str
    after: int = 1
    kinds: frozenset[str] | None = None
    lag: int = 0
    silent: bool = False
    actor: str | None = None

    def __str__(self) -> str:
        what = self.node if self.actor is None else f"{self.node}/{self.actor}"
        kinds = "" if self.kinds is None else f" of {','.join(sorted(self.kinds))}"
        mode = "silently" if self.silent or self.actor else "closing"
        return f"crash {what} {mode} after its message #{self.after}{kinds} (+{self.lag} it)"


@dataclass(frozen=True)
class FaultPlan:
    """What to do to messages, from one seed: rules, then crashes."""

    seed: int
    rules: tuple[Rule, ...] = ()
    crashes: tuple[Crash, ...] = ()

    def describe(self) -> str:
        lines = [f"fault plan seed={self.seed}"]
        lines += [f"  rule {i}: {rule}" for i, rule in enumerate(self.rules)]
        lines += [f"  {crash}" for crash in self.crashes]
        if not self.rules and not self.crashes:
            lines.append("  (no faults)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Fault:
    """One thing the network did to a message (or a node)."""

    seq: int
    at: float
    """Loop time since the network was armed, in seconds."""
    action: str
    """``drop``, ``delay``, ``duplicate``, ``reorder``, ``crash`` — the faults made — or
    what followed from them: ``release`` (a held message delivered), ``lost`` (a held
    message whose target is gone), ``swallow`` (to or from a crashed node)."""
    src: str
    """Sender ``node/actor``."""
    dst: str
    """Target ``node/actor``."""
    kind: str
    n: int
    """Ordinal of this message among those of its type between these two actors."""
    detail: str = ""

    def __str__(self) -> str:
        return (
            f"#{self.seq:<4} t={self.at:7.3f}s {self.action:<9} {self.kind}#{self.n} "
            f"{self.src} -> {self.dst}{' ' + self.detail if self.detail else ''}"
        )


INJECTED = frozenset({*ACTIONS, "crash"})


@dataclass
class _Held:
    target: InProcTransport
    sender: str
    envelope: Envelope
    src: str
    dst: str
    kind: str
    n: int
    remaining: int
    timer: asyncio.TimerHandle | None = None
    done: bool = False


class FaultyNetwork(InProcNetwork):
    """An ``InProcNetwork`` that injects the faults of ``plan`` once armed."""

    def __init__(self, plan: FaultPlan, *, check_codec: bool = True) -> None:
        super().__init__(check_codec=check_codec, hook=self._on_send)
        self.plan = plan
        self.faults: list[Fault] = []
        self.armed = False
        self.nodes: dict[str, Node] = {}
        """Node name → node, for crashes that close the whole node (set by
        ``start_faulty_context``; without it a crash only closes the endpoint)."""
        self.swallowed_heartbeats = 0
        self._by_name: dict[str, InProcTransport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._closed = False
        self._ordinals: dict[tuple[str, str, str, str, str], int] = {}
        self._matched = [0] * len(plan.rules)
        self._applied = [0] * len(plan.rules)
        self._held: dict[tuple[str, str], list[_Held]] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._crash_counts = [0] * len(plan.crashes)
        self._cut: dict[tuple[str, str | None], str] = {}
        """(node, actor or None for the whole node) → ``closed`` or ``silent``."""
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    def bind(self, endpoint: InProcTransport) -> None:
        super().bind(endpoint)
        self._by_name[node_name(endpoint.address)] = endpoint

    def arm(self) -> None:
        """Start injecting faults (messages sent before pass untouched)."""
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.armed = True

    def disarm(self) -> None:
        """Stop injecting new faults; held messages are still released, crashed nodes
        stay crashed."""
        self.armed = False

    async def aclose(self) -> None:
        """Forget held messages, cancel timers, wait for crashed nodes to close."""
        self._closed = True
        self.armed = False
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._held.clear()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10.0)

    # ------------------------------------------------------------------ reporting

    def injected(self) -> list[Fault]:
        """The faults made (not what followed from them)."""
        return [f for f in self.faults if f.action in INJECTED]

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(f.action for f in self.faults)

    def report(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts().items())) or "none"
        lines = [self.plan.describe(), f"faults made: {counts}"]
        lines += [f"  {fault}" for fault in self.faults]
        return "\n".join(lines)

    def _record(self, action: str, src: str, dst: str, kind: str, n: int, detail: str = "") -> None:
        at = self._now() - self._t0 if self._loop is not None else 0.0
        self.faults.append(Fault(len(self.faults), at, action, src, dst, kind, n, detail))

    def _now(self) -> float:
        return self._running_loop().time()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # ------------------------------------------------------------------ the hook

    def _cut_mode(self, node: str, actor: str) -> str | None:
        if not self._cut:
            return None
        return self._cut.get((node, None)) or self._cut.get((node, actor))

    def _on_send(self, sender: InProcTransport, target: InProcTransport, env: Envelope) -> bool:
        src, dst = node_name(sender.address), node_name(target.address)
        kind = type(env.message).__name__
        src_actor, dst_actor = env.sender, env.target
        key = (src, src_actor, dst, dst_actor, kind)
        n = self._ordinals[key] = self._ordinals.get(key, 0) + 1
        if self._cut:
            if self._cut_mode(src, src_actor) is not None:  # a crashed node sends nothing
                self._swallow(key, n, "sender crashed")
                return True
            mode = self._cut_mode(dst, dst_actor)
            if mode == "closed":
                raise PeerUnreachable(f"{target.address} crashed (fault injection)")
            if mode == "silent":
                self._swallow(key, n, "target crashed")
                return True
        if not self.armed:
            return False
        heartbeat = kind in HEARTBEATS
        if self.plan.crashes and not heartbeat:
            self._count_towards_crashes(src, kind, n)
            self._count_towards_crashes(dst, kind, n)
        rule = self._choose(key, n)
        link = (sender.address, target.address)
        if rule is None:
            if heartbeat or not self._held.get(link):
                return False  # the normal, untouched path
            self._deliver(target, sender.address, env)
            self._passed(link)
            return True
        s, d = f"{src}/{src_actor}", f"{dst}/{dst_actor}"
        if rule.action == "drop":
            self._record("drop", s, d, kind, n)
        elif rule.action == "delay":
            self._record(
                "delay",
                s,
                d,
                kind,
                n,
                f"by {rule.seconds:g}s" if rule.seconds else f"by {rule.iterations} iterations",
            )
            self._later(
                rule.iterations,
                rule.seconds,
                lambda: self._release(target, sender.address, env, s, d, kind, n, "delayed"),
            )
        elif rule.action == "duplicate":
            self._record("duplicate", s, d, kind, n, f"copy after {rule.iterations} iterations")
            self._deliver(target, sender.address, env)
            copy = self._copy(env)
            self._later(
                rule.iterations,
                0.0,
                lambda: self._release(target, sender.address, copy, s, d, kind, n, "copy"),
            )
            if not heartbeat:
                self._passed(link)
        else:  # reorder
            self._record("reorder", s, d, kind, n, f"held for {rule.after} later message(s)")
            held = _Held(target, sender.address, env, s, d, kind, n, rule.after)
            self._held.setdefault(link, []).append(held)
            loop = self._running_loop()
            held.timer = loop.call_later(rule.hold_seconds, self._unhold, link, held, "timeout")
            self._timers.add(held.timer)
        return True

    def _choose(self, key: tuple[str, str, str, str, str], n: int) -> Rule | None:
        src, src_actor, dst, dst_actor, kind = key
        for i, rule in enumerate(self.plan.rules):
            if not rule.match(src, src_actor, dst, dst_actor, kind):
                continue
            self._matched[i] += 1
            if self._matched[i] <= rule.skip:
                continue
            if rule.limit is not None and self._applied[i] >= rule.limit:
                continue
            if rule.probability < 1.0:
                rng = random.Random(
                    f"{self.plan.seed}|{i}|{src}|{src_actor}|{dst}|{dst_actor}|{kind}|{n}"
                )
                if rng.random() >= rule.probability:
                    continue
            self._applied[i] += 1
            return rule
        return None

    # ------------------------------------------------------------------ delivery

    def _copy(self, env: Envelope) -> Envelope:
        return decode(encode(env)) if self.check_codec else env

    def _deliver(self, target: InProcTransport, sender: str, env: Envelope) -> bool:
        return target.deliver_nowait(sender, env)

    def _release(
        self,
        target: InProcTransport,
        sender: str,
        env: Envelope,
        src: str,
        dst: str,
        kind: str,
        n: int,
        what: str,
    ) -> None:
        if self._closed:
            return
        dst_node, _, dst_actor = dst.partition("/")
        if self._cut_mode(dst_node, dst_actor) is not None or not self._deliver(
            target, sender, env
        ):
            self._record("lost", src, dst, kind, n, f"{what} message: target crashed or closed")
            return
        self._record("release", src, dst, kind, n, what)

    def _passed(self, link: tuple[str, str]) -> None:
        """A non-heartbeat message was delivered on ``link``: held ones count it."""
        for held in list(self._held.get(link, ())):
            held.remaining -= 1
            if held.remaining <= 0:
                self._unhold(link, held, "overtaken")

    def _unhold(self, link: tuple[str, str], held: _Held, why: str) -> None:
        if held.done:
            return
        held.done = True
        if held.timer is not None:
            held.timer.cancel()
            self._timers.discard(held.timer)
        waiting = self._held.get(link)
        if waiting is not None:
            waiting.remove(held)
            if not waiting:
                del self._held[link]
        self._release(
            held.target,
            held.sender,
            held.envelope,
            held.src,
            held.dst,
            held.kind,
            held.n,
            f"reordered ({why})",
        )

    def _later(self, iterations: int, seconds: float, callback: Callable[[], None]) -> None:
        loop = self._running_loop()
        if seconds > 0:
            timer: asyncio.TimerHandle

            def fire() -> None:
                self._timers.discard(timer)
                callback()

            timer = loop.call_later(seconds, fire)
            self._timers.add(timer)
        elif iterations <= 0:
            callback()
        else:
            loop.call_soon(self._hop, iterations, callback)

    def _hop(self, left: int, callback: Callable[[], None]) -> None:
        if self._closed:
            return
        if left <= 1:
            callback()
        else:
            self._running_loop().call_soon(self._hop, left - 1, callback)

    def _swallow(self, key: tuple[str, str, str, str, str], n: int, why: str) -> None:
        src, src_actor, dst, dst_actor, kind = key
        if kind in HEARTBEATS:
            self.swallowed_heartbeats += 1
            return
        self._record("swallow", f"{src}/{src_actor}", f"{dst}/{dst_actor}", kind, n, why)

    # ------------------------------------------------------------------ crashes

    def _count_towards_crashes(self, name: str, kind: str, n: int) -> None:
        for i, crash in enumerate(self.plan.crashes):
            if crash.node != name or self._crash_counts[i] >= crash.after:
                continue
            if crash.kinds is not None and kind not in crash.kinds:
                continue
            self._crash_counts[i] += 1
            if self._crash_counts[i] == crash.after:
                self._later(crash.lag + 1, 0.0, functools.partial(self._crash, crash, kind, n))

    def crash(self, crash: Crash) -> None:
        """Crash a node (or cut an actor off) now, whatever the plan says."""
        self._crash(crash, "", 0)

    def _crash(self, crash: Crash, kind: str, n: int) -> None:
        if self._closed or (crash.node, crash.actor) in self._cut:
            return
        silent = crash.silent or crash.actor is not None
        self._cut[(crash.node, crash.actor)] = "silent" if silent else "closed"
        what = crash.node if crash.actor is None else f"{crash.node}/{crash.actor}"
        trigger = f" (+{crash.lag} it after its message #{crash.after}, a {kind})" if kind else ""
        mode = "silently (frozen)" if silent else "closed"
        self._record("crash", what, "-", kind or "-", n, f"{mode}{trigger}")
        if silent:
            return
        endpoint = self._by_name.get(crash.node)
        if endpoint is not None:
            task = self._running_loop().create_task(
                self._close_crashed(endpoint, self.nodes.get(crash.node)),
                name=f"crash {crash.node}",
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close_crashed(self, endpoint: InProcTransport, node: Node | None) -> None:
        await endpoint.close()  # first: nothing queued for it is read, nothing leaves
        if node is not None:
            await node.close()


# ---------------------------------------------------------------------------- contexts


async def start_faulty_context(
    plan: FaultPlan, master: str = "local[3]", *, arm: bool = True, **options: Any
) -> tuple[Context, FaultyNetwork]:
    """A started ``Context`` on ``local[N]`` over a ``FaultyNetwork`` of ``plan``.

    ``options`` are ``Context`` options (``check_codec`` defaults to True). Faults are
    armed once every executor has registered, unless ``arm`` is False (then call
    ``network.arm()``). Close with ``ctx.close()`` then ``network.aclose()``.
    """
    options.setdefault("check_codec", True)
    ctx = Context(master, **options)
    if ctx.master.kind != "local":
        raise ValueError(f"fault injection needs a local[N] master, not {master!r}")
    network = FaultyNetwork(plan, check_codec=ctx.options.check_codec)
    ctx.options = dataclasses.replace(ctx.options, network=network)
    try:
        await ctx.start()
    except BaseException:
        await network.aclose()
        raise
    cluster = ctx.cluster
    nodes = [cluster.driver_node, *cluster.executor_nodes]
    network.nodes = {node_name(n.address): n for n in nodes if n is not None}
    if arm:
        network.arm()
    return ctx, network


@contextlib.asynccontextmanager
async def faulty_context(
    plan: FaultPlan, master: str = "local[3]", *, arm: bool = True, **options: Any
) -> AsyncIterator[tuple[Context, FaultyNetwork]]:
    """``async with faulty_context(plan, "local[3]", group_timeout=2) as (ctx, net):``"""
    ctx, network = await start_faulty_context(plan, master, arm=arm, **options)
    try:
        yield ctx, network
    finally:
        network.disarm()
        try:
            await ctx.close()
        finally:
            await network.aclose()
