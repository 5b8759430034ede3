"""Events reported by the ICE agent (past tense, frozen, keyword-only).

Streams and components are the integers :meth:`IceAgent.add_stream`
returned and the RFC 8445 component IDs (1 RTP, 2 RTCP). Pairs are reported
by their two candidates; the local candidate of a valid pair is the one the
peer saw (§7.2.5.3.2: the mapped address), so a peer-reflexive local
candidate appears here.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.ice.candidate import Candidate

__all__ = [
    "CandidatePairFailed",
    "CandidatePairSucceeded",
    "ChecksCompleted",
    "ConsentLost",
    "DataReceived",
    "FailoverExhausted",
    "IceEvent",
    "IceFailed",
    "PairNominated",
    "PeerReflexiveDiscovered",
    "RoleSwitched",
    "SelectedPairChanged",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidatePairSucceeded:
    """A connectivity check succeeded: the pair is in the valid list (§7.2.5.3)."""

    stream: int
    component: int
    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True, kw_only=True)
class CandidatePairFailed:
    """A check timed out or got an error response (§7.2.5.2, §7.2.5.4)."""

    stream: int
    component: int
    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True, kw_only=True)
class PairNominated:
    """The component has its selected pair (§8.1.1, §8.2): data may flow.

    Reported once per component and ICE generation; later changes of the
    selected pair are :class:`SelectedPairChanged`.
    """

    stream: int
    component: int
    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectedPairChanged:
    """The selected pair was replaced without a new offer/answer: a hot-spare
    failover, a higher-priority aggressive nomination (RFC 5245 §8.1.1.2) or
    the peer's re-nomination. ``reason`` is ``"failover"`` (this agent
    detected the loss), ``"upgrade"`` (the controlling agent moved off a relay
    to a direct pair that succeeded later) or ``"nomination"`` (the peer
    nominated a better or a replacement pair).
    After an ICE restart the new generation's pair is a new
    :class:`PairNominated`."""

    stream: int
    component: int
    local: Candidate
    remote: Candidate
    previous_local: Candidate
    previous_remote: Candidate
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChecksCompleted:
    """Every component of the stream has a selected pair (§8.1.2)."""

    stream: int


@dataclass(frozen=True, slots=True, kw_only=True)
class IceFailed:
    """The stream's check list failed (§6.1.2.1, §8.1.2): some component has
    no valid pair and nothing is left to check, or consent was lost with no
    spare path left."""

    stream: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentLost:
    """No authenticated response on the selected pair for the consent timeout
    (RFC 7675 §5.1); the agent stopped sending on it."""

    stream: int
    component: int
    local: Candidate
    remote: Candidate


@dataclass(frozen=True, slots=True, kw_only=True)
class FailoverExhausted:
    """The selected pair has been silent for ``failover_timeout`` and no hot
    spare answered its latest check: no path of the component is known to
    work (every one shared the failure, e.g. a symmetric NAT that rebooted
    under relay-only paths, whose TURN allocations then die too). Reported
    once per silence, long before :class:`ConsentLost` (30 s); the
    application should restart ICE (RFC 8445 §9) to gather and check anew."""

    stream: int
    component: int
    local: Candidate
    remote: Candidate
    silent_since: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived:
    """Application data (not STUN, RFC 7983) arrived over a pair of the component."""

    stream: int
    component: int
    data: bytes
    remote: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleSwitched:
    """The agent changed role: role conflict (§7.3.1.1, §7.2.5.1) or a lite peer."""

    controlling: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerReflexiveDiscovered:
    """A peer-reflexive candidate was learned: ``local`` from a check's
    XOR-MAPPED-ADDRESS (§7.2.5.3.1), remote from a check's source (§7.3.1.3)."""

    stream: int
    component: int
    candidate: Candidate
    local: bool


IceEvent = (
    CandidatePairSucceeded
    | CandidatePairFailed
    | PairNominated
    | SelectedPairChanged
    | ChecksCompleted
    | IceFailed
    | ConsentLost
    | FailoverExhausted
    | DataReceived
    | RoleSwitched
    | PeerReflexiveDiscovered
)
