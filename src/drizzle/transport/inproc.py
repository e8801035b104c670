"""In-process transport: asyncio queues in one event loop, for ``local[N]`` and tests.

Endpoints find each other through an ``InProcNetwork`` (one per cluster, never a
global, so two clusters can live in one process). Envelopes pass as objects; with
``check_codec`` every envelope is encoded and decoded on the way, so in-process tests
also prove that each message survives the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from drizzle.errors import PeerUnreachable, TransportClosed
from drizzle.transport.base import Transport, TransportOptions
from drizzle.wire.codec import Envelope, decode, encode

_CLOSED = object()

SendHook = Callable[["InProcTransport", "InProcTransport", Envelope], bool]
"""``hook(sender, target, envelope)``, called on every send between endpoints of a
network that has one (fault injection in tests): True means the hook took the envelope
(to drop, hold or copy it, delivering with ``target.deliver_nowait``); False means
deliver it normally. It may raise ``PeerUnreachable``."""


class InProcNetwork:
    """The address book of in-process endpoints of one cluster."""

    def __init__(self, *, check_codec: bool = False, hook: SendHook | None = None) -> None:
        self.check_codec = check_codec
        self.hook = hook
        self._endpoints: dict[str, InProcTransport] = {}

    def bind(self, endpoint: InProcTransport) -> None:
        if endpoint.address in self._endpoints:
            raise OSError(f"address {endpoint.address} is already bound")
        self._endpoints[endpoint.address] = endpoint

    def unbind(self, endpoint: InProcTransport) -> None:
        if self._endpoints.get(endpoint.address) is endpoint:
            del self._endpoints[endpoint.address]

    def lookup(self, address: str) -> InProcTransport | None:
        return self._endpoints.get(address)


_DEFAULT_NETWORK = InProcNetwork()


class InProcTransport(Transport):
    def __init__(
        self,
        address: str,
        options: TransportOptions | None = None,
        network: InProcNetwork | None = None,
    ) -> None:
        self.address = address
        self.options = options or TransportOptions()
        self.network = network if network is not None else _DEFAULT_NETWORK
        self._queue: asyncio.Queue[tuple[str, Envelope] | object] = asyncio.Queue(
            self.options.mailbox_size
        )
        self._closed = False
        self._started = False

    async def start(self) -> None:
        self.network.bind(self)
        self._started = True

    async def send(self, peer: str, envelope: Envelope) -> None:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        target = self.network.lookup(peer)
        if target is None or target._closed:
            raise PeerUnreachable(f"no endpoint at {peer}")
        if self.network.check_codec:
            envelope = decode(encode(envelope), self.options.max_frame)
        hook = self.network.hook
        if hook is not None and hook(self, target, envelope):
            return
        await target._queue.put((self.address, envelope))

    async def recv(self) -> tuple[str, Envelope]:
        if self._closed:
            raise TransportClosed(f"{self.address} is closed")
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise TransportClosed(f"{self.address} is closed")
        assert isinstance(item, tuple)
        return item

    def deliver_nowait(self, sender: str, envelope: Envelope) -> bool:
        """Queue ``envelope`` as received from ``sender`` (a network hook releasing a
        message it held); False if this endpoint is closed."""
        if self._closed:
            return False
        self._queue.put_nowait((sender, envelope))
        return True

    async def disconnect(self, peer: str) -> None:
        return None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.network.unbind(self)
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_CLOSED)
