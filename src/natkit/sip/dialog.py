"""SIP dialogs (RFC 3261 §12, with the dialog parts of §13, §14 and §15), sans-IO.

Theory of operation
-------------------
A dialog is the peer-to-peer relationship a dialog-forming request (INVITE,
SUBSCRIBE, REFER) and a 1xx-with-To-tag or 2xx answer create. A
:class:`Dialog` holds the state §12 names: the id (Call-ID, local tag,
remote tag), local and remote URI (the From/To parties), local and remote
CSeq, the remote target (the peer's Contact), the route set, the secure
flag and the state (early, confirmed, terminated).

The UAC makes one with :meth:`Dialog.from_uac` from the request it sent and
the response (route set = Record-Route reversed, §12.1.2); a forking proxy
may answer one INVITE from several UAS, so a :class:`DialogSet` keeps one
dialog per remote tag. The UAS makes one with :meth:`Dialog.from_uas` from
the request and the response it sends (route set = Record-Route in order,
§12.1.1; the response must carry the request's Record-Route, which
``make_response(..., copy_record_route=True)`` does).

Requests within the dialog come from :meth:`Dialog.create_request`
(§12.2.1.1: Request-URI and Route for loose or strict routing, tags,
CSeq, Contact, Max-Forwards, a Via without branch that the transaction
layer completes); the ACK for a 2xx from :meth:`Dialog.create_ack`
(§13.2.2.4), sent by the TU with ``TransactionLayer.send_request`` (ACKs go
without a transaction). Received requests pass through
:meth:`Dialog.receive_request`, which returns the status the UAS must
answer when the request cannot be accepted (500 out of order, 481 not this
dialog) and otherwise updates remote CSeq and remote target and ends the
dialog on BYE (§12.2.2, §15.1.2). Responses to in-dialog requests pass
through :meth:`Dialog.receive_response` (§12.2.1.2: target refresh on
2xx, termination on 481/408). :class:`DialogTable` finds the dialog of a
message by id.

Nothing here sends or waits: dialogs are plain state updated by the TU.
Session timers (RFC 4028) and reliable provisionals (PRACK, RFC 3262) are
out of scope.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng
from natkit.sip.headers import NameAddr, Via
from natkit.sip.message import Headers, SipRequest, SipResponse
from natkit.sip.uri import SipUri, Uri

__all__ = [
    "DIALOG_FORMING_METHODS",
    "MAX_CSEQ",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogSet",
    "DialogState",
    "DialogTable",
    "creates_dialog",
    "request_dialog_id",
    "response_dialog_id",
]

DIALOG_FORMING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
"""Methods whose answers create dialogs (RFC 3261 §12, RFC 6665 §4.1.2, RFC 3515)."""

TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})
"""Requests that replace the remote target (§12.2, RFC 3311, RFC 6665 §4.3)."""

MAX_CSEQ = 2**31 - 1
"""§8.1.1.5: CSeq numbers stay below 2**31."""

_CREDENTIAL_HEADERS = ("Authorization", "Proxy-Authorization")
_URI_PARAMS_NOT_IN_REQUEST_URI = ("method",)  # §19.1.1 table


class DialogState(enum.Enum):
    """§12: early (after a 1xx with To tag), confirmed (after a 2xx), terminated."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag. A tag is ``""`` when the peer
    sent none (RFC 2543 peers, §12.1.1 / §12.1.2)."""

    call_id: str
    local_tag: str
    remote_tag: str


def request_dialog_id(request: SipRequest) -> DialogId:
    """The id of the dialog a *received* request belongs to (§12.2.2): local
    tag = To tag, remote tag = From tag. Raises MalformedMessageError."""
    return DialogId(request.call_id, request.to.tag or "", request.from_.tag or "")


def response_dialog_id(response: SipResponse) -> DialogId:
    """The id of the UAC dialog a *received* response belongs to (§12.1.2):
    local tag = From tag, remote tag = To tag. Raises MalformedMessageError."""
    return DialogId(response.call_id, response.from_.tag or "", response.to.tag or "")


def creates_dialog(request: SipRequest, response: SipResponse) -> bool:
    """Whether ``response`` to ``request`` creates a dialog (§12.1): a
    dialog-forming method (INVITE, SUBSCRIBE, REFER) answered with a 2xx, or
    with a 101-199 carrying a To tag (an early dialog, §12.1). A 2xx without
    To tag still does (an RFC 2543 UAS, remote tag ``""``)."""
    if request.method not in DIALOG_FORMING_METHODS or request.to.tag is not None:
        return False
    if 200 <= response.status < 300:
        return True
    return 101 <= response.status < 200 and response.to.tag is not None


def _single_contact(message: SipRequest | SipResponse, *, what: str) -> Uri | None:
    contacts = message.contacts
    if contacts == "*":
        raise MalformedMessageError(f"Contact * in {what}", error_code=400)
    if not contacts:
        return None
    return contacts[0].uri


def _is_secure(uri: Uri, secure_transport: bool) -> bool:
    return isinstance(uri, SipUri) and uri.scheme == "sips" and secure_transport


@dataclass(eq=False)
class Dialog:
    """One dialog's state (§12.1); see the module docstring.

    ``local_party`` / ``remote_party`` are the From/To name-addrs without
    tags (their ``uri`` is the local/remote URI). ``local_seq`` is None
    until this side sends its first request (a UAS, §12.1.1); that request
    then uses ``initial_local_seq``. ``remote_seq`` is None until the peer's
    first request (a UAC, §12.1.2). ``local_contact`` goes into target
    refresh requests (§12.2.1.1). ``invite_out_pending`` /
    ``invite_in_pending`` say an INVITE sent / received on the dialog has
    no final response yet (§14).
    """

    id: DialogId
    local_party: NameAddr
    remote_party: NameAddr
    remote_target: Uri
    route_set: tuple[NameAddr, ...] = ()
    local_seq: int | None = None
    remote_seq: int | None = None
    secure: bool = False
    state: DialogState = DialogState.EARLY
    local_contact: NameAddr | None = None
    initial_local_seq: int = 1
    is_uac: bool = True
    invite_out_pending: bool = False
    invite_in_pending: bool = False

    # ----------------------------------------------------------- creation

    @classmethod
    def from_uac(
        cls,
        request: SipRequest,
        response: SipResponse,
        *,
        secure_transport: bool = True,
    ) -> Dialog:
        """The UAC's dialog from the dialog-forming ``request`` it sent and
        ``response`` (§12.1.2): route set = Record-Route of the response,
        reversed; remote target = its Contact; local CSeq = the request's;
        remote CSeq empty; early for a 1xx, confirmed for a 2xx; secure when
        the Request-URI is sips and (``secure_transport``) it went over TLS.

        Raises LocalProtocolError when the response creates no dialog
        (:func:`creates_dialog`) or is not an answer to ``request``, and
        MalformedMessageError for unparseable headers or a 2xx without a
        usable Contact (error_code None: a response is dropped, not answered).
        A 1xx without Contact gets the Request-URI as provisional target.
        """
        if not creates_dialog(request, response):
            raise LocalProtocolError(f"{response.status} to {request.method} creates no dialog")
        if response.call_id != request.call_id or response.cseq != request.cseq:
            raise LocalProtocolError("response does not answer this request")
        from_tag = request.from_.tag
        if from_tag is None:
            raise LocalProtocolError("a UAC request needs a From tag (§8.1.1.3)")
        target = _single_contact(response, what="response")
        if target is None:
            if response.status >= 200:
                raise MalformedMessageError("2xx without Contact", error_code=None)
            target = request.uri
        routes = tuple(reversed(response.name_addrs("Record-Route")))
        return cls(
            id=DialogId(request.call_id, from_tag, response.to.tag or ""),
            local_party=request.from_.without_params("tag"),
            remote_party=response.to.without_params("tag"),
            remote_target=target,
            route_set=routes,
            local_seq=request.cseq.seq,
            remote_seq=None,
            secure=_is_secure(request.uri, secure_transport),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_contact=_first_contact(request),
            is_uac=True,
            invite_out_pending=request.method == "INVITE" and response.status < 200,
        )

    @classmethod
    def from_uas(
        cls,
        request: SipRequest,
        response: SipResponse,
        *,
        rng: Rng | None = None,
        secure_transport: bool = True,
    ) -> Dialog:
        """The UAS's dialog from the received dialog-forming ``request`` and
        the 1xx (with To tag) or 2xx ``response`` it sends (§12.1.1): route
        set = the request's Record-Route in order; remote target = the
        request's Contact; remote CSeq = the request's; local CSeq empty
        (its first value from ``rng`` below 2**31, §8.1.1.5, else 1); local
        tag = the response's To tag, remote tag = the From tag (``""`` if
        none).

        Raises LocalProtocolError when the response creates no dialog, has
        no To tag, or lacks the request's Record-Route (§12.1.1: use
        ``make_response(..., copy_record_route=True)``); MalformedMessageError
        (400, the UAS answers it) when the request has no usable Contact.
        """
        if not creates_dialog(request, response):
            raise LocalProtocolError(f"{response.status} to {request.method} creates no dialog")
        local_tag = response.to.tag
        if local_tag is None:
            raise LocalProtocolError("a dialog-forming response needs a To tag (§12.1.1)")
        if response.headers.get_all("Record-Route") != request.headers.get_all("Record-Route"):
            raise LocalProtocolError("the response must copy Record-Route (§12.1.1)")
        target = _single_contact(request, what="request")
        if target is None:
            raise MalformedMessageError(f"{request.method} without Contact", error_code=400)
        initial = rng.randrange(1, 2**31 // 2) if rng is not None else 1
        return cls(
            id=DialogId(request.call_id, local_tag, request.from_.tag or ""),
            local_party=request.to.without_params("tag"),
            remote_party=request.from_.without_params("tag"),
            remote_target=target,
            route_set=tuple(request.name_addrs("Record-Route")),
            local_seq=None,
            remote_seq=request.cseq.seq,
            secure=_is_secure(request.uri, secure_transport),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            local_contact=_first_contact(response),
            initial_local_seq=initial,
            is_uac=False,
            invite_in_pending=request.method == "INVITE" and response.status < 200,
        )

    # ----------------------------------------------------------- queries

    @property
    def local_uri(self) -> Uri:
        return self.local_party.uri

    @property
    def remote_uri(self) -> Uri:
        return self.remote_party.uri

    @property
    def strict_routing(self) -> bool:
        """The first route lacks ``lr``: a strict router (RFC 2543, §12.2.1.1)."""
        return bool(self.route_set) and not _loose(self.route_set[0].uri)

    @property
    def next_hop(self) -> Uri:
        """Where requests of this dialog go first (§8.1.2): the first route
        (for a strict router that is also the Request-URI), else the remote
        target. A name only; resolving it (RFC 3263) is the caller's. (Reading
        the first Route of a built request would be wrong after strict-route
        rewriting, where the next hop is the Request-URI.)"""
        return self.route_set[0].uri if self.route_set else self.remote_target

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    # ----------------------------------------------------------- sending

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        max_forwards: int = 70,
    ) -> SipRequest:
        """A request within the dialog (§12.2.1.1), ``method`` not ACK or
        CANCEL (see :meth:`create_ack`; a CANCEL is
        ``natkit.sip.transaction.build_cancel`` of the request it cancels).

        Increments the local CSeq (the first one of a UAS is
        ``initial_local_seq``); Request-URI and Route from the remote target
        and route set (loose: Request-URI = remote target, Route = route
        set; strict: Request-URI = first route without the parameters a
        Request-URI may not carry, Route = the other routes then the remote
        target); From/To with tags, Call-ID, Max-Forwards; Contact for
        target refresh methods; ``via`` as the top Via without its branch
        (the transaction layer adds one). A BYE marks the dialog terminated
        (§15.1.1: the session ends as soon as BYE is passed on).
        An INVITE (a re-INVITE, §14.1) marks an INVITE in progress until
        :meth:`receive_response` sees its final response.
        Raises LocalProtocolError on a terminated dialog, for ACK/CANCEL,
        for a re-INVITE while another INVITE is in progress either way
        (§14.1), for a callee's BYE on an early dialog (§15), or when CSeq
        would pass 2**31-1.
        """
        if method in ("ACK", "CANCEL"):
            raise LocalProtocolError(
                f"{method} reuses its INVITE's CSeq: use create_ack/build_cancel"
            )
        if self.terminated:
            raise LocalProtocolError("the dialog is terminated")
        seq = self.initial_local_seq if self.local_seq is None else self.local_seq + 1
        if method == "INVITE" and (self.invite_out_pending or self.invite_in_pending):
            raise LocalProtocolError("an INVITE is in progress on this dialog (§14.1)")
        if method == "BYE" and not self.is_uac and self.state is DialogState.EARLY:
            raise LocalProtocolError("the callee must not BYE an early dialog (§15)")
        if seq > MAX_CSEQ:
            raise LocalProtocolError("local CSeq exhausted (§8.1.1.5)")
        request = self._build(
            method, seq, via=via, headers=headers, body=body, max_forwards=max_forwards
        )
        self.local_seq = seq
        if method == "INVITE":
            self.invite_out_pending = True
        if method == "BYE":
            self.state = DialogState.TERMINATED
        return request

    def create_ack(
        self,
        invite: SipRequest,
        *,
        via: Via,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> SipRequest:
        """The ACK for a 2xx to ``invite`` (§13.2.2.4): built like any
        in-dialog request (route set, tags, remote target as now known from
        the 2xx) but with the INVITE's CSeq number and its Authorization and
        Proxy-Authorization headers (§22.1). Does not change the local CSeq.
        The TU sends it with ``TransactionLayer.send_request`` (no
        transaction: it is sent once, and again for each 2xx retransmission).
        """
        if invite.method != "INVITE":
            raise LocalProtocolError("an ACK answers an INVITE")
        extra = [
            (name, value) for name in _CREDENTIAL_HEADERS for value in invite.headers.get_all(name)
        ]
        extra.extend(headers)
        return self._build(
            "ACK", invite.cseq.seq, via=via, headers=extra, body=body, max_forwards=70
        )

    def _build(
        self,
        method: str,
        seq: int,
        *,
        via: Via,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        max_forwards: int,
    ) -> SipRequest:
        uri, routes = self._request_uri_and_routes()
        out = Headers()
        out.add("Via", str(via.without_params("branch")))
        out.add("Max-Forwards", str(max_forwards))
        for route in routes:
            out.add("Route", str(route))
        out.add("From", str(_tagged(self.local_party, self.id.local_tag)))
        out.add("To", str(_tagged(self.remote_party, self.id.remote_tag)))
        out.add("Call-ID", self.id.call_id)
        out.add("CSeq", f"{seq} {method}")
        if method in TARGET_REFRESH_METHODS and self.local_contact is not None:
            out.add("Contact", str(self.local_contact))
        for name, value in headers:
            out.add(name, value)
        return SipRequest(method=method, uri=uri, headers=out, body=body)

    def _request_uri_and_routes(self) -> tuple[Uri, list[NameAddr]]:
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if _loose(first.uri):
            return self.remote_target, list(self.route_set)
        uri = first.uri
        if isinstance(uri, SipUri):
            uri = uri.without_params(*_URI_PARAMS_NOT_IN_REQUEST_URI).replace(headers=())
        return uri, [*self.route_set[1:], NameAddr(self.remote_target)]

    # ----------------------------------------------------------- receiving

    def receive_request(self, request: SipRequest) -> int | None:
        """Check and apply a received in-dialog ``request`` (§12.2.2).

        Returns the status the UAS must answer instead of processing it —
        481 when it is not this dialog's (other id, or the dialog is
        terminated), 500 when its CSeq is lower than the remote CSeq (out of
        order), and for a re-INVITE 491 while this side's own INVITE is in
        progress or 500 (the UAS adds a Retry-After) while an earlier
        received one has no final response yet (§14.2) — or None when
        accepted. An equal CSeq is accepted (§12.2.2 rejects only lower
        ones; retransmissions never get here, the transaction layer absorbs
        them). Accepting sets the remote CSeq
        (ACK and CANCEL carry their INVITE's and change nothing), replaces
        the remote target with the Contact of a target refresh request, and
        terminates the dialog on BYE (§15.1.2). Call :meth:`response_sent`
        with the final response to a re-INVITE. MalformedMessageError (400)
        for unparseable headers, including a target refresh's Contact.
        """
        if request_dialog_id(request) != self.id:
            return 481
        if request.method == "ACK":
            return None
        if self.terminated:
            return 481
        seq = request.cseq.seq
        if request.method == "CANCEL":
            return None
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        if request.method == "INVITE":
            if self.invite_out_pending:
                return 491  # §14.2: glare; the TU answers and the UAC retries later
            if self.invite_in_pending:
                return 500  # §14.2: a second INVITE before the first one's final response
            self.invite_in_pending = True
        if request.method in TARGET_REFRESH_METHODS:
            target = _single_contact(request, what="request")
            if target is not None:
                self.remote_target = target
        self.remote_seq = seq
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def receive_response(self, request: SipRequest, response: SipResponse) -> None:
        """Apply a UAC-side ``response`` to ``request`` sent in (or creating)
        this dialog.

        For the dialog-forming request: a 1xx with this dialog's To tag
        updates the remote target of an early dialog; a 2xx confirms it,
        recomputes the route set from its Record-Route and takes its
        Contact (§13.2.2.4, §12.1.2); a final non-2xx terminates an early
        dialog (§12.3). For other requests: a 2xx to a target refresh
        replaces the remote target (§12.2.1.2); 481 or 408 terminates the
        dialog (§12.2.1.2) — a TU passes a transaction timeout as a 408
        (§8.1.3.1). A final response to an INVITE ends "INVITE in progress"
        (§14.1). Responses of other dialogs are ignored; a Contact that does
        not parse raises MalformedMessageError (error_code None: drop).
        """
        forming = request.method in DIALOG_FORMING_METHODS and request.to.tag is None
        status = response.status
        if request.method == "INVITE" and status >= 200:
            self.invite_out_pending = False
        if forming and status >= 300:
            if self.state is DialogState.EARLY:
                self.state = DialogState.TERMINATED
            return
        tag = response.to.tag or ""
        if response.call_id != self.id.call_id or tag != self.id.remote_tag:
            return
        if forming:
            target = _single_contact(response, what="response")
            if target is not None and self.state is not DialogState.TERMINATED:
                self.remote_target = target
            if 200 <= status < 300 and self.state is DialogState.EARLY:
                self.route_set = tuple(reversed(response.name_addrs("Record-Route")))
                self.state = DialogState.CONFIRMED
            return
        if status in (481, 408):
            self.state = DialogState.TERMINATED
        elif 200 <= status < 300 and request.method in TARGET_REFRESH_METHODS:
            target = _single_contact(response, what="response")
            if target is not None:
                self.remote_target = target

    def response_sent(self, request: SipRequest, response: SipResponse) -> None:
        """Apply a UAS-side ``response`` this side sends to ``request``: a 2xx
        to the dialog-forming request confirms an early dialog, a final
        non-2xx terminates it (§12.1.1, §12.3); a 2xx to BYE leaves the
        dialog terminated (it already is, from :meth:`receive_request`)."""
        if request.method == "INVITE" and response.status >= 200:
            self.invite_in_pending = False
        forming = request.method in DIALOG_FORMING_METHODS and request.to.tag is None
        if not forming or self.state is not DialogState.EARLY:
            return
        if 200 <= response.status < 300:
            self.state = DialogState.CONFIRMED
        elif response.status >= 300:
            self.state = DialogState.TERMINATED


def _tagged(party: NameAddr, tag: str) -> NameAddr:
    return party.with_param("tag", tag) if tag else party


def _loose(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and uri.lr


def _first_contact(message: SipRequest | SipResponse) -> NameAddr | None:
    contacts = message.contacts
    if contacts == "*" or not contacts:
        return None
    return contacts[0]


@dataclass(eq=False)
class DialogSet:
    """The dialogs one UAC request creates (§12.1.2, §13.2.2.4: a forked
    INVITE may get 1xx/2xx from several UAS, one dialog per To tag)."""

    request: SipRequest
    secure_transport: bool = True
    _dialogs: dict[str, Dialog] = field(default_factory=dict)

    def receive_response(self, response: SipResponse) -> Dialog | None:
        """Create or update the dialog ``response`` belongs to and return it;
        None when it creates none (100, a 1xx without To tag). A final
        non-2xx terminates every early dialog of the set (§12.3)."""
        if response.status >= 300:
            for early in self._dialogs.values():
                if early.state is DialogState.EARLY:
                    early.state = DialogState.TERMINATED
            return None
        tag = response.to.tag or ""
        known = self._dialogs.get(tag)
        if known is not None:
            known.receive_response(self.request, response)
            return known
        if not creates_dialog(self.request, response):
            return None
        dialog = Dialog.from_uac(self.request, response, secure_transport=self.secure_transport)
        self._dialogs[tag] = dialog
        return dialog

    def __iter__(self) -> Iterator[Dialog]:
        return iter(self._dialogs.values())

    def __len__(self) -> int:
        return len(self._dialogs)


@dataclass(eq=False)
class DialogTable:
    """Every dialog of a TU, by id (§12: requests and responses are matched
    to dialogs by Call-ID and tags)."""

    _dialogs: dict[DialogId, Dialog] = field(default_factory=dict)

    def add(self, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = dialog

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def discard(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.id, None)

    def match_request(self, request: SipRequest) -> Dialog | None:
        """The dialog of a received request with a To tag, or None (then a
        UAS answers 481, §12.2.2). MalformedMessageError for bad headers."""
        if request.to.tag is None:
            return None
        return self._dialogs.get(request_dialog_id(request))

    def match_response(self, response: SipResponse) -> Dialog | None:
        """The UAC dialog a received response belongs to, or None."""
        return self._dialogs.get(response_dialog_id(response))

    def remove_terminated(self) -> int:
        """Drop terminated dialogs; returns how many."""
        dead = [key for key, d in self._dialogs.items() if d.terminated]
        for key in dead:
            del self._dialogs[key]
        return len(dead)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(self._dialogs.values())

    def __len__(self) -> int:
        return len(self._dialogs)
