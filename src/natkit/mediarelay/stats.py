"""Per-call statistics: what each direction relayed, dropped and lost.

Counters live on the receiving relay port (the hot path bumps integers
only); :class:`DirectionStats` is a frozen snapshot summing a leg's ports.
Loss comes from RTP sequence numbers with the extended-sequence arithmetic
of RFC 3550 Appendix A.1 (``expected = extended max - base + 1``, ``lost =
expected - received``), restarted when the SSRC changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint

__all__ = ["CallStats", "DirectionStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectionStats:
    """One direction of a call (A to B: what leg A's ports received).

    ``packets``/``bytes``: valid packets accepted from the latched source
    (RTP and RTCP); ``forwarded``: of those, sent on to the other leg;
    ``rtcp_packets``: the RTCP share; ``dropped_foreign``: from a source
    other than the latched one after the learning window (RTP bleed);
    ``dropped_malformed``: not RTP/RTCP version 2 or too short;
    ``dropped_no_destination``: the other leg had no address yet;
    ``rtp_expected``/``rtp_lost``: from sequence numbers (lost may be
    negative with duplicates, as in RFC 3550 A.3); ``ssrc``: the last RTP
    SSRC seen; ``last_seen``: when the last valid packet arrived (None:
    never); ``source``: the latched RTP (or mux) source.
    """

    packets: int
    bytes: int
    forwarded: int
    rtcp_packets: int
    dropped_foreign: int
    dropped_malformed: int
    dropped_no_destination: int
    rtp_expected: int
    rtp_lost: int
    ssrc: int | None
    last_seen: float | None
    source: Endpoint | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStats:
    """Both directions of a call, and how long it has lived."""

    call_id: str
    created: float
    a_to_b: DirectionStats
    b_to_a: DirectionStats
