"""Property: any small program gives the same results for every group size, and the
results of a plain-Python reference.

A program is a chain of maps and filters over small int lists, keyed, then one of
``reduce_by_key`` / two chained ``reduce_by_key`` / ``group_by_key`` / ``join`` with a
cached side dataset / nothing,
optionally folded into a cached running state (``union`` with the previous state,
then ``reduce_by_key``). It runs as N micro-batches through ``run_jobs`` with group
sizes 1, 2, 7 and 50 on one ``local[3]`` context, shared by every example.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from drizzle import Context, Dataset
from drizzle.partitioning import partition_of

from .conftest import WAIT, MakeContext

GROUP_SIZES = (1, 2, 7, 50)

# Picklable, readable building blocks (hypothesis prints failing programs with them).


@dataclass(frozen=True)
class Affine:
    a: int
    c: int

    def __call__(self, x: int) -> int:
        return self.a * x + self.c


@dataclass(frozen=True)
class DropResidue:
    m: int
    r: int

    def __call__(self, x: int) -> bool:
        return x % self.m != self.r


@dataclass(frozen=True)
class Mod:
    k: int

    def __call__(self, x: int) -> int:
        return x % self.k


@dataclass(frozen=True)
class Rekey:
    """``(k, v) -> (k % k2, v)``: a second shuffle on a coarser key."""

    k2: int

    def __call__(self, record: tuple[int, int]) -> tuple[int, int]:
        return (record[0] % self.k2, record[1])


def product(pair: tuple[int, int]) -> int:
    return pair[0] * pair[1]


def sorted_tuple(values: Iterable[int]) -> tuple[int, ...]:
    return tuple(sorted(values))


@dataclass(frozen=True)
class Program:
    batches: tuple[tuple[int, ...], ...]
    in_parts: int
    narrow: tuple[Affine | DropResidue, ...]
    keys: int
    kind: str  # "reduce" | "rereduce" | "group" | "join" | "none"
    out_parts: int
    side: tuple[tuple[int, int], ...]
    side_parts: int
    stateful: bool
    state_parts: int
    """Partitions of the empty initial state (differs from ``out_parts`` at times, so
    the first micro-batch has another shape and the group ends after it)."""


ints = st.integers(-20, 20)
narrow_ops = st.one_of(
    st.builds(Affine, st.integers(-2, 3), st.integers(-5, 5)),
    st.builds(DropResidue, st.integers(2, 4), st.integers(0, 3)),
)


@st.composite
def programs(draw: st.DrawFn) -> Program:
    n = draw(st.integers(1, 12))
    keys = draw(st.integers(1, 5))
    out_parts = draw(st.integers(1, 4))
    return Program(
        batches=tuple(
            draw(st.lists(st.lists(ints, max_size=12).map(tuple), min_size=n, max_size=n))
        ),
        in_parts=draw(st.integers(1, 4)),
        narrow=tuple(draw(st.lists(narrow_ops, max_size=3))),
        keys=keys,
        kind=draw(st.sampled_from(["reduce", "rereduce", "group", "join", "none"])),
        out_parts=out_parts,
        side=tuple(draw(st.lists(st.tuples(st.integers(0, keys), st.integers(-3, 3)), max_size=6))),
        side_parts=draw(st.integers(1, 3)),
        stateful=draw(st.booleans()),
        state_parts=draw(st.sampled_from([out_parts, 1, 2])),
    )


# ----------------------------------------------------------------------------- reference


def reference(prog: Program) -> list[list[Any]]:
    """Each micro-batch's records, sorted, computed on Python lists."""
    state: dict[int, int] = {}
    out: list[list[Any]] = []
    for data in prog.batches:
        xs = list(data)
        for op in prog.narrow:
            xs = [op(x) for x in xs] if isinstance(op, Affine) else [x for x in xs if op(x)]
        kv = [(x % prog.keys, x) for x in xs]
        records: list[Any]
        if prog.kind in ("reduce", "rereduce"):
            sums: dict[int, int] = {}
            for k, v in kv:
                k = k % 2 if prog.kind == "rereduce" else k
                sums[k] = sums.get(k, 0) + v
            records = list(sums.items())
        elif prog.kind == "group":
            groups: dict[int, list[int]] = {}
            for k, v in kv:
                groups.setdefault(k, []).append(v)
            records = [(k, sorted_tuple(vs)) for k, vs in groups.items()]
        elif prog.kind == "join":
            records = [(k, (v, t)) for k, v in kv for k2, t in prog.side if k == k2]
        else:
            records = kv
        if prog.stateful:
            for k, v in records:
                value = sum(v) if prog.kind == "group" else product(v) if prog.kind == "join" else v
                state[k] = state.get(k, 0) + value
            out.append(sorted(state.items()))
        else:
            out.append(sorted(records))
    return out


# ------------------------------------------------------------------------------ on drizzle


def build(ctx: Context, prog: Program, side: Dataset) -> list[Dataset]:
    """One dataset per micro-batch; a fresh state chain each call."""
    state = ctx.parallelize([], prog.state_parts).cache()
    jobs = []
    for data in prog.batches:
        ds = ctx.parallelize(data, prog.in_parts)
        for op in prog.narrow:
            ds = ds.map(op) if isinstance(op, Affine) else ds.filter(op)
        kv = ds.key_by(Mod(prog.keys))
        if prog.kind == "reduce":
            out = kv.reduce_by_key(operator.add, prog.out_parts)
        elif prog.kind == "rereduce":  # three stages
            once = kv.reduce_by_key(operator.add, prog.in_parts)
            out = once.map(Rekey(2)).reduce_by_key(operator.add, prog.out_parts)
        elif prog.kind == "group":
            out = kv.group_by_key(prog.out_parts).map_values(sorted_tuple)
        elif prog.kind == "join":
            out = kv.join(side, prog.out_parts)
        else:
            out = kv
        if prog.stateful:
            if prog.kind == "group":
                out = out.map_values(sum)
            elif prog.kind == "join":
                out = out.map_values(product)
            state = out.union(state).reduce_by_key(operator.add, prog.out_parts).cache()
            jobs.append(state)
        else:
            jobs.append(out)
    return jobs


def shuffled_output(prog: Program) -> bool:
    return prog.stateful or prog.kind != "none"


@pytest.fixture(params=["inline", "pull"])
async def context3(request: pytest.FixtureRequest, make_context: MakeContext) -> Context:
    """One ``local[3]`` context for the whole test function, shared by its examples; small
    shuffle blocks travel inside notices, or reducers always pull them."""
    limit = 64 * 1024 if request.param == "inline" else 0
    return await make_context("local[3]", inline_block_limit=limit)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(prog=programs())
async def test_same_results_for_every_group_size(context3: Context, prog: Program) -> None:
    ctx = context3
    event(f"kind={prog.kind} stateful={prog.stateful} n={len(prog.batches)}")
    async with asyncio.timeout(WAIT):
        side = ctx.parallelize(prog.side, prog.side_parts).cache()
        expected = reference(prog)
        runs = {}
        for group_size in GROUP_SIZES:
            runs[group_size] = await ctx.run_jobs(build(ctx, prog, side), group_size=group_size)
        first = runs[GROUP_SIZES[0]]
        for group_size in GROUP_SIZES[1:]:
            assert runs[group_size] == first, f"group size {group_size} differs from 1"
        assert [sorted(r for part in parts for r in part) for parts in first] == expected
        if shuffled_output(prog):
            for parts in first:
                assert len(parts) == prog.out_parts
                for p, part in enumerate(parts):
                    assert all(partition_of(k, prog.out_parts) == p for k, _ in part)
