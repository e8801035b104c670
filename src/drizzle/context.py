"""The user's entry point: a ``Context`` owns a cluster and runs jobs on it.

``run_job`` runs one dataset; ``run_jobs`` runs a list of micro-batches in groups of
``group_size`` (one plan and one launch message per executor per group) and returns
every micro-batch's result in order; ``iter_jobs`` yields each micro-batch's result as
soon as it completes.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from drizzle.cluster import Cluster, ClusterOptions
from drizzle.dataset import Dataset, ParallelizedDataset, collect_partition
from drizzle.errors import DrizzleError
from drizzle.master import parse_master
from drizzle.scheduler.dag import BatchRequest

JobFunc = Callable[[Iterator[Any]], Any]


class Context:
    """A connection to a Drizzle cluster.

    Args:
        master: ``local[N]`` (N in-process executors), ``local-cluster[N,cores]`` (N
            executor processes on this machine), or ``tcp://host:port`` (listen for
            executors started with ``python -m drizzle.node executor``).
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
            authentication.
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
        )
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

    async def close(self) -> None:
        if self._cluster is not None and not self._closed:
            self._closed = True
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
        group_size: int = 1,
    ) -> list[list[Any]]:
        """Run one job per dataset, ``group_size`` micro-batches per group.

        Returns one list of per-partition results per dataset, in order. Raises
        ``JobFailed`` if any micro-batch fails; no partial results are returned.
        """
        return [r async for r in self.iter_jobs(datasets, func, group_size=group_size)]

    async def iter_jobs(
        self,
        datasets: Sequence[Dataset],
        func: JobFunc | Sequence[JobFunc] | None = None,
        *,
        group_size: int = 1,
    ) -> AsyncIterator[list[Any]]:
        """Yield each micro-batch's results, in order, as soon as that micro-batch is done."""
        requests = self._requests(datasets, func, group_size)
        driver = self.cluster.driver
        assert driver is not None
        start = 0
        while start < len(requests):
            run = driver.submit_group(requests[start : start + group_size])
            batches = await run.launched
            for batch in batches:
                yield await run.results[batch]
            start += len(batches)

    def _requests(
        self,
        datasets: Sequence[Dataset],
        func: JobFunc | Sequence[JobFunc] | None,
        group_size: int,
    ) -> list[BatchRequest]:
        if type(group_size) is not int or group_size <= 0:
            raise ValueError(f"group_size must be a positive int, got {group_size!r}")
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
