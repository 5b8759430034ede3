"""ICE candidates, their priorities and foundations (RFC 8445 §5.1, §6.1.2.3).

A :class:`Candidate` is what one agent tells the other about an address it
might be reached at. Local candidates also know their *base* (§5.1.1): the
host address the agent sends from, which for a server-reflexive candidate is
the host candidate it was learned through and for a relayed candidate is the
relayed address itself.

The arithmetic is the RFC's own:

- candidate priority (§5.1.2.1): ``2^24 * type_pref + 2^8 * local_pref +
  (256 - component)``, type preferences 126 host, 110 peer-reflexive, 100
  server-reflexive, 0 relayed (§5.1.2.2's recommended values);
- pair priority (§6.1.2.3): ``2^32 * min(G, D) + 2 * max(G, D) + (G > D)``
  where G is the controlling agent's candidate priority;
- foundations (§5.1.1.3): equal exactly when type, base IP, STUN/TURN server
  and transport are equal;
- redundancy (§5.1.3): a candidate whose address and base equal those of a
  higher-priority candidate is dropped.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Iterable

from natkit.addr import Endpoint, Transport

__all__ = [
    "MAX_PRIORITY",
    "TYPE_PREFERENCE",
    "Candidate",
    "CandidateType",
    "candidate_priority",
    "compute_foundation",
    "pair_priority",
    "prune_redundant",
]

MAX_PRIORITY = 2**31 - 1


class CandidateType(enum.StrEnum):
    """The four candidate types of RFC 8445 §5.1.1, spelled as in SDP (RFC 8839)."""

    HOST = "host"
    SERVER_REFLEXIVE = "srflx"
    PEER_REFLEXIVE = "prflx"
    RELAYED = "relay"


TYPE_PREFERENCE: dict[CandidateType, int] = {
    CandidateType.HOST: 126,
    CandidateType.PEER_REFLEXIVE: 110,
    CandidateType.SERVER_REFLEXIVE: 100,
    CandidateType.RELAYED: 0,
}


def candidate_priority(type_preference: int, local_preference: int, component: int) -> int:
    """RFC 8445 §5.1.2.1; raises ``ValueError`` for out-of-range inputs."""
    if not 0 <= type_preference <= 126:
        raise ValueError(f"type preference out of range: {type_preference}")
    if not 0 <= local_preference <= 0xFFFF:
        raise ValueError(f"local preference out of range: {local_preference}")
    if not 1 <= component <= 256:
        raise ValueError(f"component ID out of range: {component}")
    return (type_preference << 24) + (local_preference << 8) + (256 - component)


def pair_priority(controlling: int, controlled: int) -> int:
    """RFC 8445 §6.1.2.3: G is the controlling agent's candidate priority."""
    low, high = min(controlling, controlled), max(controlling, controlled)
    return (low << 32) + 2 * high + (1 if controlling > controlled else 0)


def compute_foundation(
    candidate_type: CandidateType,
    base_ip: str,
    server: Endpoint | None = None,
    transport: Transport = Transport.UDP,
) -> str:
    """A foundation (1-32 ice-chars) equal exactly for candidates that share
    type, base IP, server and transport (RFC 8445 §5.1.1.3).

    Derived by hashing, so two agents' foundations never collide by
    coincidence of counters, and the same inputs give the same foundation in
    every run (the lab replays from a seed).
    """
    key = f"{candidate_type}|{base_ip}|{server or ''}|{transport}".encode()
    return hashlib.blake2s(key, digest_size=6).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One ICE candidate (RFC 8445 §5.1; SDP form in :mod:`natkit.ice.sdp`).

    ``transport`` is the transport of the candidate itself as seen by the
    peer: a relayed candidate obtained over TURN/TCP is still a UDP
    candidate. ``related`` is the rel-addr/rel-port of RFC 8839 (the base for
    reflexive candidates, the mapped address for relayed ones). ``base`` is
    known only for local candidates. ``extensions`` keeps unknown name/value
    pairs of an SDP candidate line in order, so they survive a round trip.
    """

    foundation: str
    component: int
    transport: Transport
    priority: int
    address: Endpoint
    type: CandidateType
    related: Endpoint | None = None
    base: Endpoint | None = None
    tcp_type: str | None = None
    extensions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.component <= 256:
            raise ValueError(f"component ID out of range: {self.component}")
        if not 1 <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority out of range: {self.priority}")
        if not 1 <= len(self.foundation) <= 32:
            raise ValueError(f"foundation must be 1-32 characters: {self.foundation!r}")

    @property
    def effective_base(self) -> Endpoint:
        """The base (§5.1.1): given for local candidates, else the address."""
        return self.base if self.base is not None else self.address

    @classmethod
    def local(
        cls,
        candidate_type: CandidateType,
        address: Endpoint,
        *,
        base: Endpoint,
        component: int = 1,
        local_preference: int = 65535,
        server: Endpoint | None = None,
        related: Endpoint | None = None,
        transport: Transport = Transport.UDP,
    ) -> Candidate:
        """Build a local candidate with the RFC's priority and foundation."""
        return cls(
            foundation=compute_foundation(candidate_type, base.host, server, transport),
            component=component,
            transport=transport,
            priority=candidate_priority(
                TYPE_PREFERENCE[candidate_type], local_preference, component
            ),
            address=address,
            type=candidate_type,
            related=related,
            base=base,
        )


def prune_redundant(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Drop candidates whose address and base equal those of a
    higher-priority candidate of the same component (RFC 8445 §5.1.3).

    Order of the survivors is preserved.
    """
    items = list(candidates)
    best: dict[tuple[int, Transport, Endpoint, Endpoint], int] = {}
    for cand in items:
        key = (cand.component, cand.transport, cand.address, cand.effective_base)
        best[key] = max(best.get(key, 0), cand.priority)
    kept: list[Candidate] = []
    seen: set[tuple[int, Transport, Endpoint, Endpoint]] = set()
    for cand in items:
        key = (cand.component, cand.transport, cand.address, cand.effective_base)
        if cand.priority == best[key] and key not in seen:
            seen.add(key)
            kept.append(cand)
    return kept
