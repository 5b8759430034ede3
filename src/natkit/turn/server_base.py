"""The state every part of the TURN server shares, and how it answers, sans-IO.

:class:`natkit.turn.server.TurnServer` is one object built from parts, each
in its own module (:mod:`.allocate`, :mod:`.relaying`, :mod:`.tcp_relay`,
:mod:`.timers`, :mod:`.server_auth`); :class:`_ServerBase` declares the
tables they share (allocations by 5-tuple, relay and id, pending Allocates,
reservations, ports, RFC 6062 connections) and the output queues, and
holds the primitives they all answer with:

* :meth:`_ServerBase._answer`: a response to an authenticated request,
  signed with the request's key and integrity algorithm, and remembered on
  the allocation so that a retransmitted request gets the same bytes
  (RFC 8656 §7.2, §8);
* :meth:`_ServerBase._reject`: an unsigned error (401, 438, a 400 before
  authentication), sent only within the per-source-IP limit: a spoofed
  source must not turn the server into a reflector (RFC 8656 §21);
* :meth:`_ServerBase._send`: serialise, add SOFTWARE (encoded once, RFC 8489
  §14.14) and queue a :class:`TurnDatagram`.

The attributes are only declared here (no cost at run time): ``TurnServer``
sets them all in its ``__init__``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from natkit.addr import Endpoint, Transport
from natkit.ratelimit import RateLimiter
from natkit.rng import Rng
from natkit.stun import attributes as at
from natkit.stun.attributes import ErrorCodeValue
from natkit.stun.auth import LongTermAuthenticator
from natkit.stun.constants import REASON_PHRASES, AttributeType, MessageClass
from natkit.stun.credentials import NonceIssuer
from natkit.stun.message import (
    Integrity,
    StunMessage,
    encode_message,
    serialize_message,
    split_message_type,
)
from natkit.turn.allocation import Allocation, PeerConnection, PendingAllocate, Reservation
from natkit.turn.credentials import CredentialSource
from natkit.turn.events import TurnServerEvent
from natkit.turn.policy import PeerPolicy
from natkit.turn.quota import ByteBucket
from natkit.turn.released_ports import ReleasedPorts
from natkit.turn.server_config import TurnServerConfig


class TurnDatagram(NamedTuple):
    """``data`` to ``remote`` from local endpoint ``local`` over ``transport``
    (for TCP/TLS clients, ``(local, remote)`` names the connection)."""

    data: bytes
    remote: Endpoint
    local: Endpoint
    transport: Transport


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


class _ServerBase:
    """Shared state and the answering primitives; see the module docstring."""

    config: TurnServerConfig
    stats: TurnServerStats
    _credentials: CredentialSource
    _rng: Rng
    _relay_ip: dict[int, str]  # family -> relay IP
    _policy: PeerPolicy
    _limiter: RateLimiter
    _denied_connect_ports: frozenset[int]
    _out: list[TurnDatagram]
    _events: deque[TurnServerEvent]
    _now: float
    # Indexes. Client-side keys are (client, local): one table per transport
    # kind, so the hot path never hashes the Transport enum.
    _udp: dict[tuple[Endpoint, Endpoint], Allocation]
    _stream: dict[tuple[Endpoint, Endpoint], Allocation]
    _by_relay: dict[Endpoint, Allocation]
    _by_id: dict[int, Allocation]
    _pending: dict[int, PendingAllocate]
    _pending_by_client: dict[tuple[bool, Endpoint, Endpoint], PendingAllocate]
    # Cancelled Allocates whose RelayRequested is unanswered: request id ->
    # (relay transport, held port + 1), so a late relay_opened releases all.
    _abandoned: dict[int, tuple[Transport, Endpoint | None]]
    _reservations: dict[bytes, Reservation]
    _ports: dict[str, set[int]]
    _released: ReleasedPorts
    _per_user: dict[str, int]
    _allocation_count: int  # allocations plus pending Allocates
    _connections: dict[int, PeerConnection]
    _data_connections: dict[tuple[Endpoint, Endpoint], PeerConnection]
    _next_id: int
    _next_request: int
    _total_to_peer: ByteBucket | None
    _total_to_client: ByteBucket | None
    _limited: bool  # any byte quota at all
    _channel_max: int
    _software: bytes | None  # SOFTWARE, encoded once
    _software_attr: bytes  # the same as a whole attribute (b"": none)
    _auth: LongTermAuthenticator
    _nonces: NonceIssuer

    if TYPE_CHECKING:
        # Provided by .tcp_relay; deleting an allocation (.allocate) drops its
        # peer connections too.
        def _drop_connection(self, conn: PeerConnection, *, emit: bool) -> None: ...

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
        if remember:
            self._remember_answer(ctx, data)

    def _answer_encoded(
        self, ctx: _Request, msg_type: int, attributes: bytes, *, remember: bool = True
    ) -> None:
        """:meth:`_answer` for a success whose attributes are already encoded."""
        data = self._send_encoded(
            msg_type,
            ctx.msg.transaction_id,
            attributes,
            ctx.client,
            ctx.local,
            ctx.transport,
            ctx.key,
            ctx.integrity,
            ctx.msg.has_fingerprint,
        )
        if remember:
            self._remember_answer(ctx, data)

    @staticmethod
    def _remember_answer(ctx: _Request, data: bytes) -> None:
        """Keep the answer on the allocation: a retransmission gets these bytes."""
        alloc = ctx.alloc
        if alloc is not None and alloc.alive:
            alloc.last_tid = ctx.msg.transaction_id
            alloc.last_response = data

    def _send_encoded(
        self,
        msg_type: int,
        tid: bytes,
        attributes: bytes,
        remote: Endpoint,
        local: Endpoint,
        transport: Transport,
        key: bytes,
        integrity: Integrity | None,
        fingerprint: bool,
    ) -> bytes:
        """:meth:`_send` for a signed response from encoded attributes (the
        frequent successes: no :class:`StunMessage` built for them)."""
        data = encode_message(
            msg_type,
            tid,
            attributes + self._software_attr,
            key=key,
            integrity=integrity or Integrity.SHA1,
            fingerprint=fingerprint,
        )
        self._out.append(TurnDatagram(data, remote, local, transport))
        return data

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


_UDP = Transport.UDP
_TCP = Transport.TCP
_TLS = Transport.TLS
