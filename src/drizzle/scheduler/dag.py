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
from drizzle.plan import (
    BatchPlan,
    BlockId,
    IdAllocator,
    blocks_available,
    plan_batch,
    produced_blocks,
)

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
        for request in requests:
            saved = (self.ids.next_stage, self.ids.next_shuffle)
            plan = plan_batch(
                request.batch, request.dataset, request.fn, self.ids, available, payloads, blobs
            )
            if batches and plan.shape != batches[0].shape:
                self.ids.next_stage, self.ids.next_shuffle = saved
                break
            batches.append(plan)
            for block, position, partition in produced_blocks(plan):
                produced.setdefault(block, (position, partition))
        reads = {
            block
            for b in batches
            for s in b.stages
            for t in s.tasks
            for block in t.cache_reads
            if block in self.materialized
        }
        return GroupPlan(
            group_id,
            tuple(batches),
            payloads,
            blobs,
            {block: self.materialized[block] for block in reads},
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
