"""A virtual-time asyncio event loop: the clock moves only when every task waits.

``VirtualEventLoop`` is asyncio's own loop with two things changed: ``time()`` reads a
virtual clock, and the selector never blocks. When the loop has nothing ready to run,
asyncio asks the selector to wait until the next timer; the virtual selector instead
moves the clock to that timer at once. Timers, ``asyncio.sleep``, ``asyncio.timeout``
and every deadline therefore run unchanged, and a simulated second costs only the CPU
the code really spends in it. If nothing is ready and no timer is pending, no event
can ever happen again: the selector raises ``SimulationDeadlock`` instead of hanging.

There are no file descriptors, sockets or threads here: ``run_in_executor`` and other
I/O raise. Depends on asyncio only.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import concurrent.futures
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_LONGEST_WAIT = 24 * 3600.0
"""asyncio never asks its selector to wait longer than this (a day)."""


class SimulationError(RuntimeError):
    """Something the virtual-time loop cannot do (threads, real I/O)."""


class SimulationDeadlock(SimulationError):
    """Nothing is ready to run and no timer is pending: no task can ever wake up."""


class SimulationTimeLimit(SimulationError):
    """The virtual clock passed the loop's ``time_limit``."""


class _VirtualSelector(selectors.BaseSelector):
    """Never blocks: ``select(timeout)`` moves the loop's clock forward instead."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise SimulationError("the virtual-time loop has no file descriptors")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise KeyError(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            self._loop._deadlock()
        elif timeout > 0:
            self._loop._advance(timeout)
        return []

    def get_map(self) -> Any:
        return {}

    def close(self) -> None:
        return None


class VirtualEventLoop(asyncio.base_events.BaseEventLoop):
    """An asyncio loop on a virtual clock that starts at ``start`` seconds.

    ``time_limit``: raise ``SimulationTimeLimit`` rather than let the clock pass this
    virtual time (a guard for runs that would otherwise idle on timers forever).
    """

    def __init__(self, start: float = 0.0, *, time_limit: float | None = None) -> None:
        super().__init__()
        self._now = float(start)
        self._time_limit = time_limit
        self._selector = _VirtualSelector(self)
        # Timers due within this much of the clock fire together; virtual time is exact.
        self._clock_resolution = 1e-9
        self.advances = 0
        """How many times the clock jumped forward (a measure of idle points)."""

    def time(self) -> float:
        return self._now

    def _advance(self, timeout: float) -> None:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if timeout < _LONGEST_WAIT and scheduled:
            target = max(self._now, scheduled[0].when())  # exactly the next timer
        else:
            target = self._now + timeout
        if self._time_limit is not None and target > self._time_limit:
            raise SimulationTimeLimit(
                f"virtual clock would pass its limit of {self._time_limit:g}s "
                f"(next event at {target:.6f}s)"
            )
        self._now = target
        self.advances += 1

    def _deadlock(self) -> None:
        waiting = sorted(task.get_name() for task in asyncio.all_tasks(self) if not task.done())
        shown = ", ".join(waiting[:20])
        if len(waiting) > 20:
            shown += f" and {len(waiting) - 20} more"
        raise SimulationDeadlock(
            f"deadlock at virtual time {self._now:.6f}s: nothing is ready and no timer is "
            f"pending; {len(waiting)} task(s) wait forever" + (f": {shown}" if shown else "")
        )

    # ------------------------------------------------------------ what BaseEventLoop needs

    def _process_events(self, event_list: list[Any]) -> None:
        return None

    def _write_to_self(self) -> None:
        # call_soon_threadsafe wakes a blocked selector; this one never blocks.
        return None

    # ------------------------------------------------------------ what a simulation must not do

    def run_in_executor(
        self,
        executor: concurrent.futures.Executor | None,
        func: Callable[[*Ts], T],
        *args: *Ts,
    ) -> asyncio.Future[T]:
        raise SimulationError(
            "run_in_executor under simulation: threads would run outside virtual time "
            "(simulated executors run tasks inline through their task runner)"
        )


def run(main: Coroutine[Any, Any, T], *, time_limit: float | None = None) -> T:
    """Run ``main`` to completion on a fresh ``VirtualEventLoop`` (like ``asyncio.run``)."""
    with asyncio.Runner(loop_factory=lambda: VirtualEventLoop(time_limit=time_limit)) as runner:
        return runner.run(main)
