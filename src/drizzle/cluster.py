"""Starting and stopping the nodes behind a master URL.

``local[N]``: driver and N executors in this process and event loop over ``inproc``.
``local-cluster[N,cores]``: N executor processes over zmq on loopback, started and
stopped here; each also exits by itself if this process dies. Unless told
``insecure``, a local cluster is authenticated and encrypted with CURVE keys derived
from a fresh secret made here, which reaches the executors through their environment,
never their command line. ``tcp://host:port``: the driver listens and executors
started elsewhere join; CURVE keys come from the options or ``DRIZZLE_SECRET``.
``sim[N,cores]``: driver and N executors over a simulated network on the virtual clock
of the running ``drizzle.sim`` loop (see ``drizzle/sim/``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from drizzle.actors.dag_scheduler import DagSchedulerActor
from drizzle.actors.driver import DriverActor
from drizzle.actors.executor import ExecutorActor
from drizzle.actors.group_scheduler import GroupSchedulerActor
from drizzle.actors.map_output_tracker import MapOutputTrackerActor
from drizzle.actors.node import Node
from drizzle.errors import ClusterError
from drizzle.master import Master
from drizzle.transport.base import Transport, TransportOptions, open_transport
from drizzle.transport.inproc import InProcNetwork, InProcTransport
from drizzle.transport.security import (
    DEFAULT_KEY_NAME,
    SECRET_ENV,
    CurveKeys,
    keys_from_secret,
    new_secret,
    resolve_keys,
)
from drizzle.wire.codec import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from drizzle.sim.model import SimConfig
    from drizzle.sim.network import SimNetwork

log = logging.getLogger("drizzle.cluster")
_cluster_ids = itertools.count()

SIM_DRIVER = "inproc://sim/driver"
SIM_EXECUTOR = "inproc://sim/executor-"
"""Addresses in a ``sim`` cluster are fixed (a run's trace does not depend on the
process); executor numbers are zero-padded so that their order is numeric."""


@dataclass(frozen=True)
class ClusterOptions:
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    barrier: bool = True
    max_task_attempts: int = 4
    inline_block_limit: int = 64 * 1024
    group_timeout: float = 600.0
    start_timeout: float = 60.0
    check_codec: bool = False
    insecure: bool = False
    network: InProcNetwork | None = field(default=None, compare=False)
    """``local``: a prebuilt in-process network to use (fault injection in tests)."""
    secret: str | bytes | None = field(default=None, repr=False, compare=False)
    """Cluster secret the CURVE keys derive from (see ``transport/security.py``)."""
    secret_file: str | None = None
    keys: str | None = None
    """A key directory made by ``python -m drizzle.node keygen --out DIR``."""
    key_name: str = DEFAULT_KEY_NAME
    max_frame: int = DEFAULT_MAX_FRAME
    sim: SimConfig | None = field(default=None, compare=False)
    """``sim``: the simulated network and costs (None: the defaults)."""


@dataclass
class Cluster:
    master: Master
    options: ClusterOptions
    driver_node: Node | None = None
    driver: DriverActor | None = None
    group: GroupSchedulerActor | None = None
    dag: DagSchedulerActor | None = None
    tracker: MapOutputTrackerActor | None = None
    executor_nodes: list[Node] = field(default_factory=list)
    executors: list[ExecutorActor] = field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    network: InProcNetwork | None = None
    sim: SimNetwork | None = None
    """The simulated network of a ``sim`` cluster: its clock, costs, trace, ``kill``."""
    curve: CurveKeys | None = field(default=None, repr=False)
    """The CURVE keys of the cluster's zmq connections; None: not authenticated."""
    _executor_args: list[str] = field(default_factory=list, repr=False)
    _executor_env: dict[str, str] = field(default_factory=dict, repr=False)

    async def start(self) -> None:
        opts = self.options
        kind = self.master.kind
        transport: Transport
        if kind == "local":
            if opts.network is not None:
                self.network = opts.network
            else:
                self.network = InProcNetwork(check_codec=opts.check_codec)
            name = f"inproc://drizzle-{os.getpid()}-{next(_cluster_ids)}"
            transport = InProcTransport(f"{name}/driver", network=self.network)
        elif kind == "sim":
            from drizzle.sim.network import SimNetwork

            self.sim = SimNetwork(opts.sim)
            self.network = self.sim
        elif kind == "local-cluster":
            self._local_cluster_keys()
            transport = open_transport(
                "tcp://127.0.0.1:0", TransportOptions(max_frame=opts.max_frame, curve=self.curve)
            )
        else:
            self.curve = resolve_keys(
                secret=opts.secret,
                secret_file=opts.secret_file,
                keys=opts.keys,
                key_name=opts.key_name,
                env=os.environ,
            )
            transport = open_transport(
                self.master.address,
                TransportOptions(
                    insecure=opts.insecure, max_frame=opts.max_frame, curve=self.curve
                ),
            )
        node = self.sim.node(SIM_DRIVER) if self.sim is not None else Node(transport)
        self.driver_node = node
        self.driver = DriverActor(node, group_timeout=opts.group_timeout)
        self.dag = DagSchedulerActor(node)
        self.tracker = MapOutputTrackerActor(node)
        self.group = GroupSchedulerActor(
            node,
            heartbeat_interval=opts.heartbeat_interval,
            heartbeat_timeout=opts.heartbeat_timeout,
        )
        for actor in (self.driver, self.dag, self.tracker, self.group):
            node.add(actor)
        await node.start()
        try:
            if kind == "local":
                for i in range(self.master.executors):
                    await self._start_inproc_executor(f"{name}/executor-{i}")
            elif kind == "sim":
                width = max(4, len(str(self.master.executors - 1)))
                for i in range(self.master.executors):
                    await self._start_inproc_executor(f"{SIM_EXECUTOR}{i:0{width}d}")
            elif kind == "local-cluster":
                await self._spawn_processes()
            await self.driver.wait_executors(self.master.executors, opts.start_timeout)
        except TimeoutError:
            await self.close()
            raise ClusterError(
                f"only {len(self.driver.executors)} of {self.master.executors} executors "
                f"registered within {opts.start_timeout:.0f}s"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _start_inproc_executor(self, address: str) -> None:
        assert self.driver_node is not None
        runner = None
        if self.sim is not None:
            from drizzle.sim.runner import SimTaskRunner

            node: Node = self.sim.node(address)
            runner = SimTaskRunner(self.sim, address)
        else:
            node = Node(InProcTransport(address, network=self.network))
        actor = ExecutorActor(
            node,
            self.driver_node.address,
            self.master.cores,
            barrier=self.options.barrier,
            max_task_attempts=self.options.max_task_attempts,
            inline_limit=self.options.inline_block_limit,
            task_runner=runner,
        )
        node.add(actor)
        await node.start()
        self.executor_nodes.append(node)
        self.executors.append(actor)
        await actor.register()

    def _local_cluster_keys(self) -> None:
        """Keys of a local cluster, and how its executors get them: a fresh secret
        unless one was given (or ``insecure``). Secrets go in the environment only."""
        opts = self.options
        if opts.insecure:
            return
        if opts.secret_file:
            self._executor_args = ["--secret-file", str(opts.secret_file)]
        elif opts.keys:
            self._executor_args = ["--keys", str(opts.keys), "--key-name", opts.key_name]
        if opts.secret_file or opts.keys:
            self.curve = resolve_keys(
                secret_file=opts.secret_file, keys=opts.keys, key_name=opts.key_name
            )
            return
        secret = opts.secret
        if secret is None:
            secret = new_secret()
        elif isinstance(secret, bytes):
            secret = os.fsdecode(secret)
        self.curve = keys_from_secret(secret, origin="the local cluster's secret")
        self._executor_env = {SECRET_ENV: secret}

    async def _spawn_processes(self) -> None:
        assert self.driver_node is not None
        env = dict(os.environ)
        env.pop(SECRET_ENV, None)  # the executors get this cluster's keys, or none
        env.update(self._executor_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        for _ in range(self.master.executors):
            cmd = [
                sys.executable,
                "-m",
                "drizzle.node",
                "executor",
                "--driver",
                self.driver_node.address,
                "--cores",
                str(self.master.cores),
                "--parent-pid",
                str(os.getpid()),
                "--max-task-attempts",
                str(self.options.max_task_attempts),
                "--inline-limit",
                str(self.options.inline_block_limit),
            ]
            if not self.options.barrier:
                cmd.append("--no-barrier")
            if self.options.max_frame != DEFAULT_MAX_FRAME:
                cmd += ["--max-frame", str(self.options.max_frame)]
            cmd += self._executor_args
            proc = await asyncio.create_subprocess_exec(
                *cmd, env=env, stdin=asyncio.subprocess.DEVNULL
            )
            self.processes.append(proc)

    async def close(self) -> None:
        if self.sim is not None:
            await self.sim.settle()
        if self.driver_node is not None:
            await self.driver_node.close()  # tells every executor to stop
        for node in self.executor_nodes:
            await node.close()
        if self.sim is not None:
            await self.sim.aclose()
        for proc in self.processes:
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                log.warning("executor process %d did not exit; killing it", proc.pid)
                proc.kill()
                await proc.wait()
