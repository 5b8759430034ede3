"""Lab scenario: RFC 6314 §3 / Figure 1 — does a SIP response find its way
back through the NAT?

::

    UA 192.168.1.x:5060 --- NAT (198.51.100.1) --- internet --- registrar 203.0.113.10:5060

A user agent behind a NAT sends a REGISTER over UDP from its SIP port. The
registrar stamps ``received`` (RFC 3261 §18.2.1) and answers where the Via
says: without ``rport`` to the received address at the Via's *sent-by port*
(5060), with ``rport`` (RFC 3581 §4) to the source address *and port* the
NAT gave the request. The response therefore arrives without rport only
when the NAT happened to keep port 5060 for its mapping (and lets the
answer in); a NAT that assigns other ports — symmetric NATs, carrier-grade
NATs, or any NAT whose port 5060 a second user agent already took — loses
it. With rport the response arrives through every NAT that passes UDP.

:func:`expected_arrival` is the table a correct stack must reproduce;
:func:`run_rport_sim` runs every case on the simulated internet.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, LabPhone, lab_registrar
from natkit.lab.topology import attach_nat
from natkit.nat.box import NatBehavior, PortAssignment
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, run_virtual

__all__ = ["RportOutcome", "expected_arrival", "register_behind", "run_rport_sim", "source_of"]


@dataclass(frozen=True, slots=True)
class RportOutcome:
    """One case: the NAT, whether the UA asked for rport, whether another
    UA behind the same NAT held port 5060 first, and what happened."""

    nat: str
    rport: bool
    port_taken: bool
    mapped: Endpoint | None
    """The source the registrar saw (the NAT's mapping), None if nothing came."""
    arrived: bool
    expected: bool

    @property
    def ok(self) -> bool:
        return self.arrived == self.expected


def expected_arrival(behavior: NatBehavior, *, rport: bool, port_taken: bool) -> bool:
    """RFC 6314 §3: with rport always (UDP passes); without, only when the
    mapping kept the UA's port, which a port-preserving NAT does while the
    port is free on its public address."""
    if behavior.udp_blocked:
        return False
    if rport or not behavior.translate:
        return True
    return behavior.port_assignment is PortAssignment.PRESERVING and not port_taken


async def register_behind(
    name: str, behavior: NatBehavior, *, rport: bool, port_taken: bool = False, seed: int = 0
) -> RportOutcome:
    """Build the topology on the running virtual-clock loop and register once."""
    net = Internet(seed=seed, default_link=Link(delay=0.02))
    server_host = net.add_host("registrar", REGISTRAR_IP)
    nat = attach_nat(net, behavior, seed=seed)
    async with lab_registrar(server_host, seed=seed) as server:
        phones: list[LabPhone] = []
        try:
            if port_taken:
                # Another phone behind the same NAT registered first: the
                # NAT's public port 5060 is its mapping now.
                first = LabPhone(net.add_host("other-ua", behind=nat), "first")
                phones.append(first)
                await first.start()
                await first.register(rport=True)
                await first.final_response(10)
            ua = LabPhone(net.add_host("ua", behind=nat), "ua")
            phones.append(ua)
            await ua.start()
            await ua.register(rport=rport)
            response = await ua.final_response(10)
            arrived = response is not None and response.status == 200
            bindings = await server.location.lookup(f"sip:ua@{DOMAIN}")
        finally:
            for phone in phones:
                phone.close()
    mapped = source_of(bindings[0].source) if bindings else None
    return RportOutcome(
        nat=name,
        rport=rport,
        port_taken=port_taken,
        mapped=mapped,
        arrived=arrived,
        expected=expected_arrival(behavior, rport=rport, port_taken=port_taken),
    )


def source_of(text: str | None) -> Endpoint | None:
    """``udp:[ip]:port`` or ``udp:ip:port`` as the registrar stores a source."""
    if not text:
        return None
    _, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    return Endpoint(host.strip("[]"), int(port))


def run_rport_sim(names: list[str] | None = None, *, seed: int = 0) -> list[RportOutcome]:
    """Every case (each NAT preset x rport on/off x port free/taken) on the
    simulated internet."""
    chosen = names if names is not None else list(PRESETS)

    async def main() -> list[RportOutcome]:
        out = []
        for name in chosen:
            for rport in (False, True):
                for taken in (False, True):
                    out.append(
                        await register_behind(
                            name, PRESETS[name], rport=rport, port_taken=taken, seed=seed
                        )
                    )
        return out

    return run_virtual(main)
