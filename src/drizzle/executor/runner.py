"""Running one task on a worker thread: the ``TaskEnv`` an executor hands a pipeline.

Everything a task reads is in memory before it starts (blocks fetched by the actor on
the event loop); the worker thread never touches the network or the event loop.
"""

from __future__ import annotations

import time
from typing import Any

from drizzle import serde
from drizzle.executor.store import BlockStore
from drizzle.pipeline import StagePipeline, run_task


class PreparedEnv:
    """A ``TaskEnv`` over the executor's caches plus the task's fetched inputs."""

    def __init__(
        self,
        store: BlockStore,
        blobs: dict[str, bytes],
        shuffle_inputs: dict[tuple[int, int], list[bytes]],
        remote_cached: dict[tuple[int, int], list[Any]],
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._shuffle_inputs = shuffle_inputs
        self._remote_cached = remote_cached

    def blob(self, digest: str) -> bytes:
        return self._blobs[digest]

    def shuffle_blocks(self, shuffle_id: int, partition: int) -> list[bytes]:
        return self._shuffle_inputs[(shuffle_id, partition)]

    def cached(self, dataset_id: int, partition: int) -> list[Any] | None:
        key = (dataset_id, partition)
        data = self._store.cached.get(key)
        return data if data is not None else self._remote_cached.get(key)

    def store_cached(self, dataset_id: int, partition: int, data: list[Any]) -> None:
        self._store.cached[(dataset_id, partition)] = data


class PipelineCache:
    """Unpickled stage pipelines by payload digest (payloads are immutable)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self._blobs = blobs
        self._pipelines: dict[str, StagePipeline] = {}

    def get(self, digest: str) -> StagePipeline:
        pipeline = self._pipelines.get(digest)
        if pipeline is None:
            pipeline = serde.loads(self._blobs[digest])
            if not isinstance(pipeline, StagePipeline):
                raise TypeError(f"payload {digest} is not a stage pipeline")
            self._pipelines[digest] = pipeline
        return pipeline


def execute(
    pipelines: PipelineCache, payload: str, partition: int, env: PreparedEnv, submitted: float
) -> tuple[list[bytes] | bytes, float, float, float]:
    """Run a task; also returns (queue wait, deserialization, compute) seconds."""
    started = time.perf_counter()
    pipeline = pipelines.get(payload)
    loaded = time.perf_counter()
    output = run_task(pipeline, partition, env)
    return output, started - submitted, loaded - started, time.perf_counter() - loaded
