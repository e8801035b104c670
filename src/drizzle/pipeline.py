"""What a task computes: a stage's narrow pipeline, shipped pickled to executors.

A stage pipeline is a small tree of frozen nodes (sources, narrow transformations,
shuffle reads, cache reads and writes) topped by a sink (a shuffle write or a result
function). The DAG scheduler builds it; the executor runs ``run_task`` on a worker
thread with a ``TaskEnv`` holding everything the task needs already in memory (fetched
shuffle blocks, cached partitions, data blobs). Nodes also report, per partition, what
a task depends on and produces, so the planner and the executor agree by construction.
Depends on ``drizzle.serde`` and ``drizzle.partitioning`` only.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from drizzle import serde
from drizzle.partitioning import partition_of


class TaskEnv(Protocol):
    """What a running task may read and write on its executor."""

    def blob(self, digest: str) -> bytes: ...

    def shuffle_blocks(self, shuffle_id: int, partition: int) -> list[bytes]: ...

    def cached(self, dataset_id: int, partition: int) -> list[Any] | None: ...

    def store_cached(self, dataset_id: int, partition: int, data: list[Any]) -> None: ...


@dataclass
class TaskDeps:
    """Per-task inputs and outputs, gathered by walking a pipeline for one partition."""

    shuffle_reads: list[tuple[int, int, int]] = field(default_factory=list)
    """(shuffle id, number of maps, reduce partition)."""
    cache_reads: list[tuple[int, int]] = field(default_factory=list)
    """(dataset id, partition) read at a cache boundary."""
    cache_writes: list[tuple[int, int]] = field(default_factory=list)
    blobs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Aggregator:
    """How values of one key combine; map-side combining uses all three."""

    create: Callable[[Any], Any]
    merge_value: Callable[[Any, Any], Any]
    merge_combiners: Callable[[Any, Any], Any]


class Node(abc.ABC):
    @abc.abstractmethod
    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]: ...

    @abc.abstractmethod
    def deps(self, partition: int, acc: TaskDeps) -> None: ...


@dataclass(frozen=True)
class Source(Node):
    """Partitions of user data; partition ``p`` is the pickled blob ``digests[p]``."""

    digests: tuple[str, ...]

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        return iter(serde.loads(env.blob(self.digests[partition])))

    def deps(self, partition: int, acc: TaskDeps) -> None:
        acc.blobs.append(self.digests[partition])


@dataclass(frozen=True)
class MapPartitions(Node):
    """``fn(partition_index, iterator) -> iterable`` over the parent's partition."""

    parent: Node
    fn: Callable[[int, Iterator[Any]], Iterable[Any]]

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        return iter(self.fn(partition, self.parent.compute(partition, env)))

    def deps(self, partition: int, acc: TaskDeps) -> None:
        self.parent.deps(partition, acc)


@dataclass(frozen=True)
class Union(Node):
    """Partitions of every parent, one after the other."""

    parents: tuple[Node, ...]
    counts: tuple[int, ...]

    def _locate(self, partition: int) -> tuple[Node, int]:
        for parent, count in zip(self.parents, self.counts, strict=True):
            if partition < count:
                return parent, partition
            partition -= count
        raise IndexError(partition)

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        parent, index = self._locate(partition)
        return parent.compute(index, env)

    def deps(self, partition: int, acc: TaskDeps) -> None:
        parent, index = self._locate(partition)
        parent.deps(index, acc)


@dataclass(frozen=True)
class Zip(Node):
    """``fn(partition_index, *iterators)`` over the same partition of every parent."""

    parents: tuple[Node, ...]
    fn: Callable[..., Iterable[Any]]

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        return iter(self.fn(partition, *(p.compute(partition, env) for p in self.parents)))

    def deps(self, partition: int, acc: TaskDeps) -> None:
        for parent in self.parents:
            parent.deps(partition, acc)


@dataclass(frozen=True)
class ShuffleRead(Node):
    """Reduce partition ``p`` of a shuffle: merged by key when an aggregator is given,
    grouped into lists when ``group`` is set, else the raw records."""

    shuffle_id: int
    num_maps: int
    aggregator: Aggregator | None
    group: bool

    def records(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        blocks = env.shuffle_blocks(self.shuffle_id, partition)
        return itertools.chain.from_iterable(serde.loads(b) for b in blocks)

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        records = self.records(partition, env)
        if self.aggregator is not None:
            merge = self.aggregator.merge_combiners
            merged: dict[Any, Any] = {}
            for key, value in records:
                merged[key] = merge(merged[key], value) if key in merged else value
            return iter(merged.items())
        if self.group:
            grouped: dict[Any, list[Any]] = {}
            for key, value in records:
                grouped.setdefault(key, []).append(value)
            return iter(grouped.items())
        return records

    def deps(self, partition: int, acc: TaskDeps) -> None:
        acc.shuffle_reads.append((self.shuffle_id, self.num_maps, partition))


@dataclass(frozen=True)
class CoGroup(Node):
    """``(key, (values of parent 0, values of parent 1, ...))`` over several shuffles."""

    reads: tuple[ShuffleRead, ...]

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        width = len(self.reads)
        groups: dict[Any, tuple[list[Any], ...]] = {}
        for i, read in enumerate(self.reads):
            for key, value in read.records(partition, env):
                slot = groups.get(key)
                if slot is None:
                    slot = groups[key] = tuple([] for _ in range(width))
                slot[i].append(value)
        return iter(groups.items())

    def deps(self, partition: int, acc: TaskDeps) -> None:
        for read in self.reads:
            read.deps(partition, acc)


@dataclass(frozen=True)
class CacheRead(Node):
    """A cached partition that already exists (or is produced earlier in the group)."""

    dataset_id: int

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        data = env.cached(self.dataset_id, partition)
        if data is None:
            raise LookupError(f"cached partition {partition} of dataset {self.dataset_id} missing")
        return iter(data)

    def deps(self, partition: int, acc: TaskDeps) -> None:
        acc.cache_reads.append((self.dataset_id, partition))


@dataclass(frozen=True)
class CacheWrite(Node):
    """Compute the child, keep the partition in the executor's store, pass it on."""

    dataset_id: int
    child: Node

    def compute(self, partition: int, env: TaskEnv) -> Iterator[Any]:
        existing = env.cached(self.dataset_id, partition)
        if existing is not None:
            return iter(existing)
        data = list(self.child.compute(partition, env))
        env.store_cached(self.dataset_id, partition, data)
        return iter(data)

    def deps(self, partition: int, acc: TaskDeps) -> None:
        acc.cache_writes.append((self.dataset_id, partition))
        self.child.deps(partition, acc)


# ----------------------------------------------------------------------------- sinks


@dataclass(frozen=True)
class ShuffleWrite:
    """Partition the records by key into one pickled block per reducer."""

    shuffle_id: int
    num_reducers: int
    combiner: Aggregator | None

    def write(self, records: Iterator[Any]) -> list[bytes]:
        n = self.num_reducers
        if self.combiner is not None:
            # Combine first, then hash each distinct key once.
            create, merge = self.combiner.create, self.combiner.merge_value
            combined: dict[Any, Any] = {}
            for key, value in records:
                combined[key] = merge(combined[key], value) if key in combined else create(value)
            per_reducer: list[list[Any]] = [[] for _ in range(n)]
            for item in combined.items():
                per_reducer[partition_of(item[0], n)].append(item)
            return [serde.dumps_data(b) for b in per_reducer]
        buckets: list[list[Any]] = [[] for _ in range(n)]
        for record in records:
            buckets[partition_of(record[0], n)].append(record)
        return [serde.dumps_data(b) for b in buckets]


@dataclass(frozen=True)
class ResultSink:
    """Apply the job function to the partition's iterator."""

    fn: Callable[[Iterator[Any]], Any]


@dataclass(frozen=True)
class StagePipeline:
    """Everything an executor needs to run any partition of one stage of one micro-batch."""

    root: Node
    sink: ShuffleWrite | ResultSink


def run_task(pipeline: StagePipeline, partition: int, env: TaskEnv) -> list[bytes] | bytes:
    """Run one task: shuffle blocks for a map task, the pickled result for a result task."""
    records = pipeline.root.compute(partition, env)
    sink = pipeline.sink
    if isinstance(sink, ShuffleWrite):
        return sink.write(records)
    return serde.dumps_data(sink.fn(records))


def task_deps(pipeline: StagePipeline, partition: int) -> TaskDeps:
    acc = TaskDeps()
    pipeline.root.deps(partition, acc)
    return acc
