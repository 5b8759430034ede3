"""Events of candidate gathering (past tense, frozen, keyword-only).

:class:`~natkit.ice.gather.Gatherer` reports each candidate as it is learned
(:class:`CandidateGathered`, for trickle ICE, RFC 8838 §4), each server that
did not help (:class:`ServerFailed`) and, once every server has answered or
run out of time, :class:`GatheringCompleted` (RFC 8838 §4: the moment to
send end-of-candidates). For TURN over TCP or TLS the driver owns the
connection: :class:`TurnConnectionRequested` asks it to connect, and
:class:`TurnConnectionAbandoned` to close one the gatherer gave up on.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint, Transport
from natkit.ice.candidate import Candidate

__all__ = [
    "CandidateGathered",
    "GatherEvent",
    "GatheringCompleted",
    "ServerFailed",
    "TurnConnectionAbandoned",
    "TurnConnectionRequested",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidateGathered:
    """A new local candidate (already checked for redundancy, RFC 8445
    §5.1.3). ``server`` is the STUN/TURN server it came from (or the
    port-mapping gateway), ``None`` for host candidates."""

    candidate: Candidate
    server: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerFailed:
    """A STUN or TURN server gave no candidate from ``local``: it timed out
    (``timed_out``: no answer within the per-server deadline), refused
    (``code``: the STUN error code), or its connection failed."""

    server: Endpoint
    transport: Transport
    local: Endpoint
    reason: str
    timed_out: bool = False
    code: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GatheringCompleted:
    """Every server answered or hit its deadline: no more candidates come
    from servers (port mappings added later still do). ``candidates`` is
    every candidate gathered, pruned, in priority order."""

    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnConnectionRequested:
    """The driver must open a TCP (or, ``tls``, TLS checking
    ``server_hostname``) connection from ``local_ip`` to ``server`` and
    report it with ``Gatherer.connection_opened(connection_id, ...)`` or
    ``connection_failed``; its bytes go to ``receive_stream_data``."""

    connection_id: int
    server: Endpoint
    tls: bool
    server_hostname: str | None
    local_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnConnectionAbandoned:
    """The gatherer gave up on connection ``connection_id`` (deadline,
    allocation refused): the driver closes it."""

    connection_id: int


GatherEvent = (
    CandidateGathered
    | ServerFailed
    | GatheringCompleted
    | TurnConnectionRequested
    | TurnConnectionAbandoned
)
