"""Released UDP relay sockets kept open for the next allocations.

The core hands a released port out again once it has rested
(:mod:`natkit.turn.released_ports`); the runner keeps the socket bound
meanwhile, so the next allocation on that port skips socket(), the buffer
options, bind(), the loop registration and close(). A parked socket stays
readable: what still arrives for the old allocation goes to the core,
which has no allocation on that relay and drops it.

At most ``capacity`` sockets are parked: when the pool is full, a newly
released socket is closed instead (the core, likewise, does not remember
its port), so the pool keeps the sockets that leave quarantine first.
None is parked longer than ``idle`` seconds (a timer runs while any is
parked). Parked sockets hold
file descriptors: :func:`pool_capacity` keeps them to a quarter of the
process's open-file limit, so they never starve live allocations.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from natkit.addr import Endpoint
from natkit.net.stack import DatagramEndpoint

__all__ = ["PARKED_IDLE", "RelaySocketPool", "open_file_limit", "pool_capacity"]

PARKED_IDLE = 60.0
"""Seconds a released relay socket stays open when no allocation takes it."""


def open_file_limit() -> int | None:
    """This process's soft RLIMIT_NOFILE (None: no limit, or no such thing here)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def pool_capacity(requested: int, fd_limit: int | None) -> int:
    """``requested``, at most a quarter of ``fd_limit`` open files."""
    if fd_limit is None:
        return requested
    return max(0, min(requested, fd_limit // 4))


class RelaySocketPool:
    """Parked relay sockets by relay endpoint, oldest first."""

    __slots__ = ("_loop", "_parked", "_timer", "capacity", "idle")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, capacity: int, idle: float = PARKED_IDLE
    ) -> None:
        if capacity < 0 or idle <= 0:
            raise ValueError("capacity must not be negative, idle must be positive")
        self._loop = loop
        self.capacity = capacity
        self.idle = idle
        self._parked: OrderedDict[Endpoint, tuple[float, DatagramEndpoint]] = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def park(self, relay: Endpoint, sock: DatagramEndpoint) -> bool:
        """Keep ``sock`` open for a later allocation on ``relay``; False
        (and nothing kept: the caller closes it) when the pool is full or
        holds no sockets at all. A full pool keeps what it has, the sockets
        parked longest ago, whose ports the core hands out next
        (:class:`natkit.turn.released_ports.ReleasedPorts` does the same)."""
        if not self.capacity or sock.closed:
            return False
        parked = self._parked
        old = parked.pop(relay, None)
        if old is not None and old[1] is not sock:
            old[1].close()
        if len(parked) >= self.capacity:
            return False
        parked[relay] = (self._loop.time(), sock)
        if self._timer is None:
            self._timer = self._loop.call_later(self.idle, self._sweep)
        return True

    def take(self, relay: Endpoint) -> DatagramEndpoint | None:
        """The socket parked at ``relay``, now the caller's."""
        entry = self._parked.pop(relay, None)
        return None if entry is None else entry[1]

    def close(self) -> list[DatagramEndpoint]:
        """Close every parked socket; return them (to await their release)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        socks = [sock for _, sock in self._parked.values()]
        self._parked.clear()
        for sock in socks:
            sock.close()
        return socks

    def __len__(self) -> int:
        return len(self._parked)

    def __contains__(self, relay: object) -> bool:
        return relay in self._parked

    def _sweep(self) -> None:
        self._timer = None
        parked = self._parked
        now = self._loop.time()
        while parked:
            relay, (since, sock) = next(iter(parked.items()))
            due = since + self.idle  # the one comparison, so a timer at `due` closes it
            if due > now:
                self._timer = self._loop.call_at(due, self._sweep)
                return
            del parked[relay]
            sock.close()
