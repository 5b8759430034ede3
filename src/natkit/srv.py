"""SRV records and their RFC 2782 order, for every protocol that locates servers.

STUN and TURN (RFC 8489 §8, RFC 8656 §3.1) and SIP (RFC 3263 §4.2) all find
servers through SRV records ordered the same way: ascending priority, and
within one priority a weighted random draw. The DNS lookups themselves are
the drivers' (:mod:`natkit.net.dns`, :mod:`natkit.sip.aio.resolve`); this
module is only the ordering, so sans-IO cores can use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from natkit.rng import Rng, default_rng

__all__ = ["SrvAnswer", "SrvRecord", "order_srv"]


class SrvAnswer(Protocol):
    """Anything shaped like an SRV record (RFC 2782)."""

    @property
    def priority(self) -> int: ...
    @property
    def weight(self) -> int: ...
    @property
    def port(self) -> int: ...
    @property
    def target(self) -> str: ...


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str


_S = TypeVar("_S", bound=SrvAnswer)


def order_srv(records: Sequence[_S], rng: Rng | None = None) -> list[_S]:
    """RFC 2782 "Usage rules": ascending priority; within one priority,
    repeatedly draw a record with probability proportional to its weight
    (zero-weight records come first in the running sum, as the RFC asks, so
    they keep a small chance). Target "." means "no service here" and is
    dropped (so is an empty target)."""
    rng = rng or default_rng()
    out: list[_S] = []
    for priority in sorted({r.priority for r in records}):
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return [r for r in out if r.target not in (".", "")]
