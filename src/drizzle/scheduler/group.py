"""The group scheduler's state: executors, liveness, and placement once per group.

Placement is one decision per group: every (stage position, partition) gets one
executor, the same for all micro-batches of the group, chosen downstream first (the
result stage, then its parents) so that every map task is launched knowing where its
reducers wait. A task that reads a cached partition goes where that partition is;
otherwise executors are taken round-robin in a fixed order, so the same task lands
on the same executor group after group (sticky) while membership is unchanged.
The output is one ``LaunchGroup`` per executor holding all of its tasks, with only
the payloads that executor has not been sent before.
Pure: no I/O; the time comes in with the events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from drizzle.plan import BlockId
from drizzle.scheduler.dag import GroupPlan
from drizzle.wire.messages import (
    Blob,
    BlockInput,
    BlockOutput,
    LaunchGroup,
    ShuffleInput,
    ShuffleOutput,
    TaskSpec,
)


@dataclass
class ExecutorInfo:
    executor_id: str
    cores: int
    last_heartbeat: float
    tasks_finished: int = 0


@dataclass(frozen=True)
class Placement:
    """The outcome of placing one group."""

    launches: dict[str, LaunchGroup]
    produced: dict[BlockId, tuple[str, ...]]
    """Cached partitions the group writes → executors holding them (with copies)."""
    result_tasks: dict[int, int]
    """Micro-batch → number of result partitions."""
    num_tasks: int


class NoExecutors(Exception):
    pass


@dataclass
class GroupSchedulerState:
    heartbeat_timeout: float = 3.0
    executors: dict[str, ExecutorInfo] = field(default_factory=dict)
    blobs_sent: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    to_release: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    next_task_id: int = 0
    launches_sent: int = 0
    cache_replicas: int = 1
    """Copies of each cached partition kept on other executors, so that losing one
    executor does not lose state that later micro-batches read."""
    records: dict[int, GroupRecord] = field(default_factory=dict)
    """Running groups, for recovery."""
    draining: set[str] = field(default_factory=set)
    """Executors leaving gracefully: placed no more, stopped once their groups end."""

    # ------------------------------------------------------------------ membership

    def register(self, executor_id: str, cores: int, now: float) -> None:
        self.executors[executor_id] = ExecutorInfo(executor_id, cores, now)

    def heartbeat(self, executor_id: str, now: float) -> bool:
        info = self.executors.get(executor_id)
        if info is None:
            return False
        info.last_heartbeat = now
        return True

    def next_expiry(self) -> float | None:
        """When the first executor's heartbeats become overdue, if none arrives."""
        if not self.executors:
            return None
        return min(i.last_heartbeat for i in self.executors.values()) + self.heartbeat_timeout

    def expired(self, now: float) -> list[str]:
        """Executors whose heartbeats stopped; they are removed."""
        dead = [
            e
            for e, info in self.executors.items()
            if now - info.last_heartbeat > self.heartbeat_timeout
        ]
        for e in dead:
            self.remove(e)
        return dead

    def drain(self, executor_id: str) -> bool:
        """Place no more work on the executor; True if it was registered."""
        if executor_id not in self.executors:
            return False
        self.draining.add(executor_id)
        return True

    def drained(self) -> list[str]:
        """Draining executors that no running group uses any more; they are removed."""
        busy = {e for record in self.records.values() for e in record.participants}
        done = [e for e in self.draining if e not in busy]
        for e in done:
            self.remove(e)
        return done

    def remove(self, executor_id: str) -> bool:
        self.draining.discard(executor_id)
        self.blobs_sent.pop(executor_id, None)
        self.to_release.pop(executor_id, None)
        return self.executors.pop(executor_id, None) is not None

    def group_completed(self, participants: set[str], shuffle_ids: tuple[int, ...]) -> None:
        for e in participants:
            if e in self.executors:
                self.to_release[e].extend(shuffle_ids)

    # ------------------------------------------------------------------ placement

    def place(self, plan: GroupPlan) -> Placement:
        order = sorted(e for e in self.executors if e not in self.draining)
        if not order:
            raise NoExecutors("no executors are registered")

        def alive_copy(block: BlockId) -> str:
            return next((e for e in plan.materialized.get(block, ()) if e in self.executors), "")

        first = plan.batches[0]
        where: dict[tuple[int, int], str] = {}
        cursor = 0
        for stage in reversed(first.stages):  # downstream first
            for partition, deps in enumerate(stage.tasks):
                preferred = [alive_copy(b) for b in deps.cache_reads if alive_copy(b)]
                if preferred:
                    where[(stage.position, partition)] = preferred[0]
                else:
                    where[(stage.position, partition)] = order[cursor % len(order)]
                    cursor += 1

        # Who reads what: shuffle → executors of its readers; block → remote readers.
        shuffle_readers: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        block_readers: dict[BlockId, set[str]] = defaultdict(set)
        for batch in plan.batches:
            for stage in batch.stages:
                for partition, deps in enumerate(stage.tasks):
                    executor = where[(stage.position, partition)]
                    for shuffle_id, _, reduce_partition in deps.shuffle_reads:
                        shuffle_readers[shuffle_id][executor].add(reduce_partition)
                    for block in deps.cache_reads:
                        if block not in plan.materialized:
                            block_readers[block].add(executor)

        record = GroupRecord(plan)
        tasks: dict[str, list[TaskSpec]] = defaultdict(list)
        produced: dict[BlockId, tuple[str, ...]] = {}
        result_tasks: dict[int, int] = {}
        for batch in plan.batches:
            for stage in batch.stages:
                if stage.is_result:
                    result_tasks[batch.batch] = stage.num_partitions
                for partition, deps in enumerate(stage.tasks):
                    executor = where[(stage.position, partition)]
                    replicas = self._replicas(order, executor)
                    for block in deps.cache_writes:
                        produced[block] = (executor, *replicas)
                    shuffle_output = None
                    if stage.shuffle_id is not None:
                        readers = shuffle_readers.get(stage.shuffle_id, {})
                        shuffle_output = _shuffle_output(
                            stage.shuffle_id, stage.num_reducers, readers
                        )
                    spec = TaskSpec(
                        task_id=self.next_task_id,
                        batch=batch.batch,
                        stage_id=stage.stage_id,
                        partition=partition,
                        attempt=0,
                        payload=stage.payload,
                        blobs=tuple(deps.blobs),
                        shuffle_inputs=tuple(ShuffleInput(*r) for r in deps.shuffle_reads),
                        block_inputs=tuple(
                            BlockInput(d, p, alive_copy((d, p))) for d, p in deps.cache_reads
                        ),
                        shuffle_output=shuffle_output,
                        block_outputs=tuple(
                            BlockOutput(
                                d,
                                p,
                                tuple(sorted(block_readers.get((d, p), set()) - {executor})),
                                replicas,
                            )
                            for d, p in deps.cache_writes
                        ),
                        is_result=stage.is_result,
                    )
                    self.next_task_id += 1
                    tasks[executor].append(spec)
                    record.add(spec, executor, stage.position)

        launches: dict[str, LaunchGroup] = {}
        for executor, specs in tasks.items():
            release = tuple(self.to_release.pop(executor, ()))
            launches[executor] = LaunchGroup(
                plan.group_id, tuple(specs), self.blobs_for(executor, specs, plan), (), release
            )
        self.launches_sent += len(launches)
        self.records[plan.group_id] = record
        return Placement(launches, produced, result_tasks, sum(len(t) for t in tasks.values()))

    def blobs_for(
        self, executor: str, specs: Iterable[TaskSpec], plan: GroupPlan
    ) -> tuple[Blob, ...]:
        """The payloads and data blobs of ``specs`` that ``executor`` was never sent."""
        sent = self.blobs_sent[executor]
        blobs = []
        for spec in specs:
            for digest in (spec.payload, *spec.blobs):
                if digest not in sent:
                    data = plan.payloads.get(digest)
                    if data is None:
                        data = plan.blobs[digest]
                    blobs.append(Blob(digest, data))
                    sent.add(digest)
        return tuple(blobs)

    def _replicas(self, order: list[str], executor: str) -> tuple[str, ...]:
        """Where copies of a cached partition written on ``executor`` go (the next one)."""
        if self.cache_replicas <= 0 or len(order) < 2:
            return ()
        start = order.index(executor) if executor in order else 0
        count = min(self.cache_replicas, len(order) - 1)
        return tuple(order[(start + k) % len(order)] for k in range(1, count + 1))

    def forget_group(self, group_id: int) -> None:
        self.records.pop(group_id, None)


def _shuffle_output(
    shuffle_id: int, num_reducers: int, readers: dict[str, set[int]]
) -> ShuffleOutput:
    notify = tuple(sorted(readers))
    return ShuffleOutput(
        shuffle_id, num_reducers, notify, tuple(tuple(sorted(readers[e])) for e in notify)
    )


@dataclass
class PlacedTask:
    spec: TaskSpec
    executor: str
    position: int


@dataclass
class GroupRecord:
    """What the group scheduler remembers of a running group, for its recovery."""

    plan: GroupPlan
    tasks: dict[int, PlacedTask] = field(default_factory=dict)
    map_task: dict[tuple[int, int], int] = field(default_factory=dict)
    """(shuffle id, map id) → task id."""
    producer: dict[BlockId, int] = field(default_factory=dict)
    """Cached partition written in this group → task id."""
    result_task: dict[tuple[int, int], int] = field(default_factory=dict)
    """(micro-batch, partition) → task id."""
    recoveries: int = 0
    placed_on: set[str] = field(default_factory=set)
    """Every executor ever sent a task of the group (a task moved by a retry leaves
    the group's shuffle blocks it was sent behind): where to release them at its end."""

    def add(self, spec: TaskSpec, executor: str, position: int) -> None:
        """Place a task (again: a recovery or a retry moves it)."""
        self.tasks[spec.task_id] = PlacedTask(spec, executor, position)
        self.placed_on.add(executor)
        if spec.shuffle_output is not None:
            self.map_task[(spec.shuffle_output.shuffle_id, spec.partition)] = spec.task_id
        for block in spec.block_outputs:
            self.producer[(block.dataset_id, block.partition)] = spec.task_id
        if spec.is_result:
            self.result_task[(spec.batch, spec.partition)] = spec.task_id

    @property
    def participants(self) -> frozenset[str]:
        return frozenset(t.executor for t in self.tasks.values())
