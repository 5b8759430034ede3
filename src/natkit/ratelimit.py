"""Token buckets keyed by source, with bounded memory.

Used where a server must not become a reflector or spend itself on one
abuser: STUN error responses, TURN 401 challenges, SIP 4xx floods. Pure: the
caller passes ``now``.
"""

from __future__ import annotations

from collections.abc import Hashable

__all__ = ["RateLimiter"]


class RateLimiter:
    """Allow ``rate`` events per second per key, with bursts of ``burst``.

    At most ``max_keys`` keys are tracked; when full, keys whose buckets have
    refilled are forgotten first, then the oldest ones.
    """

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, rate: float, burst: float, *, max_keys: int = 65536) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def allow(self, key: Hashable, *, now: float) -> bool:
        """Spend one token of ``key``'s bucket if it has one."""
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._evict(now)
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def _evict(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
