"""The user's entry point: a ``Context`` owns a cluster and runs jobs on it.

``run_job`` runs one dataset; ``run_jobs`` runs a list of micro-batches in groups of
``group_size`` (one plan and one launch message per executor per group) and returns
every micro-batch's result in order; ``iter_jobs`` yields each micro-batch's result as
soon as it completes. With ``group_size="auto"`` each group's size comes from the
context's group-size tuner, which learns from the groups before it (across calls).
``metrics()`` returns what the engine measured; ``serve_metrics`` exports it to
Prometheus.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from drizzle.cluster import Cluster, ClusterOptions
from drizzle.dataset import Dataset, ParallelizedDataset, collect_partition
from drizzle.errors import DrizzleError
from drizzle.master import parse_master
from drizzle.metrics import MetricsCollector, MetricsSnapshot
from drizzle.scheduler.dag import BatchRequest
from drizzle.scheduler.tuner import GroupSizeTuner, TunerConfig
from drizzle.wire.codec import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from drizzle.prometheus import MetricsServer
    from drizzle.sim.model import SimConfig

JobFunc = Callable[[Iterator[Any]], Any]
GroupSize = int | Literal["auto"]


class Context:
    """A connection to a Drizzle cluster.

    Args:
        master: ``local[N]`` (N in-process executors), ``local-cluster[N,cores]`` (N
            executor processes on this machine), ``tcp://host:port`` (listen for
            executors started with ``python -m drizzle.node executor``), or
            ``sim[N,cores]`` (N simulated executors on a virtual clock; run the program
            with ``drizzle.sim.run``, see docs/simulation.md).
        executors: for ``tcp://``, how many executors to wait for at start.
        heartbeat_interval, heartbeat_timeout: executor liveness, in seconds.
        barrier: on an executor, start micro-batch b+1 only after micro-batch b's tasks.
        max_task_attempts: attempts of a task whose user code raises.
        inline_block_limit: shuffle blocks up to this many bytes travel inside the
            map-output notice to their reducer's executor instead of being fetched by
            it afterwards (0: reducers always pull their blocks from the mappers).
        group_timeout: seconds a group may run before it fails.
        start_timeout: seconds to wait for the executors to register.
        insecure: allow a ``tcp://`` master on a non-loopback address without
            authentication; for ``local-cluster``, run it without authentication.
        secret, secret_file, keys, key_name: CURVE key material (authentication and
            encryption, see docs/security.md): a cluster secret, a file holding one,
            or a key directory made by ``python -m drizzle.node keygen --out DIR`` and
            the client key to use from it. A ``tcp://`` master without any of these
            uses ``DRIZZLE_SECRET`` if set; ``local-cluster`` makes fresh keys itself.
        max_frame: largest message accepted or sent, in bytes (1 GiB by default).
        tuner: how ``group_size="auto"`` picks each group's size (``TunerConfig()``:
            overhead band 5-10 %, start at 2, double above, minus 5 below).
        metrics_port: serve ``metrics()`` to Prometheus on ``metrics_host:metrics_port``
            from ``start()`` on (0: any free port; see ``serve_metrics``). Needs the
            ``metrics`` extra (prometheus-client).
        sim: for ``sim[N,cores]``, the simulated network, CPU and compute costs
            (``drizzle.sim.SimConfig``; default: the calibrated defaults).
    """

    def __init__(
        self,
        master: str = "local[2]",
        *,
        executors: int | None = None,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 3.0,
        barrier: bool = True,
        max_task_attempts: int = 4,
        inline_block_limit: int = 64 * 1024,
        group_timeout: float = 600.0,
        start_timeout: float = 60.0,
        insecure: bool = False,
        check_codec: bool = False,
        tuner: TunerConfig | None = None,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        secret: str | bytes | None = None,
        secret_file: str | None = None,
        keys: str | None = None,
        key_name: str = "default",
        max_frame: int = DEFAULT_MAX_FRAME,
        sim: SimConfig | None = None,
    ) -> None:
        self.master = parse_master(master, executors)
        if heartbeat_interval <= 0 or heartbeat_timeout <= heartbeat_interval:
            raise ValueError("need 0 < heartbeat_interval < heartbeat_timeout")
        if type(max_task_attempts) is not int or max_task_attempts < 1:
            raise ValueError("max_task_attempts must be a positive int")
        self.options = ClusterOptions(
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            barrier=barrier,
            max_task_attempts=max_task_attempts,
            inline_block_limit=inline_block_limit,
            group_timeout=group_timeout,
            start_timeout=start_timeout,
            check_codec=check_codec,
            insecure=insecure,
            secret=secret,
            secret_file=secret_file,
            keys=keys,
            key_name=key_name,
            max_frame=max_frame,
            sim=sim,
        )
        if tuner is not None and not isinstance(tuner, TunerConfig):
            raise TypeError(f"tuner must be a TunerConfig, got {type(tuner).__name__}")
        self.tuner = GroupSizeTuner(tuner)
        """Picks group sizes for ``group_size="auto"``; kept across calls."""
        self._collector = MetricsCollector(self.tuner)
        self._metrics_port = metrics_port
        self._metrics_host = metrics_host
        self._metrics_server: MetricsServer | None = None
        self._cluster: Cluster | None = None
        self._dataset_ids = itertools.count()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Context:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._cluster is not None:
            raise DrizzleError("context already started")
        cluster = Cluster(self.master, self.options)
        await cluster.start()
        self._cluster = cluster
        if self._metrics_port is not None:
            try:
                await self.serve_metrics(self._metrics_port, self._metrics_host)
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        if self._cluster is not None and not self._closed:
            self._closed = True
            if self._metrics_server is not None:
                await self._metrics_server.close()
                self._metrics_server = None
            await self._cluster.close()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None or self._closed:
            raise DrizzleError("the context is not running; use 'async with Context(...)'")
        return self._cluster

    def executors(self) -> list[str]:
        """Ids (addresses) of the executors currently registered."""
        driver = self.cluster.driver
        assert driver is not None
        return sorted(driver.executors)

    def decommission(self, executor_id: str) -> None:
        """Let an executor leave at its next group boundary, without recomputation.

        It gets no work from the next group on and is told to stop once no running
        group uses it. Raises ``ValueError`` for an unknown executor.
        """
        group = self.cluster.group
        assert group is not None
        if not group.decommission(executor_id, "decommissioned by the driver"):
            raise ValueError(f"no executor {executor_id!r}; see Context.executors()")

    def _next_dataset_id(self) -> int:
        return next(self._dataset_ids)

    # ------------------------------------------------------------------ observing

    def metrics(self) -> MetricsSnapshot:
        """What the engine measured so far: group sizes, overhead, timings, executors."""
        return self._collector.snapshot(self.cluster)

    async def serve_metrics(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve ``metrics()`` in Prometheus' text format at ``http://host:port/metrics``
        until the context closes; returns the port (useful with ``port=0``).

        Needs prometheus-client (``pip install 'drizzle[metrics]'``).
        """
        from drizzle.prometheus import MetricsServer

        _ = self.cluster  # raises unless running
        if self._metrics_server is not None:
            raise DrizzleError(f"metrics are already served on port {self._metrics_server.port}")
        server = MetricsServer(self.metrics)
        await server.start(host, port)
        self._metrics_server = server
        return server.port

    # ------------------------------------------------------------------ datasets

    def parallelize(self, data: Iterable[Any], num_partitions: int | None = None) -> Dataset:
        """A dataset of ``data`` cut into ``num_partitions`` contiguous slices."""
        if num_partitions is None:
            num_partitions = self.master.executors * self.master.cores
        if type(num_partitions) is not int or num_partitions <= 0:
            raise ValueError(f"num_partitions must be a positive int, got {num_partitions!r}")
        if not isinstance(data, Iterable):
            raise TypeError(f"parallelize needs an iterable, got {type(data).__name__}")
        return ParallelizedDataset(self, data, num_partitions)

    # ------------------------------------------------------------------ jobs

    async def run_job(self, dataset: Dataset, func: JobFunc | None = None) -> list[Any]:
        """``func`` of each partition's iterator, in partition order (default: the list)."""
        [result] = await self.run_jobs([dataset], func, group_size=1)
        return result

    async def run_jobs(
        self,
        datasets: Sequence[Dataset],
        func: JobFunc | Sequence[JobFunc] | None = None,
        *,
        group_size: GroupSize = 1,
    ) -> list[list[Any]]:
        """Run one job per dataset, ``group_size`` micro-batches per group.

        ``group_size="auto"``: each group's size comes from the context's tuner (see
        ``TunerConfig``), which learns from every group it ran, in this call and earlier
        ones. Returns one list of per-partition results per dataset, in order. Raises
        ``JobFailed`` if any micro-batch fails; no partial results are returned.
        """
        return [r async for r in self.iter_jobs(datasets, func, group_size=group_size)]

    async def iter_jobs(
        self,
        datasets: Sequence[Dataset],
        func: JobFunc | Sequence[JobFunc] | None = None,
        *,
        group_size: GroupSize = 1,
    ) -> AsyncIterator[list[Any]]:
        """Yield each micro-batch's results, in order, as soon as that micro-batch is done.

        ``group_size="auto"``: as in ``run_jobs``; a loop that calls this repeatedly
        keeps the group size learned so far.
        """
        auto = group_size == "auto"
        requests = self._requests(datasets, func, group_size)
        cluster = self.cluster
        driver = cluster.driver
        assert driver is not None
        collector = self._collector
        start = 0
        while start < len(requests):
            size = self.tuner.group_size if auto else group_size
            assert isinstance(size, int)
            totals = collector.group_started(cluster)
            began = driver.node.clock()
            run = driver.submit_group(requests[start : start + size])
            batches = await run.launched
            last = batches[-1]
            for batch in batches:
                result = await run.results[batch]
                if batch == last:  # the group is complete: measure it before yielding
                    wall = driver.node.clock() - began
                    collector.group_finished(cluster, run, size, wall, totals, auto)
                yield result
            start += len(batches)

    def _requests(
        self,
        datasets: Sequence[Dataset],
        func: JobFunc | Sequence[JobFunc] | None,
        group_size: GroupSize,
    ) -> list[BatchRequest]:
        if group_size != "auto" and (type(group_size) is not int or group_size <= 0):
            raise ValueError(f"group_size must be a positive int or 'auto', got {group_size!r}")
        if isinstance(datasets, Dataset):  # type: ignore[unreachable]
            raise TypeError("run_jobs takes a list of datasets; use run_job for one")
        datasets = list(datasets)
        if func is None:
            funcs: list[JobFunc] = [collect_partition] * len(datasets)
        elif callable(func):
            funcs = [func] * len(datasets)
        elif isinstance(func, Sequence):
            funcs = list(func)
        else:
            raise TypeError(
                f"func is not callable nor a list of callables: got {type(func).__name__}"
            )
        if len(funcs) != len(datasets):
            raise ValueError(f"{len(funcs)} functions for {len(datasets)} datasets")
        for i, (ds, fn) in enumerate(zip(datasets, funcs, strict=True)):
            if not isinstance(ds, Dataset):
                raise TypeError(f"datasets[{i}] is a {type(ds).__name__}, not a Dataset")
            if ds.ctx is not self:
                raise ValueError(f"datasets[{i}] belongs to another context")
            if not callable(fn):
                raise TypeError(f"func for datasets[{i}] is not callable")
        return [
            BatchRequest(i, ds, fn) for i, (ds, fn) in enumerate(zip(datasets, funcs, strict=True))
        ]
