"""Events between the driver-side actors, which share the driver's process.

These carry Python objects (datasets, plans) and are posted on the driver's node
only, so they are not wire messages and are never encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drizzle.plan import BlockId
from drizzle.scheduler.dag import BatchRequest, GroupPlan
from drizzle.wire.messages import MapLocation


@dataclass(frozen=True, slots=True)
class PlanGroup:
    group_id: int
    requests: Sequence[BatchRequest]


@dataclass(frozen=True, slots=True)
class PlaceGroup:
    plan: GroupPlan


@dataclass(frozen=True, slots=True)
class GroupLaunched:
    group_id: int
    batches: tuple[int, ...]
    result_tasks: dict[int, int]
    participants: frozenset[str]
    shuffle_ids: tuple[int, ...]
    num_tasks: int
    launch_messages: int


@dataclass(frozen=True, slots=True)
class GroupPlaced:
    group_id: int
    produced: dict[BlockId, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class GroupNotLaunched:
    group_id: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class GroupCompleted:
    group_id: int
    participants: frozenset[str]
    shuffle_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class GroupAborted:
    group_id: int
    participants: frozenset[str]
    reason: str


@dataclass(frozen=True, slots=True)
class ExecutorJoined:
    executor_id: str
    cores: int


@dataclass(frozen=True, slots=True)
class ExecutorLost:
    executor_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class RetryTask:
    """A failed attempt of one task, to run again on another executor where possible."""

    task_id: int
    attempt: int
    """Attempts made so far."""
    executor_id: str
    """Where the failed attempt ran."""
    map_outputs: tuple[MapLocation, ...]
    """The task's shuffle inputs announced to that executor."""


@dataclass(frozen=True, slots=True)
class RecoverGroup:
    """Driver → tracker: a running group lost executors, or a task of it needs another
    attempt (``retry``); these results are in."""

    group_id: int
    lost: frozenset[str]
    delivered: frozenset[tuple[int, int]]
    retry: RetryTask | None = None


@dataclass(frozen=True, slots=True)
class RecoverWithOutputs:
    """Tracker → group scheduler: the recovery request with what survives."""

    group_id: int
    lost: frozenset[str]
    delivered: frozenset[tuple[int, int]]
    map_outputs: dict[int, dict[int, str]]
    blocks: dict[tuple[int, int], set[str]]
    retry: RetryTask | None = None


@dataclass(frozen=True, slots=True)
class GroupRecovered:
    group_id: int
    participants: frozenset[str]
    recomputed_maps: int
    relaunched_tasks: int
    retried_task: bool = False
    """A task's new attempt, not the recovery from a loss."""


@dataclass(frozen=True, slots=True)
class GroupNotRecovered:
    group_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ExecutorLeft:
    """An executor left gracefully at a group boundary (nothing to recover)."""

    executor_id: str


@dataclass(frozen=True, slots=True)
class BlocksMoved:
    """Recovery re-ran the writers of these cached partitions elsewhere."""

    group_id: int
    moved: dict[BlockId, tuple[str, ...]]
