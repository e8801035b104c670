"""The group scheduler's state: executors, liveness, and placement once per group.

Placement is one decision per group: every (stage position, partition) gets one
executor, the same for all micro-batches of the group, chosen downstream first (the
result stage, then its parents) so that every map task is launched knowing where its
reducers wait. A task that reads a cached partition goes where that partition is;
otherwise executors are taken round-robin in a fixed order, so the same task lands
on the same executor group after group (sticky) while membership is unchanged.
The output is one ``LaunchGroup`` per executor holding all of its tasks, with only
the payloads that executor has not been sent before. When every later micro-batch is
the first one renamed (``drizzle.scheduler.renaming``), only the first one is placed
task by task; each later one is a ``BatchRepeat`` of a few fields.
Pure: no I/O; the time comes in with the events.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from drizzle.plan import BlockId
from drizzle.scheduler.dag import GroupPlan
from drizzle.scheduler.renaming import Renaming
from drizzle.wire.messages import (
    BatchRepeat,
    Blob,
    BlockInput,
    BlockOutput,
    LaunchGroup,
    ShuffleInput,
    ShuffleOutput,
    TaskSpec,
)
from drizzle.wire.repeat import repeat_tasks


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

    def _alive_copy(self, plan: GroupPlan, block: BlockId) -> str:
        """A live executor holding a copy of a cached partition the plan reads, or ""."""
        return next((e for e in plan.materialized.get(block, ()) if e in self.executors), "")

    def _where(self, plan: GroupPlan, order: list[str]) -> dict[tuple[int, int], str]:
        """The group's one placement decision: (stage position, partition) → executor."""
        where: dict[tuple[int, int], str] = {}
        cursor = 0
        for stage in reversed(plan.batches[0].stages):  # downstream first
            for partition, deps in enumerate(stage.tasks):
                copies = (self._alive_copy(plan, b) for b in deps.cache_reads)
                preferred = next((e for e in copies if e), "")
                if preferred:
                    where[(stage.position, partition)] = preferred
                else:
                    where[(stage.position, partition)] = order[cursor % len(order)]
                    cursor += 1
        return where

    def _order(self) -> list[str]:
        return sorted(e for e in self.executors if e not in self.draining)

    def _repeats(
        self, plan: GroupPlan, where: dict[tuple[int, int], str]
    ) -> tuple[tuple[Renaming, ...], dict[BlockId, set[str]]] | None:
        """How the group's later micro-batches repeat its first one, with the readers
        of the cached partitions they read under new names; ``None`` if they do not."""
        repeats = plan.repeats if len(plan.batches) > 1 else None
        if not repeats:
            return None
        readers = _renamed_readers(plan, where, repeats)
        return None if readers is None else (repeats, readers)

    def tasks_placed_one_by_one(self, plan: GroupPlan) -> int:
        """How many tasks ``place(plan)`` would plan and place one by one, now: only the
        first micro-batch's when the others go as its repeats. No state changes."""
        order = self._order()
        batches = plan.batches
        if order and self._repeats(plan, self._where(plan, order)) is not None:
            batches = batches[:1]
        return sum(s.num_partitions for b in batches for s in b.stages)

    def place(self, plan: GroupPlan) -> Placement:
        order = self._order()
        if not order:
            raise NoExecutors("no executors are registered")
        first = plan.batches[0]
        where = self._where(plan, order)
        found = self._repeats(plan, where)
        repeats = found[0] if found else ()

        # Who reads what: shuffle → executors of its readers; block → remote readers.
        shuffle_readers: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
        block_readers: dict[BlockId, set[str]] = defaultdict(set, found[1] if found else {})
        explicit = range(1) if repeats else range(len(plan.batches))
        for index in explicit:
            for stage in first.stages:
                for partition, deps in enumerate(plan.stage_tasks(index, stage.position)):
                    executor = where[(stage.position, partition)]
                    for shuffle_id, _, reduce_partition in deps.shuffle_reads:
                        shuffle_readers[shuffle_id][executor].add(reduce_partition)
                    for block in deps.cache_reads:
                        if block not in plan.materialized:
                            block_readers[block].add(executor)

        record = GroupRecord(plan)
        tasks: dict[str, list[TaskSpec]] = defaultdict(list)
        produced: dict[BlockId, tuple[str, ...]] = {}
        result_tasks = {
            b.batch: s.num_partitions for b in plan.batches for s in b.stages if s.is_result
        }
        replicas_of = self._replicas_of(order, set(where.values()))
        writes: list[tuple[BlockId, str]] = []
        first_task = self.next_task_id
        for index in explicit:
            batch = plan.batches[index]
            for stage in batch.stages:
                shuffle_output = None
                if stage.shuffle_id is not None:
                    readers = shuffle_readers.get(stage.shuffle_id, {})
                    shuffle_output = _shuffle_output(stage.shuffle_id, stage.num_reducers, readers)
                for partition, deps in enumerate(plan.stage_tasks(index, stage.position)):
                    executor = where[(stage.position, partition)]
                    replicas = replicas_of[executor]
                    for block in deps.cache_writes:
                        produced[block] = (executor, *replicas)
                        writes.append((block, executor))
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
                            BlockInput(d, p, self._alive_copy(plan, (d, p)))
                            for d, p in deps.cache_reads
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

        batch_repeats: tuple[BatchRepeat, ...] = ()
        if repeats:
            per_batch = self.next_task_id - first_task
            base_stage = first.stages[0].stage_id
            batch_repeats = tuple(
                BatchRepeat(
                    batch=b.batch,
                    task_offset=per_batch * (i + 1),
                    stage_offset=r.stage_offset,
                    shuffle_offset=r.shuffle_offset,
                    base_stage=base_stage,
                    payloads=r.payloads,
                    datasets_from=tuple(r.datasets),
                    datasets_to=tuple(r.datasets.values()),
                )
                for i, (b, r) in enumerate(zip(plan.batches[1:], repeats, strict=True))
            )
            self.next_task_id += per_batch * len(repeats)
            for r in repeats:
                for block, executor in writes:
                    produced[r.block(block)] = (executor, *replicas_of[executor])
            record.repeat(batch_repeats)

        launches: dict[str, LaunchGroup] = {}
        for executor, specs in tasks.items():
            release = tuple(self.to_release.pop(executor, ()))
            launches[executor] = LaunchGroup(
                plan.group_id,
                tuple(specs),
                self.blobs_for(executor, specs, plan, batch_repeats),
                (),
                release,
                repeats=batch_repeats,
            )
        self.launches_sent += len(launches)
        self.records[plan.group_id] = record
        num_tasks = sum(len(t) for t in tasks.values()) * (1 + len(batch_repeats))
        return Placement(launches, produced, result_tasks, num_tasks)

    def blobs_for(
        self,
        executor: str,
        specs: Iterable[TaskSpec],
        plan: GroupPlan,
        repeats: tuple[BatchRepeat, ...] = (),
    ) -> tuple[Blob, ...]:
        """The payloads and data blobs of ``specs`` (and of the micro-batches repeating
        them) that ``executor`` was never sent."""
        sent = self.blobs_sent[executor]
        blobs = []
        specs = tuple(specs)
        digests = [d for spec in specs for d in (spec.payload, *spec.blobs)]
        if repeats:
            used = {spec.stage_id - repeats[0].base_stage for spec in specs}
            digests.extend(r.payloads[i] for r in repeats for i in sorted(used))
        for digest in digests:
            if digest not in sent:
                data = plan.payloads.get(digest)
                if data is None:
                    data = plan.blobs[digest]
                blobs.append(Blob(digest, data))
                sent.add(digest)
        return tuple(blobs)

    def _replicas_of(self, order: list[str], writers: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Where copies of a cached partition written on each of ``writers`` go: the
        executors after it in ``order`` (a writer not in it, one that is draining, has
        its copies at the start of ``order``)."""
        position = {e: i for i, e in enumerate(order)}
        out = {}
        for writer in writers:
            start = position.get(writer, -1)
            others = len(order) - (start >= 0)
            count = min(self.cache_replicas, others) if self.cache_replicas > 0 else 0
            out[writer] = tuple(order[(start + k) % len(order)] for k in range(1, count + 1))
        return out

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
    """What the group scheduler remembers of a running group, for its recovery.

    A group launched as its first micro-batch plus repeats keeps only the first
    micro-batch's tasks until a recovery or a retry asks for the others; they are then
    expanded with the executors' own code (``drizzle.wire.repeat``), to the same ids.
    """

    plan: GroupPlan
    recoveries: int = 0
    placed_on: set[str] = field(default_factory=set)
    """Every executor ever sent a task of the group (a task moved by a retry leaves
    the group's shuffle blocks it was sent behind): where to release them at its end."""
    _tasks: dict[int, PlacedTask] = field(default_factory=dict)
    _map_task: dict[tuple[int, int], int] = field(default_factory=dict)
    _producer: dict[BlockId, int] = field(default_factory=dict)
    _result_task: dict[tuple[int, int], int] = field(default_factory=dict)
    _unexpanded: tuple[BatchRepeat, ...] = ()

    def repeat(self, repeats: tuple[BatchRepeat, ...]) -> None:
        """The group's later micro-batches are its tasks so far, repeated."""
        self._unexpanded = repeats

    def _expand(self) -> None:
        repeats, self._unexpanded = self._unexpanded, ()
        base = list(self._tasks.values())
        for repeat in repeats:
            specs = repeat_tasks([placed.spec for placed in base], repeat)
            for placed, spec in zip(base, specs, strict=True):
                self.add(spec, placed.executor, placed.position)

    @property
    def tasks(self) -> dict[int, PlacedTask]:
        self._expand()
        return self._tasks

    @property
    def map_task(self) -> dict[tuple[int, int], int]:
        """(shuffle id, map id) → task id."""
        self._expand()
        return self._map_task

    @property
    def producer(self) -> dict[BlockId, int]:
        """Cached partition written in this group → task id."""
        self._expand()
        return self._producer

    @property
    def result_task(self) -> dict[tuple[int, int], int]:
        """(micro-batch, partition) → task id."""
        self._expand()
        return self._result_task

    def add(self, spec: TaskSpec, executor: str, position: int) -> None:
        """Place a task (again: a recovery or a retry moves it)."""
        self._tasks[spec.task_id] = PlacedTask(spec, executor, position)
        self.placed_on.add(executor)
        if spec.shuffle_output is not None:
            self._map_task[(spec.shuffle_output.shuffle_id, spec.partition)] = spec.task_id
        for block in spec.block_outputs:
            self._producer[(block.dataset_id, block.partition)] = spec.task_id
        if spec.is_result:
            self._result_task[(spec.batch, spec.partition)] = spec.task_id

    @property
    def participants(self) -> frozenset[str]:
        """Executors holding a task of the group (a repeat does not move any)."""
        return frozenset(t.executor for t in self._tasks.values())


def _renamed_readers(
    plan: GroupPlan, where: dict[tuple[int, int], str], repeats: tuple[Renaming, ...]
) -> dict[BlockId, set[str]] | None:
    """The executors reading each cached partition that a later micro-batch reads under
    a new name, if renaming the first micro-batch's placed tasks gives every later
    one's, cached-partition locations and notices included; else ``None``.

    Renamed reads must be of partitions produced in the group (so their tasks wait for
    a notice); reads that keep their name, of partitions that existed before it. Every
    dataset the first micro-batch writes must be renamed by each later one, and every
    renamed write must notify the executors the first one's write notifies.
    """
    reads: dict[int, list[tuple[BlockId, str]]] = defaultdict(list)
    writes: list[tuple[BlockId, str]] = []
    for stage in plan.batches[0].stages:
        for partition, deps in enumerate(stage.tasks):
            executor = where[(stage.position, partition)]
            for block in deps.cache_reads:
                reads[block[0]].append((block, executor))
            writes.extend((block, executor) for block in deps.cache_writes)
    readers: dict[BlockId, set[str]] = defaultdict(set)
    if not writes and not any(r.datasets for r in repeats):
        return readers
    written = {block[0] for block, _ in writes}
    unmaterialized = {
        d for d, rs in reads.items() if any(b not in plan.materialized for b, _ in rs)
    }
    for r in repeats:
        if not (written | unmaterialized) <= r.datasets.keys():
            return None
        for dataset in r.datasets.keys() & reads.keys():
            for block, executor in reads[dataset]:
                renamed = r.block(block)
                if renamed in plan.materialized:
                    return None
                readers[renamed].add(executor)
    empty: set[str] = set()
    same = all(
        readers.get(r.block(block), empty) - {w} == readers.get(block, empty) - {w}
        for r in repeats
        for block, w in writes
    )
    return readers if same else None
