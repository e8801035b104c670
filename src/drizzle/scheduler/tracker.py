"""The map output tracker's state: where every map output of a live shuffle lives.

Filled asynchronously by ``MapOutputReady`` notices (reducers never wait on it);
consulted for recovery and re-placement. Executor loss removes that executor's
outputs and bumps the epoch. Pure.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from drizzle.wire.messages import MapOutputReady


@dataclass
class MapOutputTrackerState:
    outputs: dict[int, dict[int, tuple[str, tuple[int, ...]]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    blocks: dict[tuple[int, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    """Cached partitions (dataset id, partition) → executors holding a copy."""
    epoch: int = 0
    notices: int = 0
    bytes_recorded: int = 0
    """Total size of every map output ever recorded (bytes shuffled)."""

    def record(self, notice: MapOutputReady) -> None:
        self.notices += 1
        self.outputs[notice.shuffle_id][notice.map_id] = (notice.executor_id, notice.sizes)
        self.bytes_recorded += sum(notice.sizes)

    def record_block(self, dataset_id: int, partition: int, executor_id: str) -> None:
        self.blocks[(dataset_id, partition)].add(executor_id)

    def outputs_snapshot(self) -> dict[int, dict[int, str]]:
        """Every live shuffle's map outputs: shuffle id → map id → executor."""
        return {sid: self.locations(sid) for sid in self.outputs}

    def locations(self, shuffle_id: int) -> dict[int, str]:
        return {m: e for m, (e, _) in self.outputs.get(shuffle_id, {}).items()}

    def bytes_shuffled(self, shuffle_id: int) -> int:
        return sum(sum(sizes) for _, sizes in self.outputs.get(shuffle_id, {}).values())

    def executor_lost(self, executor_id: str) -> int:
        lost = 0
        for maps in self.outputs.values():
            for map_id in [m for m, (e, _) in maps.items() if e == executor_id]:
                del maps[map_id]
                lost += 1
        for key, holders in list(self.blocks.items()):
            holders.discard(executor_id)
            if not holders:
                del self.blocks[key]
        self.epoch += 1
        return lost

    def release(self, shuffle_ids: tuple[int, ...]) -> None:
        for sid in shuffle_ids:
            self.outputs.pop(sid, None)
