"""The TURN client core (RFC 8656, RFC 6062, RFC 6156), sans-IO.

Theory of operation
-------------------
One :class:`TurnClient` is one allocation on one server over one transport:
UDP, or a TCP/TLS control connection whose framed messages (split by
``StreamFramer(channel_data=True)``) the driver feeds one at a time. Every
request goes through a :class:`~natkit.stun.transaction.StunClient`, which
retransmits over UDP (not over streams: ``reliable=True``) and answers 401
and 438 challenges with the long-term credentials (RFC 8489 §9.2); this core
sees only final answers.

Commands queue work: :meth:`allocate`, :meth:`refresh`, :meth:`release`,
:meth:`create_permission`, :meth:`bind_channel`, :meth:`send_to` and, for an
RFC 6062 allocation, :meth:`connect`. Their outcomes come back as events
(:mod:`natkit.turn.client_events`).

Allocate (RFC 8656 §7.1-7.3): 300 Try Alternate makes a UDP client re-send
the request to the ALTERNATE-SERVER itself (new server, so new
realm/nonce/key: the StunClient keeps authentication state per server); a
stream client cannot, so it reports :class:`Redirected` with
``followed=False`` and stops - the driver connects to the alternate and
uses a new core. 437 Allocation Mismatch means the server already holds an
allocation on this 5-tuple; the likeliest cause is our own earlier Allocate
whose success response was lost (§7.3's own example is a NAT reusing a dead
client's mapping). Its relayed address is unknown, so the client deletes it
with Refresh LIFETIME=0 and allocates once more; a second 437 fails (the
driver may then try from another local port). coturn answers that 437
before authenticating, and deletes the allocation up to a second after the
Refresh: its unsigned 437 to the signed retry is ignored as a forgery would
be (RFC 8489 §9.2.5), the retransmissions carry on, and the Allocate
succeeds once the old allocation is gone (about 1.5 s on loopback). 420 naming DONT-FRAGMENT makes
the client retry without it (§7.1). Any other error is
:class:`AllocationFailed`.

Refresh schedule (monotonic ``now``): the allocation is refreshed at
``lifetime - refresh_margin`` (60 s), or at half the lifetime when that is
short (<= 2 x margin); permissions (300 s at the server, §9) at
``permission_refresh`` (240 s); channel bindings (600 s, §12) at
``channel_refresh`` (540 s). Permissions and channels asked for explicitly
are kept until the allocation ends; those ``send_to`` made on its own are
refreshed only while used (data sent or received since the last refresh).
An unanswered Refresh is asked again until the allocation expires, and only
then is it :class:`AllocationLost`; an error answer (437 ...) loses it at
once. An unanswered permission refresh is asked again too; permissions still
unanswered when their 300 s end are dropped (:class:`PermissionFailed`).
CreatePermission carries at most ``permission_batch`` peers (fewer over UDP,
to fit the minimum MTU); a refused batch is halved until the refusal names
one IP, and only that IP is dropped. Over UDP a Binding
indication goes to the server whenever a whole ``keepalive_interval`` (10 s)
passed without anything sent, so NAT bindings on the way stay open.

Data: ``send_to`` uses ChannelData when the peer has a bound channel (padded
to four bytes on streams, §12.5), a Send indication when its IP has an
installed permission, and otherwise installs one first (plus, with
``auto_bind``, a channel): until CreatePermission succeeds the data waits in
a bounded per-IP queue (Send indications before the permission exists would
be dropped by the server, §10.2). Incoming Data indications and ChannelData
become :class:`DataReceived`; :meth:`parse_incoming` is the same decoding for
a driver's hot path, without events. Anything malformed or unexpected
(garbage, responses to no transaction, data from peers without a
permission, ChannelData on unknown channels) is dropped, never raised.

RFC 6062: the control connection carries Connect and ConnectionAttempt;
each peer connection is a separate TCP/TLS connection to the server whose
first message is a ConnectionBind: :class:`TurnConnectionBinder` is the
small stream core for it (its own StunClient answers the server's 401).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from natkit.addr import Datagram, Endpoint, Family, ip_of
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.stun import attributes as at
from natkit.stun.attributes import PasswordAlgorithmParams
from natkit.stun.constants import (
    HEADER_LENGTH,
    MAGIC_COOKIE_BYTES,
    ErrorCode,
    MessageClass,
    Method,
    PasswordAlgorithm,
    SecurityFeature,
)
from natkit.stun.credentials import long_term_key, nonce_features, userhash
from natkit.stun.events import ResponseReceived, StunEvent, TransactionFailed, TransactionTimedOut
from natkit.stun.message import (
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    verify_integrity,
)
from natkit.stun.transaction import LongTermCredentials, StunClient, StunClientConfig
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol
from natkit.turn.channel import CHANNEL_MAX, CHANNEL_MIN, pack_channel_data
from natkit.turn.client_events import (
    Allocated,
    AllocationFailed,
    AllocationLost,
    AllocationRefreshed,
    AllocationReleased,
    ChannelBindFailed,
    ChannelBound,
    ConnectFailed,
    ConnectionAttempted,
    DataConnectionBound,
    DataConnectionFailed,
    DataReceived,
    IcmpReceived,
    PeerConnected,
    PermissionCreated,
    PermissionFailed,
    Redirected,
    TurnBinderEvent,
    TurnClientEvent,
)

__all__ = [
    "AllocateParams",
    "ClientState",
    "TurnAuth",
    "TurnClient",
    "TurnClientConfig",
    "TurnConnectionBinder",
]

_CHANNEL_HEAD = struct.Struct("!HH")
# Message types: the method with the class bits interleaved (RFC 8489 §5).
_DATA_INDICATION = b"\x00\x17"  # Method.DATA, class indication
_SEND_INDICATION = b"\x00\x16"  # Method.SEND, class indication
# coturn 4.6 implements dual allocation with the code points of the turnbis
# drafts (0x8032 ADDITIONAL-ADDRESS-FAMILY, 0x8033 ADDRESS-ERROR-CODE), not RFC
# 8656's 0x8000/0x8001. Both are comprehension-optional, so a server ignores
# the one it does not know: sending both makes dual allocation work with either.
_DRAFT_ADDITIONAL_ADDRESS_FAMILY = 0x8032
_DRAFT_ADDRESS_ERROR_CODE = 0x8033
_CHANNEL_REUSE_DELAY = 300.0  # RFC 8656 §12: a number stays tied to its peer 5 min after expiry
_PERMISSION_LIFETIME = 300.0  # RFC 8656 §9: a permission lasts 5 min from its last refresh
# Over UDP a CreatePermission carries at most this many bytes of XOR-PEER-ADDRESS
# (83 IPv4 or 41 IPv6 peers), so that, signed, it stays under IPv6's minimum MTU
# of 1280 bytes (RFC 8489 §6.1: keep requests within the path MTU).
_UDP_PEER_BYTES = 1000


@dataclass(frozen=True, slots=True)
class TurnClientConfig:
    """Timers in seconds; defaults follow RFC 8656 (§7-§12) and RFC 8489."""

    stream: bool = False  # the transport to the server is TCP or TLS
    software: str | None = "natkit"
    auto_bind: bool = True  # send_to binds a channel to each new peer
    refresh_margin: float = 60.0  # refresh the allocation this long before it expires
    permission_refresh: float = 240.0  # permissions last 300 s (§9)
    channel_refresh: float = 540.0  # channel bindings last 600 s (§12)
    max_queued: int = 64  # packets waiting for a permission, per peer IP
    max_queue_delay: float = 5.0  # ... and for at most this long (older ones are dropped)
    permission_retry: float = 30.0  # send_to to an IP the server refused: dropped this long
    permission_batch: int = 100  # at most this many peers per CreatePermission (fewer over UDP)
    keepalive_interval: float | None = 10.0  # UDP: Binding indication after this much quiet
    max_redirects: int = 3
    draft_dual_allocation: bool = True  # also send coturn's 0x8032 (see _DRAFT_...)
    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    ti: float = 39.5
    fingerprint: bool = False
    rng: Rng = field(default_factory=default_rng)

    def stun_config(self) -> StunClientConfig:
        return StunClientConfig(
            rto=self.rto,
            rc=self.rc,
            rm=self.rm,
            ti=self.ti,
            reliable=self.stream,
            software=self.software,
            fingerprint=self.fingerprint,
            rng=self.rng,
        )


class ClientState(enum.Enum):
    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    RELEASING = "releasing"
    RELEASED = "released"
    FAILED = "failed"
    LOST = "lost"
    REDIRECTED = "redirected"  # stream transports: the driver must reconnect

    @property
    def ended(self) -> bool:
        return self in (
            ClientState.RELEASED,
            ClientState.FAILED,
            ClientState.LOST,
            ClientState.REDIRECTED,
        )


class _Perm(enum.Enum):
    PENDING = "pending"
    INSTALLED = "installed"


@dataclass(slots=True, eq=False)
class _Permission:
    ip: str
    state: _Perm = _Perm.PENDING
    keep: bool = False
    used: bool = False
    refresh_at: float | None = None
    expires: float = 0.0  # when the server forgets it unless refreshed (set when installed)
    refreshing: bool = False
    queue: deque[tuple[bytes, Endpoint, float]] = field(default_factory=deque)


@dataclass(slots=True, eq=False)
class _Channel:
    number: int
    peer: Endpoint
    bound: bool = False
    keep: bool = False
    used: bool = False
    refresh_at: float | None = None
    refreshing: bool = False


@dataclass(slots=True)
class AllocateParams:
    """The arguments of :meth:`TurnClient.allocate` (see there)."""

    lifetime: int | None
    family: Family
    additional_family: Family | None
    even_port: bool | None
    reservation_token: bytes | None
    dont_fragment: bool
    transport: TransportProtocol


class _Kind(enum.Enum):
    ALLOCATE = "allocate"
    CLEAR = "clear"  # Refresh LIFETIME=0 after a 437, before allocating again
    REFRESH = "refresh"
    RELEASE = "release"
    PERMISSION = "permission"
    CHANNEL = "channel"
    CONNECT = "connect"


@dataclass(slots=True, eq=False)
class _PermissionRequest:
    """One ``create_permission`` call, or one permission ``send_to`` asked for:
    its IPs may travel in several CreatePermission requests (batches, and
    the halves of a refused batch), so its one event waits for all of them."""

    request_id: int | None
    ips: tuple[str, ...]
    outstanding: int = 0  # requests not answered yet
    failed: list[str] = field(default_factory=list)
    code: int | None = None  # of the first failure
    reason: str = ""
    dropped: int = 0


@dataclass(slots=True)
class _Pending:
    kind: _Kind
    request_id: int | None = None
    ips: tuple[str, ...] = ()
    channel: int = 0
    peer: Endpoint | None = None
    refresh: bool = False
    lifetime: int | None = None  # a Refresh: the LIFETIME it asked for
    group: _PermissionRequest | None = None  # a CreatePermission that is not a refresh


@dataclass(frozen=True, slots=True)
class TurnAuth:
    """The long-term authentication state the control connection uses (RFC
    8489 §9.2.4): what an RFC 6062 data connection needs to sign its
    ConnectionBind at once - coturn closes a data connection whose first
    ConnectionBind is unsigned (it answers 401 and hangs up)."""

    credentials: LongTermCredentials = field(repr=False)
    realm: str
    nonce: str
    algorithm: PasswordAlgorithm
    offered: tuple[PasswordAlgorithmParams, ...] | None
    key: bytes = field(repr=False)

    def sign(self, msg: StunMessage, *, fingerprint: bool = False) -> bytes:
        """Add USERNAME (or USERHASH), REALM, NONCE and the algorithm
        attributes to ``msg`` and serialize it with MESSAGE-INTEGRITY."""
        if nonce_features(self.nonce) & SecurityFeature.USERNAME_ANONYMITY:
            msg.add(at.USERHASH, userhash(self.credentials.username, self.realm))
        else:
            msg.add(at.USERNAME, self.credentials.username)
        msg.add(at.REALM, self.realm).add(at.NONCE, self.nonce)
        integrity = Integrity.SHA1
        if self.offered is not None:
            msg.add(at.PASSWORD_ALGORITHMS, self.offered)
            msg.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(self.algorithm))
            integrity = Integrity.SHA256
        return serialize_message(msg, key=self.key, integrity=integrity, fingerprint=fingerprint)

    def with_nonce(self, nonce: str) -> TurnAuth:
        return dataclasses.replace(self, nonce=nonce)


def _error_of(resp: StunMessage) -> tuple[int | None, str]:
    try:
        err = resp.error
    except MalformedMessageError:
        return None, "malformed ERROR-CODE"
    if err is None:
        return None, "error response without ERROR-CODE"
    return err.code, err.reason


def _peer_ip(peer: str | Endpoint) -> str:
    host = peer.host if isinstance(peer, Endpoint) else peer
    try:
        return str(ip_of(host))
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {host!r}") from exc


class TurnClient:
    """One allocation with ``server`` (see the module docstring)."""

    def __init__(
        self,
        server: Endpoint,
        credentials: LongTermCredentials | None = None,
        config: TurnClientConfig | None = None,
    ) -> None:
        self.config = config or TurnClientConfig()
        self.server = server
        self.credentials = credentials
        self._stun = StunClient(self.config.stun_config())
        self.state = ClientState.IDLE
        self.relayed: tuple[Endpoint, ...] = ()
        self.mapped: Endpoint | None = None
        self.lifetime = 0.0
        self.expires: float | None = None
        self.reservation_token: bytes | None = None
        self._params: AllocateParams | None = None
        self._tried: list[Endpoint] = [server]
        self._cleared_437 = False
        self._refresh_at: float | None = None
        self._refreshing = False
        self._pending: dict[bytes, _Pending] = {}
        self._perms: dict[str, _Permission] = {}
        self._channels: dict[int, _Channel] = {}
        self._channel_of: dict[Endpoint, _Channel] = {}
        self._cooldown: dict[int, float] = {}
        self._refused: dict[str, float] = {}  # peer IP -> until when send_to drops its data
        self._no_auto_bind: set[Endpoint] = set()  # peers whose auto-bind was refused
        self._peer_cache: dict[bytes, Endpoint] = {}  # XOR-PEER-ADDRESS bytes -> peer
        self._send_cache: dict[Endpoint, bytes] = {}  # peer -> its XOR-PEER-ADDRESS
        self._next_channel = CHANNEL_MIN
        self._next_request = 1
        self._out: list[Datagram] = []
        self._events: deque[TurnClientEvent] = deque()
        self._timer_dirty = True
        self._timer: float | None = None
        self._auth: TurnAuth | None = None
        # How data went each way (tests and operators check channels are used).
        self.sent_channel_data = 0
        self.sent_indications = 0
        self.received_channel_data = 0
        self.received_indications = 0
        self.dropped = 0  # outgoing data discarded: queue overflow or age, refused peers
        self.keepalives = 0  # Binding indications sent to keep NAT bindings open
        self._keepalive_at: float | None = None
        self._sent = False  # anything sent to the server since the last keepalive tick

    # -- properties ------------------------------------------------------------------

    @property
    def allocate_params(self) -> AllocateParams | None:
        """What :meth:`allocate` was called with (a stream driver that follows a
        redirect re-issues it to a new core)."""
        return self._params

    @property
    def channels(self) -> dict[int, Endpoint]:
        """Bound channels: number -> peer."""
        return {n: ch.peer for n, ch in self._channels.items() if ch.bound}

    @property
    def permissions(self) -> tuple[str, ...]:
        """Peer IPs with an installed permission."""
        return tuple(ip for ip, p in self._perms.items() if p.state is _Perm.INSTALLED)

    def channel_for(self, peer: Endpoint) -> int | None:
        ch = self._channel_of.get(peer)
        return ch.number if ch is not None and ch.bound else None

    @property
    def auth(self) -> TurnAuth | None:
        """The realm, nonce and key the last signed request used (None before
        the server's first 401): hand it to :class:`TurnConnectionBinder`."""
        return self._auth

    # -- commands --------------------------------------------------------------------

    def allocate(
        self,
        *,
        now: float,
        lifetime: int | None = None,
        family: Family = Family.IPV4,
        additional_family: Family | None = None,
        even_port: bool | None = None,
        reservation_token: bytes | None = None,
        dont_fragment: bool = False,
        transport: TransportProtocol = TransportProtocol.UDP,
    ) -> None:
        """Send an Allocate request (RFC 8656 §7.1; RFC 6062 §4.1 for TCP).

        ``even_port``: None leaves EVEN-PORT out, False asks for an even
        port, True also reserves the next one (its token comes back in
        :class:`Allocated`). ``additional_family=Family.IPV6`` asks for a dual
        allocation (§7.1: only with the default IPv4 family).
        """
        if self.state is not ClientState.IDLE:
            raise LocalProtocolError(f"allocate() in state {self.state.value}")
        if reservation_token is not None and (
            even_port is not None or family != Family.IPV4 or additional_family is not None
        ):
            raise LocalProtocolError(
                "RESERVATION-TOKEN excludes EVEN-PORT and the address family attributes"
            )
        if additional_family is not None and (
            additional_family != Family.IPV6 or family != Family.IPV4
        ):
            raise LocalProtocolError(
                "a dual allocation is IPv4 plus ADDITIONAL-ADDRESS-FAMILY IPv6"
            )
        if reservation_token is not None and len(reservation_token) != 8:
            raise LocalProtocolError("RESERVATION-TOKEN is 8 bytes")
        if transport == TransportProtocol.TCP:
            if not self.config.stream:
                raise LocalProtocolError(
                    "RFC 6062 TCP allocations need a TCP/TLS control connection"
                )
            if even_port is not None or reservation_token is not None or dont_fragment:
                raise LocalProtocolError(
                    "EVEN-PORT, RESERVATION-TOKEN and DONT-FRAGMENT are UDP-only (RFC 6062 §5.1)"
                )
        self._params = AllocateParams(
            lifetime,
            Family(family),
            additional_family,
            even_port,
            reservation_token,
            dont_fragment,
            TransportProtocol(transport),
        )
        self.state = ClientState.ALLOCATING
        self._send_allocate(now)

    def allocate_with(self, params: AllocateParams, *, now: float) -> None:
        """:meth:`allocate` with the arguments another core was given (a stream
        driver following a redirect re-issues them to a new core)."""
        self.allocate(
            now=now,
            lifetime=params.lifetime,
            family=params.family,
            additional_family=params.additional_family,
            even_port=params.even_port,
            reservation_token=params.reservation_token,
            dont_fragment=params.dont_fragment,
            transport=params.transport,
        )

    def refresh(self, *, now: float, lifetime: int | None = None) -> None:
        """Refresh the allocation now (it is also done on schedule, §8.1);
        ``lifetime=0`` is :meth:`release`."""
        self._require_allocated("refresh")
        if lifetime == 0:
            self.release(now=now)
            return
        self._send_refresh(now, lifetime)

    def release(self, *, now: float) -> None:
        """Delete the allocation: Refresh with LIFETIME 0 (RFC 8656 §8.1).

        Reported by :class:`AllocationReleased`. Before the allocation exists
        (or after it ended) nothing is sent and the event comes at once.
        """
        if self.state in (ClientState.RELEASING, ClientState.RELEASED):
            return
        if self.state is not ClientState.ALLOCATED:
            for tid in list(self._pending):
                self._stun.cancel(tid)
            self._pending.clear()
            self._end(ClientState.RELEASED)
            self._events.append(AllocationReleased(confirmed=False))
            return
        self.state = ClientState.RELEASING
        self._refresh_at = None
        msg = StunMessage.request(Method.REFRESH, b"").add(tat.LIFETIME, 0)
        self._request(msg, _Pending(_Kind.RELEASE), now)

    def create_permission(
        self, peers: str | Endpoint | Iterable[str | Endpoint], *, now: float
    ) -> int:
        """Install permissions for the IPs of ``peers`` (RFC 8656 §9.1), kept
        (refreshed every ``permission_refresh``) until the allocation ends.
        Returns the request id that :class:`PermissionCreated` or
        :class:`PermissionFailed` will carry."""
        self._require_allocated("create_permission")
        if isinstance(peers, (str, Endpoint)):
            peers = [peers]
        ips: list[str] = []
        for peer in peers:
            ip = _peer_ip(peer)
            self._check_family(ip)
            if ip not in ips:
                ips.append(ip)
        if not ips:
            raise LocalProtocolError("create_permission needs at least one peer")
        for ip in ips:
            self._refused.pop(ip, None)
            perm = self._perms.get(ip)
            if perm is None:
                perm = self._perms[ip] = _Permission(ip)
            perm.keep = True
        request_id = self._new_request_id()
        self._send_permission(tuple(ips), now, request_id=request_id, refresh=False)
        return request_id

    def bind_channel(self, peer: Endpoint, *, now: float) -> int:
        """Bind a channel to ``peer`` (RFC 8656 §12.1), kept until the
        allocation ends; returns its number (0x4000 up). Binding a peer that
        already has a channel returns that channel."""
        self._require_allocated("bind_channel")
        self._check_family(peer.host)
        ch = self._channel_of.get(peer)
        if ch is not None:
            ch.keep = True
            return ch.number
        return self._bind(peer, now, keep=True).number

    def channel_frame(self, data: bytes, peer: Endpoint) -> bytes | None:
        """The driver's hot path for sending: the ChannelData message carrying
        ``data`` to ``peer`` when it has a bound channel (the caller writes it
        to the server itself), else ``None`` - then use :meth:`send_to`."""
        ch = self._channel_of.get(peer)
        if ch is None or not ch.bound:
            return None
        ch.used = True
        perm = self._perms.get(peer.host)
        if perm is not None:
            perm.used = True
        self.sent_channel_data += 1
        self._sent = True
        return pack_channel_data(ch.number, data, stream=self.config.stream)

    def send_to(self, data: bytes, peer: Endpoint, *, now: float) -> None:
        """Relay ``data`` to ``peer`` (RFC 8656 §10-§12).

        ChannelData when a channel is bound, else a Send indication once the
        peer's IP has a permission; before that the data waits (at most
        ``max_queued`` packets per IP, older ones dropped first, none older
        than ``max_queue_delay``). Data to an IP whose permission the server
        refused is dropped for ``permission_retry`` seconds rather than
        asking again for every packet. Drops are counted in :attr:`dropped`.
        """
        ch = self._channel_of.get(peer)
        if ch is not None and ch.bound:
            ch.used = True
            perm = self._perms.get(peer.host)
            if perm is not None:
                perm.used = True
            self.sent_channel_data += 1
            self._sent = True
            self._out.append(
                Datagram(pack_channel_data(ch.number, data, stream=self.config.stream), self.server)
            )
            return
        self._require_allocated("send_to")
        ip = _peer_ip(peer)
        perm = self._perms.get(ip)
        if perm is None:
            self._check_family(ip)
            until = self._refused.get(ip)
            if until is not None:
                if now < until:
                    self.dropped += 1
                    return
                del self._refused[ip]
            perm = self._perms[ip] = _Permission(ip)
            self._send_permission((ip,), now, request_id=None, refresh=False)
        perm.used = True
        if (
            self.config.auto_bind
            and ch is None
            and peer not in self._no_auto_bind
            and self._free_channel(now) is not None
        ):
            self._bind(peer, now, keep=False)
        if perm.state is _Perm.INSTALLED:
            self._send_indication(data, peer)
            return
        if len(perm.queue) >= self.config.max_queued:
            perm.queue.popleft()
            self.dropped += 1
        perm.queue.append((data, peer, now))

    def connect(self, peer: Endpoint, *, now: float) -> int:
        """RFC 6062 §4.3: ask the server to open a TCP connection to ``peer``.

        A permission for the peer's IP is installed first when missing (the
        server checks it). Returns the request id :class:`PeerConnected` or
        :class:`ConnectFailed` will carry."""
        self._require_allocated("connect")
        if self._params is None or self._params.transport != TransportProtocol.TCP:
            raise LocalProtocolError("connect() needs an RFC 6062 (TCP) allocation")
        ip = _peer_ip(peer)
        self._check_family(ip)
        if ip not in self._perms:
            self.create_permission(ip, now=now)
        request_id = self._new_request_id()
        msg = StunMessage.request(Method.CONNECT, b"").add(tat.XOR_PEER_ADDRESS, peer)
        self._request(msg, _Pending(_Kind.CONNECT, request_id=request_id, peer=peer), now)
        return request_id

    def transport_closed(self, *, now: float) -> None:
        """The TCP/TLS control connection ended: its allocation is gone (§3.1)."""
        del now
        if self.state.ended:
            return
        for tid in list(self._pending):
            self._stun.cancel(tid)
        self._pending.clear()
        if self.state is ClientState.RELEASING:
            self._end(ClientState.RELEASED)
            self._events.append(AllocationReleased(confirmed=False))
        elif self.state is ClientState.ALLOCATING:
            self._end(ClientState.FAILED)
            self._events.append(AllocationFailed(code=None, reason="connection closed"))
        elif self.state is ClientState.ALLOCATED:
            self._lose(None, "connection closed")
        else:
            self._end(ClientState.FAILED)

    # -- sans-IO surface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Feed a datagram (or one framed message of the control stream) from ``addr``."""
        if addr != self.server or len(data) < 4:
            return
        if data[0] >> 6 == 1:
            got = self._channel_data(data)
            if got is not None:
                self._events.append(
                    DataReceived(peer=got[0], data=got[1], channel=data[0] << 8 | data[1])
                )
            return
        if data[0] >> 6 != 0 or len(data) < HEADER_LENGTH:
            return
        if data[1] & 0x10 and not data[0] & 0x01:  # class bits 01: an indication
            self._indication(data)
            return
        self._stun.receive_datagram(data, addr, now=now)
        self._pull(now)

    def parse_incoming(self, data: bytes, addr: Endpoint) -> tuple[Endpoint, bytes] | None:
        """The driver's hot path: ``(peer, payload)`` when ``data`` is ChannelData
        or a Data indication from the server for a known peer, else ``None``
        (then hand ``data`` to :meth:`receive_datagram`, which drops what
        this already rejected). A datagram this returns for is consumed: no
        :class:`DataReceived` event is made for it."""
        if addr != self.server or len(data) < 4:
            return None
        first = data[0] >> 6
        if first == 1:
            return self._channel_data(data)
        if first == 0 and data[:2] == _DATA_INDICATION:
            return self._data_indication(data, icmp=False)
        return None

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        if self._timer_dirty:
            self._timer = self._compute_timer()
            self._timer_dirty = False
        stun = self._stun.get_timer()
        if stun is None:
            return self._timer
        return stun if self._timer is None else min(stun, self._timer)

    def handle_timer(self, *, now: float) -> None:
        self._stun.handle_timer(now=now)
        self._pull(now)
        if self.state is not ClientState.ALLOCATED:
            return
        self._timer_dirty = True
        if self.expires is not None and now >= self.expires:
            # Refreshes went unanswered (each retried, §8): the server has
            # deleted the allocation by now.
            self._lose(None, "the allocation expired before a Refresh was answered")
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._send_refresh(now, None)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive(now)
        expired = [
            p
            for p in self._perms.values()
            if p.state is _Perm.INSTALLED and p.refreshing and now >= p.expires
        ]
        if expired:
            # Their refreshes went unanswered until the server forgot them.
            for perm in expired:
                del self._perms[perm.ip]
            self._events.append(
                PermissionFailed(
                    request_id=None,
                    peer_ips=tuple(p.ip for p in expired),
                    code=None,
                    reason="the permission expired before its refresh was answered",
                )
            )
        due = [
            p.ip
            for p in self._perms.values()
            if p.state is _Perm.INSTALLED
            and not p.refreshing
            and p.refresh_at is not None
            and now >= p.refresh_at
        ]
        keep: list[str] = []
        for ip in due:
            perm = self._perms[ip]
            if perm.keep or perm.used or self._channel_needs(ip):
                keep.append(ip)
                perm.used = False
            else:
                # Idle: let it expire at the server, with any channel to that
                # IP (useless without it); a later send_to starts afresh.
                del self._perms[ip]
                for ch in [c for c in self._channels.values() if c.peer.host == ip]:
                    self._drop_channel(ch, now)
        if keep:
            self._send_permission(tuple(keep), now, request_id=None, refresh=True)
        for ch in list(self._channels.values()):
            if (
                ch.bound
                and not ch.refreshing
                and ch.refresh_at is not None
                and now >= ch.refresh_at
            ):
                if ch.keep or ch.used:
                    ch.used = False
                    self._send_channel_bind(ch, now, refresh=True)
                else:
                    self._drop_channel(ch, now)
        for number, until in list(self._cooldown.items()):
            if now >= until:
                del self._cooldown[number]

    def next_event(self) -> TurnClientEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals: requests ---------------------------------------------------------

    def _new_request_id(self) -> int:
        rid = self._next_request
        self._next_request += 1
        return rid

    def _require_allocated(self, what: str) -> None:
        if self.state is not ClientState.ALLOCATED:
            raise LocalProtocolError(f"{what}() needs an allocation (state {self.state.value})")

    def _check_family(self, host: str) -> None:
        """RFC 8656 §9.1/§12.1 (443): a peer must match a relayed address's family."""
        try:
            family = Family.IPV4 if ip_of(host).version == 4 else Family.IPV6
        except ValueError as exc:
            raise LocalProtocolError(f"not an IP address: {host!r}") from exc
        if all(r.family != family for r in self.relayed):
            raise LocalProtocolError(
                f"no {family.name} relayed address for peer {host}"
                " (443 Peer Address Family Mismatch)"
            )

    def _request(self, msg: StunMessage, pending: _Pending, now: float) -> None:
        tid = self._stun.send_request(msg, self.server, now=now, credentials=self.credentials)
        self._pending[tid] = pending
        self._pull(now)

    def _pull(self, now: float) -> None:
        """Move the StunClient's output into ours (keeping wire order) and
        handle its events."""
        stun = self._stun
        out = stun.datagrams_to_send(now=now)
        if out:
            self._sent = True
            self._out.extend(out)
            if self.credentials is not None:
                for datagram in out:
                    self._learn_auth(datagram.data)
        while (event := stun.next_event()) is not None:
            self._on_stun_event(event, now)

    def _learn_auth(self, data: bytes) -> None:
        """Remember the realm and nonce of a signed request the StunClient sent
        (its own state is private; RFC 6062 data connections need them)."""
        creds = self.credentials
        if creds is None or data[0] & 0x01 or data[1] & 0x10:
            return  # not a request
        try:
            msg = parse_message(data)
            realm = msg.get(at.REALM)
            nonce = msg.get(at.NONCE)
            chosen = msg.get(at.PASSWORD_ALGORITHM)
            offered = msg.get(at.PASSWORD_ALGORITHMS)
        except MalformedMessageError:
            return
        if realm is None or nonce is None:
            return
        algorithm = PasswordAlgorithm(chosen.algorithm) if chosen else PasswordAlgorithm.MD5
        old = self._auth
        if old is not None and (old.realm, old.algorithm) == (realm, algorithm):
            if old.nonce != nonce or old.offered != offered:
                self._auth = dataclasses.replace(old, nonce=nonce, offered=offered)
            return
        try:
            key = long_term_key(creds.username, realm, creds.password, algorithm, creds.profile)
        except ValueError:
            return
        self._auth = TurnAuth(creds, realm, nonce, algorithm, offered, key)

    def _keepalive(self, now: float) -> None:
        """Keep the NAT bindings between us and the server open (RFC 8489 §6.3.2:
        a Binding indication, which servers absorb without answering). NATs
        may forget a quiet UDP binding after 30 s (RFC 4787 REQ-5 asks for 2
        min); then the peers' data dies at the NAT, or our next packet leaves
        from a new port and the allocation is lost (437). Something goes out at
        least every 2 x ``keepalive_interval`` seconds."""
        assert self.config.keepalive_interval is not None  # only scheduled with one
        if not self._sent:
            msg = StunMessage(
                Method.BINDING, MessageClass.INDICATION, self._stun.new_transaction_id()
            )
            self._out.append(Datagram(serialize_message(msg), self.server))
            self.keepalives += 1
        self._sent = False
        self._keepalive_at = now + self.config.keepalive_interval

    def _send_allocate(self, now: float) -> None:
        p = self._params
        assert p is not None  # allocate() set it before any request
        msg = StunMessage.request(Method.ALLOCATE, b"")
        msg.add(tat.REQUESTED_TRANSPORT, int(p.transport))
        if p.lifetime is not None:
            msg.add(tat.LIFETIME, p.lifetime)
        if p.family == Family.IPV6:
            msg.add(tat.REQUESTED_ADDRESS_FAMILY, int(Family.IPV6))
        if p.additional_family is not None:
            msg.add(tat.ADDITIONAL_ADDRESS_FAMILY, int(p.additional_family))
            if self.config.draft_dual_allocation:
                msg.add_raw(_DRAFT_ADDITIONAL_ADDRESS_FAMILY, bytes((p.additional_family, 0, 0, 0)))
        if p.even_port is not None:
            msg.add(tat.EVEN_PORT, p.even_port)
        if p.reservation_token is not None:
            msg.add(tat.RESERVATION_TOKEN, p.reservation_token)
        if p.dont_fragment:
            msg.add(tat.DONT_FRAGMENT, True)
        self._request(msg, _Pending(_Kind.ALLOCATE), now)

    def _send_refresh(self, now: float, lifetime: int | None) -> None:
        self._refresh_at = None
        self._refreshing = True
        self._timer_dirty = True
        msg = StunMessage.request(Method.REFRESH, b"")
        if lifetime is None and self._params is not None:
            lifetime = self._params.lifetime
        if lifetime is not None:
            msg.add(tat.LIFETIME, lifetime)
        self._request(msg, _Pending(_Kind.REFRESH, lifetime=lifetime), now)

    def _send_permission(
        self, ips: tuple[str, ...], now: float, *, request_id: int | None, refresh: bool
    ) -> None:
        """CreatePermission for ``ips`` (RFC 8656 §9.1) in batches: at most
        ``permission_batch`` peers per request (servers cap the attributes
        they parse: natkit's at 256), over UDP no more than keeps the request
        within the minimum MTU. A refresh reports only failures; otherwise
        one event answers for all the batches."""
        group = None if refresh else _PermissionRequest(request_id, ips)
        batches = self._batches(ips)
        if group is not None:
            group.outstanding = len(batches)
        for batch in batches:
            self._send_permission_batch(batch, now, group=group, refresh=refresh)

    def _batches(self, ips: tuple[str, ...]) -> list[tuple[str, ...]]:
        limit = max(1, self.config.permission_batch)
        budget = None if self.config.stream else _UDP_PEER_BYTES
        batches: list[tuple[str, ...]] = []
        batch: list[str] = []
        size = 0
        for ip in ips:
            cost = 24 if ":" in ip else 12  # the attribute's header and value
            if batch and (len(batch) >= limit or (budget is not None and size + cost > budget)):
                batches.append(tuple(batch))
                batch, size = [], 0
            batch.append(ip)
            size += cost
        if batch:
            batches.append(tuple(batch))
        return batches

    def _send_permission_batch(
        self,
        ips: tuple[str, ...],
        now: float,
        *,
        group: _PermissionRequest | None,
        refresh: bool,
    ) -> None:
        msg = StunMessage.request(Method.CREATE_PERMISSION, b"")
        for ip in ips:
            msg.add(tat.XOR_PEER_ADDRESS, Endpoint(ip, 0))
            if refresh:
                self._perms[ip].refreshing = True
        request_id = group.request_id if group is not None else None
        pending = _Pending(
            _Kind.PERMISSION, request_id=request_id, ips=ips, refresh=refresh, group=group
        )
        self._request(msg, pending, now)

    def _free_channel(self, now: float) -> int | None:
        span = CHANNEL_MAX - CHANNEL_MIN + 1
        for i in range(span):
            number = CHANNEL_MIN + (self._next_channel - CHANNEL_MIN + i) % span
            if number in self._channels:
                continue
            until = self._cooldown.get(number)
            if until is not None and now < until:
                continue
            return number
        return None

    def _bind(self, peer: Endpoint, now: float, *, keep: bool) -> _Channel:
        number = self._free_channel(now)
        if number is None:
            raise LocalProtocolError("every channel number is in use")
        self._cooldown.pop(number, None)
        self._next_channel = number + 1 if number < CHANNEL_MAX else CHANNEL_MIN
        ch = _Channel(number, peer, keep=keep)
        self._channels[number] = ch
        self._channel_of[peer] = ch
        self._send_channel_bind(ch, now, refresh=False)
        return ch

    def _send_channel_bind(self, ch: _Channel, now: float, *, refresh: bool) -> None:
        ch.refreshing = refresh
        msg = StunMessage.request(Method.CHANNEL_BIND, b"")
        msg.add(tat.CHANNEL_NUMBER, ch.number).add(tat.XOR_PEER_ADDRESS, ch.peer)
        self._request(
            msg, _Pending(_Kind.CHANNEL, channel=ch.number, peer=ch.peer, refresh=refresh), now
        )

    def _drop_channel(self, ch: _Channel, now: float) -> None:
        self._channels.pop(ch.number, None)
        if self._channel_of.get(ch.peer) is ch:
            del self._channel_of[ch.peer]
        # The server keeps the binding until it expires, and the number stays
        # tied to this peer for 5 more minutes (§12): do not reuse it before.
        expires = (ch.refresh_at or now) + (600.0 - self.config.channel_refresh)
        self._cooldown[ch.number] = max(now, expires) + _CHANNEL_REUSE_DELAY
        self._timer_dirty = True

    def _channel_needs(self, ip: str) -> bool:
        return any(ch.peer.host == ip and (ch.keep or ch.used) for ch in self._channels.values())

    def _send_indication(self, data: bytes, peer: Endpoint) -> None:
        tid = self._stun.new_transaction_id()
        dont_fragment = self._params is not None and self._params.dont_fragment
        if peer.family == Family.IPV4 and not dont_fragment and not self.config.fingerprint:
            # The common case, built directly: an IPv4 XOR-PEER-ADDRESS does not
            # depend on the transaction ID, so its 12 bytes are cached per peer.
            head = self._send_cache.get(peer)
            if head is None:
                if len(self._send_cache) >= 1024:
                    self._send_cache.clear()
                value = tat.XOR_PEER_ADDRESS.encode(peer, tid)
                head = self._send_cache[peer] = _CHANNEL_HEAD.pack(0x0012, len(value)) + value
            pad = -len(data) & 3
            length = len(head) + 4 + len(data) + pad
            wire = b"".join(
                (
                    _SEND_INDICATION,
                    length.to_bytes(2, "big"),
                    MAGIC_COOKIE_BYTES,
                    tid,
                    head,
                    _CHANNEL_HEAD.pack(0x0013, len(data)),
                    data,
                    bytes(pad),
                )
            )
            self.sent_indications += 1
            self._sent = True
            self._out.append(Datagram(wire, self.server))
            return
        msg = StunMessage(Method.SEND, MessageClass.INDICATION, tid)
        msg.add(tat.XOR_PEER_ADDRESS, peer).add(tat.DATA, data)
        if self._params is not None and self._params.dont_fragment:
            msg.add(tat.DONT_FRAGMENT, True)
        wire = serialize_message(msg, fingerprint=self.config.fingerprint)
        self.sent_indications += 1
        self._sent = True
        self._out.append(Datagram(wire, self.server))

    def _compute_timer(self) -> float | None:
        if self.state is not ClientState.ALLOCATED:
            return None
        times = [t for t in (self._refresh_at, self._keepalive_at, self.expires) if t is not None]
        for p in self._perms.values():
            if p.state is not _Perm.INSTALLED:
                continue
            if p.refreshing:
                times.append(p.expires)
            elif p.refresh_at is not None:
                times.append(p.refresh_at)
        times.extend(
            ch.refresh_at
            for ch in self._channels.values()
            if ch.refresh_at is not None and not ch.refreshing and ch.bound
        )
        times.extend(self._cooldown.values())
        return min(times) if times else None

    # -- internals: answers ----------------------------------------------------------

    def _on_stun_event(self, event: StunEvent, now: float) -> None:
        pending = self._pending.pop(event.transaction_id, None)
        if pending is None:
            return
        self._timer_dirty = True
        match event:
            case ResponseReceived(response=resp):
                if resp.message_class == MessageClass.SUCCESS:
                    code: int | None = 0
                    reason = ""
                else:
                    code, reason = _error_of(resp)
                self._on_answer(pending, resp, code, reason, now)
            case TransactionTimedOut():
                self._on_answer(pending, None, None, "no response (timed out)", now, timed_out=True)
            case TransactionFailed(reason=reason):
                self._on_answer(pending, None, None, reason, now)

    def _on_answer(
        self,
        pending: _Pending,
        resp: StunMessage | None,
        code: int | None,
        reason: str,
        now: float,
        *,
        timed_out: bool = False,
    ) -> None:
        """``code`` is 0 for a success, the error code, or None (no usable
        response; ``timed_out``: none at all)."""
        try:
            match pending.kind:
                case _Kind.ALLOCATE:
                    self._on_allocate(resp, code, reason, now)
                case _Kind.CLEAR:
                    if self.state is ClientState.ALLOCATING:
                        self._send_allocate(now)
                case _Kind.REFRESH:
                    self._on_refresh(pending, resp, code, reason, now, timed_out=timed_out)
                case _Kind.RELEASE:
                    if self.state is ClientState.RELEASING:
                        self._end(ClientState.RELEASED)
                        confirmed = code in (0, ErrorCode.ALLOCATION_MISMATCH)
                        self._events.append(AllocationReleased(confirmed=confirmed))
                case _Kind.PERMISSION:
                    self._on_permission(pending, code, reason, now, timed_out=timed_out)
                case _Kind.CHANNEL:
                    self._on_channel(pending, code, reason, now)
                case _Kind.CONNECT:
                    self._on_connect(pending, resp, code, reason)
        except MalformedMessageError as exc:
            # A success response whose attributes do not decode: a failure of
            # the request, not of the client.
            self._on_answer(pending, None, None, f"malformed response: {exc}", now)

    def _on_allocate(
        self, resp: StunMessage | None, code: int | None, reason: str, now: float
    ) -> None:
        if self.state is not ClientState.ALLOCATING:
            return
        if code == 0 and resp is not None:
            relayed = tuple(resp.get_all(at.XOR_RELAYED_ADDRESS))
            lifetime = resp.get(at.LIFETIME)
            mapped = resp.get(at.XOR_MAPPED_ADDRESS)
            token = resp.get(tat.RESERVATION_TOKEN)
            address_error = resp.get(tat.ADDRESS_ERROR_CODE)
            if address_error is None and self.config.draft_dual_allocation:
                raw = resp.get_raw(_DRAFT_ADDRESS_ERROR_CODE)
                if raw is not None:
                    address_error = tat.ADDRESS_ERROR_CODE.decode(raw, resp.xor_tid)
            if not relayed:
                self._fail(None, "Allocate success without XOR-RELAYED-ADDRESS")
                return
            self.relayed = tuple(sorted(relayed, key=lambda ep: ep.family))
            self.mapped = mapped
            self.reservation_token = token
            self.state = ClientState.ALLOCATED
            interval = self.config.keepalive_interval
            if interval is not None and not self.config.stream:
                self._keepalive_at = now + interval
            self._set_lifetime(float(lifetime if lifetime is not None else 600), now)
            self._events.append(
                Allocated(
                    relayed=self.relayed,
                    mapped=mapped,
                    lifetime=self.lifetime,
                    server=self.server,
                    reservation_token=token,
                    address_error=address_error,
                )
            )
            return
        if code == ErrorCode.TRY_ALTERNATE and resp is not None:
            self._redirect(resp, now)
            return
        if code == ErrorCode.ALLOCATION_MISMATCH and not self._cleared_437:
            self._cleared_437 = True
            msg = StunMessage.request(Method.REFRESH, b"").add(tat.LIFETIME, 0)
            self._request(msg, _Pending(_Kind.CLEAR), now)
            return
        if (
            code == ErrorCode.UNKNOWN_ATTRIBUTE
            and resp is not None
            and self._params is not None
            and self._params.dont_fragment
            and int(tat.DONT_FRAGMENT.type) in (resp.get(at.UNKNOWN_ATTRIBUTES) or ())
        ):
            self._params.dont_fragment = False
            self._send_allocate(now)
            return
        self._fail(code, reason or "Allocate failed")

    def _redirect(self, resp: StunMessage, now: float) -> None:
        alternate = resp.get(at.ALTERNATE_SERVER)
        domain = resp.get(at.ALTERNATE_DOMAIN)
        if alternate is None:
            self._fail(ErrorCode.TRY_ALTERNATE, "300 without ALTERNATE-SERVER")
            return
        # _tried holds the first server too: len - 1 redirects were followed.
        redirects = len(self._tried) - 1
        if alternate in self._tried or redirects >= self.config.max_redirects:
            self._fail(
                ErrorCode.TRY_ALTERNATE, f"redirect loop or too many redirects ({alternate})"
            )
            return
        previous = self.server
        self._tried.append(alternate)
        if self.config.stream:
            self._end(ClientState.REDIRECTED)
            self._events.append(
                Redirected(
                    previous=previous, alternate=alternate, alternate_domain=domain, followed=False
                )
            )
            return
        self._events.append(
            Redirected(
                previous=previous, alternate=alternate, alternate_domain=domain, followed=True
            )
        )
        # New server, new realm and nonce: the StunClient keys its auth state
        # by server, so the first request to the alternate goes out unsigned.
        self.server = alternate
        self._cleared_437 = False
        self._send_allocate(now)

    def _on_refresh(
        self,
        pending: _Pending,
        resp: StunMessage | None,
        code: int | None,
        reason: str,
        now: float,
        *,
        timed_out: bool,
    ) -> None:
        self._refreshing = False
        if self.state is not ClientState.ALLOCATED:
            return
        if code == 0 and resp is not None:
            lifetime = resp.get(at.LIFETIME)
            self._set_lifetime(float(lifetime if lifetime is not None else self.lifetime), now)
            self._events.append(AllocationRefreshed(lifetime=self.lifetime))
            return
        if timed_out and self.expires is not None and now < self.expires:
            # No answer is not the end: the allocation lasts until it expires
            # (a UDP timeout leaves ~20 s of the 60 s margin). Asking again is
            # safe (RFC 8656 §8): a Refresh with a nonzero LIFETIME only sets
            # the lifetime anew, and a retransmission the server has already
            # answered gets its cached answer; only LIFETIME 0 (release(),
            # never retried) could meet a 437 from its own earlier success.
            # handle_timer declares the allocation lost once it expires.
            self._send_refresh(now, pending.lifetime)
            return
        self._lose(code, reason or "Refresh failed")

    def _set_lifetime(self, lifetime: float, now: float) -> None:
        self.lifetime = lifetime
        self.expires = now + lifetime
        margin = self.config.refresh_margin
        ahead = lifetime - margin if lifetime > 2 * margin else lifetime / 2
        self._refresh_at = now + ahead
        self._timer_dirty = True

    def _on_permission(
        self, pending: _Pending, code: int | None, reason: str, now: float, *, timed_out: bool
    ) -> None:
        """A CreatePermission answered (RFC 8656 §9.3). The server grants or
        refuses a request as a whole, so a refused batch is split in halves
        until the refusal names one IP: only that IP is dropped. A refresh
        that goes unanswered is retried (the server keeps the permissions
        for the rest of their 300 s; handle_timer drops those that expire
        first); an unanswered first request drops the IPs it was to install,
        without refusing them."""
        if self.state is not ClientState.ALLOCATED:
            return
        group = pending.group
        perms = [self._perms[ip] for ip in pending.ips if ip in self._perms]
        if pending.refresh:  # those this refresh still speaks for (not expired meanwhile)
            perms = [p for p in perms if p.refreshing and p.state is _Perm.INSTALLED]
            if timed_out:
                # Those that expire first stay "refreshing": handle_timer drops them.
                live = tuple(p.ip for p in perms if now < p.expires)
                if live:
                    self._send_permission(live, now, request_id=None, refresh=True)
                return
            for perm in perms:
                perm.refreshing = False
        ips = tuple(p.ip for p in perms)
        if code == 0:
            for perm in perms:
                self._install(perm, now)
            self._settle(group, (), None, "", 0)
            return
        if code == ErrorCode.ALLOCATION_MISMATCH:
            self._lose(code, reason)
            return
        if code is not None and len(ips) > 1:
            half = len(ips) // 2
            if group is not None:
                group.outstanding += 1  # this request becomes two
            for part in (ips[:half], ips[half:]):
                self._send_permission_batch(part, now, group=group, refresh=pending.refresh)
            return
        dropped = 0
        for perm in perms:
            if timed_out and perm.state is _Perm.INSTALLED:
                continue  # installed before: the server still holds it, refreshed on schedule
            dropped += len(perm.queue)
            del self._perms[perm.ip]
            if not timed_out:
                self._refused[perm.ip] = now + self.config.permission_retry
        self.dropped += dropped
        failed = ips if pending.refresh else pending.ips
        if group is None:
            if failed:
                self._events.append(
                    PermissionFailed(
                        request_id=None, peer_ips=failed, code=code, reason=reason, dropped=dropped
                    )
                )
            return
        self._settle(group, failed, code, reason, dropped)

    def _settle(
        self,
        group: _PermissionRequest | None,
        failed: tuple[str, ...],
        code: int | None,
        reason: str,
        dropped: int,
    ) -> None:
        """One request of ``group`` answered; its event once all are."""
        if group is None:
            return
        if failed:
            if not group.failed:
                group.code, group.reason = code, reason
            group.failed.extend(failed)
            group.dropped += dropped
        group.outstanding -= 1
        if group.outstanding > 0:
            return
        if group.failed:
            refused = set(group.failed)
            self._events.append(
                PermissionFailed(
                    request_id=group.request_id,
                    peer_ips=tuple(ip for ip in group.ips if ip in refused),
                    code=group.code,
                    reason=group.reason,
                    dropped=group.dropped,
                )
            )
        else:
            self._events.append(PermissionCreated(request_id=group.request_id, peer_ips=group.ips))

    def _install(self, perm: _Permission, now: float) -> None:
        perm.state = _Perm.INSTALLED
        perm.refresh_at = now + self.config.permission_refresh
        perm.expires = now + _PERMISSION_LIFETIME
        self._timer_dirty = True
        queue, perm.queue = perm.queue, deque()
        oldest = now - self.config.max_queue_delay
        for data, peer, queued_at in queue:
            if queued_at < oldest:
                self.dropped += 1
                continue
            ch = self._channel_of.get(peer)
            if ch is not None and ch.bound:
                self.sent_channel_data += 1
                self._sent = True
                self._out.append(
                    Datagram(
                        pack_channel_data(ch.number, data, stream=self.config.stream), self.server
                    )
                )
            else:
                self._send_indication(data, peer)

    def _on_channel(self, pending: _Pending, code: int | None, reason: str, now: float) -> None:
        if self.state is not ClientState.ALLOCATED:
            return
        ch = self._channels.get(pending.channel)
        assert pending.peer is not None  # set for every ChannelBind
        if ch is None or ch.peer != pending.peer:
            return
        ch.refreshing = False
        if code == 0:
            first = not ch.bound
            ch.bound = True
            ch.refresh_at = now + self.config.channel_refresh
            # A ChannelBind installs or refreshes the peer's permission too (§12.2).
            perm = self._perms.get(ch.peer.host)
            if perm is None:
                perm = self._perms[ch.peer.host] = _Permission(ch.peer.host, keep=ch.keep)
            if perm.state is _Perm.PENDING:
                self._install(perm, now)
            else:
                perm.expires = max(perm.expires, now + _PERMISSION_LIFETIME)
            if first:
                self._events.append(ChannelBound(channel=ch.number, peer=ch.peer))
            return
        if code == ErrorCode.ALLOCATION_MISMATCH:
            self._lose(code, reason)
            return
        if not ch.keep:
            self._no_auto_bind.add(ch.peer)  # one refusal is enough: Send indications it is
        self._drop_channel(ch, now)
        self._events.append(
            ChannelBindFailed(channel=ch.number, peer=ch.peer, code=code, reason=reason)
        )

    def _on_connect(
        self, pending: _Pending, resp: StunMessage | None, code: int | None, reason: str
    ) -> None:
        assert pending.peer is not None and pending.request_id is not None  # set by connect()
        if code == 0 and resp is not None:
            connection_id = resp.get(tat.CONNECTION_ID)
            if connection_id is not None:
                self._events.append(
                    PeerConnected(
                        request_id=pending.request_id,
                        connection_id=connection_id,
                        peer=pending.peer,
                    )
                )
                return
            code, reason = None, "Connect success without CONNECTION-ID"
        self._events.append(
            ConnectFailed(
                request_id=pending.request_id, peer=pending.peer, code=code, reason=reason
            )
        )

    def _fail(self, code: int | None, reason: str) -> None:
        self._end(ClientState.FAILED)
        self._events.append(AllocationFailed(code=code, reason=reason))

    def _lose(self, code: int | None, reason: str) -> None:
        self._end(ClientState.LOST)
        self._events.append(AllocationLost(code=code, reason=reason))

    def _end(self, state: ClientState) -> None:
        self.state = state
        self._refresh_at = None
        self._keepalive_at = None
        self._timer_dirty = True
        for tid in list(self._pending):
            self._stun.cancel(tid)
        self._pending.clear()
        self._perms.clear()
        self._channels.clear()
        self._channel_of.clear()
        self._cooldown.clear()
        self._refused.clear()

    # -- internals: data -------------------------------------------------------------

    def _channel_data(self, data: bytes) -> tuple[Endpoint, bytes] | None:
        number, length = _CHANNEL_HEAD.unpack_from(data)
        ch = self._channels.get(number)
        if ch is None or 4 + length > len(data):
            return None
        ch.used = True
        self.received_channel_data += 1
        return ch.peer, data[4 : 4 + length]

    def _fast_data_indication(self, data: bytes) -> tuple[Endpoint, bytes] | bool | None:
        """The common Data indication - XOR-PEER-ADDRESS (IPv4) and DATA, nothing
        else - decoded without building a message: ``False`` means "not that
        shape, take the general path". Peers are few, so their decoded
        addresses are cached by the attribute's bytes."""
        n = len(data)
        if n < 32 or data[2] << 8 | data[3] != n - HEADER_LENGTH or data[4:8] != MAGIC_COOKIE_BYTES:
            return False
        pos = HEADER_LENGTH
        peer_raw = payload = None
        while pos + 4 <= n:
            atype, alen = _CHANNEL_HEAD.unpack_from(data, pos)
            end = pos + 4 + alen
            if end > n:
                return False
            if atype == 0x0012 and peer_raw is None and alen == 8:
                peer_raw = data[pos + 4 : end]
            elif atype == 0x0013 and payload is None:
                payload = data[pos + 4 : end]
            else:
                return False
            pos = end + (-alen & 3)
        if peer_raw is None or payload is None or pos != n:
            return False
        peer = self._peer_cache.get(peer_raw)
        if peer is None:
            try:
                peer = at.XOR_PEER_ADDRESS.decode(peer_raw, b"")
            except MalformedMessageError:
                return False
            if len(self._peer_cache) >= 1024:
                self._peer_cache.clear()
            self._peer_cache[peer_raw] = peer
        perm = self._perms.get(peer.host)
        if perm is None:
            return None
        perm.used = True
        self.received_indications += 1
        return peer, payload

    def _data_indication(self, data: bytes, *, icmp: bool) -> tuple[Endpoint, bytes] | None:
        fast = self._fast_data_indication(data)
        if fast is not False:
            return fast  # type: ignore[return-value]
        try:
            msg = parse_message(data)
            peer = msg.get(at.XOR_PEER_ADDRESS)
            payload = msg.get(at.DATA)
            icmp_value = msg.get(tat.ICMP) if icmp and payload is None else None
        except MalformedMessageError:
            return None
        if peer is None or msg.method != Method.DATA:
            return None
        # §11.6: discard data from peers we hold no permission for.
        perm = self._perms.get(peer.host)
        if perm is None:
            return None
        if icmp_value is not None:
            self._events.append(
                IcmpReceived(
                    peer=peer,
                    icmp_type=icmp_value.icmp_type,
                    icmp_code=icmp_value.icmp_code,
                    error_data=icmp_value.error_data,
                )
            )
            return None
        if payload is None:
            return None
        perm.used = True
        self.received_indications += 1
        return peer, payload

    def _indication(self, data: bytes) -> None:
        if data[:2] == _DATA_INDICATION:
            got = self._data_indication(data, icmp=True)
            if got is not None:
                self._events.append(DataReceived(peer=got[0], data=got[1]))
            return
        try:
            msg = parse_message(data)
            if msg.method != Method.CONNECTION_ATTEMPT or data[4:8] != MAGIC_COOKIE_BYTES:
                return
            connection_id = msg.get(tat.CONNECTION_ID)
            peer = msg.get(at.XOR_PEER_ADDRESS)
        except MalformedMessageError:
            return
        if connection_id is None or peer is None or self.state is not ClientState.ALLOCATED:
            return
        self._events.append(ConnectionAttempted(connection_id=connection_id, peer=peer))


# -- RFC 6062 data connections -----------------------------------------------------------


class TurnConnectionBinder:
    """The client side of one RFC 6062 data connection (§4.3-4.4), sans-IO.

    A stream core: :meth:`start` queues the ConnectionBind request; feed the
    connection's bytes to :meth:`receive_data` and write :meth:`data_to_send`
    to it. With ``auth`` (the control client's :attr:`TurnClient.auth`) the
    request is signed at once, as coturn requires, and a 438 is answered
    with the new nonce; without it the first request goes out unsigned and
    the StunClient answers the server's 401 on the same connection.
    :class:`DataConnectionBound` ends the core's job: from then on the
    connection carries the peer's bytes unframed, starting with the event's
    ``data``.
    """

    def __init__(
        self,
        server: Endpoint,
        credentials: LongTermCredentials | None,
        connection_id: int,
        config: TurnClientConfig | None = None,
        *,
        auth: TurnAuth | None = None,
    ) -> None:
        self.config = dataclasses.replace(config or TurnClientConfig(), stream=True)
        self.server = server
        self.credentials = credentials
        self.connection_id = connection_id
        self.auth = auth if credentials is not None else None
        self._stun = StunClient(self.config.stun_config())
        self._tid: bytes | None = None
        self._deadline: float | None = None
        self._stale_retries = 0
        self._buf = bytearray()
        self._out = bytearray()
        self._events: deque[TurnBinderEvent] = deque()
        self.done = False

    def start(self, *, now: float) -> None:
        if self.auth is not None:
            self._send_signed(now)
            return
        msg = StunMessage.request(Method.CONNECTION_BIND, b"")
        msg.add(tat.CONNECTION_ID, self.connection_id)
        self._tid = self._stun.send_request(msg, self.server, now=now, credentials=self.credentials)
        self._pull(now)

    def receive_data(self, data: bytes, *, now: float) -> None:
        """Bytes from the data connection (``b""``: it closed)."""
        if self.done:
            return
        if not data:
            self._fail(None, "connection closed")
            return
        self._buf += data
        while not self.done and len(self._buf) >= HEADER_LENGTH:
            if self._buf[0] >> 6 != 0:
                self._fail(None, "not a STUN response")
                return
            total = HEADER_LENGTH + (self._buf[2] << 8 | self._buf[3])
            if len(self._buf) < total:
                return
            message = bytes(self._buf[:total])
            del self._buf[:total]
            if self.auth is not None:
                self._on_signed_response(message, now)
            else:
                self._stun.receive_datagram(message, self.server, now=now)
                self._pull(now)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def get_timer(self) -> float | None:
        if self.done:
            return None
        return self._deadline if self.auth is not None else self._stun.get_timer()

    def handle_timer(self, *, now: float) -> None:
        if self.done:
            return
        if self.auth is not None:
            if self._deadline is not None and now >= self._deadline:
                self._fail(None, "no response (timed out)")
            return
        self._stun.handle_timer(now=now)
        self._pull(now)

    def next_event(self) -> TurnBinderEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals -------------------------------------------------------------------

    def _send_signed(self, now: float) -> None:
        assert self.auth is not None  # callers check
        self._tid = self._stun.new_transaction_id()
        msg = StunMessage(Method.CONNECTION_BIND, MessageClass.REQUEST, self._tid)
        msg.add(tat.CONNECTION_ID, self.connection_id)
        if self.config.software is not None:
            msg.add(at.SOFTWARE, self.config.software)
        self._out += self.auth.sign(msg, fingerprint=self.config.fingerprint)
        self._deadline = now + self.config.ti

    def _on_signed_response(self, data: bytes, now: float) -> None:
        assert self.auth is not None  # callers check
        try:
            msg = parse_message(data)
        except MalformedMessageError:
            self._fail(None, "malformed response")
            return
        if msg.transaction_id != self._tid or msg.method != Method.CONNECTION_BIND:
            return
        if msg.message_class == MessageClass.ERROR:
            code, reason = _error_of(msg)
            try:
                nonce = msg.get(at.NONCE)
            except MalformedMessageError:
                nonce = None
            if code == ErrorCode.STALE_NONCE and nonce is not None and self._stale_retries < 2:
                self._stale_retries += 1
                self.auth = self.auth.with_nonce(nonce)
                self._send_signed(now)
                return
            self._fail(code, reason)
            return
        if msg.message_class != MessageClass.SUCCESS:
            return
        if not verify_integrity(msg, self.auth.key):  # §9.2.5: over TCP, a failure
            self._fail(None, "the response failed its integrity check")
            return
        self._bound()

    def _pull(self, now: float) -> None:
        for datagram in self._stun.datagrams_to_send(now=now):
            self._out += datagram.data
        while (event := self._stun.next_event()) is not None:
            if event.transaction_id != self._tid or self.done:
                continue
            match event:
                case ResponseReceived(response=resp) if resp.message_class == MessageClass.SUCCESS:
                    self._bound()
                case ResponseReceived(response=resp):
                    self._fail(*_error_of(resp))
                case TransactionTimedOut():
                    self._fail(None, "no response (timed out)")
                case TransactionFailed(reason=reason):
                    self._fail(None, reason)

    def _bound(self) -> None:
        self.done = True
        self._events.append(
            DataConnectionBound(connection_id=self.connection_id, data=bytes(self._buf))
        )
        self._buf.clear()

    def _fail(self, code: int | None, reason: str) -> None:
        self.done = True
        self._events.append(
            DataConnectionFailed(connection_id=self.connection_id, code=code, reason=reason)
        )
