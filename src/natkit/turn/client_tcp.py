"""The TURN client's RFC 6062 side: TCP allocations' Connect, ConnectionAttempt
and ConnectionBind, sans-IO.

Theory of operation
-------------------
An RFC 6062 allocation (REQUESTED-TRANSPORT TCP, §5.1) lives on a TCP/TLS
control connection. There the client sends Connect (§4.3: the server opens a
TCP connection to the peer and answers with a CONNECTION-ID) and receives
ConnectionAttempt indications (§4.4: a peer connected to the relayed
address); :class:`_Rfc6062` is that part of
:class:`~natkit.turn.client.TurnClient`, a mixin like the other
``client_*`` modules. Each peer connection then needs its own TCP/TLS
connection to the server whose first message is a ConnectionBind carrying
the CONNECTION-ID (§4.3-4.4): :class:`TurnConnectionBinder` is the small
stream core for it. coturn closes a data connection whose first
ConnectionBind is unsigned, so the control client remembers the realm,
nonce and key of its last signed request (:class:`TurnAuth`, RFC 8489
§9.2.4) for the binder to sign with at once; without it the binder's own
StunClient answers the server's 401 on the same connection.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
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
from natkit.stun.events import ResponseReceived, TransactionFailed, TransactionTimedOut
from natkit.stun.message import (
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    verify_integrity,
)
from natkit.stun.transaction import LongTermCredentials, StunClient
from natkit.turn import attributes as tat
from natkit.turn.client_config import ClientState, TurnClientConfig
from natkit.turn.client_events import (
    ConnectFailed,
    ConnectionAttempted,
    DataConnectionBound,
    DataConnectionFailed,
    PeerConnected,
    TurnBinderEvent,
    TurnClientEvent,
)
from natkit.turn.client_requests import _error_of, _Pending

__all__ = ["TurnAuth", "TurnConnectionBinder"]


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


class _Rfc6062:
    """TurnClient's side of RFC 6062 on the control connection (see the module
    docstring)."""

    if TYPE_CHECKING:
        credentials: LongTermCredentials | None
        state: ClientState
        _auth: TurnAuth | None
        _events: deque[TurnClientEvent]

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

    def _connection_attempt(self, data: bytes) -> None:
        """A ConnectionAttempt indication on the control connection (RFC 6062
        §4.4): a peer opened a TCP connection to the relayed address."""
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
