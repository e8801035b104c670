"""Lazy, partitioned datasets with Spark semantics: the user's program.

A ``Dataset`` is an immutable node of a lineage graph with a stable id; nothing runs
until an action (``collect``, ``count``, ``reduce``) or ``Context.run_job(s)`` plans it.
Only ``cache`` changes a dataset, marking it to be kept on executors once computed
(as Spark's ``cache`` does). Datasets are never pickled: the planner turns them into
``drizzle.pipeline`` nodes. Depends on ``pipeline`` and ``serde``; not on actors.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drizzle import serde
from drizzle.pipeline import Aggregator

if TYPE_CHECKING:
    from drizzle.context import Context


def _check_callable(fn: object, what: str) -> None:
    if not callable(fn):
        raise TypeError(f"{what} must be callable, got {type(fn).__name__}")


def _check_partitions(n: object, what: str = "num_partitions") -> int:
    if type(n) is not int or n <= 0:
        raise ValueError(f"{what} must be a positive int, got {n!r}")
    return n


# Picklable partition functions (small classes pickle faster than closures).


class _Map:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterator[Any]:
        return map(self.fn, it)


class _Filter:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterator[Any]:
        return filter(self.fn, it)


class _FlatMap:
    def __init__(self, fn: Callable[[Any], Iterable[Any]]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterator[Any]:
        return itertools.chain.from_iterable(map(self.fn, it))


class _Partitions:
    def __init__(self, fn: Callable[[Iterator[Any]], Iterable[Any]]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterable[Any]:
        return self.fn(it)


class _KeyBy:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterator[Any]:
        fn = self.fn
        return ((fn(x), x) for x in it)


class _MapValues:
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, _: int, it: Iterator[Any]) -> Iterator[Any]:
        fn = self.fn
        return ((k, fn(v)) for k, v in it)


class _ZipWith:
    def __init__(self, fn: Callable[..., Iterable[Any]]) -> None:
        self.fn = fn

    def __call__(self, _: int, *its: Iterator[Any]) -> Iterable[Any]:
        return self.fn(*its)


def _join_pairs(_: int, it: Iterator[Any]) -> Iterator[Any]:
    for key, (left, right) in it:
        for a in left:
            for b in right:
                yield key, (a, b)


def _identity(x: Any) -> Any:
    return x


def _to_list(x: Any) -> list[Any]:
    return [x]


def _append(acc: list[Any], x: Any) -> list[Any]:
    acc.append(x)
    return acc


class Dataset:
    """A lazy, partitioned collection. Build with ``Context.parallelize`` and transformations."""

    def __init__(self, ctx: Context, num_partitions: int) -> None:
        self.ctx = ctx
        self.id = ctx._next_dataset_id()
        self.num_partitions = num_partitions
        self.is_cached = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} partitions={self.num_partitions}>"

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Dataset cannot be pickled or used inside a task function; "
            "combine datasets with join, zip_partitions or union instead"
        )

    # ----------------------------------------------------------------- narrow transformations

    def map_partitions_with_index(
        self, fn: Callable[[int, Iterator[Any]], Iterable[Any]]
    ) -> Dataset:
        """``fn(partition_index, iterator)`` returns the new partition's records."""
        _check_callable(fn, "fn")
        return MappedDataset(self, fn)

    def map_partitions(self, fn: Callable[[Iterator[Any]], Iterable[Any]]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _Partitions(fn))

    def map(self, fn: Callable[[Any], Any]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _Map(fn))

    def filter(self, fn: Callable[[Any], Any]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _Filter(fn))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _FlatMap(fn))

    def key_by(self, fn: Callable[[Any], Any]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _KeyBy(fn))

    def map_values(self, fn: Callable[[Any], Any]) -> Dataset:
        _check_callable(fn, "fn")
        return MappedDataset(self, _MapValues(fn))

    def union(self, *others: Dataset) -> Dataset:
        for other in others:
            self._check_same_context(other)
        return UnionDataset((self, *others))

    def zip_partitions(self, *others_and_fn: Any) -> Dataset:
        """``a.zip_partitions(b, ..., fn)``: ``fn(iter_a, iter_b, ...)`` per partition."""
        if len(others_and_fn) < 2:
            raise TypeError("zip_partitions needs at least one other dataset and a function")
        *others, fn = others_and_fn
        _check_callable(fn, "fn")
        for other in others:
            if not isinstance(other, Dataset):
                raise TypeError(f"zip_partitions takes datasets, got {type(other).__name__}")
            self._check_same_context(other)
            if other.num_partitions != self.num_partitions:
                raise ValueError(
                    f"zip_partitions needs equal partition counts, got "
                    f"{self.num_partitions} and {other.num_partitions}"
                )
        return ZippedDataset((self, *others), _ZipWith(fn))

    def cache(self) -> Dataset:
        """Keep each partition on its executor once computed; later plans read it there."""
        self.is_cached = True
        return self

    # ------------------------------------------------------------------------------ shuffles

    def reduce_by_key(
        self, fn: Callable[[Any, Any], Any], num_partitions: int | None = None
    ) -> Dataset:
        """Merge the values of each key with ``fn``, combining map-side first."""
        _check_callable(fn, "fn")
        n = self._shuffle_partitions(num_partitions)
        return ShuffledDataset(self, n, Aggregator(_identity, fn, fn), group=False)

    def group_by_key(self, num_partitions: int | None = None) -> Dataset:
        n = self._shuffle_partitions(num_partitions)
        return ShuffledDataset(self, n, None, group=True)

    def partition_by(self, num_partitions: int) -> Dataset:
        """Redistribute ``(key, value)`` records by key hash, without merging."""
        return ShuffledDataset(self, _check_partitions(num_partitions), None, group=False)

    def join(self, other: Dataset, num_partitions: int | None = None) -> Dataset:
        """Inner join of two ``(key, value)`` datasets: ``(key, (left, right))``."""
        self._check_same_context(other)
        n = self._shuffle_partitions(num_partitions)
        return MappedDataset(CoGroupedDataset((self, other), n), _join_pairs)

    def _shuffle_partitions(self, num_partitions: int | None) -> int:
        if num_partitions is None:
            return self.num_partitions
        return _check_partitions(num_partitions)

    def _check_same_context(self, other: Dataset) -> None:
        if not isinstance(other, Dataset):
            raise TypeError(f"expected a Dataset, got {type(other).__name__}")
        if other.ctx is not self.ctx:
            raise ValueError("datasets belong to different contexts")

    # ------------------------------------------------------------------------------- actions

    async def collect(self) -> list[Any]:
        parts = await self.ctx.run_job(self)
        return [x for part in parts for x in part]

    async def count(self) -> int:
        parts = await self.ctx.run_job(self, _count)
        return sum(parts)

    async def reduce(self, fn: Callable[[Any, Any], Any]) -> Any:
        _check_callable(fn, "fn")
        parts = await self.ctx.run_job(self, _PartitionReduce(fn))
        values = [v for ok, v in parts if ok]
        if not values:
            raise ValueError("reduce of an empty dataset")
        result = values[0]
        for v in values[1:]:
            result = fn(result, v)
        return result


def _count(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)


class _PartitionReduce:
    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, it: Iterator[Any]) -> tuple[bool, Any]:
        sentinel = object()
        first = next(it, sentinel)
        if first is sentinel:
            return (False, None)
        acc = first
        for x in it:
            acc = self.fn(acc, x)
        return (True, acc)


class ParallelizedDataset(Dataset):
    def __init__(self, ctx: Context, data: Iterable[Any], num_partitions: int) -> None:
        super().__init__(ctx, num_partitions)
        slices = _slice(data, num_partitions)
        blobs = [serde.dumps_data(s) for s in slices]
        self.digests = tuple(serde.digest(b) for b in blobs)
        self.blobs = dict(zip(self.digests, blobs, strict=True))


def _slice(data: Iterable[Any], n: int) -> list[Any]:
    if isinstance(data, range):
        length = len(data)
        bounds = [length * i // n for i in range(n + 1)]
        return [data[bounds[i] : bounds[i + 1]] for i in range(n)]
    items = list(data)
    length = len(items)
    return [items[length * i // n : length * (i + 1) // n] for i in range(n)]


class MappedDataset(Dataset):
    def __init__(self, parent: Dataset, fn: Callable[[int, Iterator[Any]], Iterable[Any]]) -> None:
        super().__init__(parent.ctx, parent.num_partitions)
        self.parent = parent
        self.fn = fn


class UnionDataset(Dataset):
    def __init__(self, parents: tuple[Dataset, ...]) -> None:
        super().__init__(parents[0].ctx, sum(p.num_partitions for p in parents))
        self.parents = parents


class ZippedDataset(Dataset):
    def __init__(self, parents: tuple[Dataset, ...], fn: Callable[..., Iterable[Any]]) -> None:
        super().__init__(parents[0].ctx, parents[0].num_partitions)
        self.parents = parents
        self.fn = fn


class ShuffledDataset(Dataset):
    def __init__(
        self, parent: Dataset, num_partitions: int, aggregator: Aggregator | None, *, group: bool
    ) -> None:
        super().__init__(parent.ctx, num_partitions)
        self.parent = parent
        self.aggregator = aggregator
        self.group = group


class CoGroupedDataset(Dataset):
    def __init__(self, parents: tuple[Dataset, ...], num_partitions: int) -> None:
        super().__init__(parents[0].ctx, num_partitions)
        self.parents = parents


collect_partition = list
"""The default job function: the partition as a list."""

__all__ = ["Dataset", "collect_partition"]
