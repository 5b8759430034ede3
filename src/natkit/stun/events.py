"""Events reported by STUN cores (past tense, frozen, keyword-only)."""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.stun.constants import MessageClass
from natkit.stun.message import StunMessage

__all__ = ["ResponseReceived", "StunEvent", "TransactionFailed", "TransactionTimedOut"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A success or error response arrived for ``transaction_id``.

    ``transaction_id`` is the ID the request was first sent with, even when
    authentication made the client retry under a new one. ``source`` is
    where the response came from (RFC 5780 tests compare it with the
    address they asked for). ``rtt`` is measured from the last (re)send.
    """

    transaction_id: bytes
    response: StunMessage
    source: Endpoint
    rtt: float

    @property
    def is_success(self) -> bool:
        return self.response.message_class == MessageClass.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut:
    """No response after every retransmission (RFC 8489 §6.2.1: 39.5 s)."""

    transaction_id: bytes
    server: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionFailed:
    """The transaction ended without a usable response (e.g. an integrity
    failure after authentication, or credentials the server refused)."""

    transaction_id: bytes
    server: Endpoint
    reason: str


StunEvent = ResponseReceived | TransactionTimedOut | TransactionFailed
