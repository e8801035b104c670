"""The virtual-time event loop: time moves only when every task waits."""

from __future__ import annotations

import asyncio
import time

import pytest

from drizzle.sim import (
    SimNetwork,
    SimulationDeadlock,
    SimulationError,
    SimulationTimeLimit,
    VirtualEventLoop,
    run,
)


def test_sleeping_costs_no_wall_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    began = time.perf_counter()
    assert run(main()) == pytest.approx(3600)
    assert time.perf_counter() - began < 5.0  # an hour of virtual time


def test_time_stands_still_while_anything_is_ready() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        seen = []
        for _ in range(1000):
            await asyncio.sleep(0)  # ready again at once: the clock must not move
            seen.append(loop.time())
        fired: list[float] = []
        loop.call_later(2.5, lambda: fired.append(loop.time()))
        await asyncio.sleep(5)
        return [*set(seen), *fired, loop.time()]

    assert run(main()) == [0.0, 2.5, 5.0]


def test_timers_fire_in_order_at_their_exact_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        order: list[tuple[str, float]] = []
        for name, delay in (("c", 0.3), ("a", 0.1), ("b", 0.2)):
            loop.call_later(delay, lambda n=name: order.append((n, loop.time())))
        async with asyncio.timeout(1.0):
            await asyncio.sleep(0.5)
        return order

    assert run(main()) == [("a", 0.1), ("b", 0.2), ("c", 0.3)]


def test_deadlines_fire_on_the_virtual_clock() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30):
                await loop.create_future()  # never resolved
        return loop.time()

    assert run(main()) == pytest.approx(30)


def test_a_deadlock_raises_instead_of_hanging() -> None:
    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    async def main() -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(stuck(), name="waits-forever")

    with pytest.raises(SimulationDeadlock, match="waits-forever"):
        run(main())


def test_threads_are_refused() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])

    with pytest.raises(SimulationError, match="run_in_executor"):
        run(main())


def test_time_limit() -> None:
    async def main() -> None:
        await asyncio.sleep(1000)

    with pytest.raises(SimulationTimeLimit):
        run(main(), time_limit=100)


def test_loop_starts_where_asked() -> None:
    loop = VirtualEventLoop(start=42.0)
    try:
        assert loop.time() == 42.0
    finally:
        loop.close()


async def test_a_simulated_network_needs_the_virtual_loop() -> None:
    with pytest.raises(SimulationError, match=r"drizzle\.sim\.run"):
        SimNetwork()
