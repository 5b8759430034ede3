"""The RTCP transmission interval (RFC 3550 §6.2, §6.3.1, Appendix A.7).

RTCP takes a fixed share of the session bandwidth (5 %), a quarter of it for
senders while they are at most a quarter of the members; each member's
interval is the average compound size times the members sharing that
bandwidth, divided by it, but never below a minimum (5 s, halved before the
first report; or RFC 3550 §6.2's "reduced minimum" of 360 s divided by the
session bandwidth in kbit/s). The interval is then randomised to 0.5-1.5
times its value, so members do not synchronise, and divided by e - 3/2 to
compensate for timer reconsideration (§6.3.1).
"""

from __future__ import annotations

import math

from natkit.rng import Rng

__all__ = ["COMPENSATION", "deterministic_interval", "rtcp_interval"]

COMPENSATION = math.e - 1.5  # §6.3.1: compensates for timer reconsideration


def deterministic_interval(
    *,
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    minimum: float,
    sender_fraction: float = 0.25,
) -> float:
    """The interval before randomisation (A.7 up to ``drand48``), in seconds.

    ``rtcp_bandwidth`` is in octets per second, ``avg_rtcp_size`` in octets
    including UDP/IP headers. This is also §6.3.5's ``Td`` for timeouts.
    """
    n = members
    bandwidth = rtcp_bandwidth
    if senders <= members * sender_fraction:
        if we_sent:
            bandwidth *= sender_fraction
            n = senders
        else:
            bandwidth *= 1 - sender_fraction
            n -= senders
    t = avg_rtcp_size * max(n, 1) / bandwidth if bandwidth > 0 else minimum
    return max(t, minimum)


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    minimum: float,
    initial: bool,
    rng: Rng,
    sender_fraction: float = 0.25,
) -> float:
    """The randomised RTCP interval of RFC 3550 A.7 ``rtcp_interval()``.

    ``minimum`` is halved for the first report (``initial``, §6.2).
    """
    t = deterministic_interval(
        members=members,
        senders=senders,
        rtcp_bandwidth=rtcp_bandwidth,
        we_sent=we_sent,
        avg_rtcp_size=avg_rtcp_size,
        minimum=minimum / 2 if initial else minimum,
        sender_fraction=sender_fraction,
    )
    return t * (rng.random() + 0.5) / COMPENSATION
