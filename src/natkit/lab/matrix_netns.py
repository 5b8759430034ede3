"""The traversal matrix with real packets (``--mode netns``, root): the ECC
report's 4x4 NAT grid (Annex A types as natkit's TUN NAT presets), ICE
between two agents through them with STUN and TURN, in network namespaces
(:class:`natkit.lab.ice_netns.IceNamespaceLab`). Packets are not recorded
here (tcpdump in the lab's namespaces does that); the report's pcaps are empty."""

from __future__ import annotations

import time
from collections.abc import Callable

from natkit.lab.ice_netns import ECC_TYPES, IceNamespaceLab, expected_netns_path, grid
from natkit.lab.matrix import Scenario as _Scenario
from natkit.lab.matrix import ScenarioResult, select

CLAIM = (
    "RFC 6314 §5.2.2.3 with real packets: ICE connects every ECC pair, relayed only "
    "for symmetric-symmetric and symmetric-port-restricted"
)


def netns_names() -> list[str]:
    return [f"netns-ice/{a}+{b}" for a in ECC_TYPES for b in ECC_TYPES]


def run_netns_grid(
    *,
    seed: int = 0,
    only: str | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> list[ScenarioResult]:
    """Every ordered pair of the grid (or those matching ``only``) in one lab."""
    from natkit.net.netns import Lab, TunNat

    names = {f"netns-ice/{a.preset}+{b.preset}": (a.preset, b.preset) for a, b in grid()}
    wanted = {
        s.name
        for s in select([_Scenario(n, "ice-netns", CLAIM, "", lambda _s: "") for n in names], only)
    }
    chosen = [(n, ab) for n, ab in names.items() if n in wanted]
    results: list[ScenarioResult] = []
    if not chosen:
        return results
    engines_a = {a: TunNat(a) for _, (a, _b) in chosen}
    engines_b = {b: TunNat(b) for _, (_a, b) in chosen}
    with (
        Lab() as lab,
        IceNamespaceLab(
            lab, list(engines_a.values()), list(engines_b.values()), seed=seed
        ) as ice_lab,
    ):
        for name, (preset_a, preset_b) in chosen:
            a, b = engines_a[preset_a], engines_b[preset_b]
            started = time.perf_counter()
            outcome = ice_lab.connect(a, b)
            observed = (
                (outcome.path or "failed") if outcome.connected and outcome.data_ok else "failed"
            )
            result = ScenarioResult(
                name,
                "ice-netns",
                CLAIM,
                expected_netns_path(a, b),
                observed,
                time.perf_counter() - started,
            )
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results
