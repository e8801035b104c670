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
    epoch: int = 0
    notices: int = 0

    def record(self, notice: MapOutputReady) -> None:
        self.notices += 1
        self.outputs[notice.shuffle_id][notice.map_id] = (notice.executor_id, notice.sizes)

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
        self.epoch += 1
        return lost

    def release(self, shuffle_ids: tuple[int, ...]) -> None:
        for sid in shuffle_ids:
            self.outputs.pop(sid, None)
