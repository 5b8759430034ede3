"""Matrix scenarios: ICE (RFC 6314 §5.2.2.3, RFC 8445) between two agents
behind the ECC report's four NAT types, with STUN and TURN: direct for every
pair except symmetric-symmetric and symmetric-port-restricted, which are
relayed, never failed. Played by :mod:`natkit.lab.ice_connect`."""

from __future__ import annotations

from natkit.lab.ice_connect import expected_path, run_connect_sim
from natkit.lab.ice_netns import ECC_TYPES
from natkit.lab.matrix import Scenario


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


def scenarios() -> list[Scenario]:
    return [_pair(a, b) for i, a in enumerate(ECC_TYPES) for b in ECC_TYPES[i:]]
