"""Consent freshness (RFC 7675) and hot-spare paths: the pure decisions.

Theory of operation
-------------------
After a component has a selected pair, the agent keeps sending authenticated
Binding requests on it (RFC 7675 §5.1) and on its hot spares; a response
refreshes the pair's ``last_response``. Consent expires ``consent_timeout``
(30 s) after the last response; the agent then stops sending on the pair.

A *path* is what a failure takes down at once: a relayed local candidate is
its own path (its TURN allocation, named by its base, the relayed address),
every other local candidate shares the path of its base IP; the remote side
likewise (a remote relayed candidate is its own path, other remote
candidates are grouped by IP). The spares of a component are the best valid
pair of each path other than the selected pair's (:func:`choose_spares`).

Failover design: with ``hot_spares`` on, the selected pair and the spares are
checked every ``failover_check_interval`` (0.3 s, jittered 0.8-1.2 like
consent checks, each check a single transmission: the next check is the
retransmission). When the selected pair has had no response for
``failover_timeout`` (1.2 s) the agent switches to the best spare that
answered within that window (:func:`pick_failover`): the controlling agent
re-nominates it with USE-CANDIDATE, the controlled agent switches on its own
detection and also follows the controlling agent's nomination. A switch thus
happens 1.2-1.6 s after the path was cut, within the 2 s budget.
"""

from __future__ import annotations

from collections.abc import Iterable

from natkit.addr import Endpoint
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.checklist import CandidatePair, PairState
from natkit.rng import Rng

__all__ = ["PathKey", "choose_spares", "jittered", "path_key", "pick_failover"]

PathKey = tuple[Endpoint | str, Endpoint | str]


def _side(candidate: Candidate, *, local: bool) -> Endpoint | str:
    if candidate.type is CandidateType.RELAYED:
        return candidate.effective_base if local else candidate.address
    return (candidate.effective_base if local else candidate.address).host


def path_key(pair: CandidatePair) -> PathKey:
    """What one failure takes down: (local side, remote side) of the pair."""
    return (_side(pair.local, local=True), _side(pair.remote, local=False))


def _usable(pair: CandidatePair) -> bool:
    return pair.state is PairState.SUCCEEDED and not pair.consent_lost


def choose_spares(pairs: Iterable[CandidatePair], selected: CandidatePair) -> list[CandidatePair]:
    """The best valid pair of every path other than the selected pair's,
    among the pairs of the selected pair's component."""
    best: dict[PathKey, CandidatePair] = {}
    selected_path = path_key(selected)
    component = selected.component
    for pair in pairs:
        if pair is selected or pair.component != component or not _usable(pair):
            continue
        key = path_key(pair)
        if key == selected_path:
            continue
        cur = best.get(key)
        if cur is None or pair.valid_priority > cur.valid_priority:
            best[key] = pair
    return sorted(best.values(), key=lambda p: -p.valid_priority)


def pick_failover(
    spares: Iterable[CandidatePair], *, now: float, timeout: float
) -> CandidatePair | None:
    """The best spare that answered within ``timeout``, or ``None``."""
    alive = [
        p
        for p in spares
        if _usable(p) and p.last_response >= 0 and now - p.last_response <= timeout
    ]
    if not alive:
        return None
    return max(alive, key=lambda p: p.valid_priority)


def jittered(rng: Rng, interval: float, jitter: float) -> float:
    """RFC 7675 §5.1: an interval randomized to ``[1-jitter, 1+jitter]`` of it."""
    return interval * rng.uniform(1.0 - jitter, 1.0 + jitter)
