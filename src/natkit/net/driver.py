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
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar

from natkit.addr import Datagram, Endpoint
from natkit.net.stack import DatagramEndpoint, StreamConnection

__all__ = [
    "ClosedOnExit",
    "CoreDriver",
    "CoreTimer",
    "DatagramCore",
    "StartedAndClosedOnExit",
    "StreamSender",
    "TimedCore",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class TimedCore(Protocol):
    """A core's timer surface: an absolute deadline, and what to do at it."""

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...


class CoreTimer:
    """The single ``loop.call_at(core.get_timer())`` a driver keeps for a core.

    Call :meth:`arm` after every call into the core; when the deadline comes
    the core's ``handle_timer`` runs, then ``on_fired`` (the driver's flush,
    which arms again). After :meth:`close` nothing is armed any more."""

    __slots__ = ("_at", "_closed", "_core", "_handle", "_loop", "_on_fired")

    def __init__(self, core: TimedCore, on_fired: Callable[[], None]) -> None:
        self._core = core
        self._on_fired = on_fired
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None
        self._closed = False

    def arm(self) -> None:
        if self._closed:
            return
        deadline = self._core.get_timer()
        if deadline == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = deadline
        if deadline is not None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self._core.handle_timer(now=self._loop.time())
        self._on_fired()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class StreamSender:
    """A stream connection seen as the datagram endpoint a driver writes to,
    for a client core whose only peer is the server at the other end."""

    __slots__ = ("conn",)

    def __init__(self, conn: StreamConnection) -> None:
        self.conn = conn

    @property
    def local_endpoint(self) -> Endpoint:
        return self.conn.local_endpoint

    def send(self, data: bytes, remote: Endpoint) -> None:
        del remote
        self.conn.write(data)

    def close(self) -> None:
        self.conn.close()

    async def wait_closed(self) -> None:
        await self.conn.wait_closed()

    @property
    def closed(self) -> bool:
        return self.conn.closed


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
        self._timer = CoreTimer(core, self.flush)

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
        self._timer.arm()

    def close(self) -> None:
        self._timer.close()


class ClosedOnExit:
    """``async with`` for an object that is running once built: leaving the
    block calls ``close()`` then awaits ``wait_closed()`` (the asyncio
    server shape, :meth:`asyncio.Server.close` /
    :meth:`asyncio.Server.wait_closed`)."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()


class StartedAndClosedOnExit(ClosedOnExit):
    """:class:`ClosedOnExit` for an object started with ``await start()``:
    entering the block starts it. When ``start()`` fails half way (one of
    several sockets would not bind), what it opened is closed before the
    error propagates, as ``__aexit__`` would not run."""

    __slots__ = ()

    async def start(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self.close()
            await self.wait_closed()
            raise
        return self
