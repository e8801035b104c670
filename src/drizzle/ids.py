"""Typed identifiers shared by every actor.

Plain ints and strings on the wire; distinct types for mypy so that a stage id is
never passed where a shuffle id is expected. Depends on nothing.
"""

from __future__ import annotations

from typing import NewType

ExecutorId = NewType("ExecutorId", str)
"""Unique per executor incarnation: a restarted executor is a new peer."""
NodeAddress = NewType("NodeAddress", str)
"""Transport address of a node: ``inproc://name``, ``tcp://host:port`` or ``ipc://path``."""
DatasetId = NewType("DatasetId", int)
StageId = NewType("StageId", int)
ShuffleId = NewType("ShuffleId", int)
GroupId = NewType("GroupId", int)
BatchId = NewType("BatchId", int)
"""Index of a micro-batch in its ``run_jobs`` call."""
TaskId = NewType("TaskId", int)
"""Unique within a driver: one task is one (micro-batch, stage, partition) attempt set."""
