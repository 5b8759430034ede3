"""RTCP report interval (RFC 3550 §6.2, §6.3.1, Appendix A.7)."""

from __future__ import annotations

import random

import pytest

from natkit.rtp.interval import COMPENSATION, deterministic_interval, rtcp_interval


def test_small_session_gets_the_five_second_minimum() -> None:
    t = deterministic_interval(
        members=2, senders=1, rtcp_bandwidth=400, we_sent=True, avg_rtcp_size=100, minimum=5.0
    )
    assert t == 5.0


def test_large_session_interval_grows_with_members() -> None:
    # 1000 receivers sharing 75 % of 400 B/s at 100 B each: 1000 * 100 / 300 s.
    t = deterministic_interval(
        members=1001, senders=1, rtcp_bandwidth=400, we_sent=False, avg_rtcp_size=100, minimum=5.0
    )
    assert t == pytest.approx(1000 * 100 / 300)


def test_senders_share_a_quarter_of_the_rtcp_bandwidth() -> None:
    t = deterministic_interval(
        members=1000, senders=10, rtcp_bandwidth=400, we_sent=True, avg_rtcp_size=100, minimum=5.0
    )
    assert t == pytest.approx(10 * 100 / 100)


def test_many_senders_share_all_the_bandwidth() -> None:
    t = deterministic_interval(
        members=100, senders=60, rtcp_bandwidth=40, we_sent=True, avg_rtcp_size=100, minimum=5.0
    )
    assert t == pytest.approx(100 * 100 / 40)


@pytest.mark.parametrize(("initial", "minimum"), [(True, 2.5), (False, 5.0)])
def test_randomised_interval_lies_between_half_and_one_and_a_half_over_compensation(
    initial: bool, minimum: float
) -> None:
    rng = random.Random(3)
    draws = [
        rtcp_interval(
            members=2, senders=1, rtcp_bandwidth=400, we_sent=True, avg_rtcp_size=100,
            minimum=5.0, initial=initial, rng=rng,
        )
        for _ in range(500)
    ]  # fmt: skip
    low, high = minimum * 0.5 / COMPENSATION, minimum * 1.5 / COMPENSATION
    assert all(low <= t <= high for t in draws)
    assert min(draws) < low + 0.1 and max(draws) > high - 0.1  # the whole range is used
