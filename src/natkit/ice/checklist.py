"""Candidate pairs and check lists (RFC 8445 §6.1.2, §6.1.4, §7.2.5.3.3).

Theory of operation
-------------------
A :class:`CandidatePair` is one 5-tuple to test: a local *base* and a remote
address. Pairs are keyed by ``(component, local base, remote address)``, which
is exactly the pruning rule of §6.1.2.4 (a server-reflexive local candidate
is replaced by its base, and pairs with equal base and remote are redundant):
a second pair with the same key is never created, so pruning costs one dict
look-up. When a check succeeds, the pair records the local candidate the peer
actually saw (``valid_local``, maybe peer-reflexive) and the priority of that
valid pair (§7.2.5.3.2); the 5-tuple, and so the wire behaviour, is the same.

A :class:`CheckList` holds one stream's pairs. Its Waiting pairs sit in a
heap ordered by pair priority, its triggered checks in a FIFO (§6.1.4.1);
:meth:`CheckListSet.next_check` serves the lists round robin, each time
taking a triggered check first, then the highest-priority Waiting pair, and
when none is waiting, unfreezing one Frozen pair per foundation that has no
Waiting or In-Progress pair in any list (§6.1.4.2). State changes go through
:meth:`CheckListSet.set_state`, which keeps the per-foundation and per-state
counters that make those rules O(1) instead of scans: the RTO of §14.3 needs
the number of Waiting and In-Progress pairs on every check.

Initial unfreezing (§6.1.2.6): every list becomes Running when checks can
start; for each foundation exactly one pair is set Waiting, the first (lowest
component ID, then highest priority) in the first list in stream order that
has the foundation, so a second stream sharing foundations with the first
waits, Frozen, for the first one's result. A success unfreezes the Frozen
pairs of its foundation in every list (§7.2.5.3.3).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.ice.candidate import Candidate, pair_priority

__all__ = ["CandidatePair", "CheckList", "CheckListSet", "PairKey", "PairState"]

PairKey = tuple[int, Endpoint, Endpoint]


class PairState(enum.Enum):
    """§6.1.2.6 candidate pair states."""

    FROZEN = "frozen"
    WAITING = "waiting"
    IN_PROGRESS = "in-progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_PENDING = (PairState.FROZEN, PairState.WAITING, PairState.IN_PROGRESS)


@dataclass(slots=True, eq=False)
class CandidatePair:
    """One candidate pair of a check list, plus its consent bookkeeping."""

    stream: int
    local: Candidate
    remote: Candidate
    priority: int
    generation: int
    state: PairState = PairState.FROZEN
    valid_local: Candidate | None = None
    valid_priority: int = 0
    nominated: bool = False
    remote_nominated: bool = False  # USE-CANDIDATE received (§7.3.1.5)
    nominating: bool = False  # a USE-CANDIDATE check is queued or running
    recheck: bool = False  # a check of a Succeeded pair was asked for on purpose
    triggered: bool = False
    heap_serial: int = -1
    check_tid: bytes = b""  # the transaction of its latest connectivity check
    # RFC 7675 consent and hot-spare path monitoring
    last_response: float = -1.0
    next_check: float = 0.0
    consent_lost: bool = False
    last_sent: float = -1.0
    rtt: float = -1.0  # round trip of its latest unretransmitted check
    # Fixed for the pair's life (the local candidate's base and the remote
    # address never change), computed once: the counters use them per change.
    key: PairKey = field(init=False)
    foundation: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        local = self.local
        self.key = (local.component, local.effective_base, self.remote.address)
        self.foundation = (local.foundation, self.remote.foundation)

    @property
    def component(self) -> int:
        return self.local.component

    @property
    def local_base(self) -> Endpoint:
        return self.key[1]

    @property
    def reported_local(self) -> Candidate:
        """The local candidate of the valid pair, else of the pair (§7.2.5.3.2)."""
        return self.valid_local if self.valid_local is not None else self.local

    @property
    def is_pending(self) -> bool:
        return self.state in _PENDING

    def __repr__(self) -> str:
        return (
            f"<CandidatePair s{self.stream}c{self.component} {self.local_base}->"
            f"{self.remote.address} {self.state.value}{' nominated' if self.nominated else ''}>"
        )


def compute_pair_priority(local: Candidate, remote: Candidate, controlling: bool) -> int:
    """§6.1.2.3 with G the controlling agent's candidate priority."""
    if controlling:
        return pair_priority(local.priority, remote.priority)
    return pair_priority(remote.priority, local.priority)


@dataclass(slots=True, eq=False)
class CheckList:
    """The check list of one stream (§6.1.2)."""

    stream: int
    pairs: dict[PairKey, CandidatePair] = field(default_factory=dict)
    triggered: deque[CandidatePair] = field(default_factory=deque)
    waiting: list[tuple[int, int, CandidatePair]] = field(default_factory=list)
    running: bool = False
    pending: int = 0  # Frozen + Waiting + In-Progress pairs
    frozen: int = 0

    def by_component(self, component: int) -> list[CandidatePair]:
        return [p for p in self.pairs.values() if p.local.component == component]


class CheckListSet:
    """Every stream's check list, with the counters the pacing rules need."""

    def __init__(self) -> None:
        self.lists: dict[int, CheckList] = {}
        self._order: list[int] = []
        self._next_index = 0
        self._active_by_foundation: dict[tuple[str, str], int] = {}
        self.waiting_or_in_progress = 0
        self._serial = itertools.count()

    # -- structure -------------------------------------------------------------

    def add_list(self, stream: int) -> CheckList:
        checklist = CheckList(stream)
        self.lists[stream] = checklist
        self._order.append(stream)
        return checklist

    def reset_list(self, stream: int) -> CheckList:
        """Forget a list's pairs (ICE restart, §9): counters are unwound."""
        old = self.lists[stream]
        for pair in old.pairs.values():
            self._count(pair.state, pair, -1)
        fresh = CheckList(stream)
        self.lists[stream] = fresh
        return fresh

    def add_pair(self, pair: CandidatePair, *, unfreeze: bool) -> None:
        """Insert a new Frozen pair, Waiting when ``unfreeze`` (RFC 8838 §10)."""
        checklist = self.lists[pair.stream]
        checklist.pairs[pair.key] = pair
        pair.state = PairState.FROZEN
        self._count(PairState.FROZEN, pair, +1)
        if unfreeze:
            self.set_state(pair, PairState.WAITING)

    def remove_pair(self, pair: CandidatePair) -> None:
        """Drop a pair (check list limit, §6.1.2.5); counters are unwound."""
        checklist = self.lists[pair.stream]
        if checklist.pairs.get(pair.key) is not pair:
            return
        self._count(pair.state, pair, -1)
        del checklist.pairs[pair.key]

    def should_unfreeze_new_pair(self, pair: CandidatePair) -> bool:
        """RFC 8838 §10: a pair trickled into a Running list is Waiting unless
        another pair of its foundation is already Waiting or In-Progress; a
        pair of a foundation that already succeeded somewhere is Waiting."""
        checklist = self.lists[pair.stream]
        if not checklist.running:
            return False
        return self._active_by_foundation.get(pair.foundation, 0) == 0

    # -- states ----------------------------------------------------------------

    def set_state(self, pair: CandidatePair, state: PairState) -> None:
        old = pair.state
        if old is state:
            if state is PairState.WAITING:
                self._push_waiting(pair)
            return
        self._count(old, pair, -1)
        pair.state = state
        self._count(state, pair, +1)
        if state is PairState.WAITING:
            self._push_waiting(pair)

    def _count(self, state: PairState, pair: CandidatePair, delta: int) -> None:
        checklist = self.lists.get(pair.stream)
        if checklist is None or checklist.pairs.get(pair.key) is not pair:
            return
        if state in _PENDING:
            checklist.pending += delta
        if state is PairState.FROZEN:
            checklist.frozen += delta
        if state is PairState.WAITING or state is PairState.IN_PROGRESS:
            self.waiting_or_in_progress += delta
            found = pair.foundation
            self._active_by_foundation[found] = self._active_by_foundation.get(found, 0) + delta

    def _push_waiting(self, pair: CandidatePair) -> None:
        serial = next(self._serial)
        pair.heap_serial = serial
        heapq.heappush(self.lists[pair.stream].waiting, (-pair.priority, serial, pair))

    def replace_remote(self, pair: CandidatePair, remote: Candidate, controlling: bool) -> None:
        """A signalled candidate replaces the peer-reflexive remote candidate
        of ``pair`` (same address: the key stays; RFC 8445 §7.3.1.3, RFC 8838
        §11.4): type, priority and foundation are the signalled ones, and the
        counters move to the new foundation."""
        state = pair.state
        self._count(state, pair, -1)
        pair.remote = remote
        pair.foundation = (pair.local.foundation, remote.foundation)
        pair.priority = compute_pair_priority(pair.local, remote, controlling)
        if pair.valid_local is not None:
            pair.valid_priority = compute_pair_priority(pair.valid_local, remote, controlling)
        self._count(state, pair, +1)
        if state is PairState.WAITING:
            self._push_waiting(pair)  # its place in the heap follows the priority

    def reprioritize(self, controlling: bool) -> None:
        """Role switch (§7.2.5.1, §7.3.1.1): pair priorities are recomputed."""
        for checklist in self.lists.values():
            for pair in checklist.pairs.values():
                pair.priority = compute_pair_priority(pair.local, pair.remote, controlling)
                if pair.valid_local is not None:
                    pair.valid_priority = compute_pair_priority(
                        pair.valid_local, pair.remote, controlling
                    )
            checklist.waiting = []
            for pair in checklist.pairs.values():
                if pair.state is PairState.WAITING:
                    self._push_waiting(pair)

    # -- unfreezing ------------------------------------------------------------

    def initial_unfreeze(self, stream: int) -> None:
        """§6.1.2.6: per foundation, the pair with the lowest component ID and
        then the highest priority becomes Waiting; the list becomes Running."""
        checklist = self.lists[stream]
        checklist.running = True
        best: dict[tuple[str, str], CandidatePair] = {}
        for pair in checklist.pairs.values():
            if pair.state is not PairState.FROZEN:
                continue
            cur = best.get(pair.foundation)
            if cur is None or (pair.component, -pair.priority) < (cur.component, -cur.priority):
                best[pair.foundation] = pair
        for found, pair in best.items():
            if self._active_by_foundation.get(found, 0) == 0:
                self.set_state(pair, PairState.WAITING)

    def unfreeze_foundation(self, foundation: tuple[str, str]) -> None:
        """§7.2.5.3.3: a success unfreezes its foundation's Frozen pairs in
        every check list, and those lists become Running."""
        for checklist in self.lists.values():
            if checklist.frozen == 0:
                continue
            for pair in checklist.pairs.values():
                if pair.state is PairState.FROZEN and pair.foundation == foundation:
                    self.set_state(pair, PairState.WAITING)
                    checklist.running = True

    def _unfreeze_idle_foundations(self, checklist: CheckList) -> None:
        """§6.1.4.2: with nothing Waiting, one Frozen pair per foundation that
        has no Waiting or In-Progress pair in any list becomes Waiting."""
        chosen: dict[tuple[str, str], CandidatePair] = {}
        for pair in checklist.pairs.values():
            if pair.state is not PairState.FROZEN:
                continue
            found = pair.foundation
            if self._active_by_foundation.get(found, 0):
                continue
            cur = chosen.get(found)
            if cur is None or (pair.component, -pair.priority) < (cur.component, -cur.priority):
                chosen[found] = pair
        for pair in chosen.values():
            self.set_state(pair, PairState.WAITING)

    # -- choosing the next check -------------------------------------------------

    def enqueue_triggered(self, pair: CandidatePair) -> None:
        """§7.3.1.4: the pair goes to the triggered-check queue (once); a
        Frozen or Failed pair becomes Waiting, a Succeeded one (a nomination
        check, §8.1.1) stays Succeeded."""
        if pair.state is PairState.FROZEN or pair.state is PairState.FAILED:
            self.set_state(pair, PairState.WAITING)
        if not pair.triggered:
            pair.triggered = True
            self.lists[pair.stream].triggered.append(pair)

    def next_check(self, ready: set[int]) -> CandidatePair | None:
        """The pair to check now, serving the lists of streams in ``ready``
        (those with remote credentials) round robin (§6.1.4.2)."""
        order = self._order
        n = len(order)
        for i in range(n):
            index = (self._next_index + i) % n
            stream = order[index]
            if stream not in ready:
                continue
            checklist = self.lists[stream]
            if not checklist.running:
                self.initial_unfreeze(stream)
            pair = self._take(checklist)
            if pair is not None:
                self._next_index = (index + 1) % n
                return pair
        return None

    def _take(self, checklist: CheckList) -> CandidatePair | None:
        while checklist.triggered:
            queued = checklist.triggered.popleft()
            queued.triggered = False
            if checklist.pairs.get(queued.key) is not queued:
                continue
            if queued.state is PairState.IN_PROGRESS:
                continue
            if queued.state is PairState.SUCCEEDED and not (queued.nominating or queued.recheck):
                continue  # the cancelled check it replaced was answered meanwhile
            return queued
        pair = self._pop_waiting(checklist)
        if pair is None and checklist.frozen:
            self._unfreeze_idle_foundations(checklist)
            pair = self._pop_waiting(checklist)
        return pair

    def _pop_waiting(self, checklist: CheckList) -> CandidatePair | None:
        heap = checklist.waiting
        while heap:
            _, serial, pair = heapq.heappop(heap)
            if (
                pair.heap_serial == serial
                and pair.state is PairState.WAITING
                and checklist.pairs.get(pair.key) is pair
            ):
                return pair
        return None
