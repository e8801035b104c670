"""From datasets to stages: the immutable plan of a group of micro-batches.

``plan_batch`` cuts one micro-batch's lineage into stages at shuffles, and stops at
cached datasets whose partitions all exist already or are produced earlier in the same
group, so a chain of stateful micro-batches plans in constant time however long it
grows. Each stage's pipeline is pickled once into a content-addressed payload.
``shape`` gives what must match across the micro-batches of one group.
Pure: no I/O, no actors, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from drizzle import serde
from drizzle.dataset import (
    CoGroupedDataset,
    Dataset,
    MappedDataset,
    ParallelizedDataset,
    ShuffledDataset,
    UnionDataset,
    ZippedDataset,
)
from drizzle.errors import DrizzleError
from drizzle.pipeline import (
    CacheRead,
    CacheWrite,
    CoGroup,
    MapPartitions,
    Node,
    ResultSink,
    ShuffleRead,
    ShuffleWrite,
    Source,
    StagePipeline,
    TaskDeps,
    Union,
    Zip,
    task_deps,
)

BlockId = tuple[int, int]
"""(dataset id, partition) of a cached partition."""


@dataclass(frozen=True)
class StagePlan:
    """One stage of one micro-batch."""

    stage_id: int
    batch: int
    position: int
    """Index of the stage in its micro-batch, parents before children."""
    num_partitions: int
    payload: str
    """Digest of the pickled ``StagePipeline``."""
    shuffle_id: int | None
    """The shuffle this stage writes; ``None`` for the result stage."""
    num_reducers: int
    parent_positions: tuple[int, ...]
    pipeline: StagePipeline

    @cached_property
    def tasks(self) -> tuple[TaskDeps, ...]:
        """What the task of each partition reads and writes (computed when first asked:
        a micro-batch stamped from the group's first one never needs it)."""
        return tuple(task_deps(self.pipeline, p) for p in range(self.num_partitions))

    @property
    def is_result(self) -> bool:
        return self.shuffle_id is None


@dataclass(frozen=True)
class BatchPlan:
    batch: int
    stages: tuple[StagePlan, ...]

    @property
    def shape(self) -> tuple[tuple[bool, int, tuple[int, ...]], ...]:
        """What must be equal across the micro-batches of a group."""
        return tuple((s.is_result, s.num_partitions, s.parent_positions) for s in self.stages)


MAX_UNCACHED_DEPTH = 200
_TOO_DEEP = (
    f"lineage deeper than {MAX_UNCACHED_DEPTH} uncached steps in one stage; "
    "cache() an intermediate dataset"
)


class PlanError(DrizzleError):
    """A dataset graph that cannot be planned (for example, too deep without a cache)."""


@dataclass
class IdAllocator:
    next_stage: int = 0
    next_shuffle: int = 0

    def stage(self) -> int:
        self.next_stage += 1
        return self.next_stage - 1

    def shuffle(self) -> int:
        self.next_shuffle += 1
        return self.next_shuffle - 1


class _BatchPlanner:
    def __init__(
        self,
        batch: int,
        ids: IdAllocator,
        available: Callable[[int, int], bool],
        payloads: dict[str, bytes],
        blobs: dict[str, bytes],
    ) -> None:
        self.batch = batch
        self.ids = ids
        self.available = available
        self.payloads = payloads
        self.blobs = blobs
        self.stages: list[StagePlan] = []
        self.map_stage_of: dict[tuple[int, int, int], tuple[int, int]] = {}
        """(parent dataset id, reducers, combiner id) → (stage position, shuffle id):
        a self-join shares one map stage; different shuffles of one parent do not."""
        self.depth = 0

    def result_stage(self, ds: Dataset, fn: Callable[[Iterator[Any]], Any]) -> None:
        parents: list[int] = []
        root = self._node(ds, parents)
        self._add_stage(StagePipeline(root, ResultSink(fn)), ds.num_partitions, None, 0, parents)

    def _map_stage(self, ds: Dataset, num_reducers: int, combiner: Any) -> tuple[int, int]:
        memo = (ds.id, num_reducers, id(combiner))
        known = self.map_stage_of.get(memo)
        if known is not None:
            return known
        parents: list[int] = []
        root = self._node(ds, parents)
        shuffle_id = self.ids.shuffle()
        sink = ShuffleWrite(shuffle_id, num_reducers, combiner)
        position = self._add_stage(
            StagePipeline(root, sink), ds.num_partitions, shuffle_id, num_reducers, parents
        )
        self.map_stage_of[memo] = (position, shuffle_id)
        return position, shuffle_id

    def _add_stage(
        self,
        pipeline: StagePipeline,
        num_partitions: int,
        shuffle_id: int | None,
        num_reducers: int,
        parents: list[int],
    ) -> int:
        try:
            data = serde.dumps(pipeline)
        except RecursionError:
            raise PlanError(_TOO_DEEP) from None
        digest = serde.digest(data)
        self.payloads.setdefault(digest, data)
        position = len(self.stages)
        self.stages.append(
            StagePlan(
                stage_id=self.ids.stage(),
                batch=self.batch,
                position=position,
                num_partitions=num_partitions,
                payload=digest,
                shuffle_id=shuffle_id,
                num_reducers=num_reducers,
                parent_positions=tuple(sorted(set(parents))),
                pipeline=pipeline,
            )
        )
        return position

    def _is_boundary(self, ds: Dataset) -> bool:
        return ds.is_cached and all(self.available(ds.id, p) for p in range(ds.num_partitions))

    def _node(self, ds: Dataset, parents: list[int]) -> Node:
        if self._is_boundary(ds):
            return CacheRead(ds.id)
        self.depth += 1
        if self.depth > MAX_UNCACHED_DEPTH:
            raise PlanError(f"dataset {ds.id}: {_TOO_DEEP}")
        try:
            node = self._build(ds, parents)
        finally:
            self.depth -= 1
        return CacheWrite(ds.id, node) if ds.is_cached else node

    def _build(self, ds: Dataset, parents: list[int]) -> Node:
        if isinstance(ds, ParallelizedDataset):
            self.blobs.update(ds.blobs)
            return Source(ds.digests)
        if isinstance(ds, MappedDataset):
            return MapPartitions(self._node(ds.parent, parents), ds.fn)
        if isinstance(ds, UnionDataset):
            nodes = tuple(self._node(p, parents) for p in ds.parents)
            return Union(nodes, tuple(p.num_partitions for p in ds.parents))
        if isinstance(ds, ZippedDataset):
            return Zip(tuple(self._node(p, parents) for p in ds.parents), ds.fn)
        if isinstance(ds, ShuffledDataset):
            combiner = ds.aggregator
            position, shuffle_id = self._map_stage(ds.parent, ds.num_partitions, combiner)
            parents.append(position)
            return ShuffleRead(shuffle_id, ds.parent.num_partitions, combiner, ds.group)
        if isinstance(ds, CoGroupedDataset):
            reads = []
            for parent in ds.parents:
                position, shuffle_id = self._map_stage(parent, ds.num_partitions, None)
                parents.append(position)
                reads.append(ShuffleRead(shuffle_id, parent.num_partitions, None, False))
            return CoGroup(tuple(reads))
        raise TypeError(f"cannot plan {type(ds).__name__}")


def plan_batch(
    batch: int,
    dataset: Dataset,
    fn: Callable[[Iterator[Any]], Any],
    ids: IdAllocator,
    available: Callable[[int, int], bool],
    payloads: dict[str, bytes],
    blobs: dict[str, bytes],
) -> BatchPlan:
    """Plan one micro-batch.

    ``available(dataset_id, partition)`` tells whether a cached partition exists or is
    produced by an earlier micro-batch of the group; such datasets are read, not
    recomputed. New payloads and data blobs are added to ``payloads`` and ``blobs``.
    """
    planner = _BatchPlanner(batch, ids, available, payloads, blobs)
    planner.result_stage(dataset, fn)
    return BatchPlan(batch, tuple(planner.stages))


def produced_blocks(plan: BatchPlan) -> Iterator[tuple[BlockId, int, int]]:
    """Every cached partition the micro-batch writes, with its (stage position, partition)."""
    for stage in plan.stages:
        for partition, deps in enumerate(stage.tasks):
            for block in deps.cache_writes:
                yield block, stage.position, partition


def blocks_available(
    materialized: Mapping[BlockId, Any], produced: Mapping[BlockId, Any]
) -> Callable[[int, int], bool]:
    def available(dataset_id: int, partition: int) -> bool:
        key = (dataset_id, partition)
        return key in materialized or key in produced

    return available
