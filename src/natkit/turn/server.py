"""The TURN server core: the allocation table (RFC 8656, RFC 5766 clients,
RFC 6062 TCP allocations, RFC 6156 IPv6), sans-IO.

CONTRACT (the public surface below is what the asyncio driver codes against;
keep it, or change it together with natkit.turn.aio.server):

Inputs, all with the driver's monotonic ``now``:
* ``receive_datagram(data, client, local=, transport=, now=)``: one datagram
  (UDP) or one framed message (TCP/TLS, split by ``StreamFramer(channel_data=True)``)
  from a client. STUN requests/indications and ChannelData.
* ``receive_peer_datagram(data, peer, relay=, now=)``: one UDP datagram that
  arrived at relay socket ``relay`` from ``peer``.
* ``relay_opened(request_id, relays, now=)`` / ``relay_failed(request_id, now=)``:
  the driver's answer to a :class:`RelayRequested` event.
* ``peer_connected`` / ``peer_connect_failed`` (RFC 6062 Connect),
  ``peer_connection_accepted(relay, peer, now=) -> int | None`` (a TCP peer
  connected to an RFC 6062 relay listener: returns the connection id to
  announce with ConnectionAttempt, or None when the driver must refuse it:
  no permission, denied peer, or no such allocation).
* ``stream_closed(client, local=, now=)``: a client TCP/TLS connection
  ended; allocations on it are deleted (an allocation lives on its 5-tuple).
* ``kick(allocation_id, now=)``, ``shutdown(now=)``: operator actions.

Outputs: ``datagrams_to_send()`` -> :class:`TurnDatagram` (``local`` is the
server endpoint a client-bound datagram leaves from, or the relay endpoint a
peer-bound one leaves from; ``transport`` says which socket kind); events via
``next_event()``; ``get_timer()``/``handle_timer(now=)``.

Hot path: ``relay_client_packet(data, client, local, now, transport=)`` and
``relay_peer_packet(data, peer, relay, now)`` return the datagram to send
(or None to fall back to the general path), so the driver can relay
ChannelData and peer data without queueing; see their docstrings. ``None``
means "nothing done, nothing counted": the general method then handles the
packet and counts the drop.

Also: ``peer_icmp(relay, peer, icmp_type=, icmp_code=, error_data=, now=)``
(an ICMP error for a relayed datagram, RFC 8656 §11.5),
``peer_connection_closed(connection_id, now=)`` (an RFC 6062 peer
connection ended), ``allocations()`` (``natkit turn sessions``),
``table_sizes()`` (entry counts of every internal table), ``stats``.

Theory of operation
-------------------
Allocations are indexed by client 5-tuple (one dict for UDP, one for
streams, keyed ``(client, local)``), by relay endpoint and by id; each holds
its permissions by peer IP and its channels by number and by peer, so every
packet costs a few dict lookups. Every request except Binding goes through
:class:`~natkit.stun.auth.LongTermAuthenticator` over the configured
:class:`~natkit.turn.credentials.CredentialSource` (several candidate keys
per user, so REST secrets can rotate); unsigned error answers are limited
per source IP. Allocate is answered in two steps: the core picks random free
ports (``config.rng``) and emits :class:`RelayRequested`; the success goes
out when the driver reports ``relay_opened``. Expiries live in one heap of
``(deadline, seq, record)``; a refresh that moves a deadline later does not
touch the heap (the entry re-arms itself when it fires), one that moves it
earlier pushes a new entry and the old one becomes stale, so each event is
O(log n) and the heap holds about one entry per live record.

Decisions (see docs/conformance/turn.md):

* DONT-FRAGMENT is accepted and not enforced per allocation: Linux relay
  sockets already send with DF set (IP_PMTUDISC_WANT); no 420.
* ``config.wallclock is None``: REST usernames cannot be shown unexpired and
  are all refused (fail closed); static users are unaffected.
* Peers are checked by :class:`~natkit.turn.policy.PeerPolicy` on every
  path; permissions exist only for allowed peers, so the data paths check
  the permission alone.
* A RESERVATION-TOKEN Allocate emits :class:`RelayRequested` for the reserved
  endpoint itself: the driver turns the socket it holds into the relay.
* An Allocate retransmitted with the same transaction ID (and the last
  request on an allocation) is answered with the bytes sent the first time.
* TCP relays from a UDP client are 400 (RFC 6062 §5.1); with
  ``tcp_relay=False`` they are 442.
"""

from __future__ import annotations

import heapq
import logging
import math
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import NamedTuple, TypeVar

from natkit.addr import Endpoint, Family, Transport, ip_of
from natkit.errors import MalformedMessageError
from natkit.ratelimit import RateLimiter
from natkit.rng import Rng, default_rng
from natkit.stun import attributes as at
from natkit.stun.attributes import ErrorCodeValue
from natkit.stun.auth import LongTermAuthenticator, Rejected
from natkit.stun.constants import (
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    REASON_PHRASES,
    AttributeType,
    ErrorCode,
    MessageClass,
    Method,
    PasswordAlgorithm,
    SecurityFeature,
)
from natkit.stun.credentials import NonceCheck, NonceIssuer
from natkit.stun.message import (
    Integrity,
    StunMessage,
    message_type,
    parse_message,
    serialize_message,
    split_message_type,
)
from natkit.turn import attributes as tat
from natkit.turn.allocation import (
    Allocation,
    Channel,
    PeerConnection,
    PendingAllocate,
    Permission,
    Reservation,
)
from natkit.turn.attributes import FAMILIES, AddressErrorCode, IcmpValue, TransportProtocol
from natkit.turn.channel import CHANNEL_MAX, CHANNEL_MIN
from natkit.turn.credentials import CredentialSource
from natkit.turn.events import (
    AllocationCreated,
    AllocationDeleted,
    AuthenticationFailed,
    ConnectionBound,
    FiveTuple,
    PeerConnectionReleased,
    PeerConnectRequested,
    RelayReleased,
    RelayRequested,
    TurnServerEvent,
)
from natkit.turn.policy import PeerPolicy
from natkit.turn.quota import ByteBucket

__all__ = ["AllocationInfo", "TurnDatagram", "TurnServer", "TurnServerConfig", "TurnServerStats"]

IPNetwork = IPv4Network | IPv6Network


class TurnDatagram(NamedTuple):
    """``data`` to ``remote`` from local endpoint ``local`` over ``transport``
    (for TCP/TLS clients, ``(local, remote)`` names the connection)."""

    data: bytes
    remote: Endpoint
    local: Endpoint
    transport: Transport


@dataclass(frozen=True, slots=True)
class TurnServerConfig:
    """Defaults are RFC 8656's (§7.2 lifetimes, §9 permissions, §12 channels) and
    secure (peer denial, fail-closed REST expiry)."""

    realm: str
    relay_ips: tuple[str, ...]  # local IPs relay sockets bind to (at most one per family)
    external_ips: dict[str, str] = field(default_factory=dict)  # relay IP -> advertised IP
    min_port: int = 49152
    max_port: int = 65535
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    nonce_lifetime: float = 3600.0
    tcp_connect_timeout: float = 30.0  # RFC 6062 §5.2-5.3 ConnectionBind deadline
    allowed_peers: tuple[IPNetwork, ...] = ()  # allow-list that overrides the denied ranges
    denied_peers: tuple[IPNetwork, ...] = ()  # denied on top of the default special ranges
    max_allocations_per_user: int = 0  # 0 = no limit
    max_allocations: int = 0  # 0 = no limit
    max_bps_per_allocation: int = 0  # bytes/s relayed each way; 0 = no limit
    max_bps_total: int = 0
    unauthenticated_rate: float = 20.0  # 401s per second per source IP ...
    unauthenticated_burst: float = 40.0  # ... and its burst
    # Binding answers over UDP to sources without an allocation, per source IP
    # (a 20-byte request draws a 44-byte answer: no reflection); 0 = no limit.
    binding_rate: float = 50.0
    binding_burst: float = 100.0
    # Per allocation (0 = no limit); past them the request is 508.
    max_permissions: int = 1000  # peer IPs (RFC 8656 §9)
    max_channels: int = 1000  # channel bindings, quarantined ones included (§12)
    max_peer_connections: int = 100  # RFC 6062 peer connections, both directions
    # RFC 6062 Connect to these peer ports is 403 (port 25: no SMTP from the relay).
    denied_connect_ports: tuple[int, ...] = (25,)
    alternate_server: Endpoint | None = None  # ALTERNATE-SERVER: answer Allocate with 300
    algorithms: tuple[PasswordAlgorithm, ...] = (PasswordAlgorithm.SHA256, PasswordAlgorithm.MD5)
    software: str | None = "natkit"
    tcp_relay: bool = True  # RFC 6062
    # Accept RFC 5766's channel numbers 0x5000-0x7FFF too (coturn does, and its
    # turnutils_uclient picks numbers from the whole range); False: RFC 8656 §12's
    # 0x4000-0x4FFF only.
    rfc5766_channels: bool = True
    rng: Rng = field(default_factory=default_rng)
    wallclock: Callable[[], float] | None = None  # for REST credential expiry


@dataclass(frozen=True, slots=True)
class AllocationInfo:
    """One row of ``natkit turn sessions``."""

    allocation_id: int
    five_tuple: FiveTuple
    username: str
    relays: tuple[Endpoint, ...]
    created: float
    expires: float
    permissions: tuple[str, ...]
    channels: dict[int, Endpoint]
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int


@dataclass(slots=True)
class TurnServerStats:
    """Counters for Prometheus (no per-username labels)."""

    requests: int = 0
    allocations_created: int = 0
    allocations_deleted: int = 0
    auth_failures: int = 0
    rate_limited: int = 0
    dropped: int = 0
    packets_to_peers: int = 0
    packets_to_clients: int = 0
    bytes_to_peers: int = 0
    bytes_to_clients: int = 0
    denied_peers: int = 0
    quota_rejections: int = 0
    internal_errors: int = 0  # bugs caught at the core's boundary; must stay 0


class TurnServer:
    """The TURN allocation table and relay; see the module docstring."""

    def __init__(self, config: TurnServerConfig, credentials: CredentialSource) -> None:
        if not config.relay_ips:
            raise ValueError("TurnServerConfig.relay_ips names no relay address")
        if not 0 < config.min_port <= config.max_port <= 0xFFFF:
            raise ValueError("relay port range must satisfy 0 < min_port <= max_port <= 65535")
        self.config = config
        self.stats = TurnServerStats()
        self._credentials = credentials
        self._rng = config.rng
        self._relay_ip: dict[int, str] = {}
        for ip in config.relay_ips:
            family = int(Family.IPV6) if ":" in ip else int(Family.IPV4)
            if family in self._relay_ip:
                raise ValueError("relay_ips holds at most one address per family")
            self._relay_ip[family] = ip
        # USERNAME-ANONYMITY is announced only while every user can be found by
        # USERHASH (a client told so sends USERHASH instead of USERNAME, RFC 8489
        # §9.2.4); the source is asked at every challenge, since a store's
        # mirror may gain REST secrets at any refresh.
        self._nonces = _Nonces(
            secret=self._rng.randbytes(32),
            lifetime=config.nonce_lifetime,
            anonymous=credentials.resolves_every_userhash,
        )
        self._auth = LongTermAuthenticator(
            config.realm,
            self._keys,
            self._nonces,
            algorithms=config.algorithms,
            username_for_hash=credentials.username_for_hash,
        )
        self._policy = PeerPolicy(
            config.allowed_peers,
            config.denied_peers,
            own_ips=(*config.relay_ips, *config.external_ips.values()),
            relay_ports=(config.min_port, config.max_port),
        )
        self._limiter = RateLimiter(config.unauthenticated_rate, config.unauthenticated_burst)
        self._binding_limiter = (
            RateLimiter(config.binding_rate, max(1.0, config.binding_burst))
            if config.binding_rate > 0
            else None
        )
        self._denied_connect_ports = frozenset(config.denied_connect_ports)
        self._out: list[TurnDatagram] = []
        self._error_logged_at = -math.inf
        self._errors_unlogged = 0
        self._events: deque[TurnServerEvent] = deque()
        self._heap: list[tuple[float, int, _Timed]] = []
        self._seq = 0
        self._compact_at = _COMPACT_MIN  # heap size that triggers _compact_timers()
        self._now = 0.0
        # Indexes. Client-side keys are (client, local): one table per transport
        # kind, so the hot path never hashes the Transport enum.
        self._udp: dict[tuple[Endpoint, Endpoint], Allocation] = {}
        self._stream: dict[tuple[Endpoint, Endpoint], Allocation] = {}
        self._by_relay: dict[Endpoint, Allocation] = {}
        self._by_id: dict[int, Allocation] = {}
        self._pending: dict[int, PendingAllocate] = {}
        self._pending_by_client: dict[tuple[bool, Endpoint, Endpoint], PendingAllocate] = {}
        # Cancelled Allocates whose RelayRequested is unanswered: request id ->
        # (relay transport, held port + 1), so a late relay_opened releases all.
        self._abandoned: dict[int, tuple[Transport, Endpoint | None]] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._ports: dict[str, set[int]] = {ip: set() for ip in config.relay_ips}
        self._per_user: dict[str, int] = {}
        self._allocation_count = 0  # allocations plus pending Allocates
        self._connections: dict[int, PeerConnection] = {}
        self._data_connections: dict[tuple[Endpoint, Endpoint], PeerConnection] = {}
        self._next_id = 1
        self._next_request = 1
        bps = config.max_bps_total
        self._total_to_peer = ByteBucket(bps) if bps > 0 else None
        self._total_to_client = ByteBucket(bps) if bps > 0 else None
        self._limited = bps > 0 or config.max_bps_per_allocation > 0
        self._channel_max = _RFC5766_CHANNEL_MAX if config.rfc5766_channels else CHANNEL_MAX
        # SOFTWARE, encoded once (a value over 763 bytes fails here, not per answer).
        self._software = (
            None if config.software is None else at.SOFTWARE.encode(config.software, b"")
        )

    # -- inputs from the driver ------------------------------------------------------

    def receive_datagram(
        self,
        data: bytes,
        client: Endpoint,
        *,
        local: Endpoint,
        transport: Transport = Transport.UDP,
        now: float,
    ) -> None:
        """Handle one datagram (UDP) or one framed message (TCP/TLS) that arrived
        at server address ``local`` from ``client``: STUN requests (RFC 8656
        §7-12, RFC 6062 §5), Send indications (§11.2) and ChannelData (§12.6).
        Answers and relayed packets are queued; bad input is answered (400,
        401, ...) or dropped and counted, never raised."""
        self._now = now
        try:
            if len(data) >= 4 and data[0] & 0xC0 == 0x40:
                self._client_channel_data(data, client, local, transport, now)
            else:
                self._receive_stun(data, client, local, transport, now)
        except Exception:  # the last line of defence: a bug must not stop the server
            self.stats.internal_errors += 1
            self.stats.dropped += 1
            self._log_internal_error(client, now)

    def receive_peer_datagram(
        self, data: bytes, peer: Endpoint, *, relay: Endpoint, now: float
    ) -> None:
        """A UDP datagram from ``peer`` arrived at relay address ``relay``: relay
        it to the client as ChannelData when a channel is bound to ``peer``,
        else as a Data indication (RFC 8656 §11.3, §12.7), if a permission for
        the peer's IP exists and the peer is not denied; otherwise drop it."""
        self._now = now
        out = self.relay_peer_packet(data, peer, relay, now)
        if out is not None:
            self._out.append(out)
            return
        stats = self.stats
        stats.dropped += 1
        if self._by_relay.get(relay) is not None and not self._policy.allowed(peer.host):
            stats.denied_peers += 1

    def relay_client_packet(
        self,
        data: bytes,
        client: Endpoint,
        local: Endpoint,
        now: float,
        *,
        transport: Transport,
    ) -> TurnDatagram | None:
        """Hot path for ChannelData from a client (RFC 8656 §12.6): one UDP
        datagram, or one message framed out of a TCP/TLS stream. ``transport``
        is required: a UDP and a TCP client may share an IP:port (one NAT),
        and their 5-tuples, allocations and channels are distinct.

        Returns the datagram to send to the peer now, or ``None``: then
        nothing was done, not even counted, and the driver must hand the
        datagram to :meth:`receive_datagram`, which handles everything else
        (STUN) and counts drops (unbound or expired channel, no permission,
        truncated, over quota).
        """
        alloc = (self._udp if transport is _UDP else self._stream).get((client, local))
        if alloc is None or len(data) < 4:
            return None
        b0 = data[0]
        if b0 & 0xC0 != 0x40:
            return None
        ch = alloc.channels.get(b0 << 8 | data[1])
        if ch is None or ch.expires <= now:
            return None
        n = data[2] << 8 | data[3]
        if n + 4 > len(data) or n > _MAX_UDP_PAYLOAD:
            return None
        perm = alloc.permissions.get(ch.peer.host)
        if perm is None or perm.expires <= now:
            return None
        if self._limited and not self._take_to_peer(alloc, n, now):
            return None
        alloc.packets_out += 1
        alloc.bytes_out += n
        stats = self.stats
        stats.packets_to_peers += 1
        stats.bytes_to_peers += n
        return TurnDatagram(data[4 : 4 + n], ch.peer, ch.relay, _UDP)

    def relay_peer_packet(
        self, data: bytes, peer: Endpoint, relay: Endpoint, now: float
    ) -> TurnDatagram | None:
        """Hot path for a UDP datagram from ``peer`` at relay ``relay``
        (RFC 8656 §11.3, §12.7): returns the ChannelData message or Data
        indication to send to the client now, or ``None``: nothing was done
        or counted; the driver passes the datagram to
        :meth:`receive_peer_datagram`, which drops and counts it. A peer
        needs a permission for its IP; permissions exist only for peers the
        policy allows, so no policy lookup is needed here."""
        alloc = self._by_relay.get(relay)
        if alloc is None or not alloc.udp_relay:
            return None
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            return None
        n = len(data)
        if n > _MAX_RELAYED:
            return None
        if self._limited and not self._take_to_client(alloc, n, now):
            return None
        ch = alloc.by_peer.get(peer)
        if ch is not None and ch.expires > now:
            if alloc.stream and n & 3:
                out = _CD_HEAD.pack(ch.number, n) + data + _PAD[n & 3]
            else:
                out = _CD_HEAD.pack(ch.number, n) + data
        else:
            out = self._data_indication(peer, data)
        alloc.packets_in += 1
        alloc.bytes_in += n
        stats = self.stats
        stats.packets_to_clients += 1
        stats.bytes_to_clients += n
        return TurnDatagram(out, alloc.client, alloc.server, alloc.transport)

    def peer_icmp(
        self,
        relay: Endpoint,
        peer: Endpoint,
        *,
        icmp_type: int,
        icmp_code: int,
        error_data: int = 0,
        now: float,
    ) -> None:
        """The platform reported an ICMP error for a datagram relay ``relay``
        sent to ``peer`` (RFC 8656 §11.5): tell the client with a Data
        indication carrying XOR-PEER-ADDRESS and ICMP (no DATA), if the peer
        has a permission. Otherwise, and for unknown relays, nothing happens."""
        self._now = now
        alloc = self._by_relay.get(relay)
        if alloc is None or not alloc.udp_relay:
            return
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            return
        ind = StunMessage(Method.DATA, MessageClass.INDICATION, self._tid())
        ind.add(at.XOR_PEER_ADDRESS, peer)
        ind.add(tat.ICMP, IcmpValue(icmp_type & 0xFF, icmp_code & 0xFF, error_data & 0xFFFFFFFF))
        self._send(ind, alloc.client, alloc.server, alloc.transport, None, None, False)

    def relay_opened(self, request_id: int, relays: Sequence[Endpoint], *, now: float) -> None:
        """The driver opened the relay sockets of :class:`RelayRequested`
        ``request_id`` at ``relays`` (what it actually bound): create the
        allocation and send the Allocate success (RFC 8656 §7.2)."""
        self._now = now
        pending = self._pending.pop(request_id, None)
        if pending is None or not pending.alive:
            # Cancelled (client gone, timed out, shutdown): give the sockets back,
            # and the port + 1 the driver holds for EVEN-PORT with R too.
            abandoned = self._abandoned.pop(request_id, None)
            held = [] if abandoned is None or abandoned[1] is None else [abandoned[1]]
            transport = abandoned[0] if abandoned is not None else _UDP
            for relay in [*relays, *held]:
                if relay not in self._by_relay:  # never close a live relay
                    self._emit(RelayReleased(relay=relay, transport=transport))
            return
        pending.alive = False
        self._forget_pending(pending)
        if not relays:
            self._retry_or_fail(pending, now)
            return
        for relay in pending.relays:
            self._release_port(relay)
        actual = tuple(relays)
        for relay in actual:
            self._claim_port(relay)
        self._create_allocation(pending, actual, now)

    def relay_failed(self, request_id: int, *, now: float) -> None:
        """The driver could not bind the sockets of ``request_id``: try other
        ports (up to ``_RELAY_ATTEMPTS`` in all), then answer 508."""
        self._now = now
        pending = self._pending.pop(request_id, None)
        if pending is None or not pending.alive:
            self._abandoned.pop(request_id, None)
            return
        pending.alive = False
        self._forget_pending(pending)
        self._retry_or_fail(pending, now)

    def peer_connected(self, connection_id: int, *, now: float) -> bool:
        """RFC 6062 §5.2: the TCP connection of a Connect request is up;
        answer the Connect with CONNECTION-ID and wait for ConnectionBind.
        ``False``: the core no longer waits for it (its allocation went,
        the connect timed out): the driver must close the connection."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is None or conn.state != PeerConnection.CONNECTING:
            return False
        conn.state = PeerConnection.WAITING
        self._arm(conn, now + self.config.tcp_connect_timeout)
        if conn.request is not None:
            tid, key, integrity, fingerprint = conn.request
            conn.request = None
            resp = StunMessage(Method.CONNECT, MessageClass.SUCCESS, tid)
            resp.add(tat.CONNECTION_ID, connection_id)
            ft = conn.allocation.five_tuple
            self._send(resp, ft.client, ft.server, ft.transport, key, integrity, fingerprint)
        return True

    def peer_connect_failed(self, connection_id: int, *, now: float) -> None:
        """RFC 6062 §5.2: the connection to the peer failed: 447."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is None or conn.state != PeerConnection.CONNECTING:
            return
        request = conn.request
        self._drop_connection(conn, emit=False)
        if request is not None:
            tid, key, integrity, fingerprint = request
            resp = StunMessage(Method.CONNECT, MessageClass.ERROR, tid)
            resp = _error(resp, ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE)
            ft = conn.allocation.five_tuple
            self._send(resp, ft.client, ft.server, ft.transport, key, integrity, fingerprint)

    def peer_connection_accepted(
        self, relay: Endpoint, peer: Endpoint, *, now: float
    ) -> int | None:
        """RFC 6062 §5.3: a TCP peer connected to relay listener ``relay``.
        Returns the connection id announced to the client with a
        ConnectionAttempt indication, or ``None``: refuse the connection (no
        such TCP allocation, peer denied by policy, or no permission)."""
        self._now = now
        alloc = self._by_relay.get(relay)
        if alloc is None or alloc.udp_relay:
            return None
        if not self._policy.allowed(peer.host):
            self.stats.denied_peers += 1
            return None
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now or peer in alloc.connections:
            return None
        cap = self.config.max_peer_connections
        if cap and len(alloc.connections) >= cap:
            self.stats.quota_rejections += 1
            return None
        conn = self._new_connection(alloc, peer, PeerConnection.WAITING)
        self._arm(conn, now + self.config.tcp_connect_timeout)
        ind = StunMessage(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, self._tid())
        ind.add(tat.CONNECTION_ID, conn.connection_id)
        ind.add(at.XOR_PEER_ADDRESS, peer)
        self._send(ind, alloc.client, alloc.server, alloc.transport, None, None, False)
        return conn.connection_id

    def peer_connection_closed(self, connection_id: int, *, now: float) -> None:
        """The driver saw RFC 6062 peer connection ``connection_id`` end
        (either side): forget it, without a PeerConnectionReleased event."""
        self._now = now
        conn = self._connections.get(connection_id)
        if conn is not None:
            self._drop_connection(conn, emit=False)

    def stream_closed(self, client: Endpoint, *, local: Endpoint, now: float) -> None:
        """A client TCP/TLS connection ended (RFC 6062 §5.5 for data connections):
        delete the allocation on it, or release the peer connection bound
        to it, and cancel an Allocate still waiting for sockets."""
        self._now = now
        key = (client, local)
        alloc = self._stream.get(key)
        if alloc is not None:
            self._delete(alloc, "connection closed")
        conn = self._data_connections.get(key)
        if conn is not None:
            self._drop_connection(conn, emit=True)
        pending = self._pending_by_client.get((True, client, local))
        if pending is not None:
            self._cancel_pending(pending)

    def kick(self, allocation_id: int, *, now: float) -> bool:
        """Operator action: delete one allocation; False if there is none."""
        self._now = now
        alloc = self._by_id.get(allocation_id)
        if alloc is None:
            return False
        self._delete(alloc, "kicked")
        return True

    def shutdown(self, *, now: float) -> None:
        """Delete every allocation (reason "shutdown"), release every socket
        and reservation, cancel pending Allocates."""
        self._now = now
        for alloc in list(self._by_id.values()):
            self._delete(alloc, "shutdown")
        for pending in list(self._pending.values()):
            self._cancel_pending(pending)
        for res in list(self._reservations.values()):
            self._drop_reservation(res)
        self._heap.clear()  # every record is gone, so every entry is stale

    def _log_internal_error(self, client: Endpoint, now: float) -> None:
        """Log a bug caught at the boundary with its traceback, at most once
        per ``_ERROR_LOG_INTERVAL``; the others are only counted (a packet
        that triggers the bug must not flood the log)."""
        if now < self._error_logged_at + _ERROR_LOG_INTERVAL:
            self._errors_unlogged += 1
            return
        more = self._errors_unlogged
        self._error_logged_at = now
        self._errors_unlogged = 0
        _log.exception(
            "TURN server: error handling a datagram from %s (%d more since the last report)",
            client,
            more,
        )

    # -- outputs ---------------------------------------------------------------------

    def datagrams_to_send(self, *, now: float | None = None) -> list[TurnDatagram]:
        """Everything queued since the last call."""
        del now
        out, self._out = self._out, []
        return out

    def next_event(self) -> TurnServerEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline (allocations, permissions, channels,
        reservations, RFC 6062 connections, pending Allocates), or None."""
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, *, now: float) -> None:
        """Expire everything due at ``now``; each expiry is O(log n)."""
        self._now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, item = heapq.heappop(heap)
            if not item.alive or item.timer_at != deadline:
                continue  # stale: deleted or re-armed
            if isinstance(item, Permission):
                if item.expires > now:
                    self._arm(item, item.expires)
                else:
                    item.alive = False
                    perms = item.allocation.permissions
                    if perms.get(item.host) is item:
                        del perms[item.host]
            elif isinstance(item, Channel):
                end = item.expires + _CHANNEL_QUARANTINE
                if end > now:
                    self._arm(item, end)
                else:
                    self._drop_channel(item)
            elif isinstance(item, Allocation):
                if item.expires > now:
                    self._arm(item, item.expires)
                else:
                    self._delete(item, "expired")
            elif isinstance(item, Reservation):
                self._drop_reservation(item)
            elif isinstance(item, PeerConnection):
                if item.state != PeerConnection.BOUND:
                    request = item.request
                    self._drop_connection(item, emit=True)
                    if request is not None:  # the driver never answered the Connect
                        tid, key, integrity, fingerprint = request
                        resp = StunMessage(Method.CONNECT, MessageClass.ERROR, tid)
                        resp = _error(resp, ErrorCode.CONNECTION_TIMEOUT_OR_FAILURE)
                        ft = item.allocation.five_tuple
                        self._send(
                            resp, ft.client, ft.server, ft.transport, key, integrity, fingerprint
                        )
            else:  # PendingAllocate the driver never answered
                self._cancel_pending(item)
                self._allocate_error(item, ErrorCode.INSUFFICIENT_CAPACITY)

    # -- introspection ---------------------------------------------------------------

    def allocations(self) -> list[AllocationInfo]:
        """Every live allocation, for ``natkit turn sessions``."""
        now = self._now
        out = []
        for a in self._by_id.values():
            out.append(
                AllocationInfo(
                    allocation_id=a.allocation_id,
                    five_tuple=a.five_tuple,
                    username=a.username,
                    relays=a.advertised,
                    created=a.created,
                    expires=a.expires,
                    permissions=tuple(h for h, p in a.permissions.items() if p.expires > now),
                    channels={n: c.peer for n, c in a.channels.items() if c.expires > now},
                    packets_in=a.packets_in,
                    packets_out=a.packets_out,
                    bytes_in=a.bytes_in,
                    bytes_out=a.bytes_out,
                )
            )
        return out

    def table_sizes(self) -> dict[str, int]:
        """Entry counts of every internal table (a leak shows up here)."""
        return {
            "allocations": len(self._by_id),
            "udp_five_tuples": len(self._udp),
            "stream_five_tuples": len(self._stream),
            "relays": len(self._by_relay),
            "permissions": sum(len(a.permissions) for a in self._by_id.values()),
            "channels": sum(len(a.channels) for a in self._by_id.values()),
            "channel_peers": sum(len(a.by_peer) for a in self._by_id.values()),
            "pending": len(self._pending),
            "pending_clients": len(self._pending_by_client),
            "abandoned_requests": len(self._abandoned),
            "reservations": len(self._reservations),
            "ports": sum(len(p) for p in self._ports.values()),
            "users": len(self._per_user),
            "peer_connections": len(self._connections),
            "data_connections": len(self._data_connections),
            "timers": len(self._heap),
            "queued_datagrams": len(self._out),
            "queued_events": len(self._events),
        }

    # -- STUN dispatch ---------------------------------------------------------------

    def _keys(self, username: str, algorithm: PasswordAlgorithm) -> tuple[bytes, ...]:
        clock = self.config.wallclock
        # Without a wall clock no REST username can be shown to be unexpired:
        # treat them all as expired (fail closed). Static users are unaffected.
        wall = clock() if clock is not None else math.inf
        return self._credentials.keys(username, algorithm, wallclock=wall)

    def _receive_stun(
        self, data: bytes, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        try:
            msg = parse_message(data)
        except MalformedMessageError as exc:
            if exc.error_code is not None:
                self._error_from_header(data, client, local, transport, exc.error_code, now)
            else:
                self.stats.dropped += 1
            return
        cls = msg.message_class
        if cls == MessageClass.REQUEST:
            self.stats.requests += 1
            self._handle_request(msg, client, local, transport, now)
        elif cls == MessageClass.INDICATION and msg.method == Method.SEND:
            self._send_indication(msg, client, local, transport, now)
        else:
            self.stats.dropped += 1  # stray responses, other indications

    def _handle_request(
        self, msg: StunMessage, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        table = self._stream if transport is _TCP or transport is _TLS else self._udp
        alloc = table.get((client, local))
        tid = msg.transaction_id
        if alloc is not None:
            # A retransmission gets the very answer the original got (§7.2, §8).
            if tid == alloc.allocate_tid:
                self._out.append(TurnDatagram(alloc.allocate_response, client, local, transport))
                return
            if tid == alloc.last_tid:
                self._out.append(TurnDatagram(alloc.last_response, client, local, transport))
                return
        method = msg.method
        if method == Method.BINDING:
            limiter = self._binding_limiter
            if (
                limiter is not None
                and alloc is None
                and transport is _UDP
                and not limiter.allow(client.host, now=now)
            ):
                # Unsigned answers to spoofable sources go through a limit (RFC 8656 §21).
                self.stats.rate_limited += 1
                self.stats.dropped += 1
                return
            resp = msg.success().add(at.XOR_MAPPED_ADDRESS, client)
            self._send(resp, client, local, transport, None, None, msg.has_fingerprint)
            return
        if method not in _TURN_METHODS:
            self._reject(msg, _error(msg, ErrorCode.BAD_REQUEST), client, local, transport, now)
            return
        try:
            verdict = self._auth.check(msg, client, now=now)
        except MalformedMessageError:
            self._reject(msg, _error(msg, ErrorCode.BAD_REQUEST), client, local, transport, now)
            return
        if isinstance(verdict, Rejected):
            signed = msg.integrity_offset >= 0 or msg.integrity_sha256_offset >= 0
            err = verdict.response.error
            code = err.code if err is not None else ErrorCode.BAD_REQUEST
            if signed and code != ErrorCode.STALE_NONCE:
                self.stats.auth_failures += 1
                self._emit(
                    # USERNAME decoded fine: the authenticator read it before rejecting.
                    AuthenticationFailed(client=client, username=msg.get(at.USERNAME), code=code)
                )
            self._reject(msg, verdict.response, client, local, transport, now)
            return
        ctx = _Request(msg, client, local, transport, verdict.key, verdict.integrity, alloc)
        unknown: list[int] | None = None
        for t, _ in msg.attributes:
            # RFC 8489 §14: types below 0x8000 are comprehension-required
            if t < 0x8000 and t not in _UNDERSTOOD:
                unknown = [t] if unknown is None else [*unknown, t]
        if unknown is not None:
            resp = _error(msg, ErrorCode.UNKNOWN_ATTRIBUTE)
            resp.add(at.UNKNOWN_ATTRIBUTES, tuple(unknown))
            self._answer(ctx, resp)
            return
        if alloc is not None and verdict.username != alloc.username:
            self._answer(ctx, _error(msg, ErrorCode.WRONG_CREDENTIALS))
            return
        try:
            if method == Method.ALLOCATE:
                self._allocate(ctx, verdict.username, now)
            elif method == Method.REFRESH:
                self._refresh(ctx, now)
            elif method == Method.CREATE_PERMISSION:
                self._create_permission(ctx, now)
            elif method == Method.CHANNEL_BIND:
                self._channel_bind(ctx, now)
            elif method == Method.CONNECT:
                self._connect(ctx, now)
            else:  # CONNECTION_BIND, the last of _TURN_METHODS
                self._connection_bind(ctx, verdict.username, now)
        except MalformedMessageError:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))

    # -- Allocate (RFC 8656 §7.2, RFC 6062 §5.1, RFC 6156) ---------------------------

    def _allocate(self, ctx: _Request, username: str, now: float) -> None:
        msg = ctx.msg
        cfg = self.config
        if ctx.alloc is not None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        transport = ctx.transport
        stream = transport is _TCP or transport is _TLS
        self._policy.add_listener(ctx.local)  # never a peer (no TURN in TURN)
        pending = self._pending_by_client.get((stream, ctx.client, ctx.local))
        if pending is not None:
            if pending.transaction_id != msg.transaction_id:
                self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return  # a retransmission: the answer comes when the sockets are open
        # One pass over the attributes; the first of each type counts, as in get().
        raw: dict[int, bytes] = {}
        for t, v in msg.attributes:
            if t not in raw:
                raw[t] = v
        tid = msg.xor_tid
        protocol = _decoded(raw, tat.REQUESTED_TRANSPORT, tid)
        if protocol is None:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        even = _decoded(raw, tat.EVEN_PORT, tid)
        token = _decoded(raw, tat.RESERVATION_TOKEN, tid)
        _decoded(raw, tat.DONT_FRAGMENT, tid)  # validated; see docs/conformance/turn.md
        requested = _decoded(raw, tat.REQUESTED_ADDRESS_FAMILY, tid)
        additional = _decoded(raw, tat.ADDITIONAL_ADDRESS_FAMILY, tid)
        if protocol == TransportProtocol.UDP:
            relay_transport = _UDP
        elif protocol == TransportProtocol.TCP and cfg.tcp_relay:
            if not stream:  # RFC 6062 §5.1
                self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
                return
            if even is not None or token is not None or _DONT_FRAGMENT in raw:
                self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
                return
            relay_transport = Transport.TCP
        else:
            self._answer(ctx, _error(msg, ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL))
            return
        if token is not None and (
            even is not None or requested is not None or additional is not None
        ):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if additional is not None and (requested is not None or additional != Family.IPV6 or even):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        lifetime = self._lifetime(_decoded(raw, at.LIFETIME, tid))
        if cfg.alternate_server is not None:
            resp = _error(msg, ErrorCode.TRY_ALTERNATE)
            resp.add(at.ALTERNATE_SERVER, cfg.alternate_server)
            self._answer(ctx, resp)
            return
        if (cfg.max_allocations and self._allocation_count >= cfg.max_allocations) or (
            cfg.max_allocations_per_user
            and self._per_user.get(self._credentials.quota_user(username), 0)
            >= cfg.max_allocations_per_user
        ):
            self.stats.quota_rejections += 1
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_QUOTA_REACHED))
            return
        reservation: Reservation | None = None
        address_error: AddressErrorCode | None = None
        if token is not None:
            reservation = self._reservations.get(token)
            if reservation is None:
                self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
                return
            ips: tuple[str, ...] = (reservation.relay.host,)
        else:
            family = int(Family.IPV4) if requested is None else requested
            if family not in FAMILIES or family not in self._relay_ip:
                self._answer(ctx, _error(msg, ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED))
                return
            ips = (self._relay_ip[family],)
            if additional is not None:
                v6 = self._relay_ip.get(int(Family.IPV6))
                if v6 is None:
                    address_error = AddressErrorCode(
                        int(Family.IPV6),
                        ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED,
                        "Address Family not Supported",
                    )
                else:
                    ips = (ips[0], v6)
        five_tuple = FiveTuple(ctx.client, ctx.local, ctx.transport)
        pending = PendingAllocate(
            self._next_request,
            five_tuple,
            msg.transaction_id,
            username,
            ctx.key,
            ctx.integrity,
            msg.has_fingerprint,
            lifetime,
            relay_transport,
        )
        self._next_request += 1
        pending.even = even is not None
        pending.address_error = address_error
        if reservation is not None:
            self._reservations.pop(reservation.token, None)
            reservation.alive = False
            pending.reservation = reservation
            pending.relays = (reservation.relay,)
        elif not self._choose_ports(pending, ips, reserve=bool(even)):
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        self._allocation_count += 1
        quota_user = self._credentials.quota_user(username)
        self._per_user[quota_user] = self._per_user.get(quota_user, 0) + 1
        self._request_relays(pending, now)

    def _lifetime(self, requested: int | None) -> float:
        """RFC 8656 §7.2/§8: the client's LIFETIME, at most the maximum and
        at least the default."""
        cfg = self.config
        if requested is None:
            return cfg.default_lifetime
        return max(cfg.default_lifetime, min(float(requested), cfg.max_lifetime))

    def _choose_ports(
        self, pending: PendingAllocate, ips: tuple[str, ...], *, reserve: bool
    ) -> bool:
        """Pick a random free port on each relay IP (an even one for EVEN-PORT,
        with port + 1 free too when reserving) and claim them."""
        relays: list[Endpoint] = []
        for i, ip in enumerate(ips):
            port = self._pick_port(ip, even=pending.even, pair=reserve and i == 0)
            if port is None:
                for relay in relays:
                    self._release_port(relay)
                return False
            relay = Endpoint(ip, port)
            self._claim_port(relay)
            relays.append(relay)
            if reserve and i == 0:
                pending.reserve = Endpoint(ip, port + 1)
                self._claim_port(pending.reserve)
        pending.relays = tuple(relays)
        return True

    def _pick_port(self, ip: str, *, even: bool, pair: bool) -> int | None:
        cfg = self.config
        used = self._ports.setdefault(ip, set())
        lo, hi = cfg.min_port, cfg.max_port

        def fits(port: int) -> bool:
            if port < lo or port > hi or port in used:
                return False
            if even and port & 1:
                return False
            return not pair or (port + 1 <= hi and port + 1 not in used)

        rng = self._rng
        for _ in range(_RANDOM_PORT_TRIES):
            port = rng.randint(lo, hi)
            if even:
                port &= ~1
            if fits(port):
                return port
        if len(used) >= hi - lo + 1:
            return None
        start = rng.randint(lo, hi)
        span = hi - lo + 1
        for k in range(span):  # the range is nearly full: walk it once
            port = lo + (start - lo + k) % span
            if fits(port):
                return port
        return None

    def _claim_port(self, relay: Endpoint) -> None:
        self._ports.setdefault(relay.host, set()).add(relay.port)

    def _release_port(self, relay: Endpoint) -> None:
        used = self._ports.get(relay.host)
        if used is not None:
            used.discard(relay.port)

    def _request_relays(self, pending: PendingAllocate, now: float) -> None:
        pending.request_id = self._next_request
        self._next_request += 1
        pending.alive = True
        pending.attempts += 1
        self._pending[pending.request_id] = pending
        ft = pending.five_tuple
        stream = ft.transport is _TCP or ft.transport is _TLS
        self._pending_by_client[(stream, ft.client, ft.server)] = pending
        self._arm(pending, now + _PENDING_TIMEOUT)
        self._emit(
            RelayRequested(
                request_id=pending.request_id,
                relays=pending.relays,
                transport=pending.relay_transport,
                reserve=pending.reserve,
            )
        )

    def _forget_pending(self, pending: PendingAllocate) -> None:
        ft = pending.five_tuple
        key = (ft.transport is _TCP or ft.transport is _TLS, ft.client, ft.server)
        if self._pending_by_client.get(key) is pending:
            del self._pending_by_client[key]

    def _cancel_pending(self, pending: PendingAllocate) -> None:
        """Give up on a pending Allocate: its ports and quota go back, and a
        late ``relay_opened`` gets its sockets released."""
        if pending.alive:
            # The driver still owes an answer: remember what to release then.
            if len(self._abandoned) >= _ABANDONED_MAX:
                del self._abandoned[next(iter(self._abandoned))]
            self._abandoned[pending.request_id] = (pending.relay_transport, pending.reserve)
        pending.alive = False
        self._forget_pending(pending)
        self._pending.pop(pending.request_id, None)
        for relay in pending.relays:
            self._release_port(relay)
        if pending.reserve is not None:
            self._release_port(pending.reserve)
        if pending.reservation is not None:
            self._emit(RelayReleased(relay=pending.reservation.relay, transport=_UDP))
        self._unquota(pending.username)

    def _unquota(self, username: str) -> None:
        self._allocation_count -= 1
        user = self._credentials.quota_user(username)
        left = self._per_user.get(user, 0) - 1
        if left > 0:
            self._per_user[user] = left
        else:
            self._per_user.pop(user, None)

    def _retry_or_fail(self, pending: PendingAllocate, now: float) -> None:
        tried = pending.relays
        for relay in tried:
            self._release_port(relay)
        if pending.reserve is not None:
            self._release_port(pending.reserve)
        if pending.reservation is None and pending.attempts < _RELAY_ATTEMPTS:
            ips = tuple(r.host for r in tried)
            # Keep the failed ports claimed while choosing, so they are not picked again.
            for relay in tried:
                self._claim_port(relay)
            ok = self._choose_ports(pending, ips, reserve=pending.reserve is not None)
            for relay in tried:
                self._release_port(relay)
            if ok:
                self._request_relays(pending, now)
                return
        pending.relays = ()
        pending.reserve = None
        self._cancel_pending(pending)
        self._allocate_error(pending, ErrorCode.INSUFFICIENT_CAPACITY)

    def _allocate_error(self, pending: PendingAllocate, code: int) -> None:
        resp = _error(
            StunMessage(Method.ALLOCATE, MessageClass.REQUEST, pending.transaction_id), code
        )
        ft = pending.five_tuple
        self._send(
            resp,
            ft.client,
            ft.server,
            ft.transport,
            pending.key,
            pending.integrity,
            pending.fingerprint,
        )

    def _create_allocation(
        self, pending: PendingAllocate, relays: tuple[Endpoint, ...], now: float
    ) -> None:
        cfg = self.config
        ft = pending.five_tuple
        advertised = tuple(Endpoint(cfg.external_ips.get(r.host, r.host), r.port) for r in relays)
        alloc = Allocation(
            self._next_id,
            ft,
            pending.username,
            relays,
            advertised,
            pending.relay_transport,
            now,
            now + pending.lifetime,
        )
        self._next_id += 1
        if cfg.max_bps_per_allocation > 0:
            alloc.bucket_to_peer = ByteBucket(cfg.max_bps_per_allocation, now=now)
            alloc.bucket_to_client = ByteBucket(cfg.max_bps_per_allocation, now=now)
        stream = ft.transport is _TCP or ft.transport is _TLS
        (self._stream if stream else self._udp)[(ft.client, ft.server)] = alloc
        for relay in relays:
            self._by_relay[relay] = alloc
        self._by_id[alloc.allocation_id] = alloc
        self._arm(alloc, alloc.expires)
        resp = StunMessage(Method.ALLOCATE, MessageClass.SUCCESS, pending.transaction_id)
        for relay in advertised:
            resp.add(at.XOR_RELAYED_ADDRESS, relay)
        if pending.address_error is not None:
            resp.add(tat.ADDRESS_ERROR_CODE, pending.address_error)
        resp.add(at.LIFETIME, int(pending.lifetime))
        if pending.reserve is not None:
            token = b""
            while not token or token in self._reservations:
                token = self._rng.randbytes(8)
            res = Reservation(token, pending.reserve, now + _RESERVATION_LIFETIME)
            self._reservations[token] = res
            self._arm(res, res.timer_at)
            resp.add(tat.RESERVATION_TOKEN, token)
        resp.add(at.XOR_MAPPED_ADDRESS, ft.client)
        data = self._send(
            resp,
            ft.client,
            ft.server,
            ft.transport,
            pending.key,
            pending.integrity,
            pending.fingerprint,
        )
        alloc.allocate_tid = pending.transaction_id
        alloc.allocate_response = data
        self.stats.allocations_created += 1
        self._emit(
            AllocationCreated(
                allocation_id=alloc.allocation_id,
                five_tuple=ft,
                username=alloc.username,
                relays=advertised,
                lifetime=pending.lifetime,
            )
        )

    def _delete(self, alloc: Allocation, reason: str) -> None:
        """Remove ``alloc`` (live: every caller found it in an index) from
        every index and release its sockets."""
        alloc.alive = False
        key = (alloc.client, alloc.server)
        table = self._stream if alloc.stream else self._udp
        if table.get(key) is alloc:
            del table[key]
        self._by_id.pop(alloc.allocation_id, None)
        for relay in alloc.relays:
            if self._by_relay.get(relay) is alloc:
                del self._by_relay[relay]
            self._release_port(relay)
            self._emit(RelayReleased(relay=relay, transport=alloc.relay_transport))
        for perm in alloc.permissions.values():
            perm.alive = False
        alloc.permissions.clear()
        for ch in alloc.channels.values():
            ch.alive = False
        alloc.channels.clear()
        alloc.by_peer.clear()
        for conn in list(alloc.connections.values()):
            self._drop_connection(conn, emit=True)
        self._unquota(alloc.username)
        self.stats.allocations_deleted += 1
        self._emit(
            AllocationDeleted(
                allocation_id=alloc.allocation_id,
                five_tuple=alloc.five_tuple,
                username=alloc.username,
                reason=reason,
            )
        )

    def _drop_reservation(self, res: Reservation) -> None:
        res.alive = False
        if self._reservations.get(res.token) is res:
            del self._reservations[res.token]
        self._release_port(res.relay)
        self._emit(RelayReleased(relay=res.relay, transport=_UDP))

    # -- Refresh (§8) ----------------------------------------------------------------

    def _refresh(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        family = msg.get(tat.REQUESTED_ADDRESS_FAMILY)
        if family is not None and not _has_family(alloc, family):
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        requested = msg.get(at.LIFETIME)
        resp = msg.success()
        if requested == 0:
            self._delete(alloc, "refreshed to zero")
            resp.add(at.LIFETIME, 0)
            self._answer(ctx, resp, remember=False)
            return
        lifetime = self._lifetime(requested)
        self._set_expiry(alloc, now + lifetime)
        resp.add(at.LIFETIME, int(lifetime))
        self._answer(ctx, resp)

    # -- CreatePermission (§10) ---------------------------------------------------

    def _create_permission(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        peers = msg.get_all(at.XOR_PEER_ADDRESS)
        if not peers:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if len(peers) > _MAX_PEERS_PER_REQUEST:
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        if any(alloc.relay_for(p) is None for p in peers):
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not all(self._policy.allowed(p.host) for p in peers):
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        cap = self.config.max_permissions
        if cap:
            perms = alloc.permissions
            if len(perms) + len({p.host for p in peers if p.host not in perms}) > cap:
                self.stats.quota_rejections += 1
                self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
                return
        for peer in peers:
            self._permit(alloc, peer.host, now)
        self._answer(ctx, msg.success())

    def _permit(self, alloc: Allocation, host: str, now: float) -> None:
        expires = now + self.config.permission_lifetime
        perm = alloc.permissions.get(host)
        if perm is None:
            perm = Permission(alloc, host, expires)
            alloc.permissions[host] = perm
            self._arm(perm, expires)
        else:
            self._set_expiry(perm, expires)

    def _set_expiry(self, item: Allocation | Permission, expires: float) -> None:
        item.expires = expires
        if expires < item.timer_at:
            self._arm(item, expires)
        # A later expiry is found when the current entry fires and re-armed then.

    # -- ChannelBind (§12.2) -------------------------------------------------------

    def _channel_bind(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        number = msg.get(tat.CHANNEL_NUMBER)
        peer = msg.get(at.XOR_PEER_ADDRESS)
        if (
            number is None
            or peer is None
            or not (CHANNEL_MIN <= number <= self._channel_max)
            or not alloc.udp_relay
        ):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not self._policy.allowed(peer.host):
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        ch = alloc.channels.get(number)
        other = alloc.by_peer.get(peer)
        if (ch is not None and ch.peer != peer) or (other is not None and other.number != number):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if not self._policy.allowed_peer(peer):  # one of the server's own addresses
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        cfg = self.config
        if (ch is None and cfg.max_channels and len(alloc.channels) >= cfg.max_channels) or (
            cfg.max_permissions
            and peer.host not in alloc.permissions
            and len(alloc.permissions) >= cfg.max_permissions
        ):
            self.stats.quota_rejections += 1
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        expires = now + self.config.channel_lifetime
        if ch is None:
            ch = Channel(alloc, number, peer, relay, expires)
            alloc.channels[number] = ch
            alloc.by_peer[peer] = ch
            self._arm(ch, expires + _CHANNEL_QUARANTINE)
        else:
            ch.expires = expires  # later than before: the timer entry re-arms itself
        self._permit(alloc, peer.host, now)
        self._answer(ctx, msg.success())

    def _drop_channel(self, ch: Channel) -> None:
        ch.alive = False
        alloc = ch.allocation
        if alloc.channels.get(ch.number) is ch:
            del alloc.channels[ch.number]
        if alloc.by_peer.get(ch.peer) is ch:
            del alloc.by_peer[ch.peer]

    # -- Send indications and ChannelData from clients (§11.2, §12.6) -------------

    def _send_indication(
        self, msg: StunMessage, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        stats = self.stats
        alloc = (self._stream if transport.is_stream else self._udp).get((client, local))
        try:
            peer = msg.get(at.XOR_PEER_ADDRESS)
            data = msg.get(at.DATA)
        except MalformedMessageError:
            peer = data = None
        if alloc is None or peer is None or data is None or not alloc.udp_relay:
            stats.dropped += 1
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            stats.dropped += 1
            return
        if not self._policy.allowed_peer(peer):
            stats.denied_peers += 1
            stats.dropped += 1
            return
        perm = alloc.permissions.get(peer.host)
        if perm is None or perm.expires <= now:
            stats.dropped += 1
            return
        n = len(data)
        if n > _MAX_UDP_PAYLOAD or (self._limited and not self._take_to_peer(alloc, n, now)):
            stats.dropped += 1
            return
        alloc.packets_out += 1
        alloc.bytes_out += n
        stats.packets_to_peers += 1
        stats.bytes_to_peers += n
        self._out.append(TurnDatagram(data, peer, relay, _UDP))

    def _client_channel_data(
        self, data: bytes, client: Endpoint, local: Endpoint, transport: Transport, now: float
    ) -> None:
        # Over TCP/TLS the framer delivered exactly one message, padding stripped.
        out = self.relay_client_packet(data, client, local, now, transport=transport)
        if out is not None:
            self._out.append(out)
        else:
            self.stats.dropped += 1

    def _take_to_peer(self, alloc: Allocation, n: int, now: float) -> bool:
        bucket = alloc.bucket_to_peer
        if bucket is not None and not bucket.take(n, now):
            return False
        total = self._total_to_peer
        return total is None or total.take(n, now)

    def _take_to_client(self, alloc: Allocation, n: int, now: float) -> bool:
        bucket = alloc.bucket_to_client
        if bucket is not None and not bucket.take(n, now):
            return False
        total = self._total_to_client
        return total is None or total.take(n, now)

    def _data_indication(self, peer: Endpoint, data: bytes) -> bytes:
        """A Data indication (§11.3) with XOR-PEER-ADDRESS and DATA, built directly."""
        tid = self._rng.randbytes(12)
        n = len(data)
        pad = _PAD[n & 3]
        packed = ip_of(peer.host).packed
        xport = peer.port ^ 0x2112
        if len(packed) == 4:
            xpeer = _XPEER_V4.pack(
                AttributeType.XOR_PEER_ADDRESS,
                8,
                1,
                xport,
                int.from_bytes(packed, "big") ^ MAGIC_COOKIE,
            )
        else:
            mask = int.from_bytes(MAGIC_COOKIE_BYTES + tid, "big")
            xpeer = _XPEER_V6_HEAD.pack(AttributeType.XOR_PEER_ADDRESS, 20, 2, xport) + (
                int.from_bytes(packed, "big") ^ mask
            ).to_bytes(16, "big")
        length = len(xpeer) + 4 + n + len(pad)
        return b"".join(
            (
                _STUN_HEAD.pack(_DATA_INDICATION, length, MAGIC_COOKIE),
                tid,
                xpeer,
                _ATTR_HEAD.pack(AttributeType.DATA, n),
                data,
                pad,
            )
        )

    # -- RFC 6062: Connect, ConnectionBind -------------------------------------------

    def _connect(self, ctx: _Request, now: float) -> None:
        msg = ctx.msg
        alloc = ctx.alloc
        if alloc is None:
            self._answer(ctx, _error(msg, ErrorCode.ALLOCATION_MISMATCH))
            return
        peer = msg.get(at.XOR_PEER_ADDRESS)
        if peer is None or alloc.udp_relay:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        relay = alloc.relay_for(peer)
        if relay is None:
            self._answer(ctx, _error(msg, ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH))
            return
        if not self._policy.allowed_peer(peer) or peer.port in self._denied_connect_ports:
            self.stats.denied_peers += 1
            self._answer(ctx, _error(msg, ErrorCode.FORBIDDEN))
            return
        if peer in alloc.connections:
            self._answer(ctx, _error(msg, ErrorCode.CONNECTION_ALREADY_EXISTS))
            return
        cap = self.config.max_peer_connections
        if cap and len(alloc.connections) >= cap:
            self.stats.quota_rejections += 1
            self._answer(ctx, _error(msg, ErrorCode.INSUFFICIENT_CAPACITY))
            return
        conn = self._new_connection(alloc, peer, PeerConnection.CONNECTING)
        conn.request = (msg.transaction_id, ctx.key, ctx.integrity, msg.has_fingerprint)
        self._arm(conn, now + self.config.tcp_connect_timeout)
        self._emit(PeerConnectRequested(connection_id=conn.connection_id, relay=relay, peer=peer))

    def _new_connection(self, alloc: Allocation, peer: Endpoint, state: int) -> PeerConnection:
        cid = 0
        while cid == 0 or cid in self._connections:
            cid = self._rng.getrandbits(32)
        conn = PeerConnection(cid, alloc, peer, state)
        self._connections[cid] = conn
        alloc.connections[peer] = conn
        return conn

    def _drop_connection(self, conn: PeerConnection, *, emit: bool) -> None:
        """Forget ``conn`` (live: every caller found it in an index)."""
        conn.alive = False
        self._connections.pop(conn.connection_id, None)
        conns = conn.allocation.connections
        if conns.get(conn.peer) is conn:
            del conns[conn.peer]
        dc = conn.data_connection
        if dc is not None:
            key = (dc.client, dc.server)
            if self._data_connections.get(key) is conn:
                del self._data_connections[key]
        if emit:
            self._emit(PeerConnectionReleased(connection_id=conn.connection_id))

    def _connection_bind(self, ctx: _Request, username: str, now: float) -> None:
        msg = ctx.msg
        key = (ctx.client, ctx.local)
        if (
            not ctx.transport.is_stream
            or ctx.alloc is not None
            or key in self._data_connections
            or (True, ctx.client, ctx.local) in self._pending_by_client
        ):
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        cid = msg.get(tat.CONNECTION_ID)
        conn = self._connections.get(cid) if cid is not None else None
        if conn is None or conn.state != PeerConnection.WAITING:
            self._answer(ctx, _error(msg, ErrorCode.BAD_REQUEST))
            return
        if conn.allocation.username != username:
            self._answer(ctx, _error(msg, ErrorCode.WRONG_CREDENTIALS))
            return
        conn.state = PeerConnection.BOUND
        conn.timer_at = -1.0  # no expiry once bound: it lives as long as both connections
        ft = FiveTuple(ctx.client, ctx.local, ctx.transport)
        conn.data_connection = ft
        self._data_connections[key] = conn
        self._answer(ctx, msg.success(), remember=False)
        self._emit(ConnectionBound(connection_id=conn.connection_id, data_connection=ft))

    # -- sending ---------------------------------------------------------------------

    def _answer(self, ctx: _Request, resp: StunMessage, *, remember: bool = True) -> None:
        """Send a signed response to an authenticated request; remember it on
        the allocation so a retransmission gets the same bytes."""
        data = self._send(
            resp,
            ctx.client,
            ctx.local,
            ctx.transport,
            ctx.key,
            ctx.integrity,
            ctx.msg.has_fingerprint,
        )
        alloc = ctx.alloc
        if remember and alloc is not None and alloc.alive:
            alloc.last_tid = ctx.msg.transaction_id
            alloc.last_response = data

    def _send(
        self,
        msg: StunMessage,
        remote: Endpoint,
        local: Endpoint,
        transport: Transport,
        key: bytes | None,
        integrity: Integrity | None,
        fingerprint: bool,
    ) -> bytes:
        if self._software is not None and msg.message_class != MessageClass.INDICATION:
            msg.add_raw(AttributeType.SOFTWARE, self._software)
        data = serialize_message(
            msg, key=key, integrity=integrity or Integrity.SHA1, fingerprint=fingerprint
        )
        self._out.append(TurnDatagram(data, remote, local, transport))
        return data

    def _reject(
        self,
        request: StunMessage,
        resp: StunMessage,
        client: Endpoint,
        local: Endpoint,
        transport: Transport,
        now: float,
    ) -> None:
        """An unsigned error (401, 438, 400 before authentication), within the
        per-source-IP limit; past it, drop (no reflection, no amplification)."""
        if not self._limiter.allow(client.host, now=now):
            self.stats.rate_limited += 1
            self.stats.dropped += 1
            return
        self._send(resp, client, local, transport, None, None, request.has_fingerprint)

    def _error_from_header(
        self,
        data: bytes,
        client: Endpoint,
        local: Endpoint,
        transport: Transport,
        code: int,
        now: float,
    ) -> None:
        """A request whose header parsed but whose attributes did not: 400."""
        method, cls = split_message_type(int.from_bytes(data[0:2], "big"))
        if cls != MessageClass.REQUEST:
            self.stats.dropped += 1
            return
        self.stats.requests += 1
        req = StunMessage(method, cls, data[8:20])
        self._reject(req, _error(req, code), client, local, transport, now)

    def _emit(self, event: TurnServerEvent) -> None:
        self._events.append(event)

    def _tid(self) -> bytes:
        return self._rng.randbytes(12)

    def _arm(self, item: _Timed, deadline: float) -> None:
        item.timer_at = deadline
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (deadline, self._seq, item))
        if len(heap) > self._compact_at:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the heap's stale entries (deleted or re-armed records, the
        pending Allocates that were answered), in place: otherwise each keeps
        its dead record alive until its deadline (600 s for an allocation
        deleted by a Refresh 0) and wakes the driver for nothing. The next
        compaction waits until the heap has doubled, so this is amortised
        O(1) per entry pushed."""
        heap = self._heap
        heap[:] = [e for e in heap if e[2].alive and e[2].timer_at == e[0]]
        heapq.heapify(heap)
        self._compact_at = max(2 * len(heap), _COMPACT_MIN)


_Timed = Allocation | Permission | Channel | Reservation | PeerConnection | PendingAllocate


class _Request:
    """One authenticated request being processed."""

    __slots__ = ("alloc", "client", "integrity", "key", "local", "msg", "transport")

    def __init__(
        self,
        msg: StunMessage,
        client: Endpoint,
        local: Endpoint,
        transport: Transport,
        key: bytes,
        integrity: Integrity,
        alloc: Allocation | None,
    ) -> None:
        self.msg = msg
        self.client = client
        self.local = local
        self.transport = transport
        self.key = key
        self.integrity = integrity
        self.alloc = alloc


def _error(request: StunMessage, code: int) -> StunMessage:
    resp = StunMessage(request.method, MessageClass.ERROR, request.transaction_id)
    return resp.add(at.ERROR_CODE, ErrorCodeValue(code, REASON_PHRASES.get(code, "")))


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class _Nonces(NonceIssuer):
    """Nonces whose USERNAME-ANONYMITY bit follows ``anonymous()`` at each
    challenge (RFC 8489 §9.2): a nonce issued with the bit and one issued
    without both stay valid, each checked by the issuer of its own features."""

    anonymous: Callable[[], bool] = _never
    _plain: NonceIssuer = field(init=False)
    _anon: NonceIssuer = field(init=False)

    def __post_init__(self) -> None:
        NonceIssuer.__post_init__(self)  # its prefix (zero-argument super() fails with slots)
        plain = NonceIssuer(self.secret, self.lifetime, self.features)
        anon = NonceIssuer(
            self.secret, self.lifetime, self.features | SecurityFeature.USERNAME_ANONYMITY
        )
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "_anon", anon)

    def issue(self, client: str, *, now: float) -> str:
        issuer = self._anon if self.anonymous() else self._plain
        return issuer.issue(client, now=now)

    def check(self, nonce: str, client: str, *, now: float) -> NonceCheck:
        # The anonymous issuer's prefix (cookie + feature bits) picks it without
        # decoding the bits: a nonce that starts with neither prefix is INVALID
        # for either issuer, as it was when the bits were decoded.
        anon = self._anon
        return (anon if nonce.startswith(anon.prefix) else self._plain).check(
            nonce, client, now=now
        )


def _decoded(raw: dict[int, bytes], spec: at.AttrSpec[_T], tid: bytes) -> _T | None:
    """``msg.get(spec)`` over a first-value-by-type table of the message."""
    value = raw.get(spec.type)
    return None if value is None else spec.decode(value, tid)


def _has_family(alloc: Allocation, family: int) -> bool:
    if family == Family.IPV4:
        return alloc.relay_v4 is not None
    if family == Family.IPV6:
        return alloc.relay_v6 is not None
    return False


_UDP = Transport.UDP
_TCP = Transport.TCP
_TLS = Transport.TLS
_DONT_FRAGMENT = int(AttributeType.DONT_FRAGMENT)
_T = TypeVar("_T")
_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())
_TURN_METHODS = frozenset(
    {
        Method.ALLOCATE,
        Method.REFRESH,
        Method.CREATE_PERMISSION,
        Method.CHANNEL_BIND,
        Method.CONNECT,
        Method.CONNECTION_BIND,
    }
)
_UNDERSTOOD: frozenset[int] = frozenset(
    int(t)
    for t in {
        AttributeType.USERNAME,
        AttributeType.USERHASH,
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.REALM,
        AttributeType.NONCE,
        AttributeType.PASSWORD_ALGORITHM,
        AttributeType.ERROR_CODE,
        AttributeType.UNKNOWN_ATTRIBUTES,
        AttributeType.XOR_MAPPED_ADDRESS,
        AttributeType.MAPPED_ADDRESS,
        AttributeType.CHANNEL_NUMBER,
        AttributeType.LIFETIME,
        AttributeType.XOR_PEER_ADDRESS,
        AttributeType.DATA,
        AttributeType.XOR_RELAYED_ADDRESS,
        AttributeType.REQUESTED_ADDRESS_FAMILY,
        AttributeType.EVEN_PORT,
        AttributeType.REQUESTED_TRANSPORT,
        AttributeType.DONT_FRAGMENT,
        AttributeType.RESERVATION_TOKEN,
        AttributeType.CONNECTION_ID,
        AttributeType.PRIORITY,
        AttributeType.USE_CANDIDATE,
    }
)
_RFC5766_CHANNEL_MAX = 0x7FFF  # RFC 5766 §11; 0x8000 and up look like nothing valid
_RELAY_ATTEMPTS = 4  # the first try and three other ports before 508
_RANDOM_PORT_TRIES = 64
_ABANDONED_MAX = 4096
_COMPACT_MIN = 4096  # timer entries below which the heap is never compacted
_MAX_PEERS_PER_REQUEST = 128  # XOR-PEER-ADDRESS in one CreatePermission; more: 508
_ERROR_LOG_INTERVAL = 60.0  # at most one traceback a minute from the catch-all
_PENDING_TIMEOUT = 10.0  # the driver must answer RelayRequested by then
_RESERVATION_LIFETIME = 30.0  # RFC 8656 §7.2: an unused reservation lasts 30 s
_CHANNEL_QUARANTINE = 300.0  # RFC 8656 §12: no reuse for 5 minutes after expiry
_MAX_UDP_PAYLOAD = 65507  # the most one IPv4 UDP datagram carries
# The largest peer payload whose Data indication (20 + 24 + 4 bytes of STUN
# for an IPv6 peer) still fits one UDP datagram to the client.
_MAX_RELAYED = _MAX_UDP_PAYLOAD - 48
_CD_HEAD = struct.Struct("!HH")
_STUN_HEAD = struct.Struct("!HHI")
_ATTR_HEAD = struct.Struct("!HH")
_XPEER_V4 = struct.Struct("!HHxBHI")
_XPEER_V6_HEAD = struct.Struct("!HHxBH")
_DATA_INDICATION = message_type(Method.DATA, MessageClass.INDICATION)
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
