"""Where a SIP message came from and where it goes: transports, flows, targets.

A *flow* (RFC 5626 §3) is what a message travelled over: one TCP, TLS or
WebSocket connection, or, for UDP, the pair of local and remote endpoints.
Every received message carries its :class:`Source`; every message sent names
a :class:`Target`, optionally pinned to a flow (an edge proxy sending a
request to a registered user agent over the connection it registered on).
``FlowId`` values are opaque strings minted by the transport driver.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.addr import Endpoint

__all__ = ["FlowId", "SipTransport", "Source", "Target"]

FlowId = str
"""Opaque, unique per stream connection, or per (local, remote) pair on UDP."""


class SipTransport(enum.StrEnum):
    """SIP transports (RFC 3261 §18, RFC 7118 for WebSocket). ``str(t).upper()``
    is the Via token; ``sips`` needs one of the secure ones."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    WS = "ws"
    WSS = "wss"

    @property
    def reliable(self) -> bool:
        """Stream transports: no retransmission timers A/E/G (RFC 3261 §17)."""
        return self is not SipTransport.UDP

    @property
    def secure(self) -> bool:
        return self in (SipTransport.TLS, SipTransport.WSS)

    @property
    def via_token(self) -> str:
        return self.value.upper()

    @classmethod
    def from_via(cls, token: str) -> SipTransport | None:
        """The transport a Via's protocol token names, or None for ones natkit
        does not speak (SCTP, extensions)."""
        try:
            return cls(token.lower())
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Source:
    """Where a received message came from, and over which flow."""

    transport: SipTransport
    remote: Endpoint
    local: Endpoint
    flow: FlowId


@dataclass(frozen=True, slots=True)
class Target:
    """Where a message goes; ``flow`` pins it to an existing connection/flow."""

    transport: SipTransport
    remote: Endpoint
    flow: FlowId | None = None
