"""When a later micro-batch of a group is the first one renamed.

Two micro-batches whose stage pipelines have the same skeleton (the same nodes in the
same order, the same partition counts and data blobs; functions aside) have the same
tasks up to names: stage ids and shuffle ids, allocated in the same order, differ by
a constant; cached datasets map one to one. ``renaming`` finds that correspondence, so
that the group's first micro-batch is planned and placed task by task and every later
one costs a few operations per stage, here and on the wire (``BatchRepeat``).
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from drizzle.pipeline import (
    CacheRead,
    CacheWrite,
    CoGroup,
    MapPartitions,
    Node,
    ShuffleRead,
    ShuffleWrite,
    Source,
    StagePipeline,
    TaskDeps,
    Union,
    Zip,
)
from drizzle.plan import BatchPlan, BlockId


@dataclass(frozen=True)
class Renaming:
    """How to turn the tasks of a group's first micro-batch into a later one's."""

    stage_offset: int
    shuffle_offset: int
    datasets: dict[int, int]
    """Cached datasets renamed (the others keep their id)."""
    payloads: tuple[str, ...]
    """The later micro-batch's pipeline digest of each stage, by position."""

    def deps(self, deps: TaskDeps) -> TaskDeps:
        """A first-micro-batch task's inputs and outputs, renamed."""
        off, names = self.shuffle_offset, self.datasets
        return TaskDeps(
            shuffle_reads=[(s + off, n, p) for s, n, p in deps.shuffle_reads],
            cache_reads=[(names.get(d, d), p) for d, p in deps.cache_reads],
            cache_writes=[(names.get(d, d), p) for d, p in deps.cache_writes],
            blobs=deps.blobs,
        )

    def block(self, block: BlockId) -> BlockId:
        return (self.datasets.get(block[0], block[0]), block[1])


@dataclass
class _Skeleton:
    shape: list[object]
    shuffles: list[int]
    datasets: list[int]


def renaming(base: BatchPlan, later: BatchPlan) -> Renaming | None:
    """How ``later`` renames ``base``, or ``None`` if it is not a renaming of it."""
    if later.shape != base.shape or not base.stages:
        return None
    first, second = _Skeleton([], [], []), _Skeleton([], [], [])
    for a, b in zip(base.stages, later.stages, strict=True):
        if a.num_reducers != b.num_reducers or (a.shuffle_id is None) != (b.shuffle_id is None):
            return None
        if not (_walk_stage(a.pipeline, first) and _walk_stage(b.pipeline, second)):
            return None
    if first.shape != second.shape:
        return None
    stage_offset = later.stages[0].stage_id - base.stages[0].stage_id
    pairs = zip(base.stages, later.stages, strict=True)
    if any(b.stage_id - a.stage_id != stage_offset for a, b in pairs):
        return None
    shuffle_offset = second.shuffles[0] - first.shuffles[0] if first.shuffles else 0
    moved = zip(first.shuffles, second.shuffles, strict=True)
    if any(new - old != shuffle_offset for old, new in moved):
        return None
    datasets: dict[int, int] = {}
    for old, new in zip(first.datasets, second.datasets, strict=True):
        if datasets.setdefault(old, new) != new:
            return None
    if len(set(datasets.values())) != len(datasets):
        return None
    return Renaming(
        stage_offset,
        shuffle_offset,
        {a: b for a, b in datasets.items() if a != b},
        tuple(s.payload for s in later.stages),
    )


def _walk_stage(pipeline: StagePipeline, into: _Skeleton) -> bool:
    sink = pipeline.sink
    if isinstance(sink, ShuffleWrite):
        into.shape.append(("shuffle-write", sink.num_reducers))
        into.shuffles.append(sink.shuffle_id)
    else:
        into.shape.append("result")
    return _walk(pipeline.root, into)


def _walk(node: Node, into: _Skeleton) -> bool:
    """Append ``node``'s skeleton; False for a node this module does not know."""
    if isinstance(node, Source):
        into.shape.append(("source", node.digests))
        return True
    if isinstance(node, MapPartitions):
        into.shape.append("map")
        return _walk(node.parent, into)
    if isinstance(node, Union):
        into.shape.append(("union", node.counts))
        return all(_walk(p, into) for p in node.parents)
    if isinstance(node, Zip):
        into.shape.append(("zip", len(node.parents)))
        return all(_walk(p, into) for p in node.parents)
    if isinstance(node, ShuffleRead):
        into.shape.append(("shuffle-read", node.num_maps))
        into.shuffles.append(node.shuffle_id)
        return True
    if isinstance(node, CoGroup):
        into.shape.append(("cogroup", len(node.reads)))
        return all(_walk(r, into) for r in node.reads)
    if isinstance(node, CacheRead):
        into.shape.append("cache-read")
        into.datasets.append(node.dataset_id)
        return True
    if isinstance(node, CacheWrite):
        into.shape.append("cache-write")
        into.datasets.append(node.dataset_id)
        return _walk(node.child, into)
    return False
