"""Lab scenario: the NAT in front of an Outbound user agent reboots and
forgets every mapping; the UA re-registers and the next call reaches it
(RFC 5626 §4.4, §4.5; RFC 6314 §5.1).

::

    alice 192.168.1.x:5060 --- NAT (reboots at t0) --- internet --- registrar/proxy
      RegistrationAgent, Outbound,                                  203.0.113.10
      one flow over UDP or TCP                                           |
                                                               bob 198.51.100.20 (caller)

Alice registers through natkit's registration agent (``+sip.instance``,
``reg-id=1``, Expires 120, the registrar's Flow-Timer 20 s). The NAT box
then drops all its state (:meth:`natkit.nat.box.NatBox.reboot`): the flow
the registrar holds for alice now leads nowhere.

* Over **TCP** the connection is dead: alice's next CRLFCRLF ping is
  dropped at the NAT (no mapping), no pong comes within 10 s, the agent
  fails the flow (:class:`FlowFailed`) and re-registers after the §4.5
  back-off (30-60 s, only one flow) over a new connection (§4.5: the
  agent closes the failed flow's connection first): about 60 s after
  the reboot.
* Over **UDP** the next STUN keepalive makes a new mapping. Behind a NAT
  that picks a new external port (symmetric, carrier-grade) its
  XOR-MAPPED-ADDRESS differs from the address alice registered with: the
  agent fails the flow at once (RFC 5626 §4.4.1) and registers again after
  the back-off. Behind port-preserving NATs and firewalls the mapping comes
  back the same, nothing failed, and the next REGISTER refresh (half the
  expiry, 60 s) finds it so.

Either way, once alice has registered again, bob's INVITE through the
proxy reaches her over the new flow and is answered 200. A box without
state (``open``) loses nothing. Presets that do not pass the transport to
port 5060 at all (UDP blocked, web only) never register.

A call made one second after the reboot (``early``) shows what was lost:
over TCP it fails (the proxy's INVITE goes into the dead connection, 408
after Timer B); over UDP it fails behind NATs that pick a new external port
(symmetric, carrier-grade), but succeeds behind port-preserving ones and
firewalls: alice's next keepalive, within the 32 s the proxy retransmits
the INVITE, recreates the very mapping the registrar's binding names.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, SIP_PORT, LabPhone
from natkit.lab.topology import attach_nat
from natkit.nat.box import NatBehavior, NatBox, PortAssignment
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.packet import IpProto
from natkit.rng import seeded_rng
from natkit.sip.aio.registration import RegistrationAgent
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, make_response
from natkit.sip.registration import FlowConfig, RegistrationConfig
from natkit.sip.registration_events import FlowFailed, RegistrationSucceeded
from natkit.sip.uri import SipUri, parse_uri
from natkit.sip.via_routing import response_target
from natkit.store.memory import MemoryStore

__all__ = [
    "CALLER_IP",
    "FLOW_TIMER",
    "REGISTRATION_EXPIRES",
    "AnsweringAgent",
    "RebootOutcome",
    "expected_early_call",
    "expected_reboot_outcome",
    "lab_outbound_registrar",
    "outbound_agent_config",
    "reboot_then_call",
    "run_reboot_sim",
]

CALLER_IP = "198.51.100.20"
FLOW_TIMER = 20
"""Seconds; keepalives every 16-20 s keep even a 30 s UDP mapping open."""
REGISTRATION_EXPIRES = 120
"""Refresh every 60 s: how soon a UDP flow moves to the rebooted NAT's new mapping."""
REGISTER_WAIT = 60.0
REBOOT_AT = 30.0
"""Seconds after the registration: a few keepalives have passed."""
RECOVERY_LIMIT = 400.0
EPOCH = 1_800_000_000.0
SECRET = b"lab-secret-lab-secret-lab-secret"


def sip_uri(text: str) -> SipUri:
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise ValueError(f"not a sip URI: {text}")
    return uri


@dataclass(frozen=True, slots=True)
class RebootOutcome:
    nat: str
    transport: SipTransport
    registered: bool
    """The first registration succeeded."""
    flow_failed: bool
    """The agent reported :class:`FlowFailed` after the reboot."""
    recovered_after: float | None
    """Seconds from the reboot to the next successful REGISTER (None: never)."""
    status: int | None
    """Bob's final response to the INVITE after recovery (None: no call made)."""
    reached: bool
    """The INVITE arrived at alice and bob got her 200."""
    detected_after: float | None = None
    """Seconds from the reboot to the agent's FlowFailed (None: not seen)."""

    @property
    def expected(self) -> tuple[bool, bool, bool]:
        """(registered, flow_failed, reached) this NAT and transport should give."""
        return expected_reboot_outcome(PRESETS[self.nat], self.transport)

    @property
    def ok(self) -> bool:
        return (self.registered, self.flow_failed, self.reached) == self.expected


def passes(behavior: NatBehavior, transport: SipTransport) -> bool:
    """The box lets ``transport`` out to the registrar's SIP port at all."""
    proto = IpProto.UDP if transport is SipTransport.UDP else IpProto.TCP
    if proto is IpProto.UDP and behavior.udp_blocked:
        return False
    allowed = behavior.allowed_outbound
    return allowed is None or (proto, SIP_PORT) in allowed


def expected_reboot_outcome(
    behavior: NatBehavior, transport: SipTransport
) -> tuple[bool, bool, bool]:
    """(registered, flow_failed, reached): a reachable registrar registers;
    a reboot kills a TCP flow through any box with state (the agent sees
    it) and a UDP flow through a NAT that maps it to a new external port
    (the STUN keepalive's mapped address changes); after the next REGISTER
    the call arrives."""
    if not passes(behavior, transport):
        return (False, False, False)
    stateless = not behavior.translate and behavior.filtering is None
    if transport.reliable:
        return (True, not stateless, True)
    rebound = behavior.translate and behavior.port_assignment is not PortAssignment.PRESERVING
    return (True, rebound, True)


def expected_early_call(behavior: NatBehavior, transport: SipTransport) -> bool:
    """Whether a call right after the reboot, before any re-registration,
    arrives: only where nothing the registrar's binding names was lost for
    good (no state at all, or a UDP mapping the next keepalive recreates on
    the same external port: firewalls and port-preserving NATs)."""
    if not passes(behavior, transport):
        return False
    if not behavior.translate and behavior.filtering is None:
        return True
    if transport.reliable:
        return False
    return not behavior.translate or behavior.port_assignment is PortAssignment.PRESERVING


class AnsweringAgent(RegistrationAgent):
    """The registration agent plus the smallest UAS: it answers every
    request but ACK with ``answer`` over the flow it came on (the agent
    itself serves responses only) and keeps what arrived."""

    def __init__(self, host: SimHost, config: RegistrationConfig, *, answer: int = 200) -> None:
        super().__init__(host.stack, config)
        self.answer = answer
        self.requests: list[SipRequest] = []

    def _on_message(self, message: SipMessage, source: Source) -> None:
        if not isinstance(message, SipRequest):
            super()._on_message(message, source)
            return
        self.requests.append(message)
        if message.method == "ACK":
            return
        response = make_response(message, self.answer, to_tag="alice-tag")
        response.headers.add("Contact", f"<{self.config.contact}>")
        target = response_target(response, source)
        if target is not None:
            self.transport.send_soon(response, target)


def outbound_agent_config(
    host: SimHost, transport: SipTransport, proxies: tuple[Endpoint, ...], *, seed: int = 0
) -> RegistrationConfig:
    """alice@example.org with one Outbound flow per proxy in ``proxies``
    (reg-id 1, 2, ...), Expires :data:`REGISTRATION_EXPIRES`."""
    t = transport.value
    return RegistrationConfig(
        aor=sip_uri(f"sip:alice@{DOMAIN}"),
        registrar=sip_uri(f"sip:{DOMAIN}"),
        contact=sip_uri(f"sip:alice@{host.ip}:{SIP_PORT};transport={t}"),
        sent_by=Endpoint(host.ip, SIP_PORT),
        flows=tuple(
            FlowConfig(
                Target(transport, proxy), sip_uri(f"sip:{proxy.host}:{proxy.port};transport={t}")
            )
            for proxy in proxies
        ),
        expires=REGISTRATION_EXPIRES,
        rng=seeded_rng(seed + 7),
    )


def lab_outbound_registrar(
    host: SimHost,
    *,
    seed: int = 0,
    transports: tuple[SipTransport, ...] = (SipTransport.UDP, SipTransport.TCP),
) -> SipServer:
    """natkit's registrar + home proxy for ``example.org`` on ``host``:
    UDP and TCP 5060, open registration, Flow-Timer :data:`FLOW_TIMER`."""
    loop = asyncio.get_running_loop()
    config = SipServerConfig(
        listen=tuple((t, Endpoint(host.ip, SIP_PORT)) for t in transports),
        domains=frozenset({DOMAIN}),
        secret=SECRET,
        authenticate=False,
        flow_timer=FLOW_TIMER,
    )
    store = MemoryStore(clock=lambda: EPOCH + loop.time())
    return SipServer(host.stack, config, store, rng=seeded_rng(seed + 5))


async def _next_registration(agent: RegistrationAgent, limit: float) -> tuple[bool, float | None]:
    """Wait (at most ``limit``) for a successful REGISTER; return (succeeded,
    when a FlowFailed came first, or None)."""
    loop = asyncio.get_running_loop()
    failed_at: float | None = None
    try:
        async with asyncio.timeout(limit):
            while True:
                event = await agent.events.get()
                if isinstance(event, FlowFailed) and failed_at is None:
                    failed_at = loop.time()
                elif isinstance(event, RegistrationSucceeded):
                    return True, failed_at
    except TimeoutError:
        return False, failed_at


def _drain(agent: RegistrationAgent) -> None:
    while not agent.events.empty():
        agent.events.get_nowait()


async def reboot_then_call(
    name: str,
    behavior: NatBehavior,
    transport: SipTransport,
    *,
    early: bool = False,
    seed: int = 0,
) -> RebootOutcome:
    """Register alice behind ``behavior`` over ``transport``, reboot the NAT
    :data:`REBOOT_AT` s later, wait for her next registration, then have
    bob call her. ``early``: bob calls one second after the reboot instead,
    before anything was repaired (``recovered_after`` is then None)."""
    loop = asyncio.get_running_loop()
    net = Internet(seed=seed, default_link=Link(delay=0.02))
    server_host = net.add_host("registrar", REGISTRAR_IP)
    nat = attach_nat(net, behavior, seed=seed)
    alice_host = net.add_host("alice", behind=nat)
    config = outbound_agent_config(
        alice_host, transport, (Endpoint(REGISTRAR_IP, SIP_PORT),), seed=seed
    )
    async with lab_outbound_registrar(server_host, seed=seed):
        agent = AnsweringAgent(alice_host, config)
        bob = LabPhone(net.add_host("bob", CALLER_IP), "bob")
        await bob.start()
        await agent.start()
        try:
            registered, _ = await _next_registration(agent, REGISTER_WAIT)
            if not registered:
                return RebootOutcome(name, transport, False, False, None, None, False)
            await asyncio.sleep(REBOOT_AT)
            _drain(agent)
            core = nat.core
            if isinstance(core, NatBox):
                core.reboot(now=loop.time())
                nat.rearm()
            rebooted = loop.time()
            recovered_after: float | None = None
            failed_at: float | None = None
            if early:
                await asyncio.sleep(1.0)
            else:
                recovered, failed_at = await _next_registration(agent, RECOVERY_LIMIT)
                if not recovered:
                    return RebootOutcome(
                        name, transport, True, failed_at is not None, None, None, False
                    )
                recovered_after = loop.time() - rebooted
            detected_after = None if failed_at is None else failed_at - rebooted
            await bob.invite(f"sip:alice@{DOMAIN}")
            final = await bob.final_response(60)
            status = final.status if final is not None else None
            reached = any(r.method == "INVITE" for r in agent.requests)
        finally:
            await agent.close()
            bob.close()
    return RebootOutcome(
        name,
        transport,
        True,
        detected_after is not None,
        recovered_after,
        status,
        reached and status == 200,
        detected_after,
    )


TRANSPORTS = (SipTransport.UDP, SipTransport.TCP)


def run_reboot_sim(names: list[str] | None = None, *, seed: int = 0) -> list[RebootOutcome]:
    """Every NAT preset, Outbound over UDP and over TCP, on the simulated
    internet (minutes of virtual time each, well under a second of wall time)."""
    chosen = names if names is not None else list(PRESETS)

    async def main() -> list[RebootOutcome]:
        return [
            await reboot_then_call(name, PRESETS[name], transport, seed=seed)
            for name in chosen
            for transport in TRANSPORTS
        ]

    return run_virtual(main)
