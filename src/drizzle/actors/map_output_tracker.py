"""The map output tracker actor: records asynchronous map-output notices."""

from __future__ import annotations

from typing import Any

from drizzle.actors.internal import (
    ExecutorLeft,
    ExecutorLost,
    GroupAborted,
    GroupCompleted,
    RecoverGroup,
    RecoverWithOutputs,
)
from drizzle.actors.node import Actor, Node, UnexpectedMessage
from drizzle.scheduler.tracker import MapOutputTrackerState
from drizzle.wire.messages import BlockReady, MapOutputReady, MapOutputsReady


class MapOutputTrackerActor(Actor):
    name = "tracker"
    handles = (MapOutputReady, MapOutputsReady, BlockReady)

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.state = MapOutputTrackerState()

    def receive(self, peer: str, sender: str, message: Any) -> None:
        if isinstance(message, (MapOutputReady, MapOutputsReady)):
            if message.executor_id != peer:
                raise UnexpectedMessage(f"notice from {peer} claims executor {message.executor_id}")
            notices = message.notices() if isinstance(message, MapOutputsReady) else [message]
            for notice in notices:
                self.state.record(notice)
        elif isinstance(message, BlockReady):
            if message.executor_id != peer:
                raise UnexpectedMessage(
                    f"block notice from {peer} claims executor {message.executor_id}"
                )
            self.state.record_block(message.dataset_id, message.partition, peer)
        elif isinstance(message, RecoverGroup):
            self.node.post(
                self.node.address,
                "group",
                RecoverWithOutputs(
                    message.group_id,
                    message.lost,
                    message.delivered,
                    dict(self.state.outputs_snapshot()),
                    {k: set(v) for k, v in self.state.blocks.items()},
                    message.retry,
                ),
                self.name,
            )
        elif isinstance(message, GroupCompleted):
            self.state.release(message.shuffle_ids)
        elif isinstance(message, GroupAborted):
            pass
        elif isinstance(message, (ExecutorLeft, ExecutorLost)):
            self.state.executor_lost(message.executor_id)
        else:
            raise UnexpectedMessage(f"tracker does not handle {type(message).__name__}")
