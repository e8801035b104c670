"""Key hashing that gives the same partition for a key in every process.

Python randomises ``hash(str)`` per process, so two executors would send one key to
different reducers. ``portable_hash`` is stable across processes and runs for the
common key types without leaving C code. Depends on nothing.
"""

from __future__ import annotations

import dataclasses
import pickle
import zlib
from typing import Any


def portable_hash(key: Any) -> int:
    """A hash of ``key`` that does not depend on the process's hash seed or addresses.

    Ints, floats, bools, None, str, bytes, tuples, frozensets and dataclass instances
    hash by value; any other key hashes by its pickled bytes, so equal keys must pickle
    equally (as with Spark, keys should be plain values).
    """
    kind = type(key)
    if kind is int or kind is float or kind is bool:
        return hash(key)
    if key is None:
        return 0x5A17
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
    if kind is frozenset:
        acc = 0
        for item in key:
            acc ^= portable_hash(item)
        return acc ^ len(key)
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        return portable_hash(
            (kind.__qualname__, *(getattr(key, f.name) for f in dataclasses.fields(key)))
        )
    return zlib.crc32(pickle.dumps(key, protocol=4))


def partition_of(key: Any, num_partitions: int) -> int:
    return portable_hash(key) % num_partitions
