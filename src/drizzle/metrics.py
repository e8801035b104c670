"""What the engine measures about itself: typed, frozen snapshots and the collector behind them.

``Context.metrics()`` returns a ``MetricsSnapshot``: the group size (the tuner's G and
the last group's), the smoothed overhead, the last groups' timings, the driver-side
totals, every executor with its state and counters, tasks done and failed, and bytes
shuffled. ``MetricsCollector`` builds it by reading what the actors already keep
(``GroupSummary`` of each group, the schedulers' ``plan_s``/``place_s``/``results_s``,
executor counters from heartbeats, or live for in-process executors, the tracker's
map-output sizes) and by timing each group from the ``Context``; it also turns each
completed group into the tuner's sample. It reads actor state only from the event
loop's thread and never changes it. The Prometheus exporter is in ``prometheus.py``.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drizzle.scheduler.tuner import GroupSample, GroupSizeTuner, TunerDecision
from drizzle.wire.messages import ExecutorCounters

if TYPE_CHECKING:
    from drizzle.actors.driver import GroupRun, GroupSummary
    from drizzle.cluster import Cluster

HISTORY = 256
"""Completed groups a snapshot keeps, most recent last."""

EXECUTOR_PARTS = ("queue_wait", "deserialize", "compute", "fetch", "notify")
"""Where an executor's task time goes; ``ExecutorMetrics.<part>_s``."""


@dataclass(frozen=True, slots=True)
class ExecutorMetrics:
    """One executor as the driver sees it. Counters are cumulative since it started."""

    executor_id: str
    alive: bool
    cores: int
    heartbeat_age_s: float | None
    """Seconds since its last heartbeat (``None`` once it is lost)."""
    live: bool
    """Counters read directly (in-process executor) rather than from its last heartbeat."""
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


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    """One completed group, timed from the ``Context``."""

    group_id: int
    group_size: int
    """The size the group was asked to have (the tuner's G in auto mode)."""
    batches: int
    """Micro-batches it ran (fewer when cut short by the end of the input or a shape change)."""
    tasks: int
    launch_messages: int
    wall_s: float
    """Submission to last result (``Node.clock``: ``time.perf_counter``, or virtual time)."""
    coordination_s: float
    """Driver-side work (``GroupSummary.coordination_s``): planning, placement and
    launch, result handling."""
    launch_s: float
    """Submission to launch: planning, placement, launch messages."""
    results_s: float
    """Receiving and unpickling the group's results."""
    plan_s: float
    place_s: float
    """Growth of the DAG and group schedulers' totals while the group ran (exact when
    groups run one at a time, as one ``iter_jobs`` loop does)."""
    compute_s: float | None
    """Estimated task compute on the group's critical path (``None``: no estimate yet)."""
    bytes_shuffled: int
    """Map-output bytes the tracker recorded for the group's shuffles."""
    overhead: float
    """The share of ``wall_s`` counted as coordination by the tuner's measure."""
    driver_overhead: float
    """``coordination_s / wall_s``."""
    auto: bool
    """Whether the group's size came from the tuner."""
    action: str
    """The tuner's decision on this group: grow, shrink, keep, skip, or fixed."""
    next_group_size: int
    smoothed_overhead: float | None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything ``Context.metrics()`` reports, at one instant."""

    group_size: int
    """The tuner's G: the size of the next group run with ``group_size="auto"``."""
    last_group_size: int | None
    """Micro-batches of the last completed group."""
    smoothed_overhead: float | None
    """The tuner's smoothed overhead (``None`` before its first sample)."""
    last_group: GroupMetrics | None
    groups: tuple[GroupMetrics, ...]
    """The most recent completed groups (at most ``HISTORY``), oldest first."""
    groups_completed: int
    batches_completed: int
    wall_s: float
    """Sum of the groups' wall times."""
    coordination_s: float
    """Sum of the groups' driver-side coordination."""
    plan_s: float
    place_s: float
    results_s: float
    """Driver-side totals since the cluster started: planning, placement, results."""
    tasks_done: int
    tasks_failed: int
    """Summed over executors (heartbeat counters lag by up to one heartbeat interval)."""
    bytes_shuffled: int
    """Map-output bytes of completed groups, as recorded by the tracker."""
    bytes_fetched: int
    """Shuffle and cached bytes reducers fetched from other executors."""
    executors: tuple[ExecutorMetrics, ...]


def critical_path_compute(tasks: int, batches: int, per_task_s: float, total_cores: int) -> float:
    """Estimated task compute on a group's critical path.

    A micro-batch's tasks share the cluster's cores: its compute takes about
    ``tasks_per_batch * per_task_s / min(cores, tasks_per_batch)``, and the group's
    micro-batches run one after another. Exact for stages as wide as the cluster with
    even tasks; it underestimates narrow stages followed by wide ones.
    """
    if tasks <= 0 or batches <= 0 or per_task_s <= 0:
        return 0.0
    per_batch = tasks / batches
    width = max(1.0, min(float(max(1, total_cores)), per_batch))
    return tasks * per_task_s / width


@dataclass(frozen=True, slots=True)
class GroupStart:
    """Totals read when a group is submitted, to measure what the group added."""

    plan_s: float
    place_s: float
    tasks: int
    compute_s: float


class ComputeRate:
    """Mean compute seconds per task over the latest window in which tasks finished."""

    def __init__(self) -> None:
        self.per_task_s: float | None = None
        self._tasks = 0
        self._compute = 0.0

    def update(self, tasks: int, compute_s: float) -> bool:
        """Take the latest totals; True if they close a new window."""
        if tasks < self._tasks or compute_s < self._compute:  # an executor went away
            self._tasks, self._compute = tasks, compute_s
        elif tasks > self._tasks:
            self.per_task_s = (compute_s - self._compute) / (tasks - self._tasks)
            self._tasks, self._compute = tasks, compute_s
            return True
        return False


class MetricsCollector:
    """Owned by a ``Context``: times its groups, feeds the tuner, builds snapshots."""

    def __init__(self, tuner: GroupSizeTuner) -> None:
        self.tuner = tuner
        self.groups: collections.deque[GroupMetrics] = collections.deque(maxlen=HISTORY)
        self.rate = ComputeRate()
        self.groups_completed = 0
        self.batches_completed = 0
        self.wall_s = 0.0
        self.coordination_s = 0.0
        self.bytes_shuffled = 0
        self._cores: dict[str, int] = {}
        self._window_used = False
        """Whether the tuner has had a sample based on the rate's latest window."""

    # ------------------------------------------------------------------ per group

    def group_started(self, cluster: Cluster) -> GroupStart:
        """Totals at a group's submission."""
        dag, group = cluster.dag, cluster.group
        tasks, compute = _task_totals(self._counters(cluster))
        return GroupStart(
            dag.plan_s if dag else 0.0, group.place_s if group else 0.0, tasks, compute
        )

    def group_finished(
        self,
        cluster: Cluster,
        run: GroupRun,
        size: int,
        wall_s: float,
        started: GroupStart,
        auto: bool,
    ) -> GroupMetrics:
        """Account for a completed group; in auto mode the tuner learns from it.

        The group's task compute is estimated from the compute per task of the tasks
        the executors reported while the group ran (all of them for in-process
        executors; for others, what their heartbeats carried), or, when they reported
        fewer than half of the group's tasks (a group shorter than a heartbeat
        interval), from the latest window in which tasks were reported. With the
        ``non_compute`` measure, the tuner only gets samples whose compute was measured
        after its previous sample: groups that reuse an older window are not
        independent samples (they would all share its error), and are skipped.
        """
        summary = _summary_of(cluster, run.group_id)
        batches = len(run.results)
        tasks = summary.tasks if summary else int(run.stats.get("tasks", 0))
        coordination = summary.coordination_s if summary else run.planned_s + run.results_s
        bytes_shuffled = 0
        tracker = cluster.tracker
        if tracker is not None:
            for shuffle_id in run.shuffle_ids:
                bytes_shuffled += tracker.state.bytes_shuffled(shuffle_id)
        counters = self._counters(cluster)
        done, computed = _task_totals(counters)
        if self.rate.update(done, computed):
            self._window_used = False
        per_task = self.rate.per_task_s
        fresh = not self._window_used
        if done - started.tasks >= max(1, tasks // 2):
            per_task = (computed - started.compute_s) / (done - started.tasks)
            fresh = True
        compute: float | None = None
        if per_task is not None:
            cores = sum(self._cores.get(e, 0) for e in _alive(cluster)) or len(counters)
            compute = min(wall_s, critical_path_compute(tasks, batches, per_task, cores))
        measure = self.tuner.config.measure
        if measure == "driver":
            sample: GroupSample | None = GroupSample(batches, wall_s, coordination)
        elif compute is not None:
            sample = GroupSample(batches, wall_s, wall_s - compute)
        else:
            sample = None
        decision: TunerDecision | None = None
        if auto and sample is not None and (measure == "driver" or fresh):
            decision = self.tuner.observe(sample)
            if decision.action != "skip":
                self._window_used = True
        dag, group = cluster.dag, cluster.group
        metrics = GroupMetrics(
            group_id=run.group_id,
            group_size=size,
            batches=batches,
            tasks=tasks,
            launch_messages=summary.launch_messages if summary else 0,
            wall_s=wall_s,
            coordination_s=coordination,
            launch_s=run.planned_s,
            results_s=run.results_s,
            plan_s=(dag.plan_s if dag else 0.0) - started.plan_s,
            place_s=(group.place_s if group else 0.0) - started.place_s,
            compute_s=compute,
            bytes_shuffled=bytes_shuffled,
            overhead=sample.overhead if sample is not None else 0.0,
            driver_overhead=coordination / wall_s if wall_s > 0 else 0.0,
            auto=auto,
            action=decision.action if decision else ("skip" if auto else "fixed"),
            next_group_size=self.tuner.group_size if auto else size,
            smoothed_overhead=self.tuner.smoothed,
        )
        self.groups.append(metrics)
        self.groups_completed += 1
        self.batches_completed += batches
        self.wall_s += wall_s
        self.coordination_s += coordination
        self.bytes_shuffled += bytes_shuffled
        return metrics

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, cluster: Cluster) -> MetricsSnapshot:
        counters = self._counters(cluster)
        alive = _alive(cluster)
        now = cluster.driver_node.now() if cluster.driver_node else 0.0
        executors = []
        for executor_id in sorted(counters.keys() | alive.keys()):
            c, live = counters.get(executor_id, (_ZERO, False))
            last = alive.get(executor_id)
            executors.append(
                ExecutorMetrics(
                    executor_id=executor_id,
                    alive=last is not None,
                    cores=self._cores.get(executor_id, 0),
                    heartbeat_age_s=max(0.0, now - last) if last is not None else None,
                    live=live,
                    tasks=c.tasks,
                    failed_tasks=c.failed_tasks,
                    compute_s=c.compute_s,
                    deserialize_s=c.deserialize_s,
                    fetch_s=c.fetch_s,
                    notify_s=c.notify_s,
                    queue_wait_s=c.queue_wait_s,
                    bytes_fetched=c.bytes_fetched,
                    notices_sent=c.notices_sent,
                    notices_received=c.notices_received,
                )
            )
        groups = tuple(self.groups)
        last_group = groups[-1] if groups else None
        dag, group, driver = cluster.dag, cluster.group, cluster.driver
        return MetricsSnapshot(
            group_size=self.tuner.group_size,
            last_group_size=last_group.batches if last_group else None,
            smoothed_overhead=self.tuner.smoothed,
            last_group=last_group,
            groups=groups,
            groups_completed=self.groups_completed,
            batches_completed=self.batches_completed,
            wall_s=self.wall_s,
            coordination_s=self.coordination_s,
            plan_s=dag.plan_s if dag else 0.0,
            place_s=group.place_s if group else 0.0,
            results_s=driver.results_s if driver else 0.0,
            tasks_done=sum(e.tasks for e in executors),
            tasks_failed=sum(e.failed_tasks for e in executors),
            bytes_shuffled=self.bytes_shuffled,
            bytes_fetched=sum(e.bytes_fetched for e in executors),
            executors=tuple(executors),
        )

    # ------------------------------------------------------------------ reading actors

    def _counters(self, cluster: Cluster) -> dict[str, tuple[ExecutorCounters, bool]]:
        """Latest counters per executor, and whether they were read live."""
        out: dict[str, tuple[ExecutorCounters, bool]] = {}
        group = cluster.group
        if group is not None:
            for executor_id, info in group.state.executors.items():
                self._cores[executor_id] = info.cores
            for executor_id, reported in group.counters.items():
                out[executor_id] = (reported, False)
        for actor in cluster.executors:  # in-process executors: read them directly
            out[actor.executor_id] = (actor.snapshot(), True)
        return out


_ZERO = ExecutorCounters(0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0)


def _task_totals(counters: dict[str, tuple[ExecutorCounters, bool]]) -> tuple[int, float]:
    tasks, compute = 0, 0.0
    for c, _ in counters.values():
        tasks += c.tasks
        compute += c.compute_s
    return tasks, compute


def _alive(cluster: Cluster) -> dict[str, float]:
    """Registered executors and the driver-clock time of their last heartbeat."""
    if cluster.group is None:
        return {}
    return {e: info.last_heartbeat for e, info in cluster.group.state.executors.items()}


def _summary_of(cluster: Cluster, group_id: int) -> GroupSummary | None:
    driver = cluster.driver
    if driver is None:
        return None
    for summary in reversed(driver.completed):
        if summary.group_id == group_id:
            return summary
        if summary.group_id < group_id - 64:
            break
    return None
