"""Simulation: the real actors on a virtual clock over a modelled network.

``Context(master="sim[N,cores]", sim=SimConfig(...))`` starts a driver and N executors
in this process whose event loop is a ``VirtualEventLoop``: time advances only when
every actor waits, messages cost modelled CPU and network time, and tasks run their real
pipelines inline for a modelled duration. Run the program with ``drizzle.sim.run``::

    async def main() -> None:
        async with Context("sim[128,4]", sim=SimConfig(seed=1)) as ctx:
            ...
            sim = ctx.cluster.sim          # the SimNetwork: clock, trace, stats, kill()

    drizzle.sim.run(main())

See docs/simulation.md. Nothing here touches wall-clock time or threads.
"""

from drizzle.sim.loop import (
    SimulationDeadlock,
    SimulationError,
    SimulationTimeLimit,
    VirtualEventLoop,
    run,
)
from drizzle.sim.model import ComputeModel, CpuModel, NetworkModel, SimConfig
from drizzle.sim.network import Cpu, NodeStats, SimNetwork, SimTransport, TraceEntry
from drizzle.sim.node import SimNode
from drizzle.sim.runner import SimTaskRunner

__all__ = [
    "ComputeModel",
    "Cpu",
    "CpuModel",
    "NetworkModel",
    "NodeStats",
    "SimConfig",
    "SimNetwork",
    "SimNode",
    "SimTaskRunner",
    "SimTransport",
    "SimulationDeadlock",
    "SimulationError",
    "SimulationTimeLimit",
    "TraceEntry",
    "VirtualEventLoop",
    "run",
]
