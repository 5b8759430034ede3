"""Events reported by the TURN cores (past tense, frozen, keyword-only).

Server events tell the driver what to do with sockets (open or close a relay,
connect to a TCP peer, bridge two TCP connections) and tell operators what
happened (allocations made and gone, authentication failures). Client events
report the outcome of the client's commands and data from peers.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint, Transport

__all__ = [
    "AllocationCreated",
    "AllocationDeleted",
    "AuthenticationFailed",
    "ConnectionBound",
    "FiveTuple",
    "PeerConnectRequested",
    "PeerConnectionReleased",
    "RelayReleased",
    "RelayRequested",
    "TurnServerEvent",
]


@dataclass(frozen=True, slots=True)
class FiveTuple:
    """The client side of an allocation (RFC 8656 §2): client address, server
    address and transport. ``server`` is the local endpoint the client's
    packets arrived at (for a stream, the connection's local endpoint)."""

    client: Endpoint
    server: Endpoint
    transport: Transport


# -- server: socket work for the driver -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayRequested:
    """Open relay sockets at exactly ``relays`` (one per address family; two
    for an RFC 8656 dual allocation), UDP, or a TCP listener for an RFC 6062
    allocation (``transport`` TCP). Answer with ``TurnServer.relay_opened``
    (the endpoints that could be bound) or ``relay_failed``. For EVEN-PORT
    with R set, ``reserve`` names the port-plus-one endpoint to hold too."""

    request_id: int
    relays: tuple[Endpoint, ...]
    transport: Transport
    reserve: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayReleased:
    """Close the relay socket (or held reservation) at ``relay``."""

    relay: Endpoint
    transport: Transport


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnectRequested:
    """RFC 6062 §5.2: open a TCP connection from ``relay`` to ``peer``; answer
    with ``peer_connected(connection_id)`` or ``peer_connect_failed``."""

    connection_id: int
    relay: Endpoint
    peer: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionBound:
    """RFC 6062 §5.4: from now on, bytes of the client data connection
    ``data_connection`` and the peer connection ``connection_id`` are piped
    to each other, unframed, by the driver."""

    connection_id: int
    data_connection: FiveTuple


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnectionReleased:
    """Close peer connection ``connection_id`` (and its bound data connection):
    never bound in time (30 s, §5.3), or its allocation went away."""

    connection_id: int


# -- server: what operators want to know -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationCreated:
    allocation_id: int
    five_tuple: FiveTuple
    username: str
    relays: tuple[Endpoint, ...]
    lifetime: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationDeleted:
    """``reason``: "expired", "refreshed to zero", "kicked", "connection closed",
    "shutdown"."""

    allocation_id: int
    five_tuple: FiveTuple
    username: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationFailed:
    """A request carried credentials that did not verify (not a first,
    unauthenticated request: those are the normal 401 challenge)."""

    client: Endpoint
    username: str | None
    code: int


TurnServerEvent = (
    RelayRequested
    | RelayReleased
    | PeerConnectRequested
    | ConnectionBound
    | PeerConnectionReleased
    | AllocationCreated
    | AllocationDeleted
    | AuthenticationFailed
)
