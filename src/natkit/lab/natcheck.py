"""Lab scenario: NAT detection behind an emulated NAT, in the simulated internet.

The topology is the one every natcheck scenario uses::

    stun  203.0.113.10 + .11 (RFC 5780 server: 3478 and 3479)
      |
    internet (documentation ranges only)
      |
    nat   198.51.100.1 outside, 192.168.1.0/24 inside   (or a firewall with
      |                                                   192.0.2.0/24 behind it)
    client

The emulated behaviour decides what a correct detector must report
(:func:`expected_for`); :func:`run_natcheck_sim` runs natkit's natcheck from
the client and returns both, so the lab, its tests and ``natkit lab
natcheck`` compare them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natkit.addr import Endpoint
from natkit.lab.topology import attach_nat
from natkit.nat.aio import natcheck
from natkit.nat.box import NatBehavior
from natkit.nat.natcheck import NatCheckConfig, NatCheckResult
from natkit.nat.presets import PRESETS, NatLayer, classic_nat_type
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.net.sim import Internet, Link, run_virtual
from natkit.rng import seeded_rng
from natkit.stun.aio import StunServerRunner
from natkit.stun.server import StunServerConfig

__all__ = ["Expected", "NatcheckOutcome", "expected_for", "natcheck_behind", "run_natcheck_sim"]

STUN_IPS = ("203.0.113.10", "203.0.113.11")
STUN_PRIMARY = Endpoint(STUN_IPS[0], 3478)
STUN_ALTERNATE = Endpoint(STUN_IPS[1], 3479)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a correct detector reports behind a behaviour."""

    classic: NatType
    mapping: Mapping | None
    filtering: Filtering | None

    def to_json(self) -> dict[str, Any]:
        return {
            "classic": self.classic.value,
            "mapping": self.mapping.value if self.mapping else None,
            "filtering": self.filtering.value if self.filtering else None,
        }


def expected_for(behavior: NatBehavior) -> Expected:
    """The classic type (ECC Annex A) and RFC 5780 behaviour of ``behavior``."""
    classic = classic_nat_type(behavior)
    if classic is NatType.UDP_BLOCKED:
        return Expected(classic, None, None)
    if not behavior.translate:
        # No NAT: the mapping is trivially endpoint-independent.
        return Expected(
            classic,
            Mapping.ENDPOINT_INDEPENDENT,
            behavior.filtering or Filtering.ENDPOINT_INDEPENDENT,
        )
    return Expected(classic, behavior.mapping, behavior.filtering)


@dataclass(slots=True)
class NatcheckOutcome:
    """One scenario's result: what was emulated, expected and detected."""

    name: str
    expected: Expected
    detected: NatCheckResult
    trace: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        d, e = self.detected, self.expected
        return d.classic is e.classic and d.mapping is e.mapping and d.filtering is e.filtering

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "emulated": self.expected.to_json(),
            "detected": self.detected.to_json(),
            "ok": self.ok,
        }


async def natcheck_behind(
    behavior: NatBehavior,
    *,
    seed: int = 0,
    config: NatCheckConfig | None = None,
    delay: float = 0.02,
    trace: bool = False,
    pcap_dir: Path | None = None,
    tandem: NatLayer | None = None,
) -> tuple[NatCheckResult, Internet]:
    """Build the scenario topology on the running virtual-clock loop and run
    natcheck from the client. ``tandem`` puts a second NAT (e.g. a
    carrier-grade NAT, outermost) between ``behavior``'s NAT and the internet."""
    net = Internet(seed=seed, trace=trace, default_link=Link(delay=delay))
    stun = net.add_host("stun", list(STUN_IPS))
    runner = StunServerRunner(
        stun.stack,
        StunServerConfig(primary=STUN_PRIMARY, alternate=STUN_ALTERNATE, rfc5780=True),
    )
    await runner.start()
    nat = attach_nat(net, behavior, seed=seed, tandem=tandem)
    client = net.add_host("client", behind=nat)
    if pcap_dir is not None:
        pcap_dir.mkdir(parents=True, exist_ok=True)
        net.capture("client", pcap_dir / "client.pcap")
        net.capture("nat:outside", pcap_dir / "nat-outside.pcap")
    try:
        result = await natcheck(
            client.stack, STUN_PRIMARY, config or NatCheckConfig(rng=seeded_rng(seed))
        )
    finally:
        runner.close()
        net.close_captures()
    return result, net


def run_natcheck_sim(
    name: str,
    behavior: NatBehavior | None = None,
    *,
    seed: int = 0,
    config: NatCheckConfig | None = None,
    trace: bool = False,
    pcap_dir: Path | None = None,
    time_limit: float = 7200.0,
) -> NatcheckOutcome:
    """Run one scenario on a fresh virtual clock: the preset ``name`` (or
    ``behavior`` under that name)."""
    emulated = behavior if behavior is not None else PRESETS[name]

    async def main() -> NatcheckOutcome:
        result, net = await natcheck_behind(
            emulated, seed=seed, config=config, trace=trace, pcap_dir=pcap_dir
        )
        return NatcheckOutcome(
            name, expected_for(emulated), result, net.trace_lines() if trace else []
        )

    return run_virtual(main, time_limit=time_limit)
