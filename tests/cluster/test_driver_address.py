"""An executor may name the driver otherwise than the driver names itself.

Executors connect to the address they are given (``--driver tcp://localhost:P``, a host
name), while the driver's messages carry the address it bound (``tcp://127.0.0.1:P``).
The executor learns that name from the answer to its registration and takes the
driver's orders from it.
"""

from __future__ import annotations

import asyncio
import socket

from drizzle import Context
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.node import Node
from drizzle.transport.base import TransportOptions, open_transport

from .conftest import WAIT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_executor_that_calls_the_driver_localhost_registers_and_runs() -> None:
    port = free_port()
    ctx = Context(f"tcp://localhost:{port}", executors=1, start_timeout=WAIT)
    node: Node | None = None
    async with asyncio.timeout(WAIT):
        starting = asyncio.ensure_future(ctx.start())
        try:
            node = Node(open_transport("tcp://127.0.0.1:0", TransportOptions()))
            actor = ExecutorActor(node, f"tcp://localhost:{port}", 1, register_timeout=WAIT)
            node.add(actor)
            await node.start()
            await actor.register()
            await starting
            assert ctx.cluster.driver_node is not None
            assert ctx.cluster.driver_node.address != actor.driver  # two names, one driver
            results = await ctx.run_jobs([ctx.parallelize(range(4), 2).map(lambda x: x * 2)])
            assert results == [[[0, 2], [4, 6]]]
            assert node.rejected_messages == 0
        finally:
            await ctx.close()
            if node is not None:
                await node.close()
