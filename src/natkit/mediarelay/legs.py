"""The parts of a relayed call: two legs, each with its relay ports.

A call relays between leg A (the caller's side) and leg B (the callee's).
Each leg owns one relay port per RTP component: an RTP port and an RTCP
port, or a single port carrying both when the leg does rtcp-mux (RFC 5761).
The driver binds the ports and hands their local endpoints to the core in a
:class:`LegSetup`; the core answers with the :class:`LegEndpoints` the
signalling puts in the SDP (``c=``/``m=``, ``a=rtcp`` of RFC 3605).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.addr import Endpoint

__all__ = ["Component", "LegEndpoints", "LegSetup", "LegSide", "LegUpdate"]


class LegSide(enum.Enum):
    """Which side of the call a leg faces."""

    A = "a"
    B = "b"

    @property
    def other(self) -> LegSide:
        return LegSide.B if self is LegSide.A else LegSide.A


class Component(enum.Enum):
    """What a relay port carries."""

    RTP = "rtp"
    RTCP = "rtcp"
    MUX = "mux"  # RTP and RTCP on one port (RFC 5761)


@dataclass(frozen=True, slots=True, kw_only=True)
class LegSetup:
    """A leg as the driver bound it: ``rtp_local`` and ``rtcp_local`` (None:
    rtcp-mux, RTCP shares ``rtp_local``), and what the endpoint announced in
    its SDP, which seeds the latch: ``remote_rtp`` (``c=`` and ``m=`` port)
    and ``remote_rtcp`` (``a=rtcp``, RFC 3605; default: the RTP port + 1)."""

    rtp_local: Endpoint
    rtcp_local: Endpoint | None = None
    remote_rtp: Endpoint | None = None
    remote_rtcp: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegUpdate:
    """A re-offer's new SDP addresses for a leg (None: keep what was latched)."""

    remote_rtp: Endpoint | None = None
    remote_rtcp: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LegEndpoints:
    """Where the relay receives a leg's media: what its SDP must name."""

    rtp: Endpoint
    rtcp: Endpoint | None  # None: rtcp-mux (a=rtcp-mux, RTCP goes to ``rtp``)

    @property
    def rtcp_mux(self) -> bool:
        return self.rtcp is None
