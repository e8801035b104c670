"""The DAG scheduler actor: plans each group and keeps the cache bookkeeping."""

from __future__ import annotations

import logging
from typing import Any

from drizzle.actors.internal import (
    BlocksMoved,
    ExecutorLeft,
    ExecutorLost,
    GroupAborted,
    GroupCompleted,
    GroupNotLaunched,
    GroupPlaced,
    PlaceGroup,
    PlanGroup,
)
from drizzle.actors.node import Actor, Node, UnexpectedMessage
from drizzle.scheduler.dag import DagState

log = logging.getLogger("drizzle.dag")


class DagSchedulerActor(Actor):
    name = "dag"

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.state = DagState()
        self.plan_s = 0.0
        """Seconds spent planning groups (stage building and pickling payloads)."""

    def receive(self, peer: str, sender: str, message: Any) -> None:
        if isinstance(message, PlanGroup):
            began = self.node.clock()
            try:
                plan = self.state.plan_group(message.group_id, message.requests)
            except Exception as exc:
                self.plan_s += self.node.clock() - began
                self.node.post(
                    self.node.address, "driver", GroupNotLaunched(message.group_id, exc), self.name
                )
                return
            self.plan_s += self.node.clock() - began
            self.node.post(self.node.address, "group", PlaceGroup(plan), self.name)
        elif isinstance(message, BlocksMoved):
            self.state.blocks_moved(message.group_id, message.moved)
        elif isinstance(message, GroupPlaced):
            self.state.group_placed(message.group_id, message.produced)
        elif isinstance(message, GroupCompleted):
            self.state.group_completed(message.group_id)
        elif isinstance(message, GroupAborted):
            self.state.group_aborted(message.group_id)
        elif isinstance(message, (ExecutorLeft, ExecutorLost)):
            self.state.executor_lost(message.executor_id)
        else:
            raise UnexpectedMessage(f"dag does not handle {type(message).__name__}")
