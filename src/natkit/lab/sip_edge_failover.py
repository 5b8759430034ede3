"""Lab scenario: an Outbound user agent registered over two flows through
two edge proxies keeps receiving calls when one edge dies (RFC 5626 §3.4,
§5.3, §7; RFC 6314 §5.1.2).

::

                                       edge1 203.0.113.21 --.
    alice 192.168.1.x:5060 --- NAT ---<                      >--- registrar/proxy 203.0.113.10
      RegistrationAgent, reg-id 1, 2   edge2 203.0.113.22 --'            |
                                                               bob 198.51.100.20 (caller)

Alice registers one flow through each natkit edge proxy (``SipServer``
with ``edge_upstream``): the registrar keeps two bindings of her instance,
``reg-id`` 1 and 2, each with its edge's Path (and flow token). The home
proxy groups the flows of one instance into one fork target and tries them
one at a time: a branch that ends in 430, 408 (timeout) or a transport
failure moves to the next flow (:mod:`natkit.sip.proxy`).

Some edges are then closed. A call from bob right away still finds the
dead edge's binding. Over UDP the branch to it times out (Timer B, 32 s: a
closed UDP port in the simulator is silent) before the surviving flow
carries the INVITE; over TCP the binding's Path says ``transport=tcp``,
the registrar's connect to the dead edge is refused at once (RST) and the
next flow is tried within the same second; a call made after the dead
binding expired (Expires 120 s, the agent cannot refresh it) goes straight
over the survivor. With both edges dead, bob gets 408 (UDP: both branches
timed out), 500 (TCP: both refused; the proxy counts a transport failure
as 503, which it never forwards, RFC 3261 §16.7 step 6) or, once both
bindings expired, 404. Over TCP alice's agent notices one link delay later
(the edge's connection closes: :class:`FlowFailed` for that flow); over
UDP it finds out by the failed refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, SIP_PORT, LabPhone
from natkit.lab.sip_reboot import (
    CALLER_IP,
    EPOCH,
    SECRET,
    AnsweringAgent,
    lab_outbound_registrar,
    outbound_agent_config,
)
from natkit.lab.topology import attach_nat
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.flow import SipTransport, Target
from natkit.store.memory import MemoryStore

__all__ = [
    "EDGE_IPS",
    "FailoverOutcome",
    "call_after_edge_failure",
    "expected_failover",
    "lab_edge",
    "run_failover_sim",
]

EDGE_IPS = ("203.0.113.21", "203.0.113.22")
REGISTER_WAIT = 60.0
CALL_WAIT = 200.0
"""Long enough for two 32 s branch timeouts and an answer."""


@dataclass(frozen=True, slots=True)
class FailoverOutcome:
    transport: SipTransport
    dead: tuple[int, ...]
    """The edges closed (1, 2)."""
    wait: float
    """Seconds between closing them and bob's call."""
    registered: int
    """Flows registered before the failure."""
    flows_at_call: frozenset[int]
    """The flows alice's agent held registered when bob called."""
    status: int | None
    """Bob's final response (None: none within :data:`CALL_WAIT`)."""
    via_edge: int | None
    """The edge the INVITE reached alice through (None: it did not)."""
    setup_time: float
    """Seconds from bob's INVITE to his final response."""

    @property
    def reached(self) -> bool:
        return self.status == 200 and self.via_edge is not None

    @property
    def ok(self) -> bool:
        return self.registered == 2 and self.reached == expected_failover(self.dead)


def expected_failover(dead: tuple[int, ...]) -> bool:
    """The call arrives while at least one of the two flows' edges lives."""
    return len(set(dead) & {1, 2}) < 2


def lab_edge(host: SimHost, *, seed: int = 0) -> SipServer:
    """A natkit edge proxy on ``host``: UDP and TCP 5060 towards user agents,
    everything from them to the registrar over UDP (RFC 5626 §5)."""
    loop = asyncio.get_running_loop()
    config = SipServerConfig(
        listen=(
            (SipTransport.UDP, Endpoint(host.ip, SIP_PORT)),
            (SipTransport.TCP, Endpoint(host.ip, SIP_PORT)),
        ),
        domains=frozenset(),
        secret=SECRET,
        flow_timer=20,
        edge_upstream=Target(SipTransport.UDP, Endpoint(REGISTRAR_IP, SIP_PORT)),
    )
    store = MemoryStore(clock=lambda: EPOCH + loop.time())
    return SipServer(host.stack, config, store, rng=seeded_rng(seed + 11))


async def call_after_edge_failure(
    transport: SipTransport,
    dead: tuple[int, ...],
    *,
    wait: float = 0.0,
    nat: str = "port-restricted-cone",
    seed: int = 0,
) -> FailoverOutcome:
    """Register alice (behind ``nat``) over two flows, one per edge, close
    the edges in ``dead``, wait ``wait`` s, then have bob call her."""
    loop = asyncio.get_running_loop()
    net = Internet(seed=seed, default_link=Link(delay=0.02))
    server_host = net.add_host("registrar", REGISTRAR_IP)
    edges = [
        lab_edge(net.add_host(f"edge{i}", ip), seed=seed + i) for i, ip in enumerate(EDGE_IPS, 1)
    ]
    box = attach_nat(net, PRESETS[nat], seed=seed)
    alice_host = net.add_host("alice", behind=box)
    proxies = tuple(Endpoint(ip, SIP_PORT) for ip in EDGE_IPS)
    config = outbound_agent_config(alice_host, transport, proxies, seed=seed)
    registrar = lab_outbound_registrar(server_host, seed=seed, transports=(SipTransport.UDP,))
    async with registrar, edges[0], edges[1]:
        agent = AnsweringAgent(alice_host, config)
        bob = LabPhone(net.add_host("bob", CALLER_IP), "bob")
        await bob.start()
        await agent.start()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(agent.registered(2), REGISTER_WAIT)
            registered = len(agent.registered_flows)
            for index in dead:
                await edges[index - 1].close()
            await asyncio.sleep(wait)
            flows_at_call = agent.registered_flows
            started = loop.time()
            await bob.invite(f"sip:alice@{DOMAIN}")
            final = await bob.final_response(CALL_WAIT)
            setup_time = loop.time() - started
            status = final.status if final is not None else None
            via_edge = _edge_of(agent, status)
        finally:
            await agent.close()
            bob.close()
    return FailoverOutcome(
        transport, dead, wait, registered, flows_at_call, status, via_edge, setup_time
    )


def _edge_of(agent: AnsweringAgent, status: int | None) -> int | None:
    """Which edge the (last) INVITE came through: its top Via is the edge's."""
    invites = [r for r in agent.requests if r.method == "INVITE"]
    if not invites or status != 200:
        return None
    host = invites[-1].top_via.host
    return EDGE_IPS.index(host) + 1 if host in EDGE_IPS else None


TRANSPORTS = (SipTransport.UDP, SipTransport.TCP)
FAILURES: tuple[tuple[int, ...], ...] = ((), (1,), (2,), (1, 2))


def run_failover_sim(*, wait: float = 0.0, seed: int = 0) -> list[FailoverOutcome]:
    """Both transports, every set of dead edges, on the simulated internet."""

    async def main() -> list[FailoverOutcome]:
        return [
            await call_after_edge_failure(transport, dead, wait=wait, seed=seed)
            for transport in TRANSPORTS
            for dead in FAILURES
        ]

    return run_virtual(main)
