"""The group scheduler actor: membership, heartbeats, and one launch per executor per group."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import cloudpickle

from drizzle import __version__
from drizzle.actors.internal import (
    BlocksMoved,
    ExecutorJoined,
    ExecutorLeft,
    ExecutorLost,
    GroupAborted,
    GroupCompleted,
    GroupLaunched,
    GroupNotLaunched,
    GroupNotRecovered,
    GroupPlaced,
    GroupRecovered,
    PlaceGroup,
    RecoverGroup,
    RecoverWithOutputs,
)
from drizzle.actors.node import Actor, Node, UnexpectedMessage
from drizzle.errors import ClusterError
from drizzle.scheduler.group import GroupSchedulerState, NoExecutors
from drizzle.scheduler.recovery import Unrecoverable, plan_recovery
from drizzle.wire.messages import (
    PROTOCOL_VERSION,
    CancelGroup,
    ExecutorCounters,
    ExecutorLeaving,
    ExecutorRegistered,
    FetchFailedReport,
    Heartbeat,
    HeartbeatAck,
    LaunchGroup,
    RegisterExecutor,
    RegistrationRefused,
    StopExecutor,
)

log = logging.getLogger("drizzle.group")

DRIVER_SIDE = ("driver", "dag", "tracker")


def version_mismatch(msg: RegisterExecutor) -> str:
    """Empty if the executor runs what the driver runs, else what differs."""
    ours = {
        "protocol": str(PROTOCOL_VERSION),
        "drizzle": __version__,
        "python": sys.version.split()[0],
        "cloudpickle": cloudpickle.__version__,
    }
    theirs = {
        "protocol": str(msg.protocol_version),
        "drizzle": msg.drizzle_version,
        "python": msg.python_version,
        "cloudpickle": msg.cloudpickle_version,
    }
    diffs = [f"{k} {theirs[k]} (driver has {ours[k]})" for k in ours if ours[k] != theirs[k]]
    return ", ".join(diffs)


class GroupSchedulerActor(Actor):
    name = "group"
    handles = (Heartbeat, RegisterExecutor, FetchFailedReport, ExecutorLeaving)

    def __init__(
        self, node: Node, *, heartbeat_interval: float = 0.5, heartbeat_timeout: float = 3.0
    ) -> None:
        super().__init__(node)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.state = GroupSchedulerState(heartbeat_timeout=heartbeat_timeout)
        self._copy_waits: dict[int, int] = {}
        """Group → times its recovery waited for a cached partition's copy to land."""
        self.place_s = 0.0
        """Seconds spent placing groups and building their launch messages."""
        self.counters: dict[str, ExecutorCounters] = {}
        """Latest counters reported by each executor's heartbeat."""
        self._checker = node.spawn(self._check_liveness(), name="liveness")

    async def _check_liveness(self) -> None:
        """Every heartbeat interval, and at the moment an executor's heartbeats become
        overdue (so that a loss is detected at the timeout, not up to an interval later)."""
        while True:
            began = self.node.now()
            wait = self.heartbeat_interval
            due = self.state.next_expiry()
            if due is not None:
                wait = min(wait, max(due - began, 0.0) + 0.001)
            await asyncio.sleep(wait)
            now = self.node.now()
            if now - began - wait > self.heartbeat_interval:
                # This loop itself ran late: heartbeats may be waiting unread in the
                # mailbox. Judge liveness once they have been read, next round.
                continue
            for executor_id in self.state.expired(now):
                self._lost(executor_id, f"no heartbeat for {self.heartbeat_timeout:.1f}s")

    def _lost(self, executor_id: str, reason: str) -> None:
        log.warning("executor %s lost: %s", executor_id, reason)
        for target in DRIVER_SIDE:
            self.node.post(self.node.address, target, ExecutorLost(executor_id, reason), self.name)
        self.node.spawn(self.node.forget_peer(executor_id), name="forget")

    def receive(self, peer: str, sender: str, message: Any) -> None:
        if isinstance(message, Heartbeat):
            if message.counters is not None:
                self.counters[peer] = message.counters
            if self.state.heartbeat(peer, self.node.now()):
                self.node.post(peer, sender, HeartbeatAck(message.seq), self.name)
            else:
                self.node.post(
                    peer, sender, StopExecutor("this executor was declared lost"), self.name
                )
        elif isinstance(message, ExecutorLeaving):
            self.decommission(peer, message.reason)
        elif isinstance(message, RecoverWithOutputs):
            self._recover(message)
        elif isinstance(message, FetchFailedReport):
            if self.state.remove(message.peer):
                self._lost(message.peer, f"fetch failed from {peer}: {message.reason}")
        elif isinstance(message, PlaceGroup):
            self._place(message)
        elif isinstance(message, RegisterExecutor):
            self._register(peer, sender, message)
        elif isinstance(message, GroupCompleted):
            record = self.state.records.get(message.group_id)
            holders = record.placed_on if record else set(message.participants)
            self.state.group_completed(holders, message.shuffle_ids)
            self.state.forget_group(message.group_id)
            self._copy_waits.pop(message.group_id, None)
            self._release_drained()
        elif isinstance(message, GroupAborted):
            self.state.forget_group(message.group_id)
            self._copy_waits.pop(message.group_id, None)
            self._release_drained()
            for executor in message.participants:
                if executor in self.state.executors:
                    self.node.post(
                        executor,
                        "executor",
                        CancelGroup(message.group_id, message.reason),
                        self.name,
                    )
        else:
            raise UnexpectedMessage(f"group scheduler does not handle {type(message).__name__}")

    def _register(self, peer: str, sender: str, msg: RegisterExecutor) -> None:
        mismatch = version_mismatch(msg)
        if mismatch:
            reason = f"executor {peer} refused: version mismatch: {mismatch}"
            log.error(reason)
            self.node.post(peer, sender, RegistrationRefused(msg.executor_id, reason), self.name)
            return
        if msg.executor_id != peer or msg.cores <= 0:
            reason = f"executor {peer} refused: bad registration {msg!r}"
            self.node.post(peer, sender, RegistrationRefused(msg.executor_id, reason), self.name)
            return
        self.state.register(peer, msg.cores, self.node.now())
        self.node.post(
            peer,
            sender,
            ExecutorRegistered(peer, self.heartbeat_interval, self.heartbeat_timeout),
            self.name,
        )
        self.node.post(self.node.address, "driver", ExecutorJoined(peer, msg.cores), self.name)

    def _place(self, message: PlaceGroup) -> None:
        plan = message.plan
        began = self.node.clock()
        try:
            placement = self.state.place(plan)
        except NoExecutors as exc:
            self.node.post(
                self.node.address,
                "driver",
                GroupNotLaunched(plan.group_id, ClusterError(str(exc))),
                self.name,
            )
            return
        self.node.post(
            self.node.address, "dag", GroupPlaced(plan.group_id, placement.produced), self.name
        )
        self.node.post(
            self.node.address,
            "driver",
            GroupLaunched(
                plan.group_id,
                tuple(b.batch for b in plan.batches),
                placement.result_tasks,
                frozenset(placement.launches),
                plan.shuffle_ids,
                placement.num_tasks,
                len(placement.launches),
            ),
            self.name,
        )
        for executor, launch in placement.launches.items():
            self.node.post(executor, "executor", launch, self.name)
        self.place_s += self.node.clock() - began

    def decommission(self, executor_id: str, reason: str) -> bool:
        """Let an executor leave at its next group boundary, without recomputation."""
        if not self.state.drain(executor_id):
            return False
        log.info("executor %s leaving: %s", executor_id, reason)
        self._release_drained()
        return True

    def _release_drained(self) -> None:
        for executor_id in self.state.drained():
            self.node.post(executor_id, "executor", StopExecutor("decommissioned"), self.name)
            for target in DRIVER_SIDE:
                self.node.post(self.node.address, target, ExecutorLeft(executor_id), self.name)

    def _recover(self, msg: RecoverWithOutputs) -> None:
        record = self.state.records.get(msg.group_id)
        if record is None:
            return
        alive = sorted(self.state.executors)
        map_outputs = msg.map_outputs
        retried: dict[int, str] = {}
        retry = msg.retry
        if retry is not None:
            placed = record.tasks.get(retry.task_id)
            if (
                placed is None
                or placed.executor != retry.executor_id
                or placed.spec.attempt + 1 != retry.attempt
            ):
                return  # stale: a recovery has run the task elsewhere since
            retried[retry.task_id] = retry.executor_id
            map_outputs = {sid: dict(maps) for sid, maps in map_outputs.items()}
            for loc in retry.map_outputs:
                map_outputs.setdefault(loc.shuffle_id, {}).setdefault(loc.map_id, loc.executor_id)
        try:
            plan = plan_recovery(
                record,
                alive,
                set(msg.lost),
                set(msg.delivered),
                map_outputs,
                msg.blocks,
                moved=retried,
            )
        except Unrecoverable as exc:
            if exc.copy_expected and self._wait_for_copies(msg):
                return
            self.node.post(
                self.node.address, "driver", GroupNotRecovered(msg.group_id, str(exc)), self.name
            )
            return
        self._copy_waits.pop(msg.group_id, None)
        if retry is None:
            record.recoveries += 1
        targets = (record.participants | set(plan.rerun)) - msg.lost
        for executor in sorted(targets):
            if executor not in self.state.executors:
                continue
            specs = plan.rerun.get(executor, [])
            launch = LaunchGroup(
                msg.group_id,
                tuple(specs),
                self.state.blobs_for(executor, specs, record.plan),
                plan.known_map_outputs if specs else (),
                (),
                tuple(sorted(msg.lost)),
                plan.known_blocks,
                plan.reroutes,
            )
            self.node.post(executor, "executor", launch, self.name)
        moved = {
            (b.dataset_id, b.partition): (executor, *b.replicas)
            for executor, specs in plan.rerun.items()
            for spec in specs
            for b in spec.block_outputs
        }
        if moved:
            self.node.post(self.node.address, "dag", BlocksMoved(msg.group_id, moved), self.name)
        relaunched = sum(len(s) for s in plan.rerun.values())
        if retry is not None:
            log.info(
                "group %d: task %d runs again on %s (attempt %d)",
                msg.group_id,
                retry.task_id,
                record.tasks[retry.task_id].executor,
                retry.attempt + 1,
            )
        else:
            log.warning(
                "group %d recovered from the loss of %s: %d task(s) run again, %d of them maps",
                msg.group_id,
                ", ".join(sorted(msg.lost)),
                relaunched,
                plan.recomputed_maps,
            )
        self.node.post(
            self.node.address,
            "driver",
            GroupRecovered(
                msg.group_id,
                record.participants,
                plan.recomputed_maps,
                relaunched,
                retried_task=retry is not None,
            ),
            self.name,
        )

    def _wait_for_copies(self, msg: RecoverWithOutputs) -> bool:
        """A cached partition's copy may still be on its way to a live executor: ask
        the tracker again each heartbeat interval, for up to the heartbeat timeout."""
        waited = self._copy_waits.get(msg.group_id, 0)
        if waited * self.heartbeat_interval >= self.heartbeat_timeout:
            self._copy_waits.pop(msg.group_id, None)
            return False
        self._copy_waits[msg.group_id] = waited + 1
        again = RecoverGroup(msg.group_id, msg.lost, msg.delivered, msg.retry)
        self.node.loop.call_later(
            self.heartbeat_interval,
            self.node.post,
            self.node.address,
            "tracker",
            again,
            self.name,
        )
        return True

    def on_peer_unreachable(self, peer: str, error: Exception) -> None:
        if self.state.remove(peer):
            self._lost(peer, f"unreachable: {error}")

    async def aclose(self) -> None:
        for executor in list(self.state.executors):
            self.node.post(executor, "executor", StopExecutor("driver shutting down"), self.name)
