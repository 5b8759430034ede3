"""Lab scenario in namespaces: RFC 6314 §3 / Figure 1 with real packets.

::

    ua (192.168.N.x:5060) [other-ua too when port 5060 is taken]
      |
    nat  kernel nftables masquerade or natkit's TUN NAT
      |
    registrar 203.0.113.x:5060 (natkit's SipServer, open registration)

The same halves as :func:`natkit.lab.sip_rport.register_behind`, on OS
stacks: the registrar (:func:`~natkit.lab.sip_phone.lab_registrar`) runs on
an asyncio loop inside the ``registrar`` namespace, each
:class:`~natkit.lab.sip_phone.LabPhone` on a loop inside its own host's
namespace (:class:`~natkit.lab.turn.NamespaceLoop`, as the TURN scenario
does). When ``port_taken``, ``other-ua`` registers first from port 5060
(with rport), so the NAT's public port 5060 is its mapping; then ``ua``
registers with or without ``rport`` and waits ``timeout`` real seconds for
the final response.

The expectation is :func:`~natkit.lab.sip_rport.expected_arrival` of the
engine's behaviour: a TUN NAT's preset, and for the kernel's masquerade
natkit's model of it, :data:`~natkit.nat.presets.LINUX_MASQUERADE`
(port-preserving while the port is free; ``fully-random`` assigns random
ports).
"""

from __future__ import annotations

import contextlib
import dataclasses

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, SIP_PORT, LabPhone, OnStack, lab_registrar
from natkit.lab.sip_rport import RportOutcome, expected_arrival, source_of
from natkit.lab.turn import NamespaceLoop
from natkit.nat.box import NatBehavior, PortAssignment
from natkit.nat.presets import LINUX_MASQUERADE
from natkit.net.netns import KernelNat, Lab, NatEngine
from natkit.sip.aio.server import SipServer

__all__ = ["engine_behavior", "rport_in_lab"]


def engine_behavior(engine: NatEngine) -> NatBehavior:
    """The behaviour natkit models ``engine`` with."""
    if isinstance(engine, KernelNat):
        if engine.random_fully:
            return dataclasses.replace(LINUX_MASQUERADE, port_assignment=PortAssignment.RANDOM)
        return LINUX_MASQUERADE
    return engine.behavior


def rport_in_lab(
    lab: Lab,
    engine: NatEngine,
    *,
    rport: bool,
    port_taken: bool = False,
    timeout: float = 2.0,
    seed: int = 0,
) -> RportOutcome:
    """Build the hosts in the open ``lab`` and register once behind ``engine``;
    every loop and socket is closed before it returns (the lab's owner
    closes the namespaces)."""
    from natkit.net.os_stack import OsStack

    registrar_host = lab.add_public_host("registrar")
    nat = lab.add_nat("nat", engine)
    ua_host = lab.add_host("ua", behind=nat)
    other_host = lab.add_host("other-ua", behind=nat) if port_taken else None
    registrar = Endpoint(registrar_host.address, SIP_PORT)
    limit = timeout + 10.0

    async def start_registrar() -> tuple[contextlib.AsyncExitStack, SipServer]:
        exits = contextlib.AsyncExitStack()
        where = OnStack(OsStack(), registrar_host.address)
        server = await exits.enter_async_context(lab_registrar(where, seed=seed))
        return exits, server

    async def register(address: str, user: str, with_rport: bool) -> bool:
        phone = LabPhone(OnStack(OsStack(), address), user, registrar=registrar)
        try:
            await phone.start()
            await phone.register(rport=with_rport)
            response = await phone.final_response(timeout)
            return response is not None and response.status == 200
        finally:
            phone.close()

    with NamespaceLoop(registrar_host.netns) as server_loop:
        exits, server = server_loop.run(start_registrar())
        try:
            if other_host is not None:
                with NamespaceLoop(other_host.netns) as other_loop:
                    other_loop.run(register(other_host.address, "first", True), timeout=limit)
            with NamespaceLoop(ua_host.netns) as ua_loop:
                arrived = ua_loop.run(register(ua_host.address, "ua", rport), timeout=limit)
            bindings = server_loop.run(server.location.lookup(f"sip:ua@{DOMAIN}"))
        finally:
            server_loop.run(exits.aclose())
    mapped = source_of(bindings[0].source) if bindings else None
    return RportOutcome(
        nat=engine.label,
        rport=rport,
        port_taken=port_taken,
        mapped=mapped,
        arrived=arrived,
        expected=expected_arrival(engine_behavior(engine), rport=rport, port_taken=port_taken),
    )
