"""Events reported by :class:`~natkit.rtp.session.RtpSession` (past tense,
frozen, keyword-only)."""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.rtp.packet import RtpPacket
from natkit.rtp.rtcp import RtcpPacket

__all__ = [
    "ByeReceived",
    "RemoteLatched",
    "RtcpReceived",
    "RtpEvent",
    "RtpReceived",
    "RtpStatistics",
    "SourceAdded",
    "SourceTimedOut",
    "SsrcChanged",
    "StatisticsUpdated",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpStatistics:
    """A snapshot of one session's media statistics.

    ``bytes_*`` count RTP payload octets (the SR octet count's unit). The
    reception side sums over the remote sources (A.3), ``fraction_lost``
    is that of the last report we sent, ``jitter_ms`` the largest source's
    A.8 jitter. ``remote_*`` is what the peer last reported about our
    stream; ``rtt_ms`` the last RFC 3550 §6.4.1 round-trip time (``None``
    until an SR we sent has been reported on).
    """

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    packets_lost: int = 0
    fraction_lost: float = 0.0
    jitter_ms: float = 0.0
    duplicates: int = 0
    rtt_ms: float | None = None
    remote_packets_lost: int | None = None
    remote_fraction_lost: float | None = None
    remote_jitter_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpReceived:
    """A valid RTP packet from a validated source, in arrival order.

    ``extended_sequence`` counts wraps of the 16-bit number (A.1), for a
    jitter buffer's ordering.
    """

    packet: RtpPacket
    source: Endpoint
    extended_sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpReceived:
    """A valid compound RTCP packet."""

    packets: tuple[RtcpPacket, ...]
    source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceAdded:
    """A new remote SSRC joined (validated RTP, or a valid RTCP packet)."""

    ssrc: int
    source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceTimedOut:
    """A remote SSRC was silent for ``timeout_intervals`` RTCP intervals (§6.3.5)."""

    ssrc: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ByeReceived:
    """A remote SSRC left with RTCP BYE (§6.6)."""

    ssrc: int
    reason: str | None
    source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class SsrcChanged:
    """Our SSRC collided with another participant's (§8.2): we sent BYE for
    ``old_ssrc`` and continue as ``new_ssrc``."""

    old_ssrc: int
    new_ssrc: int
    conflicting_source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteLatched:
    """With ``latch``, the remote endpoint followed where media came from
    (symmetric RTP / comedia, RFC 4961)."""

    remote_rtp: Endpoint
    remote_rtcp: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class StatisticsUpdated:
    """Statistics changed with an RTCP report sent or received."""

    statistics: RtpStatistics


RtpEvent = (
    RtpReceived
    | RtcpReceived
    | SourceAdded
    | SourceTimedOut
    | ByeReceived
    | SsrcChanged
    | RemoteLatched
    | StatisticsUpdated
)
