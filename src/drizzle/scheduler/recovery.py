"""Recovery of a running group after executors are lost: which tasks run again, where.

Given what survives (map outputs and cached partitions on live executors, results the
driver already has), ``plan_recovery`` walks the group's lineage back from every
result not yet delivered and re-runs only the tasks whose output is gone: tasks that
were on a lost executor and are still needed, and the producers of lost inputs. The
tasks still pending on live executors stay where they are; they are told which
executors are gone and where the readers of each shuffle now are. A task whose attempt
failed is moved the same way, to another live executor where it can. Re-run tasks go to
the live executors, the same partition to the same executor, so a stateful chain
stays local. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace

from drizzle.plan import BlockId
from drizzle.scheduler.group import GroupRecord, PlacedTask, _shuffle_output
from drizzle.wire.messages import (
    BlockInput,
    BlockLocation,
    BlockOutput,
    MapLocation,
    Reroute,
    TaskSpec,
)


class Unrecoverable(Exception):
    """The lost executors held something no task of the group can recompute.

    ``copy_expected``: a copy of it was planned on a live executor that has not
    confirmed it yet (it may still be on its way); asking again later may succeed."""

    def __init__(self, reason: str, *, copy_expected: bool = False) -> None:
        super().__init__(reason)
        self.copy_expected = copy_expected


@dataclass(frozen=True)
class RecoveryPlan:
    rerun: dict[str, list[TaskSpec]]
    """Live executor → tasks it runs again (new attempts of the group's tasks)."""
    reroutes: tuple[Reroute, ...]
    known_map_outputs: tuple[MapLocation, ...]
    known_blocks: tuple[BlockLocation, ...]
    recomputed_maps: int
    """Map tasks that run again (their outputs were lost or never written)."""


def plan_recovery(
    record: GroupRecord,
    alive: list[str],
    lost: set[str],
    delivered: set[tuple[int, int]],
    map_outputs: Mapping[int, Mapping[int, str]],
    blocks: Mapping[BlockId, set[str]],
    *,
    moved: Mapping[int, str] | None = None,
) -> RecoveryPlan:
    """``moved``: task id → executor of its failed attempt; such a task runs again,
    on another live executor where it can."""
    if not alive:
        raise Unrecoverable("no executors are left")
    alive_set = set(alive)
    moved = moved or {}

    def map_alive(shuffle_id: int, map_id: int) -> str:
        holder = map_outputs.get(shuffle_id, {}).get(map_id, "")
        return holder if holder in alive_set else ""

    def leaving(tid: int) -> bool:
        """Runs again elsewhere: lost now or in an earlier recovery, or moved off the
        executor of its failed attempt."""
        return record.tasks[tid].executor not in alive_set or tid in moved

    def block_alive(block: BlockId) -> str:
        return next((e for e in sorted(blocks.get(block, ())) if e in alive_set), "")

    # Every task some undelivered result still depends on.
    needed: set[int] = set()
    stack = [tid for key, tid in record.result_task.items() if key not in delivered]
    while stack:
        tid = stack.pop()
        if tid in needed:
            continue
        needed.add(tid)
        placed = record.tasks[tid]
        on_lost = leaving(tid)
        for inp in placed.spec.shuffle_inputs:
            for map_id in range(inp.num_maps):
                if not map_alive(inp.shuffle_id, map_id):
                    stack.append(record.map_task[(inp.shuffle_id, map_id)])
        for b in placed.spec.block_inputs:
            key = (b.dataset_id, b.partition)
            if block_alive(key) or (b.location in alive_set and not on_lost):
                continue
            producer = record.producer.get(key)
            if producer is not None:
                stack.append(producer)
            elif b.location not in alive_set:
                planned = record.plan.materialized.get(key, ())
                raise Unrecoverable(
                    f"cached partition {key[1]} of dataset {key[0]} was only on "
                    f"{', '.join(sorted(lost))}",
                    copy_expected=any(e in alive_set for e in planned),
                )

    # Re-run what was on a lost executor; a map whose output was lost with its
    # executor is such a task too. Same partition → same live executor. A task that
    # reads a cached partition written by an unfinished task of this group goes where
    # that writer runs: the writer's notices still name the old readers, but a
    # partition stored locally wakes its local readers. Writers come first (earlier
    # micro-batch, upstream stage), so their new home is known when readers are placed.
    rerun_ids = sorted(
        (tid for tid in needed if leaving(tid)),
        key=lambda t: (record.tasks[t].spec.batch, record.tasks[t].spec.stage_id, t),
    )
    new_home: dict[int, str] = {}
    for tid in rerun_ids:
        placed = record.tasks[tid]
        writer_homes = [
            new_home.get(w, record.tasks[w].executor)
            for b in placed.spec.block_inputs
            if not block_alive((b.dataset_id, b.partition))
            and (w := record.producer.get((b.dataset_id, b.partition))) is not None
        ]
        live_writers = [e for e in writer_homes if e in alive_set]
        others = [e for e in alive if e != moved.get(tid)] or alive
        new_home[tid] = (
            live_writers[0]
            if live_writers
            else others[(placed.position * 7919 + placed.spec.partition) % len(others)]
        )

    def home(tid: int) -> str:
        return new_home.get(tid, record.tasks[tid].executor)

    # Readers of each shuffle and each in-group cached partition, after the move.
    readers: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    block_readers: dict[BlockId, set[str]] = defaultdict(set)
    for tid in needed:
        spec = record.tasks[tid].spec
        for inp in spec.shuffle_inputs:
            readers[inp.shuffle_id][home(tid)].add(inp.partition)
        for b in spec.block_inputs:
            block_readers[(b.dataset_id, b.partition)].add(home(tid))

    rerun: dict[str, list[TaskSpec]] = defaultdict(list)
    recomputed_maps = 0
    for tid in rerun_ids:
        placed = record.tasks[tid]
        spec, where = placed.spec, new_home[tid]
        output = spec.shuffle_output
        if output is not None:
            recomputed_maps += tid not in moved
            output = _shuffle_output(
                output.shuffle_id, output.num_reducers, readers.get(output.shuffle_id, {})
            )
        spec = replace(
            spec,
            attempt=spec.attempt + 1,
            shuffle_output=output,
            block_inputs=tuple(
                BlockInput(b.dataset_id, b.partition, block_alive((b.dataset_id, b.partition)))
                for b in spec.block_inputs
            ),
            block_outputs=tuple(
                BlockOutput(
                    b.dataset_id,
                    b.partition,
                    tuple(sorted(block_readers.get((b.dataset_id, b.partition), set()) - {where})),
                    tuple(e for e in b.replicas if e in alive_set and e != where)
                    or tuple(e for e in alive if e != where)[:1],
                )
                for b in spec.block_outputs
            ),
        )
        record.add(spec, where, placed.position)
        rerun[where].append(spec)

    shuffles = {inp.shuffle_id for tid in needed for inp in record.tasks[tid].spec.shuffle_inputs}
    reroutes = tuple(_as_reroute(sid, readers[sid]) for sid in sorted(shuffles))
    known_maps = tuple(
        MapLocation(sid, m, e)
        for sid in sorted(shuffles)
        for m, e in sorted(map_outputs.get(sid, {}).items())
        if e in alive_set
    )
    needed_blocks = {
        (b.dataset_id, b.partition) for tid in needed for b in record.tasks[tid].spec.block_inputs
    }
    known_blocks = tuple(
        BlockLocation(d, p, block_alive((d, p)))
        for d, p in sorted(needed_blocks)
        if block_alive((d, p))
    )
    return RecoveryPlan(dict(rerun), reroutes, known_maps, known_blocks, recomputed_maps)


def _as_reroute(shuffle_id: int, readers: dict[str, set[int]]) -> Reroute:
    output = _shuffle_output(shuffle_id, 0, readers)
    return Reroute(shuffle_id, output.notify, output.notify_partitions)


__all__ = ["PlacedTask", "RecoveryPlan", "Unrecoverable", "plan_recovery"]
