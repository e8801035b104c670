"""One INFO line per group and nothing per task; the progress bar only on a terminal."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from drizzle.progress import Progress, progress

from .conftest import WAIT, MakeContext


async def test_one_info_line_per_group_and_none_per_task(
    make_context: MakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[4]")
        src = ctx.parallelize(range(400), 4)
        batches = [src.map(lambda x, i=i: (x % 4, i)).group_by_key(4) for i in range(20)]
        caplog.set_level(logging.DEBUG, logger="drizzle")
        caplog.clear()
        await ctx.run_jobs(batches, group_size=5)
        records = [r for r in caplog.records if r.name.startswith("drizzle")]
    info = [r for r in records if r.levelno >= logging.INFO]
    assert [r.name for r in info] == ["drizzle.driver"] * 4  # 20 micro-batches, G=5
    for r in info:
        assert r.getMessage().startswith("group ")
        assert "G=5" in r.getMessage()
        assert "overhead=" in r.getMessage()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    out = io.StringIO()
    with progress(10, "jobs", stream=stream) as bar:
        assert not bar.enabled
        bar.update(3, G=4)
        bar.write("a line", file=out)
    assert stream.getvalue() == ""
    assert out.getvalue() == "a line\n"


def test_progress_can_be_switched_off_on_a_terminal() -> None:
    stream = FakeTerminal()
    with Progress(10, stream=stream, enabled=False) as bar:
        bar.update()
    assert not bar.enabled
    assert stream.getvalue() == ""


def test_progress_draws_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    stream = FakeTerminal()
    with progress(10, "jobs", stream=stream) as bar:
        assert bar.enabled
        bar.update(10, G=8, overhead="4.0%")
    assert "jobs" in stream.getvalue()
    assert "10/10" in stream.getvalue()
    assert not bar.enabled  # closed
