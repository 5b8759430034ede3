"""SIP transactions (RFC 3261 §17, RFC 6026), sans-IO.

Theory of operation
-------------------
A :class:`TransactionLayer` holds every transaction of one SIP element. The
TU (a user agent core, registrar or proxy) hands it requests with
:meth:`~TransactionLayer.send_request` (a *client transaction* starts) and
responses with :meth:`~TransactionLayer.send_response` (they go through the
*server transaction* of their request); the driver hands it every message
that arrived with :meth:`~TransactionLayer.receive_message`. What must go
out is collected from :meth:`~TransactionLayer.messages_to_send`, what the
TU must hear from :meth:`~TransactionLayer.next_event`, and the driver
wakes the layer at :meth:`~TransactionLayer.get_timer` with
:meth:`~TransactionLayer.handle_timer`. The layer never picks a transport:
each request comes with its :class:`Target`, and responses go back where
§18.2.2 (and RFC 3581 ``rport``) says for the request's :class:`Source`
and the Via the transport stamped (:mod:`natkit.sip.via_routing`).

The four state machines are those of §17.1.1 (INVITE client: Calling,
Proceeding, Completed, Terminated; timers A, B, D), §17.1.2 (non-INVITE
client: Trying, Proceeding, Completed; E, F, K), §17.2.1 (INVITE server:
Proceeding, Completed, Confirmed; G, H, I; the 100 Trying 200 ms after an
INVITE the TU has not answered) and §17.2.2 (non-INVITE server: Trying,
Proceeding, Completed; J), with RFC 6026's "Accepted" state on both INVITE
machines: a 2xx moves them there for 64*T1 (timers M and L). In Accepted
the client passes every further 2xx to the TU (it ACKs them), the server
absorbs retransmitted INVITEs, sends the TU's own 2xx retransmissions and
passes ACKs to the TU. The ACK for a non-2xx final response is built and
sent by the INVITE client transaction (§17.1.1.3); the ACK for a 2xx is the
TU's: an outgoing one is sent without a transaction, an incoming one
surfaces as :class:`AckReceived`.

Over reliable transports (:attr:`SipTransport.reliable`) timers A, E and G
are not armed and D, I, J and K are zero: the transaction terminates at
once where it would have waited.

Matching: responses by top Via branch and CSeq method (§17.1.3); requests by
branch, sent-by and method, ACK matching its INVITE (§17.2.3). A CANCEL has
its own server transaction and names the INVITE transaction it matches
(§9.2). Requests whose branch lacks the ``z9hG4bK`` cookie are matched the
RFC 2543 way, on Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
Optionally the layer rejects merged requests with 482 (§8.2.2.2).

Timer C (§16.6 step 11) guards INVITE client transactions in Proceeding:
when it fires the TU hears :class:`TimerCExpired` (a proxy CANCELs the
branch), and a transaction still unanswered 64*T1 after its CANCEL (or
after Timer C) terminates with :class:`TransactionTimedOut` (§9.1), so no
transaction outlives its timers.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.sip.flow import Source, Target
from natkit.sip.headers import Via
from natkit.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
    serialize_message,
)
from natkit.sip.timers import TimerConfig, TimerHeap
from natkit.sip.transaction_events import (
    AckReceived,
    ClientTransactionId,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    StrayResponseReceived,
    TimerCExpired,
    TransactionEvent,
    TransactionId,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from natkit.sip.via_routing import response_target

__all__ = [
    "MAGIC_COOKIE",
    "ClientTransactionId",
    "ServerTransactionId",
    "Source",
    "Target",
    "TimerConfig",
    "TransactionLayer",
    "build_ack",
    "build_cancel",
    "default_response_target",
]

_log = logging.getLogger(__name__)
_DEFAULT_TIMERS = TimerConfig()

MAGIC_COOKIE = "z9hG4bK"
"""Branch prefix of RFC 3261 transactions (§8.1.1.7)."""


class _State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


@dataclass(eq=False, slots=True)
class _ClientTxn:
    id: ClientTransactionId
    request: SipRequest
    target: Target
    invite: bool
    reliable: bool
    state: _State
    interval: float = 0.0  # the current A or E interval
    ack: SipRequest | None = None
    cancel_requested: bool = False  # the TU asked for a CANCEL (§9.1)
    timers: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state is not _State.TERMINATED


@dataclass(eq=False, slots=True)
class _ServerTxn:
    id: ServerTransactionId
    request: SipRequest
    source: Source
    invite: bool
    reliable: bool
    state: _State
    response_target: Target | None = None  # fixed by the first response
    interval: float = 0.0  # the current G interval
    last_response: SipResponse | None = None
    response_to_tag: str | None = None  # To tag of the final response (2543 ACK matching)
    response_key: tuple[str, ...] | None = None  # RFC 2543 index for send_response
    merge_key: tuple[str, ...] | None = None  # §8.2.2.2 index
    timers: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state is not _State.TERMINATED


class _CompletedServerTxn:
    """A non-INVITE server transaction in Completed over UDP (§17.2.2): all
    it still does for Timer J (64*T1) is answer a retransmitted request with
    its final response, so it keeps only that response's wire form and where
    it went. An element at 2,000 requests/s holds ~64,000 of these; full
    records (the parsed request and response) were ~4 KB each and made the
    garbage collector's full passes long. Timer J is the same for every
    record, so the records wait in a FIFO (``TransactionLayer._completed``)
    with their deadline, ``expires``, instead of in the timer heap: no heap
    entry and no timer table each (~280 bytes less per record)."""

    __slots__ = ("expires", "id", "merge_key", "response_key", "response_target", "state", "wire")

    invite = False
    reliable = False
    response_to_tag = None

    def __init__(
        self, txn: _ServerTxn, response: SipResponse, target: Target, expires: float
    ) -> None:
        self.id = txn.id
        self.state = _State.COMPLETED
        self.wire = serialize_message(response)
        self.response_target: Target | None = target
        self.response_key = txn.response_key
        self.merge_key = txn.merge_key
        self.expires = expires

    @property
    def alive(self) -> bool:
        return self.state is not _State.TERMINATED

    @property
    def last_response(self) -> SipResponse:
        """The final response again, for a retransmission (parsed back from
        the octets sent: the same message)."""
        response = parse_message(self.wire)
        assert isinstance(response, SipResponse)  # serialized from one
        return response


_AnyServerTxn = _ServerTxn | _CompletedServerTxn


def build_cancel(invite: SipRequest) -> SipRequest:
    """A CANCEL for ``invite`` (RFC 3261 §9.1): same Request-URI, Call-ID,
    From, To (tag included) and CSeq number, method CANCEL; the top Via of
    the INVITE only (same branch); the INVITE's Route headers."""
    return _request_like(invite, "CANCEL", to=_required(invite, "To"))


def build_ack(invite: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a non-2xx final ``response`` to ``invite`` (§17.1.1.3):
    like the INVITE's CANCEL, but with the To of the response (its tag)."""
    return _request_like(invite, "ACK", to=_required(response, "To"))


def _required(msg: SipMessage, name: str) -> str:
    value = msg.headers.get(name)
    if value is None:
        raise MalformedMessageError(f"missing {name}")
    return value


def _request_like(invite: SipRequest, method: str, *, to: str) -> SipRequest:
    headers = Headers()
    headers.add("Via", str(invite.top_via))
    headers.add("Max-Forwards", "70")
    for route in invite.headers.get_all("Route"):
        headers.add("Route", route)
    headers.add("From", _required(invite, "From"))
    headers.add("To", to)
    headers.add("Call-ID", _required(invite, "Call-ID"))
    headers.add("CSeq", f"{invite.cseq.seq} {method}")
    return SipRequest(method=method, uri=invite.uri, headers=headers)


def _default_port(transport: str) -> int:
    return 5061 if transport.upper() in ("TLS", "WSS") else 5060


def _sent_by(via: Via) -> str:
    host = via.host.lower()
    port = via.port if via.port is not None else _default_port(via.transport)
    return f"{host}:{port}"


def default_response_target(response: SipResponse, source: Source) -> Target:
    """Where §18.2.2 and RFC 3581 §4 send ``response`` to a request from
    ``source``: :func:`natkit.sip.via_routing.response_target` on the top
    Via the transport stamped (``received``/``rport``, §18.2.1), which the
    response carries. A valueless ``rport`` (a Via nobody stamped) still
    means "to the source"; a Via it cannot route (an unknown transport, a
    host name without ``received``) goes back to the source too.
    """
    back = Target(source.transport, source.remote, source.flow)
    if source.transport.reliable:
        return back  # over the request's connection, whatever the Via says
    try:
        via = response.top_via
        if via.has_rport and via.rport is None:
            return back
        target = response_target(response, source)
    except MalformedMessageError:  # the TU's response lost its Via
        return back
    return target if target is not None else back


class TransactionLayer:
    """Every SIP transaction of one element; see the module docstring.

    ``reject_merged_requests`` makes the layer answer 482 Loop Detected to a
    request without To tag whose From tag, Call-ID and CSeq equal those of
    an ongoing server transaction it does not match (§8.2.2.2): right for a
    UAS, wrong for a proxy (which must forward forked copies).
    ``response_target`` decides where a server transaction sends its
    responses, from the first response and the request's :class:`Source`;
    every later response and retransmission of the transaction goes there
    too.
    """

    def __init__(
        self,
        *,
        timers: TimerConfig = _DEFAULT_TIMERS,
        rng: Rng | None = None,
        reject_merged_requests: bool = False,
        response_target: Callable[[SipResponse, Source], Target] = default_response_target,
    ) -> None:
        self._response_target = response_target
        self._config = timers
        self._rng = rng if rng is not None else default_rng()
        self._reject_merged = reject_merged_requests
        self._clients: dict[ClientTransactionId, _ClientTxn] = {}
        self._servers: dict[ServerTransactionId, _AnyServerTxn] = {}
        self._legacy_responses: dict[tuple[str, ...], ServerTransactionId] = {}
        self._merge_index: dict[tuple[str, ...], ServerTransactionId] = {}
        self._heap = TimerHeap()
        # Completed non-INVITE UDP server records in Timer J order (one J for all).
        self._completed: deque[_CompletedServerTxn] = deque()
        self._outbox: list[tuple[SipMessage, Target]] = []
        self._events: deque[TransactionEvent] = deque()

    # ---------------------------------------------------------------- queries

    @property
    def timers(self) -> TimerConfig:
        return self._config

    @property
    def transaction_count(self) -> int:
        """Live client plus server transactions."""
        return len(self._clients) + len(self._servers)

    def has_transaction(self, txn: TransactionId) -> bool:
        if isinstance(txn, ClientTransactionId):
            return txn in self._clients
        return txn in self._servers

    def new_branch(self) -> str:
        """A fresh RFC 3261 branch (§8.1.1.7): the cookie and 80 random bits."""
        return f"{MAGIC_COOKIE}{self._rng.getrandbits(80):020x}"

    # ------------------------------------------------------------- TU -> layer

    def send_request(
        self, request: SipRequest, target: Target, *, now: float
    ) -> ClientTransactionId:
        """Start a client transaction for ``request`` towards ``target``.

        Sets the top Via branch if it has none (§8.1.1.7). INVITE starts the
        §17.1.1 machine (timers A, B), any other method §17.1.2 (E, F). An
        ACK (for a 2xx: the TU's) is sent once, without a transaction; the
        returned id names nothing then. Raises LocalProtocolError when the
        request has no Via, its CSeq method differs from its method, or a
        transaction with the same branch and method is still alive. The
        layer keeps ``request`` and retransmits that object: the TU must not
        change it afterwards (a proxy forwards a copy).
        """
        try:
            via = request.top_via
            cseq = request.cseq
        except MalformedMessageError as exc:
            raise LocalProtocolError(f"request needs a Via and a CSeq: {exc}") from exc
        if cseq.method != request.method:
            raise LocalProtocolError("CSeq method differs from the request method")
        branch = via.branch
        if not branch:
            branch = self.new_branch()
            request.headers.remove_first("Via")
            request.headers.prepend("Via", str(via.with_params(branch=branch)))
        txn_id = ClientTransactionId(branch, request.method)
        if request.method == "ACK":
            self._outbox.append((request, target))
            return txn_id
        if txn_id in self._clients:
            raise LocalProtocolError(f"client transaction {branch} {request.method} exists")
        invite = request.method == "INVITE"
        txn = _ClientTxn(
            id=txn_id,
            request=request,
            target=target,
            invite=invite,
            reliable=target.transport.reliable,
            state=_State.CALLING if invite else _State.TRYING,
            interval=self._config.t1,
        )
        self._clients[txn_id] = txn
        self._outbox.append((request, target))
        if not txn.reliable:
            self._heap.arm(txn, "A" if invite else "E", now + self._config.t1)
        if invite:
            self._heap.arm(txn, "B", now + self._config.timer_b)
        else:
            self._heap.arm(txn, "F", now + self._config.timer_f)
        return txn_id

    def send_stateless(self, message: SipMessage, target: Target) -> None:
        """Queue ``message`` for ``target`` outside any transaction: a 2xx or
        ACK a proxy forwards (§16.7, §16.11), a TU's 2xx retransmission after
        its transaction ended."""
        self._outbox.append((message, target))

    def send_response(
        self,
        response: SipResponse,
        *,
        now: float,
        server_txn: ServerTransactionId | None = None,
    ) -> None:
        """Send ``response`` through the server transaction of its request.

        The transaction is ``server_txn`` or the one the response's top Via
        and CSeq name. A response for no live transaction, or one the state
        does not allow (a second final response), is dropped (and logged).
        State changes are those of §17.2.1 (1xx: stay in Proceeding; 2xx:
        Accepted, RFC 6026; 300-699: Completed, G and H) and §17.2.2.
        """
        try:
            txn_id = server_txn if server_txn is not None else self._server_id_of(response)
        except MalformedMessageError as exc:
            _log.debug("response without Via/CSeq dropped: %s", exc)
            return
        txn = self._servers.get(txn_id) if txn_id is not None else None
        if txn is None:
            _log.debug("response %d for no server transaction dropped", response.status)
            return
        if isinstance(txn, _ServerTxn) and txn.invite:
            self._invite_server_send(txn, response, now)
        else:
            self._non_invite_server_send(txn, response, now)

    def cancel(self, client_txn: ClientTransactionId, *, now: float) -> ClientTransactionId | None:
        """CANCEL the INVITE of ``client_txn`` (§9.1); returns the CANCEL's
        client transaction id, or None when there is nothing to cancel (no
        such INVITE, or it already has a final response).

        The CANCEL is built with :func:`build_cancel` and goes to the
        INVITE's target. Before a provisional response has arrived it is held
        back and sent when one does (§9.1); if a final response comes first
        it is never sent. An INVITE still without a final response 64*T1
        after its CANCEL went out terminates with TransactionTimedOut.
        """
        txn = self._clients.get(client_txn)
        if txn is None or not txn.invite:
            return None
        if txn.state not in (_State.CALLING, _State.PROCEEDING):
            return None
        cancel_id = ClientTransactionId(client_txn.branch, "CANCEL")
        if not txn.cancel_requested:
            txn.cancel_requested = True
            if txn.state is _State.PROCEEDING:
                self._send_cancel(txn, now)
        return cancel_id

    # -------------------------------------------------------- network -> layer

    def receive_message(self, msg: SipMessage, source: Source, *, now: float) -> None:
        """Match a received message to its transaction (§17.1.3, §17.2.3) and
        run that transaction's state machine, or start a server transaction
        for a new request. Messages whose Via or CSeq cannot be parsed are
        dropped: the transport validates requests before (message.py's
        ``validate_request``) and answers what deserves an answer."""
        try:
            if isinstance(msg, SipRequest):
                self._receive_request(msg, source, now)
            else:
                self._receive_response(msg, source, now)
        except MalformedMessageError as exc:
            _log.debug("unmatchable message dropped: %s", exc)

    def transport_failed(self, txn: TransactionId, *, now: float) -> None:
        """The driver could not send a message of ``txn`` (§17.1.4, §17.2.4:
        after trying the alternatives RFC 3263 gives): the TU hears
        TransportFailed and the transaction terminates."""
        record: _ClientTxn | _AnyServerTxn | None
        if isinstance(txn, ClientTransactionId):
            record = self._clients.get(txn)
        else:
            record = self._servers.get(txn)
        if record is None:
            return
        self._events.append(TransportFailed(txn=txn))
        self._terminate(record)

    def destination_unreachable(self, remote: Endpoint, *, now: float) -> None:
        """An ICMP unreachable for a datagram sent to ``remote`` (§18.4: a
        transport error, RFC 3263 §4.3): :meth:`transport_failed` for every
        UDP client transaction to ``remote`` still waiting for a final
        response. Others (final received, streams) are not concerned, nor
        transactions over a pinned flow (a registered UA's NAT mapping): a
        NAT that lost the mapping for a moment answers ICMP, and the UA's
        next keepalive restores it before the retransmissions end."""
        waiting = (_State.CALLING, _State.TRYING, _State.PROCEEDING)
        for record in list(self._clients.values()):
            if (
                not record.reliable
                and record.target.flow is None
                and record.target.remote == remote
                and record.state in waiting
            ):
                self.transport_failed(record.id, now=now)

    def transport_failed_for(self, message: SipMessage, *, now: float) -> None:
        """:meth:`transport_failed` for the transaction ``message`` (as
        returned by :meth:`messages_to_send`) belongs to, if any."""
        try:
            if isinstance(message, SipRequest):
                method = "INVITE" if message.method == "ACK" else message.method
                branch = message.top_via.branch
                if branch is None:
                    return
                self.transport_failed(ClientTransactionId(branch, method), now=now)
            else:
                txn_id = self._server_id_of(message)
                if txn_id is not None:
                    self.transport_failed(txn_id, now=now)
        except MalformedMessageError:
            return

    # ------------------------------------------------------ layer -> outside

    def messages_to_send(self) -> list[tuple[SipMessage, Target]]:
        """Everything queued for the network since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def next_event(self) -> TransactionEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction timer, or None."""
        deadline = self._heap.next_deadline()
        first = self._first_completed()
        if first is not None and (deadline is None or first.expires < deadline):
            return first.expires
        return deadline

    def handle_timer(self, *, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        heap = self._heap
        while True:
            first = self._first_completed()
            deadline = heap.next_deadline()
            if (
                first is not None
                and first.expires <= now
                and (deadline is None or first.expires <= deadline)
            ):
                self._completed.popleft()
                self._terminate(first)  # Timer J (§17.2.2)
                continue
            due = heap.pop_due(now)
            if due is None:
                return
            owner, name = due
            if isinstance(owner, _ClientTxn):
                self._client_timer(owner, name, now)
            elif isinstance(owner, _ServerTxn):
                self._server_timer(owner, name, now)

    def _first_completed(self) -> _CompletedServerTxn | None:
        """The completed record whose Timer J is next; drops terminated ones."""
        completed = self._completed
        while completed:
            first = completed[0]
            if first.state is not _State.TERMINATED:
                return first
            completed.popleft()
        return None

    # ------------------------------------------------------ client machines

    def _receive_response(self, response: SipResponse, source: Source, now: float) -> None:
        branch = response.top_via.branch
        method = response.cseq.method
        txn = self._clients.get(ClientTransactionId(branch, method)) if branch else None
        if txn is None:
            self._events.append(StrayResponseReceived(response=response, source=source))
            return
        if txn.invite:
            self._invite_client_response(txn, response, source, now)
        else:
            self._non_invite_client_response(txn, response, source, now)

    def _pass_up(self, txn: _ClientTxn, response: SipResponse, source: Source) -> None:
        self._events.append(ResponseReceived(response=response, source=source, client_txn=txn.id))

    def _invite_client_response(
        self, txn: _ClientTxn, response: SipResponse, source: Source, now: float
    ) -> None:
        status = response.status
        heap = self._heap
        if txn.state in (_State.CALLING, _State.PROCEEDING):
            if status < 200:
                timer_c = self._config.timer_c
                if txn.state is _State.CALLING:
                    txn.state = _State.PROCEEDING
                    heap.cancel(txn, "A")
                    heap.cancel(txn, "B")
                    if timer_c is not None and not txn.cancel_requested:
                        heap.arm(txn, "C", now + timer_c)
                elif timer_c is not None and status > 100 and "C" in txn.timers:
                    heap.arm(txn, "C", now + timer_c)  # §16.7 step 2
                self._pass_up(txn, response, source)
                if txn.cancel_requested and "cancel" not in txn.timers:
                    self._send_cancel(txn, now)
                return
            # built first: a response without To is dropped before any change
            ack = build_ack(txn.request, response) if status >= 300 else None
            for name in ("A", "B", "C", "cancel"):
                heap.cancel(txn, name)
            self._pass_up(txn, response, source)
            if ack is None:
                txn.state = _State.ACCEPTED  # RFC 6026 §8.4
                heap.arm(txn, "M", now + self._config.timer_m)
                return
            txn.state = _State.COMPLETED
            txn.ack = ack
            self._outbox.append((ack, txn.target))
            if txn.reliable:
                self._terminate(txn)
            else:
                heap.arm(txn, "D", now + self._config.timer_d)
        elif txn.state is _State.ACCEPTED:
            if 200 <= status < 300:
                self._pass_up(txn, response, source)
        elif txn.state is _State.COMPLETED and status >= 300 and txn.ack is not None:
            self._outbox.append((txn.ack, txn.target))

    def _non_invite_client_response(
        self, txn: _ClientTxn, response: SipResponse, source: Source, now: float
    ) -> None:
        if txn.state not in (_State.TRYING, _State.PROCEEDING):
            return  # Completed absorbs retransmitted finals (§17.1.2.2)
        self._pass_up(txn, response, source)
        if response.status < 200:
            txn.state = _State.PROCEEDING
            return
        txn.state = _State.COMPLETED
        self._heap.cancel(txn, "E")
        self._heap.cancel(txn, "F")
        if txn.reliable:
            self._terminate(txn)
        else:
            self._heap.arm(txn, "K", now + self._config.t4)

    def _client_timer(self, txn: _ClientTxn, name: str, now: float) -> None:
        config = self._config
        if name == "A":  # §17.1.1.2: INVITE retransmission, doubling, no cap
            self._outbox.append((txn.request, txn.target))
            txn.interval *= 2
            self._heap.arm(txn, "A", now + txn.interval)
        elif name == "E":  # §17.1.2.2: doubling up to T2; T2 in Proceeding
            self._outbox.append((txn.request, txn.target))
            if txn.state is _State.PROCEEDING:
                txn.interval = config.t2
            else:
                txn.interval = min(2 * txn.interval, config.t2)
            self._heap.arm(txn, "E", now + txn.interval)
        elif name in ("B", "F", "cancel"):
            self._events.append(TransactionTimedOut(txn=txn.id, timer=name))
            self._terminate(txn)
        elif name == "C":
            self._events.append(TimerCExpired(client_txn=txn.id))
            if "cancel" not in txn.timers:
                self._heap.arm(txn, "cancel", now + config.timer_b)
        else:  # D, K, M: the wait for retransmissions is over
            self._terminate(txn)

    def _send_cancel(self, invite: _ClientTxn, now: float) -> None:
        cancel = build_cancel(invite.request)
        cancel_id = ClientTransactionId(invite.id.branch, "CANCEL")
        self._heap.cancel(invite, "C")
        self._heap.arm(invite, "cancel", now + self._config.timer_b)
        if cancel_id in self._clients:
            return
        self.send_request(cancel, invite.target, now=now)

    # ------------------------------------------------------ server machines

    def _receive_request(self, request: SipRequest, source: Source, now: float) -> None:
        via = request.top_via
        cseq = request.cseq
        method = request.method
        branch = via.branch
        legacy = not (branch and branch.startswith(MAGIC_COOKIE))
        if legacy:
            txn = self._match_legacy(request, via, cseq.seq)
        else:
            key_method = "INVITE" if method == "ACK" else method
            txn = self._servers.get(ServerTransactionId(branch or "", _sent_by(via), key_method))
        if method == "ACK":
            self._receive_ack(txn, request, source, now)
            return
        if txn is not None:
            self._retransmitted_request(txn)
            return
        txn_id = self._new_server_id(request, via, cseq.seq, legacy)
        merge_key: tuple[str, ...] | None = None
        if self._reject_merged and request.to.tag is None:
            merge_key = (request.from_.tag or "", request.call_id, str(cseq.seq), cseq.method)
        merged = merge_key is not None and merge_key in self._merge_index
        txn = _ServerTxn(
            id=txn_id,
            request=request,
            source=source,
            invite=method == "INVITE",
            reliable=source.transport.reliable,
            state=_State.PROCEEDING if method == "INVITE" else _State.TRYING,
            interval=self._config.t1,
        )
        if legacy:
            txn.response_key = self._response_key(
                request.call_id, cseq.seq, cseq.method, request, via
            )
            self._legacy_responses[txn.response_key] = txn_id
        if merge_key is not None and not merged:
            txn.merge_key = merge_key
            self._merge_index[merge_key] = txn_id
        self._servers[txn_id] = txn
        if merged:
            to_tag = f"{self._rng.getrandbits(64):016x}"  # §8.2.6.2: every final needs one
            loop = make_response(request, 482, to_tag=to_tag)
            self.send_response(loop, now=now, server_txn=txn_id)
            return
        cancelled: ServerTransactionId | None = None
        if method == "CANCEL":
            invite_id = ServerTransactionId(txn_id.branch, txn_id.sent_by, "INVITE", txn_id.legacy)
            invite = self._servers.get(invite_id)
            if invite is not None and invite.invite:
                cancelled = invite_id
        self._events.append(
            RequestReceived(
                request=request, source=source, server_txn=txn_id, cancelled_txn=cancelled
            )
        )
        if txn.invite and self._config.trying_delay is not None:
            if self._config.trying_delay <= 0:
                self._send_trying(txn, now)
            else:
                self._heap.arm(txn, "trying", now + self._config.trying_delay)

    @staticmethod
    def _legacy_key(request: SipRequest, via: Via, seq: int, to_tag: str) -> tuple[str, ...]:
        return (
            str(request.uri),
            to_tag,
            request.from_.tag or "",
            request.call_id,
            str(seq),
            str(via),
        )

    @staticmethod
    def _response_key(
        call_id: str, seq: int, method: str, msg: SipMessage, via: Via
    ) -> tuple[str, ...]:
        return (call_id, str(seq), method, msg.from_.tag or "", str(via))

    def _new_server_id(
        self, request: SipRequest, via: Via, seq: int, legacy: bool
    ) -> ServerTransactionId:
        if legacy:
            key = self._legacy_key(request, via, seq, request.to.tag or "")
            return ServerTransactionId("", "", request.method, key)
        return ServerTransactionId(via.branch or "", _sent_by(via), request.method)

    def _match_legacy(self, request: SipRequest, via: Via, seq: int) -> _AnyServerTxn | None:
        """§17.2.3 for requests without the cookie: an INVITE or non-INVITE
        matches on Request-URI, To tag, From tag, Call-ID, CSeq and top Via;
        an ACK matches its INVITE when its To tag is that of the response the
        transaction sent."""
        to_tag = request.to.tag or ""
        if request.method != "ACK":
            key = self._legacy_key(request, via, seq, to_tag)
            return self._servers.get(ServerTransactionId("", "", request.method, key))
        for invite_to_tag in dict.fromkeys((to_tag, "")):
            key = self._legacy_key(request, via, seq, invite_to_tag)
            txn = self._servers.get(ServerTransactionId("", "", "INVITE", key))
            if txn is not None and (txn.response_to_tag or "") == to_tag:
                return txn
        return None

    def _server_id_of(self, response: SipResponse) -> ServerTransactionId | None:
        via = response.top_via
        cseq = response.cseq
        branch = via.branch
        if branch and branch.startswith(MAGIC_COOKIE):
            return ServerTransactionId(branch, _sent_by(via), cseq.method)
        key = self._response_key(response.call_id, cseq.seq, cseq.method, response, via)
        return self._legacy_responses.get(key)

    def _retransmitted_request(self, txn: _AnyServerTxn) -> None:
        """§17.2.1/§17.2.2: resend the last response (the provisional in
        Proceeding, the final in Completed); Trying, Confirmed and RFC 6026
        Accepted absorb."""
        if txn.state in (_State.PROCEEDING, _State.COMPLETED) and txn.last_response is not None:
            self._send(txn, txn.last_response)

    def _receive_ack(
        self, txn: _AnyServerTxn | None, request: SipRequest, source: Source, now: float
    ) -> None:
        if txn is None or not isinstance(txn, _ServerTxn) or not txn.invite:
            self._events.append(AckReceived(request=request, source=source))
            return
        if txn.state is _State.ACCEPTED:  # RFC 6026 §8.7: the ACK is the TU's
            self._events.append(AckReceived(request=request, source=source, server_txn=txn.id))
        elif txn.state is _State.COMPLETED:
            txn.state = _State.CONFIRMED
            self._heap.cancel(txn, "G")
            self._heap.cancel(txn, "H")
            if txn.reliable:
                self._terminate(txn)
            else:
                self._heap.arm(txn, "I", now + self._config.t4)
        # Proceeding (an ACK before any final response) and Confirmed absorb

    def _send(self, txn: _AnyServerTxn, response: SipResponse) -> None:
        target = txn.response_target
        if target is None:
            assert isinstance(txn, _ServerTxn)  # a completed record has its target
            target = txn.response_target = self._response_target(response, txn.source)
        self._outbox.append((response, target))

    def _send_trying(self, txn: _ServerTxn, now: float) -> None:
        # make_response copies Timestamp into a 100 (§8.2.6.1) and adds no To tag
        self._invite_server_send(txn, make_response(txn.request, 100), now)

    def _invite_server_send(self, txn: _ServerTxn, response: SipResponse, now: float) -> None:
        status = response.status
        if txn.state is _State.ACCEPTED:
            if 200 <= status < 300:  # RFC 6026 §8.7: the TU's 2xx retransmissions
                self._send(txn, response)
            return
        if txn.state is not _State.PROCEEDING:
            _log.debug("response %d in %s dropped", status, txn.state.value)
            return
        self._heap.cancel(txn, "trying")
        self._send(txn, response)
        txn.last_response = response
        if status < 200:
            return
        if txn.response_key is not None:  # RFC 2543 ACK matching needs it
            txn.response_to_tag = self._to_tag(response)
        if status < 300:
            txn.state = _State.ACCEPTED
            self._heap.arm(txn, "L", now + self._config.timer_l)
            return
        txn.state = _State.COMPLETED
        if not txn.reliable:
            txn.interval = self._config.t1
            self._heap.arm(txn, "G", now + txn.interval)
        self._heap.arm(txn, "H", now + self._config.timer_h)

    def _non_invite_server_send(
        self, txn: _AnyServerTxn, response: SipResponse, now: float
    ) -> None:
        if not isinstance(txn, _ServerTxn) or txn.state not in (_State.TRYING, _State.PROCEEDING):
            _log.debug("response %d in %s dropped", response.status, txn.state.value)
            return
        self._send(txn, response)
        txn.last_response = response
        if response.status < 200:
            txn.state = _State.PROCEEDING
            return
        txn.state = _State.COMPLETED
        if txn.reliable:
            self._terminate(txn)
            return
        assert txn.response_target is not None  # set by _send
        completed = _CompletedServerTxn(
            txn, response, txn.response_target, now + self._config.timer_j
        )
        txn.state = _State.TERMINATED  # replaced: its timers are stale now
        self._servers[txn.id] = completed
        self._completed.append(completed)

    @staticmethod
    def _to_tag(response: SipResponse) -> str | None:
        try:
            return response.to.tag
        except MalformedMessageError:
            return None

    def _server_timer(self, txn: _ServerTxn, name: str, now: float) -> None:
        if name == "trying":
            if txn.state is _State.PROCEEDING and txn.last_response is None:
                self._send_trying(txn, now)
        elif name == "G":  # §17.2.1: resend the final, doubling up to T2
            if txn.last_response is not None:
                self._send(txn, txn.last_response)
            txn.interval = min(2 * txn.interval, self._config.t2)
            self._heap.arm(txn, "G", now + txn.interval)
        elif name == "H":
            self._events.append(TransactionTimedOut(txn=txn.id, timer="H"))
            self._terminate(txn)
        else:  # I, J, L
            self._terminate(txn)

    # ---------------------------------------------------------------- ending

    def _terminate(self, txn: _ClientTxn | _AnyServerTxn) -> None:
        txn.state = _State.TERMINATED
        if not isinstance(txn, _CompletedServerTxn):
            txn.timers.clear()
        if isinstance(txn, _ClientTxn):
            self._clients.pop(txn.id, None)
        else:
            self._servers.pop(txn.id, None)
            if txn.response_key is not None:
                self._legacy_responses.pop(txn.response_key, None)
            if txn.merge_key is not None:
                self._merge_index.pop(txn.merge_key, None)
        self._events.append(TransactionTerminated(txn=txn.id))
