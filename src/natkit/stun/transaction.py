"""STUN client transactions (RFC 8489 §6.2, §9), sans-IO.

Theory of operation
-------------------
:meth:`StunClient.send_request` queues a request and returns its transaction
ID. Over UDP the request is retransmitted after RTO, then doubling (RTO, 2
RTO, 4 RTO, ...) for ``rc`` sends in all; after the last send the client
waits ``rm`` x RTO before reporting :class:`TransactionTimedOut`. With the
defaults (RTO 500 ms, Rc 7, Rm 16) sends go out at 0, 0.5, 1.5, 3.5, 7.5,
15.5 and 31.5 s and failure comes at 39.5 s (§6.2.1). Over a reliable
transport (TCP, TLS) nothing is retransmitted and the transaction fails after
``ti`` (39.5 s, §6.2.2).

RTO is carried across transactions to the same server (keyed by IP, as
§6.2.1 allows): round-trip samples from transactions answered without a
retransmission feed an RFC 6298 estimator (Karn's rule), the result is
clamped to [``rto_min``, ``rto_max``] and forgotten after 10 minutes without
a transaction to that server.

Authentication (§9.1-9.2): with short-term credentials every request carries
USERNAME and MESSAGE-INTEGRITY. With long-term credentials the first
request goes out unsigned; a 401 carrying REALM and NONCE makes the client
pick the first PASSWORD-ALGORITHM it supports (echoing the server's
PASSWORD-ALGORITHMS when the nonce cookie announces them, which is what
defeats bid-down attacks), send USERHASH instead of USERNAME when the
server announces username anonymity, and retry under a new transaction ID;
a 438 refreshes the nonce and retries. Realm, nonce and key are remembered
per server so later requests are signed at once. Responses to signed
requests must carry a valid integrity attribute, or they are ignored
(§9.2.5), exactly as if lost - over UDP; over TCP/TLS the transaction fails.
"""

from __future__ import annotations

import contextlib
import heapq
from collections import deque
from dataclasses import dataclass, field

from natkit.addr import Datagram, Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.stun import attributes as at
from natkit.stun.attributes import PasswordAlgorithmParams
from natkit.stun.constants import (
    AttributeType,
    ErrorCode,
    MessageClass,
    PasswordAlgorithm,
    SecurityFeature,
)
from natkit.stun.credentials import (
    PasswordProfile,
    long_term_key,
    nonce_features,
    short_term_key,
    userhash,
)
from natkit.stun.events import (
    ResponseReceived,
    StunEvent,
    TransactionFailed,
    TransactionTimedOut,
)
from natkit.stun.message import (
    Attribute,
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    verify_integrity,
)

__all__ = [
    "LongTermCredentials",
    "ShortTermCredentials",
    "StunClient",
    "StunClientConfig",
]

_AUTH_ATTRS = frozenset(
    {
        AttributeType.USERNAME,
        AttributeType.USERHASH,
        AttributeType.REALM,
        AttributeType.NONCE,
        AttributeType.PASSWORD_ALGORITHM,
        AttributeType.PASSWORD_ALGORITHMS,
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.FINGERPRINT,
    }
)
_RTO_CACHE_LIFETIME = 600.0  # RFC 8489 §6.2.1: stale after 10 minutes
_RTO_CACHE_SIZE = 4096  # servers remembered at most (an ICE agent talks to many peers)
_MAX_AUTH_RETRIES = 3
_SUPPORTED_ALGORITHMS = frozenset(int(a) for a in PasswordAlgorithm)
_XOR_ADDRESSES: dict[int, at.AttrSpec[Endpoint]] = {
    spec.type: spec for spec in (at.XOR_MAPPED_ADDRESS, at.XOR_PEER_ADDRESS, at.XOR_RELAYED_ADDRESS)
}


def _attributes_for(msg: StunMessage, tid: bytes) -> list[Attribute]:
    """``msg``'s attributes as they must be sent under ``tid``.

    An IPv6 XOR address is XORed with the transaction ID (RFC 8489 §14.2), so
    one encoded under the caller's (or the first attempt's) ID would decode to
    another address under a new ID: re-encode those.
    """
    if msg.xor_tid == tid:
        return list(msg.attributes)
    out: list[Attribute] = []
    for attr in msg.attributes:
        spec = _XOR_ADDRESSES.get(attr.type)
        value = attr.value
        if spec is not None:
            # A malformed one is not ours to fix: it goes out as the caller built it.
            with contextlib.suppress(MalformedMessageError):
                value = spec.encode(spec.decode(value, msg.xor_tid), tid)
        out.append(Attribute(attr.type, value))
    return out


@dataclass(frozen=True, slots=True)
class ShortTermCredentials:
    """RFC 8489 §9.1: USERNAME plus a key derived from the password alone."""

    username: str
    password: str
    profile: PasswordProfile = PasswordProfile.OPAQUE_STRING


@dataclass(frozen=True, slots=True)
class LongTermCredentials:
    """RFC 8489 §9.2: username and password, key bound to the server's realm."""

    username: str
    password: str
    profile: PasswordProfile = PasswordProfile.OPAQUE_STRING


Credentials = ShortTermCredentials | LongTermCredentials


@dataclass(frozen=True, slots=True)
class StunClientConfig:
    """Timers use the RFC's own names (RFC 8489 §6.2.1-6.2.2)."""

    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    ti: float = 39.5
    rto_min: float = 0.1
    rto_max: float = 3.0
    reliable: bool = False
    software: str | None = None
    fingerprint: bool = False
    rng: Rng = field(default_factory=default_rng)


@dataclass(slots=True)
class _AuthState:
    realm: str
    nonce: str
    algorithm: PasswordAlgorithm
    offered: tuple[PasswordAlgorithmParams, ...] | None
    key: bytes


@dataclass(slots=True)
class _RtoState:
    srtt: float | None
    rttvar: float
    rto: float
    last_used: float


@dataclass(slots=True, eq=False)
class _Transaction:
    user_tid: bytes
    tid: bytes
    request: StunMessage
    server: Endpoint
    credentials: Credentials | None
    data: bytes = b""
    key: bytes | None = None
    rto: float = 0.5
    initial_rto: float = 0.5
    sends: int = 0
    last_sent: float = 0.0
    deadline: float = 0.0
    auth_attempts: int = 0


class StunClient:
    """Client transactions from one local transport address."""

    def __init__(self, config: StunClientConfig | None = None) -> None:
        self.config = config or StunClientConfig()
        self._by_tid: dict[bytes, _Transaction] = {}
        self._timers: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._out: list[Datagram] = []
        self._events: deque[StunEvent] = deque()
        self._rto: dict[str, _RtoState] = {}
        self._auth: dict[tuple[Endpoint, LongTermCredentials], _AuthState] = {}

    # -- commands ---------------------------------------------------------------

    def new_transaction_id(self) -> bytes:
        return self.config.rng.getrandbits(96).to_bytes(12, "big")

    def send_request(
        self,
        request: StunMessage,
        server: Endpoint,
        *,
        now: float,
        credentials: Credentials | None = None,
    ) -> bytes:
        """Queue ``request`` to ``server``; returns its transaction ID.

        The request's transaction ID is used if it has one of 12 bytes,
        otherwise a random one is drawn. Any integrity or FINGERPRINT
        attributes are added here, not by the caller.
        """
        if request.message_class != MessageClass.REQUEST:
            raise LocalProtocolError("send_request needs a request")
        tid = request.transaction_id
        if len(tid) != 12 or tid in self._by_tid:
            tid = self.new_transaction_id()
            request.attributes = _attributes_for(request, tid)
            request.transaction_id = tid
        txn = _Transaction(tid, tid, request, server, credentials)
        self._start(txn, now)
        return tid

    def send_indication(self, indication: StunMessage, server: Endpoint) -> None:
        """Queue an indication (no transaction, no retransmission)."""
        if indication.message_class != MessageClass.INDICATION:
            raise LocalProtocolError("send_indication needs an indication")
        if len(indication.transaction_id) != 12:
            tid = self.new_transaction_id()
            indication.attributes = _attributes_for(indication, tid)
            indication.transaction_id = tid
        data = serialize_message(indication, fingerprint=self.config.fingerprint)
        self._out.append(Datagram(data, server))

    def cancel(self, transaction_id: bytes) -> None:
        """Forget a transaction: no more retransmissions, no event."""
        for tid, txn in list(self._by_tid.items()):
            if txn.user_tid == transaction_id:
                del self._by_tid[tid]

    # -- sans-IO surface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Feed a datagram (or one framed message of a stream) from ``addr``."""
        try:
            msg = parse_message(data)
        except MalformedMessageError:
            return
        if msg.message_class not in (MessageClass.SUCCESS, MessageClass.ERROR):
            return
        txn = self._by_tid.get(msg.transaction_id)
        if txn is None or msg.method != txn.request.method:
            return
        try:
            self._on_response(txn, msg, addr, now)
        except MalformedMessageError:
            return  # a response with a malformed attribute is treated as lost

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        while self._timers:
            when, _, tid = self._timers[0]
            txn = self._by_tid.get(tid)
            if txn is not None and txn.deadline == when:
                return when
            heapq.heappop(self._timers)
        return None

    def handle_timer(self, *, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            when, _, tid = heapq.heappop(self._timers)
            txn = self._by_tid.get(tid)
            if txn is None or txn.deadline != when:
                continue
            if not self.config.reliable and txn.sends < self.config.rc:
                txn.rto *= 2
                self._transmit(txn, now)
            else:
                del self._by_tid[tid]
                self._events.append(
                    TransactionTimedOut(transaction_id=txn.user_tid, server=txn.server)
                )

    def next_event(self) -> StunEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def pending(self) -> int:
        return len(self._by_tid)

    def rto_for(self, server: Endpoint, *, now: float) -> float:
        """The initial RTO the next transaction to ``server`` will use."""
        state = self._rto.get(server.host)
        if state is None or now - state.last_used > _RTO_CACHE_LIFETIME:
            if state is not None:
                del self._rto[server.host]  # stale: forget it (RFC 8489 §6.2.1)
            if len(self._rto) >= _RTO_CACHE_SIZE:
                self._prune_rto(now)
            return self.config.rto
        return state.rto

    def _prune_rto(self, now: float) -> None:
        stale = [h for h, st in self._rto.items() if now - st.last_used > _RTO_CACHE_LIFETIME]
        for host in stale:
            del self._rto[host]
        while len(self._rto) >= _RTO_CACHE_SIZE:  # still full: drop the oldest entries
            del self._rto[next(iter(self._rto))]

    # -- internals -------------------------------------------------------------

    def _start(self, txn: _Transaction, now: float) -> None:
        txn.data, txn.key = self._encode(txn)
        txn.rto = txn.initial_rto = self.rto_for(txn.server, now=now)
        txn.sends = 0
        self._by_tid[txn.tid] = txn
        self._transmit(txn, now)

    def _transmit(self, txn: _Transaction, now: float) -> None:
        self._out.append(Datagram(txn.data, txn.server))
        txn.sends += 1
        txn.last_sent = now
        if self.config.reliable:
            txn.deadline = now + self.config.ti
        elif txn.sends < self.config.rc:
            txn.deadline = now + txn.rto
        else:
            txn.deadline = now + self.config.rm * txn.initial_rto
        self._seq += 1
        heapq.heappush(self._timers, (txn.deadline, self._seq, txn.tid))

    def _encode(self, txn: _Transaction) -> tuple[bytes, bytes | None]:
        req = txn.request
        cfg = self.config
        attrs = [a for a in _attributes_for(req, txn.tid) if a.type not in _AUTH_ATTRS]
        msg = StunMessage(req.method, MessageClass.REQUEST, txn.tid, attrs)
        if cfg.software is not None and not msg.has(AttributeType.SOFTWARE):
            msg.add(at.SOFTWARE, cfg.software)
        creds = txn.credentials
        key: bytes | None = None
        integrity = Integrity.SHA1
        if isinstance(creds, ShortTermCredentials):
            msg.add(at.USERNAME, creds.username)
            key = short_term_key(creds.password, creds.profile)
        elif isinstance(creds, LongTermCredentials):
            auth = self._auth.get((txn.server, creds))
            if auth is not None:
                self._add_long_term(msg, creds, auth)
                key = auth.key
                if auth.offered is not None:
                    integrity = Integrity.SHA256
        data = serialize_message(msg, key=key, integrity=integrity, fingerprint=cfg.fingerprint)
        return data, key

    def _add_long_term(
        self, msg: StunMessage, creds: LongTermCredentials, auth: _AuthState
    ) -> None:
        features = nonce_features(auth.nonce)
        if features & SecurityFeature.USERNAME_ANONYMITY:
            msg.add(at.USERHASH, userhash(creds.username, auth.realm))
        else:
            msg.add(at.USERNAME, creds.username)
        msg.add(at.REALM, auth.realm)
        msg.add(at.NONCE, auth.nonce)
        if auth.offered is not None:
            msg.add(at.PASSWORD_ALGORITHMS, auth.offered)
            msg.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(auth.algorithm))

    def _on_response(self, txn: _Transaction, msg: StunMessage, addr: Endpoint, now: float) -> None:
        creds = txn.credentials
        if msg.message_class == MessageClass.ERROR and isinstance(creds, LongTermCredentials):
            err = msg.error
            code = err.code if err else 0
            if code in (ErrorCode.UNAUTHENTICATED, ErrorCode.STALE_NONCE):
                self._retry_with_auth(txn, msg, addr, code, now)
                return
        if txn.key is not None and not verify_integrity(msg, txn.key):
            # §9.1.4 / §9.2.5: over UDP as if never received (a forgery must not
            # end the transaction); over a reliable transport a failure.
            if self.config.reliable:
                del self._by_tid[txn.tid]
                self._events.append(
                    TransactionFailed(
                        transaction_id=txn.user_tid,
                        server=txn.server,
                        reason="the response failed its integrity check",
                    )
                )
            return
        del self._by_tid[txn.tid]
        rtt = now - txn.last_sent
        if txn.sends == 1:
            self._rtt_sample(txn.server, rtt, now)
        else:
            self._rto_backoff(txn.server, txn.rto, now)
        self._events.append(
            ResponseReceived(transaction_id=txn.user_tid, response=msg, source=addr, rtt=rtt)
        )

    def _retry_with_auth(
        self, txn: _Transaction, msg: StunMessage, addr: Endpoint, code: int, now: float
    ) -> None:
        creds = txn.credentials
        assert isinstance(creds, LongTermCredentials)  # checked by the caller
        # Decode before the transaction goes: a malformed challenge raises here
        # and is treated as lost, so retransmission and the timeout still apply.
        realm = msg.get(at.REALM)
        nonce = msg.get(at.NONCE)
        offered_attr = msg.get(at.PASSWORD_ALGORITHMS)
        del self._by_tid[txn.tid]
        used = self._auth.get((txn.server, creds)) if txn.key is not None else None
        if (
            realm is None
            or nonce is None
            or txn.auth_attempts >= _MAX_AUTH_RETRIES
            # A signed request refused with the very nonce it carried: wrong credentials.
            or (code == ErrorCode.UNAUTHENTICATED and used is not None and used.nonce == nonce)
        ):
            self._auth.pop((txn.server, creds), None)
            self._events.append(
                ResponseReceived(
                    transaction_id=txn.user_tid,
                    response=msg,
                    source=addr,
                    rtt=now - txn.last_sent,
                )
            )
            return
        offered: tuple[PasswordAlgorithmParams, ...] | None = None
        algorithm = PasswordAlgorithm.MD5
        if nonce_features(nonce) & SecurityFeature.PASSWORD_ALGORITHMS:
            offered = offered_attr or ()
            usable = [p.algorithm for p in offered if p.algorithm in _SUPPORTED_ALGORITHMS]
            if not usable:
                self._events.append(
                    TransactionFailed(
                        transaction_id=txn.user_tid,
                        server=txn.server,
                        reason="server offers no password algorithm we support",
                    )
                )
                return
            algorithm = PasswordAlgorithm(usable[0])
        try:
            key = long_term_key(creds.username, realm, creds.password, algorithm, creds.profile)
        except ValueError as exc:  # a realm (or password) the profile disallows
            self._events.append(
                TransactionFailed(
                    transaction_id=txn.user_tid,
                    server=txn.server,
                    reason=f"cannot derive the long-term key: {exc}",
                )
            )
            return
        self._auth[(txn.server, creds)] = _AuthState(realm, nonce, algorithm, offered, key)
        retry = _Transaction(
            txn.user_tid,
            self.new_transaction_id(),
            txn.request,
            txn.server,
            creds,
            auth_attempts=txn.auth_attempts + 1,
        )
        self._start(retry, now)

    def _rtt_sample(self, server: Endpoint, rtt: float, now: float) -> None:
        # RFC 6298 §2 with alpha 1/8, beta 1/4, clock granularity folded into rto_min.
        state = self._rto.get(server.host)
        if state is None or state.srtt is None or now - state.last_used > _RTO_CACHE_LIFETIME:
            srtt, rttvar = rtt, rtt / 2
        else:
            rttvar = 0.75 * state.rttvar + 0.25 * abs(state.srtt - rtt)
            srtt = 0.875 * state.srtt + 0.125 * rtt
        rto = min(self.config.rto_max, max(self.config.rto_min, srtt + 4 * rttvar))
        self._rto[server.host] = _RtoState(srtt, rttvar, rto, now)

    def _rto_backoff(self, server: Endpoint, rto: float, now: float) -> None:
        # Karn: no sample from a retransmitted request, but keep the backed-off RTO.
        state = self._rto.get(server.host)
        backed = min(self.config.rto_max, max(self.config.rto_min, rto))
        if state is None:
            self._rto[server.host] = _RtoState(None, 0.0, backed, now)
        else:
            state.rto = backed
            state.last_used = now
