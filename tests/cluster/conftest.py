"""Fixtures of the in-process cluster tests.

Every cluster here is ``local[N]`` with ``check_codec=True``: driver and executors share
this process and event loop, and every message between nodes is encoded and decoded
by the msgpack codec on its way. Starting and closing a cluster is bounded by ``WAIT``;
each test bounds its own body the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from drizzle import Context
from drizzle.actors.node import Node

WAIT = 30.0
"""Upper bound, in seconds, on any single cluster operation or test body."""

MakeContext = Callable[..., Awaitable[Context]]


async def start_context(master: str = "local[4]", **options: Any) -> Context:
    ctx = Context(master, check_codec=True, **options)
    async with asyncio.timeout(WAIT):
        await ctx.start()
    return ctx


async def close_context(ctx: Context) -> None:
    async with asyncio.timeout(WAIT):
        await ctx.close()


@pytest.fixture
async def make_context() -> AsyncIterator[MakeContext]:
    """``await make_context("local[3]", max_task_attempts=2)``; all closed at the end."""
    opened: list[Context] = []

    async def make(master: str = "local[4]", **options: Any) -> Context:
        ctx = await start_context(master, **options)
        opened.append(ctx)
        return ctx

    yield make
    for ctx in reversed(opened):
        await close_context(ctx)


@pytest.fixture
async def ctx(make_context: MakeContext) -> Context:
    """A running ``local[4]`` context."""
    return await make_context("local[4]")


# --------------------------------------------------------------------- message recording


@dataclass(frozen=True)
class Posted:
    """One ``Node.post`` call: from node ``node`` to actor ``target`` on node ``peer``."""

    node: str
    peer: str
    target: str
    kind: str
    message: Any


class PostLog:
    """Every message any node posted while installed (see the ``post_log`` fixture)."""

    def __init__(self) -> None:
        self.posts: list[Posted] = []

    def clear(self) -> None:
        self.posts.clear()

    def remote(self) -> list[Posted]:
        """Posts that cross from one node to another (not a node's internal events)."""
        return [p for p in self.posts if p.peer != p.node]

    def of(self, kind: str) -> list[Posted]:
        return [p for p in self.posts if p.kind == kind]


@pytest.fixture
def post_log(monkeypatch: pytest.MonkeyPatch) -> PostLog:
    """Record every ``Node.post`` (every actor sends through it) for the whole test."""
    log = PostLog()
    original = Node.post

    def post(self: Node, peer: str, target: str, message: Any, sender: str) -> None:
        log.posts.append(Posted(self.address, peer, target, type(message).__name__, message))
        original(self, peer, target, message, sender)

    monkeypatch.setattr(Node, "post", post)
    return log
