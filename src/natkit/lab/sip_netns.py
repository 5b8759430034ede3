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

:func:`keepalive_in_lab` is the keepalive scenario of
:mod:`natkit.lab.sip_keepalive` behind the kernel's masquerade, shortened
to real seconds: ``nf_conntrack_udp_timeout`` (and ``..._stream``) are
per-namespace sysctls, so the NAT's namespace alone gets a UDP lifetime of
``lifetime`` seconds; alice registers, idles ``wait`` seconds (sending a
STUN keepalive to the registrar's SIP port every ``interval`` seconds, or
nothing), then ``bob`` on the lab internet calls her through the proxy.

The expectation is :func:`~natkit.lab.sip_rport.expected_arrival` of the
engine's behaviour: a TUN NAT's preset, and for the kernel's masquerade
natkit's model of it, :data:`~natkit.nat.presets.LINUX_MASQUERADE`
(port-preserving while the port is free; ``fully-random`` assigns random
ports).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from natkit.addr import Endpoint
from natkit.lab.sip_keepalive import expected_reached
from natkit.lab.sip_phone import DOMAIN, SIP_PORT, LabPhone, OnStack, lab_registrar
from natkit.lab.sip_rport import RportOutcome, expected_arrival, source_of
from natkit.lab.turn import NamespaceLoop
from natkit.nat.box import NatBehavior, PortAssignment
from natkit.nat.presets import LINUX_MASQUERADE
from natkit.net.netns import KernelNat, Lab, NatEngine
from natkit.net.netns.system import in_namespace, write_sysctl
from natkit.sip.aio.server import SipServer

__all__ = ["KeepaliveLabOutcome", "engine_behavior", "keepalive_in_lab", "rport_in_lab"]

UDP_TIMEOUT_SYSCTLS = (
    "net.netfilter.nf_conntrack_udp_timeout",
    "net.netfilter.nf_conntrack_udp_timeout_stream",
)


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


@dataclass(frozen=True, slots=True)
class KeepaliveLabOutcome:
    """Whether bob's INVITE reached alice after ``wait`` seconds, and bob's
    final response (None: none within the bounded wait)."""

    keepalive: bool
    lifetime: float
    wait: float
    nat_timeouts: tuple[int, ...]
    """The UDP conntrack timeouts read back in the NAT's namespace."""
    inet_timeouts: tuple[int, ...]
    """The same sysctls in the lab internet's namespace (untouched)."""
    registered: bool
    """alice's REGISTER got its 200 (the scenario started at all)."""
    invite_seen: bool
    """The INVITE reached alice's socket."""
    status: int | None
    reached: bool
    expected: bool

    @property
    def ok(self) -> bool:
        return self.reached == self.expected


def _read_sysctls(netns: str) -> tuple[int, ...]:
    def work() -> tuple[int, ...]:
        return tuple(
            int(Path("/proc/sys", *key.split(".")).read_text()) for key in UDP_TIMEOUT_SYSCTLS
        )

    return in_namespace(netns, work)


def keepalive_in_lab(
    lab: Lab,
    *,
    keepalive: bool,
    lifetime: int = 2,
    wait: float = 5.0,
    interval: float = 0.5,
    answer_timeout: float = 3.0,
    seed: int = 0,
) -> KeepaliveLabOutcome:
    """alice behind the kernel's masquerade (UDP mappings living ``lifetime``
    s), bob on the lab internet; see the module docstring."""
    from natkit.net.os_stack import OsStack

    registrar_host = lab.add_public_host("registrar")
    bob_host = lab.add_public_host("bob")
    nat = lab.add_nat("nat", KernelNat())
    alice_host = lab.add_host("alice", behind=nat)
    for key in UDP_TIMEOUT_SYSCTLS:
        write_sysctl(nat.netns, key, lifetime)
    nat_timeouts = _read_sysctls(nat.netns)
    inet_timeouts = _read_sysctls(lab.netns_name("inet"))
    registrar = Endpoint(registrar_host.address, SIP_PORT)
    limit = wait + answer_timeout + 10.0

    async def start_registrar() -> tuple[contextlib.AsyncExitStack, SipServer]:
        exits = contextlib.AsyncExitStack()
        where = OnStack(OsStack(), registrar_host.address)
        server = await exits.enter_async_context(lab_registrar(where, seed=seed))
        return exits, server

    async def open_phone(address: str, user: str) -> LabPhone:
        phone = LabPhone(OnStack(OsStack(), address), user, registrar=registrar)
        await phone.start()
        return phone

    async def register_and_idle(alice: LabPhone) -> bool:
        await alice.register(expires=7200)
        response = await alice.final_response(answer_timeout)
        if response is None or response.status != 200:
            return False
        end = asyncio.get_running_loop().time() + wait
        while (left := end - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(interval, left) if keepalive else left)
            if keepalive:
                await alice.keepalive()
        return True

    async def call(bob: LabPhone) -> int | None:
        await bob.invite(f"sip:alice@{DOMAIN}")
        final = await bob.final_response(answer_timeout)
        return final.status if final is not None else None

    async def close(phone: LabPhone) -> None:
        phone.close()

    status: int | None = None
    reached = registered = False
    with (
        NamespaceLoop(registrar_host.netns) as server_loop,
        NamespaceLoop(alice_host.netns) as alice_loop,
        NamespaceLoop(bob_host.netns) as bob_loop,
    ):
        exits, _ = server_loop.run(start_registrar())
        try:
            alice = alice_loop.run(open_phone(alice_host.address, "alice"))
            try:
                bob = bob_loop.run(open_phone(bob_host.address, "bob"))
                try:
                    registered = alice_loop.run(register_and_idle(alice), timeout=limit)
                    if registered:
                        status = bob_loop.run(call(bob), timeout=limit)
                        reached = any(r.method == "INVITE" for r in alice.requests)
                finally:
                    bob_loop.run(close(bob))
            finally:
                alice_loop.run(close(alice))
        finally:
            server_loop.run(exits.aclose())
    behavior = dataclasses.replace(LINUX_MASQUERADE, udp_mapping_timeout=float(lifetime))
    return KeepaliveLabOutcome(
        keepalive=keepalive,
        lifetime=float(lifetime),
        wait=wait,
        nat_timeouts=nat_timeouts,
        inet_timeouts=inet_timeouts,
        registered=registered,
        invite_seen=reached,
        status=status,
        reached=registered and reached and status == 200,
        expected=expected_reached(behavior, keepalive=keepalive, wait=wait),
    )
