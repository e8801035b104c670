"""The one codec of Drizzle: messages to bytes and back, over msgpack.

No other module imports msgpack. A frame is one msgpack array
``[type_id, target_actor, sender_actor, [fields...]]``. Decoding never trusts its
input: garbage, truncated frames, unknown types, wrong field counts or types and
oversized frames all raise ``ProtocolError``. User functions and data only ever
appear inside ``bytes`` fields (pickled by ``drizzle.serde``); this module never
unpickles anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from drizzle.errors import ProtocolError
from drizzle.wire import messages as _messages  # noqa: F401  (registers every message)
from drizzle.wire.schema import MESSAGE_TYPES, TYPE_IDS, from_wire, to_wire

DEFAULT_MAX_FRAME = 1 << 30
"""Largest frame accepted by default (1 GiB)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its addressing inside a node: which actor sent it, which gets it."""

    target: str
    sender: str
    message: Any


def encode(envelope: Envelope, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Serialise an envelope.

    Raises ``ProtocolError`` for an unregistered message, a value msgpack cannot carry,
    or a frame larger than ``max_frame`` (which the receiver would refuse).
    """
    msg = envelope.message
    type_id = TYPE_IDS.get(type(msg))
    if type_id is None:
        raise ProtocolError(f"{type(msg).__name__} is not a registered message")
    try:
        frame: bytes = msgpack.packb(
            [type_id, envelope.target, envelope.sender, to_wire(msg)], use_bin_type=True
        )
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"cannot encode {type(msg).__name__}: {exc}") from exc
    if len(frame) > max_frame:
        raise ProtocolError(
            f"{type(msg).__name__} of {len(frame)} bytes exceeds the frame limit of {max_frame}"
        )
    return frame


def decode(frame: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> Envelope:
    """Parse and validate one frame."""
    if len(frame) > max_frame:
        raise ProtocolError(f"frame of {len(frame)} bytes exceeds the limit of {max_frame}")
    try:
        raw = msgpack.unpackb(
            frame,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=1 << 24,
            max_map_len=1 << 16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from exc
    if not isinstance(raw, list) or len(raw) != 4:
        raise ProtocolError("frame is not a 4-element envelope")
    type_id, target, sender, fields = raw
    if type(type_id) is not int or type(target) is not str or type(sender) is not str:
        raise ProtocolError("malformed envelope header")
    cls = MESSAGE_TYPES.get(type_id)
    if cls is None:
        raise ProtocolError(f"unknown message type id {type_id}")
    try:
        return Envelope(target, sender, from_wire(cls, fields))
    except ProtocolError:
        raise
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"invalid {cls.__name__}: {exc}") from exc
