"""An opt-in Prometheus endpoint for ``Context.metrics()`` (needs prometheus-client).

``MetricsServer`` is a small HTTP server on the context's event loop: each scrape of
``/metrics`` takes a fresh ``MetricsSnapshot`` on the loop (so it reads actor state
from the thread that owns it, without locks or threads) and renders it with
prometheus-client. Labels stay low-cardinality: executor and part, never task ids.
``families(snapshot)`` is the mapping from a snapshot to metric families.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from drizzle.errors import DrizzleError
from drizzle.metrics import EXECUTOR_PARTS, MetricsSnapshot

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError:  # pragma: no cover - exercised only without the extra
    _MISSING = True
else:
    _MISSING = False

log = logging.getLogger("drizzle.metrics")

REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request line and headers."""


def families(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    """The snapshot as Prometheus metric families (``drizzle_*``)."""

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    s = snapshot
    yield gauge("drizzle_group_size", "The tuner's group size G (next auto group).", s.group_size)
    if s.last_group_size is not None:
        yield gauge(
            "drizzle_last_group_size", "Micro-batches of the last group.", s.last_group_size
        )
    if s.smoothed_overhead is not None:
        yield gauge(
            "drizzle_overhead_ratio",
            "The tuner's smoothed coordination overhead.",
            s.smoothed_overhead,
        )
    last = s.last_group
    if last is not None:
        yield gauge(
            "drizzle_last_group_overhead_ratio",
            "Overhead of the last group by the tuner's measure.",
            last.overhead,
        )
        yield gauge("drizzle_last_group_wall_seconds", "Wall time of the last group.", last.wall_s)
        yield gauge(
            "drizzle_last_group_coordination_seconds",
            "Driver-side coordination of the last group.",
            last.coordination_s,
        )
    yield counter("drizzle_groups_completed", "Groups completed.", s.groups_completed)
    yield counter(
        "drizzle_micro_batches_completed", "Micro-batches completed.", s.batches_completed
    )
    yield counter("drizzle_group_wall_seconds", "Wall time of completed groups.", s.wall_s)
    yield counter(
        "drizzle_group_coordination_seconds",
        "Driver-side coordination of completed groups.",
        s.coordination_s,
    )
    driver = CounterMetricFamily(
        "drizzle_driver_seconds", "Driver-side seconds by part.", labels=["part"]
    )
    driver.add_metric(["plan"], s.plan_s)
    driver.add_metric(["place"], s.place_s)
    driver.add_metric(["results"], s.results_s)
    yield driver
    yield counter("drizzle_tasks_completed", "Tasks completed (all executors).", s.tasks_done)
    yield counter("drizzle_tasks_failed", "Task attempts failed (all executors).", s.tasks_failed)
    yield counter(
        "drizzle_shuffle_bytes", "Map-output bytes of completed groups.", s.bytes_shuffled
    )
    yield counter("drizzle_fetched_bytes", "Bytes fetched from other executors.", s.bytes_fetched)

    up = GaugeMetricFamily("drizzle_executor_up", "1 while registered.", labels=["executor"])
    cores = GaugeMetricFamily("drizzle_executor_cores", "Task slots.", labels=["executor"])
    age = GaugeMetricFamily(
        "drizzle_executor_heartbeat_age_seconds", "Since the last heartbeat.", labels=["executor"]
    )
    tasks = CounterMetricFamily("drizzle_executor_tasks", "Tasks completed.", labels=["executor"])
    failed = CounterMetricFamily(
        "drizzle_executor_failed_tasks", "Task attempts failed.", labels=["executor"]
    )
    seconds = CounterMetricFamily(
        "drizzle_executor_seconds", "Task seconds by part.", labels=["executor", "part"]
    )
    fetched = CounterMetricFamily(
        "drizzle_executor_fetched_bytes", "Bytes fetched from peers.", labels=["executor"]
    )
    for e in s.executors:
        label = [e.executor_id]
        up.add_metric(label, 1.0 if e.alive else 0.0)
        cores.add_metric(label, e.cores)
        if e.heartbeat_age_s is not None:
            age.add_metric(label, e.heartbeat_age_s)
        tasks.add_metric(label, e.tasks)
        failed.add_metric(label, e.failed_tasks)
        for part in EXECUTOR_PARTS:
            seconds.add_metric([e.executor_id, part], getattr(e, f"{part}_s"))
        fetched.add_metric(label, e.bytes_fetched)
    yield from (up, cores, age, tasks, failed, seconds, fetched)


class _SnapshotCollector:
    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(families(self._snapshot()))


class MetricsServer:
    """``GET /metrics`` on the running event loop; ``close()`` stops it."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        if _MISSING:
            raise DrizzleError(
                "serving metrics needs prometheus-client: pip install 'drizzle[metrics]'"
            )
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_SnapshotCollector(snapshot))
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving metrics on http://%s:%d/metrics", host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            if self._handlers:
                await asyncio.wait(list(self._handlers), timeout=REQUEST_TIMEOUT)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                writer.write(self._respond(head))
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(_response(431, "text/plain", b"request header too large\n"))
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) < 2 or parts[0] not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET\n")
        path = parts[1].split("?", 1)[0]
        if path not in ("/", "/metrics"):
            return _response(404, "text/plain", b"see /metrics\n")
        body = generate_latest(self._registry)
        if parts[0] == "HEAD":
            return _response(200, CONTENT_TYPE_LATEST, b"", length=len(body))
        return _response(200, CONTENT_TYPE_LATEST, body)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Too Large"}


def _response(status: int, content_type: str, body: bytes, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
