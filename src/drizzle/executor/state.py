"""The executor's local scheduler as a pure state machine.

``ExecutorState.handle(event) -> list[command]``. It holds pre-scheduled tasks that wait,
inactive and using no slot, for their inputs: notices of map outputs (``MapOutputReady``)
and of cached partitions (``BlockReady``), counted whether they arrive before or after
the task is registered, and never twice. Runnable tasks start in priority order (lower
micro-batch first; within a micro-batch, downstream stages first) while slots are free;
with the barrier on, a task of micro-batch b starts only when no task of an earlier
micro-batch of its group is unfinished here. Finished map tasks emit one notice per
distinct reducer executor (locally it is applied at once) and one to the tracker. A
failed attempt, while attempts remain, is given back to the driver side, which runs
the task again on another executor where it can. No I/O, no clock, no asyncio.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from drizzle.wire.messages import (
    BlockReady,
    FetchFailedReport,
    InlineBlock,
    LaunchGroup,
    MapLocation,
    MapOutputReady,
    MapOutputsReady,
    Reroute,
    TaskAttemptFailed,
    TaskFailed,
    TaskResult,
    TaskResults,
    TaskSpec,
)
from drizzle.wire.repeat import all_tasks

T = TypeVar("T")

TRACKER = ""
"""The destination of map-output notices meant for the driver's tracker."""

# ---------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class GroupLaunched:
    launch: LaunchGroup


@dataclass(frozen=True, slots=True)
class MapOutputNoticed:
    notice: MapOutputReady


@dataclass(frozen=True, slots=True)
class BlockNoticed:
    notice: BlockReady


def noticed(
    message: MapOutputReady | MapOutputsReady | BlockReady,
) -> list[MapOutputNoticed | BlockNoticed]:
    """The events a notice from a peer makes here, one per map output or partition."""
    if isinstance(message, BlockReady):
        return [BlockNoticed(message)]
    if isinstance(message, MapOutputReady):
        return [MapOutputNoticed(message)]
    return [MapOutputNoticed(n) for n in message.notices()]


@dataclass(frozen=True, slots=True)
class TaskSucceeded:
    task_id: int
    sizes: tuple[int, ...] = ()
    """Map tasks: the byte size of each reducer's block (already stored)."""
    value: bytes = b""
    """Result tasks: the pickled result."""
    blocks: tuple[bytes, ...] = ()
    """Map tasks: the blocks themselves, so small ones can travel with the notices."""


@dataclass(frozen=True, slots=True)
class TaskErrored:
    task_id: int
    error_type: str
    error: str
    traceback: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class InputsLost:
    """A started task could not fetch its inputs from ``peer``: what ``peer`` held is
    no longer counted and the task waits again (for a re-announcement)."""

    task_id: int
    peer: str
    reason: str


@dataclass(frozen=True, slots=True)
class GroupCancelled:
    group_id: int


@dataclass(frozen=True, slots=True)
class ShufflesReleased:
    shuffle_ids: tuple[int, ...]


Event = (
    GroupLaunched
    | MapOutputNoticed
    | BlockNoticed
    | TaskSucceeded
    | TaskErrored
    | InputsLost
    | GroupCancelled
    | ShufflesReleased
)

# -------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class StartTask:
    """Fetch the task's inputs (locations given), run it on a worker, report back."""

    group_id: int
    spec: TaskSpec
    map_locations: dict[int, dict[int, str]]
    """shuffle id → map id → executor holding that map output."""
    block_locations: dict[tuple[int, int], str]
    """(dataset id, partition) → executor holding the cached partition."""


@dataclass(frozen=True, slots=True)
class SendToPeer:
    peer: str
    message: MapOutputReady | MapOutputsReady | BlockReady


@dataclass(frozen=True, slots=True)
class ReplicateCached:
    """Send copies of a cached partition this executor stored to ``peers``."""

    group_id: int
    dataset_id: int
    partition: int
    peers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SendToDriver:
    target: str
    """Driver-side actor: ``tracker`` for notices, ``driver`` for results and failures."""
    message: (
        MapOutputReady
        | MapOutputsReady
        | BlockReady
        | TaskResult
        | TaskResults
        | TaskFailed
        | TaskAttemptFailed
        | FetchFailedReport
    )


@dataclass(frozen=True, slots=True)
class DropShuffles:
    shuffle_ids: tuple[int, ...]


Command = StartTask | SendToPeer | SendToDriver | DropShuffles | ReplicateCached

# ----------------------------------------------------------------------------- state


@dataclass
class _Task:
    group_id: int
    spec: TaskSpec
    missing_shuffles: set[int]
    missing_blocks: set[tuple[int, int]]
    state: str = "waiting"  # waiting → runnable → running → done


@dataclass
class ExecutorStats:
    notices_received: int = 0
    notices_sent: int = 0
    tasks_started: int = 0
    tasks_succeeded: int = 0
    tasks_failed: int = 0
    retries: int = 0


@dataclass
class ExecutorState:
    executor_id: str
    cores: int
    barrier: bool = True
    max_task_attempts: int = 4
    inline_limit: int = 0
    prefetch: int = 0
    """Tasks started beyond ``cores``, queued behind the running one on a worker that
    runs them in start order (only meaningful with one core): the worker goes from one
    task to the next without waiting for the event loop."""
    """Shuffle blocks up to this many bytes ride inside the notice to their reducer."""
    tasks: dict[int, _Task] = field(default_factory=dict)
    map_outputs: dict[int, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    blocks: dict[tuple[int, int], str] = field(default_factory=dict)
    stats: ExecutorStats = field(default_factory=ExecutorStats)
    _num_maps: dict[int, int] = field(default_factory=dict)
    _waiting_on_shuffle: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    _waiting_on_block: dict[tuple[int, int], set[int]] = field(
        default_factory=lambda: defaultdict(set)
    )
    _runnable: dict[int, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    """Group → heap of (micro-batch, -stage, partition, task id) of its runnable tasks."""
    _unfinished: BatchCounts = field(default_factory=lambda: BatchCounts())
    _running: int = 0
    _pending: BatchCounts = field(default_factory=lambda: BatchCounts())
    """Unfinished tasks not started yet, per (group, micro-batch)."""
    _results: HeldPerBatch[TaskResult] = field(default_factory=lambda: HeldPerBatch())
    """Results held until the last result task of their micro-batch here has ended:
    one message per executor per micro-batch to the driver, not one per task."""
    _notices: HeldPerBatch[tuple[str, MapOutputReady]] = field(
        default_factory=lambda: HeldPerBatch()
    )
    """Map-output notices, each with its destination (an executor of the readers, or
    ``TRACKER``), held per (group, shuffle) until the last map task of that shuffle
    here has ended, then sent to each destination together (``_inline_bounded``). A
    reducer needs every map output before it runs, so this delays no reducer; per
    shuffle, not per micro-batch, because a map task of a later stage of the
    micro-batch may be waiting for them."""
    _reroutes: dict[int, Reroute] = field(default_factory=dict)
    """The latest readers of each shuffle a recovery named, for map tasks registered
    after it (the group's own launch may arrive after its recovery launch)."""
    _lost: dict[str, int] = field(default_factory=dict)
    """Executor → latest group whose recovery named it lost: its notices of that group
    or an earlier one, which may arrive late, are stale (a re-run announces anew)."""

    # ------------------------------------------------------------------ dispatch

    def handle(self, event: Event) -> list[Command]:
        out: list[Command] = []
        if isinstance(event, MapOutputNoticed):
            self._on_map_output(event.notice, out)
        elif isinstance(event, TaskSucceeded):
            self._on_success(event, out)
        elif isinstance(event, GroupLaunched):
            self._on_launch(event.launch, out)
        elif isinstance(event, BlockNoticed):
            if self._lost.get(event.notice.executor_id, -1) < event.notice.group_id:
                self._on_block(
                    event.notice.dataset_id, event.notice.partition, event.notice.executor_id
                )
        elif isinstance(event, TaskErrored):
            self._on_error(event, out)
        elif isinstance(event, InputsLost):
            self._on_inputs_lost(event, out)
        elif isinstance(event, GroupCancelled):
            self._on_cancel(event.group_id)
        elif isinstance(event, ShufflesReleased):
            self._release(event.shuffle_ids, out)
        else:  # pragma: no cover - the Event union is closed
            raise TypeError(f"unhandled event {event!r}")
        self._schedule(out)
        return out

    @property
    def running(self) -> int:
        return self._running

    def unfinished_tasks(self) -> int:
        return sum(1 for t in self.tasks.values() if t.state != "done")

    # ------------------------------------------------------------------ handlers

    def _on_launch(self, launch: LaunchGroup, out: list[Command]) -> None:
        if launch.release_shuffles:
            self._release(launch.release_shuffles, out)
        if launch.lost_executors:
            for lost in launch.lost_executors:
                self._lost[lost] = max(self._lost.get(lost, -1), launch.group_id)
            self._forget(set(launch.lost_executors))
        for loc in launch.known_map_outputs:
            self._on_map_output(
                MapOutputReady(launch.group_id, loc.shuffle_id, loc.map_id, loc.executor_id, ()),
                out,
                counted=False,
            )
        for block in launch.known_blocks:
            self._on_block(block.dataset_id, block.partition, block.executor_id)
        for reroute in launch.reroutes:
            self._reroute(launch.group_id, reroute, out)
        for spec in all_tasks(launch):
            self._register(launch.group_id, spec)

    # ------------------------------------------------------------------ recovery

    def _forget(self, lost: set[str]) -> None:
        """Stop counting map outputs and cached partitions held by ``lost`` executors."""
        touched_shuffles = set()
        for shuffle_id, outputs in self.map_outputs.items():
            for map_id in [m for m, e in outputs.items() if e in lost]:
                del outputs[map_id]
                touched_shuffles.add(shuffle_id)
        touched_blocks = {key for key, e in self.blocks.items() if e in lost}
        for key in touched_blocks:
            del self.blocks[key]
        if not touched_shuffles and not touched_blocks:
            return
        for task in self.tasks.values():
            if task.state not in ("waiting", "runnable"):
                continue
            spec = task.spec
            for inp in spec.shuffle_inputs:
                if inp.shuffle_id in touched_shuffles and (
                    len(self.map_outputs.get(inp.shuffle_id, ())) < inp.num_maps
                ):
                    task.missing_shuffles.add(inp.shuffle_id)
                    self._waiting_on_shuffle[inp.shuffle_id].add(spec.task_id)
            for b in spec.block_inputs:
                key = (b.dataset_id, b.partition)
                if key in touched_blocks and key not in self.blocks:
                    task.missing_blocks.add(key)
                    self._waiting_on_block[key].add(spec.task_id)
            if task.state == "runnable" and (task.missing_shuffles or task.missing_blocks):
                task.state = "waiting"  # its heap entry is skipped when popped

    def _reroute(self, group_id: int, reroute: Reroute, out: list[Command]) -> None:
        """Unfinished map tasks of the shuffle notify the new readers; finished outputs
        held here are announced to them again."""
        self._reroutes[reroute.shuffle_id] = reroute
        for task in self.tasks.values():
            output = task.spec.shuffle_output
            if output is None or output.shuffle_id != reroute.shuffle_id:
                continue
            if task.state != "done":
                task.spec = replace(
                    task.spec,
                    shuffle_output=replace(
                        output, notify=reroute.notify, notify_partitions=reroute.notify_partitions
                    ),
                )
        for map_id, holder in self.map_outputs.get(reroute.shuffle_id, {}).items():
            if holder != self.executor_id:
                continue
            notice = MapOutputReady(group_id, reroute.shuffle_id, map_id, holder, ())
            for peer in reroute.notify:
                if peer != self.executor_id:
                    out.append(SendToPeer(peer, notice))

    def _on_inputs_lost(self, event: InputsLost, out: list[Command]) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "running":
            return
        self._running -= 1
        self._pending.add(task.group_id, task.spec.batch)
        task.state = "runnable"
        self._forget({event.peer})
        if task.state == "runnable":
            # The peer may have been forgotten already (a recovery launch named it lost
            # while this task was fetching from it): wait again for what is unannounced.
            spec = task.spec
            for inp in spec.shuffle_inputs:
                if len(self.map_outputs.get(inp.shuffle_id, ())) < inp.num_maps:
                    task.missing_shuffles.add(inp.shuffle_id)
                    self._waiting_on_shuffle[inp.shuffle_id].add(spec.task_id)
            for b in spec.block_inputs:
                key = (b.dataset_id, b.partition)
                if key not in self.blocks:
                    task.missing_blocks.add(key)
                    self._waiting_on_block[key].add(spec.task_id)
            if task.missing_shuffles or task.missing_blocks:
                task.state = "waiting"
        if task.state == "runnable":  # everything it needs is announced: try again
            self._make_runnable(task)
        out.append(
            SendToDriver(
                "group",
                FetchFailedReport(task.group_id, task.spec.task_id, event.peer, event.reason),
            )
        )

    def _register(self, group_id: int, spec: TaskSpec) -> None:
        known = self.tasks.get(spec.task_id)
        if known is not None and (known.state != "done" or known.spec.attempt >= spec.attempt):
            return  # a duplicated launch: the task is already known
        output = spec.shuffle_output
        reroute = self._reroutes.get(output.shuffle_id) if output is not None else None
        if output is not None and reroute is not None:
            notify, parts = reroute.notify, reroute.notify_partitions
            spec = replace(
                spec, shuffle_output=replace(output, notify=notify, notify_partitions=parts)
            )
        missing_shuffles = set()
        for inp in spec.shuffle_inputs:
            self._num_maps[inp.shuffle_id] = inp.num_maps
            if len(self.map_outputs.get(inp.shuffle_id, ())) < inp.num_maps:
                missing_shuffles.add(inp.shuffle_id)
                self._waiting_on_shuffle[inp.shuffle_id].add(spec.task_id)
        missing_blocks = set()
        for block in spec.block_inputs:
            key = (block.dataset_id, block.partition)
            if block.location and key not in self.blocks:
                self.blocks[key] = block.location
            if key not in self.blocks:
                missing_blocks.add(key)
                self._waiting_on_block[key].add(spec.task_id)
        task = _Task(group_id, spec, missing_shuffles, missing_blocks)
        self.tasks[spec.task_id] = task
        self._unfinished.add(group_id, spec.batch)
        if spec.is_result:
            self._results.task_added((group_id, spec.batch))
        if spec.shuffle_output is not None:
            self._notices.task_added((group_id, spec.shuffle_output.shuffle_id))
        self._pending.add(group_id, spec.batch)
        if not missing_shuffles and not missing_blocks:
            self._make_runnable(task)

    def _on_map_output(
        self, notice: MapOutputReady, out: list[Command], *, counted: bool = True
    ) -> None:
        if counted:
            self.stats.notices_received += 1
        if self._lost.get(notice.executor_id, -1) >= notice.group_id:
            return  # stale: its executor was lost since
        outputs = self.map_outputs[notice.shuffle_id]
        outputs[notice.map_id] = notice.executor_id  # a re-run map may move; never double count
        needed = self._num_maps.get(notice.shuffle_id)
        if needed is None or len(outputs) < needed:
            return
        for task_id in self._waiting_on_shuffle.pop(notice.shuffle_id, ()):
            task = self.tasks.get(task_id)
            if task is None or task.state != "waiting":
                continue
            task.missing_shuffles.discard(notice.shuffle_id)
            if not task.missing_shuffles and not task.missing_blocks:
                self._make_runnable(task)

    def _on_block(self, dataset_id: int, partition: int, executor_id: str) -> None:
        key = (dataset_id, partition)
        self.blocks[key] = executor_id
        for task_id in self._waiting_on_block.pop(key, ()):
            task = self.tasks.get(task_id)
            if task is None or task.state != "waiting":
                continue
            task.missing_blocks.discard(key)
            if not task.missing_shuffles and not task.missing_blocks:
                self._make_runnable(task)

    def _on_success(self, event: TaskSucceeded, out: list[Command]) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "running":
            return
        self._finish(task)
        self.stats.tasks_succeeded += 1
        spec = task.spec
        for block in spec.block_outputs:
            self._on_block(block.dataset_id, block.partition, self.executor_id)
            notice = BlockReady(task.group_id, block.dataset_id, block.partition, self.executor_id)
            for peer in dict.fromkeys(block.notify):
                if peer != self.executor_id:
                    out.append(SendToPeer(peer, notice))
            replicas = tuple(p for p in dict.fromkeys(block.replicas) if p != self.executor_id)
            if replicas:
                out.append(
                    ReplicateCached(task.group_id, block.dataset_id, block.partition, replicas)
                )
            out.append(SendToDriver("tracker", notice))
        if spec.shuffle_output is not None:
            notice_m = MapOutputReady(
                task.group_id,
                spec.shuffle_output.shuffle_id,
                spec.partition,
                self.executor_id,
                event.sizes,
            )
            output = spec.shuffle_output
            parts = dict(zip(output.notify, output.notify_partitions, strict=False))
            for peer in dict.fromkeys(output.notify):
                self.stats.notices_sent += 1
                if peer == self.executor_id:
                    self._on_map_output(notice_m, out)
                else:
                    self._notices.hold(
                        (task.group_id, output.shuffle_id),
                        (peer, self._with_inline(notice_m, event, parts, peer)),
                    )
            if self.executor_id not in output.notify:
                # Known here even with no reader here, so that a reroute announces it.
                self._on_map_output(notice_m, out, counted=False)
            self._notices.hold((task.group_id, output.shuffle_id), (TRACKER, notice_m))
        if spec.is_result:
            result = TaskResult(
                task.group_id,
                spec.batch,
                spec.stage_id,
                spec.partition,
                spec.task_id,
                spec.attempt,
                self.executor_id,
                event.value,
            )
            self._results.hold((task.group_id, spec.batch), result)
        self._task_ended(task, out)

    def _with_inline(
        self,
        notice: MapOutputReady,
        event: TaskSucceeded,
        parts: dict[str, tuple[int, ...]],
        peer: str,
    ) -> MapOutputReady:
        if not self.inline_limit or not event.blocks or peer not in parts:
            return notice
        inline = tuple(
            InlineBlock(r, event.blocks[r])
            for r in parts[peer]
            if r < len(event.blocks) and len(event.blocks[r]) <= self.inline_limit
        )
        return replace(notice, inline=inline) if inline else notice

    def _on_error(self, event: TaskErrored, out: list[Command]) -> None:
        task = self.tasks.get(event.task_id)
        if task is None or task.state != "running":
            return
        spec = task.spec
        report = (
            task.group_id,
            spec.batch,
            spec.stage_id,
            spec.partition,
            spec.task_id,
            spec.attempt + 1,
            self.executor_id,
            event.error_type,
            event.error,
            event.traceback,
        )
        self._finish(task, ran=False)
        self._task_ended(task, out)
        if event.retryable and spec.attempt + 1 < self.max_task_attempts:
            # Give the task back: the group scheduler runs it again, elsewhere if it can.
            self.stats.retries += 1
            known = tuple(
                MapLocation(inp.shuffle_id, map_id, holder)
                for inp in spec.shuffle_inputs
                for map_id, holder in sorted(self.map_outputs.get(inp.shuffle_id, {}).items())
            )
            out.append(SendToDriver("driver", TaskAttemptFailed(*report, known)))
            return
        self.stats.tasks_failed += 1
        out.append(SendToDriver("driver", TaskFailed(*report)))

    def _on_cancel(self, group_id: int) -> None:
        for task in self.tasks.values():
            if task.group_id == group_id and task.state in ("waiting", "runnable"):
                self._finish(task, ran=False)
        self._results.drop_group(group_id)
        self._notices.drop_group(group_id)

    def _task_ended(self, task: _Task, out: list[Command]) -> None:
        """Send what was held for the task's micro-batch (results) or shuffle (notices)
        once its last task of the kind here has ended (done, failed or given back),
        together: one message to each destination, or a few when notices carry
        large inline blocks."""
        spec = task.spec
        group_id = task.group_id
        if spec.is_result:
            results = self._results.task_ended((group_id, spec.batch))
            if results:
                out.append(SendToDriver("driver", TaskResults.gather(results)))
        if spec.shuffle_output is not None:
            by_destination: dict[str, list[MapOutputReady]] = {}
            held = self._notices.task_ended((group_id, spec.shuffle_output.shuffle_id))
            for destination, notice in held:
                by_destination.setdefault(destination, []).append(notice)
            for destination, notices in by_destination.items():
                for chunk in _inline_bounded(notices, self.inline_limit):
                    message = MapOutputsReady.gather(chunk)
                    if destination == TRACKER:
                        out.append(SendToDriver("tracker", message))
                    else:
                        out.append(SendToPeer(destination, message))

    def _release(self, shuffle_ids: tuple[int, ...], out: list[Command]) -> None:
        for sid in shuffle_ids:
            self.map_outputs.pop(sid, None)
            self._num_maps.pop(sid, None)
            self._waiting_on_shuffle.pop(sid, None)
            self._reroutes.pop(sid, None)
        out.append(DropShuffles(shuffle_ids))
        done = [tid for tid, t in self.tasks.items() if t.state == "done"]
        for tid in done:
            del self.tasks[tid]

    # ------------------------------------------------------------------ scheduling

    def _make_runnable(self, task: _Task) -> None:
        task.state = "runnable"
        spec = task.spec
        # Lower micro-batch first; within one, later (downstream) stages first.
        heapq.heappush(
            self._runnable.setdefault(task.group_id, []),
            (spec.batch, -spec.stage_id, spec.partition, spec.task_id),
        )

    def _finish(self, task: _Task, *, ran: bool = True) -> None:
        if task.state == "running":
            self._running -= 1
        else:
            self._pending.remove(task.group_id, task.spec.batch)
        task.state = "done"
        self._unfinished.remove(task.group_id, task.spec.batch)

    def _barrier_holds(self, group_id: int, batch: int) -> bool:
        """Whether a task of ``batch`` must wait for earlier micro-batches here."""
        pending = self._pending.earliest(group_id)
        if pending is not None and pending < batch:
            return True
        if self.cores == 1 and self.prefetch:
            return False  # earlier tasks already started finish first: one worker, in order
        unfinished = self._unfinished.earliest(group_id)
        return unfinished is not None and unfinished < batch

    def _schedule(self, out: list[Command]) -> None:
        slots = self.cores + self.prefetch
        for group_id in sorted(self._runnable):
            heap = self._runnable[group_id]
            while heap and self._running < slots:
                batch, _, _, task_id = heap[0]
                task = self.tasks.get(task_id)
                if task is None or task.state != "runnable":
                    heapq.heappop(heap)
                    continue
                if self.barrier and self._barrier_holds(group_id, batch):
                    break  # every later task of this group is held too; other groups may run
                heapq.heappop(heap)
                task.state = "running"
                self._running += 1
                self._pending.remove(group_id, batch)
                self.stats.tasks_started += 1
                out.append(StartTask(group_id, task.spec, *self._locations(task.spec)))
            if not heap:
                del self._runnable[group_id]
            if self._running >= slots:
                return

    def _locations(
        self, spec: TaskSpec
    ) -> tuple[dict[int, dict[int, str]], dict[tuple[int, int], str]]:
        maps = {
            inp.shuffle_id: dict(self.map_outputs[inp.shuffle_id]) for inp in spec.shuffle_inputs
        }
        blocks = {
            (b.dataset_id, b.partition): self.blocks[(b.dataset_id, b.partition)]
            for b in spec.block_inputs
        }
        return maps, blocks


def _inline_bounded(notices: list[MapOutputReady], limit: int) -> list[list[MapOutputReady]]:
    """``notices`` in order, cut so that no group carries more inline block bytes than
    one notice to that executor may (``limit`` per block, as many blocks as the most
    any of them carries). Only the blocks are bounded: the per-reducer sizes of many
    map outputs still add up, as they do in the launch that named those reducers."""
    sizes = [sum(len(b.data) for b in n.inline) for n in notices]
    budget = limit * max((len(n.inline) for n in notices), default=0)
    chunks: list[list[MapOutputReady]] = []
    used = 0
    for notice, size in zip(notices, sizes, strict=True):
        if not chunks or (size and used + size > budget):
            chunks.append([])
            used = 0
        chunks[-1].append(notice)
        used += size
    return chunks


class HeldPerBatch(Generic[T]):
    """Messages held per key (a group and its micro-batch or shuffle) until the last
    task counted under it has ended; ``task_ended`` then gives them out, in the order
    they were held."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[int, int], int] = {}
        self._held: dict[tuple[int, int], list[T]] = {}

    def task_added(self, key: tuple[int, int]) -> None:
        self._tasks[key] = self._tasks.get(key, 0) + 1

    def hold(self, key: tuple[int, int], item: T) -> None:
        self._held.setdefault(key, []).append(item)

    def task_ended(self, key: tuple[int, int]) -> list[T]:
        left = self._tasks.get(key, 0) - 1
        if left > 0:
            self._tasks[key] = left
            return []
        self._tasks.pop(key, None)
        return self._held.pop(key, [])

    def drop_group(self, group_id: int) -> None:
        for key in [k for k in self._tasks if k[0] == group_id]:
            del self._tasks[key]
        for key in [k for k in self._held if k[0] == group_id]:
            del self._held[key]


class BatchCounts:
    """Task counts per (group, micro-batch); the earliest counted micro-batch of a group
    in O(log n) (a heap per group, cleaned lazily)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[int, int], int] = {}
        self._batches: dict[int, list[int]] = {}

    def add(self, group_id: int, batch: int) -> None:
        key = (group_id, batch)
        count = self._counts.get(key, 0)
        if count == 0:
            heapq.heappush(self._batches.setdefault(group_id, []), batch)
        self._counts[key] = count + 1

    def remove(self, group_id: int, batch: int) -> None:
        key = (group_id, batch)
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
            return
        self._counts.pop(key, None)
        self.earliest(group_id)  # drops the group's heap once nothing is counted

    def earliest(self, group_id: int) -> int | None:
        batches = self._batches.get(group_id)
        while batches and (group_id, batches[0]) not in self._counts:
            heapq.heappop(batches)
        if not batches:
            self._batches.pop(group_id, None)
            return None
        return batches[0]
