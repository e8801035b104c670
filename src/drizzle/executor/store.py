"""The executor's block store: shuffle blocks (pickled bytes) and cached partitions.

Written by worker threads (single dict assignments, atomic in CPython) and read by the
event loop when serving fetches. Depends on nothing but ``serde``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drizzle import serde
from drizzle.wire.messages import InlineBlock


class BlockStore:
    def __init__(self) -> None:
        self.shuffle: dict[tuple[int, int, int], bytes] = {}
        self.cached: dict[tuple[int, int], list[Any]] = {}
        self._shuffle_keys: dict[int, list[tuple[int, int, int]]] = {}

    def put_map_output(self, shuffle_id: int, map_id: int, blocks: list[bytes]) -> None:
        keys = self._shuffle_keys.setdefault(shuffle_id, [])
        for reduce_id, block in enumerate(blocks):
            key = (shuffle_id, map_id, reduce_id)
            self.shuffle[key] = block
            keys.append(key)

    def put_inline(self, shuffle_id: int, map_id: int, blocks: Iterable[InlineBlock]) -> None:
        """Keep blocks that arrived with a notice, as if fetched already."""
        keys = self._shuffle_keys.setdefault(shuffle_id, [])
        for block in blocks:
            key = (shuffle_id, map_id, block.reduce)
            self.shuffle[key] = block.data
            keys.append(key)

    def get(self, id_: int, index: int, reduce: int) -> bytes | None:
        """A block as bytes, for a fetch from a peer; cached partitions are pickled here."""
        if reduce >= 0:
            return self.shuffle.get((id_, index, reduce))
        data = self.cached.get((id_, index))
        return None if data is None else serde.dumps_data(data)

    def drop_shuffles(self, shuffle_ids: tuple[int, ...]) -> None:
        for sid in shuffle_ids:
            for key in self._shuffle_keys.pop(sid, ()):
                self.shuffle.pop(key, None)

    def drop_datasets(self, dataset_ids: tuple[int, ...]) -> None:
        doomed = set(dataset_ids)
        for key in [k for k in self.cached if k[0] in doomed]:
            del self.cached[key]

    def size(self) -> tuple[int, int]:
        return len(self.shuffle), len(self.cached)
