"""Every message that crosses a process boundary, one frozen dataclass each.

Events are facts in the past tense (``MapOutputReady``); commands are imperative
(``LaunchGroup``). Each carries the ids that explain it (group, micro-batch, stage,
partition, attempt). Type ids are stable: never reuse a retired one. Depends only on
``drizzle.wire.schema`` and ``drizzle.ids``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drizzle.wire.schema import message, record

PROTOCOL_VERSION = 2

# ---------------------------------------------------------------------------- records


@record
@dataclass(frozen=True, slots=True)
class ShuffleInput:
    """A task reads reduce partition ``partition`` of ``shuffle_id`` (``num_maps`` map outputs)."""

    shuffle_id: int
    num_maps: int
    partition: int


@record
@dataclass(frozen=True, slots=True)
class BlockInput:
    """A task reads a cached partition.

    ``location`` is the executor holding it when already materialised; ``""`` means it
    is produced earlier in the same group and the task waits for its notice.
    """

    dataset_id: int
    partition: int
    location: str


@record
@dataclass(frozen=True, slots=True)
class ShuffleOutput:
    """A map task writes ``num_reducers`` blocks of ``shuffle_id``, then tells ``notify``:
    every executor that holds a task reading this shuffle (itself included, if so)."""

    shuffle_id: int
    num_reducers: int
    notify: tuple[str, ...]
    notify_partitions: tuple[tuple[int, ...], ...] = ()
    """For each executor of ``notify``, the reduce partitions its tasks read; blocks of
    those partitions small enough travel inside the notice."""


@record
@dataclass(frozen=True, slots=True)
class BlockOutput:
    """A task caches a partition and tells ``notify`` (remote consumers) once it is stored."""

    dataset_id: int
    partition: int
    notify: tuple[str, ...]
    replicas: tuple[str, ...] = ()
    """Executors that keep a copy, so that losing this one does not lose the partition."""


@record
@dataclass(frozen=True, slots=True)
class TaskSpec:
    """One task of a group: a (micro-batch, stage, partition) to run on one executor.

    ``payload`` is the content hash of the pickled stage pipeline; ``blobs`` the hashes
    of the data blobs it needs. Inputs name what the task waits for; outputs name whom
    it notifies. A task with no inputs to wait for is runnable on arrival.
    """

    task_id: int
    batch: int
    stage_id: int
    partition: int
    attempt: int
    payload: str
    blobs: tuple[str, ...]
    shuffle_inputs: tuple[ShuffleInput, ...]
    block_inputs: tuple[BlockInput, ...]
    shuffle_output: ShuffleOutput | None
    block_outputs: tuple[BlockOutput, ...]
    is_result: bool


@record
@dataclass(frozen=True, slots=True)
class BatchRepeat:
    """A later micro-batch of a launch that runs the same tasks as its first one, renamed.

    Task ``t`` of the first micro-batch becomes task ``t.task_id + task_offset`` of
    micro-batch ``batch``: stage ids and shuffle ids move by their offsets, the stage
    at index ``i`` (its id minus ``base_stage``) runs ``payloads[i]``, and the cached
    datasets ``datasets_from`` become ``datasets_to`` (a renamed cached input is
    produced earlier in the group: its task waits for the notice). Everything else,
    executors to notify included, is the same. The group scheduler sends one only when
    this renaming gives exactly the tasks that planning the micro-batch would give.
    """

    batch: int
    task_offset: int
    stage_offset: int
    shuffle_offset: int
    base_stage: int
    payloads: tuple[str, ...]
    datasets_from: tuple[int, ...] = ()
    datasets_to: tuple[int, ...] = ()


@record
@dataclass(frozen=True, slots=True)
class Blob:
    """Content-addressed bytes: a pickled stage pipeline or a partition of user data."""

    digest: str
    data: bytes


@record
@dataclass(frozen=True, slots=True)
class InlineBlock:
    """A small shuffle block carried by its notice, sparing the reducer a fetch."""

    reduce: int
    data: bytes


@record
@dataclass(frozen=True, slots=True)
class BlockKey:
    """A block in an executor's store: a shuffle block (``reduce >= 0``) or a cached partition.

    For a shuffle block, ``id`` is the shuffle id and ``index`` the map id; for a cached
    partition, ``id`` is the dataset id, ``index`` the partition and ``reduce`` is -1.
    """

    id: int
    index: int
    reduce: int


@record
@dataclass(frozen=True, slots=True)
class ExecutorCounters:
    """Cumulative work of one executor since it started (seconds, counts, bytes)."""

    tasks: int
    failed_tasks: int
    compute_s: float
    deserialize_s: float
    fetch_s: float
    notify_s: float
    queue_wait_s: float
    bytes_fetched: int
    notices_sent: int
    notices_received: int


@record
@dataclass(frozen=True, slots=True)
class MapLocation:
    """Where a map output lives; carried by launches that re-place a reducer."""

    shuffle_id: int
    map_id: int
    executor_id: str


@record
@dataclass(frozen=True, slots=True)
class BlockLocation:
    """Where a cached partition lives; carried by recovery launches."""

    dataset_id: int
    partition: int
    executor_id: str


@record
@dataclass(frozen=True, slots=True)
class Reroute:
    """New readers of a shuffle: map tasks not yet finished notify these instead."""

    shuffle_id: int
    notify: tuple[str, ...]
    notify_partitions: tuple[tuple[int, ...], ...]


# ------------------------------------------------------------------ membership (exec ↔ group)


@message(1)
@dataclass(frozen=True, slots=True)
class RegisterExecutor:
    """An executor asks to join; versions are compared before it is accepted."""

    executor_id: str
    address: str
    cores: int
    protocol_version: int
    drizzle_version: str
    python_version: str
    cloudpickle_version: str


@message(2)
@dataclass(frozen=True, slots=True)
class ExecutorRegistered:
    """The group scheduler accepted the executor; heartbeat settings follow."""

    executor_id: str
    heartbeat_interval: float
    heartbeat_timeout: float


@message(3)
@dataclass(frozen=True, slots=True)
class RegistrationRefused:
    """The executor may not join (for example, a version mismatch)."""

    executor_id: str
    reason: str


@message(4)
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness, with the executor's counters so far."""

    executor_id: str
    seq: int
    counters: ExecutorCounters | None = None


@message(5)
@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    seq: int


@message(7)
@dataclass(frozen=True, slots=True)
class ExecutorLeaving:
    """The executor asks to leave gracefully: no new work; it is told to stop once the
    groups it takes part in are over."""

    executor_id: str
    reason: str


@message(6)
@dataclass(frozen=True, slots=True)
class StopExecutor:
    """The executor should leave the cluster and exit."""

    reason: str


# ---------------------------------------------------------------------- launches (group → exec)


@message(10)
@dataclass(frozen=True, slots=True)
class LaunchGroup:
    """Every task one executor runs in one group, in one message.

    ``blobs`` holds only the payloads this executor has not been sent before;
    ``known_map_outputs`` pre-populates notices already seen (re-placed reducers);
    ``release_shuffles`` lists shuffles of finished groups whose blocks may be freed.
    """

    group_id: int
    tasks: tuple[TaskSpec, ...]
    blobs: tuple[Blob, ...]
    known_map_outputs: tuple[MapLocation, ...]
    release_shuffles: tuple[int, ...]
    lost_executors: tuple[str, ...] = ()
    """Recovery: executors that are gone; what they held is no longer counted."""
    known_blocks: tuple[BlockLocation, ...] = ()
    reroutes: tuple[Reroute, ...] = ()
    repeats: tuple[BatchRepeat, ...] = ()
    """More micro-batches made of ``tasks`` renamed (``drizzle.wire.repeat``)."""


@message(11)
@dataclass(frozen=True, slots=True)
class CancelGroup:
    """Drop every task of the group that has not finished; it will not complete."""

    group_id: int
    reason: str


@message(12)
@dataclass(frozen=True, slots=True)
class ReleaseBlocks:
    """Cached partitions of datasets that no longer exist on the driver may be freed."""

    dataset_ids: tuple[int, ...]


# ------------------------------------------------------------------ data plane (exec ↔ exec)


@message(20)
@dataclass(frozen=True, slots=True)
class MapOutputReady:
    """A map task stored its output; ``sizes[r]`` is the byte size of reducer r's block."""

    group_id: int
    shuffle_id: int
    map_id: int
    executor_id: str
    sizes: tuple[int, ...]
    inline: tuple[InlineBlock, ...] = ()


@record
@dataclass(frozen=True, slots=True)
class MapOutput:
    """One map task's output inside ``MapOutputsReady``."""

    shuffle_id: int
    map_id: int
    sizes: tuple[int, ...]
    inline: tuple[InlineBlock, ...] = ()


@message(26)
@dataclass(frozen=True, slots=True)
class MapOutputsReady:
    """Several map tasks of one micro-batch stored their outputs on ``executor_id``:
    their notices in one message, to the tracker, or to one executor of their readers
    (with the blocks small enough to travel inline). A single one travels as
    ``MapOutputReady``."""

    group_id: int
    executor_id: str
    outputs: tuple[MapOutput, ...]

    @staticmethod
    def gather(notices: list[MapOutputReady]) -> MapOutputReady | MapOutputsReady:
        """Notices of one group from one executor as one message (one alone as itself)."""
        if len(notices) == 1:
            return notices[0]
        first = notices[0]
        outputs = tuple(MapOutput(n.shuffle_id, n.map_id, n.sizes, n.inline) for n in notices)
        return MapOutputsReady(first.group_id, first.executor_id, outputs)

    def notices(self) -> list[MapOutputReady]:
        """The single notices this message carries."""
        return [
            MapOutputReady(
                self.group_id, o.shuffle_id, o.map_id, self.executor_id, o.sizes, o.inline
            )
            for o in self.outputs
        ]


@message(21)
@dataclass(frozen=True, slots=True)
class BlockReady:
    """A task stored a cached partition on ``executor_id``."""

    group_id: int
    dataset_id: int
    partition: int
    executor_id: str


@message(22)
@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """Ask a peer for blocks of its store; answered by ``BlocksFetched``."""

    request_id: int
    keys: tuple[BlockKey, ...]


@message(24)
@dataclass(frozen=True, slots=True)
class ReplicateBlock:
    """A copy of a cached partition to keep; the receiver announces it to the tracker."""

    group_id: int
    dataset_id: int
    partition: int
    data: bytes


@message(25)
@dataclass(frozen=True, slots=True)
class FetchFailedReport:
    """An executor could not fetch blocks from ``peer``; the driver side decides."""

    group_id: int
    task_id: int
    peer: str
    reason: str


@message(23)
@dataclass(frozen=True, slots=True)
class BlocksFetched:
    """Blocks in the order asked; ``missing`` lists indexes of keys the store lacks."""

    request_id: int
    blocks: tuple[bytes, ...]
    missing: tuple[int, ...]


# -------------------------------------------------------------------- results (exec → driver)


@message(30)
@dataclass(frozen=True, slots=True)
class TaskResult:
    """A result task finished; ``value`` is the pickled result of the job function."""

    group_id: int
    batch: int
    stage_id: int
    partition: int
    task_id: int
    attempt: int
    executor_id: str
    value: bytes


@record
@dataclass(frozen=True, slots=True)
class ResultValue:
    """One result task's outcome inside ``TaskResults``."""

    stage_id: int
    partition: int
    task_id: int
    attempt: int
    value: bytes


@message(34)
@dataclass(frozen=True, slots=True)
class TaskResults:
    """Several result tasks of one micro-batch finished on one executor: their results
    in one message (a single one travels as ``TaskResult``)."""

    group_id: int
    batch: int
    executor_id: str
    results: tuple[ResultValue, ...]

    @staticmethod
    def gather(results: list[TaskResult]) -> TaskResult | TaskResults:
        """Results of one micro-batch from one executor as one message (one alone as
        itself)."""
        if len(results) == 1:
            return results[0]
        first = results[0]
        values = tuple(
            ResultValue(r.stage_id, r.partition, r.task_id, r.attempt, r.value) for r in results
        )
        return TaskResults(first.group_id, first.batch, first.executor_id, values)


@message(31)
@dataclass(frozen=True, slots=True)
class TaskFailed:
    """A task gave up after its attempts, or could not fetch its inputs."""

    group_id: int
    batch: int
    stage_id: int
    partition: int
    task_id: int
    attempt: int
    executor_id: str
    error_type: str
    error: str
    traceback: str


@message(33)
@dataclass(frozen=True, slots=True)
class TaskAttemptFailed:
    """An attempt of a task failed and attempts remain: the executor gives the task
    back, to run again on another executor where possible. ``attempt`` counts the
    attempts made so far; ``map_outputs`` are the task's shuffle inputs announced to
    this executor (so that its next home need not wait for the tracker to hear)."""

    group_id: int
    batch: int
    stage_id: int
    partition: int
    task_id: int
    attempt: int
    executor_id: str
    error_type: str
    error: str
    traceback: str
    map_outputs: tuple[MapLocation, ...] = ()


@message(32)
@dataclass(frozen=True, slots=True)
class ErrorReply:
    """Answer to a message that could not be accepted (malformed, unknown, refused)."""

    reason: str
