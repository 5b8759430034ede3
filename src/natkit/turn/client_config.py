"""The TURN client's configuration and states (RFC 8656 §7-§12), sans-IO.

Theory of operation
-------------------
:class:`TurnClientConfig` is the one frozen config of
:class:`~natkit.turn.client.TurnClient` and
:class:`~natkit.turn.client_tcp.TurnConnectionBinder`: the refresh schedule
(allocation lifetime, §7.2/§8; permissions, 300 s, §9; channel bindings, 600
s, §12), the data queues and the RFC 8489 retransmission timers it hands to
the :class:`~natkit.stun.transaction.StunClient`. :class:`ClientState` is the
allocation's life (IDLE -> ALLOCATING -> ALLOCATED -> RELEASING -> one of the
ended states) and :class:`AllocateParams` what Allocate asked for (§7.1; RFC
6062 §4.1 for TCP), kept so that a 300 Try Alternate or a stream driver's
reconnect can ask again. They live apart from the client so that every
``client_*`` module can use them without importing the client.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from natkit.addr import Family
from natkit.rng import Rng, default_rng
from natkit.stun.transaction import StunClientConfig
from natkit.turn.attributes import TransportProtocol

__all__ = ["AllocateParams", "ClientState", "TurnClientConfig"]


@dataclass(frozen=True, slots=True)
class TurnClientConfig:
    """Timers in seconds; defaults follow RFC 8656 (§7-§12) and RFC 8489."""

    stream: bool = False  # the transport to the server is TCP or TLS
    software: str | None = "natkit"
    auto_bind: bool = True  # send_to binds a channel to each new peer
    refresh_margin: float = 60.0  # refresh the allocation this long before it expires
    permission_refresh: float = 240.0  # permissions last 300 s (§9)
    channel_refresh: float = 540.0  # channel bindings last 600 s (§12)
    max_queued: int = 64  # packets waiting for a permission, per peer IP
    max_queue_delay: float = 5.0  # ... and for at most this long (older ones are dropped)
    permission_retry: float = 30.0  # send_to to an IP the server refused: dropped this long
    permission_batch: int = 100  # at most this many peers per CreatePermission (fewer over UDP)
    keepalive_interval: float | None = 10.0  # UDP: Binding indication after this much quiet
    max_redirects: int = 3
    draft_dual_allocation: bool = True  # also send coturn's 0x8032 (client_requests._DRAFT_...)
    rto: float = 0.5
    rc: int = 7
    rm: int = 16
    ti: float = 39.5
    fingerprint: bool = False
    rng: Rng = field(default_factory=default_rng)

    def stun_config(self) -> StunClientConfig:
        return StunClientConfig(
            rto=self.rto,
            rc=self.rc,
            rm=self.rm,
            ti=self.ti,
            reliable=self.stream,
            software=self.software,
            fingerprint=self.fingerprint,
            rng=self.rng,
        )


class ClientState(enum.Enum):
    IDLE = "idle"
    ALLOCATING = "allocating"
    ALLOCATED = "allocated"
    RELEASING = "releasing"
    RELEASED = "released"
    FAILED = "failed"
    LOST = "lost"
    REDIRECTED = "redirected"  # stream transports: the driver must reconnect

    @property
    def ended(self) -> bool:
        return self in (
            ClientState.RELEASED,
            ClientState.FAILED,
            ClientState.LOST,
            ClientState.REDIRECTED,
        )


@dataclass(slots=True)
class AllocateParams:
    """The arguments of :meth:`TurnClient.allocate` (see there)."""

    lifetime: int | None
    family: Family
    additional_family: Family | None
    even_port: bool | None
    reservation_token: bytes | None
    dont_fragment: bool
    transport: TransportProtocol
