"""Key hashing that gives the same partition for a key in every process.

Python randomises ``hash(str)`` per process, so two executors would send one key to
different reducers. ``portable_hash`` is stable across processes and runs for the
common key types without leaving C code. Depends on nothing.
"""

from __future__ import annotations

import zlib
from typing import Any


def portable_hash(key: Any) -> int:
    """A hash of ``key`` that does not depend on the process's hash seed."""
    kind = type(key)
    if kind is int or kind is float or kind is bool or key is None:
        return hash(key)
    if kind is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if kind is bytes:
        return zlib.crc32(key)
    if kind is tuple:
        h = 0x345678
        for item in key:
            h = (h * 1000003) ^ portable_hash(item)
            h &= 0xFFFFFFFFFFFF
        return h ^ len(key)
    return hash(key)


def partition_of(key: Any, num_partitions: int) -> int:
    return portable_hash(key) % num_partitions
