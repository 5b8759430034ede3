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
        return _words(detected.mapping, detected.filtering)

    return Scenario(
        name=f"detect/5780-{SHORT_MAPPING[mapping]}-{SHORT_FILTERING[filtering]}",
        group="detection",
        claim="RFC 5780 §4.3, §4.4: mapping and filtering behaviour as emulated",
        expected=_words(mapping, filtering),
        run=run,
    )


SHORT_MAPPING = {
    Mapping.ENDPOINT_INDEPENDENT: "EIM",
    Mapping.ADDRESS_DEPENDENT: "ADM",
    Mapping.ADDRESS_AND_PORT_DEPENDENT: "APDM",
}
"""RFC 4787's abbreviations (endpoint-independent mapping ...)."""
SHORT_FILTERING = {
    Filtering.ENDPOINT_INDEPENDENT: "EIF",
    Filtering.ADDRESS_DEPENDENT: "ADF",
    Filtering.ADDRESS_AND_PORT_DEPENDENT: "APDF",
}


def _words(mapping: Mapping | None, filtering: Filtering | None) -> str:
    m = SHORT_MAPPING[mapping] if mapping is not None else "none"
    f = SHORT_FILTERING[filtering] if filtering is not None else "none"
    return f"{m} {f}"


def scenarios() -> list[Scenario]:
    return [_classic(n) for n in CLASSIC_PRESETS] + [
        _rfc5780(m, f) for m in Mapping for f in Filtering
    ]
