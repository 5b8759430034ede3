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
``(deadline, seq, record)``, O(log n) per event (see :mod:`.timers`).

:class:`TurnServer` is built from parts, one module each, over the state
declared in :mod:`.server_base` (which also holds the answering primitives
and :class:`TurnDatagram`, :class:`TurnServerStats`); this module keeps the
construction, the dispatch of client datagrams, requests (RFC 8656 §6-12) and
expiries, the operator actions and introspection:

* :mod:`.server_config`: :class:`TurnServerConfig`;
* :mod:`.server_auth`: credential keys and nonces (RFC 8656 §5, RFC 8489 §9.2);
* :mod:`.allocate`: Allocate, Refresh, relay ports, reservations (§7, §8);
* :mod:`.relaying`: permissions, channels, Send/Data/ChannelData and the hot
  paths (§9-12);
* :mod:`.tcp_relay`: RFC 6062 Connect, ConnectionBind, ConnectionAttempt;
* :mod:`.timers`: the expiry heap.

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
from collections import deque
from dataclasses import dataclass

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import MalformedMessageError
from natkit.ratelimit import RateLimiter
from natkit.stun import attributes as at
from natkit.stun.auth import LongTermAuthenticator, Rejected
from natkit.stun.constants import AttributeType, ErrorCode, MessageClass, Method
from natkit.stun.message import StunMessage, encode_attribute, parse_message

# Every ``X as X`` below re-exports a name that lived in this module before
# it was split into the modules of TurnServer's parts.
from natkit.turn.allocate import _ABANDONED_MAX as _ABANDONED_MAX  # noqa: PLC0414
from natkit.turn.allocate import _DONT_FRAGMENT as _DONT_FRAGMENT  # noqa: PLC0414
from natkit.turn.allocate import _PENDING_TIMEOUT as _PENDING_TIMEOUT  # noqa: PLC0414
from natkit.turn.allocate import _RANDOM_PORT_TRIES as _RANDOM_PORT_TRIES  # noqa: PLC0414
from natkit.turn.allocate import _RELAY_ATTEMPTS as _RELAY_ATTEMPTS  # noqa: PLC0414
from natkit.turn.allocate import _RESERVATION_LIFETIME as _RESERVATION_LIFETIME  # noqa: PLC0414
from natkit.turn.allocate import _T as _T  # noqa: PLC0414
from natkit.turn.allocate import _Allocations
from natkit.turn.allocate import _decoded as _decoded  # noqa: PLC0414
from natkit.turn.allocate import _has_family as _has_family  # noqa: PLC0414
from natkit.turn.allocation import (
    Allocation,
    Channel,
    PeerConnection,
    PendingAllocate,
    Permission,
    Reservation,
)
from natkit.turn.channel import CHANNEL_MAX
from natkit.turn.credentials import CredentialSource
from natkit.turn.events import AuthenticationFailed, FiveTuple, TurnServerEvent
from natkit.turn.policy import PeerPolicy
from natkit.turn.quota import ByteBucket
from natkit.turn.relaying import _ATTR_HEAD as _ATTR_HEAD  # noqa: PLC0414
from natkit.turn.relaying import _CD_HEAD as _CD_HEAD  # noqa: PLC0414
from natkit.turn.relaying import _CHANNEL_QUARANTINE, _RFC5766_CHANNEL_MAX, _Relaying
from natkit.turn.relaying import _DATA_INDICATION as _DATA_INDICATION  # noqa: PLC0414
from natkit.turn.relaying import _MAX_PEERS_PER_REQUEST as _MAX_PEERS_PER_REQUEST  # noqa: PLC0414
from natkit.turn.relaying import _MAX_RELAYED as _MAX_RELAYED  # noqa: PLC0414
from natkit.turn.relaying import _MAX_UDP_PAYLOAD as _MAX_UDP_PAYLOAD  # noqa: PLC0414
from natkit.turn.relaying import _PAD as _PAD  # noqa: PLC0414
from natkit.turn.relaying import _STUN_HEAD as _STUN_HEAD  # noqa: PLC0414
from natkit.turn.relaying import _XPEER_V4 as _XPEER_V4  # noqa: PLC0414
from natkit.turn.relaying import _XPEER_V6_HEAD as _XPEER_V6_HEAD  # noqa: PLC0414
from natkit.turn.released_ports import ReleasedPorts
from natkit.turn.server_auth import _never as _never  # noqa: PLC0414
from natkit.turn.server_auth import _Nonces, _ServerAuth
from natkit.turn.server_base import (
    _TCP,
    _TLS,
    _UDP,
    TurnDatagram,
    TurnServerStats,
    _error,
    _Request,
)
from natkit.turn.server_config import IPNetwork as IPNetwork  # noqa: PLC0414
from natkit.turn.server_config import TurnServerConfig
from natkit.turn.tcp_relay import _TcpRelay
from natkit.turn.timers import _COMPACT_MIN, _Timed

__all__ = ["AllocationInfo", "TurnDatagram", "TurnServer", "TurnServerConfig", "TurnServerStats"]


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


class TurnServer(_Allocations, _Relaying, _TcpRelay, _ServerAuth):
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
        self._challenges = {}
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
        self._released = ReleasedPorts(config.relay_socket_pool, config.relay_port_quarantine)
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
        self._software_attr = (
            b"" if config.software is None else encode_attribute(at.SOFTWARE, config.software, b"")
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
        if msg.integrity_offset < 0 and msg.integrity_sha256_offset < 0 and len(tid) == 12:
            # Unsigned: the 401 challenge (RFC 8489 §9.2.4), as _reject would
            # send it, from a template (server_auth); within the per-IP limit.
            if not self._limiter.allow(client.host, now=now):
                self.stats.rate_limited += 1
                self.stats.dropped += 1
                return
            data = self._challenge_bytes(msg, client, now)
            self._out.append(TurnDatagram(data, client, local, transport))
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
_ERROR_LOG_INTERVAL = 60.0  # at most one traceback a minute from the catch-all
