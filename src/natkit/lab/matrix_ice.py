"""Matrix scenarios: ICE (RFC 6314 §5.2.2.3, RFC 8445) between two agents
behind the ECC report's four NAT types, with STUN and TURN: direct for every
pair except symmetric-symmetric and symmetric-port-restricted, which are
relayed, never failed. Played by :mod:`natkit.lab.ice_connect`."""

from __future__ import annotations

from natkit.ice.candidate import Candidate, CandidateType
from natkit.lab.ice_connect import (
    SAME_NAT,
    SAME_NAT_HAIRPIN,
    ConnectLab,
    ConnectResult,
    expected_path,
    run_connect_sim,
)
from natkit.lab.ice_netns import ECC_TYPES
from natkit.lab.matrix import Scenario
from natkit.net.sim import run_virtual

SHARED_PRESET = "port-restricted-cone"


def _pair(nat_a: str, nat_b: str) -> Scenario:
    def run(seed: int) -> str:
        result = run_connect_sim(nat_a, nat_b, seed=seed)
        if not result.connected or not result.data_ok:
            return "failed"
        return result.path or "failed"

    return Scenario(
        name=f"ice/{nat_a}+{nat_b}",
        group="ice",
        claim="RFC 6314 §5.2.2.3: ICE connects every pair, relayed only when both map "
        "endpoint-dependently or one does and the other filters by address and port",
        expected=expected_path(nat_a, nat_b),
        run=run,
    )


def _observed(result: ConnectResult) -> str:
    if not result.connected or not result.data_ok:
        return "failed"
    if result.path != "direct":
        return result.path or "failed"
    return f"direct ({result.local_type}/{result.remote_type})"


def _no_host(candidate: Candidate) -> bool:
    return candidate.type is not CandidateType.HOST


def _same_nat(shared: str, *, stun_only: bool, expected: str) -> Scenario:
    """Both agents behind one NAT: with host candidates signalled they connect
    host/host; with STUN addresses alone only when the NAT hairpins."""

    def run(seed: int) -> str:
        async def main() -> ConnectResult:
            lab = await ConnectLab.build(shared, SHARED_PRESET, seed=seed)
            try:
                return await lab.connect(signalled=_no_host if stun_only else None)
            finally:
                await lab.close()

        return _observed(run_virtual(main, time_limit=3600.0))

    return Scenario(
        name=f"ice/{shared}/{'stun-only' if stun_only else 'host'}",
        group="ice",
        claim="DESIGN.md: same NAT, no hairpinning: host candidates connect; STUN "
        "addresses alone do not (the relay carries it); with hairpinning they do",
        expected=expected,
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [_pair(a, b) for i, a in enumerate(ECC_TYPES) for b in ECC_TYPES[i:]] + [
        _same_nat(SAME_NAT, stun_only=False, expected="direct (host/host)"),
        _same_nat(SAME_NAT, stun_only=True, expected="relay"),
        _same_nat(SAME_NAT_HAIRPIN, stun_only=True, expected="direct (srflx/srflx)"),
    ]
