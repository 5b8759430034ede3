"""Matrix scenarios: NAT type detection (ECC Annex A classic types; RFC 5780
§4.3/§4.4 mapping and filtering), played by :mod:`natkit.lab.natcheck`."""

from __future__ import annotations

from natkit.lab.matrix import Scenario
from natkit.lab.natcheck import expected_for, run_natcheck_sim
from natkit.nat.box import NatBehavior
from natkit.nat.presets import PRESETS
from natkit.nat.types import Filtering, Mapping

CLASSIC_PRESETS = (
    "open",
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
    "symmetric-udp-firewall",
    "udp-blocked",
)


def _classic(name: str) -> Scenario:
    def run(seed: int) -> str:
        classic = run_natcheck_sim(name, seed=seed).detected.classic
        return classic.value if classic is not None else "undetermined"

    return Scenario(
        name=f"detect/{name}",
        group="detection",
        claim="ECC Annex A: the classic test returns the emulated NAT type",
        expected=expected_for(PRESETS[name]).classic.value,
        run=run,
    )


def _rfc5780(mapping: Mapping, filtering: Filtering) -> Scenario:
    behavior = NatBehavior(mapping=mapping, filtering=filtering)

    def run(seed: int) -> str:
        detected = run_natcheck_sim(f"{mapping}/{filtering}", behavior, seed=seed).detected
        return f"{_word(detected.mapping)} / {_word(detected.filtering)}"

    return Scenario(
        name=f"detect/5780-{mapping.value}-{filtering.value}",
        group="detection",
        claim="RFC 5780 §4.3, §4.4: mapping and filtering behaviour as emulated",
        expected=f"{mapping.value} / {filtering.value}",
        run=run,
    )


def _word(value: Mapping | Filtering | None) -> str:
    return value.value if value is not None else "none"


def scenarios() -> list[Scenario]:
    return [_classic(n) for n in CLASSIC_PRESETS] + [
        _rfc5780(m, f) for m in Mapping for f in Filtering
    ]
