"""Allocations of the TURN server: Allocate, Refresh, relay ports (RFC 8656 §7, §8), sans-IO.

Allocate (RFC 8656 §7.2, RFC 6062 §5.1 for TCP relays, RFC 6156 for IPv6
and dual-stack) is answered in two steps: the core checks the request and
the quotas, picks random free ports (``config.rng``; an even one for
EVEN-PORT, with port + 1 held for the RESERVATION-TOKEN the answer
carries) and emits :class:`~natkit.turn.events.RelayRequested`; the
success goes out when the driver reports ``relay_opened`` with what it
actually bound. ``relay_failed`` tries other ports, up to
``_RELAY_ATTEMPTS`` in all, before 508; a request the driver never answers
is 508 after ``_PENDING_TIMEOUT``. An Allocate retransmitted while pending
is ignored (the answer comes when the sockets are open), one retransmitted
after is answered with the bytes sent the first time (§7.2). A
RESERVATION-TOKEN Allocate asks for the reserved endpoint itself: the
driver turns the socket it holds into the relay.

Refresh (§8) moves the lifetime within ``[default_lifetime,
max_lifetime]``; a LIFETIME of 0 deletes the allocation, which releases
its relay sockets, permissions, channels and RFC 6062 connections.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeVar

from natkit.addr import Endpoint, Family, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import AttributeType, ErrorCode, MessageClass, Method
from natkit.stun.message import StunMessage, encode_attribute, message_type
from natkit.turn import attributes as tat
from natkit.turn.allocation import Allocation, PendingAllocate, Reservation
from natkit.turn.attributes import FAMILIES, AddressErrorCode, TransportProtocol
from natkit.turn.events import (
    AllocationCreated,
    AllocationDeleted,
    FiveTuple,
    RelayReleased,
    RelayRequested,
)
from natkit.turn.quota import ByteBucket
from natkit.turn.server_base import _TCP, _TLS, _UDP, _error, _Request
from natkit.turn.timers import _Timers


class _Allocations(_Timers):
    """Allocate, Refresh and the allocation table; see the module docstring."""

    # -- the driver's answers to RelayRequested ----------------------------------------

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
                    self._released.add(relay.host, relay.port, now)
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
        """The port released longest ago, past its quarantine (its socket
        may still be open in the driver: natkit.turn.released_ports), else a
        random free one, never one released within the quarantine unless
        every other port is taken (a full range is worse than a short rest)."""
        cfg = self.config
        used = self._ports.setdefault(ip, set())
        lo, hi = cfg.min_port, cfg.max_port
        released = self._released
        now = self._now
        if not even:
            port = released.take(ip, used, now)
            if port is not None and lo <= port <= hi:
                return port

        rest = [True]  # honour the quarantine (False: the last walk)

        def fits(port: int) -> bool:
            if port < lo or port > hi or port in used:
                return False
            if even and port & 1:
                return False
            if rest[0] and released.cooling(ip, port, now):
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
        for rest[0] in (True, False):  # nearly full: walk it, then again ignoring the rest
            for k in range(span):
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

    def _retire_relay(self, relay: Endpoint, transport: Transport) -> None:
        """Free a relay port whose socket was open and ask the driver to
        close (or park) it; the port rests before it is handed out again."""
        self._release_port(relay)
        self._released.add(relay.host, relay.port, self._now)
        self._emit(RelayReleased(relay=relay, transport=transport))

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
        # RFC 8656 §7.2 success: XOR-RELAYED-ADDRESS (one per family), LIFETIME,
        # RESERVATION-TOKEN, XOR-MAPPED-ADDRESS; encoded here, not via a StunMessage.
        tid = pending.transaction_id
        parts = [encode_attribute(at.XOR_RELAYED_ADDRESS, relay, tid) for relay in advertised]
        if pending.address_error is not None:
            parts.append(encode_attribute(tat.ADDRESS_ERROR_CODE, pending.address_error, tid))
        parts.append(_LIFETIME_HEAD + _U32.pack(int(pending.lifetime)))
        if pending.reserve is not None:
            token = b""
            while not token or token in self._reservations:
                token = self._rng.randbytes(8)
            res = Reservation(token, pending.reserve, now + _RESERVATION_LIFETIME)
            self._reservations[token] = res
            self._arm(res, res.timer_at)
            parts.append(encode_attribute(tat.RESERVATION_TOKEN, token, tid))
        parts.append(encode_attribute(at.XOR_MAPPED_ADDRESS, ft.client, tid))
        data = self._send_encoded(
            _ALLOCATE_SUCCESS,
            tid,
            b"".join(parts),
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
            self._retire_relay(relay, alloc.relay_transport)
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
        self._retire_relay(res.relay, _UDP)

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
        if requested == 0:
            self._delete(alloc, "refreshed to zero")
            self._answer_encoded(ctx, _REFRESH_SUCCESS, _LIFETIME_ZERO, remember=False)
            return
        lifetime = self._lifetime(requested)
        self._set_expiry(alloc, now + lifetime)
        self._answer_encoded(ctx, _REFRESH_SUCCESS, _LIFETIME_HEAD + _U32.pack(int(lifetime)))


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


_DONT_FRAGMENT = int(AttributeType.DONT_FRAGMENT)
_ALLOCATE_SUCCESS = message_type(Method.ALLOCATE, MessageClass.SUCCESS)
_REFRESH_SUCCESS = message_type(Method.REFRESH, MessageClass.SUCCESS)
_U32 = struct.Struct("!I")
_LIFETIME_HEAD = struct.pack("!HH", AttributeType.LIFETIME, 4)  # RFC 8656 §18.2: seconds, 32 bits
_LIFETIME_ZERO = _LIFETIME_HEAD + bytes(4)
_T = TypeVar("_T")
_RELAY_ATTEMPTS = 4  # the first try and three other ports before 508
_RANDOM_PORT_TRIES = 64
_ABANDONED_MAX = 4096
_PENDING_TIMEOUT = 10.0  # the driver must answer RelayRequested by then
_RESERVATION_LIFETIME = 30.0  # RFC 8656 §7.2: an unused reservation lasts 30 s
