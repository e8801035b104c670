"""Fixtures of the tuning and observability tests: ``local[N]`` contexts, each closed
at the end, with start and close bounded by ``WAIT`` (as in tests/cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from drizzle import Context

WAIT = 30.0
"""Upper bound, in seconds, on any single cluster operation or test body."""

MakeContext = Callable[..., Awaitable[Context]]


@pytest.fixture
async def make_context() -> AsyncIterator[MakeContext]:
    """``await make_context("local[4]", tuner=...)``; every context is closed at the end."""
    opened: list[Context] = []

    async def make(master: str = "local[4]", **options: Any) -> Context:
        ctx = Context(master, check_codec=True, **options)
        async with asyncio.timeout(WAIT):
            await ctx.start()
        opened.append(ctx)
        return ctx

    yield make
    for ctx in reversed(opened):
        async with asyncio.timeout(WAIT):
            await ctx.close()
