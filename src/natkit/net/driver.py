"""The one driver pattern for sans-IO datagram cores on asyncio.

After any call into a core, :meth:`CoreDriver.flush` sends what the core
queued, hands its events to the owner, and re-arms a single
``loop.call_at(core.get_timer())``. Because the loop's clock is the one the
core is fed (``loop.time()``), the same driver runs on real time and on the
simulated internet's virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from natkit.addr import Datagram, Endpoint
from natkit.net.stack import DatagramEndpoint

__all__ = ["CoreDriver", "DatagramCore"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class DatagramCore(Protocol[E_co]):
    """What a driver needs from a core (STYLE.md "One shape for every core")."""

    def datagrams_to_send(self, *, now: float) -> list[Datagram]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...

    def next_event(self) -> E_co | None: ...


class CoreDriver(Generic[E]):
    """Drives ``core`` over ``endpoints`` (keyed by local endpoint; the
    ``None`` key, or the only endpoint, serves datagrams that name none)."""

    def __init__(
        self,
        core: DatagramCore[E],
        endpoints: Mapping[Endpoint | None, DatagramEndpoint],
        on_event: Callable[[E], None],
    ) -> None:
        self.core = core
        self.endpoints = dict(endpoints)
        if None not in self.endpoints and len(self.endpoints) == 1:
            self.endpoints[None] = next(iter(self.endpoints.values()))
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closed = False

    def now(self) -> float:
        return self._loop.time()

    def flush(self) -> None:
        """Send queued datagrams, deliver events, re-arm the timer."""
        core = self.core
        for data, remote, local in core.datagrams_to_send(now=self._loop.time()):
            ep = self.endpoints.get(local) or self.endpoints.get(None)
            if ep is None:
                log.warning("no endpoint for %s; dropping datagram", local)
                continue
            ep.send(data, remote)
        while (event := core.next_event()) is not None:
            self.on_event(event)
        self._arm()

    def _arm(self) -> None:
        if self._closed:
            return
        deadline = self.core.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(now=self._loop.time())
        self.flush()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
