"""Drizzle: a low-latency execution engine for Spark-style micro-batch jobs.

Group scheduling launches a group of micro-batches with one message per executor;
pre-scheduling places reducers first and starts them from notices pushed by their
mappers, without asking the driver.
"""

from __future__ import annotations

__version__ = "0.1.0"

from drizzle.context import Context
from drizzle.dataset import Dataset
from drizzle.errors import (
    ClusterError,
    DrizzleError,
    JobFailed,
    PeerUnreachable,
    ProtocolError,
)
from drizzle.metrics import ExecutorMetrics, GroupMetrics, MetricsSnapshot
from drizzle.plan import PlanError
from drizzle.runtime import run
from drizzle.scheduler.tuner import TunerConfig

__all__ = [
    "ClusterError",
    "Context",
    "Dataset",
    "DrizzleError",
    "ExecutorMetrics",
    "GroupMetrics",
    "JobFailed",
    "MetricsSnapshot",
    "PeerUnreachable",
    "PlanError",
    "ProtocolError",
    "TunerConfig",
    "__version__",
    "run",
]
