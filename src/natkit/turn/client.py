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

Layout: this module keeps :class:`TurnClient`'s public surface (commands,
the sans-IO methods, the data hot paths) and the allocation's own life
(Allocate answers, redirects, refresh schedule, keepalives). The rest are
mixins of it, over the same state: :mod:`natkit.turn.client_requests`
(requests out through the StunClient, answers back by kind),
:mod:`natkit.turn.client_peers` (permissions and channels, §9/§12) and
:mod:`natkit.turn.client_tcp` (RFC 6062: Connect, ConnectionAttempt,
:class:`TurnConnectionBinder`, :class:`TurnAuth`); the config and states are
in :mod:`natkit.turn.client_config`.
"""

# The "from m import X as X" imports re-export names this module held before
# it was split into the client_* modules, so that they stay importable here.
# ruff: noqa: PLC0414

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable

from natkit.addr import Datagram, Endpoint, Family
from natkit.addr import ip_of as ip_of
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng as Rng
from natkit.rng import default_rng as default_rng
from natkit.stun import attributes as at
from natkit.stun.attributes import PasswordAlgorithmParams as PasswordAlgorithmParams
from natkit.stun.constants import (
    HEADER_LENGTH,
    MAGIC_COOKIE_BYTES,
    ErrorCode,
    MessageClass,
    Method,
)
from natkit.stun.constants import PasswordAlgorithm as PasswordAlgorithm
from natkit.stun.constants import SecurityFeature as SecurityFeature
from natkit.stun.credentials import long_term_key as long_term_key
from natkit.stun.credentials import nonce_features as nonce_features
from natkit.stun.credentials import userhash as userhash
from natkit.stun.events import ResponseReceived as ResponseReceived
from natkit.stun.events import StunEvent as StunEvent
from natkit.stun.events import TransactionFailed as TransactionFailed
from natkit.stun.events import TransactionTimedOut as TransactionTimedOut
from natkit.stun.message import Integrity as Integrity
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.message import verify_integrity as verify_integrity
from natkit.stun.transaction import LongTermCredentials, StunClient
from natkit.stun.transaction import StunClientConfig as StunClientConfig
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol
from natkit.turn.channel import CHANNEL_MAX as CHANNEL_MAX
from natkit.turn.channel import CHANNEL_MIN, pack_channel_data
from natkit.turn.client_config import AllocateParams, ClientState, TurnClientConfig
from natkit.turn.client_events import (
    Allocated,
    AllocationFailed,
    AllocationLost,
    AllocationRefreshed,
    AllocationReleased,
    DataReceived,
    IcmpReceived,
    Redirected,
    TurnClientEvent,
)
from natkit.turn.client_events import ChannelBindFailed as ChannelBindFailed
from natkit.turn.client_events import ChannelBound as ChannelBound
from natkit.turn.client_events import ConnectFailed as ConnectFailed
from natkit.turn.client_events import ConnectionAttempted as ConnectionAttempted
from natkit.turn.client_events import DataConnectionBound as DataConnectionBound
from natkit.turn.client_events import DataConnectionFailed as DataConnectionFailed
from natkit.turn.client_events import PeerConnected as PeerConnected
from natkit.turn.client_events import PermissionCreated as PermissionCreated
from natkit.turn.client_events import PermissionFailed as PermissionFailed
from natkit.turn.client_events import TurnBinderEvent as TurnBinderEvent
from natkit.turn.client_peers import _CHANNEL_REUSE_DELAY as _CHANNEL_REUSE_DELAY
from natkit.turn.client_peers import _PERMISSION_LIFETIME as _PERMISSION_LIFETIME
from natkit.turn.client_peers import _UDP_PEER_BYTES as _UDP_PEER_BYTES
from natkit.turn.client_peers import _Channel, _PeerBook, _Perm, _Permission
from natkit.turn.client_requests import (
    _DRAFT_ADDITIONAL_ADDRESS_FAMILY as _DRAFT_ADDITIONAL_ADDRESS_FAMILY,
)
from natkit.turn.client_requests import (
    _DRAFT_ADDRESS_ERROR_CODE,
    _Kind,
    _peer_ip,
    _Pending,
    _Requests,
)
from natkit.turn.client_requests import _error_of as _error_of
from natkit.turn.client_requests import _PermissionRequest as _PermissionRequest
from natkit.turn.client_tcp import TurnAuth, TurnConnectionBinder, _Rfc6062

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


class TurnClient(_Requests, _PeerBook, _Rfc6062):
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
        self._timer_dirty = True  # also when no longer allocated: the old deadline is void
        if self.state is not ClientState.ALLOCATED:
            return
        if self.expires is not None and now >= self.expires:
            # Refreshes went unanswered (each retried, §8): the server has
            # deleted the allocation by now.
            self._lose(None, "the allocation expired before a Refresh was answered")
            return
        if self._refresh_at is not None and now >= self._refresh_at:
            self._send_refresh(now, None)
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._keepalive(now)
        self._refresh_peers(now)

    def next_event(self) -> TurnClientEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals: the allocation ---------------------------------------------------

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

    def _compute_timer(self) -> float | None:
        if self.state is not ClientState.ALLOCATED:
            return None
        times = [t for t in (self._refresh_at, self._keepalive_at, self.expires) if t is not None]
        self._peer_deadlines(times)
        return min(times) if times else None

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
        self._connection_attempt(data)
