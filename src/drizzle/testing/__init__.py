"""Testing helpers: fault injection for the whole-cluster-in-one-process mode.

``faulty_context(plan, "local[3]", ...)`` starts a ``local[N]`` cluster over a
``FaultyNetwork`` that drops, delays, duplicates and reorders chosen messages and
crashes chosen nodes, as a seeded ``FaultPlan`` says, and records each fault it made.
"""

from __future__ import annotations

from drizzle.testing.faults import (
    HEARTBEATS,
    Crash,
    Fault,
    FaultPlan,
    FaultyNetwork,
    Match,
    Rule,
    faulty_context,
    node_name,
    start_faulty_context,
)

__all__ = [
    "HEARTBEATS",
    "Crash",
    "Fault",
    "FaultPlan",
    "FaultyNetwork",
    "Match",
    "Rule",
    "faulty_context",
    "node_name",
    "start_faulty_context",
]
