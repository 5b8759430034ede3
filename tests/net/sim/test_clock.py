"""The virtual-clock event loop: time jumps, ordering, stall detection."""

from __future__ import annotations

import asyncio
import time

import pytest

from natkit.net.sim import SimulationFailed, SimulationStalled, VirtualClockLoop, run_virtual


def test_an_hour_of_sleeping_takes_no_wall_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        return loop.time()

    wall = time.perf_counter()
    assert run_virtual(main) == 3600.0
    assert time.perf_counter() - wall < 1.0


def test_timers_fire_in_order_at_their_exact_times() -> None:
    fired: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for name, at in (("c", 3.5), ("a", 0.25), ("b", 1.0)):
            loop.call_at(at, lambda n=name: fired.append((n, loop.time())))
        await asyncio.sleep(10)

    run_virtual(main)
    assert fired == [("a", 0.25), ("b", 1.0), ("c", 3.5)]


def test_asyncio_timeout_uses_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(39.5):
                await asyncio.Event().wait()
        return loop.time()

    assert run_virtual(main) == 39.5


def test_waiting_for_something_that_can_never_happen_raises() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled, match="nothing left to happen"):
        run_virtual(main)


def test_endless_timers_stop_at_the_time_limit() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            loop.call_later(30, tick)

        tick()
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled, match="time limit"):
        run_virtual(main, time_limit=3600)


def test_start_time_and_advance_to() -> None:
    loop = VirtualClockLoop(start=100.0)
    try:
        seen: list[float] = []
        loop.call_at(150.0, lambda: seen.append(loop.time()))
        loop.advance_to(200.0)
        assert seen == [150.0]
        assert loop.time() == 200.0
    finally:
        loop.close()


def test_an_exception_in_a_callback_fails_the_run() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: 1 / 0)
        await asyncio.sleep(5)

    with pytest.raises(SimulationFailed) as info:
        run_virtual(main)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_garbage_collector_settings_are_restored_after_a_run() -> None:
    import gc

    before = gc.get_threshold()

    async def main() -> tuple[int, int, int]:
        return gc.get_threshold()

    during = run_virtual(main)
    assert during[0] >= 20_000
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
