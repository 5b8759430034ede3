"""Events reported by media cores (past tense, frozen, keyword-only)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DigitReceived", "DigitStarted", "DtmfEvent"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitStarted:
    """The first packet of a telephone event arrived (RFC 4733 §2.5.2.1).

    ``timestamp`` is the event's RTP timestamp: its start on the media clock.
    """

    digit: str
    event: int
    timestamp: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitReceived:
    """A telephone event ended (RFC 4733 §2.5.2.2), reported once.

    ``duration`` is in RTP clock units (the last duration field seen),
    ``seconds`` the same on the wall. ``end_seen`` is False when the end
    was inferred: no E-bit packet arrived before the next event or the
    receiver's timeout.
    """

    digit: str
    event: int
    timestamp: int
    duration: int
    seconds: float
    volume: int
    end_seen: bool


DtmfEvent = DigitStarted | DigitReceived
