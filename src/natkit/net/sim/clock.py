"""An asyncio event loop on a virtual clock.

The loop never sleeps: whenever nothing is ready to run, it jumps its clock
to the next scheduled timer. Ordinary asyncio code - ``asyncio.sleep``,
``loop.call_at``, ``asyncio.timeout``, natkit's drivers - runs unchanged,
and minutes of protocol time pass in milliseconds of wall time. The same
inputs (and seeds) replay the same run exactly.

When nothing is ready and no timer is left, no event can ever happen again
(the simulated network delivers packets through timers, never through file
descriptors), so instead of blocking forever the loop raises
:class:`SimulationStalled`. It raises too when the clock would pass
``time_limit``, which bounds runs whose timers keep firing forever
(keepalives) while the awaited outcome never comes.

Threads do not mix with virtual time: nothing may wake this loop from
another thread (no ``run_in_executor``, no ``getaddrinfo``).
"""

from __future__ import annotations

import asyncio
import gc
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from natkit.errors import NatkitError

__all__ = ["SimulationFailed", "SimulationStalled", "VirtualClockLoop", "run_virtual"]

T = TypeVar("T")


class SimulationStalled(NatkitError):
    """The simulation can make no more progress (or ran out of virtual time)."""


class SimulationFailed(NatkitError):
    """A callback raised inside the simulation; the run stops with it as cause.

    asyncio's default is to log such errors and carry on, which in a
    simulation silently loses packets: a bug must fail the run instead.
    """


class _VirtualSelector(selectors.BaseSelector):
    """Keeps registrations (the loop's self-pipe) but never reports I/O; a
    wait becomes a jump of the virtual clock."""

    def __init__(self) -> None:
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.loop: VirtualClockLoop | None = None

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._map.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self.loop
        assert loop is not None
        failure = loop.failure
        if failure is not None:
            loop.failure = None
            exc = failure.get("exception")
            raise SimulationFailed(str(failure.get("message", "callback failed"))) from (
                exc if isinstance(exc, BaseException) else None
            )
        if timeout is None:
            raise SimulationStalled(
                f"nothing left to happen at t={loop.time():.6f}: the awaited result can never come"
            )
        if timeout > 0:
            loop._advance()  # the selector is the loop's clock hand
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual; see the module docstring."""

    def __init__(self, *, start: float = 0.0, time_limit: float = 7 * 24 * 3600.0) -> None:
        selector = _VirtualSelector()
        self._now = start
        self.time_limit = time_limit
        super().__init__(selector)
        selector.loop = self
        self.failure: dict[str, Any] | None = None
        self.set_exception_handler(self._record_failure)

    def _record_failure(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.failure is None:
            self.failure = context

    def time(self) -> float:
        return self._now

    def _advance(self) -> None:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if not scheduled:
            return
        when = scheduled[0].when()
        if when > self.time_limit:
            raise SimulationStalled(
                f"virtual time limit of {self.time_limit:g} s reached with timers still pending"
            )
        self._now = max(self._now, when)

    def advance_to(self, when: float) -> None:
        """Run everything scheduled up to virtual time ``when`` (from outside the loop)."""
        self.run_until_complete(asyncio.sleep(max(0.0, when - self._now)))


def run_virtual(
    main: Coroutine[Any, Any, T] | Callable[[], Coroutine[Any, Any, T]],
    *,
    start: float = 0.0,
    time_limit: float = 7 * 24 * 3600.0,
) -> T:
    """``asyncio.run`` on a :class:`VirtualClockLoop`.

    A simulation allocates a few small objects per packet and frees them at
    once; Python's cyclic garbage collector would spend a sixth of the run
    rescanning long-lived state. For the duration of the run, existing
    objects are frozen out of collection and the young generation's
    threshold is raised; both are restored afterwards.
    """
    coro = main() if callable(main) else main
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 20_000), *threshold[1:])
    try:
        with asyncio.Runner(
            loop_factory=lambda: VirtualClockLoop(start=start, time_limit=time_limit)
        ) as runner:
            return runner.run(coro)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
