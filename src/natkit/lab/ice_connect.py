"""Lab scenario: two ICE agents behind two NATs connect (RFC 8445, RFC 6314 §5.2.2.3).

The topology, in the simulated internet (documentation and private ranges)::

    stun   203.0.113.1:3478        natkit's STUN server
    turn1  203.0.113.10            natkit's TURN server: UDP and TCP on 3478, TLS on 443
    turn2  203.0.113.11            a second one (``turn_servers=2``: the hot spare's relay)
       |
    internet
       |                                     |
    nat-a 198.51.100.1               nat-b 198.51.100.2     (firewalls route
       |  192.168.1.0/24                |  192.168.2.0/24   192.0.2.0/25 and
    agent a (controlling)            agent b (controlled)   192.0.2.128/25)

"NATs in tandem" puts a carrier-grade NAT (203.0.113.101/.102, 100.64.x.0/24
inside) in front of a port-restricted home NAT; "same NAT" puts both agents
behind one NAT, with or without hairpinning.

Theory of operation
-------------------
Each side runs an :class:`~natkit.ice.aio.agent.AsyncIceAgent` that gathers
from the STUN server and from every TURN server over UDP, TCP and TLS on 443
(what a client that does not know its network must try, RFC 8656 §3.1).
Signalling is in process: credentials are exchanged at once, candidates are
delivered to the other agent ``signalling_delay`` seconds after they are
gathered (trickle, RFC 8838), end-of-candidates likewise. The outcome
(:class:`ConnectResult`) is what the selected pair of agent a is, how long it
took both agents to connect (gathering included) and how many checks were
sent; after connecting, one datagram goes each way over the selected pair
and must arrive (``data_ok``).

:func:`expected_path` is the theory the matrix tests hold the outcome to
(DESIGN.md): relayed exactly when both sides map endpoint-dependently, or one
does and the other filters address-and-port-dependently, or a side cannot
send UDP at all; direct otherwise (and always behind one NAT: the host
candidates reach each other).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from natkit.addr import Endpoint, Transport
from natkit.errors import NatkitError
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import FailoverExhausted, IceEvent
from natkit.ice.gather_config import GatherConfig, TurnServerSpec
from natkit.lab.turn import REALM, TLS_HOSTNAME, lab_credentials
from natkit.nat.box import NatBehavior, NatBox
from natkit.nat.presets import CARRIER_GRADE, PORT_RESTRICTED_CONE, PRESETS
from natkit.nat.types import Filtering, Mapping
from natkit.net.sim import Internet, Link, Middlebox, SimHost, run_virtual
from natkit.net.stack import Stack
from natkit.rng import seeded_rng
from natkit.stun.aio import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.server import TurnServerConfig

__all__ = [
    "ConnectLab",
    "ConnectResult",
    "IceRestart",
    "MediaProbe",
    "NAT_NAMES",
    "STUN_SERVER",
    "SAME_NAT",
    "TANDEM",
    "TURN_IPS",
    "behavior_of",
    "expected_path",
    "expected_path_for",
    "ice_servers",
    "run_connect_sim",
    "start_relay",
    "start_stun_server",
]

STUN_SERVER = Endpoint("203.0.113.1", 3478)
TURN_IPS = ("203.0.113.10", "203.0.113.11")
TURN_PORT = 3478
TURNS_PORT = 443
TANDEM = "tandem"
"""A carrier-grade NAT in front of a port-restricted home NAT (ECC report §6.1)."""
SAME_NAT = "same-nat"
SAME_NAT_HAIRPIN = "same-nat-hairpin"

NAT_NAMES: tuple[str, ...] = (
    "open",
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
    "symmetric-udp-firewall",
    "udp-blocked",
    "web-only",
    TANDEM,
)
"""The presets of the traversal matrix, named as ``natkit lab natcheck`` names them."""


def behavior_of(name: str) -> NatBehavior:
    """The behaviour one side sees (a tandem: what the pair of NATs does
    together, endpoint-independent mapping and address-and-port-dependent
    filtering)."""
    if name == TANDEM:
        return PORT_RESTRICTED_CONE
    try:
        return PRESETS[name]
    except KeyError:
        valid = ", ".join((*PRESETS, TANDEM))
        raise ValueError(f"unknown NAT preset {name!r}; valid presets: {valid}") from None


def _udp_ok(b: NatBehavior) -> bool:
    return not b.udp_blocked


def _edm(b: NatBehavior) -> bool:
    return b.translate and b.mapping is not Mapping.ENDPOINT_INDEPENDENT


def _apdf(b: NatBehavior) -> bool:
    return b.filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT


def expected_path(nat_a: str, nat_b: str) -> str:
    """``"direct"`` or ``"relay"``: DESIGN.md's ICE matrix (RFC 6314 §5.2.2.3)."""
    return expected_path_for(behavior_of(nat_a), behavior_of(nat_b))


def expected_path_for(a: NatBehavior, b: NatBehavior) -> str:
    """:func:`expected_path` for two behaviours."""
    if not (_udp_ok(a) and _udp_ok(b)):
        return "relay"
    if (_edm(a) and (_edm(b) or _apdf(b))) or (_edm(b) and _apdf(a)):
        return "relay"
    return "direct"


def relay_transport(name: str) -> Transport:
    """The TURN transport a side ends up on: UDP where UDP leaves, TCP where
    only UDP is blocked, TLS on 443 behind a web-only firewall (ECC §6.5)."""
    b = behavior_of(name)
    if not b.udp_blocked:
        return Transport.UDP
    if b.allowed_outbound is not None:
        return Transport.TLS
    return Transport.TCP


@dataclass(slots=True)
class ConnectResult:
    """The outcome of one pair, as agent a (controlling) sees it."""

    nat_a: str
    nat_b: str
    connected: bool
    path: str | None = None
    """``direct`` (host/srflx/prflx both ends) or ``relay`` (a TURN relay in between)."""
    local_type: str | None = None
    remote_type: str | None = None
    transport: str | None = None
    """How agent a's local candidate is reached: ``udp``, or the TURN
    transport (``udp``, ``tcp``, ``tls``) when it is relayed."""
    remote_transport: str | None = None
    """The same for agent b's end of its selected pair."""
    local: str | None = None
    remote: str | None = None
    elapsed_s: float = 0.0
    """Virtual (or, in the namespace lab, real) seconds from start to both connected."""
    checks_sent: int = 0
    """Connectivity checks both agents sent until then (retransmissions included)."""
    path_at_connect: str | None = None
    """The path when both had connected: a relayed pair chosen first may be
    upgraded to a direct one whose check succeeded later (then ``path`` is
    ``direct`` and ``upgraded`` is true)."""
    upgraded: bool = False
    checks_a: int = 0
    checks_b: int = 0
    data_ok: bool = False
    error: str | None = None
    mode: str = "sim"

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "nat_a": self.nat_a,
            "nat_b": self.nat_b,
            "connected": self.connected,
            "path": self.path,
            "local_type": self.local_type,
            "remote_type": self.remote_type,
            "transport": self.transport,
            "remote_transport": self.remote_transport,
            "local": self.local,
            "remote": self.remote,
            "elapsed_s": round(self.elapsed_s, 4),
            "checks_sent": self.checks_sent,
            "checks_a": self.checks_a,
            "checks_b": self.checks_b,
            "path_at_connect": self.path_at_connect,
            "upgraded": self.upgraded,
            "data_ok": self.data_ok,
            "error": self.error,
        }


def ice_servers(
    turn_ips: tuple[str, ...] = TURN_IPS[:1],
    *,
    stun: Endpoint = STUN_SERVER,
    tls: bool = True,
) -> tuple[tuple[Endpoint, ...], tuple[TurnServerSpec, ...]]:
    """The STUN server and, per TURN server, UDP and TCP on 3478 and TLS on 443."""
    _, credentials = lab_credentials()
    specs: list[TurnServerSpec] = []
    for ip in turn_ips:
        specs.append(TurnServerSpec(address=Endpoint(ip, TURN_PORT), credentials=credentials))
        specs.append(
            TurnServerSpec(
                address=Endpoint(ip, TURN_PORT), credentials=credentials, transport=Transport.TCP
            )
        )
        if tls:
            specs.append(
                TurnServerSpec(
                    address=Endpoint(ip, TURNS_PORT),
                    credentials=credentials,
                    transport=Transport.TLS,
                    server_hostname=TLS_HOSTNAME,
                )
            )
    return (stun,), tuple(specs)


async def start_stun_server(stack: Stack, at: Endpoint = STUN_SERVER) -> StunServerRunner:
    """natkit's STUN server (RFC 8489 Binding) at ``at``; started."""
    runner = StunServerRunner(stack, StunServerConfig(primary=at))
    await runner.start()
    return runner


async def start_relay(
    stack: Stack, ip: str, *, tls: ssl.SSLContext | None = None, seed: int = 0
) -> TurnServerRunner:
    """natkit's TURN server on ``ip``: UDP and TCP on 3478, TLS on 443 with a
    context, relaying from ``ip``, with the lab's user; started."""
    credentials, _ = lab_credentials()
    listen = [(t, Endpoint(ip, TURN_PORT)) for t in (Transport.UDP, Transport.TCP)]
    if tls is not None:
        listen.append((Transport.TLS, Endpoint(ip, TURNS_PORT)))
    config = TurnServerConfig(realm=REALM, relay_ips=(ip,), rng=seeded_rng(seed))
    runner = TurnServerRunner(stack, config, credentials, listen=listen, tls=tls)
    await runner.start()
    return runner


def describe_pair(agent: AsyncIceAgent) -> tuple[Candidate, Candidate, str] | None:
    """Agent's selected pair of component 1 and how its local end is reached."""
    pair = agent.selected_pair(1)
    if pair is None:
        return None
    local, remote = pair
    transport = "udp"
    if local.type is CandidateType.RELAYED:
        relay = agent.relay_for(local)
        if relay is not None:
            transport = relay.allocation.spec.transport.value
    return local, remote, transport


def path_of(local: Candidate, remote: Candidate) -> str:
    relayed = CandidateType.RELAYED
    return "relay" if relayed in (local.type, remote.type) else "direct"


def wire_signalling(
    a: AsyncIceAgent,
    b: AsyncIceAgent,
    *,
    delay: float,
    signalled: Callable[[Candidate], bool] | None = None,
) -> None:
    """In-process signalling: credentials now, candidates ``delay`` after they
    are gathered (end-of-candidates as ``None``); with ``signalled``, only
    the candidates it accepts (to show what a path needs)."""
    loop = asyncio.get_running_loop()

    def deliver(to: AsyncIceAgent) -> Callable[[Candidate | None], None]:
        def on_candidate(candidate: Candidate | None) -> None:
            if candidate is None:
                loop.call_later(delay, to.end_of_remote_candidates)
            elif signalled is None or signalled(candidate):
                remote = dataclasses.replace(candidate, base=None)
                loop.call_later(delay, to.add_remote_candidate, remote)

        return on_candidate

    a.on_candidate = deliver(b)
    b.on_candidate = deliver(a)
    ca, cb = a.local_credentials, b.local_credentials
    a.set_remote_credentials(cb.ufrag, cb.pwd)
    b.set_remote_credentials(ca.ufrag, ca.pwd)


async def exchange_data(a: AsyncIceAgent, b: AsyncIceAgent, *, timeout: float = 5.0) -> bool:
    """One datagram each way over the selected pairs; True when both arrive."""
    ping_a, ping_b = b"natkit ice lab: from a", b"natkit ice lab: from b"

    async def expect(agent: AsyncIceAgent, wanted: bytes) -> None:
        while True:
            _, data = await agent.recv()
            if data == wanted:
                return

    waiting = asyncio.gather(expect(b, ping_a), expect(a, ping_b))
    sent = a.send(1, ping_a) and b.send(1, ping_b)
    try:
        async with asyncio.timeout(timeout):
            await waiting
    except TimeoutError:
        return False
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    return sent


class MediaProbe:
    """Media-like traffic both ways: one datagram every ``period`` seconds
    (RTP's 20 ms) from each agent over its selected pair, with the arrival
    times recorded per receiving side (``"a"``, ``"b"``). An outage is the
    longest silence between arrivals (:meth:`longest_gap`)."""

    def __init__(self, a: AsyncIceAgent, b: AsyncIceAgent, *, period: float = 0.02) -> None:
        self.agents = {"a": a, "b": b}
        self.period = period
        self.arrivals: dict[str, list[float]] = {"a": [], "b": []}
        self.sent = {"a": 0, "b": 0}
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self.follow(a, b)

    def follow(self, a: AsyncIceAgent, b: AsyncIceAgent) -> None:
        """Send and receive through ``a`` and ``b`` from now on (the agents
        that replaced the old ones in an ICE restart)."""
        self.agents = {"a": a, "b": b}
        for side, agent in self.agents.items():
            agent.on_data = functools.partial(self._arrived, side)

    def _arrived(self, side: str, component: int, data: bytes) -> None:
        del component, data
        self.arrivals[side].append(self._loop.time())

    def start(self) -> None:
        self._task = self._loop.create_task(self._run())

    async def _run(self) -> None:
        payload = b"\x80" + b"\x00" * 171  # the size of a G.711 RTP packet
        while True:
            for side, agent in self.agents.items():
                if agent.send(1, payload):
                    self.sent[side] += 1
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def longest_gap(self, side: str, *, since: float, until: float) -> float:
        """The longest silence at ``side`` within ``[since, until]``
        (the whole window when nothing arrived)."""
        times = [t for t in self.arrivals[side] if since <= t <= until]
        edges = [since, *times, until]
        return max(b - a for a, b in itertools.pairwise(edges))


@dataclass(slots=True)
class IceRestart:
    """One ICE restart of :meth:`ConnectLab.restart_ice`: when it began (the
    agent reported the failure) and when both new agents were connected."""

    started: float
    connected: float | None = None
    error: str | None = None


class ConnectLab:
    """The topology of the module docstring on the running virtual clock:
    :meth:`build`, then :meth:`connect`; the parts stay reachable for
    scenarios that break something mid-session (``nat_boxes``,
    ``turn_servers``)."""

    def __init__(self, net: Internet, nat_a: str, nat_b: str) -> None:
        self.net = net
        self.nat_a = nat_a
        self.nat_b = nat_b
        self.agents: list[AsyncIceAgent] = []
        self.stun: StunServerRunner | None = None
        self.turn_servers: list[TurnServerRunner] = []
        self.nat_boxes: dict[str, NatBox] = {}
        self.started_at = 0.0
        self.restarts: list[IceRestart] = []
        self.exhausted: list[FailoverExhausted] = []
        self._factories: list[Callable[[], AsyncIceAgent]] = []
        self._signalled: Callable[[Candidate], bool] | None = None
        self._signalling_delay = 0.05
        self._probe: MediaProbe | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._retired: list[asyncio.Task[None]] = []

    @property
    def a(self) -> AsyncIceAgent:
        return self.agents[0]

    @property
    def b(self) -> AsyncIceAgent:
        return self.agents[1]

    @classmethod
    async def build(
        cls,
        nat_a: str,
        nat_b: str,
        *,
        seed: int = 0,
        latency: float = 0.05,
        turn_servers: int = 1,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        ice_config: IceConfig | None = None,
        split_turn: bool = False,
    ) -> ConnectLab:
        """``nat_a``/``nat_b``: names of :data:`NAT_NAMES`; ``nat_a`` may be
        ``same-nat``/``same-nat-hairpin`` (``nat_b`` then names the shared
        NAT's preset). ``latency``: one-way delay between the two agents.
        ``split_turn`` (with two TURN servers): agent a gathers from the first
        only, agent b from the second only, so no path of one depends on the
        other's server."""
        net = Internet(seed=seed, default_link=Link(delay=0.001))
        lab = cls(net, nat_a, nat_b)
        stun_host = net.add_host("stun", STUN_SERVER.host)
        turn_hosts = [net.add_host(f"turn{i + 1}", TURN_IPS[i]) for i in range(turn_servers)]
        lab.stun = await start_stun_server(stun_host.stack)
        for i, host in enumerate(turn_hosts):
            relay = await start_relay(host.stack, TURN_IPS[i], tls=tls_server, seed=seed + 10 + i)
            lab.turn_servers.append(relay)
        hop = Link(delay=latency * 0.4)
        host_link = Link(delay=latency * 0.1)
        if nat_a in (SAME_NAT, SAME_NAT_HAIRPIN):
            shared = dataclasses.replace(behavior_of(nat_b), hairpinning=nat_a == SAME_NAT_HAIRPIN)
            box = lab._nat(shared, "nat", 1, seed, hop)
            hosts = [net.add_host(name, behind=box, link=Link(delay=latency / 2)) for name in "ab"]
        else:
            hosts = [
                lab._side(label, name, n, seed, hop, host_link)
                for n, (label, name) in enumerate((("a", nat_a), ("b", nat_b)), start=1)
            ]
        for i, host in enumerate(hosts):
            ips = TURN_IPS[:turn_servers]
            if split_turn and turn_servers > 1:
                ips = (ips[i],)
            stun_servers, specs = ice_servers(ips, tls=tls_client is not None)
            gather = GatherConfig(
                stun_servers=stun_servers, turn_servers=specs, rng=seeded_rng(seed * 7 + i)
            )
            config = ice_config or IceConfig()
            config = dataclasses.replace(config, rng=seeded_rng(seed * 7 + 3 + i))
            factory = functools.partial(
                AsyncIceAgent,
                host.stack,
                controlling=i == 0,
                config=config,
                gather_config=gather,
                tls=tls_client,
            )
            lab._factories.append(factory)
            lab.agents.append(factory())
        return lab

    def _nat(self, behavior: NatBehavior, name: str, n: int, seed: int, link: Link) -> Middlebox:
        net = self.net
        if behavior.translate:
            public = f"198.51.100.{n}"
            box = NatBox(
                behavior,
                [public],
                inside_networks=[f"192.168.{n}.0/24"],
                rng=seeded_rng(seed + n),
                name=name,
                trace=False,
            )
            self.nat_boxes[name] = box
            return net.add_middlebox(name, box, [public], inside=f"192.168.{n}.0/24", link=link)
        inside = f"192.0.2.{(n - 1) * 128}/25"
        box = NatBox(
            behavior, [], inside_networks=[inside], rng=seeded_rng(seed + n), name=name, trace=False
        )
        self.nat_boxes[name] = box
        return net.add_middlebox(name, box, [], inside=inside, routed=True, link=link)

    def _side(
        self, label: str, name: str, n: int, seed: int, hop: Link, host_link: Link
    ) -> SimHost:
        net = self.net
        if name != TANDEM:
            box = self._nat(behavior_of(name), f"nat-{label}", n, seed, hop)
            return net.add_host(label, behind=box, link=host_link)
        half = Link(delay=hop.delay / 2)
        cgn_public = f"203.0.113.{100 + n}"
        cgn_inside = f"100.64.{n}.0/24"
        cgn = NatBox(
            CARRIER_GRADE,
            [cgn_public],
            inside_networks=[cgn_inside],
            rng=seeded_rng(seed + 20 + n),
            name=f"cgn-{label}",
            trace=False,
        )
        self.nat_boxes[f"cgn-{label}"] = cgn
        outer = net.add_middlebox(f"cgn-{label}", cgn, [cgn_public], inside=cgn_inside, link=half)
        home_public = f"100.64.{n}.2"
        home = NatBox(
            PORT_RESTRICTED_CONE,
            [home_public],
            inside_networks=[f"192.168.{n}.0/24"],
            rng=seeded_rng(seed + 30 + n),
            name=f"nat-{label}",
            trace=False,
        )
        self.nat_boxes[f"nat-{label}"] = home
        inner = net.add_middlebox(
            f"nat-{label}",
            home,
            [home_public],
            inside=f"192.168.{n}.0/24",
            behind=outer,
            link=half,
        )
        return net.add_host(label, behind=inner, link=host_link)

    async def connect(
        self,
        *,
        timeout: float = 30.0,
        signalling_delay: float = 0.05,
        data: bool = True,
        settle: float = 1.5,
        signalled: Callable[[Candidate], bool] | None = None,
    ) -> ConnectResult:
        """Start both agents, signal in process, wait for both to connect,
        then ``settle`` seconds more (checks go on after nomination: a direct
        pair that succeeds late replaces a relayed one) before the selected
        pair is read. ``signalled`` filters the candidates signalled."""
        loop = asyncio.get_running_loop()
        result = ConnectResult(self.nat_a, self.nat_b, connected=False)
        self._signalled, self._signalling_delay = signalled, signalling_delay
        wire_signalling(self.a, self.b, delay=signalling_delay, signalled=signalled)
        self.started_at = loop.time()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(self.a.start(), self.b.start())
                await asyncio.gather(self.a.connect(), self.b.connect())
        except TimeoutError:
            result.error = f"not connected within {timeout:g} s"
        except NatkitError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        fill_result(result, self.a, self.b, self.started_at)
        if result.connected and settle > 0:
            await asyncio.sleep(settle)
            fill_result(result, self.a, self.b, self.started_at)
        if result.connected and data:
            result.data_ok = await exchange_data(self.a, self.b)
        return result

    def restart_on_exhaustion(self, probe: MediaProbe | None = None) -> None:
        """Restart ICE as soon as either agent reports
        :class:`~natkit.ice.events.FailoverExhausted` (no hot spare
        survived), moving ``probe`` to the new agents; the reports are kept
        in :attr:`exhausted`, each restart in :attr:`restarts`."""
        self._probe = probe
        for agent in self.agents:
            agent.on_event = self._on_agent_event

    def _on_agent_event(self, event: IceEvent) -> None:
        if not isinstance(event, FailoverExhausted):
            return
        self.exhausted.append(event)
        if self._restarting is None:
            self._restarting = asyncio.get_running_loop().create_task(self.restart_ice())

    async def restart_ice(self) -> None:
        """ICE restart (RFC 8445 §9) the way an application does it with
        this driver: new agents on the same hosts (new credentials, a new
        gathering, so new TURN allocations through the NATs' new
        mappings), signalled anew and checked; the old agents close in the
        background. Media (the probe of :meth:`restart_on_exhaustion`)
        moves to the new agents once both are connected."""
        loop = asyncio.get_running_loop()
        record = IceRestart(started=loop.time())
        self.restarts.append(record)
        old, self.agents = self.agents, [make() for make in self._factories]
        for agent in old:
            agent.on_event = None
            self._retired.append(loop.create_task(agent.close(timeout=1.0)))
        wire_signalling(self.a, self.b, delay=self._signalling_delay, signalled=self._signalled)
        for agent in self.agents:
            agent.on_event = self._on_agent_event
        try:
            await asyncio.gather(self.a.start(), self.b.start())
            await asyncio.gather(self.a.connect(), self.b.connect())
        except NatkitError as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        else:
            record.connected = loop.time()
            if self._probe is not None:
                self._probe.follow(self.a, self.b)
        finally:
            self._restarting = None

    async def close(self) -> None:
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarting
        for task in self._retired:
            with contextlib.suppress(NatkitError, OSError, TimeoutError):
                await task
        for agent in self.agents:
            with contextlib.suppress(NatkitError, OSError):
                await agent.close(timeout=1.0)
        for runner in self.turn_servers:
            await stop_turn_server(runner)
        if self.stun is not None:
            self.stun.close()
            await self.stun.wait_closed()


async def stop_turn_server(runner: TurnServerRunner) -> None:
    """Close a TURN server (again, if a scenario killed it) and wait for it."""
    runner.close()
    await runner.wait_closed()


def fill_result(
    result: ConnectResult, a: AsyncIceAgent, b: AsyncIceAgent, started_at: float
) -> None:
    """Copy the agents' outcome into ``result`` (again after settling: the
    first call's path stays ``path_at_connect``)."""
    checks_a = a.checks_at_connected if a.checks_at_connected is not None else a.checks_sent
    checks_b = b.checks_at_connected if b.checks_at_connected is not None else b.checks_sent
    result.checks_a, result.checks_b = checks_a, checks_b
    result.checks_sent = checks_a + checks_b
    if a.connected_at is not None and b.connected_at is not None:
        result.elapsed_s = max(a.connected_at, b.connected_at) - started_at
    ours, theirs = describe_pair(a), describe_pair(b)
    if ours is None or theirs is None or not (a.connected and b.connected):
        return
    result.connected = True
    local, remote, transport = ours
    result.path = path_of(local, remote)
    if result.path_at_connect is None:
        result.path_at_connect = result.path
    result.upgraded = result.path != result.path_at_connect
    result.local_type, result.remote_type = local.type.value, remote.type.value
    result.transport, result.remote_transport = transport, theirs[2]
    result.local, result.remote = str(local.address), str(remote.address)


def run_connect_sim(
    nat_a: str,
    nat_b: str,
    *,
    seed: int = 0,
    latency: float = 0.05,
    tls_server: ssl.SSLContext | None = None,
    tls_client: ssl.SSLContext | None = None,
    timeout: float = 30.0,
) -> ConnectResult:
    """One pair on a fresh virtual clock (see :class:`ConnectLab`)."""

    async def main() -> ConnectResult:
        lab = await ConnectLab.build(
            nat_a,
            nat_b,
            seed=seed,
            latency=latency,
            tls_server=tls_server,
            tls_client=tls_client,
        )
        try:
            return await lab.connect(timeout=timeout)
        finally:
            await lab.close()

    return run_virtual(main, time_limit=3600.0)
