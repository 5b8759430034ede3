"""NAT behaviour discovery (RFC 5780 §4), sans-IO.

Theory of operation
-------------------
Each independent test has its own local socket, so all of them run at once:

* Mapping (§4.3), socket M: Test I to the primary address (A1,P1) gives M1
  and OTHER-ADDRESS (A2,P2). Then, together, Test II to (A2,P1) and Test III
  to (A2,P2). M2 = M1: endpoint-independent; else M3 = M2:
  address-dependent; else address-and-port-dependent. M1 equal to the local
  address means there is no NAT.
* Filtering (§4.4), socket F: Test II (change IP and port) and Test III
  (change port) to (A1,P1), together; both go to the same server address so
  neither opens the filter for the other. Test II answered (from (A2,P2)):
  endpoint-independent; else Test III answered (from (A1,P2)):
  address-dependent; else address-and-port-dependent.
* Hairpinning (§4.5), sockets M and H: once both know their mapped
  addresses, each sends a request to the other's. Either request arriving
  means the NAT hairpins. Sending both ways opens both filters, so a NAT
  with endpoint-independent mapping is measured fairly whatever it filters.
  Silence proves nothing when mapping and filtering are both
  endpoint-dependent: each request leaves through a new mapping that the
  other socket never addressed, so its filter drops the request whether or
  not the NAT hairpins. The verdict is then ``None`` with a note.
* Port preservation: M1's port equals M's local port.
* Binding lifetime (§4.6), optional, sockets X1..Xn and Y: each X does Test I
  to learn its mapping; after t_i seconds, Y asks the server to answer to
  X_i's mapped port (RESPONSE-PORT). The answer arrives at X_i only while its
  mapping lives. t_i is counted at the NAT: from X_i's last send to the
  probe's arrival, taken as one round trip after Y sends it. A ladder of t_i
  runs in parallel; a round ends once a probe found its mapping dead and
  every shorter one has answered (longer ones would only die too), then
  rounds of finer ladders run inside the bracket found, until it is
  narrower than the resolution or four rounds have run.

Answers that come from the wrong server address make the affected verdict
``None`` with a note, rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.nat.prober import ProbeOutcome, Prober
from natkit.nat.types import Filtering, Mapping
from natkit.stun.attributes import ChangeRequest

__all__ = ["BehaviorResult", "BehaviorSockets", "BehaviorTest", "LIFETIME_LADDER"]

MAX_LIFETIME_ROUNDS = 4  # a coarse ladder and three finer ones: ~1 s from 600 s
LIFETIME_LADDER = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 450.0, 600.0)


@dataclass(frozen=True, slots=True)
class BehaviorSockets:
    mapping: Endpoint
    filtering: Endpoint
    hairpin: Endpoint
    lifetime_sender: Endpoint | None = None
    lifetime_probes: tuple[Endpoint, ...] = ()


@dataclass(slots=True)
class BehaviorResult:
    nat_present: bool | None = None
    mapped_address: Endpoint | None = None
    other_address: Endpoint | None = None
    mapping: Mapping | None = None
    filtering: Filtering | None = None
    hairpinning: bool | None = None
    port_preservation: bool | None = None
    lifetime: float | None = None
    lifetime_bounds: tuple[float, float | None] | None = None
    notes: list[str] = field(default_factory=list)


class BehaviorTest:
    """RFC 5780 tests through a shared :class:`Prober`; see the module docstring."""

    def __init__(
        self,
        prober: Prober,
        sockets: BehaviorSockets,
        server: Endpoint,
        *,
        lifetime: bool = False,
        lifetime_max: float = 600.0,
        lifetime_resolution: float = 1.0,
    ) -> None:
        self.prober = prober
        self.s = sockets
        self.server = server
        self.result = BehaviorResult()
        self._o: dict[str, ProbeOutcome] = {}
        self._hairpin_tids: dict[bytes, str] = {}
        self._hairpin_started = False
        self._mapping_tests_sent = False
        self._mapping_done = self._filtering_done = self._hairpin_done = False
        self._lifetime_wanted = (
            lifetime and bool(sockets.lifetime_probes) and sockets.lifetime_sender is not None
        )
        self._lifetime_done = not self._lifetime_wanted
        self._lifetime_max = lifetime_max
        self._lifetime_resolution = lifetime_resolution
        self._ladder: list[float] = []
        self._round_start = 0.0
        self._round = 0
        self._scheduled: dict[int, float] = {}  # probe index -> absolute send time
        self._lifetime_mapped: dict[int, Endpoint] = {}
        self._lifetime_alive: dict[int, bool] = {}
        self._round_tids: list[bytes] = []
        self._low = 0.0
        self._high: float | None = None

    # -- control ---------------------------------------------------------------------

    def start(self, *, now: float) -> None:
        p, s, srv = self.prober, self.s, self.server
        p.probe("behavior.map1", s.mapping, srv, now=now)
        p.probe("behavior.filter2", s.filtering, srv, now=now, change=ChangeRequest(True, True))
        p.probe("behavior.filter3", s.filtering, srv, now=now, change=ChangeRequest(False, True))
        p.probe("behavior.hairpin1", s.hairpin, srv, now=now)
        if self._lifetime_wanted:
            # The longest probe is always lifetime_max itself, however many
            # shorter rungs fit.
            rungs = [t for t in LIFETIME_LADDER if t < self._lifetime_max]
            self._start_round([*rungs[: len(s.lifetime_probes) - 1], self._lifetime_max], now)

    @property
    def done(self) -> bool:
        return (
            self._mapping_done
            and self._filtering_done
            and self._hairpin_done
            and self._lifetime_done
        )

    def get_timer(self) -> float | None:
        return min(self._scheduled.values()) if self._scheduled else None

    def handle_timer(self, *, now: float) -> None:
        for idx, when in list(self._scheduled.items()):
            if when <= now:
                del self._scheduled[idx]
                mapped = self._lifetime_mapped[idx]  # scheduled only once mapped
                assert self.s.lifetime_sender is not None
                tid = self.prober.probe(
                    f"behavior.life{self._round}.{idx}",
                    self.s.lifetime_sender,
                    self.server,
                    now=now,
                    response_port=mapped.port,
                )
                self._round_tids.append(tid)

    def on_request_seen(self, local: Endpoint, transaction_id: bytes) -> None:
        name = self._hairpin_tids.get(transaction_id)
        if name is not None and not self._hairpin_done:
            self.result.hairpinning = True
            self._hairpin_done = True
            for tid in self._hairpin_tids:
                self.prober.cancel(tid)

    def on_outcome(self, outcome: ProbeOutcome, *, now: float) -> None:
        name = outcome.name
        if not name.startswith("behavior."):
            return
        key = name.removeprefix("behavior.")
        if key.startswith("life"):
            self._on_lifetime(key, outcome, now)
            return
        self._o[key] = outcome
        if key.startswith("hairpin.") and not self._hairpin_done:
            if all(k in self._o for k in ("hairpin.m2h", "hairpin.h2m")):
                self._decide_hairpin()
            return
        self._decide_mapping(now)
        self._decide_filtering()
        self._maybe_start_hairpin(now)

    # -- mapping (§4.3) --------------------------------------------------------------

    def _decide_mapping(self, now: float) -> None:
        if self._mapping_done:
            return
        r, o = self.result, self._o
        t1 = o.get("map1")
        if t1 is None:
            return
        m1 = t1.mapped
        if m1 is None:
            r.notes.append("mapping: Test I got no answer")
            self._mapping_done = True
            self._hairpin_done = True
            return
        r.mapped_address = m1
        r.port_preservation = m1.port == self.s.mapping.port
        other = t1.other_address
        r.other_address = other
        if m1 == self.s.mapping:
            r.nat_present = False
            r.mapping = Mapping.ENDPOINT_INDEPENDENT
            self._mapping_done = True
            return
        r.nat_present = True
        if other is None or other.host == self.server.host or other.port == self.server.port:
            r.notes.append(
                "mapping: the server reports no usable OTHER-ADDRESS (not an RFC 5780 server)"
            )
            self._mapping_done = True
            return
        if not self._mapping_tests_sent:
            self._mapping_tests_sent = True
            self.prober.probe(
                "behavior.map2", self.s.mapping, Endpoint(other.host, self.server.port), now=now
            )
            self.prober.probe("behavior.map3", self.s.mapping, other, now=now)
            return
        t2, t3 = o.get("map2"), o.get("map3")
        if t2 is None:
            return
        if t2.mapped is None:
            r.notes.append("mapping: Test II got no answer")
            self._mapping_done = True
            return
        if t2.mapped == m1:
            r.mapping = Mapping.ENDPOINT_INDEPENDENT
            self._mapping_done = True
            return
        if t3 is None:
            return
        if t3.mapped is None:
            r.notes.append("mapping: Test III got no answer")
        elif t3.mapped == t2.mapped:
            r.mapping = Mapping.ADDRESS_DEPENDENT
        else:
            r.mapping = Mapping.ADDRESS_AND_PORT_DEPENDENT
        self._mapping_done = True

    # -- filtering (§4.4) ------------------------------------------------------------

    def _decide_filtering(self) -> None:
        if self._filtering_done:
            return
        r, o = self.result, self._o
        t2 = o.get("filter2")
        if t2 is None:
            return
        other = r.other_address
        if t2.response is not None and not t2.succeeded:
            r.notes.append("filtering: the server refuses CHANGE-REQUEST")
            self._filtering_done = True
            return
        if other is None:
            t1 = o.get("map1")
            if t1 is None:
                return  # OTHER-ADDRESS is needed to check where answers come from
            other = t1.other_address
        if t2.succeeded:
            if t2.source != other:
                r.notes.append(f"filtering: Test II answered from {t2.source}, not {other}")
            else:
                r.filtering = Filtering.ENDPOINT_INDEPENDENT
            self._filtering_done = True
            return
        t3 = o.get("filter3")
        if t3 is None:
            return
        if t3.succeeded:
            expected = Endpoint(self.server.host, other.port) if other is not None else None
            if t3.source != expected:
                r.notes.append(f"filtering: Test III answered from {t3.source}, not {expected}")
            else:
                r.filtering = Filtering.ADDRESS_DEPENDENT
        elif o["map1"].succeeded:
            r.filtering = Filtering.ADDRESS_AND_PORT_DEPENDENT
        else:
            r.notes.append("filtering: no answer to any test")
        self._filtering_done = True

    # -- hairpinning (§4.5) ----------------------------------------------------------

    def _maybe_start_hairpin(self, now: float) -> None:
        if self._hairpin_started or self._hairpin_done:
            return
        t_m, t_h = self._o.get("map1"), self._o.get("hairpin1")
        if t_m is None or t_h is None:
            return
        if t_m.mapped is None or t_h.mapped is None:
            self._hairpin_done = True
            return
        self._hairpin_started = True
        tid = self.prober.probe("behavior.hairpin.m2h", self.s.mapping, t_h.mapped, now=now)
        self._hairpin_tids[tid] = "m2h"
        tid = self.prober.probe("behavior.hairpin.h2m", self.s.hairpin, t_m.mapped, now=now)
        self._hairpin_tids[tid] = "h2m"

    def _decide_hairpin(self) -> None:
        """Neither hairpinned request arrived: a "no" only if the test was fair.

        Mapping and filtering are settled by now: their probes started no
        later than the hairpinning probes, on the same schedule."""
        r = self.result
        if (
            r.mapping is Mapping.ENDPOINT_INDEPENDENT
            or r.filtering is Filtering.ENDPOINT_INDEPENDENT
        ):
            r.hairpinning = False
        else:
            r.notes.append(
                "hairpinning: cannot tell (no request arrived, but unless mapping or filtering "
                "is endpoint-independent the NAT's filter drops them even when it hairpins)"
            )
        self._hairpin_done = True

    # -- binding lifetime (§4.6) -----------------------------------------------------

    def _cancel_round(self) -> None:
        """Drop the round's pending probes (those longer than the bracket found)."""
        for tid in self._round_tids:
            self.prober.cancel(tid)
        self._round_tids.clear()
        self._scheduled.clear()

    def _start_round(self, ladder: list[float], now: float) -> None:
        self._cancel_round()
        self._round += 1
        self._ladder = ladder
        self._round_start = now
        self._lifetime_mapped.clear()
        self._lifetime_alive.clear()
        for idx, _ in enumerate(ladder):
            tid = self.prober.probe(
                f"behavior.life{self._round}.map.{idx}",
                self.s.lifetime_probes[idx],
                self.server,
                now=now,
            )
            self._round_tids.append(tid)

    def _on_lifetime(self, key: str, outcome: ProbeOutcome, now: float) -> None:
        round_text, _, rest = key.removeprefix("life").partition(".")
        if int(round_text) != self._round:
            return
        if rest.startswith("map."):
            idx = int(rest.removeprefix("map."))
            if outcome.mapped is None:
                self._lifetime_alive[idx] = False
            else:
                self._lifetime_mapped[idx] = outcome.mapped
                # The NAT refreshed the mapping when the request last left, one
                # RTT before this answer; Y's probe reaches the NAT one RTT after
                # Y sends it. Without this the bounds are short by two RTTs.
                rtt = outcome.rtt or 0.0
                self._scheduled[idx] = outcome.at - rtt + self._ladder[idx] - rtt
        else:
            idx = int(rest)
            expected = self.s.lifetime_probes[idx]
            self._lifetime_alive[idx] = (
                outcome.response is not None and outcome.arrived_at == expected
            )
        if self._round_settled():
            self._end_round(now)

    def _round_settled(self) -> bool:
        known = self._lifetime_alive
        first_dead = min((self._ladder[i] for i, ok in known.items() if not ok), default=None)
        if first_dead is None:
            return len(known) == len(self._ladder)
        return all(i in known for i, t in enumerate(self._ladder) if t < first_dead)

    def _end_round(self, now: float) -> None:
        alive = [self._ladder[i] for i, ok in self._lifetime_alive.items() if ok]
        dead = [self._ladder[i] for i, ok in self._lifetime_alive.items() if not ok]
        low = max(alive, default=self._low)
        high_candidates = [t for t in dead if t > low]
        high = min(high_candidates) if high_candidates else self._high
        self._low, self._high = max(self._low, low), high
        r = self.result
        self._cancel_round()
        if high is None:
            r.lifetime = self._low
            r.lifetime_bounds = (self._low, None)
            r.notes.append(f"binding lifetime: longer than {self._low:g} s (the longest probe)")
            self._lifetime_done = True
            return
        if high - self._low <= self._lifetime_resolution or self._round >= MAX_LIFETIME_ROUNDS:
            r.lifetime = self._low
            r.lifetime_bounds = (self._low, high)
            self._lifetime_done = True
            return
        n = len(self.s.lifetime_probes)
        step = (high - self._low) / (n + 1)
        self._start_round([self._low + step * (i + 1) for i in range(n)], now)
