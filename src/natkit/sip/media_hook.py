"""The SIP element's media hook: where a media relay sees (and rewrites) SDP.

Theory of operation
-------------------
RFC 6314 §4.2-4.3: a user agent behind a NAT puts addresses in its SDP that
nobody outside can reach; the usual server-side fix (what Kamailio's
rtpproxy/rtpengine modules do) is a latching media relay whose ports are
written into the SDP by the signalling server. :class:`MediaHandler` is the
interface :class:`~natkit.sip.aio.server.SipServer` (``media_handler=``)
calls for that; this module holds only sans-IO types and helpers, the
server does the calling:

* ``on_offer``: every INVITE and UPDATE the server proxies that carries SDP
  (RFC 3264 §4: the offer), before it is forwarded;
* ``on_answer``: every ACK carrying SDP (the answer to a 2xx offer, RFC
  3261 §13.2.2.4) and every response with SDP it forwards (18x and 2xx:
  the answer, or the offer of a late-offer 2xx; the handler knows from its
  own state which);
* ``on_call_ended``: a BYE or CANCEL it receives, and a final >= 300
  response to an INVITE it sends - for an initial INVITE always, for a
  re-INVITE of a confirmed call only when the error ends the dialog
  (408 and 481, RFC 5057 §5.1). It may be called more than once for one
  call (retransmissions, BYE and its 481): handlers must ignore calls they
  do not know.

The decision whether a call "needs" the relay is the handler's: it receives
the message and a :class:`MediaSource` - the flow it came from and what
:func:`natkit.sip.nat_helper.detect_nat` found (private Contact, Via or
Contact not the source). Returning bytes replaces the body (the server
updates Content-Length); ``None`` forwards the message unchanged. Messages
without an ``application/sdp`` body (no body, multipart, other types) are
not shown to the handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from natkit.errors import MalformedMessageError
from natkit.sip.flow import Source
from natkit.sip.message import SipMessage, SipRequest, SipResponse
from natkit.sip.nat_helper import NatVerdict, detect_nat, detect_nat_response

__all__ = [
    "OFFER_METHODS",
    "MediaHandler",
    "MediaSource",
    "carries_sdp",
    "dialog_tags",
    "is_invite_error",
    "DIALOG_ENDING_STATUSES",
    "media_source",
    "with_body",
]

OFFER_METHODS = frozenset({"INVITE", "UPDATE"})
"""Requests whose SDP is an offer (RFC 3264 §4, RFC 3311 §5)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSource:
    """Where a message with SDP came from: its flow and the NAT verdict on
    the user agent that sent it (RFC 6314 §4: what makes its SDP addresses
    unreachable)."""

    source: Source
    nat: NatVerdict
    target_nat: NatVerdict = field(default_factory=NatVerdict)
    """For an offer the element routes to registered contacts: the verdict
    on those contacts (the callee) from their bindings
    (:func:`~natkit.sip.nat_helper.detect_nat_binding`); empty otherwise."""

    @property
    def natted(self) -> bool:
        return self.nat.natted


class MediaHandler(Protocol):
    """What a media relay implements to sit in the SIP element's path
    (module docstring). Return the new body, or None to keep it."""

    async def on_offer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None: ...

    async def on_answer(
        self,
        call_id: str,
        from_tag: str | None,
        to_tag: str | None,
        message: SipMessage,
        source_flow: MediaSource,
    ) -> bytes | None: ...

    def on_call_ended(self, call_id: str) -> None: ...


def carries_sdp(message: SipMessage) -> bool:
    """A non-empty body of type ``application/sdp`` (RFC 3264 §5; media type
    parameters ignored, case-insensitive, RFC 3261 §7.3.1)."""
    if not message.body:
        return False
    kind = message.content_type
    if kind is None:
        return False
    return kind.split(";", 1)[0].strip().lower() == "application/sdp"


def media_source(message: SipMessage, source: Source) -> MediaSource:
    """The :class:`MediaSource` of ``message`` received from ``source``:
    requests judged by Via and Contact, responses by their Contact only (the
    top Via of a response is the server's own)."""
    if isinstance(message, SipRequest):
        return MediaSource(source=source, nat=detect_nat(message, source))
    return MediaSource(source=source, nat=detect_nat_response(message, source))


def with_body(message: SipMessage, body: bytes) -> SipMessage:
    """A copy of ``message`` with ``body`` and its Content-Length (RFC 3261
    §20.14); the original is not changed."""
    copy = message.copy()
    copy.body = body
    if "Content-Length" in copy.headers:
        copy.headers.set("Content-Length", str(len(body)))
    return copy


def dialog_tags(message: SipMessage) -> tuple[str | None, str | None]:
    """(From tag, To tag); (None, None) when either header does not parse."""
    try:
        return message.from_.tag, message.to.tag
    except MalformedMessageError:
        return None, None


def is_invite_error(message: SipMessage) -> bool:
    """A final >= 300 response to an INVITE."""
    if not isinstance(message, SipResponse) or message.status < 300:
        return False
    try:
        return message.cseq.method == "INVITE"
    except MalformedMessageError:
        return False


DIALOG_ENDING_STATUSES = frozenset({408, 481})
"""Errors to a re-INVITE that end the dialog itself (RFC 5057 §5.1)."""
