"""Issue 3 acceptance, simulated internet: natcheck behind every emulated NAT
reports what is emulated (ECC Annex A types, RFC 5780 behaviour, hairpinning,
binding lifetime), deterministically, in milliseconds of wall time."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from natkit.lab.natcheck import natcheck_behind, run_natcheck_sim
from natkit.lab.topology import NAT_PUBLIC_IP
from natkit.nat.box import NatBehavior
from natkit.nat.natcheck import NatCheckConfig
from natkit.nat.presets import PRESETS, carrier_grade_tandem
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.net.sim import run_virtual
from natkit.rng import seeded_rng

CLASSIC = [
    ("open", NatType.OPEN_INTERNET),
    ("full-cone", NatType.FULL_CONE),
    ("restricted-cone", NatType.RESTRICTED_CONE),
    ("port-restricted-cone", NatType.PORT_RESTRICTED_CONE),
    ("symmetric", NatType.SYMMETRIC),
    ("symmetric-udp-firewall", NatType.SYMMETRIC_UDP_FIREWALL),
    ("udp-blocked", NatType.UDP_BLOCKED),
    ("web-only", NatType.UDP_BLOCKED),
    ("linux-masquerade", NatType.PORT_RESTRICTED_CONE),
]


@pytest.mark.parametrize(("preset", "classic"), [pytest.param(p, c, id=p) for p, c in CLASSIC])
def test_every_preset_is_detected_as_emulated(preset: str, classic: NatType) -> None:
    outcome = run_natcheck_sim(preset, seed=1)
    assert outcome.detected.classic is classic
    assert outcome.ok, outcome.to_json()


def test_every_preset_has_a_scenario() -> None:
    assert {p for p, _ in CLASSIC} | {"carrier-grade"} == set(PRESETS)


@pytest.mark.parametrize("mapping", list(Mapping), ids=[m.value for m in Mapping])
@pytest.mark.parametrize("filtering", list(Filtering), ids=[f.value for f in Filtering])
def test_rfc5780_nine_combinations(mapping: Mapping, filtering: Filtering) -> None:
    behavior = NatBehavior(mapping=mapping, filtering=filtering)
    outcome = run_natcheck_sim(f"{mapping}/{filtering}", behavior, seed=2)
    assert (outcome.detected.mapping, outcome.detected.filtering) == (mapping, filtering)
    assert outcome.detected.public_address is not None
    assert outcome.detected.public_address.host == NAT_PUBLIC_IP


@pytest.mark.parametrize(
    ("filtering", "hairpinning"),
    [
        pytest.param(f, h, id=f"{f.value}-{'on' if h else 'off'}")
        for f in Filtering
        for h in (True, False)
    ],
)
def test_hairpinning_on_and_off_is_detected(filtering: Filtering, hairpinning: bool) -> None:
    behavior = NatBehavior(
        mapping=Mapping.ENDPOINT_INDEPENDENT, filtering=filtering, hairpinning=hairpinning
    )
    outcome = run_natcheck_sim("hairpin", behavior, seed=3)
    assert outcome.detected.hairpinning is hairpinning


@pytest.mark.parametrize("lifetime", [30.0, 120.0])
def test_binding_lifetime_discovery_finds_the_configured_lifetime(lifetime: float) -> None:
    behavior = dataclasses.replace(PRESETS["port-restricted-cone"], udp_mapping_timeout=lifetime)
    config = NatCheckConfig(classic=False, lifetime=True, lifetime_max=300.0, rng=seeded_rng(4))
    wall = time.perf_counter()
    outcome = run_natcheck_sim("lifetime", behavior, seed=4, config=config)
    assert time.perf_counter() - wall < 5.0  # minutes of virtual time
    bounds = outcome.detected.binding_lifetime_bounds
    assert bounds is not None and bounds[1] is not None
    low, high = bounds
    assert low <= lifetime <= high
    assert high - low <= 1.0


def test_port_preservation_is_reported() -> None:
    preserving = run_natcheck_sim("port-restricted-cone", seed=5).detected
    random_ports = run_natcheck_sim("symmetric", seed=5).detected
    assert preserving.port_preservation is True
    assert random_ports.port_preservation is False


def test_nats_in_tandem_show_the_carrier_grade_nat_public_address() -> None:
    cgn, home = carrier_grade_tandem("full-cone")

    async def main() -> tuple[object, object]:
        result, _ = await natcheck_behind(home.behavior, seed=6, tandem=cgn)
        return result.public_address, result.classic

    public, classic = run_virtual(main)
    assert public is not None and public.host in cgn.public_ips  # type: ignore[attr-defined]
    # The tandem is as strict as its stricter member (here the CGN's APDF).
    assert classic is NatType.PORT_RESTRICTED_CONE


def test_a_scenario_replays_exactly_from_its_seed(tmp_path: Path) -> None:
    first = run_natcheck_sim("symmetric", seed=7, trace=True)
    again = run_natcheck_sim("symmetric", seed=7, trace=True)
    assert first.trace == again.trace
    assert first.detected.public_address == again.detected.public_address
    other = run_natcheck_sim("symmetric", seed=8, trace=True)
    assert other.detected.public_address != first.detected.public_address  # random ports


def test_a_scenario_writes_pcaps(tmp_path: Path) -> None:
    run_natcheck_sim("port-restricted-cone", seed=9, pcap_dir=tmp_path)
    assert (tmp_path / "client.pcap").stat().st_size > 24
    assert (tmp_path / "nat-outside.pcap").stat().st_size > 24


def test_all_presets_run_in_well_under_a_second_of_wall_time() -> None:
    wall = time.perf_counter()
    for preset, _ in CLASSIC:
        run_natcheck_sim(preset, seed=10)
    assert time.perf_counter() - wall < 2.0


def test_the_trace_follows_a_packet_through_the_nat() -> None:
    outcome = run_natcheck_sim("port-restricted-cone", seed=11, trace=True)
    first = outcome.trace[0].split()
    client_src = first[4]  # "<t> client sent UDP <src> -> <dst> <n>B"
    steps = [line.split() for line in outcome.trace]
    arrived = next(
        s for s in steps if s[1] == "nat:inside" and s[2] == "arrived" and s[4] == client_src
    )
    out = next(
        s
        for s in steps
        if s[1] == "nat:outside" and s[2] == "sent" and float(s[0]) == float(arrived[0])
    )
    assert out[4].startswith(NAT_PUBLIC_IP + ":")  # translated source, same instant
    assert any(s[1] == "stun" and s[2] == "delivered" and s[4] == out[4] for s in steps)
