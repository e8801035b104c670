"""The one place where user functions and user data are pickled and unpickled.

Drizzle's messages are msgpack; only ``bytes`` fields of a few messages carry pickled
user objects (stage pipelines with their functions, partition data, task results and
shuffle blocks). Those bytes are unpickled here and nowhere else, and only for frames
that came through the node's transport from a peer the transport accepted.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
from typing import Any

import cloudpickle


class _ReusedPickler(threading.local):
    """One cloudpickle Pickler per thread: building one costs more than most dumps."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.pickler = cloudpickle.Pickler(self.buffer, protocol=pickle.HIGHEST_PROTOCOL)


_local = _ReusedPickler()


def dumps(obj: Any) -> bytes:
    """Pickle user functions or data (by value for code defined in ``__main__``)."""
    state = _local
    buffer = state.buffer
    buffer.seek(0)
    buffer.truncate()
    pickler = state.pickler
    pickler.clear_memo()
    refs = getattr(pickler, "globals_ref", None)
    if refs:
        refs.clear()
    try:
        pickler.dump(obj)
    except BaseException:
        state.__init__()  # type: ignore[misc]  # a failed dump may leave the pickler dirty
        raise
    return buffer.getvalue()


def dumps_data(obj: Any) -> bytes:
    """Pickle plain user data quickly, falling back to cloudpickle for code objects."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        return dumps(obj)


def loads(data: bytes) -> Any:
    """Unpickle bytes produced by :func:`dumps` or :func:`dumps_data`."""
    return pickle.loads(data)


def digest(data: bytes) -> str:
    """Content hash used to name blobs."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()
