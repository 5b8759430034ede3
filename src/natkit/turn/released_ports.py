"""Relay ports given back, oldest first: reuse and quarantine (sans-IO).

RFC 8656 §7.2 recommends a randomized port assignment (RFC 6056) and notes
that a server may pre-allocate ports from the operating system and assign
them later. natkit's driver keeps the sockets of released UDP relays open
(parked, ``TurnServerRunner``); opening and closing a socket per
allocation was about 40% of the server's work under allocation churn.
This table lets the core hand those ports out again:

* a new allocation takes the port released longest ago, once it has been
  free for at least ``quarantine`` seconds, so datagrams still on their way
  to the old allocation are not read by the new one;
* a port released less than ``quarantine`` ago is not given out by the
  random pick either (without this table a just-released port could be);
* at most ``capacity`` ports are remembered per relay IP. When the table
  is full a newly released port is not remembered (the driver closes that
  socket rather than parking it), so the ones kept are the oldest, the next
  to leave quarantine. Forgetting the oldest instead would, under a churn
  above ``capacity / quarantine`` per second, drop every port before its
  quarantine ends: nothing would ever be reused.

A remembered port that has since been claimed by a random pick is skipped.
With ``capacity`` 0 nothing is remembered: every port is a random pick, the
way it was before the pool.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ReleasedPorts"]


class ReleasedPorts:
    """Per relay IP: released port -> when, in release order."""

    __slots__ = ("_by_ip", "capacity", "quarantine")

    def __init__(self, capacity: int, quarantine: float) -> None:
        if capacity < 0 or quarantine < 0:
            raise ValueError("capacity and quarantine must not be negative")
        self.capacity = capacity
        self.quarantine = quarantine
        # OrderedDict, not dict: taking from the front of a plain dict over and
        # over scans the holes left by earlier deletions.
        self._by_ip: dict[str, OrderedDict[int, float]] = {}

    def add(self, ip: str, port: int, now: float) -> None:
        """``port`` on ``ip`` was released at ``now``."""
        if not self.capacity:
            return
        released = self._by_ip.get(ip)
        if released is None:
            released = self._by_ip[ip] = OrderedDict()
        if port in released:
            released.move_to_end(port)  # released again: it goes to the end
        elif len(released) >= self.capacity:
            return  # full: keep the oldest (see the module docstring)
        released[port] = now

    def take(self, ip: str, used: set[int], now: float) -> int | None:
        """The port released longest ago, if it has been free for the
        quarantine and is not in ``used`` (claimed since); it is forgotten."""
        released = self._by_ip.get(ip)
        if not released:
            return None
        claimed: list[int] = []
        found: int | None = None
        for port, when in released.items():
            if port in used:
                claimed.append(port)
                if len(claimed) < 64:  # bounded: a quiet table is cleaned lazily
                    continue
            elif now - when >= self.quarantine:
                found = port
            break
        for port in claimed:
            del released[port]
        if found is not None:
            del released[found]
        return found

    def cooling(self, ip: str, port: int, now: float) -> bool:
        """Whether ``port`` was released less than the quarantine ago."""
        released = self._by_ip.get(ip)
        if not released:
            return False
        when = released.get(port)
        return when is not None and now - when < self.quarantine

    def __len__(self) -> int:
        return sum(len(released) for released in self._by_ip.values())
