"""What the SIP transaction layer reports to its TU (RFC 3261 §17, RFC 6026).

Events are frozen, keyword-only and named in the past tense; a TU drains
them with :meth:`natkit.sip.transaction.TransactionLayer.next_event` and
handles them with ``match``. Transactions are named by
:class:`ClientTransactionId` (RFC 3261 §17.1.3: the top Via branch and the
CSeq method) and :class:`ServerTransactionId` (§17.2.3: branch, sent-by and
method, ACK counted as INVITE; RFC 2543 requests without the magic cookie
are named by the fields §17.2.3 compares for them).
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.sip.flow import Source
from natkit.sip.message import SipRequest, SipResponse

__all__ = [
    "AckReceived",
    "ClientTransactionId",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransactionId",
    "StrayResponseReceived",
    "TimerCExpired",
    "TransactionEvent",
    "TransactionId",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
]


@dataclass(frozen=True, slots=True)
class ClientTransactionId:
    """A client transaction: top Via branch and CSeq method (§17.1.3)."""

    branch: str
    method: str


@dataclass(frozen=True, slots=True)
class ServerTransactionId:
    """A server transaction (§17.2.3).

    ``branch``, ``sent_by`` (``host:port`` of the top Via, lowercased, the
    transport's default port filled in) and ``method`` (INVITE for an ACK)
    name a transaction whose branch starts with ``z9hG4bK``. For RFC 2543
    requests ``branch`` is ``""`` and ``legacy`` holds what §17.2.3 compares
    instead: Request-URI, To tag, From tag, Call-ID, CSeq number and the
    whole top Via.
    """

    branch: str
    sent_by: str
    method: str
    legacy: tuple[str, ...] = ()


TransactionId = ClientTransactionId | ServerTransactionId


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A new request created ``server_txn`` (§17.2); the TU must answer it
    with :meth:`~natkit.sip.transaction.TransactionLayer.send_response`.

    For a CANCEL, ``cancelled_txn`` is the INVITE server transaction it
    matches (RFC 3261 §9.2), or None when there is none (the TU answers
    481); the CANCEL itself has its own transaction, ``server_txn``.
    """

    request: SipRequest
    source: Source
    server_txn: ServerTransactionId
    cancelled_txn: ServerTransactionId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AckReceived:
    """An ACK for a 2xx, which is the TU's (RFC 3261 §17.1.1.3, §13.3.1.4).

    ``server_txn`` is the INVITE server transaction in the Accepted state
    that it matched (RFC 6026 §8.7), or None: an ACK for a 2xx normally has a
    branch of its own and matches no transaction. ACKs for non-2xx final
    responses never surface; their INVITE server transaction absorbs them.
    """

    request: SipRequest
    source: Source
    server_txn: ServerTransactionId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """A response for ``client_txn`` the TU must see: provisional and final
    responses, and in the RFC 6026 Accepted state every further 2xx
    (retransmissions and other forks' answers, which the TU ACKs)."""

    response: SipResponse
    source: Source
    client_txn: ClientTransactionId


@dataclass(frozen=True, slots=True, kw_only=True)
class StrayResponseReceived:
    """A response that matches no client transaction (RFC 3261 §18.1.2: it
    goes to the core; a proxy forwards it statelessly, §16.7)."""

    response: SipResponse
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTimedOut:
    """``txn`` got no answer in time and has terminated.

    ``timer`` names what fired: "B" (INVITE) or "F" (non-INVITE) for a
    request that was never answered (the TU acts as on a 408, §8.1.3.1),
    "H" for a non-2xx final response whose ACK never came (§17.2.1), "cancel"
    for an INVITE without a final response 64*T1 after its CANCEL (§9.1).
    """

    txn: TransactionId
    timer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerCExpired:
    """An INVITE client transaction in Proceeding had no final response for
    ``timer_c`` (RFC 3261 §16.6 step 11, §16.8). The TU CANCELs it (or
    lets it be); it terminates on its own 64*T1 later if still unanswered."""

    client_txn: ClientTransactionId


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """The driver could not send a message of ``txn`` (§17.1.4, §17.2.4);
    the transaction has terminated. For a client transaction the TU acts
    as on a 503 (§8.1.3.1)."""

    txn: TransactionId


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionTerminated:
    """``txn`` reached the Terminated state and was removed: per-transaction
    state the TU keeps can go too. Emitted for every transaction, last."""

    txn: TransactionId


TransactionEvent = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponseReceived
    | TransactionTimedOut
    | TimerCExpired
    | TransportFailed
    | TransactionTerminated
)
