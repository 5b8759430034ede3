"""What a :class:`~natkit.ua.call.UserAgentCore` reports to its driver.

Events are frozen, keyword-only and named in the past tense; a driver drains
them with :meth:`~natkit.ua.call.UserAgentCore.next_event` and handles them
with ``match``. Calls are named by their SIP Call-ID (RFC 3261 §8.1.1.4):
one call is one INVITE dialog (no forking to several answering UAs is kept:
the first 2xx wins, later ones are ACKed and sent BYE, §13.2.2.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.sdp.model import SessionDescription
from natkit.sdp.offer_answer import NegotiatedStream
from natkit.sip.uri import Uri

__all__ = [
    "CallEnded",
    "CallEstablished",
    "CallOffered",
    "CallProgressed",
    "CallRole",
    "MediaUpdated",
    "OfferRejected",
    "OptionsAnswered",
    "UserAgentEvent",
]


class CallRole(enum.Enum):
    """Which side of the INVITE this UA is (RFC 3261 §6: UAC or UAS)."""

    CALLER = "caller"
    CALLEE = "callee"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOffered:
    """A new INVITE arrived (RFC 3261 §13.3): accept it with
    :meth:`~natkit.ua.call.UserAgentCore.accept` (which answers ``offer``)
    or :meth:`~natkit.ua.call.UserAgentCore.reject`. ``offer`` is None for an
    offerless INVITE: the 2xx then carries our offer and the ACK the answer
    (§13.2.1)."""

    call_id: str
    caller: Uri
    callee: Uri
    offer: SessionDescription | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallProgressed:
    """A provisional response to our INVITE (RFC 3261 §13.2.2.1): 100
    Trying, 180 Ringing, 183 Session Progress."""

    call_id: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEstablished:
    """Offer and answer are complete and the call is up: our 2xx was sent
    (callee) or the peer's 2xx received and ACKed (caller). ``streams`` is
    :func:`~natkit.sdp.negotiated_media` of the exchange from our side."""

    call_id: str
    role: CallRole
    local_sdp: SessionDescription
    remote_sdp: SessionDescription
    streams: tuple[NegotiatedStream, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaUpdated:
    """A re-INVITE or UPDATE (RFC 3261 §14, RFC 3311) in either direction
    completed a new offer/answer: media goes where ``streams`` says now
    (the ICE updated offer of RFC 6314 §5.2.1.2 is one)."""

    call_id: str
    method: str
    local_sdp: SessionDescription
    remote_sdp: SessionDescription
    streams: tuple[NegotiatedStream, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferRejected:
    """Our re-INVITE or UPDATE got a non-2xx final response (488, 491...):
    the session stays as it was (RFC 3261 §14.1)."""

    call_id: str
    method: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """The call is over. ``status`` is the final response that ended it (a
    4xx-6xx to the INVITE, 487 after CANCEL, 408 on timeout) or None for a
    BYE; ``by_remote`` tells who ended it; ``reason`` is for people."""

    call_id: str
    reason: str
    by_remote: bool
    status: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionsAnswered:
    """The final response to our OPTIONS (RFC 3261 §11); ``status`` 408 when
    it timed out, 503 when it could not be sent."""

    request_id: str
    status: int
    allow: tuple[str, ...] = ()


UserAgentEvent = (
    CallOffered
    | CallProgressed
    | CallEstablished
    | MediaUpdated
    | OfferRejected
    | CallEnded
    | OptionsAnswered
)
