"""Proven closed: a peer without the cluster's keys gets nothing out of a real,
authenticated local cluster (driver and executor processes).

Raw pyzmq DEALERs that do not hold the keys send, to the driver's and to an
executor's port, everything that would hurt if it got in: a registration, a task
result, a map-output notice, a launch whose task unpickles a payload that creates a
marker directory, a cached-block copy carrying the same payload, a block fetch. Each
one's handshake fails (seen by its socket monitor, and counted by the driver), no
executor joins, the marker never appears, and the cluster keeps working. A control
sends the same payloads with the cluster's keys: the block copy runs (the payloads are
live, so their absence above means the door was shut), and the launch is still refused,
for only the driver may launch tasks.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import cloudpickle
import pytest
import zmq

from drizzle import Context, __version__
from drizzle.transport.zmq import ZmqTransport
from drizzle.wire.messages import (
    PROTOCOL_VERSION,
    Blob,
    BlockKey,
    FetchBlocks,
    LaunchGroup,
    MapOutputReady,
    RegisterExecutor,
    ReplicateBlock,
    TaskResult,
    TaskSpec,
)

from .support import (
    RawKeys,
    cluster_client_keys,
    flatten,
    frame,
    legit_batches,
    legit_expected,
    marker_payload,
    raw_send,
    wait_until,
)

pytestmark = pytest.mark.cluster

INTRUDER = "tcp://127.0.0.1:1"


def launch_running(payload: bytes, group_id: int) -> LaunchGroup:
    """A launch whose one task unpickles ``payload`` as its pipeline when it runs."""
    digest = f"intruder-{group_id}"
    spec = TaskSpec(
        task_id=1,
        batch=0,
        stage_id=0,
        partition=0,
        attempt=0,
        payload=digest,
        blobs=(),
        shuffle_inputs=(),
        block_inputs=(),
        shuffle_output=None,
        block_outputs=(),
        is_result=True,
    )
    return LaunchGroup(group_id, (spec,), (Blob(digest, payload),), (), ())


def driver_frames(payload: bytes) -> list[bytes]:
    return [
        frame(
            "group",
            RegisterExecutor(
                INTRUDER,
                INTRUDER,
                8,
                PROTOCOL_VERSION,
                __version__,
                sys.version.split()[0],
                cloudpickle.__version__,
            ),
        ),
        frame("driver", TaskResult(0, 0, 0, 0, 0, 0, INTRUDER, payload)),
        frame("tracker", MapOutputReady(0, 0, 0, INTRUDER, (1,))),
    ]


def executor_frames(payload: bytes) -> list[bytes]:
    return [
        frame("executor", launch_running(payload, 10**6)),
        frame("executor", ReplicateBlock(10**6, 10**6, 0, payload)),
        frame("executor", FetchBlocks(1, (BlockKey(0, 0, 0),))),
    ]


def random_keys(server: bytes | None = None) -> RawKeys:
    public, secret = zmq.curve_keypair()
    return RawKeys(public, secret, server if server is not None else zmq.curve_keypair()[0])


async def test_a_peer_without_the_keys_gets_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "intruder-ran-code"
    payload = marker_payload(marker)
    async with asyncio.timeout(120), Context("local-cluster[2]") as ctx:
        keys = ctx.cluster.curve
        driver_node = ctx.cluster.driver_node
        assert keys is not None
        assert driver_node is not None
        transport = driver_node.transport
        assert isinstance(transport, ZmqTransport)
        executors = ctx.executors()
        executor = executors[0]
        rejected = driver_node.rejected_messages
        intruders: dict[str, RawKeys | None] = {
            "no CURVE": None,
            "a client key not on the allow-list": random_keys(server=keys.server_public),
            "wrong keys altogether": random_keys(),
        }
        for who, raw in intruders.items():
            for address, frames in (
                (driver_node.address, driver_frames(payload)),
                (executor, executor_frames(payload)),
            ):
                event = await raw_send(address, frames, keys=raw, routing_id=INTRUDER.encode())
                assert event.startswith("HANDSHAKE_FAILED"), (who, address, event)
        # The driver counted each refused handshake (one per intruder at least).
        await wait_until(lambda: transport.refused_connections() >= len(intruders))

        results = await ctx.run_jobs(legit_batches(ctx, 4), group_size=2)
        assert flatten(results) == legit_expected(4)
        assert ctx.executors() == executors  # nobody joined
        assert driver_node.rejected_messages == rejected  # no frame reached an actor
        assert not marker.exists()

        # Control: with the cluster's keys, a cached-block copy (which any executor may
        # send) carrying the same payload does run: the payloads are live. A launch is
        # refused even then, for it does not come from the driver: the executor reads
        # it before the copy (one connection, in order), and its one worker would have
        # run the launched task before the legitimate tasks that follow.
        launched = tmp_path / "control-launch"
        replicated = tmp_path / "control-replicate"
        control = [
            frame("executor", launch_running(marker_payload(launched), 10**6 + 1)),
            frame("executor", ReplicateBlock(10**6 + 1, 10**6, 1, marker_payload(replicated))),
        ]
        event = await raw_send(executor, control, keys=cluster_client_keys(keys))
        assert event == "HANDSHAKE_SUCCEEDED"
        await wait_until(replicated.exists)
        results = await ctx.run_jobs(legit_batches(ctx, 4), group_size=2)
        assert flatten(results) == legit_expected(4)
        assert not launched.exists()
        assert not marker.exists()
