"""Lab scenario: an INVITE reaches a user agent behind a NAT over its
registered flow, and keeps reaching it only with keepalives (RFC 6314 §5.1,
RFC 5626 §3.5, §4.4.1).

::

    alice 192.168.1.x:5060 --- NAT (UDP mappings expire after 30 s idle)
                                   --- internet --- registrar/proxy 203.0.113.10
                                                          |
                                                   bob 198.51.100.20 (caller)

Alice registers over UDP with ``rport``; the registrar binds her AoR to the
flow the REGISTER came on — the NAT's public address and port. Bob then
calls ``sip:alice@example.org``: the proxy sends the INVITE over that flow,
through the NAT's mapping. Without keepalives the mapping expires after
30 s of silence and a later INVITE is dropped at the NAT (bob gets 408).
With a STUN Binding keepalive every 20 s to the registrar's SIP port and a
re-REGISTER every 500 s, the INVITE still arrives after an
hour of virtual time. A NAT without filtering state ("open") needs nothing.
For user agents that send no keepalives (no Outbound), the registrar's NAT
helper can do it from its side: OPTIONS to the binding every 25 s, whose
answers refresh the mapping (``server_pings``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, LabPhone, lab_registrar
from natkit.lab.topology import attach_nat
from natkit.nat.box import NatBehavior
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, run_virtual

__all__ = [
    "KEEPALIVE_INTERVAL",
    "MAPPING_LIFETIME",
    "KeepaliveOutcome",
    "expected_reached",
    "invite_after",
    "run_keepalive_sim",
]

CALLER_IP = "198.51.100.20"
MAPPING_LIFETIME = 30.0
KEEPALIVE_INTERVAL = 20.0
REREGISTER_INTERVAL = 500.0
REGISTRATION_EXPIRES = 7200  # outlives every wait: only the NAT can lose the flow


@dataclass(frozen=True, slots=True)
class KeepaliveOutcome:
    nat: str
    keepalive: bool
    wait: float
    status: int | None
    """The caller's final response (200: alice answered; 408: lost at the NAT)."""
    reached: bool
    expected: bool

    @property
    def ok(self) -> bool:
        return self.reached == self.expected


def expected_reached(behavior: NatBehavior, *, keepalive: bool, wait: float) -> bool:
    """The INVITE arrives if the NAT has no state to lose, or it was kept alive,
    or the wait was shorter than the mapping's lifetime."""
    if behavior.udp_blocked:
        return False
    stateless = not behavior.translate and behavior.filtering is None
    return stateless or keepalive or wait < behavior.udp_mapping_timeout


async def invite_after(
    name: str,
    behavior: NatBehavior,
    *,
    keepalive: bool,
    wait: float,
    server_pings: bool = False,
    seed: int = 0,
) -> KeepaliveOutcome:
    """Register alice behind ``behavior`` (its UDP mappings living
    ``MAPPING_LIFETIME`` s), wait ``wait`` virtual seconds (alice keeping the
    flow alive or not; with ``server_pings`` the registrar's NAT helper pings
    her binding with OPTIONS instead, for user agents that send no
    keepalives), then have bob call her."""
    behavior = dataclasses.replace(behavior, udp_mapping_timeout=MAPPING_LIFETIME)
    net = Internet(seed=seed, default_link=Link(delay=0.02))
    server_host = net.add_host("registrar", REGISTRAR_IP)
    nat = attach_nat(net, behavior, seed=seed)
    async with lab_registrar(server_host, seed=seed, nat_pings=server_pings):
        alice = LabPhone(net.add_host("alice", behind=nat), "alice")
        bob = LabPhone(net.add_host("bob", CALLER_IP), "bob")
        await alice.start()
        await bob.start()
        try:
            await alice.register(expires=REGISTRATION_EXPIRES)
            registered = await alice.final_response(10)
            if registered is None or registered.status != 200:
                return KeepaliveOutcome(name, keepalive, wait, None, False, False)
            await _idle(alice, wait, keepalive=keepalive)
            await bob.invite(f"sip:alice@{DOMAIN}")
            final = await bob.final_response(60)
            status = final.status if final is not None else None
            reached = any(r.method == "INVITE" for r in alice.requests)
        finally:
            alice.close()
            bob.close()
    return KeepaliveOutcome(
        name,
        keepalive,
        wait,
        status,
        reached and status == 200,
        expected_reached(behavior, keepalive=keepalive or server_pings, wait=wait),
    )


async def _idle(phone: LabPhone, wait: float, *, keepalive: bool) -> None:
    """Let ``wait`` seconds pass; with ``keepalive``, a STUN keepalive every
    20 s and a re-REGISTER every 500 s (answers are drained). The
    registration itself outlives the wait either way (Expires 7200)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait
    next_register = loop.time() + REREGISTER_INTERVAL
    while (left := end - loop.time()) > 0:
        await asyncio.sleep(min(KEEPALIVE_INTERVAL, left) if keepalive else left)
        if not keepalive or loop.time() >= end:
            continue
        await phone.keepalive()
        if loop.time() >= next_register:
            await phone.register(expires=REGISTRATION_EXPIRES)
            await phone.final_response(10)
            next_register += REREGISTER_INTERVAL


def run_keepalive_sim(
    names: list[str] | None = None, *, wait: float = 3600.0, seed: int = 0
) -> list[KeepaliveOutcome]:
    """Every NAT preset that passes UDP, with and without keepalives, on the
    simulated internet (an hour of virtual time each, milliseconds of wall time)."""
    chosen = names if names is not None else [n for n in PRESETS if not PRESETS[n].udp_blocked]

    async def main() -> list[KeepaliveOutcome]:
        return [
            await invite_after(name, PRESETS[name], keepalive=keepalive, wait=wait, seed=seed)
            for name in chosen
            for keepalive in (False, True)
        ]

    return run_virtual(main)
