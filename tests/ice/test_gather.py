"""Sans-IO candidate gathering against natkit's own STUN and TURN server cores,
wired in-test through a small NAT and a latency queue, under explicit time."""

from __future__ import annotations

import heapq
import ipaddress
import random
from dataclasses import dataclass, field

import pytest

from natkit.addr import Endpoint, Transport
from natkit.errors import LocalProtocolError
from natkit.ice.candidate import CandidateType
from natkit.ice.gather import Gatherer, host_preferences, select_host_addresses
from natkit.ice.gather_config import GatherConfig, HostAddress, LocalBase, TurnServerSpec
from natkit.ice.gather_events import (
    CandidateGathered,
    GatherEvent,
    GatheringCompleted,
    ServerFailed,
    TurnConnectionAbandoned,
    TurnConnectionRequested,
)
from natkit.nat.portmap.mapping import PortMapMethod, PortMapping
from natkit.packet import IpProto
from natkit.stun.server import StunServer, StunServerConfig
from natkit.stun.transaction import LongTermCredentials
from natkit.turn.server import TurnServer

from ..turn.server_helpers import RELAY_V4, USERS, FakeDriver, make_server

HOST, SRFLX, RELAY = (
    CandidateType.HOST,
    CandidateType.SERVER_REFLEXIVE,
    CandidateType.RELAYED,
)
LAN = Endpoint("192.168.1.10", 5000)
LAN2 = Endpoint("192.168.1.10", 5001)
V6 = Endpoint("2001:db8:1::10", 5000)
PUBLIC_IP = "198.51.100.1"
STUN = Endpoint("203.0.113.1", 3478)
STUN2 = Endpoint("203.0.113.2", 3478)
STUN_V6 = Endpoint("2001:db8:ffff::1", 3478)
DEAD = Endpoint("203.0.113.99", 3478)
TURN = Endpoint("192.0.2.1", 3478)  # server_helpers.SERVER: the TURN core's address
CREDS = LongTermCredentials("alice", USERS["alice"])
DELAY = 0.02  # one way


@dataclass
class Net:
    """Zero-loss network with a fixed one-way delay, an endpoint-independent
    NAT in front of private bases, a STUN core per STUN address and the TURN
    core (UDP and TCP) at ``TURN``; other servers are dead."""

    gatherer: Gatherer
    nat: bool = True
    now: float = 0.0
    stun: dict[Endpoint, StunServer] = field(default_factory=dict)
    turn: TurnServer | None = None
    turn_driver: FakeDriver | None = None
    events: list[tuple[float, GatherEvent]] = field(default_factory=list)
    _queue: list[tuple[float, int, str, bytes, Endpoint, Endpoint, int | None]] = field(
        default_factory=list
    )
    _seq: int = 0
    _map: dict[Endpoint, Endpoint] = field(default_factory=dict)
    _streams: dict[int, Endpoint] = field(default_factory=dict)  # connection -> client ep
    _servers: dict[int, Endpoint] = field(default_factory=dict)  # connection -> server
    refuse_connections: bool = False

    def public(self, src: Endpoint) -> Endpoint:
        if not self.nat or not ipaddress.ip_address(src.host).is_private or ":" in src.host:
            return src
        if src not in self._map:
            self._map[src] = Endpoint(PUBLIC_IP, 40000 + len(self._map))
        return self._map[src]

    def private(self, dst: Endpoint) -> Endpoint:
        for inside, outside in self._map.items():
            if outside == dst:
                return inside
        return dst

    def _push(
        self, kind: str, data: bytes, src: Endpoint, dst: Endpoint, cid: int | None = None
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now + DELAY, self._seq, kind, data, src, dst, cid))

    def pump(self) -> None:
        g = self.gatherer
        for data, remote, local in g.datagrams_to_send(now=self.now):
            assert local is not None
            self._push("up", data, self.public(local), remote)
        for cid, data in g.stream_data_to_send():
            self._push("tcp-up", data, self._streams[cid], self._servers[cid], cid)
        while (event := g.next_event()) is not None:
            self.events.append((self.now, event))
            if isinstance(event, TurnConnectionRequested):
                if self.refuse_connections:
                    g.connection_failed(event.connection_id, now=self.now, reason="refused")
                else:
                    client = Endpoint(event.local_ip, 50000 + event.connection_id)
                    self._streams[event.connection_id] = client
                    self._servers[event.connection_id] = event.server
                    g.connection_opened(event.connection_id, local=client, now=self.now)
                self.pump()
        for server_ep, server in self.stun.items():
            for data, remote, _ in server.datagrams_to_send(now=self.now):
                self._push("down", data, server_ep, remote)
        if self.turn_driver is not None:
            for d in self.turn_driver.pump(self.now):
                if d.transport is Transport.TCP:
                    cid = next(c for c, ep in self._streams.items() if ep == d.remote)
                    self._push("tcp-down", d.data, d.local, d.remote, cid)
                else:
                    self._push("down", d.data, d.local, d.remote)

    def deliver(
        self, kind: str, data: bytes, src: Endpoint, dst: Endpoint, cid: int | None
    ) -> None:
        if kind == "up":
            if dst in self.stun:
                self.stun[dst].receive_datagram(data, src, local=dst, now=self.now)
            elif dst == TURN and self.turn is not None:
                self.turn.receive_datagram(data, src, local=dst, now=self.now)
        elif kind == "tcp-up":
            if dst != TURN or self.turn is None:
                return  # a dead server: the connection opens, nothing answers
            self.turn.receive_datagram(data, src, local=dst, transport=Transport.TCP, now=self.now)
        elif kind == "tcp-down":
            assert cid is not None
            self.gatherer.receive_stream_data(cid, data, now=self.now)
        else:
            self.gatherer.receive_datagram(data, src, local=self.private(dst), now=self.now)

    def run(self, until: float = 60.0) -> list[GatherEvent]:
        self.gatherer.start(now=self.now)
        self.pump()
        return self.advance(until)

    def advance(self, until: float) -> list[GatherEvent]:
        while self.now <= until:
            timers = [t for t in (self.gatherer.get_timer(),) if t is not None]
            if self.turn is not None and (t := self.turn.get_timer()) is not None:
                timers.append(t)
            if self._queue:
                timers.append(self._queue[0][0])
            if not timers or min(timers) > until:
                break
            self.now = max(self.now, min(timers))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, kind, data, src, dst, cid = heapq.heappop(self._queue)
                self.deliver(kind, data, src, dst, cid)
            if (t := self.gatherer.get_timer()) is not None and t <= self.now:
                self.gatherer.handle_timer(now=self.now)
            if self.turn_driver is not None and self.turn is not None:
                t = self.turn.get_timer()
                if t is not None and t <= self.now:
                    self.turn_driver.advance(self.now)
            self.pump()
        return [e for _, e in self.events]

    def gathered(self) -> list[tuple[float, CandidateGathered]]:
        return [(t, e) for t, e in self.events if isinstance(e, CandidateGathered)]

    def completed_at(self) -> float:
        return next(t for t, e in self.events if isinstance(e, GatheringCompleted))


def make(
    bases: list[LocalBase] | None = None,
    *,
    stun: tuple[Endpoint, ...] = (),
    turn: tuple[TurnServerSpec, ...] = (),
    nat: bool = True,
    **config: object,
) -> Net:
    cfg = GatherConfig(stun_servers=stun, turn_servers=turn, rng=random.Random(7), **config)  # type: ignore[arg-type]
    net = Net(Gatherer(bases or [LocalBase(address=LAN)], cfg), nat=nat)
    for ep in stun:
        if ep != DEAD:
            net.stun[ep] = StunServer(StunServerConfig(primary=ep))
    if any(spec.address == TURN for spec in turn):
        net.turn, net.turn_driver = make_server()
    return net


def test_host_only_completes_at_once() -> None:
    net = make([LocalBase(address=LAN), LocalBase(address=LAN.with_port(5002), component=2)])
    events = net.run()
    assert [type(e) for e in events] == [CandidateGathered, CandidateGathered, GatheringCompleted]
    assert net.completed_at() == 0.0
    first, second = (e.candidate for _, e in net.gathered())
    assert (first.type, first.component, first.priority) == (HOST, 1, 2130706431)
    assert (second.component, second.priority) == (2, 2130706430)


def test_stun_gives_srflx_with_base_as_related_address() -> None:
    net = make(stun=(STUN,))
    net.run()
    (_, _host), (t, srflx) = net.gathered()
    cand = srflx.candidate
    assert (cand.type, cand.address, cand.related, cand.base) == (
        SRFLX,
        Endpoint(PUBLIC_IP, 40000),
        LAN,
        LAN,
    )
    assert srflx.server == STUN and t == pytest.approx(2 * DELAY)
    assert net.completed_at() == pytest.approx(2 * DELAY)


def test_srflx_equal_to_host_is_pruned() -> None:
    public = Endpoint("203.0.113.50", 5000)
    net = make([LocalBase(address=public)], stun=(STUN,), nat=False)
    net.run()
    assert [e.candidate.type for _, e in net.gathered()] == [HOST]
    assert net.gatherer.stats.pruned == 1


def test_two_stun_servers_seeing_one_mapping_give_one_candidate() -> None:
    net = make(stun=(STUN, STUN2))
    net.run()
    assert [e.candidate.type for _, e in net.gathered()] == [HOST, SRFLX]


def test_dead_server_never_delays_the_others() -> None:
    net = make(stun=(DEAD, STUN), server_timeout=2.5)
    events = net.run()
    (srflx,) = [(t, e) for t, e in net.gathered() if e.candidate.type is SRFLX]
    assert srflx[0] == pytest.approx(0.05 + 2 * DELAY)  # second job, one Ta later
    failed = [e for e in events if isinstance(e, ServerFailed)]
    assert [(f.server, f.timed_out) for f in failed] == [(DEAD, True)]
    assert net.completed_at() == pytest.approx(2.5)  # the dead one's own deadline, not 39.5 s
    assert isinstance(events[-1], GatheringCompleted)
    assert len(events[-1].candidates) == 2


def test_transactions_are_paced_by_ta() -> None:
    bases = [LocalBase(address=LAN), LocalBase(address=LAN2)]
    net = make(bases, stun=(STUN, STUN2), ta=0.1)
    net.gatherer.start(now=0.0)
    starts = []
    now = 0.0
    for _ in range(4):
        sent = net.gatherer.datagrams_to_send(now=now)
        starts.append((now, len(sent)))
        timer = net.gatherer.get_timer()
        assert timer is not None
        now = timer
        net.gatherer.handle_timer(now=now)
    assert starts == [(0.0, 1), (0.1, 1), (pytest.approx(0.2), 1), (pytest.approx(0.3), 1)]


def test_turn_udp_gives_relayed_and_srflx() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS),))
    net.run()
    kinds = {e.candidate.type: e.candidate for _, e in net.gathered()}
    assert set(kinds) == {HOST, SRFLX, RELAY}
    relay, srflx = kinds[RELAY], kinds[SRFLX]
    assert relay.address.host == RELAY_V4 and relay.base == relay.address
    assert relay.related == srflx.address == Endpoint(PUBLIC_IP, 40000)
    assert relay.transport is Transport.UDP
    assert kinds[HOST].priority > srflx.priority > relay.priority
    (alloc,) = net.gatherer.allocations
    assert alloc.candidate == relay and alloc.connection_id is None and alloc.base.address == LAN


def test_turn_refreshes_keep_running_after_gathering() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS),))
    net.run(until=700.0)
    (alloc,) = net.gatherer.allocations
    assert not alloc.client.state.ended
    assert net.turn is not None and len(net.turn.allocations()) == 1
    net.gatherer.release_allocations(now=net.now)
    net.pump()
    net.advance(net.now + 1.0)
    assert net.turn.allocations() == []


def test_turn_over_tcp_through_the_drivers_stream() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS, transport=Transport.TCP),))
    events = net.run()
    (req,) = [e for e in events if isinstance(e, TurnConnectionRequested)]
    assert (req.server, req.tls, req.local_ip) == (TURN, False, LAN.host)
    kinds = [e.candidate.type for _, e in net.gathered()]
    assert kinds == [HOST, RELAY]  # no srflx from a TCP mapping
    (alloc,) = net.gatherer.allocations
    assert alloc.connection_id == req.connection_id
    assert alloc.candidate.transport is Transport.UDP


def test_relayed_udp_preferred_over_tcp() -> None:
    net = make(
        turn=(
            TurnServerSpec(address=TURN, credentials=CREDS, transport=Transport.TCP),
            TurnServerSpec(address=TURN, credentials=CREDS),
        )
    )
    net.run()
    relays = {a.spec.transport: a.candidate.priority for a in net.gatherer.allocations}
    assert relays[Transport.UDP] > relays[Transport.TCP]


def test_turn_connection_refused_is_a_server_failure() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS, transport=Transport.TLS),))
    net.refuse_connections = True
    events = net.run()
    (failed,) = [e for e in events if isinstance(e, ServerFailed)]
    assert failed.transport is Transport.TLS and "refused" in failed.reason
    assert net.completed_at() == 0.0


def test_turn_wrong_password_fails_with_401() -> None:
    bad = LongTermCredentials("alice", "not-her-password")
    net = make(turn=(TurnServerSpec(address=TURN, credentials=bad),))
    events = net.run()
    (failed,) = [e for e in events if isinstance(e, ServerFailed)]
    assert failed.code == 401 and not failed.timed_out
    assert [e.candidate.type for _, e in net.gathered()] == [HOST]


def test_dead_turn_over_tcp_is_abandoned_at_its_deadline() -> None:
    dead = TurnServerSpec(address=DEAD, credentials=CREDS, transport=Transport.TCP)
    net = make(turn=(dead,), stun=(STUN,), server_timeout=2.0)
    events = net.run()
    assert any(isinstance(e, TurnConnectionAbandoned) for e in events)
    assert net.completed_at() == pytest.approx(0.05 + 2.0)  # started one Ta after STUN


def test_dual_stack_bases_and_family_matched_servers() -> None:
    bases = [LocalBase(address=LAN), LocalBase(address=V6)]
    net = make(bases, stun=(STUN, STUN_V6))
    net.stun[STUN_V6] = StunServer(StunServerConfig(primary=STUN_V6))
    net.run()
    hosts = [e.candidate for _, e in net.gathered() if e.candidate.type is HOST]
    assert [c.address for c in hosts] == [LAN, V6]
    assert hosts[1].priority > hosts[0].priority  # RFC 8421: IPv6 first
    srflx = {e.candidate.base for _, e in net.gathered() if e.candidate.type is SRFLX}
    assert srflx == {LAN}  # the IPv6 base is public: its srflx equals its host and is pruned


def test_host_preferences_interleave_families() -> None:
    prefs = host_preferences(
        ["192.168.1.10", "2001:db8::1", "10.0.0.5", "fe80::1", "2002:c000:204::1", "2001:db8::2"]
    )
    order = sorted(prefs, key=lambda ip: -prefs[ip])
    assert order == [
        "2001:db8::1",
        "192.168.1.10",
        "2001:db8::2",
        "10.0.0.5",
        "2002:c000:204::1",  # 6to4 after native IPv6
        "fe80::1",  # link-local last
    ]
    assert prefs["2001:db8::1"] == 65535 and len(set(prefs.values())) == 6


ADDRESSES = [
    HostAddress("lo", "127.0.0.1"),
    HostAddress("lo", "::1"),
    HostAddress("eth0", "192.168.1.10"),
    HostAddress("eth0", "fe80::1"),
    HostAddress("eth0", "2001:db8::10"),
    HostAddress("docker0", "172.17.0.1"),
    HostAddress("wlan0", "10.0.0.7"),
    HostAddress("wlan0", "10.0.0.7"),
    HostAddress("eth0", "::ffff:192.168.1.10"),
    HostAddress("eth0", "fec0::1"),
    HostAddress("eth0", "::c0a8:10a"),
    HostAddress("eth0", "fe80::2%eth0"),
    HostAddress("eth0", "0.0.0.0"),
    HostAddress("eth0", "not-an-ip"),
]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(
            GatherConfig(),
            ["192.168.1.10", "2001:db8::10", "172.17.0.1", "10.0.0.7"],
            id="default-no-loopback-no-link-local",
        ),
        pytest.param(
            GatherConfig(exclude_interfaces=("docker*",)),
            ["192.168.1.10", "2001:db8::10", "10.0.0.7"],
            id="exclude-interface",
        ),
        pytest.param(
            GatherConfig(include_interfaces=("eth*",), allow_link_local=True),
            ["192.168.1.10", "fe80::1", "2001:db8::10"],
            id="include-interface-link-local",
        ),
        pytest.param(
            GatherConfig(exclude_addresses=(ipaddress.ip_network("10.0.0.0/8"),), ipv6=False),
            ["192.168.1.10", "172.17.0.1"],
            id="exclude-address-no-ipv6",
        ),
        pytest.param(
            GatherConfig(include_interfaces=("lo",)),
            ["127.0.0.1", "::1"],
            id="loopback-when-nothing-else",
        ),
    ],
)
def test_select_host_addresses(config: GatherConfig, expected: list[str]) -> None:
    assert [a.ip for a in select_host_addresses(ADDRESSES, config)] == expected


def test_port_mapping_gives_srflx_and_duplicates_are_pruned() -> None:
    net = make(stun=(STUN,))
    net.run()
    g = net.gatherer
    gateway = Endpoint("192.168.1.1", 5351)
    external = Endpoint(PUBLIC_IP, 61000)
    cand = g.add_port_mapping(LAN, external, gateway=gateway)
    assert cand is not None and (cand.type, cand.related, cand.base) == (SRFLX, LAN, LAN)
    assert g.add_port_mapping(LAN, external, gateway=gateway) is None  # redundant
    assert g.add_port_mapping(LAN, Endpoint(PUBLIC_IP, 40000)) is None  # = the STUN one
    mapping = PortMapping(
        proto=IpProto.UDP,
        internal=LAN,
        external=Endpoint("100.64.0.2", 7000),
        lifetime=3600,
        method=PortMapMethod.PCP,
        gateway=gateway,
        public=False,
    )
    assert g.add_mapping(mapping) is None  # cascaded NAT: not reachable
    public_mapping = PortMapping(
        proto=IpProto.UDP,
        internal=LAN,
        external=Endpoint("203.0.113.77", 7000),
        lifetime=3600,
        method=PortMapMethod.NATPMP,
        gateway=gateway,
        public=True,
    )
    assert g.add_mapping(public_mapping) is not None
    with pytest.raises(LocalProtocolError):
        g.add_port_mapping(Endpoint("192.168.9.9", 1), external)
    gathered = [e for e in iter(g.next_event, None) if isinstance(e, CandidateGathered)]
    assert [e.server for e in gathered] == [gateway, gateway]


def test_datagrams_not_from_servers_are_passed_on() -> None:
    net = make(stun=(STUN,), turn=(TurnServerSpec(address=TURN, credentials=CREDS),), ta=0.0)
    g = net.gatherer
    g.start(now=0.0)
    assert not g.receive_datagram(b"\x00\x01rtp?", Endpoint("203.0.113.200", 9), local=LAN, now=0)
    assert g.receive_datagram(b"garbage", STUN, local=LAN, now=0.0)
    assert g.receive_datagram(b"garbage", TURN, local=LAN, now=0.0)
    assert not g.receive_datagram(b"x", STUN, local=Endpoint("10.9.9.9", 1), now=0.0)


def test_garbage_on_the_stream_abandons_the_connection() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS, transport=Transport.TCP),))
    g = net.gatherer
    g.start(now=0.0)
    (req,) = [e for e in iter(g.next_event, None) if isinstance(e, TurnConnectionRequested)]
    g.connection_opened(req.connection_id, local=Endpoint(LAN.host, 50001), now=0.0)
    g.receive_stream_data(req.connection_id, b"\xff" * 40, now=0.01)
    events = list(iter(g.next_event, None))
    assert any(isinstance(e, TurnConnectionAbandoned) for e in events)
    assert any(isinstance(e, ServerFailed) for e in events)
    assert any(isinstance(e, GatheringCompleted) for e in events)


def test_start_twice_and_duplicate_bases_are_refused() -> None:
    g = Gatherer([LocalBase(address=LAN)])
    g.start(now=0.0)
    with pytest.raises(LocalProtocolError):
        g.start(now=1.0)
    with pytest.raises(LocalProtocolError):
        Gatherer([LocalBase(address=LAN), LocalBase(address=LAN)])


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        GatherConfig(server_timeout=0)
    with pytest.raises(ValueError):
        GatherConfig(port_range=(5000, 4000))
    with pytest.raises(ValueError):
        TurnServerSpec(address=TURN, credentials=CREDS, transport=Transport.DTLS)


def test_taken_allocations_are_no_longer_driven() -> None:
    net = make(turn=(TurnServerSpec(address=TURN, credentials=CREDS),))
    net.run()
    g = net.gatherer
    assert g.get_timer() is not None  # the allocation's refresh and keepalive
    (alloc,) = g.take_allocations()
    assert g.allocations == () and g.get_timer() is None
    assert not g.receive_datagram(b"\x40\x00\x00\x00", TURN, local=LAN, now=net.now)
    assert not alloc.client.state.ended


def test_one_server_for_stun_and_turn() -> None:
    net = make(stun=(TURN,), turn=(TurnServerSpec(address=TURN, credentials=CREDS),))
    del net.stun[TURN]  # the TURN core answers Binding itself (RFC 8656 §3)
    events = net.run()
    assert not [e for e in events if isinstance(e, ServerFailed)]
    gathered = [(e.candidate.type, e.server) for _, e in net.gathered()]
    assert gathered == [(HOST, None), (SRFLX, TURN), (RELAY, TURN)]


def test_completion_waits_for_held_work_such_as_a_port_mapping_request() -> None:
    g = Gatherer([LocalBase(address=LAN)], GatherConfig())
    token = g.hold_completion()  # taken before start: host-only would complete at once
    g.start(now=0.0)
    kinds = []
    while (event := g.next_event()) is not None:
        kinds.append(type(event))
    assert GatheringCompleted not in kinds and not g.completed
    g.add_port_mapping(LAN, Endpoint("203.0.113.77", 7000), gateway=Endpoint("192.168.1.1", 5351))
    g.release_completion(token)
    events = []
    while (event := g.next_event()) is not None:
        events.append(event)
    assert [type(e) for e in events] == [CandidateGathered, GatheringCompleted]
    assert g.completed
    with pytest.raises(LocalProtocolError):
        g.hold_completion()


def test_port_mapping_methods_are_checked() -> None:
    with pytest.raises(ValueError, match="port_mapping"):
        GatherConfig(port_mapping=("igd",))
