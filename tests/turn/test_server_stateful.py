"""Random sequences of client, peer, driver and clock actions keep every index
of the TURN server consistent, and once time runs out every table is empty
(a bounded Hypothesis state machine)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from natkit.addr import Endpoint, Family, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data
from natkit.turn.events import PeerConnectRequested, RelayRequested

from .server_helpers import CLIENT, Client, make_server

PEERS = [Endpoint("203.0.113.7", 5000), Endpoint("203.0.113.8", 5001), Endpoint("10.0.0.1", 9)]


class TurnServerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.server, self.driver = make_server(min_port=61000, max_port=61015)
        self.now = 0.0
        self.clients = [
            Client(
                self.driver,
                client=Endpoint(CLIENT.host, 40000 + i),
                transport=Transport.TCP if i == 3 else Transport.UDP,
            )
            for i in range(4)
        ]

    @initialize()
    def start(self) -> None:
        """Two allocations with a permission and a channel, so that the rules
        below have something to work on from the first step."""
        for c in (self.clients[0], self.clients[3]):
            c.allocate(self.now, protocol=17)
            c.request(
                Method.CHANNEL_BIND,
                [(tat.CHANNEL_NUMBER, 0x4000), (at.XOR_PEER_ADDRESS, PEERS[0])],
                now=self.now,
            )

    def _relays(self) -> list[Endpoint]:
        return [r for a in self.server.allocations() for r in a.relays]

    @rule(i=st.integers(0, 3), even=st.sampled_from([None, False, True]), dual=st.booleans())
    def allocate(self, i: int, even: bool | None, dual: bool) -> None:
        extra: list[tuple[object, object]] = []
        if even is not None:
            extra.append((tat.EVEN_PORT, even))
        if dual:
            extra.append((tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6))
        protocol = 6 if i == 3 and not extra else 17
        self.clients[i].allocate(self.now, extra, protocol=protocol)  # type: ignore[arg-type]

    @rule(i=st.integers(0, 3), peer=st.sampled_from(PEERS))
    def permit(self, i: int, peer: Endpoint) -> None:
        self.clients[i].request(
            Method.CREATE_PERMISSION, [(at.XOR_PEER_ADDRESS, peer)], now=self.now
        )

    @rule(i=st.integers(0, 3), number=st.integers(0x3FFF, 0x4002), peer=st.sampled_from(PEERS))
    def bind(self, i: int, number: int, peer: Endpoint) -> None:
        self.clients[i].request(
            Method.CHANNEL_BIND,
            [(tat.CHANNEL_NUMBER, number), (at.XOR_PEER_ADDRESS, peer)],
            now=self.now,
        )

    @rule(i=st.integers(0, 3), lifetime=st.sampled_from([None, 0, 700, 5000]))
    def refresh(self, i: int, lifetime: int | None) -> None:
        attrs = [] if lifetime is None else [(at.LIFETIME, lifetime)]
        self.clients[i].request(Method.REFRESH, attrs, now=self.now)

    @rule(i=st.integers(0, 3), number=st.integers(0x4000, 0x4002))
    def channel_data(self, i: int, number: int) -> None:
        self.clients[i].send_raw(pack_channel_data(number, b"cd"), self.now)

    @rule(i=st.integers(0, 3), peer=st.sampled_from(PEERS))
    def send(self, i: int, peer: Endpoint) -> None:
        self.clients[i].send_indication(peer, b"si", self.now)

    @rule(peer=st.sampled_from(PEERS), k=st.integers(0, 7))
    def from_peer(self, peer: Endpoint, k: int) -> None:
        relays = self._relays()
        if relays:
            self.server.receive_peer_datagram(
                b"pd", peer, relay=relays[k % len(relays)], now=self.now
            )
            self.driver.pump(self.now)

    @rule(peer=st.sampled_from(PEERS), ok=st.booleans())
    def connect(self, peer: Endpoint, ok: bool) -> None:
        c = self.clients[3]
        c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, peer)], now=self.now)
        for ev in self.driver.take_events(PeerConnectRequested):
            if ok:
                self.server.peer_connected(ev.connection_id, now=self.now)
            else:
                self.server.peer_connect_failed(ev.connection_id, now=self.now)
        self.driver.pump(self.now)

    @rule(fail=st.booleans())
    def driver_mood(self, fail: bool) -> None:
        self.driver.fail_all = fail

    @rule(dt=st.sampled_from([1.0, 29.0, 31.0, 299.0, 301.0, 601.0, 901.0]))
    def advance(self, dt: float) -> None:
        self.now += dt
        self.driver.advance(self.now)

    @rule(k=st.integers(0, 7))
    def kick(self, k: int) -> None:
        ids = [a.allocation_id for a in self.server.allocations()]
        if ids:
            self.server.kick(ids[k % len(ids)], now=self.now)
            self.driver.pump(self.now)

    @rule()
    def close_stream(self) -> None:
        c = self.clients[3]
        self.server.stream_closed(c.client, local=c.local, now=self.now)
        self.driver.pump(self.now)

    @invariant()
    def indexes_agree(self) -> None:
        server = self.server
        sizes = server.table_sizes()
        infos = server.allocations()
        assert server.stats.internal_errors == 0
        assert sizes["allocations"] == len(infos)
        assert sizes["udp_five_tuples"] + sizes["stream_five_tuples"] == len(infos)
        assert sizes["relays"] == len(self._relays())
        # Every claimed port is a live relay or a held reservation.
        assert sizes["ports"] == sizes["relays"] + sizes["reservations"]
        assert sizes["channels"] == sizes["channel_peers"]
        assert sum(1 for e in self.driver.events if isinstance(e, RelayRequested)) >= len(infos)

    def teardown(self) -> None:
        """Once every lifetime has run out, every table is empty."""
        self.driver.fail_all = False
        self.now += 10_000.0
        self.driver.advance(self.now)
        sizes = self.server.table_sizes()
        assert all(v == 0 for k, v in sizes.items() if k != "timers"), sizes
        assert self.server.get_timer() is None
        assert self.server.stats.internal_errors == 0


TurnServerMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, derandomize=True, deadline=None
)
test_server_state_machine = TurnServerMachine.TestCase
