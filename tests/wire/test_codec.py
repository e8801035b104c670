"""Property tests of the wire codec and the message registry.

Strategies are derived from the type hints of every registered message class, so a
new message is covered as soon as it is registered. A small oracle (``fits``) states
independently which wire values a field type accepts; decoding must agree with it.
"""

from __future__ import annotations

import ast
import dataclasses
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drizzle.errors import ProtocolError
from drizzle.ids import ExecutorId
from drizzle.wire import messages, schema
from drizzle.wire.codec import Envelope, decode, encode
from drizzle.wire.schema import MESSAGE_TYPES, TYPE_IDS, field_decoders, message, record

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

MESSAGE_CLASSES: list[type[Any]] = [MESSAGE_TYPES[i] for i in sorted(MESSAGE_TYPES)]
RECORD_CLASSES: list[type[Any]] = sorted(schema._RECORDS, key=lambda c: c.__qualname__)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FEW = settings(SETTINGS, max_examples=15)

# ------------------------------------------------------------------- type introspection


def _unwrap(tp: Any) -> Any:
    """Strip ``NewType`` wrappers (``ExecutorId`` → ``str``)."""
    while getattr(tp, "__supertype__", None) is not None:
        tp = tp.__supertype__
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_var_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _is_fixed_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple and not _is_var_tuple(tp)


def _is_struct(tp: Any) -> bool:
    """A record or a message: encoded as a list of its fields."""
    return isinstance(tp, type) and (tp in schema._RECORDS or tp in TYPE_IDS)


def _fields(cls: type[Any]) -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]


def fits(tp: Any, v: Any) -> bool:
    """Whether wire value ``v`` is acceptable for a field declared as ``tp``."""
    tp = _unwrap(tp)
    if tp is Any:
        return True
    if tp is float:
        return type(v) in (int, float)
    if tp in (int, str, bytes, bool):
        return type(v) is tp
    if tp is type(None):
        return v is None
    if _is_union(tp):
        return any(fits(a, v) for a in typing.get_args(tp))
    if _is_var_tuple(tp):
        item = typing.get_args(tp)[0]
        return isinstance(v, list) and all(fits(item, x) for x in v)
    if _is_fixed_tuple(tp):
        items = typing.get_args(tp)
        return (
            isinstance(v, list)
            and len(v) == len(items)
            and all(fits(a, x) for a, x in zip(items, v, strict=True))
        )
    if _is_struct(tp):
        fields = _fields(tp)
        return (
            isinstance(v, list)
            and len(v) == len(fields)
            and all(fits(ftp, x) for (_, ftp), x in zip(fields, v, strict=True))
        )
    raise TypeError(f"test oracle does not know {tp!r}")


# ------------------------------------------------------------------------- strategies

WIRE_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, INT64_MAX)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
WIRE_VALUES = st.recursive(
    WIRE_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)
"""Any value msgpack produces when decoding with ``raw=False`` and string map keys."""

_STRUCT_STRATEGIES: dict[type[Any], st.SearchStrategy[Any]] = {}


def from_type(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a field annotation, as the Python side (before ``to_wire``) holds them."""
    tp = _unwrap(tp)
    if tp is Any:
        return WIRE_VALUES
    if tp is int:
        return st.integers(INT64_MIN, INT64_MAX)
    if tp is str:
        return st.text(max_size=12)
    if tp is bytes:
        return st.binary(max_size=32)
    if tp is float:
        return st.floats(allow_nan=False)
    if tp is bool:
        return st.booleans()
    if tp is type(None):
        return st.none()
    if _is_union(tp):
        return st.one_of([from_type(a) for a in typing.get_args(tp)])
    if _is_var_tuple(tp):
        return st.lists(from_type(typing.get_args(tp)[0]), max_size=3).map(tuple)
    if _is_fixed_tuple(tp):
        return st.tuples(*[from_type(a) for a in typing.get_args(tp)])
    if _is_struct(tp):
        return struct_strategy(tp)
    raise TypeError(f"no strategy for field type {tp!r}")


def struct_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Arbitrary instances of a record or message class, driven by its type hints."""
    strategy = _STRUCT_STRATEGIES.get(cls)
    if strategy is None:
        strategy = st.deferred(
            lambda: st.builds(cls, **{name: from_type(tp) for name, tp in _fields(cls)})
        )
        _STRUCT_STRATEGIES[cls] = strategy
    return strategy


any_message = st.sampled_from(MESSAGE_CLASSES).flatmap(struct_strategy)
ACTOR = st.text(max_size=10)
envelopes = st.builds(Envelope, target=ACTOR, sender=ACTOR, message=any_message)


def sample(tp: Any) -> Any:
    """A small deterministic value of ``tp``; unions take their first non-None arm."""
    tp = _unwrap(tp)
    if tp is Any:
        return "any"
    simple = {int: 7, str: "s", bytes: b"b", float: 1.5, bool: True, type(None): None}
    if tp in simple:
        return simple[tp]
    if _is_union(tp):
        args = typing.get_args(tp)
        return sample(next((a for a in args if a is not type(None)), args[0]))
    if _is_var_tuple(tp):
        return (sample(typing.get_args(tp)[0]),)
    if _is_fixed_tuple(tp):
        return tuple(sample(a) for a in typing.get_args(tp))
    if _is_struct(tp):
        return tp(**{name: sample(ftp) for name, ftp in _fields(tp)})
    raise TypeError(f"no sample for field type {tp!r}")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def raw_frame(env: Envelope) -> list[Any]:
    """The plain msgpack structure of an encoded envelope."""
    return msgpack.unpackb(encode(env), raw=False)


def positions(
    tp: Any, wire: Any, path: tuple[int, ...] = ()
) -> Iterator[tuple[tuple[int, ...], Any]]:
    """Every (path, declared type) inside ``wire``, a valid wire value of ``tp``."""
    yield path, tp
    yield from _inner_positions(tp, wire, path)


def _inner_positions(
    tp: Any, wire: Any, path: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], Any]]:
    tp = _unwrap(tp)
    if _is_union(tp):
        arm = next(a for a in typing.get_args(tp) if fits(a, wire))
        yield from _inner_positions(arm, wire, path)
    elif _is_var_tuple(tp):
        for i, x in enumerate(wire):
            yield from positions(typing.get_args(tp)[0], x, (*path, i))
    elif _is_fixed_tuple(tp):
        for i, (a, x) in enumerate(zip(typing.get_args(tp), wire, strict=True)):
            yield from positions(a, x, (*path, i))
    elif _is_struct(tp):
        for i, ((_, ftp), x) in enumerate(zip(_fields(tp), wire, strict=True)):
            yield from positions(ftp, x, (*path, i))


def replace(wire: Any, path: tuple[int, ...], value: Any) -> Any:
    if not path:
        return value
    copy = list(wire)
    copy[path[0]] = replace(copy[path[0]], path[1:], value)
    return copy


def assert_protocol_error_or_envelope(frame: bytes, **kwargs: Any) -> None:
    try:
        env = decode(frame, **kwargs)
    except ProtocolError:
        return
    assert isinstance(env, Envelope)
    assert type(env.target) is str
    assert type(env.sender) is str
    assert type(env.message) in TYPE_IDS
    # Whatever decodes must be a faithful message: it encodes again to the same frame
    # (compared as bytes, since a float field may hold NaN, which equals nothing).
    again = encode(env)
    assert encode(decode(again)) == again


# ------------------------------------------------------------------------- round trips


@SETTINGS
@given(envelopes)
def test_round_trip_any_message(env: Envelope) -> None:
    assert decode(encode(env)) == env


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
@FEW
@given(data=st.data())
def test_round_trip_each_message_type(cls: type[Any], data: st.DataObject) -> None:
    env = Envelope(data.draw(ACTOR), data.draw(ACTOR), data.draw(struct_strategy(cls)))
    decoded = decode(encode(env))
    assert decoded == env
    assert type(decoded.message) is cls
    assert _same_types(decoded.message, env.message)


def _same_types(a: Any, b: Any) -> bool:
    """Equality plus equal types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return type(a) is float and type(b) is int and a == b  # int in a float field
    if dataclasses.is_dataclass(a):
        return all(
            _same_types(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_deterministic_sample(cls: type[Any]) -> None:
    env = Envelope("target", "sender", sample(cls))
    assert decode(encode(env)) == env


def test_int_in_float_field_is_widened() -> None:
    frame = pack([TYPE_IDS[messages.ExecutorRegistered], "t", "s", ["e", 1, 2.5]])
    msg = decode(frame).message
    assert msg == messages.ExecutorRegistered("e", 1.0, 2.5)
    assert type(msg.heartbeat_interval) is float


def test_long_strings_round_trip() -> None:
    """Strings over 1 MiB (a huge error text) must decode: encode accepted them."""
    env = Envelope("t", "s", messages.ErrorReply("x" * (2 << 20)))
    assert decode(encode(env)) == env


def test_large_bytes_round_trip() -> None:
    result = messages.TaskResult(1, 2, 3, 4, 5, 6, "e", bytes(range(256)) * 10_000)
    env = Envelope("t", "s", result)
    assert decode(encode(env)) == env


# --------------------------------------------------------------------------- garbage


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(frame: bytes) -> None:
    assert_protocol_error_or_envelope(frame)


@SETTINGS
@given(st.sampled_from(sorted(MESSAGE_TYPES)), st.binary(max_size=120))
def test_random_bytes_behind_a_valid_header(type_id: int, tail: bytes) -> None:
    header = pack(type_id) + pack("t") + pack("s")
    assert_protocol_error_or_envelope(b"\x94" + header + tail)


@SETTINGS
@given(envelopes, st.data())
def test_corrupted_frames(env: Envelope, data: st.DataObject) -> None:
    frame = bytearray(encode(env))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    assert_protocol_error_or_envelope(bytes(frame))


@SETTINGS
@given(st.sampled_from(sorted(MESSAGE_TYPES)), WIRE_VALUES)
def test_random_fields(type_id: int, fields: Any) -> None:
    frame = pack([type_id, "t", "s", fields])
    if fits(MESSAGE_TYPES[type_id], fields):
        assert type(decode(frame).message) is MESSAGE_TYPES[type_id]
    else:
        with pytest.raises(ProtocolError):
            decode(frame)


@FEW
@given(envelopes)
def test_truncated_frames(env: Envelope) -> None:
    frame = encode(env)
    for cut in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode(frame[:cut])


@FEW
@given(envelopes, st.binary(min_size=1, max_size=8))
def test_trailing_bytes(env: Envelope, extra: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(encode(env) + extra)


@SETTINGS
@given(
    st.integers(INT64_MIN, (1 << 64) - 1).filter(lambda i: i not in MESSAGE_TYPES),
    WIRE_VALUES,
)
def test_unknown_type_id(type_id: int, fields: Any) -> None:
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode(pack([type_id, "t", "s", fields]))


@pytest.mark.parametrize(
    "header",
    [
        [True, "t", "s"],  # bool is not a type id, even though True == 1
        [1.0, "t", "s"],
        ["1", "t", "s"],
        [None, "t", "s"],
        [1, 1, "s"],
        [1, "t", None],
        [1, b"t", "s"],
        [1, "t", ["s"]],
    ],
)
def test_malformed_header(header: list[Any]) -> None:
    fields = raw_frame(Envelope("t", "s", sample(MESSAGE_TYPES[1])))[3]
    with pytest.raises(ProtocolError):
        decode(pack([*header, fields]))


@pytest.mark.parametrize(
    "frame",
    [
        pack(None),
        pack(1),
        pack("frame"),
        pack(b"frame"),
        pack([]),
        pack([1, "t", "s"]),
        pack([1, "t", "s", [], []]),
        pack({"type": 1}),
        b"",
        b"\xc1",  # never used by msgpack
        b"\xd4\x01\x00",  # ext type: not accepted
        b"\xc7\x00\x01",  # zero-length ext type: msgpack returns an ExtType (a tuple)
        b"\xc7\x00\xff",  # zero-length timestamp
        b"\x81\x91\x01\x02",  # map with a list key
        b"\x91" * 5000,  # nesting deeper than msgpack's stack
    ],
)
def test_not_an_envelope(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_wrong_field_count(cls: type[Any]) -> None:
    fields = raw_frame(Envelope("t", "s", sample(cls)))[3]
    type_id = TYPE_IDS[cls]
    for bad in (fields[:-1], [*fields, 0], [*fields, None], [], [fields]):
        if len(bad) == len(fields):
            continue
        with pytest.raises(ProtocolError, match="fields"):
            decode(pack([type_id, "t", "s", bad]))
    for not_a_list in (None, 0, "fields", b"fields", dict(enumerate(map(str, fields)))):
        with pytest.raises(ProtocolError):
            decode(pack([type_id, "t", "s", not_a_list]))


WRONG_CANDIDATES: list[Any] = [
    "str",
    1,
    -1,
    True,
    False,
    1.5,
    b"bytes",
    None,
    [],
    ["x"],
    [1],
    [None],
    {"k": 1},
]


def check_every_position(cls: type[Any]) -> None:
    """Every position (nested ones too), every candidate: decode agrees with ``fits``."""
    raw = raw_frame(Envelope("t", "s", sample(cls)))
    checked = 0
    for path, tp in positions(cls, raw[3]):
        if not path:
            continue
        for value in WRONG_CANDIDATES:
            frame = pack([*raw[:3], replace(raw[3], path, value)])
            if fits(tp, value):
                assert type(decode(frame).message) is cls
            else:
                with pytest.raises(ProtocolError):
                    decode(frame)
                checked += 1
    assert checked > 0 or not dataclasses.fields(cls)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_each_field_accepts_exactly_its_type(cls: type[Any]) -> None:
    check_every_position(cls)


def check_replaced_field(env: Envelope, data: st.DataObject) -> None:
    raw = raw_frame(env)
    cls = type(env.message)
    path, tp = data.draw(st.sampled_from(list(positions(cls, raw[3]))))
    value = data.draw(WIRE_VALUES)
    frame = pack([*raw[:3], replace(raw[3], path, value)])
    if fits(tp, value):
        assert type(decode(frame).message) is cls
    else:
        with pytest.raises(ProtocolError):
            decode(frame)


@SETTINGS
@given(envelopes, st.data())
def test_one_field_replaced_by_a_wrong_type(env: Envelope, data: st.DataObject) -> None:
    check_replaced_field(env, data)


def test_named_wrong_types() -> None:
    """The classic mistakes, spelled out."""
    hb = TYPE_IDS[messages.Heartbeat]
    with pytest.raises(ProtocolError, match="expected int"):
        decode(pack([hb, "t", "s", ["exec", "7", None]]))  # str where int is expected
    blob_frame = [TYPE_IDS[messages.BlocksFetched], "t", "s", [1, [[1, 2]], []]]
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode(pack(blob_frame))  # list where bytes is expected
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode(pack([TYPE_IDS[messages.BlocksFetched], "t", "s", [1, ["text"], []]]))
    keys = TYPE_IDS[messages.FetchBlocks]
    with pytest.raises(ProtocolError):
        decode(pack([keys, "t", "s", [1, [None]]]))  # None where a record is expected
    with pytest.raises(ProtocolError):
        decode(pack([keys, "t", "s", [1, [[1, 2]]]]))  # record with a missing field
    with pytest.raises(ProtocolError):
        decode(pack([keys, "t", "s", [1, [[1, 2, 3, 4]]]]))  # record with an extra field
    assert decode(pack([keys, "t", "s", [1, [[1, 2, 3]]]])).message == messages.FetchBlocks(
        1, (messages.BlockKey(1, 2, 3),)
    )


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ProtocolError, match="expected int, got bool"):
        decode(encode(Envelope("t", "s", messages.HeartbeatAck(True))))  # type: ignore[arg-type]
    with pytest.raises(ProtocolError):
        decode(pack([TYPE_IDS[messages.ReleaseBlocks], "t", "s", [[1, False]]]))
    with pytest.raises(ProtocolError):  # nor a float
        decode(pack([TYPE_IDS[messages.ExecutorRegistered], "t", "s", ["e", True, 1.0]]))


def test_int_is_not_a_bool() -> None:
    task = sample(messages.TaskSpec)
    env = Envelope("t", "s", messages.LaunchGroup(1, (task,), (), (), ()))
    raw = raw_frame(env)
    raw[3][1][0][-1] = 1  # TaskSpec.is_result
    with pytest.raises(ProtocolError, match="expected bool, got int"):
        decode(pack(raw))


def test_none_only_where_optional() -> None:
    task = sample(messages.TaskSpec)
    assert task.shuffle_output is not None
    for fields in (
        dataclasses.replace(task, shuffle_output=None),
        task,
    ):
        env = Envelope("t", "s", messages.LaunchGroup(1, (fields,), (), (), ()))
        assert decode(encode(env)) == env
    raw = raw_frame(Envelope("t", "s", messages.LaunchGroup(1, (task,), (), (), ())))
    raw[3][1][0][5] = None  # TaskSpec.payload: str, not optional
    with pytest.raises(ProtocolError):
        decode(pack(raw))


@pytest.mark.parametrize(
    "fields",
    [
        {1: 2},
        [1, {1: "x"}],
        [{1: "x"}, 1],
        [1, [{"a": {2: 3}}]],
    ],
)
def test_map_with_int_keys(fields: Any) -> None:
    hb = TYPE_IDS[messages.Heartbeat]
    with pytest.raises(ProtocolError):
        decode(pack([hb, "t", "s", fields]))


def test_map_with_int_keys_at_top_level() -> None:
    with pytest.raises(ProtocolError):
        decode(pack({1: 2}))
    with pytest.raises(ProtocolError):
        decode(pack({1: [1, "t", "s", []]}))


@pytest.mark.parametrize("ext", [b"\xc7\x00\x01", b"\xc7\x00\xff", b"\xd4\x01\x00"])
@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda c: c.__name__)
def test_ext_types_in_fields(cls: type[Any], ext: bytes) -> None:
    """No field accepts an ext value, not even an empty one (``ExtType`` is a tuple)."""
    fields = raw_frame(Envelope("t", "s", sample(cls)))[3]
    for i in range(len(fields)):
        parts = [pack(v) if j != i else ext for j, v in enumerate(fields)]
        frame = b"\x94" + pack(TYPE_IDS[cls]) + pack("t") + pack("s")
        frame += _array_header(len(parts)) + b"".join(parts)
        with pytest.raises(ProtocolError):
            decode(frame)


def _array_header(n: int) -> bytes:
    return bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")


def test_invalid_utf8_string() -> None:
    frame = bytearray(pack([TYPE_IDS[messages.ErrorReply], "t", "s", ["abc"]]))
    frame[frame.rindex(b"abc")] = 0xFF
    with pytest.raises(ProtocolError):
        decode(bytes(frame))


@FEW
@given(envelopes)
def test_max_frame(env: Envelope) -> None:
    frame = encode(env)
    assert decode(frame, max_frame=len(frame)) == env
    with pytest.raises(ProtocolError, match="exceeds"):
        decode(frame, max_frame=len(frame) - 1)


def test_small_max_frame() -> None:
    frame = encode(Envelope("t", "s", messages.ErrorReply("x" * 100)))
    for limit in (0, 1, 16, 64):
        with pytest.raises(ProtocolError):
            decode(frame, max_frame=limit)


def test_encode_rejects_unencodable_values() -> None:
    too_big = messages.HeartbeatAck(1 << 64)
    with pytest.raises(ProtocolError):
        encode(Envelope("t", "s", too_big))
    with pytest.raises(ProtocolError):
        encode(Envelope("t", "s", messages.ErrorReply(object())))  # type: ignore[arg-type]


# -------------------------------------------------------------------------- registry


def test_type_ids_are_unique_and_consistent() -> None:
    assert len(MESSAGE_TYPES) == len(TYPE_IDS) == len(set(MESSAGE_TYPES.values()))
    for type_id, cls in MESSAGE_TYPES.items():
        assert type(type_id) is int
        assert type_id >= 0
        assert TYPE_IDS[cls] == type_id
    source = Path(messages.__file__).read_text()
    declared = [
        dec.args[0].value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ClassDef)
        for dec in node.decorator_list
        if isinstance(dec, ast.Call)
        and isinstance(dec.func, ast.Name)
        and dec.func.id == "message"
        and isinstance(dec.args[0], ast.Constant)
    ]
    assert len(declared) == len(set(declared)), "a type id is declared twice in messages.py"


def _assert_frozen_slotted(cls: type[Any]) -> None:
    assert dataclasses.is_dataclass(cls), cls
    assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
    assert "__slots__" in cls.__dict__, cls
    instance = sample(cls)
    assert not hasattr(instance, "__dict__"), cls
    name = dataclasses.fields(cls)[0].name if dataclasses.fields(cls) else "anything"
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, name, None)
    hash(instance)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES + RECORD_CLASSES, ids=lambda c: c.__name__)
def test_classes_are_frozen_slotted_dataclasses(cls: type[Any]) -> None:
    _assert_frozen_slotted(cls)


@pytest.mark.parametrize("cls", MESSAGE_CLASSES + RECORD_CLASSES, ids=lambda c: c.__name__)
def test_field_types_compile(cls: type[Any]) -> None:
    """Unsupported annotations must fail here, not surface as ProtocolError at decode."""
    names, convs = field_decoders(cls)
    assert names == tuple(f.name for f in dataclasses.fields(cls))
    assert len(convs) == len(names)


def test_nested_structs_are_registered_records() -> None:
    def walk(tp: Any) -> Iterator[Any]:
        tp = _unwrap(tp)
        yield tp
        for arg in typing.get_args(tp):
            if arg is not Ellipsis:
                yield from walk(arg)

    for cls in MESSAGE_CLASSES + RECORD_CLASSES:
        for _, tp in _fields(cls):
            for inner in walk(tp):
                if dataclasses.is_dataclass(inner):
                    assert inner in schema._RECORDS, f"{cls.__name__} uses unregistered {inner}"


@dataclass(frozen=True, slots=True)
class _Unregistered:
    x: int


@pytest.mark.parametrize(
    "msg",
    [object(), None, 1, "text", (1, 2), _Unregistered(1), messages.BlockKey(1, 2, 3)],
    ids=repr,
)
def test_encode_unregistered(msg: Any) -> None:
    with pytest.raises(ProtocolError, match="not a registered message"):
        encode(Envelope("t", "s", msg))


def test_subclass_of_a_message_is_not_registered() -> None:
    @dataclass(frozen=True, slots=True)
    class Sub(messages.ErrorReply):
        pass

    with pytest.raises(ProtocolError):
        encode(Envelope("t", "s", Sub("why")))


@contextmanager
def scratch_registry() -> Iterator[None]:
    """Whatever is registered inside is forgotten on exit."""
    saved = (dict(MESSAGE_TYPES), dict(TYPE_IDS), set(schema._RECORDS), dict(schema._DECODERS))
    try:
        yield
    finally:
        for live, old in zip(
            (MESSAGE_TYPES, TYPE_IDS, schema._RECORDS, schema._DECODERS), saved, strict=True
        ):
            live.clear()
            live.update(old)  # type: ignore[attr-defined]


@pytest.fixture
def restore_registry() -> Iterator[None]:
    with scratch_registry():
        yield


@pytest.mark.usefixtures("restore_registry")
def test_duplicate_type_id_is_refused() -> None:
    free_id = max(MESSAGE_TYPES) + 1000

    @dataclass(frozen=True, slots=True)
    class First:
        a: int

    @dataclass(frozen=True, slots=True)
    class Second:
        b: str

    message(free_id)(First)
    assert MESSAGE_TYPES[free_id] is First
    env = Envelope("t", "s", First(3))
    assert decode(encode(env)) == env
    with pytest.raises(TypeError, match="already used"):
        message(free_id)(Second)
    with pytest.raises(TypeError, match="already used"):
        message(1)(Second)
    assert MESSAGE_TYPES[free_id] is First
    assert MESSAGE_TYPES[1] is MESSAGE_CLASSES[0]
    assert Second not in TYPE_IDS


@pytest.mark.usefixtures("restore_registry")
def test_registration_requires_frozen_slotted_dataclass() -> None:
    free_id = max(MESSAGE_TYPES) + 1000

    @dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclass(frozen=True)
    class NotSlotted:
        a: int

    class NotADataclass:
        __slots__ = ("a",)

    for cls in (NotFrozen, NotSlotted, NotADataclass):
        with pytest.raises(TypeError, match="frozen, slotted"):
            message(free_id)(cls)
        with pytest.raises(TypeError, match="frozen, slotted"):
            record(cls)
    assert free_id not in MESSAGE_TYPES


# Field shapes the schema supports but no current message uses.


@dataclass(frozen=True, slots=True)
class _Point:
    x: float
    owner: ExecutorId


@dataclass(frozen=True, slots=True)
class _Everything:
    pair: tuple[int, str]
    maybe: int | None
    points: tuple[_Point | None, ...]
    nested: tuple[tuple[bytes, ...], ...]
    best: _Point | None
    flag: bool
    anything: Any


SCRATCH_ID = max(MESSAGE_TYPES) + 500


@contextmanager
def everything_registered() -> Iterator[None]:
    with scratch_registry():
        record(_Point)
        message(SCRATCH_ID)(_Everything)
        yield


def test_every_field_shape_accepts_exactly_its_type() -> None:
    with everything_registered():
        check_every_position(_Everything)
        env = Envelope("t", "s", sample(_Everything))
        assert decode(encode(env)) == env


@SETTINGS
@given(st.data())
def test_every_field_shape_round_trips_and_rejects(data: st.DataObject) -> None:
    with everything_registered():
        env = Envelope("t", "s", data.draw(struct_strategy(_Everything)))
        assert decode(encode(env)) == env
        check_replaced_field(env, data)


def test_registry_restored() -> None:
    """The registry tests above leave no throwaway class behind."""
    assert [MESSAGE_TYPES[i] for i in sorted(MESSAGE_TYPES)] == MESSAGE_CLASSES
    assert SCRATCH_ID not in MESSAGE_TYPES
    assert _Point not in schema._RECORDS


# ------------------------------------------------------------------ import boundaries

SRC = Path(__file__).resolve().parents[2] / "src" / "drizzle"


def _imported_top_levels(path: Path) -> set[str]:
    """Top-level names of every absolute import in a module, however deeply nested."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "allowed"),
    [("msgpack", {"wire/codec.py"}), ("zmq", {"transport/zmq.py", "transport/security.py"})],
)
def test_third_party_import_boundaries(package: str, allowed: set[str]) -> None:
    assert SRC.is_dir(), SRC
    modules = sorted(SRC.rglob("*.py"))
    assert modules
    importers = {
        p.relative_to(SRC).as_posix() for p in modules if package in _imported_top_levels(p)
    }
    assert importers <= allowed, f"{package} imported outside {allowed}: {importers - allowed}"


def test_import_scanner_sees_nested_and_aliased_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n"
        "from drizzle.transport.zmq import ZmqTransport\n"
        "def f():\n"
        "    import msgpack as m\n"
        "    from zmq.asyncio import Context\n"
        "    from . import zmq\n"
    )
    assert _imported_top_levels(module) == {"os", "drizzle", "msgpack", "zmq"}
