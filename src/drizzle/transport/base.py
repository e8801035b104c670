"""The transport contract shared by every backend.

A transport is one endpoint of a node: it receives envelopes from any peer and sends
envelopes to peers named by address. Guarantees every backend must keep (and that
``tests/transport/test_contract.py`` checks on each):

* per-peer FIFO: envelopes from one sender to one receiver arrive in send order;
* the sender's address reported by ``recv`` is the transport's, not a field of the
  message;
* ``send`` to a peer that does not exist or does not answer within the connect deadline
  raises ``PeerUnreachable`` instead of dropping silently;
* ``close`` ends pending ``recv`` calls with ``TransportClosed``; a new endpoint may
  then bind the same address and peers reach it again.

Depends on the codec only for the ``Envelope`` type.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drizzle.wire.codec import DEFAULT_MAX_FRAME, Envelope

if TYPE_CHECKING:
    from drizzle.transport.security import CurveKeys


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Limits and deadlines common to every backend."""

    max_frame: int = DEFAULT_MAX_FRAME
    """Largest frame sent or accepted, in bytes."""
    connect_timeout: float = 5.0
    """Seconds a first send to a new peer waits for the connection before giving up."""
    mailbox_size: int = 100_000
    """Envelopes buffered on receipt before senders are made to wait (backpressure)."""
    insecure: bool = False
    """Allow listening on a non-loopback address without authentication."""
    curve: CurveKeys | None = field(default=None, repr=False)
    """Authenticate and encrypt every connection with these CURVE keys (zmq only);
    None: no authentication, which only loopback and ipc addresses allow by default."""


class Transport(abc.ABC):
    """One node's endpoint."""

    address: str
    """The address peers use to reach this endpoint (resolved after ``start``)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind the endpoint; after this, ``address`` is final."""

    @abc.abstractmethod
    async def send(self, peer: str, envelope: Envelope) -> None:
        """Send to ``peer``; raises ``PeerUnreachable`` if it cannot be delivered."""

    @abc.abstractmethod
    async def recv(self) -> tuple[str, Envelope]:
        """Next ``(sender address, envelope)``; raises ``TransportClosed`` once closed."""

    @abc.abstractmethod
    async def disconnect(self, peer: str) -> None:
        """Forget the connection to ``peer``; the next send connects anew."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the endpoint and every connection it opened. Idempotent."""

    def rejected_frames(self) -> int:
        """Frames dropped because they did not decode (counted, never fatal)."""
        return 0

    def refused_connections(self) -> int:
        """Inbound connections refused at the handshake (failed authentication)."""
        return 0


def open_transport(address: str, options: TransportOptions | None = None) -> Transport:
    """Make an unstarted transport for ``address``, chosen by its scheme."""
    options = options or TransportOptions()
    scheme, sep, _ = address.partition("://")
    if not sep:
        raise ValueError(f"address {address!r} has no scheme; use inproc://, tcp:// or ipc://")
    if scheme == "inproc":
        from drizzle.transport.inproc import InProcTransport

        return InProcTransport(address, options)
    if scheme in ("tcp", "ipc"):
        from drizzle.transport.zmq import ZmqTransport

        return ZmqTransport(address, options)
    raise ValueError(f"unsupported transport scheme {scheme!r} in {address!r}")
