"""Token buckets keyed by source (natkit.ratelimit)."""

from __future__ import annotations

import pytest

from natkit.ratelimit import RateLimiter


def _allowed(limiter: RateLimiter, key: str, n: int, *, now: float) -> list[bool]:
    return [limiter.allow(key, now=now) for _ in range(n)]


def test_burst_is_allowed_then_denied() -> None:
    limiter = RateLimiter(rate=1.0, burst=3.0)
    assert _allowed(limiter, "a", 5, now=0.0) == [True, True, True, False, False]


def test_tokens_refill_at_the_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2.0)
    _allowed(limiter, "a", 2, now=0.0)
    assert limiter.allow("a", now=0.4) is False
    assert limiter.allow("a", now=0.5) is True
    assert limiter.allow("a", now=0.5) is False


def test_refill_is_capped_at_the_burst() -> None:
    limiter = RateLimiter(rate=10.0, burst=2.0)
    limiter.allow("a", now=0.0)
    assert _allowed(limiter, "a", 3, now=100.0) == [True, True, False]


def test_denied_attempts_do_not_delay_the_refill() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0)
    limiter.allow("a", now=0.0)
    for t in (0.2, 0.4, 0.6, 0.8):
        assert limiter.allow("a", now=t) is False
    assert limiter.allow("a", now=1.0) is True


def test_keys_have_independent_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow("a", now=0.0)
    assert not limiter.allow("a", now=0.0)
    assert limiter.allow("b", now=0.0)
    assert limiter.allow(("192.0.2.1", 3478), now=0.0)


def test_tracked_keys_never_exceed_max_keys() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0, max_keys=3)
    for i in range(20):
        limiter.allow(f"k{i}", now=0.0)
        assert len(limiter) <= 3
    assert len(limiter) == 3


def test_refilled_buckets_are_evicted_before_busy_ones() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0, max_keys=3)
    limiter.allow("idle", now=0.0)
    _allowed(limiter, "busy1", 2, now=10.0)
    _allowed(limiter, "busy2", 2, now=10.0)
    assert limiter.allow("new", now=10.0)
    assert len(limiter) == 3
    assert limiter.allow("busy1", now=10.0) is False  # still remembered, still empty
    assert limiter.allow("busy2", now=10.0) is False


def test_oldest_key_is_evicted_when_none_has_refilled() -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0, max_keys=2)
    _allowed(limiter, "first", 2, now=0.0)
    _allowed(limiter, "second", 2, now=0.0)
    assert limiter.allow("third", now=0.0)
    assert len(limiter) == 2
    assert limiter.allow("second", now=0.0) is False
    assert limiter.allow("first", now=0.0) is True  # forgotten: a fresh bucket


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        pytest.param(0.0, 1.0, id="zero-rate"),
        pytest.param(-1.0, 1.0, id="negative-rate"),
        pytest.param(1.0, 0.5, id="burst-below-one"),
    ],
)
def test_bad_parameters_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)
