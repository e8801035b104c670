"""A node of a simulated cluster: the real ``Node`` on the simulated network's clock.

Its duration counters read the virtual clock, envelopes the network delivers go
straight to its actors (no mailbox task in between), and events between its own actors
go through the network so that they cost the node's CPU. Everything else is ``Node``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drizzle.actors.node import Node
from drizzle.wire.codec import Envelope

if TYPE_CHECKING:
    from drizzle.sim.network import SimTransport


class SimNode(Node):
    def __init__(self, transport: SimTransport) -> None:
        super().__init__(transport)
        self.sim = transport.sim
        self.clock = self.loop.time
        transport.sink = self._deliver

    @property
    def closed(self) -> bool:
        return self._closed

    def post(self, peer: str, target: str, message: Any, sender: str) -> None:
        if peer == self.address:
            if not self._closed:
                self.sim.local(self, Envelope(target, sender, message))
            return
        super().post(peer, target, message, sender)

    def deliver_local(self, envelope: Envelope) -> None:
        self._deliver(self.address, envelope)
