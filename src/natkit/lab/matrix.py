"""The traversal matrix (DESIGN.md "The traversal matrix"): a registry of
scenarios, each a claim of the founding documents (ECC report, RFC 6314,
RFC 5780, RFC 6156) with the outcome it predicts, and a runner that plays
them on the simulated internet and compares expected with observed.

A scenario's ``run`` returns the observed outcome as a short word
(``direct``, ``relay``, ``arrives``, ``response lost``, a detected NAT type
...); it is ok when that equals ``expected``. While a scenario runs, every
packet every simulated host and NAT sends is recorded (:class:`Capture`),
which the report turns into a pcap and a ladder diagram.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from natkit.net.sim.network import Internet
from natkit.packet import Packet


@dataclass(frozen=True, slots=True)
class Sent:
    """One packet as its sender (a host, or one side of a NAT) put it on a link."""

    time: float
    origin: str
    packet: Packet
    net: int
    """Which of the scenario's simulated internets (0 for the first)."""


@dataclass(slots=True)
class Capture:
    """Packets seen during one scenario, with the internets that carried them."""

    sent: list[Sent] = field(default_factory=list)
    nets: list[Internet] = field(default_factory=list)


@contextlib.contextmanager
def observing(capture: Capture, limit: int = 20000) -> Iterator[Capture]:
    """Tap every :class:`Internet` created inside the block (the lab modules
    build their own), keeping at most ``limit`` packets."""
    original = Internet.__init__

    def init(self: Internet, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        index = len(capture.nets)
        capture.nets.append(self)

        def tap(now: float, origin: str, packet: Packet) -> None:
            if len(capture.sent) < limit:
                capture.sent.append(Sent(now, origin, packet, index))

        self.taps.append(tap)

    Internet.__init__ = init  # type: ignore[method-assign]
    try:
        yield capture
    finally:
        Internet.__init__ = original  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One claim: ``run(seed)`` plays it and returns the observed outcome."""

    name: str
    group: str
    claim: str
    """What the founding document says, with its section."""
    expected: str
    run: Callable[[int], str]


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    scenario: str
    group: str
    claim: str
    expected: str
    observed: str
    wall_s: float
    capture: Capture = field(repr=False, compare=False, default_factory=Capture)

    @property
    def ok(self) -> bool:
        return self.observed == self.expected

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "group": self.group,
            "claim": self.claim,
            "expected": self.expected,
            "observed": self.observed,
            "ok": self.ok,
            "packets": len(self.capture.sent),
            "wall_s": round(self.wall_s, 3),
        }


def all_scenarios() -> list[Scenario]:
    """Every scenario of the sim matrix, grouped as DESIGN.md lists the claims."""
    from natkit.lab import (
        matrix_detection,
        matrix_ice,
        matrix_ipv6,
        matrix_media,
        matrix_portmap,
        matrix_signalling,
        matrix_turn,
    )

    return [
        *matrix_detection.scenarios(),
        *matrix_signalling.scenarios(),
        *matrix_media.all_media_scenarios(),
        *matrix_turn.scenarios(),
        *matrix_ice.scenarios(),
        *matrix_ipv6.scenarios(),
        *matrix_portmap.scenarios(),
    ]


def select(scenarios: Sequence[Scenario], pattern: str | None) -> list[Scenario]:
    """Scenarios whose name or group matches the shell-style ``pattern``
    (a plain word matches as a substring)."""
    if not pattern:
        return list(scenarios)
    glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    return [
        s
        for s in scenarios
        if fnmatch.fnmatchcase(s.name, glob) or fnmatch.fnmatchcase(s.group, glob)
    ]


def run_scenario(scenario: Scenario, *, seed: int = 0) -> ScenarioResult:
    """Play one scenario with its packets recorded; an exception is the
    observed outcome ``error: ...`` (never ok)."""
    capture = Capture()
    started = time.perf_counter()
    with observing(capture):
        try:
            observed = scenario.run(seed)
        except Exception as exc:
            observed = f"error: {type(exc).__name__}: {exc}"
    return ScenarioResult(
        scenario.name,
        scenario.group,
        scenario.claim,
        scenario.expected,
        observed,
        time.perf_counter() - started,
        capture,
    )


def run_matrix(
    scenarios: Sequence[Scenario],
    *,
    seed: int = 0,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Run ``scenarios`` in order; ``on_result`` sees each result as it comes."""
    results = []
    for scenario in scenarios:
        result = run_scenario(scenario, seed=seed)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
