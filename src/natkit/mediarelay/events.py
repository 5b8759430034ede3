"""Events reported by the media relay core (past tense, frozen, keyword-only).

:class:`CallDeleted` is the driver's cue to close the call's sockets and
return its ports; the others tell operators (and the signalling) what the
relay learned.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.mediarelay.legs import Component, LegEndpoints, LegSide
from natkit.mediarelay.stats import CallStats

__all__ = [
    "CallCreated",
    "CallDeleted",
    "CallTimedOut",
    "CallUpdated",
    "DeleteReason",
    "LatchReason",
    "MediaRelayEvent",
    "SourceConfirmed",
    "SourceLatched",
]


class LatchReason(enum.Enum):
    """Why a relay port's remote endpoint moved."""

    LEARNED = "learned"  # a packet within the learning window (comedia)
    SSRC_HANDOVER = "ssrc-handover"  # same SSRC from a new source after silence: NAT rebinding
    LOOSE = "loose"  # strict_source off: any new source after the window


class DeleteReason(enum.Enum):
    DELETED = "deleted"  # delete_call
    TIMED_OUT = "timed-out"  # idle_timeout without media
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallCreated:
    call_id: str
    a: LegEndpoints
    b: LegEndpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUpdated:
    """A re-offer: the learning window opened again on both legs."""

    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceLatched:
    """``leg``'s ``component`` port now sends to (and accepts from) ``remote``
    instead of ``previous`` (the SDP address, an earlier source, or None)."""

    call_id: str
    leg: LegSide
    component: Component
    remote: Endpoint
    previous: Endpoint | None
    reason: LatchReason


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceConfirmed:
    """The learning window of ``leg``'s ``component`` port closed on ``remote``:
    from now on the source is strict."""

    call_id: str
    leg: LegSide
    component: Component
    remote: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class CallTimedOut:
    """No valid packet on any leg for ``idle_for`` seconds; the call is being
    torn down (a :class:`CallDeleted` follows)."""

    call_id: str
    idle_for: float
    stats: CallStats


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDeleted:
    """The call is gone: close ``local_endpoints`` and return their ports."""

    call_id: str
    reason: DeleteReason
    local_endpoints: tuple[Endpoint, ...]
    stats: CallStats


MediaRelayEvent = (
    CallCreated | CallUpdated | SourceLatched | SourceConfirmed | CallTimedOut | CallDeleted
)
