"""The SIP user agent core: INVITE calls over transactions and dialogs, sans-IO.

Theory of operation
-------------------
A :class:`UserAgentCore` is the TU of RFC 3261 §8 for one user: it owns a
:class:`~natkit.sip.transaction.TransactionLayer` and a
:class:`~natkit.sip.dialog.DialogTable` and keeps one call per Call-ID. The
driver feeds it every SIP message with :meth:`~UserAgentCore.receive_message`,
sends :meth:`~UserAgentCore.messages_to_send`, wakes it at
:meth:`~UserAgentCore.get_timer` and drains :meth:`~UserAgentCore.next_event`
(STYLE.md's core shape). Commands only queue work.

As caller (UAC, §13.2): :meth:`~UserAgentCore.invite` sends an INVITE with
our SDP offer (built from :class:`~natkit.sdp.LocalCapabilities`).
Provisionals become :class:`CallProgressed`; a 401/407 is answered once per
challenge with :class:`~natkit.sip.digest.DigestClient` in a new INVITE
(same Call-ID and From tag, CSeq + 1, new branch: §22.2, §8.1.3.5); the 2xx
makes the dialog (§12.1.2) and is ACKed by the core (§13.2.2.4; every
retransmitted 2xx is ACKed again), and :class:`CallEstablished` carries
:func:`~natkit.sdp.negotiated_media`. :meth:`~UserAgentCore.hangup` CANCELs
an unanswered INVITE (§9.1: the transaction layer holds the CANCEL until a
provisional arrived) and BYEs an established call (§15.1.1). The CANCEL race
— a 2xx that crosses our CANCEL — is settled as §9.1 says: ACK, then BYE. A
2xx with an answer we cannot use is ACKed and BYEd (488 in the event).

As callee (UAS, §13.3): a new INVITE is validated (message.py's
``validate_request``), its SDP parsed — 400 when it does not parse, 488 when
it is not usable (RFC 3261 §13.3.1.1, RFC 3264 §6), the core keeps serving
— answered 180 at once (``auto_ringing``) and reported as
:class:`CallOffered`. :meth:`~UserAgentCore.accept` answers the offer and
sends the 2xx, which the core retransmits (T1 doubling to T2, §13.3.1.4)
until the ACK, giving up with a BYE after 64*T1. A CANCEL gets 200 and the
INVITE 487 (§9.2). A BYE ends the call with 200 (§15.1.2).

Within a call either side may re-offer (§14) with a re-INVITE or an UPDATE
(RFC 3311 §5; it is how RFC 6314 §5.2.1.2 sends the ICE updated offer after
nomination): received ones are answered with the call's capabilities and the
previous description (RFC 3264 §8), bad SDP gets 488/400 and leaves the
session as it was, and :class:`MediaUpdated` reports the new media.
OPTIONS is answered 200 with Allow/Accept/Supported (§11.2); other methods
405 (with Allow) or 501. Session timers (RFC 4028) and reliable provisionals
(RFC 3262) are not implemented.
"""

from __future__ import annotations

import contextlib
import enum
import ipaddress
import logging
from collections import deque
from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.sdp.attributes import Attribute
from natkit.sdp.codec import parse_sdp, serialize_sdp
from natkit.sdp.model import SessionDescription
from natkit.sdp.offer_answer import (
    LocalCapabilities,
    NegotiatedStream,
    answer,
    build_offer,
    has_accepted_media,
    negotiated_media,
)
from natkit.sip.dialog import Dialog, DialogState, DialogTable
from natkit.sip.digest import DigestClient
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import Via
from natkit.sip.message import (
    KNOWN_METHODS,
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    unsupported_options,
    validate_request,
)
from natkit.sip.timers import TimerConfig
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    AckReceived,
    ClientTransactionId,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from natkit.sip.uri import SipUri, Uri
from natkit.sip.via_routing import client_via
from natkit.ua.events import (
    CallEnded,
    CallEstablished,
    CallOffered,
    CallProgressed,
    CallRole,
    MediaUpdated,
    OfferRejected,
    OptionsAnswered,
    UserAgentEvent,
)
from natkit.ua.media import with_media_attributes

__all__ = ["ALLOWED_METHODS", "CallState", "UserAgentConfig", "UserAgentCore"]

_log = logging.getLogger(__name__)

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "UPDATE")
"""What the UA serves (the Allow header, RFC 3261 §20.5)."""

_ALLOW = ", ".join(ALLOWED_METHODS)
_SDP = "application/sdp"
_MAX_AUTH_ATTEMPTS = 2
_SUPPORTED = ("outbound", "path", "gruu")


class CallState(enum.Enum):
    """Where a call is (RFC 3261 §13 from the TU's side)."""

    CALLING = "calling"  # INVITE sent, nothing back yet
    PROCEEDING = "proceeding"  # a provisional came back (or we sent one)
    CANCELLING = "cancelling"  # we CANCELled, the INVITE's final is awaited
    ESTABLISHED = "established"  # a 2xx was sent or received
    ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserAgentConfig:
    """One user's UA. ``aor`` goes in From, ``contact`` in Contact, ``sent_by``
    in Via (send from the socket that listens there, RFC 3581).
    ``outbound``: where every request goes (the registrar/edge proxy the UA
    registered with, RFC 5626 §5; a pinned flow keeps it on that
    connection); None sends each to the host of its URI or route (an IP
    literal: DNS is the driver's, RFC 3263). ``route``: the Route set of
    out-of-dialog requests (an outbound proxy, ``;lr``). ``username`` and
    ``password`` answer 401/407 challenges. ``max_calls`` bounds the calls
    kept (486 Busy Here beyond, §21.4.24). ``call_timeout``: seconds an
    unanswered incoming call may ring before it is refused with 480.
    """

    aor: SipUri
    contact: SipUri
    sent_by: Endpoint
    transport: SipTransport = SipTransport.UDP
    outbound: Target | None = None
    route: tuple[SipUri, ...] = ()
    username: str | None = None
    password: str | None = None
    display_name: str | None = None
    auto_ringing: bool = True
    max_calls: int = 16
    call_timeout: float = 180.0
    timers: TimerConfig = field(default_factory=TimerConfig)
    user_agent: str | None = "natkit"
    rng: Rng = field(default_factory=default_rng)


@dataclass(eq=False, slots=True)
class _Retransmit:
    """A 2xx to an INVITE of ours awaiting its ACK (RFC 3261 §13.3.1.4)."""

    call_id: str
    server_txn: ServerTransactionId
    response: SipResponse
    interval: float
    next_at: float
    deadline: float


@dataclass(eq=False, slots=True)
class _Outgoing:
    """An in-dialog (or out-of-dialog OPTIONS) client transaction of ours."""

    call_id: str
    method: str
    request: SipRequest
    offer: SessionDescription | None = None
    answered: bool = False
    ack: SipRequest | None = None


@dataclass(eq=False, slots=True)
class _Call:
    call_id: str
    role: CallRole
    state: CallState
    invite: SipRequest
    local_tag: str
    caps: LocalCapabilities | None = None
    invite_txn: ClientTransactionId | None = None
    server_txn: ServerTransactionId | None = None
    dialog: Dialog | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    ack: SipRequest | None = None
    auth_attempts: int = 0
    ring_deadline: float | None = None
    offer_in_2xx: SessionDescription | None = None  # offerless INVITE: our offer, answer in ACK
    offer_in_2xx_method: str = "INVITE"
    media_attributes: tuple[Attribute, ...] = ()  # added to every SDP the core writes


class UserAgentCore:
    """Calls of one user agent; see the module docstring."""

    def __init__(self, config: UserAgentConfig, layer: TransactionLayer | None = None) -> None:
        self.config = config
        self._rng = config.rng
        self.layer = (
            layer
            if layer is not None
            else TransactionLayer(timers=config.timers, rng=config.rng, reject_merged_requests=True)
        )
        self._dialogs = DialogTable()
        self._calls: dict[str, _Call] = {}
        self._by_server_txn: dict[ServerTransactionId, str] = {}
        self._by_client_txn: dict[ClientTransactionId, str] = {}
        self._outgoing: dict[ClientTransactionId, _Outgoing] = {}
        self._retransmits: dict[tuple[str, int], _Retransmit] = {}
        self._digest = (
            DigestClient(config.username, config.password, rng=config.rng)
            if config.username is not None and config.password is not None
            else None
        )
        self._events: deque[UserAgentEvent] = deque()

    # ---------------------------------------------------------------- queries

    @property
    def call_ids(self) -> list[str]:
        """Calls not yet ended."""
        return list(self._calls)

    def call_state(self, call_id: str) -> CallState:
        call = self._calls.get(call_id)
        return CallState.ENDED if call is None else call.state

    def dialog(self, call_id: str) -> Dialog | None:
        call = self._calls.get(call_id)
        return None if call is None else call.dialog

    # ------------------------------------------------------------ commands

    def invite(
        self,
        uri: Uri,
        caps: LocalCapabilities,
        *,
        now: float,
        to: str | None = None,
        offer: SessionDescription | None = None,
    ) -> str:
        """Call ``uri`` (RFC 3261 §13.2.1) with an offer from ``caps`` (or
        ``offer`` as given, e.g. with ICE attributes added); returns the
        Call-ID naming the call. ``to`` is the To header (default ``<uri>``)."""
        call_id = f"{self._rng.getrandbits(96):024x}@natkit"
        tag = self._new_tag()
        sdp = offer if offer is not None else build_offer(caps)
        headers = Headers()
        headers.add("Via", str(self._via()))
        headers.add("Max-Forwards", "70")
        for route in self.config.route:
            headers.add("Route", f"<{route.with_params(lr=None)}>")
        headers.add("From", f"{self._from_party()};tag={tag}")
        headers.add("To", to if to is not None else f"<{uri}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 INVITE")
        headers.add("Contact", f"<{self.config.contact}>")
        self._common_headers(headers)
        headers.add("Content-Type", _SDP)
        request = SipRequest("INVITE", uri, headers, serialize_sdp(sdp))
        call = _Call(
            call_id=call_id,
            role=CallRole.CALLER,
            state=CallState.CALLING,
            invite=request,
            local_tag=tag,
            caps=caps,
            local_sdp=sdp,
        )
        self._calls[call_id] = call
        self._send_invite(call, request, now)
        return call_id

    def accept(
        self,
        call_id: str,
        caps: LocalCapabilities,
        *,
        now: float,
        sdp: SessionDescription | None = None,
    ) -> bool:
        """Answer an offered call with 200 (RFC 3261 §13.3.1.4): our answer
        to its offer from ``caps`` (or ``sdp`` as given), or our offer when
        the INVITE had none. An offer we cannot use (no common stream, RFC
        3264 §6) is refused with 488 instead; returns whether the call was
        accepted."""
        call = self._calls.get(call_id)
        if call is None or call.role is not CallRole.CALLEE or call.dialog is not None:
            return False
        call.caps = caps
        offer = call.remote_sdp
        if offer is None:
            local = sdp if sdp is not None else build_offer(caps)
        else:
            local = sdp if sdp is not None else answer(offer, caps)
            streams = self._negotiate(offer, local, local_is_offerer=False)
            if streams is None or not has_accepted_media(local):
                self.reject(call_id, 488, now=now)
                return False
        response = self._ok(call.invite, call.local_tag, local)
        try:
            dialog = Dialog.from_uas(call.invite, response, rng=self._rng)
        except MalformedMessageError:
            self.reject(call_id, 400, now=now)
            return False
        dialog.response_sent(call.invite, response)
        call.dialog = dialog
        self._dialogs.add(dialog)
        call.local_sdp = local
        call.state = CallState.ESTABLISHED
        call.ring_deadline = None
        assert call.server_txn is not None
        self._send_2xx(call, call.server_txn, response, now)
        if offer is None:
            call.offer_in_2xx = local
            call.offer_in_2xx_method = "INVITE"
            return True
        self._events.append(
            CallEstablished(
                call_id=call_id,
                role=call.role,
                local_sdp=local,
                remote_sdp=offer,
                streams=self._negotiate(offer, local, local_is_offerer=False) or (),
            )
        )
        return True

    def set_media_attributes(self, call_id: str, attributes: tuple[Attribute, ...]) -> None:
        """Lines to add to the audio m-line of every description the core
        writes for this call from now on (re-offers and answers to re-offers):
        the ICE attributes of RFC 8839 §5, which must stay in every later
        offer and answer of the session (§4.4.1.2)."""
        call = self._calls.get(call_id)
        if call is not None:
            call.media_attributes = attributes

    def _decorate(self, call: _Call, sdp: SessionDescription) -> SessionDescription:
        return with_media_attributes(sdp, call.media_attributes)

    def reject(self, call_id: str, status: int, *, now: float) -> None:
        """Refuse an offered call with ``status`` (4xx-6xx, RFC 3261 §13.3.1.3)."""
        call = self._calls.get(call_id)
        if call is None or call.server_txn is None or call.dialog is not None:
            return
        if not 300 <= status <= 699:
            raise LocalProtocolError("a call is refused with a 3xx-6xx status")
        response = make_response(call.invite, status, to_tag=call.local_tag)
        self.layer.send_response(response, now=now, server_txn=call.server_txn)
        self._end(call, f"refused with {status}", by_remote=False, status=status)

    def hangup(self, call_id: str, *, now: float) -> None:
        """End a call: CANCEL while our INVITE is unanswered (§9.1), BYE once
        it is established (§15.1.1), 603 Decline while an offered call rings."""
        call = self._calls.get(call_id)
        if call is None:
            return
        if call.dialog is not None and not call.dialog.terminated:
            self._send_bye(call, now)
            self._end(call, "hung up", by_remote=False)
        elif call.role is CallRole.CALLEE:
            self.reject(call_id, 603, now=now)
        elif call.invite_txn is not None and call.state is not CallState.CANCELLING:
            if self.layer.cancel(call.invite_txn, now=now) is not None:
                call.state = CallState.CANCELLING
            else:
                self._end(call, "hung up", by_remote=False)
        elif call.invite_txn is None:
            self._end(call, "hung up", by_remote=False)

    def reinvite(
        self,
        call_id: str,
        caps: LocalCapabilities,
        *,
        now: float,
        offer: SessionDescription | None = None,
    ) -> bool:
        """Send a re-offer in a re-INVITE (RFC 3261 §14.1, RFC 3264 §8);
        False when the call cannot take one now (not established, or an
        INVITE is in progress either way: §14.1)."""
        return self._reoffer(call_id, "INVITE", caps, offer, now)

    def update(
        self,
        call_id: str,
        caps: LocalCapabilities,
        *,
        now: float,
        offer: SessionDescription | None = None,
    ) -> bool:
        """Send a re-offer in an UPDATE (RFC 3311 §5.1), e.g. the ICE updated
        offer of RFC 6314 §5.2.1.2; False when the call has no dialog."""
        return self._reoffer(call_id, "UPDATE", caps, offer, now)

    def options(self, uri: Uri, *, now: float) -> str:
        """Send OPTIONS to ``uri`` (RFC 3261 §11.1); returns the id its
        :class:`OptionsAnswered` carries."""
        call_id = f"{self._rng.getrandbits(96):024x}@natkit"
        headers = Headers()
        headers.add("Via", str(self._via()))
        headers.add("Max-Forwards", "70")
        for route in self.config.route:
            headers.add("Route", f"<{route.with_params(lr=None)}>")
        headers.add("From", f"{self._from_party()};tag={self._new_tag()}")
        headers.add("To", f"<{uri}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", "1 OPTIONS")
        headers.add("Accept", _SDP)
        self._common_headers(headers)
        request = SipRequest("OPTIONS", uri, headers)
        txn = self.layer.send_request(request, self._target_for(uri), now=now)
        self._outgoing[txn] = _Outgoing(call_id=call_id, method="OPTIONS", request=request)
        return call_id

    # ------------------------------------------------------ driver interface

    def receive_message(self, msg: SipMessage, source: Source, *, now: float) -> None:
        """A message from the network (the transport validated its framing)."""
        self.layer.receive_message(msg, source, now=now)
        self._drain(now)

    def send_failed(self, message: SipMessage, *, now: float) -> None:
        """The driver could not send ``message`` (RFC 3261 §17.1.4, §8.1.3.1)."""
        self.layer.transport_failed_for(message, now=now)
        self._drain(now)

    def messages_to_send(self) -> list[tuple[SipMessage, Target]]:
        return self.layer.messages_to_send()

    def next_event(self) -> UserAgentEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [self.layer.get_timer()]
        for r in self._retransmits.values():
            deadlines.append(min(r.next_at, r.deadline))
        deadlines.extend(c.ring_deadline for c in self._calls.values())
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None

    def handle_timer(self, *, now: float) -> None:
        self.layer.handle_timer(now=now)
        for key, r in list(self._retransmits.items()):
            if now >= r.deadline:
                del self._retransmits[key]
                call = self._calls.get(r.call_id)
                if call is not None:  # §13.3.1.4: no ACK, the session ends
                    self._send_bye(call, now)
                    self._end(call, "no ACK for our 2xx", by_remote=True, status=408)
            elif now >= r.next_at:
                self.layer.send_response(r.response, now=now, server_txn=r.server_txn)
                r.interval = min(2 * r.interval, self.config.timers.t2)
                r.next_at = now + r.interval
        for call in list(self._calls.values()):
            if call.ring_deadline is not None and now >= call.ring_deadline:
                call.ring_deadline = None
                self.reject(call.call_id, 480, now=now)
        self._drain(now)

    # ------------------------------------------------------------- internals

    def _drain(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            match event:
                case RequestReceived():
                    self._request(event, now)
                case AckReceived(request=request):
                    self._ack(request, now)
                case ResponseReceived(response=response, client_txn=txn):
                    self._response(txn, response, now)
                case TransactionTimedOut(txn=ClientTransactionId() as txn):
                    self._client_failed(txn, 408, "timed out", now)
                case TransportFailed(txn=ClientTransactionId() as txn):
                    self._client_failed(txn, 503, "could not be sent", now)
                case TransactionTerminated(txn=txn):
                    if isinstance(txn, ClientTransactionId):
                        self._outgoing.pop(txn, None)
                        self._by_client_txn.pop(txn, None)
                    else:
                        self._by_server_txn.pop(txn, None)
                case _:
                    pass
        for call_id in [c for c, call in self._calls.items() if call.state is CallState.ENDED]:
            del self._calls[call_id]

    def _new_tag(self) -> str:
        return f"{self._rng.getrandbits(64):016x}"

    def _via(self) -> Via:
        return client_via(self.config.transport, self.config.sent_by, self._rng)

    def _from_party(self) -> str:
        name = self.config.display_name
        return f'"{name}" <{self.config.aor}>' if name else f"<{self.config.aor}>"

    def _common_headers(self, headers: Headers) -> None:
        headers.add("Allow", _ALLOW)
        headers.add("Supported", "outbound")
        if self.config.user_agent:
            headers.add("User-Agent", self.config.user_agent)

    def _target_for(self, uri: Uri) -> Target:
        """Where a request for ``uri`` goes: the outbound target, else the
        URI's own host and port (an IP literal, RFC 3263 §4 left to DNS)."""
        if self.config.outbound is not None:
            return self.config.outbound
        if not isinstance(uri, SipUri):
            raise LocalProtocolError(f"no route to {uri}")
        try:
            ipaddress.ip_address(uri.host.strip("[]"))
        except ValueError:
            raise LocalProtocolError(f"{uri.host} is not an IP address; resolve it first") from None
        transport = SipTransport.from_via(uri.transport or "") or self.config.transport
        port = uri.port if uri.port is not None else (5061 if transport.secure else 5060)
        return Target(transport, Endpoint.of(uri.host.strip("[]"), port))

    def _dialog_target(self, dialog: Dialog) -> Target:
        return self._target_for(dialog.next_hop)

    def _send_invite(self, call: _Call, request: SipRequest, now: float) -> None:
        call.invite = request
        try:
            txn = self.layer.send_request(request, self._target_for(request.uri), now=now)
        except LocalProtocolError as exc:
            call.invite_txn = None
            self._end(call, str(exc), by_remote=False, status=503)
            return
        call.invite_txn = txn
        self._by_client_txn[txn] = call.call_id

    def _ok(self, request: SipRequest, to_tag: str, sdp: SessionDescription) -> SipResponse:
        headers: list[tuple[str, str]] = [("Contact", f"<{self.config.contact}>")]
        headers.append(("Allow", _ALLOW))
        headers.append(("Supported", "outbound"))
        if self.config.user_agent:
            headers.append(("Server", self.config.user_agent))
        headers.append(("Content-Type", _SDP))
        return make_response(
            request,
            200,
            to_tag=to_tag,
            headers=headers,
            body=serialize_sdp(sdp),
            copy_record_route=True,
        )

    def _send_2xx(
        self, call: _Call, server_txn: ServerTransactionId, response: SipResponse, now: float
    ) -> None:
        self.layer.send_response(response, now=now, server_txn=server_txn)
        if server_txn.branch and not self._reliable(call):
            t1 = self.config.timers.t1
            self._retransmits[(call.call_id, response.cseq.seq)] = _Retransmit(
                call_id=call.call_id,
                server_txn=server_txn,
                response=response,
                interval=t1,
                next_at=now + t1,
                deadline=now + 64 * t1,
            )

    def _reliable(self, call: _Call) -> bool:
        try:
            token = call.invite.top_via.transport
        except MalformedMessageError:
            return False
        transport = SipTransport.from_via(token)
        return transport is not None and transport.reliable

    def _send_bye(self, call: _Call, now: float) -> None:
        dialog = call.dialog
        if dialog is None or dialog.terminated:
            return
        try:
            bye = dialog.create_request("BYE", via=self._via())
            txn = self.layer.send_request(bye, self._dialog_target(dialog), now=now)
        except LocalProtocolError as exc:
            _log.info("no BYE for %s: %s", call.call_id, exc)
            return
        self._outgoing[txn] = _Outgoing(call_id=call.call_id, method="BYE", request=bye)

    def _end(self, call: _Call, reason: str, *, by_remote: bool, status: int | None = None) -> None:
        if call.state is CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.ring_deadline = None
        if call.dialog is not None:
            self._dialogs.discard(call.dialog)
        for key in [k for k in self._retransmits if k[0] == call.call_id]:
            del self._retransmits[key]
        self._events.append(
            CallEnded(call_id=call.call_id, reason=reason, by_remote=by_remote, status=status)
        )

    def _negotiate(
        self, offer: SessionDescription, answer_sdp: SessionDescription, *, local_is_offerer: bool
    ) -> tuple[NegotiatedStream, ...] | None:
        try:
            return negotiated_media(offer, answer_sdp, local_is_offerer=local_is_offerer)
        except MalformedMessageError as exc:
            _log.info("offer/answer unusable: %s", exc)
            return None

    def _reoffer(
        self,
        call_id: str,
        method: str,
        caps: LocalCapabilities,
        offer: SessionDescription | None,
        now: float,
    ) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.dialog is None or call.dialog.state is not DialogState.CONFIRMED:
            return False
        if offer is not None:
            sdp = offer
        else:
            sdp = self._decorate(call, build_offer(caps, previous=call.local_sdp))
        via = self._via()
        try:
            request = call.dialog.create_request(
                method,
                via=via,
                headers=[("Allow", _ALLOW), ("Content-Type", _SDP)],
                body=serialize_sdp(sdp),
            )
            txn = self.layer.send_request(request, self._dialog_target(call.dialog), now=now)
        except LocalProtocolError as exc:
            _log.info("no %s for %s: %s", method, call_id, exc)
            return False
        call.caps = caps
        self._outgoing[txn] = _Outgoing(call_id=call_id, method=method, request=request, offer=sdp)
        return True

    # --------------------------------------------------------- requests in

    def _respond(
        self,
        request: SipRequest,
        status: int,
        server_txn: ServerTransactionId,
        now: float,
        *,
        headers: list[tuple[str, str]] | None = None,
        to_tag: str | None = None,
    ) -> None:
        tag = to_tag if to_tag is not None else (self._new_tag() if status > 100 else None)
        response = make_response(request, status, to_tag=tag, headers=headers or [])
        self.layer.send_response(response, now=now, server_txn=server_txn)

    def _request(self, event: RequestReceived, now: float) -> None:
        request, txn = event.request, event.server_txn
        status = validate_request(request, supported=_SUPPORTED)
        if status is not None:
            extra: list[tuple[str, str]] = []
            if status == 420:
                extra.append(("Unsupported", ", ".join(unsupported_options(request, _SUPPORTED))))
            self._respond(request, status, txn, now, headers=extra)
            return
        method = request.method
        try:
            in_dialog = request.to.tag is not None
        except MalformedMessageError:
            self._respond(request, 400, txn, now)
            return
        if method == "CANCEL":
            self._cancel(request, txn, event.cancelled_txn, now)
        elif method == "OPTIONS":
            self._respond(
                request,
                200,
                txn,
                now,
                headers=[("Allow", _ALLOW), ("Accept", _SDP), ("Supported", "outbound")],
            )
        elif in_dialog:
            self._in_dialog(request, txn, now)
        elif method == "INVITE":
            self._new_invite(request, txn, now)
        elif method in ("BYE", "UPDATE"):
            self._respond(request, 481, txn, now)
        elif method in KNOWN_METHODS:
            self._respond(request, 405, txn, now, headers=[("Allow", _ALLOW)])
        else:
            self._respond(request, 501, txn, now, headers=[("Allow", _ALLOW)])

    def _parse_body(self, request: SipRequest) -> SessionDescription | None:
        """The SDP of ``request``, None without body. Raises
        MalformedMessageError (400 unparsable, 488 unusable, 415 not SDP)."""
        if not request.body:
            return None
        content_type = (request.content_type or _SDP).split(";")[0].strip().lower()
        if content_type != _SDP:
            raise MalformedMessageError(f"body of type {content_type}", error_code=415)
        sdp = parse_sdp(request.body)
        if not any(m.port != 0 for m in sdp.media):
            raise MalformedMessageError("no usable stream offered", error_code=488)
        return sdp

    def _new_invite(self, request: SipRequest, txn: ServerTransactionId, now: float) -> None:
        call_id = request.call_id
        if call_id in self._calls:  # a second INVITE of a call we have (a merge, a loop)
            self._respond(request, 482, txn, now)
            return
        if len(self._calls) >= self.config.max_calls:
            self._respond(request, 486, txn, now)
            return
        try:
            offer = self._parse_body(request)
            if not request.contacts:
                raise MalformedMessageError("INVITE without Contact", error_code=400)
        except MalformedMessageError as exc:
            status = exc.error_code if exc.error_code is not None else 400
            headers = [("Accept", _SDP)] if status == 415 else []
            self._respond(request, status, txn, now, headers=headers)
            return
        tag = self._new_tag()
        call = _Call(
            call_id=call_id,
            role=CallRole.CALLEE,
            state=CallState.PROCEEDING,
            invite=request,
            local_tag=tag,
            server_txn=txn,
            remote_sdp=offer,
            ring_deadline=now + self.config.call_timeout,
        )
        self._calls[call_id] = call
        self._by_server_txn[txn] = call_id
        if self.config.auto_ringing:
            ringing = make_response(
                request,
                180,
                to_tag=tag,
                headers=[("Contact", f"<{self.config.contact}>")],
                copy_record_route=True,
            )
            self.layer.send_response(ringing, now=now, server_txn=txn)
        self._events.append(
            CallOffered(
                call_id=call_id, caller=request.from_.uri, callee=request.to.uri, offer=offer
            )
        )

    def _cancel(
        self,
        request: SipRequest,
        txn: ServerTransactionId,
        cancelled: ServerTransactionId | None,
        now: float,
    ) -> None:
        call_id = self._by_server_txn.get(cancelled) if cancelled is not None else None
        call = self._calls.get(call_id) if call_id is not None else None
        if cancelled is None:
            self._respond(request, 481, txn, now)
            return
        self._respond(request, 200, txn, now, to_tag=call.local_tag if call is not None else None)
        if call is None or call.dialog is not None:
            return  # answered already: the CANCEL changes nothing (§9.2)
        terminated = make_response(call.invite, 487, to_tag=call.local_tag)
        self.layer.send_response(terminated, now=now, server_txn=cancelled)
        self._end(call, "cancelled by the caller", by_remote=True, status=487)

    def _call_of(self, dialog: Dialog) -> _Call | None:
        call = self._calls.get(dialog.id.call_id)
        return call if call is not None and call.dialog is dialog else None

    def _in_dialog(self, request: SipRequest, txn: ServerTransactionId, now: float) -> None:
        dialog = self._dialogs.match_request(request)
        call = self._call_of(dialog) if dialog is not None else None
        if dialog is None or call is None:
            self._respond(request, 481, txn, now)
            return
        method = request.method
        if method not in ("INVITE", "UPDATE", "BYE"):
            self._respond(request, 405, txn, now, headers=[("Allow", _ALLOW)])
            return
        if method == "UPDATE" and any(
            o.call_id == call.call_id and o.method == "UPDATE" for o in self._outgoing.values()
        ):
            self._respond(request, 491, txn, now)  # RFC 3311 §5.2: offers crossed
            return
        try:
            status = dialog.receive_request(request)
        except MalformedMessageError as exc:
            self._respond(request, exc.error_code or 400, txn, now)
            return
        if status is not None:
            headers = [("Retry-After", "1")] if status == 500 and method == "INVITE" else []
            self._respond(request, status, txn, now, headers=headers)
            return
        if method == "BYE":
            self._respond(request, 200, txn, now)
            self._end(call, "the other side hung up", by_remote=True)
            return
        self._reoffer_received(call, dialog, request, txn, now)

    def _reoffer_received(
        self, call: _Call, dialog: Dialog, request: SipRequest, txn: ServerTransactionId, now: float
    ) -> None:
        method = request.method
        try:
            offer = self._parse_body(request)
        except MalformedMessageError as exc:
            self._refuse_reoffer(call, dialog, request, txn, exc.error_code or 400, now)
            return
        caps = call.caps
        if caps is None:
            self._refuse_reoffer(call, dialog, request, txn, 488, now)
            return
        if offer is None:
            if method == "UPDATE":  # a target refresh only (RFC 3311 §5.2)
                self._respond(
                    request, 200, txn, now, headers=[("Contact", f"<{self.config.contact}>")]
                )
                return
            local = self._decorate(call, build_offer(caps, previous=call.local_sdp))
            response = self._ok(request, dialog.id.local_tag, local)
            dialog.response_sent(request, response)
            call.offer_in_2xx = local
            call.offer_in_2xx_method = method
            self._send_2xx(call, txn, response, now)
            return
        local = self._decorate(call, answer(offer, caps, previous=call.local_sdp))
        streams = self._negotiate(offer, local, local_is_offerer=False)
        if streams is None or not has_accepted_media(local):
            self._refuse_reoffer(call, dialog, request, txn, 488, now)
            return
        response = self._ok(request, dialog.id.local_tag, local)
        dialog.response_sent(request, response)
        if method == "INVITE":
            self._send_2xx(call, txn, response, now)
        else:
            self.layer.send_response(response, now=now, server_txn=txn)
        call.local_sdp, call.remote_sdp = local, offer
        self._events.append(
            MediaUpdated(
                call_id=call.call_id,
                method=method,
                local_sdp=local,
                remote_sdp=offer,
                streams=streams,
            )
        )

    def _refuse_reoffer(
        self,
        call: _Call,
        dialog: Dialog,
        request: SipRequest,
        txn: ServerTransactionId,
        status: int,
        now: float,
    ) -> None:
        """RFC 3261 §14.2: a re-offer we cannot take leaves the session as it was."""
        response = make_response(request, status, to_tag=dialog.id.local_tag)
        dialog.response_sent(request, response)
        self.layer.send_response(response, now=now, server_txn=txn)

    def _ack(self, request: SipRequest, now: float) -> None:
        try:
            key = (request.call_id, request.cseq.seq)
        except MalformedMessageError:
            return
        call = self._calls.get(key[0])
        if call is None or call.dialog is None:
            return
        if self._dialogs.match_request(request) is not call.dialog:
            return
        if self._retransmits.pop(key, None) is None and call.offer_in_2xx is None:
            return  # a retransmitted ACK
        offer = call.offer_in_2xx
        if offer is None:
            return
        call.offer_in_2xx = None
        method = call.offer_in_2xx_method
        try:
            remote = self._parse_body(request)
        except MalformedMessageError:
            remote = None
        streams = None if remote is None else self._negotiate(offer, remote, local_is_offerer=True)
        if remote is None or streams is None:  # §13.3.1.4 ... no usable answer: end the call
            self._send_bye(call, now)
            self._end(call, "ACK carried no usable answer", by_remote=False, status=488)
            return
        call.local_sdp, call.remote_sdp = offer, remote
        if request.cseq.seq == call.invite.cseq.seq and call.role is CallRole.CALLEE:
            self._events.append(
                CallEstablished(
                    call_id=call.call_id,
                    role=call.role,
                    local_sdp=offer,
                    remote_sdp=remote,
                    streams=streams,
                )
            )
        else:
            self._events.append(
                MediaUpdated(
                    call_id=call.call_id,
                    method=method,
                    local_sdp=offer,
                    remote_sdp=remote,
                    streams=streams,
                )
            )

    # -------------------------------------------------------- responses in

    def _response(self, txn: ClientTransactionId, response: SipResponse, now: float) -> None:
        call_id = self._by_client_txn.get(txn)
        if call_id is not None:
            call = self._calls.get(call_id)
            if call is not None and call.invite_txn == txn:
                self._invite_response(call, response, now)
            return
        out = self._outgoing.get(txn)
        if out is not None:
            self._outgoing_response(out, response, now)

    def _invite_response(self, call: _Call, response: SipResponse, now: float) -> None:
        status = response.status
        if status < 200:
            if call.state is CallState.CALLING:
                call.state = CallState.PROCEEDING
            self._events.append(
                CallProgressed(call_id=call.call_id, status=status, reason=response.reason)
            )
            return
        if status < 300:
            self._invite_2xx(call, response, now)
            return
        if (
            status in (401, 407)
            and self._digest is not None
            and call.state is not CallState.CANCELLING
        ) and call.auth_attempts < _MAX_AUTH_ATTEMPTS:
            retry = self._digest.authorize(call.invite, response)
            if retry is not None:
                call.auth_attempts += 1
                retry.headers.set("CSeq", f"{call.invite.cseq.seq + 1} INVITE")
                retry.headers.remove("Via")
                retry.headers.prepend("Via", str(self._via()))
                self._send_invite(call, retry, now)
                return
        cancelled = call.state is CallState.CANCELLING
        reason = "cancelled" if cancelled and status == 487 else f"{status} {response.reason}"
        self._end(call, reason, by_remote=not cancelled, status=status)

    def _invite_2xx(self, call: _Call, response: SipResponse, now: float) -> None:
        dialog = call.dialog
        try:
            tag = response.to.tag or ""
        except MalformedMessageError:
            return
        if dialog is not None:
            if tag == dialog.id.remote_tag:
                if call.ack is not None:  # a retransmitted 2xx: ACK it again
                    self.layer.send_request(call.ack, self._dialog_target(dialog), now=now)
                return
            self._ack_and_bye_fork(call, response, now)
            return
        if call.state is CallState.ENDED:
            return
        try:
            dialog = Dialog.from_uac(call.invite, response)
            ack = dialog.create_ack(call.invite, via=self._via())
            self.layer.send_request(ack, self._dialog_target(dialog), now=now)
        except (MalformedMessageError, LocalProtocolError) as exc:
            _log.info("2xx without a usable dialog dropped: %s", exc)
            return
        call.dialog = dialog
        call.ack = ack
        self._dialogs.add(dialog)
        if call.state is CallState.CANCELLING:  # §9.1: the 2xx crossed our CANCEL
            self._send_bye(call, now)
            self._end(call, "cancelled (answered as the CANCEL crossed)", by_remote=False)
            return
        call.state = CallState.ESTABLISHED
        remote = self._answer_of(response)
        offer = call.local_sdp
        streams = (
            None
            if remote is None or offer is None
            else self._negotiate(offer, remote, local_is_offerer=True)
        )
        if remote is None or offer is None or streams is None or not has_accepted_media(remote):
            self._send_bye(call, now)
            self._end(call, "the answer is unusable", by_remote=False, status=488)
            return
        call.remote_sdp = remote
        self._events.append(
            CallEstablished(
                call_id=call.call_id,
                role=call.role,
                local_sdp=offer,
                remote_sdp=remote,
                streams=streams,
            )
        )

    def _answer_of(self, response: SipResponse) -> SessionDescription | None:
        if not response.body:
            return None
        try:
            return parse_sdp(response.body)
        except MalformedMessageError as exc:
            _log.info("answer does not parse: %s", exc)
            return None

    def _ack_and_bye_fork(self, call: _Call, response: SipResponse, now: float) -> None:
        """§13.2.2.4: a 2xx from a second fork is ACKed, and that dialog ended."""
        try:
            fork = Dialog.from_uac(call.invite, response)
            via = self._via()
            ack = fork.create_ack(call.invite, via=via)
            target = self._dialog_target(fork)
            self.layer.send_request(ack, target, now=now)
            bye = fork.create_request("BYE", via=via)
            self.layer.send_request(bye, target, now=now)
        except (MalformedMessageError, LocalProtocolError) as exc:
            _log.info("second fork's 2xx dropped: %s", exc)

    def _outgoing_response(self, out: _Outgoing, response: SipResponse, now: float) -> None:
        status = response.status
        if out.method == "OPTIONS":
            if status >= 200:
                allow = tuple(m.strip() for m in response.headers.values("Allow"))
                self._events.append(
                    OptionsAnswered(request_id=out.call_id, status=status, allow=allow)
                )
            return
        call = self._calls.get(out.call_id)
        if call is None or call.dialog is None or status < 200:
            return
        dialog = call.dialog
        if out.answered:
            if out.ack is not None and 200 <= status < 300:
                self.layer.send_request(out.ack, self._dialog_target(dialog), now=now)
            return
        out.answered = True
        with contextlib.suppress(MalformedMessageError):
            dialog.receive_response(out.request, response)
        if out.method == "BYE":
            return
        if out.method == "INVITE" and 200 <= status < 300:
            via = self._via()
            out.ack = dialog.create_ack(out.request, via=via)
            self.layer.send_request(out.ack, self._dialog_target(dialog), now=now)
        if status >= 300:
            self._events.append(
                OfferRejected(call_id=call.call_id, method=out.method, status=status)
            )
            if dialog.terminated:
                self._end(call, f"{out.method} answered {status}", by_remote=True, status=status)
            return
        remote = self._answer_of(response)
        streams = (
            None
            if remote is None or out.offer is None
            else self._negotiate(out.offer, remote, local_is_offerer=True)
        )
        if remote is None or out.offer is None or streams is None:
            self._events.append(OfferRejected(call_id=call.call_id, method=out.method, status=488))
            return
        call.local_sdp, call.remote_sdp = out.offer, remote
        self._events.append(
            MediaUpdated(
                call_id=call.call_id,
                method=out.method,
                local_sdp=out.offer,
                remote_sdp=remote,
                streams=streams,
            )
        )

    def _client_failed(self, txn: ClientTransactionId, status: int, why: str, now: float) -> None:
        call_id = self._by_client_txn.pop(txn, None)
        if call_id is not None:
            call = self._calls.get(call_id)
            if call is not None and call.invite_txn == txn and call.dialog is None:
                self._end(call, f"INVITE {why}", by_remote=False, status=status)
            return
        out = self._outgoing.pop(txn, None)
        if out is None:
            return
        if out.method == "OPTIONS":
            self._events.append(OptionsAnswered(request_id=out.call_id, status=status))
            return
        call = self._calls.get(out.call_id)
        if call is None or out.method == "BYE" or out.answered:
            return
        self._events.append(OfferRejected(call_id=call.call_id, method=out.method, status=status))
        if status == 408 and call.dialog is not None:  # §12.2.1.2: the dialog is gone
            self._send_bye(call, now)
            self._end(call, f"{out.method} {why}", by_remote=False, status=status)
