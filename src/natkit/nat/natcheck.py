"""``natcheck``: the classic test and RFC 5780 discovery, run together (sans-IO).

:class:`NatCheck` owns a :class:`~natkit.nat.prober.Prober` over the local
sockets the driver opened (:meth:`NatCheck.sockets_needed` says how many) and
runs :class:`~natkit.nat.classic.ClassicTest` and
:class:`~natkit.nat.behavior.BehaviorTest` concurrently on disjoint sockets,
so neither disturbs the other's NAT state. It reports each finished probe as
:class:`ProbeFinished` (for progress displays) and the whole answer as
:class:`NatCheckFinished`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from natkit.addr import Datagram, Endpoint
from natkit.nat.behavior import LIFETIME_LADDER, BehaviorSockets, BehaviorTest
from natkit.nat.classic import ClassicTest
from natkit.nat.prober import Prober, probe_config
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.rng import Rng, default_rng
from natkit.stun.transaction import StunClientConfig

__all__ = [
    "NatCheck",
    "NatCheckConfig",
    "NatCheckEvent",
    "NatCheckFinished",
    "NatCheckResult",
    "ProbeFinished",
]


@dataclass(frozen=True, slots=True)
class NatCheckConfig:
    """Each probe is a STUN transaction with a short schedule: with the
    defaults, sends at 0, 0.2, 0.6 and 1.4 s and a verdict of "no answer" at
    2.2 s. ``lifetime`` adds binding lifetime discovery (minutes)."""

    classic: bool = True
    behavior: bool = True
    lifetime: bool = False
    lifetime_max: float = 600.0
    lifetime_resolution: float = 1.0
    rto: float = 0.2
    rc: int = 4
    rm: int = 4
    software: str | None = None
    rng: Rng = field(default_factory=default_rng)


@dataclass(frozen=True, slots=True)
class NatCheckResult:
    server: Endpoint
    local_address: Endpoint | None
    public_address: Endpoint | None
    classic: NatType | None
    classic_reason: str
    nat_present: bool | None
    mapping: Mapping | None
    filtering: Filtering | None
    hairpinning: bool | None
    port_preservation: bool | None
    other_address: Endpoint | None
    binding_lifetime: float | None
    binding_lifetime_bounds: tuple[float, float | None] | None
    elapsed: float
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The ``natkit natcheck --json`` object."""
        return {
            "server": str(self.server),
            "local_address": str(self.local_address) if self.local_address else None,
            "public_address": str(self.public_address) if self.public_address else None,
            "classic": self.classic.value if self.classic else None,
            "classic_reason": self.classic_reason or None,
            "nat_present": self.nat_present,
            "mapping": self.mapping.value if self.mapping else None,
            "filtering": self.filtering.value if self.filtering else None,
            "hairpinning": self.hairpinning,
            "port_preservation": self.port_preservation,
            "other_address": str(self.other_address) if self.other_address else None,
            "binding_lifetime_s": self.binding_lifetime,
            "binding_lifetime_bounds_s": list(self.binding_lifetime_bounds)
            if self.binding_lifetime_bounds
            else None,
            "elapsed_s": round(self.elapsed, 4),
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeFinished:
    name: str
    answered: bool
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NatCheckFinished:
    result: NatCheckResult


NatCheckEvent = ProbeFinished | NatCheckFinished


class NatCheck:
    """The combined detector; see the module docstring."""

    @staticmethod
    def sockets_needed(config: NatCheckConfig) -> int:
        n = 2 if config.classic else 0
        if config.behavior:
            n += 3
            if config.lifetime:
                n += 1 + len(LIFETIME_LADDER)
        return n

    def __init__(self, server: Endpoint, locals: list[Endpoint], config: NatCheckConfig) -> None:
        if len(locals) < self.sockets_needed(config):
            raise ValueError(f"natcheck needs {self.sockets_needed(config)} sockets")
        self.server = server
        self.config = config
        client_config = probe_config(
            config.rto,
            config.rc,
            config.rm,
            StunClientConfig(rng=config.rng, software=config.software),
        )
        self.prober = Prober(list(locals), client_config)
        self._events: deque[NatCheckEvent] = deque()
        self._started_at: float | None = None
        self._finished = False
        free = list(locals)
        self.classic: ClassicTest | None = None
        self.behavior: BehaviorTest | None = None
        if config.classic:
            self.classic = ClassicTest(self.prober, free.pop(0), server, test2_local=free.pop(0))
        if config.behavior:
            mapping, filtering, hairpin = free.pop(0), free.pop(0), free.pop(0)
            sender = free.pop(0) if config.lifetime else None
            probes = tuple(free[: len(LIFETIME_LADDER)]) if config.lifetime else ()
            self.behavior = BehaviorTest(
                self.prober,
                BehaviorSockets(mapping, filtering, hairpin, sender, probes),
                server,
                lifetime=config.lifetime,
                lifetime_max=config.lifetime_max,
                lifetime_resolution=config.lifetime_resolution,
            )

    def start(self, *, now: float) -> None:
        self._started_at = now
        if self.classic is not None:
            self.classic.start(now=now)
        if self.behavior is not None:
            self.behavior.start(now=now)
        self._process(now)

    # -- sans-IO surface -------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float) -> None:
        self.prober.receive_datagram(data, addr, local=local, now=now)
        self._process(now)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        return self.prober.datagrams_to_send(now=now)

    def get_timer(self) -> float | None:
        if self._finished:
            return None
        timers = [self.prober.get_timer()]
        if self.behavior is not None:
            timers.append(self.behavior.get_timer())
        present = [t for t in timers if t is not None]
        return min(present) if present else None

    def handle_timer(self, *, now: float) -> None:
        if self.behavior is not None:
            self.behavior.handle_timer(now=now)
        self.prober.handle_timer(now=now)
        self._process(now)

    def next_event(self) -> NatCheckEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def done(self) -> bool:
        return self._finished

    # -- internals -------------------------------------------------------------------

    def _process(self, now: float) -> None:
        prober = self.prober
        while prober.requests_seen or prober.outcomes:
            while prober.requests_seen:
                seen = prober.requests_seen.popleft()
                if self.behavior is not None:
                    self.behavior.on_request_seen(seen.local, seen.transaction_id)
            while prober.outcomes:
                outcome = prober.outcomes.popleft()
                self._events.append(
                    ProbeFinished(name=outcome.name, answered=outcome.response is not None, at=now)
                )
                if self.classic is not None:
                    self.classic.on_outcome(outcome, now=now)
                if self.behavior is not None:
                    self.behavior.on_outcome(outcome, now=now)
        if self._finished:
            return
        if (self.classic is None or self.classic.done) and (
            self.behavior is None or self.behavior.done
        ):
            self._finished = True
            prober.cancel_all()  # e.g. Test III once Test II settled the question
            self._events.append(NatCheckFinished(result=self._result(now)))

    def _result(self, now: float) -> NatCheckResult:
        c = self.classic.result if self.classic else None
        b = self.behavior.result if self.behavior else None
        public = (c.public_address if c else None) or (b.mapped_address if b else None)
        local = c.local_address if c else (self.behavior.s.mapping if self.behavior else None)
        return NatCheckResult(
            server=self.server,
            local_address=local,
            public_address=public,
            classic=c.nat_type if c else None,
            classic_reason=c.reason if c else "",
            nat_present=b.nat_present
            if b
            else (
                None
                if c is None or c.public_address is None
                else c.public_address != c.local_address
            ),
            mapping=b.mapping if b else None,
            filtering=b.filtering if b else None,
            hairpinning=b.hairpinning if b else None,
            port_preservation=b.port_preservation if b else None,
            other_address=b.other_address if b else None,
            binding_lifetime=b.lifetime if b else None,
            binding_lifetime_bounds=b.lifetime_bounds if b else None,
            elapsed=now - (self._started_at if self._started_at is not None else now),
            notes=tuple(b.notes) if b else (),
        )
