"""Events of the NAT helper's binding pinger (:class:`natkit.sip.nat_helper.NatPinger`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LossReason", "NatBindingLost", "NatPingerEvent"]


class LossReason(enum.StrEnum):
    """Why a NATed binding was given up."""

    NO_ANSWER = "no-answer"  # max_missed OPTIONS pings in a row timed out or failed
    FLOW_CLOSED = "flow-closed"  # the stream connection it registered over is gone


@dataclass(frozen=True, slots=True, kw_only=True)
class NatBindingLost:
    """The binding ``key`` of ``aor`` (Contact ``contact``) stopped answering:
    the registrar should delete it (RFC 3261 §10.3 leaves a registrar free to
    drop a binding early; a UA that is still there re-registers). The pinger
    has already stopped tracking it."""

    aor: str
    key: str
    contact: str
    reason: LossReason
    missed: int = 0


NatPingerEvent = NatBindingLost
