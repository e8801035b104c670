"""The opt-in Prometheus endpoint: a real HTTP GET against ``Context(metrics_port=0)``."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from drizzle import DrizzleError

from .conftest import WAIT, MakeContext

pytest.importorskip("prometheus_client")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the exposition")


async def test_metrics_endpoint_serves_the_snapshot(make_context: MakeContext) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[2]", metrics_port=0)
        server = ctx._metrics_server
        assert server is not None
        assert server.port > 0
        await ctx.run_jobs([ctx.parallelize(range(100), 2) for _ in range(6)], group_size=3)
        url = f"http://127.0.0.1:{server.port}"
        status, text = await asyncio.to_thread(get, url + "/metrics")
        snapshot = ctx.metrics()
        assert status == 200
        assert sample(text, "drizzle_group_size") == snapshot.group_size
        assert sample(text, "drizzle_last_group_size") == 3
        assert sample(text, "drizzle_groups_completed_total") == 2
        assert sample(text, "drizzle_micro_batches_completed_total") == 6
        assert sample(text, "drizzle_tasks_completed_total") == snapshot.tasks_done == 12
        assert sample(text, "drizzle_tasks_failed_total") == 0
        assert 'drizzle_driver_seconds_total{part="plan"}' in text
        for e in snapshot.executors:
            assert f'drizzle_executor_up{{executor="{e.executor_id}"}} 1.0' in text
            assert (
                f'drizzle_executor_seconds_total{{executor="{e.executor_id}",part="compute"}}'
                in text
            )
        assert (await asyncio.to_thread(get, url + "/nothing"))[0] == 404
        await ctx.close()
        with pytest.raises(urllib.error.URLError):
            await asyncio.to_thread(urllib.request.urlopen, url + "/metrics", None, 2)


async def test_serve_metrics_once(make_context: MakeContext) -> None:
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[1]")
        port = await ctx.serve_metrics(0)
        status, text = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "drizzle_executor_up" in text
        with pytest.raises(DrizzleError, match="already"):
            await ctx.serve_metrics(0)


async def test_without_prometheus_client_a_clear_error(
    make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drizzle.prometheus

    monkeypatch.setattr(drizzle.prometheus, "_MISSING", True)
    async with asyncio.timeout(WAIT):
        ctx = await make_context("local[1]")
        with pytest.raises(DrizzleError, match=r"drizzle\[metrics\]"):
            await ctx.serve_metrics(0)
