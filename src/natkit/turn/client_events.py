"""Events reported by the TURN client cores (past tense, frozen, keyword-only).

:class:`~natkit.turn.client.TurnClient` reports the outcome of its commands
(allocate, create_permission, bind_channel, connect, release), what happened
to the allocation on its own (refreshes, loss, redirection) and data from
peers. :class:`~natkit.turn.client.TurnConnectionBinder` reports how an
RFC 6062 data connection's ConnectionBind ended. ``code`` is the STUN error
code of the response, or ``None`` when no usable response came (timeout,
integrity failure, closed connection).
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.turn.attributes import AddressErrorCode

__all__ = [
    "Allocated",
    "AllocationFailed",
    "AllocationLost",
    "AllocationRefreshed",
    "AllocationReleased",
    "ChannelBindFailed",
    "ChannelBound",
    "ConnectFailed",
    "ConnectionAttempted",
    "DataConnectionBound",
    "DataConnectionFailed",
    "DataReceived",
    "IcmpReceived",
    "PeerConnected",
    "PermissionCreated",
    "PermissionFailed",
    "Redirected",
    "TurnBinderEvent",
    "TurnClientEvent",
]


# -- the allocation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocated:
    """The Allocate request succeeded (RFC 8656 §7.3).

    ``relayed`` holds one relayed transport address, or two for an RFC 8656
    dual allocation (IPv4 first); ``address_error`` says why the second
    family of a dual allocation was refused, when it was. ``server`` is the
    server that holds the allocation (after redirection, not the first one).
    """

    relayed: tuple[Endpoint, ...]
    mapped: Endpoint | None
    lifetime: float
    server: Endpoint
    reservation_token: bytes | None = None
    address_error: AddressErrorCode | None = None

    @property
    def relayed_endpoint(self) -> Endpoint:
        return self.relayed[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationFailed:
    """The Allocate request failed for good (after 401/438 retries, redirects
    and the one 437 recovery); the client holds no allocation."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirected:
    """The server answered 300 Try Alternate (RFC 8656 §7.3, RFC 8489 §10).

    ``followed``: over UDP the client re-sent the Allocate to ``alternate``
    itself. Over TCP/TLS it cannot (a new connection is needed): the core
    stops, and the driver must connect to ``alternate`` (checking the TLS
    certificate against ``alternate_domain`` when given) and allocate with
    a new core.
    """

    previous: Endpoint
    alternate: Endpoint
    alternate_domain: str | None
    followed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationRefreshed:
    """A Refresh succeeded; the allocation now lasts ``lifetime`` seconds."""

    lifetime: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationLost:
    """The allocation is gone: a refresh was refused or went unanswered until
    the allocation expired, the server answered 437, or the control
    connection closed."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationReleased:
    """``release()`` ended: the server deleted the allocation (Refresh with
    LIFETIME 0 answered), or it could not be told and the client gave up."""

    confirmed: bool


# -- permissions and channels --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PermissionCreated:
    """CreatePermission succeeded for ``peer_ips`` (RFC 8656 §9.3).
    ``request_id`` is what ``create_permission`` returned, or ``None`` for a
    permission ``send_to`` installed on its own."""

    request_id: int | None
    peer_ips: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PermissionFailed:
    """CreatePermission (or its refresh) failed: data to ``peer_ips`` will not
    be relayed; ``dropped`` packets queued for them were discarded."""

    request_id: int | None
    peer_ips: tuple[str, ...]
    code: int | None
    reason: str
    dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelBound:
    """ChannelBind succeeded (RFC 8656 §12.3): ``channel`` now carries data
    to and from ``peer`` as ChannelData."""

    channel: int
    peer: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelBindFailed:
    channel: int
    peer: Endpoint
    code: int | None
    reason: str


# -- data ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived:
    """Data from ``peer``, relayed in a Data indication (``channel`` None) or
    in ChannelData on ``channel``."""

    peer: Endpoint
    data: bytes
    channel: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class IcmpReceived:
    """A Data indication carried an ICMP attribute (RFC 8656 §11.6): the relay
    got an ICMP error for a packet sent to ``peer``."""

    peer: Endpoint
    icmp_type: int
    icmp_code: int
    error_data: int


# -- RFC 6062 TCP relaying -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConnected:
    """Connect succeeded (RFC 6062 §4.3): bind a new data connection to
    ``connection_id`` with ConnectionBind to talk to ``peer``."""

    request_id: int
    connection_id: int
    peer: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed:
    """Connect failed (446 connection exists, 447 timeout or failure, 403 ...)."""

    request_id: int
    peer: Endpoint
    code: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionAttempted:
    """A ConnectionAttempt indication (RFC 6062 §4.4): ``peer`` connected to
    the relayed address; accept it by binding a data connection to
    ``connection_id`` within 30 s."""

    connection_id: int
    peer: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConnectionBound:
    """ConnectionBind succeeded: the data connection now carries the peer's
    bytes, unframed; ``data`` are bytes that followed the response."""

    connection_id: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConnectionFailed:
    connection_id: int
    code: int | None
    reason: str


TurnClientEvent = (
    Allocated
    | AllocationFailed
    | Redirected
    | AllocationRefreshed
    | AllocationLost
    | AllocationReleased
    | PermissionCreated
    | PermissionFailed
    | ChannelBound
    | ChannelBindFailed
    | DataReceived
    | IcmpReceived
    | PeerConnected
    | ConnectFailed
    | ConnectionAttempted
)

TurnBinderEvent = DataConnectionBound | DataConnectionFailed
