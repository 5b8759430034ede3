"""Expiries of the TURN server: one heap for every timed record, sans-IO.

Allocations (RFC 8656 §7.2, §8), permissions (§9), channels and their
quarantine (§12), reservations (§7.2: 30 s), RFC 6062 peer connections
waiting for ConnectionBind (RFC 6062 §5.2-5.3) and Allocates waiting for the
driver's sockets all live in one heap of ``(deadline, seq, record)``, and
each record keeps the deadline of its current entry in ``timer_at``. A
refresh that moves a deadline later does not touch the heap (the entry
re-arms itself when it fires), one that moves it earlier pushes a new entry
and the old one becomes stale, so each event is O(log n) and the heap holds
about one entry per live record; stale entries are compacted away once the
heap has doubled. What an expiry does is decided by
:meth:`natkit.turn.server.TurnServer.handle_timer`.
"""

from __future__ import annotations

import heapq

from natkit.turn.allocation import (
    Allocation,
    Channel,
    PeerConnection,
    PendingAllocate,
    Permission,
    Reservation,
)
from natkit.turn.server_base import _ServerBase

_Timed = Allocation | Permission | Channel | Reservation | PeerConnection | PendingAllocate
_COMPACT_MIN = 4096  # timer entries below which the heap is never compacted


class _Timers(_ServerBase):
    """The expiry heap; see the module docstring."""

    _heap: list[tuple[float, int, _Timed]]
    _seq: int
    _compact_at: int  # heap size that triggers _compact_timers()

    def get_timer(self) -> float | None:
        """The earliest deadline (allocations, permissions, channels,
        reservations, RFC 6062 connections, pending Allocates), or None."""
        return self._heap[0][0] if self._heap else None

    def _arm(self, item: _Timed, deadline: float) -> None:
        item.timer_at = deadline
        self._seq += 1
        heap = self._heap
        heapq.heappush(heap, (deadline, self._seq, item))
        if len(heap) > self._compact_at:
            self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop the heap's stale entries (deleted or re-armed records, the
        pending Allocates that were answered), in place: otherwise each keeps
        its dead record alive until its deadline (600 s for an allocation
        deleted by a Refresh 0) and wakes the driver for nothing. The next
        compaction waits until the heap has doubled, so this is amortised
        O(1) per entry pushed."""
        heap = self._heap
        heap[:] = [e for e in heap if e[2].alive and e[2].timer_at == e[0]]
        heapq.heapify(heap)
        self._compact_at = max(2 * len(heap), _COMPACT_MIN)

    def _set_expiry(self, item: Allocation | Permission, expires: float) -> None:
        item.expires = expires
        if expires < item.timer_at:
            self._arm(item, expires)
        # A later expiry is found when the current entry fires and re-armed then.
