"""What a :class:`~natkit.sip.registration.RegistrationClient` reports
(RFC 3261 §10.2, RFC 5626 §4).

Flows are named by their index, which is also their ``reg-id`` when
Outbound is on (RFC 5626 §4.2: 1, 2, ... in configuration order). Events are
frozen, keyword-only and past tense; a driver or UA core drains them with
``next_event()`` and handles them with ``match``. :class:`KeepaliveDue` is an
order for the driver rather than news: send one keepalive (RFC 5626 §4.4.1,
STUN Binding on UDP, CRLFCRLF on streams) over the flow and report the
outcome with ``keepalive_answered`` / ``keepalive_failed``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.sip.flow import Target

__all__ = [
    "FlowFailed",
    "KeepaliveDue",
    "KeepaliveMethod",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationSucceeded",
    "Unregistered",
]


class KeepaliveMethod(enum.StrEnum):
    """RFC 5626 §4.4.1: how a flow is kept alive."""

    STUN = "stun"  # STUN Binding request on the SIP UDP flow (RFC 5626 §8)
    CRLF = "crlf"  # CRLFCRLF ping, CRLF pong, on TCP/TLS/WS (RFC 5626 §4.4.1)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSucceeded:
    """A 2xx to our REGISTER: the binding of ``flow`` lasts ``expires``
    seconds (RFC 3261 §10.2.4, our Contact's ``expires`` param or the
    Expires header). ``outbound``: the registrar answered ``Require:
    outbound`` (RFC 5626 §4.2.1); ``flow_timer``: its Flow-Timer (§4.4.1).
    ``pub_gruu``/``temp_gruu``: RFC 5627 §4.2 GRUUs from our Contact."""

    flow: int
    expires: int
    refresh_at: float
    outbound: bool = False
    flow_timer: int | None = None
    pub_gruu: str | None = None
    temp_gruu: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationFailed:
    """A REGISTER of ``flow`` failed: final ``status`` (None: the
    transaction timed out or could not be sent), including a 401/407 whose
    credentials the registrar refused. The client tries again at
    ``retry_at`` (RFC 5626 §4.5 back-off; later if a Retry-After says so)."""

    flow: int
    status: int | None
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowFailed:
    """``flow`` failed (keepalive unanswered, connection closed, transport
    error; RFC 5626 §4.4, §4.5); it re-registers at ``retry_at``."""

    flow: int
    reason: str
    retry_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class KeepaliveDue:
    """Send one keepalive over ``target`` (its ``flow`` pins the connection
    the registration used) and report back; the client counts it failed
    after its keepalive timeout without an answer."""

    flow: int
    target: Target
    method: KeepaliveMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class Unregistered:
    """``flow``'s binding was removed (a 2xx to our Expires: 0 REGISTER), or
    the attempt to remove it ended (``status`` not 2xx); the flow is idle."""

    flow: int
    status: int | None = 200


RegistrationEvent = (
    RegistrationSucceeded | RegistrationFailed | FlowFailed | KeepaliveDue | Unregistered
)
