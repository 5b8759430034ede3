"""The relay's port range: RTP/RTCP pairs handed out in random order.

RFC 3550 §11: RTP on an even port, RTCP on the port above it. Pairs are
taken from a shuffled pool (``config.rng``), so relay ports are not
predictable from one call to the next (a little less surface for RTP bleed
scans), and returned when a call ends; a pair the driver could not bind
(another program holds it) goes to the back of the pool.
"""

from __future__ import annotations

from collections import deque

from natkit.errors import LocalProtocolError
from natkit.mediarelay.config import MediaRelayConfig

__all__ = ["PortAllocator"]


class PortAllocator:
    """Even RTP ports of ``[port_min, port_max]`` whose odd neighbour is in range too."""

    __slots__ = ("_free", "_taken")

    def __init__(self, config: MediaRelayConfig) -> None:
        first = config.port_min + (config.port_min & 1)
        ports = list(range(first, config.port_max, 2))  # port + 1 <= port_max
        if not ports:
            raise ValueError("the port range holds no even/odd pair")
        config.rng.shuffle(ports)
        self._free: deque[int] = deque(ports)
        self._taken: set[int] = set()

    @property
    def available(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """An even port whose pair (port, port + 1) is now reserved."""
        if not self._free:
            raise LocalProtocolError("the media relay's port range is exhausted")
        port = self._free.popleft()
        self._taken.add(port)
        return port

    def release(self, port: int) -> None:
        """Return a pair (unknown or already free ports are ignored)."""
        if port in self._taken:
            self._taken.discard(port)
            self._free.append(port)
