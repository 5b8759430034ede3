"""Consent freshness (RFC 7675) and hot-spare paths: the pure decisions.

Theory of operation
-------------------
After a component has a selected pair, the agent keeps sending authenticated
Binding requests on it (RFC 7675 §5.1) and on its hot spares; a response
refreshes the pair's ``last_response``. Consent expires ``consent_timeout``
(30 s) after the last response; the agent then stops sending on the pair.

A *path* is what a failure takes down at once. Its parts, the pair's
*failure domains* (:func:`failure_domains`): a relayed candidate, local or
remote, depends on its TURN server, named by the relayed address's IP (one
server, one domain, whichever side allocated on it: when both agents use
the same servers, their relays on one server die together); any other local
candidate depends on its base IP (the interface, the NAT in front of it),
any other remote candidate on its IP. A pair's path is its (local, remote)
domains (:func:`path_key`); the spares of a component are the best valid
pair of each path (of the selected pair's own path too, other than itself:
after a symmetric NAT reboots, the pair to its new mapping), those sharing
no domain with the selected pair first (:func:`choose_spares`).

Failover design: with ``hot_spares`` on, the selected pair and the spares are
checked every ``failover_check_interval`` (0.3 s, jittered 0.8-1.2 like
consent checks, each check a single transmission: the next check is the
retransmission). When the selected pair has had no response for
``failover_timeout`` (1.2 s) the agent switches to a spare
(:func:`pick_failover`): first one that answered its latest check (within
the longest gap between checks plus two of its round trips: a spare
through the same dead server answered last about when the selected pair
did, so it is stale by now), preferring one that shares no failure domain
with the failed pair, then the best priority; failing that, any spare that
answered within ``failover_timeout``. The controlling agent re-nominates it
with USE-CANDIDATE; the controlled agent switches on its own detection and
also follows the controlling agent's nomination. A switch thus happens
1.2-1.6 s after the path was cut, within the 2 s budget.

When the selected pair is past ``failover_timeout`` and no spare answered
its latest check (:func:`has_fresh_spare`), no known path works: the agent
reports ``FailoverExhausted`` once per silence (RFC 8445 §9: the way back is
an ICE restart, which the application signals). It still tries a stale
spare, and ``ConsentLost``/``IceFailed`` still follow at the consent timeout.
"""

from __future__ import annotations

from collections.abc import Iterable

from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.checklist import CandidatePair, PairState
from natkit.rng import Rng

__all__ = [
    "PathKey",
    "choose_spares",
    "failure_domains",
    "has_fresh_spare",
    "jittered",
    "path_key",
    "pick_failover",
]

PathKey = tuple[str, str]


def _domain(candidate: Candidate, *, local: bool) -> str:
    if candidate.type is CandidateType.RELAYED:
        relayed = candidate.effective_base if local else candidate.address
        return f"turn {relayed.host}"
    if local:
        return f"local {candidate.effective_base.host}"
    return f"remote {candidate.address.host}"


def path_key(pair: CandidatePair) -> PathKey:
    """What one failure takes down: the (local, remote) failure domains."""
    return (_domain(pair.local, local=True), _domain(pair.remote, local=False))


def failure_domains(pair: CandidatePair) -> frozenset[str]:
    """The parts ``pair`` depends on: TURN servers by relayed IP, local
    bases by IP, remote non-relayed candidates by IP."""
    return frozenset(path_key(pair))


def _usable(pair: CandidatePair) -> bool:
    return pair.state is PairState.SUCCEEDED and not pair.consent_lost


def choose_spares(pairs: Iterable[CandidatePair], selected: CandidatePair) -> list[CandidatePair]:
    """The best valid pair of every path, the selected pair's own path
    included (other than the selected pair itself), among the pairs of the
    selected pair's component: those that share no failure domain with the
    selected pair first, each group by priority.

    The selected pair's own path is kept for one case: a symmetric NAT that
    reboots maps its host anew, and the peer-reflexive pair learned from
    the new mapping (same IPs, a new port) is the way back; it is stale,
    and so passed over, when the path itself is dead."""
    best: dict[PathKey, CandidatePair] = {}
    selected_path = path_key(selected)
    component = selected.component
    for pair in pairs:
        if pair is selected or pair.component != component or not _usable(pair):
            continue
        key = path_key(pair)
        cur = best.get(key)
        if cur is None or pair.valid_priority > cur.valid_priority:
            best[key] = pair
    avoid = frozenset(selected_path)

    def order(pair: CandidatePair) -> tuple[bool, int]:
        return bool(avoid & failure_domains(pair)), -pair.valid_priority

    return sorted(best.values(), key=order)


def pick_failover(
    spares: Iterable[CandidatePair],
    *,
    now: float,
    timeout: float,
    fresh: float | None = None,
    failed: CandidatePair | None = None,
) -> CandidatePair | None:
    """The spare to move to when ``failed`` stopped answering, or ``None``.

    Only spares that answered within ``timeout`` qualify. Among them, one
    that answered within ``fresh`` (plus two of its own round trips) comes
    first, then one sharing no failure domain with ``failed``, then the
    best priority (see the module docstring)."""
    avoid = failure_domains(failed) if failed is not None else frozenset()
    best: CandidatePair | None = None
    best_rank: tuple[bool, bool, int] | None = None
    for pair in spares:
        if not _usable(pair) or pair.last_response < 0:
            continue
        age = now - pair.last_response
        if age > timeout:
            continue
        is_fresh = fresh is None or _is_fresh(pair, now=now, fresh=fresh)
        rank = (is_fresh, not (avoid & failure_domains(pair)), pair.valid_priority)
        if best_rank is None or rank > best_rank:
            best, best_rank = pair, rank
    return best


def _is_fresh(pair: CandidatePair, *, now: float, fresh: float) -> bool:
    """``pair`` answered its latest check: within ``fresh`` (the longest gap
    between checks) plus two of its round trips."""
    return pair.last_response >= 0 and now - pair.last_response <= fresh + 2 * max(pair.rtt, 0.0)


def has_fresh_spare(spares: Iterable[CandidatePair], *, now: float, fresh: float) -> bool:
    """Whether any usable spare answered its latest check: when none did and
    the selected pair is silent too, every known path is down (the agent
    reports :class:`~natkit.ice.events.FailoverExhausted`)."""
    return any(_usable(p) and _is_fresh(p, now=now, fresh=fresh) for p in spares)


def jittered(rng: Rng, interval: float, jitter: float) -> float:
    """RFC 7675 §5.1: an interval randomized to ``[1-jitter, 1+jitter]`` of it."""
    return interval * rng.uniform(1.0 - jitter, 1.0 + jitter)
