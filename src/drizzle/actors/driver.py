"""The driver actor: submitted groups, their per-micro-batch results, and failures.

A group's micro-batch result is handed to the caller as soon as its last partition
arrives, so a micro-batch's latency is not its group's. A failed task, a lost
executor the group uses, or the group's deadline fails every micro-batch of the group
not yet delivered with ``JobFailed``; a group never yields partial results.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from drizzle import serde
from drizzle.actors.internal import (
    ExecutorJoined,
    ExecutorLeft,
    ExecutorLost,
    GroupAborted,
    GroupCompleted,
    GroupLaunched,
    GroupNotLaunched,
    GroupNotRecovered,
    GroupRecovered,
    PlanGroup,
    RecoverGroup,
    RetryTask,
)
from drizzle.actors.node import Actor, Node, UnexpectedMessage
from drizzle.errors import JobFailed
from drizzle.scheduler.dag import BatchRequest
from drizzle.wire.messages import TaskAttemptFailed, TaskFailed, TaskResult, TaskResults

log = logging.getLogger("drizzle.driver")


@dataclass
class GroupRun:
    """A submitted group as the caller sees it."""

    group_id: int
    requests: Sequence[BatchRequest]
    launched: asyncio.Future[tuple[int, ...]]
    """Resolves to the micro-batches the group holds (a prefix of ``requests``)."""
    results: dict[int, asyncio.Future[list[Any]]] = field(default_factory=dict)
    pending: dict[int, list[Any]] = field(default_factory=dict)
    remaining: dict[int, int] = field(default_factory=dict)
    participants: frozenset[str] = frozenset()
    shuffle_ids: tuple[int, ...] = ()
    done: bool = False
    submitted_at: float = 0.0
    """``Node.clock`` readings (``time.perf_counter``, or virtual time under simulation)."""
    launched_at: float = 0.0
    deadline: asyncio.TimerHandle | None = None
    stats: dict[str, float] = field(default_factory=dict)
    planned_s: float = 0.0
    """Seconds from submission to launch: planning, placement, launch messages."""
    results_s: float = 0.0
    recoveries: int = 0


_MISSING = object()


@dataclass(frozen=True)
class GroupSummary:
    """What one completed group cost: the input of the group-size tuner and of metrics."""

    group_id: int
    batches: int
    tasks: int
    launch_messages: int
    wall_s: float
    """From submission to the last result."""
    coordination_s: float
    """Driver-side work for the group: planning, placement and launch, result handling."""

    @property
    def overhead(self) -> float:
        return self.coordination_s / self.wall_s if self.wall_s > 0 else 0.0


class DriverActor(Actor):
    name = "driver"
    handles = (TaskResult, TaskResults, TaskFailed, TaskAttemptFailed)

    def __init__(self, node: Node, *, group_timeout: float = 600.0) -> None:
        super().__init__(node)
        self.group_timeout = group_timeout
        self.groups: dict[int, GroupRun] = {}
        self.executors: dict[str, int] = {}
        self._next_group = 0
        self._membership = asyncio.Event()
        self.launch_messages = 0
        self.max_recoveries = 16
        self.recomputed_maps = 0
        """Map tasks run again by recoveries, over the driver's life."""
        self.relaunched_tasks = 0
        self.losses: list[tuple[float, str]] = []
        """(loop time, executor) of every executor loss the driver learnt of."""
        self.completed: collections.deque[GroupSummary] = collections.deque(maxlen=10_000)
        """Summaries of the most recent completed groups, oldest first."""
        self.results_s = 0.0
        """Seconds spent receiving and unpickling results."""
        self.groups_completed = 0

    # ------------------------------------------------------------------ API (driver process)

    def submit_group(self, requests: Sequence[BatchRequest]) -> GroupRun:
        group_id = self._next_group
        self._next_group += 1
        run = GroupRun(group_id, requests, self.node.loop.create_future())
        run.submitted_at = self.node.clock()
        self.groups[group_id] = run
        self.node.post(self.node.address, "dag", PlanGroup(group_id, requests), self.name)
        return run

    async def wait_executors(self, count: int, within: float) -> None:
        async with asyncio.timeout(within):
            while len(self.executors) < count:
                self._membership.clear()
                await self._membership.wait()

    # ------------------------------------------------------------------ messages

    def receive(self, peer: str, sender: str, message: Any) -> None:
        if isinstance(message, (TaskResult, TaskResults)):
            began = self.node.clock()
            run = self._on_results(peer, message)
            spent = self.node.clock() - began
            self.results_s += spent
            if run is not None:
                run.results_s += spent
                if run.done:
                    self._summarize(run)
        elif isinstance(message, GroupLaunched):
            self._on_launched(message)
        elif isinstance(message, TaskFailed):
            self._on_task_failed(peer, message)
        elif isinstance(message, TaskAttemptFailed):
            self._on_attempt_failed(peer, message)
        elif isinstance(message, GroupNotLaunched):
            run = self.groups.pop(message.group_id, None)
            if run is not None and not run.launched.done():
                run.launched.set_exception(message.error)
        elif isinstance(message, ExecutorJoined):
            self.executors[message.executor_id] = message.cores
            self._membership.set()
        elif isinstance(message, ExecutorLeft):
            self.executors.pop(message.executor_id, None)
            self._membership.set()
        elif isinstance(message, ExecutorLost):
            self.losses.append((self.node.now(), message.executor_id))
            self.executors.pop(message.executor_id, None)
            self._membership.set()
            for run in list(self.groups.values()):
                if message.executor_id in run.participants and run.launched.done():
                    self._recover(run, message.executor_id, message.reason)
        elif isinstance(message, GroupRecovered):
            run = self.groups.get(message.group_id)
            if run is not None:
                run.participants = message.participants
                if message.retried_task:
                    run.stats["retried_tasks"] = run.stats.get("retried_tasks", 0) + 1
                else:
                    run.recoveries += 1
                run.stats["recomputed_maps"] = (
                    run.stats.get("recomputed_maps", 0) + message.recomputed_maps
                )
                self.recomputed_maps += message.recomputed_maps
                self.relaunched_tasks += message.relaunched_tasks
        elif isinstance(message, GroupNotRecovered):
            run = self.groups.get(message.group_id)
            if run is not None:
                self._fail(run, JobFailed(f"group {run.group_id} cannot recover: {message.reason}"))
        else:
            raise UnexpectedMessage(f"driver does not handle {type(message).__name__}")

    def _recover(self, run: GroupRun, executor_id: str, reason: str) -> None:
        if run.recoveries >= self.max_recoveries:
            self._fail(
                run,
                JobFailed(
                    f"executor {executor_id} was lost ({reason}) and group {run.group_id} "
                    f"already recovered {run.recoveries} times",
                    executor=executor_id,
                ),
            )
            return
        self.node.post(
            self.node.address,
            "tracker",
            RecoverGroup(run.group_id, frozenset({executor_id}), _delivered(run)),
            self.name,
        )

    def _on_attempt_failed(self, peer: str, msg: TaskAttemptFailed) -> None:
        if msg.executor_id != peer:
            raise UnexpectedMessage(f"failure report from {peer} claims {msg.executor_id}")
        run = self.groups.get(msg.group_id)
        if run is None or run.done or not run.launched.done():
            return
        log.warning(
            "task of micro-batch %d (stage %d, partition %d) failed on %s (attempt %d): "
            "%s: %s; running it again",
            msg.batch,
            msg.stage_id,
            msg.partition,
            peer,
            msg.attempt,
            msg.error_type,
            msg.error,
        )
        retry = RetryTask(msg.task_id, msg.attempt, peer, msg.map_outputs)
        self.node.post(
            self.node.address,
            "tracker",
            RecoverGroup(run.group_id, frozenset(), _delivered(run), retry),
            self.name,
        )

    def _on_launched(self, msg: GroupLaunched) -> None:
        run = self.groups.get(msg.group_id)
        if run is None:
            return
        run.participants = msg.participants
        run.shuffle_ids = msg.shuffle_ids
        run.launched_at = self.node.clock()
        run.planned_s = run.launched_at - run.submitted_at
        run.stats["tasks"] = msg.num_tasks
        run.stats["launch_messages"] = msg.launch_messages
        self.launch_messages += msg.launch_messages
        loop = self.node.loop
        for batch in msg.batches:
            n = msg.result_tasks[batch]
            run.results[batch] = loop.create_future()
            run.pending[batch] = [_MISSING] * n
            run.remaining[batch] = n
        run.deadline = loop.call_later(self.group_timeout, self._expire, msg.group_id)
        run.launched.set_result(msg.batches)

    def _expire(self, group_id: int) -> None:
        run = self.groups.get(group_id)
        if run is not None:
            self._fail(
                run,
                JobFailed(f"group {group_id} did not complete within {self.group_timeout:g}s"),
            )

    def _on_results(self, peer: str, msg: TaskResult | TaskResults) -> GroupRun | None:
        if msg.executor_id != peer:
            raise UnexpectedMessage(f"results from {peer} claim executor {msg.executor_id}")
        run = self.groups.get(msg.group_id)
        if run is None or run.done:
            return None
        if isinstance(msg, TaskResult):
            self._deliver(run, peer, msg.batch, msg.partition, msg.value)
            return run
        for r in msg.results:
            self._deliver(run, peer, msg.batch, r.partition, r.value)
            if self.groups.get(msg.group_id) is not run:
                break  # the group failed (or completed) on this result
        return run

    def _deliver(self, run: GroupRun, peer: str, batch: int, partition: int, value: bytes) -> None:
        """One result of a running group, unless the driver has it already."""
        slots = run.pending.get(batch)
        if slots is None or not 0 <= partition < len(slots):
            raise UnexpectedMessage(f"result for unknown task from {peer}: {batch}")
        if slots[partition] is not _MISSING:
            return  # a duplicate: each result is delivered once
        try:
            slots[partition] = serde.loads(value)
        except Exception as exc:
            self._fail(
                run,
                JobFailed(
                    f"result of micro-batch {batch} partition {partition} could not be "
                    f"unpickled on the driver: {exc!r}",
                    batch=batch,
                    partition=partition,
                    executor=peer,
                ),
            )
            return
        run.remaining[batch] -= 1
        if run.remaining[batch] == 0:
            fut = run.results[batch]
            if not fut.done():
                fut.set_result(slots)
            if all(v == 0 for v in run.remaining.values()):
                self._complete(run)

    def _complete(self, run: GroupRun) -> None:
        run.done = True
        run.stats["wall"] = self.node.clock() - run.submitted_at
        if run.deadline is not None:
            run.deadline.cancel()
        self.groups.pop(run.group_id, None)
        self.groups_completed += 1
        event = GroupCompleted(run.group_id, run.participants, run.shuffle_ids)
        for target in ("dag", "group", "tracker"):
            self.node.post(self.node.address, target, event, self.name)

    def _summarize(self, run: GroupRun) -> None:
        summary = GroupSummary(
            group_id=run.group_id,
            batches=len(run.results),
            tasks=int(run.stats.get("tasks", 0)),
            launch_messages=int(run.stats.get("launch_messages", 0)),
            wall_s=run.stats["wall"],
            coordination_s=run.planned_s + run.results_s,
        )
        self.completed.append(summary)
        log.info(
            "group %d: G=%d tasks=%d wall=%.1f ms (%.3f ms per micro-batch) overhead=%.1f%%",
            summary.group_id,
            summary.batches,
            summary.tasks,
            summary.wall_s * 1000,
            summary.wall_s * 1000 / max(1, summary.batches),
            summary.overhead * 100,
        )

    def _on_task_failed(self, peer: str, msg: TaskFailed) -> None:
        if msg.executor_id != peer:
            raise UnexpectedMessage(f"failure report from {peer} claims {msg.executor_id}")
        run = self.groups.get(msg.group_id)
        if run is None or run.done:
            return
        hint = ""
        if msg.error_type in ("ModuleNotFoundError", "ImportError"):
            hint = (
                " (executors import the modules that define the job's functions: put them "
                "on the executors' PYTHONPATH, or define the functions in __main__)"
            )
        self._fail(
            run,
            JobFailed(
                f"task of micro-batch {msg.batch} (stage {msg.stage_id}, "
                f"partition {msg.partition}) "
                f"failed on executor {msg.executor_id} after {msg.attempt} attempt(s): "
                f"{msg.error_type}: {msg.error}{hint}",
                batch=msg.batch,
                stage=msg.stage_id,
                partition=msg.partition,
                executor=msg.executor_id,
                attempts=msg.attempt,
                remote_traceback=msg.traceback,
                cause_type=msg.error_type,
            ),
        )

    def _fail(self, run: GroupRun, error: JobFailed) -> None:
        if run.done:
            return
        run.done = True
        if run.deadline is not None:
            run.deadline.cancel()
        self.groups.pop(run.group_id, None)
        if not run.launched.done():
            run.launched.set_exception(error)
        for fut in run.results.values():
            if not fut.done():
                fut.set_exception(error)
                fut.exception()  # retrieved here too: a caller may stop listening
        abort = GroupAborted(run.group_id, run.participants, str(error).splitlines()[0])
        for target in ("dag", "group", "tracker"):
            self.node.post(self.node.address, target, abort, self.name)

    async def aclose(self) -> None:
        for run in list(self.groups.values()):
            self._fail(run, JobFailed("the context was closed"))


def _delivered(run: GroupRun) -> frozenset[tuple[int, int]]:
    """(micro-batch, partition) of every result of ``run`` the driver already has."""
    return frozenset(
        (batch, partition)
        for batch, slots in run.pending.items()
        for partition, value in enumerate(slots)
        if value is not _MISSING
    )
