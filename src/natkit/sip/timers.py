"""SIP transaction timers: their configuration and one deadline heap, sans-IO.

RFC 3261 §17 names every timer after a letter and derives them from three
constants (Table 4): T1, the round-trip estimate (500 ms), T2, the cap on
non-INVITE request and INVITE response retransmission intervals (4 s), and
T4, how long a message may stay in the network (5 s). :class:`TimerConfig`
holds those, plus the timers RFC 3261 leaves to the implementation: Timer D
(at least 32 s), Timer C (the proxy's INVITE guard, §16.6 step 11, more than
3 minutes) and the 200 ms after which an INVITE server transaction sends
100 Trying on the TU's behalf (§17.2.1). Everything else is a multiple:
B = F = H = L = M = 64*T1 (RFC 6026 for L and M), I = T4, J = 64*T1, K = T4.

:class:`TimerHeap` keeps ``(deadline, seq, owner, name)`` entries. An owner
(a transaction) records the deadline of each armed timer by name; an entry
whose owner no longer holds that deadline under that name is stale and is
skipped when it surfaces, so re-arming and cancelling cost no heap search.
Stale entries are compacted away once the heap has doubled.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["TimerConfig", "TimerHeap", "TimerOwner"]

_COMPACT_MIN = 1024  # heap size below which stale entries are never compacted


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 Table 4 constants and the implementation-chosen timers.

    ``t1``/``t2``/``t4``: RFC 3261 §17.1.1.1 and Table 4. ``timer_d``: how
    long an INVITE client transaction absorbs retransmitted final responses
    over an unreliable transport (>= 32 s). ``timer_c``: how long an INVITE
    client transaction waits in Proceeding for a final response before the
    TU is told (RFC 3261 §16.6 step 11; > 3 min), ``None`` for none: a UA
    may ring as long as it likes, then only its CANCEL bounds the
    transaction. ``trying_delay``: the
    200 ms of §17.2.1 after which a 100 Trying is sent for an INVITE the TU
    has not answered; ``None`` sends none.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float | None = 180.0
    timer_d: float = 32.0
    trying_delay: float | None = 0.2

    @property
    def timer_b(self) -> float:
        """INVITE client transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_f(self) -> float:
        """Non-INVITE client transaction timeout (64*T1)."""
        return 64 * self.t1

    @property
    def timer_h(self) -> float:
        """Wait time for the ACK of a non-2xx final response (64*T1)."""
        return 64 * self.t1

    @property
    def timer_j(self) -> float:
        """Non-INVITE server: wait time for request retransmits (64*T1)."""
        return 64 * self.t1

    @property
    def timer_l(self) -> float:
        """RFC 6026 §8.7: INVITE server Accepted state lifetime (64*T1)."""
        return 64 * self.t1

    @property
    def timer_m(self) -> float:
        """RFC 6026 §8.4: INVITE client Accepted state lifetime (64*T1)."""
        return 64 * self.t1


class TimerOwner(Protocol):
    """Something that arms timers: it maps each armed timer's name to its
    deadline, and says whether it is still alive."""

    @property
    def timers(self) -> dict[str, float]: ...

    @property
    def alive(self) -> bool: ...


@dataclass(slots=True)
class TimerHeap:
    """Deadlines of every armed timer; see the module docstring."""

    _heap: list[tuple[float, int, TimerOwner, str]] = field(default_factory=list)
    _seq: int = 0
    _compact_at: int = _COMPACT_MIN

    def arm(self, owner: TimerOwner, name: str, deadline: float) -> None:
        """Arm (or re-arm) ``owner``'s timer ``name`` for ``deadline``."""
        owner.timers[name] = deadline
        self._seq += 1
        heapq.heappush(self._heap, (deadline, self._seq, owner, name))
        if len(self._heap) >= self._compact_at:
            self._compact()

    @staticmethod
    def cancel(owner: TimerOwner, name: str) -> None:
        """Disarm ``owner``'s timer ``name`` (its heap entry becomes stale)."""
        owner.timers.pop(name, None)

    def next_deadline(self) -> float | None:
        """The earliest live deadline, or None; drops stale entries on top."""
        heap = self._heap
        while heap:
            deadline, _, owner, name = heap[0]
            if owner.alive and owner.timers.get(name) == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def pop_due(self, now: float) -> tuple[TimerOwner, str] | None:
        """The next live timer due at ``now`` (disarmed as it is returned)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, owner, name = heapq.heappop(heap)
            if owner.alive and owner.timers.get(name) == deadline:
                del owner.timers[name]
                return owner, name
        return None

    def __len__(self) -> int:
        return len(self._heap)

    def _compact(self) -> None:
        live = [
            entry
            for entry in self._heap
            if entry[2].alive and entry[2].timers.get(entry[3]) == entry[0]
        ]
        heapq.heapify(live)
        self._heap = live
        self._compact_at = max(_COMPACT_MIN, 2 * len(live))
