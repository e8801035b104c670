"""What a simulated cluster costs: network, per-message CPU, and task compute.

Every cost is virtual seconds charged on the virtual clock. The CPU defaults were
measured on the project's 2-core development machine (Python 3.11, uvloop) by
``scripts/calibrate_sim.py``; each field names what it stands for. The network
defaults are assumptions for a datacenter LAN (they cannot be measured on one machine).
Pure data: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drizzle.wire.messages import TaskSpec


@dataclass(frozen=True)
class NetworkModel:
    """The wire between nodes.

    A message leaves its node when the node's CPU has sent it, queues on the node's
    outgoing link (``bandwidth_bps`` bytes per second, one message after the other),
    and arrives ``latency_s`` (plus a uniform draw in ``[0, jitter_s)``) later.
    Messages on one link never overtake each other.
    """

    latency_s: float = 100e-6
    """One-way latency; assumed (a datacenter LAN round trip of 0.2 ms)."""
    jitter_s: float = 0.0
    """Extra one-way latency, uniform in [0, jitter_s), drawn from the seeded RNG."""
    bandwidth_bps: float = 125e6
    """Bytes per second a node can put on the wire; assumed (1 Gbit/s)."""


@dataclass(frozen=True)
class CpuModel:
    """CPU a node's event loop spends per message and per task (one CPU per node:
    a node sends, receives and handles one message at a time).

    Sending costs ``send_s + send_byte_s * size`` before the message leaves; receiving
    costs ``recv_s + recv_byte_s * size + handle_s`` before the target actor sees it.
    Events between the driver-side actors cost ``internal_s``; placing a group (the
    event that carries its plan) costs ``group_s + batch_plan_s * micro-batches +
    task_plan_s * tasks placed one by one`` (only the first micro-batch's when the
    others repeat it). Every task costs its executor's loop ``task_overhead_s``
    before it starts computing.
    """

    send_s: float = 2.9e-6
    """Post, encode and zmq-send one small message (calibrate_sim.py: 2.94 µs)."""
    send_byte_s: float = 0.33e-9
    """Per byte sent (calibrate_sim.py: 0.33 ns/B, 74 B against 64 KiB messages)."""
    recv_s: float = 5.2e-6
    """Read, decode and dispatch one small message from zmq (calibrate_sim.py: 5.16 µs)."""
    recv_byte_s: float = 0.5e-9
    """Per byte received (calibrate_sim.py: 0.51 ns/B)."""
    handle_s: float = 1.8e-6
    """An actor's handling of one message: the driver's result handling by its own
    ``results_s`` counter (calibrate_sim.py: 1.81 µs per result)."""
    internal_s: float = 0.8e-6
    """One event between driver-side actors (calibrate_sim.py: 0.77 µs per event)."""
    group_s: float = 151e-6
    """Fixed work of one group, end to end: CPU per micro-batch at G=1 minus at G=100,
    one task each, in one process (calibrate_sim.py: 151 µs)."""
    batch_plan_s: float = 56e-6
    """Planning and placing one micro-batch: building its stages and pickling their
    pipelines, or repeating the first one (calibrate_sim.py: 55.6 µs per micro-batch)."""
    task_plan_s: float = 6.5e-6
    """Planning and placing one task one by one (calibrate_sim.py: 6.52 µs per task)."""
    task_overhead_s: float = 33e-6
    """An executor's event-loop work per task: local scheduling, handing the task to a
    worker and taking its output back, the result or notices (calibrate_sim.py:
    33.2 µs per task)."""

    def send(self, size: int) -> float:
        return self.send_s + self.send_byte_s * size

    def receive(self, size: int) -> float:
        return self.recv_s + self.recv_byte_s * size + self.handle_s

    def place(self, batches: int, tasks: int) -> float:
        return self.group_s + self.batch_plan_s * batches + self.task_plan_s * tasks


TaskTime = Callable[[TaskSpec, int, int], float]
"""``time(spec, input_bytes, output_bytes) -> seconds`` of a task's compute."""


@dataclass(frozen=True)
class ComputeModel:
    """Seconds a task holds its slot: ``task_s + byte_s * (input + output bytes)``,
    times ``1 + u * jitter`` with u uniform in [0, 1) from the seeded RNG; or
    ``custom(spec, input_bytes, output_bytes)`` when given. The task's pipeline really
    runs (its results are real); only its duration is modelled."""

    task_s: float = 1.13e-6
    """Fixed cost of a task's pipeline (calibrate_sim.py: 1.13 µs, a task that unpickles
    a partition of integers, sums it and pickles the sum)."""
    byte_s: float = 13.5e-9
    """Per byte of input read and output written (calibrate_sim.py: 13.54 ns/B for the
    same task, partitions of 100 and 20,000 integers)."""
    jitter: float = 0.0
    custom: TaskTime | None = field(default=None, compare=False)

    def seconds(self, spec: TaskSpec, input_bytes: int, output_bytes: int) -> float:
        if self.custom is not None:
            return self.custom(spec, input_bytes, output_bytes)
        return self.task_s + self.byte_s * (input_bytes + output_bytes)


@dataclass(frozen=True)
class SimConfig:
    """Everything a simulated cluster needs besides its size."""

    network: NetworkModel = field(default_factory=NetworkModel)
    cpu: CpuModel = field(default_factory=CpuModel)
    compute: ComputeModel = field(default_factory=ComputeModel)
    seed: int = 0
    """Seeds every random draw (latency jitter, compute jitter)."""
    trace: bool = False
    """Record every delivered message in ``SimNetwork.trace``."""
    check_codec: bool = False
    """Decode every encoded message on its way, as ``check_codec`` does for ``local``
    (messages are always encoded, to know their size)."""
