"""The DAG scheduler's state: plans groups of micro-batches and knows what is cached.

``plan_group`` plans micro-batches one after another; a cached partition written by
an earlier micro-batch of the group counts as available to the later ones, so
stateful chains plan in constant time. If a micro-batch's stage shape differs from
the first one's, the group ends before it (the caller runs the rest as the next
group): the documented fallback to smaller groups. Cached partitions become
*materialized* when their group completes, at the executor the group scheduler put
their task on, and are forgotten when that executor is lost.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from drizzle.dataset import Dataset
from drizzle.pipeline import TaskDeps
from drizzle.plan import (
    BatchPlan,
    BlockId,
    IdAllocator,
    blocks_available,
    plan_batch,
    produced_blocks,
)
from drizzle.scheduler.renaming import Renaming, renaming

JobFunc = Callable[[Iterator[Any]], Any]


@dataclass(frozen=True)
class BatchRequest:
    batch: int
    dataset: Dataset
    fn: JobFunc


@dataclass(frozen=True)
class GroupPlan:
    """An immutable plan: the micro-batches of one group and what they need."""

    group_id: int
    batches: tuple[BatchPlan, ...]
    payloads: dict[str, bytes]
    blobs: dict[str, bytes]
    materialized: dict[BlockId, tuple[str, ...]]
    """Locations (copies) of the cached partitions the plan reads from earlier groups."""
    renamings: tuple[Renaming | None, ...] = ()
    """For each micro-batch after the first, how it renames the first, if it does."""

    @property
    def repeats(self) -> tuple[Renaming, ...] | None:
        """How every later micro-batch renames the first, or ``None`` if one does not."""
        if any(r is None for r in self.renamings):
            return None
        return tuple(r for r in self.renamings if r is not None)

    def stage_tasks(self, index: int, position: int) -> tuple[TaskDeps, ...]:
        """The tasks of a stage of the ``index``-th micro-batch."""
        rename = self.renamings[index - 1] if index else None
        base = self.batches[0 if rename else index].stages[position].tasks
        if rename is None:
            return base
        return tuple(rename.deps(t) for t in base)

    @property
    def shuffle_ids(self) -> tuple[int, ...]:
        return tuple(
            s.shuffle_id for b in self.batches for s in b.stages if s.shuffle_id is not None
        )


@dataclass
class DagState:
    ids: IdAllocator = field(default_factory=IdAllocator)
    materialized: dict[BlockId, tuple[str, ...]] = field(default_factory=dict)
    """Cached partitions that exist, with the executors holding a copy."""
    pending: dict[int, dict[BlockId, tuple[str, ...]]] = field(default_factory=dict)
    """Group id → cached partitions its tasks will write, with their executors."""

    def plan_group(self, group_id: int, requests: Sequence[BatchRequest]) -> GroupPlan:
        """Plan as many of ``requests`` as share the first one's shape (at least one)."""
        if not requests:
            raise ValueError("a group needs at least one micro-batch")
        produced: dict[BlockId, tuple[int, int]] = {}
        available = blocks_available(self.materialized, produced)
        payloads: dict[str, bytes] = {}
        blobs: dict[str, bytes] = {}
        batches: list[BatchPlan] = []
        renamings: list[Renaming | None] = []
        first_writes: list[tuple[BlockId, int, int]] = []
        first_reads: list[BlockId] = []
        reads: set[BlockId] = set()
        for request in requests:
            saved = (self.ids.next_stage, self.ids.next_shuffle)
            plan = plan_batch(
                request.batch, request.dataset, request.fn, self.ids, available, payloads, blobs
            )
            if batches and plan.shape != batches[0].shape:
                self.ids.next_stage, self.ids.next_shuffle = saved
                break
            rename = renaming(batches[0], plan) if batches else None
            if rename is None:
                writes = list(produced_blocks(plan))
                batch_reads = [b for s in plan.stages for t in s.tasks for b in t.cache_reads]
                if not batches:
                    first_writes, first_reads = writes, batch_reads
            else:
                writes = [(rename.block(b), pos, p) for b, pos, p in first_writes]
                batch_reads = [rename.block(b) for b in first_reads] if rename.datasets else []
            if batches:
                renamings.append(rename)
            batches.append(plan)
            for block, position, partition in writes:
                produced.setdefault(block, (position, partition))
            reads.update(b for b in batch_reads if b in self.materialized)
        return GroupPlan(
            group_id,
            tuple(batches),
            payloads,
            blobs,
            {block: self.materialized[block] for block in reads},
            tuple(renamings),
        )

    def group_placed(self, group_id: int, produced: dict[BlockId, tuple[str, ...]]) -> None:
        self.pending[group_id] = produced

    def blocks_moved(self, group_id: int, moved: dict[BlockId, tuple[str, ...]]) -> None:
        """A recovery re-ran these partitions' writers: they will be where it put them."""
        pending = self.pending.get(group_id)
        if pending is not None:
            pending.update(moved)

    def group_completed(self, group_id: int) -> None:
        self.materialized.update(self.pending.pop(group_id, {}))

    def group_aborted(self, group_id: int) -> None:
        self.pending.pop(group_id, None)

    def executor_lost(self, executor_id: str) -> None:
        for tables in (self.materialized, *self.pending.values()):
            for block, holders in list(tables.items()):
                if executor_id in holders:
                    rest = tuple(e for e in holders if e != executor_id)
                    if rest:
                        tables[block] = rest
                    else:
                        del tables[block]

    def datasets_released(self, dataset_ids: set[int]) -> None:
        for block in [b for b in self.materialized if b[0] in dataset_ids]:
            del self.materialized[block]
