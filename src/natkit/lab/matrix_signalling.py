"""Matrix scenarios: SIP signalling through NAT (RFC 6314 §3, §5.1), played
by :mod:`natkit.lab.sip_rport` and :mod:`natkit.lab.sip_keepalive`."""

from __future__ import annotations

from natkit.lab.matrix import Scenario
from natkit.lab.sip_keepalive import invite_after
from natkit.lab.sip_rport import register_behind
from natkit.nat.presets import PRESETS
from natkit.net.sim import run_virtual

RPORT_NAT = "port-restricted-cone"
"""A port-preserving NAT: without rport the response is lost only when the
UA's port is already taken on the NAT's public address (RFC 6314 §3)."""

KEEPALIVE_NAT = "port-restricted-cone"
IDLE_S = 3600.0
"""An hour of silence: longer than the preset's UDP mapping lifetime."""


def _rport(rport: bool) -> Scenario:
    def run(seed: int) -> str:
        async def main() -> bool:
            outcome = await register_behind(
                RPORT_NAT, PRESETS[RPORT_NAT], rport=rport, port_taken=True, seed=seed
            )
            return outcome.arrived

        return "arrives" if run_virtual(main, time_limit=600.0) else "response lost"

    return Scenario(
        name=f"sip/{'rport' if rport else 'no-rport'}",
        group="signalling",
        claim="RFC 6314 §3 (RFC 3581): a REGISTER's response reaches a UA behind a "
        "NAT that changed its port only when the UA asked for rport",
        expected="arrives" if rport else "response lost",
        run=run,
    )


def _keepalive(keepalive: bool) -> Scenario:
    def run(seed: int) -> str:
        async def main() -> bool:
            outcome = await invite_after(
                KEEPALIVE_NAT,
                PRESETS[KEEPALIVE_NAT],
                keepalive=keepalive,
                wait=IDLE_S,
                seed=seed,
            )
            return outcome.reached

        reached = run_virtual(main, time_limit=IDLE_S * 2)
        return "INVITE arrives" if reached else "INVITE lost at NAT"

    return Scenario(
        name=f"sip/{'keepalive' if keepalive else 'no-keepalive'}-1h",
        group="signalling",
        claim="RFC 6314 §5.1 (RFC 5626): an incoming INVITE reaches the UA only over "
        "its outbound flow, which survives the NAT's binding expiry only with keepalives",
        expected="INVITE arrives" if keepalive else "INVITE lost at NAT",
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [_rport(False), _rport(True), _keepalive(False), _keepalive(True)]
