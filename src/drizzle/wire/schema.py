"""Message and record classes: registration and field validation.

A *message* is a frozen, slotted dataclass with a unique type id; a *record* is a
frozen dataclass used inside messages. Each field annotation is compiled once, at
registration, into a converter that turns plain wire values (ints, strings, bytes,
lists) back into typed values and rejects anything else with ``ProtocolError``.
This module knows nothing of msgpack or of any transport.
"""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from drizzle.errors import ProtocolError

T = TypeVar("T")
Converter = Callable[[Any], Any]

MESSAGE_TYPES: dict[int, type[Any]] = {}
"""Type id → message class; every message that may cross a process boundary."""
TYPE_IDS: dict[type[Any], int] = {}
_RECORDS: set[type[Any]] = set()
_DECODERS: dict[type[Any], tuple[tuple[str, ...], tuple[Converter, ...]]] = {}


def record(cls: type[T]) -> type[T]:
    """Register a frozen dataclass that may appear as a field of a message."""
    _check_frozen(cls)
    _RECORDS.add(cls)
    field_decoders(cls)
    return cls


def message(type_id: int) -> Callable[[type[T]], type[T]]:
    """Register a message class under a unique, stable type id."""

    def register(cls: type[T]) -> type[T]:
        _check_frozen(cls)
        if type_id in MESSAGE_TYPES:
            raise TypeError(
                f"type id {type_id} of {cls.__name__} already used by "
                f"{MESSAGE_TYPES[type_id].__name__}"
            )
        if cls in TYPE_IDS:
            raise TypeError(f"{cls.__name__} is already registered as {TYPE_IDS[cls]}")
        field_decoders(cls)
        MESSAGE_TYPES[type_id] = cls
        TYPE_IDS[cls] = type_id
        return cls

    return register


def _check_frozen(cls: type[Any]) -> None:
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a frozen, slotted dataclass")


def field_decoders(cls: type[Any]) -> tuple[tuple[str, ...], tuple[Converter, ...]]:
    """Names and converters of ``cls``'s fields, compiled on first use."""
    compiled = _DECODERS.get(cls)
    if compiled is None:
        hints = typing.get_type_hints(cls)
        names = tuple(f.name for f in dataclasses.fields(cls))
        convs = tuple(_compile(hints[name], f"{cls.__name__}.{name}") for name in names)
        compiled = (names, convs)
        _DECODERS[cls] = compiled
    return compiled


_ENCODERS: dict[type[Any], Converter] = {}


def to_wire(value: Any) -> Any:
    """Turn a message or record into plain lists, recursively."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        if type(value) not in _RECORDS and type(value) not in TYPE_IDS:
            return _generic_to_wire(value)
        encoder = _record_encoder(type(value))
    return encoder(value)


def _generic_to_wire(value: Any) -> Any:
    if isinstance(value, tuple):
        return [to_wire(v) for v in value]
    return value


def _compile_encoder(cls: type[Any]) -> Converter:
    """An encoder for one record or message class, compiled from its field types:
    scalars pass through untouched, nested records and tuples use their own encoders."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    getters = [operator.attrgetter(name) for name in names]
    encoders = [_field_encoder(hints[name]) for name in names]
    if all(enc is None for enc in encoders):
        return lambda value: [get(value) for get in getters]
    spec = list(zip(getters, encoders, strict=True))

    def encode(value: Any) -> list[Any]:
        return [get(value) if enc is None else enc(get(value)) for get, enc in spec]

    return encode


def _field_encoder(tp: Any) -> Converter | None:
    """How to encode a value of type ``tp``; None: it is already a wire value."""
    tp = getattr(tp, "__supertype__", tp)
    if tp in (int, str, bytes, float, bool, type(None)):
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _field_encoder(args[0])
            if item is None:
                return list
            return lambda v: [item(x) for x in v]
        items = [_field_encoder(a) for a in args]
        if all(i is None for i in items):
            return list
        return lambda v: [x if i is None else i(x) for i, x in zip(items, v, strict=True)]
    if isinstance(tp, type) and (tp in _RECORDS or tp in TYPE_IDS):
        return lambda v: _record_encoder(tp)(v)
    if origin in (typing.Union, types.UnionType) and all(_field_encoder(a) is None for a in args):
        return None
    return to_wire  # unions of records, Any: decided per value


def _record_encoder(cls: type[Any]) -> Converter:
    """The encoder of a record or message class, compiled on first use."""
    encoder = _ENCODERS.get(cls)
    if encoder is None:
        encoder = _ENCODERS[cls] = _compile_encoder(cls)
    return encoder


def from_wire(cls: type[T], fields: Any) -> T:
    """Build a ``cls`` instance from wire values, validating every field."""
    names, convs = field_decoders(cls)
    if not isinstance(fields, list) or len(fields) != len(names):
        raise ProtocolError(
            f"{cls.__name__} needs {len(names)} fields, got "
            f"{len(fields) if isinstance(fields, list) else type(fields).__name__}"
        )
    return cls(*[conv(v) for conv, v in zip(convs, fields, strict=True)])


def _compile(tp: Any, where: str) -> Converter:
    supertype = getattr(tp, "__supertype__", None)
    if supertype is not None:  # NewType
        return _compile(supertype, where)
    if tp is Any:
        return lambda v: v
    if tp in (int, str, bytes, float, bool):
        return _scalar(tp, where)
    if tp is type(None):
        return _scalar(type(None), where)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [_compile(a, where) for a in args]

        def union(v: Any) -> Any:
            for option in options:
                try:
                    return option(v)
                except ProtocolError:
                    continue
            raise ProtocolError(f"{where}: {type(v).__name__} fits none of {tp}")

        return union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _compile(args[0], where)

            def var_tuple(v: Any) -> tuple[Any, ...]:
                if not isinstance(v, list):
                    raise ProtocolError(f"{where}: expected a list, got {type(v).__name__}")
                return tuple([item(x) for x in v])

            return var_tuple
        items = [_compile(a, where) for a in args]

        def fixed_tuple(v: Any) -> tuple[Any, ...]:
            if not isinstance(v, list) or len(v) != len(items):
                raise ProtocolError(f"{where}: expected a list of {len(items)}")
            return tuple(c(x) for c, x in zip(items, v, strict=True))

        return fixed_tuple
    if isinstance(tp, type) and tp in _RECORDS:
        return lambda v: from_wire(tp, v)
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _scalar(tp: type[Any], where: str) -> Converter:
    if tp is float:

        def as_float(v: Any) -> float:
            if type(v) is float:
                return v
            if type(v) is int:
                return float(v)
            raise ProtocolError(f"{where}: expected float, got {type(v).__name__}")

        return as_float

    def exact(v: Any) -> Any:
        if type(v) is not tp:
            raise ProtocolError(f"{where}: expected {tp.__name__}, got {type(v).__name__}")
        return v

    return exact
