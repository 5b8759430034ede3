"""Matrix scenarios: firewalls blocking UDP (ECC §6.5): a TURN client behind
them reaches a public peer only over TCP, or TLS on port 443 when nothing
but web ports leave (RFC 8656 §3.1), played by :mod:`natkit.lab.turn`."""

from __future__ import annotations

from natkit.lab.certs import LAB_TLS_NAME, lab_tls_contexts
from natkit.lab.matrix import Scenario
from natkit.lab.turn import TURN_IP, run_turn_sim

CASES = (
    ("udp-blocked", "relayed over tcp"),
    ("web-only", "relayed over tls"),
)


def _turn(preset: str, expected: str) -> Scenario:
    def run(seed: int) -> str:
        server, client = lab_tls_contexts(hostnames=(LAB_TLS_NAME, "localhost"), ips=(TURN_IP,))
        outcome = run_turn_sim(preset, seed=seed, tls_server=server, tls_client=client)
        if not outcome.reached or outcome.transport is None:
            return "failed"
        return f"relayed over {outcome.transport.value}"

    return Scenario(
        name=f"turn/{preset}",
        group="firewall",
        claim="ECC §6.5: behind a firewall that blocks UDP, media passes only "
        "through TURN over TCP (TLS on 443 when only web ports leave)",
        expected=expected,
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [_turn(p, e) for p, e in CASES]
