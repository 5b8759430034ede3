"""Bandwidth quotas for relayed data (RFC 8656 §7.2 leaves quotas to policy), sans-IO.

A :class:`ByteBucket` is a token bucket counted in bytes: ``rate`` bytes per
second, holding at most ``burst`` bytes (one second's worth unless told
otherwise). A packet is relayed only if the bucket holds its size; a packet
that does not fit is dropped whole and costs nothing, so a sender above the
quota gets through at the quota rate rather than not at all.
"""

from __future__ import annotations

__all__ = ["ByteBucket"]


class ByteBucket:
    """``take(n, now)``: spend ``n`` bytes if the bucket has them."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else rate)
        self.tokens = self.burst
        self.last = now

    def take(self, n: int, now: float) -> bool:
        tokens = self.tokens
        if now > self.last:
            tokens = min(self.burst, tokens + (now - self.last) * self.rate)
            self.last = now
        if tokens < n:
            self.tokens = tokens
            return False
        self.tokens = tokens - n
        return True
