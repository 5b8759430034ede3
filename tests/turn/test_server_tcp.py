"""TURN over TCP/TLS: ChannelData padding (RFC 8656 §12.5), connection close
(§3.1) and RFC 6062 TCP allocations (Connect, ConnectionAttempt, ConnectionBind)."""

from __future__ import annotations

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import parse_message
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data
from natkit.turn.events import (
    AllocationDeleted,
    ConnectionBound,
    FiveTuple,
    PeerConnectionReleased,
    PeerConnectRequested,
    RelayReleased,
    RelayRequested,
)
from natkit.turn.server import TurnServer

from .server_helpers import CLIENT, PEER, SERVER, Client, FakeDriver, code_of, make_server, relayed


def _tcp(protocol: int = 17, transport: Transport = Transport.TCP) -> tuple[Client, Endpoint]:
    _, driver = make_server()
    c = Client(driver, transport=transport)
    resp = c.allocate(0.0, protocol=protocol)
    assert code_of(resp) == 0
    return c, relayed(resp)[0]


def test_udp_relay_over_tcp_pads_channel_data_to_four_bytes() -> None:
    c, relay = _tcp()
    c.bind(0x4000, PEER)
    c.server.receive_peer_datagram(b"abcde", PEER, relay=relay, now=1.0)
    (out,) = c.driver.pump(1.0)
    assert out.transport == Transport.TCP and out.remote == CLIENT and out.local == SERVER
    assert out.data == pack_channel_data(0x4000, b"abcde") + b"\x00\x00\x00"
    assert len(out.data) % 4 == 0


def test_channel_data_from_a_tcp_client_is_relayed_over_udp() -> None:
    c, relay = _tcp()
    c.bind(0x4000, PEER)
    (out,) = c.channel_data(0x4000, b"xyz", 1.0)
    assert out == (b"xyz", PEER, relay, Transport.UDP)


def test_data_indication_over_tls() -> None:
    c, relay = _tcp(transport=Transport.TLS)
    c.permit(PEER)
    c.server.receive_peer_datagram(b"tls", PEER, relay=relay, now=1.0)
    (out,) = c.driver.pump(1.0)
    assert out.transport == Transport.TLS
    assert parse_message(out.data).get(at.DATA) == b"tls"


def test_stream_closed_deletes_the_allocation() -> None:
    c, relay = _tcp()
    c.server.stream_closed(CLIENT, local=SERVER, now=5.0)
    c.driver.pump(5.0)
    deleted = [e for e in c.driver.events if isinstance(e, AllocationDeleted)]
    assert deleted[0].reason == "connection closed"
    assert RelayReleased(relay=relay, transport=Transport.UDP) in c.driver.events


def test_udp_and_tcp_five_tuples_are_distinct() -> None:
    _, driver = make_server()
    udp = Client(driver)
    tcp = Client(driver, transport=Transport.TCP)
    assert code_of(udp.allocate(0.0)) == 0
    assert code_of(tcp.allocate(0.0)) == 0
    driver.server.stream_closed(CLIENT, local=SERVER, now=1.0)
    assert len(driver.server.allocations()) == 1
    assert driver.server.allocations()[0].five_tuple.transport == Transport.UDP


def test_stream_closed_cancels_a_pending_allocate() -> None:
    _, driver = make_server()
    driver.auto_open = False
    c = Client(driver, transport=Transport.TCP)
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    (req,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    driver.server.stream_closed(CLIENT, local=SERVER, now=1.0)
    driver.server.relay_opened(req.request_id, req.relays, now=1.5)
    driver.pump(1.5)
    assert RelayReleased(relay=req.relays[0], transport=Transport.UDP) in driver.events
    assert driver.server.table_sizes()["users"] == 0


# -- RFC 6062 ------------------------------------------------------------------


def _tcp_allocation() -> tuple[Client, Endpoint]:
    c, relay = _tcp(protocol=6)
    (req,) = [e for e in c.driver.events if isinstance(e, RelayRequested)]
    assert req.transport == Transport.TCP
    return c, relay


def _connect(c: Client, peer: Endpoint = PEER, now: float = 1.0) -> PeerConnectRequested:
    assert c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, peer)], now=now) is None
    (ev,) = c.driver.take_events(PeerConnectRequested)
    assert isinstance(ev, PeerConnectRequested)
    return ev


def _data_client(c: Client, port: int = 40001) -> Client:
    d = Client(c.driver, client=Endpoint(CLIENT.host, port), transport=Transport.TCP)
    d.nonce, d.offered = c.nonce, c.offered
    return d


def _bind(d: Client, cid: int, now: float = 2.0) -> int | None:
    return code_of(d.request(Method.CONNECTION_BIND, [(tat.CONNECTION_ID, cid)], now=now))


def test_connect_then_connection_bind() -> None:
    c, relay = _tcp_allocation()
    ev = _connect(c)
    assert ev.relay == relay and ev.peer == PEER
    c.server.peer_connected(ev.connection_id, now=1.5)
    (resp,) = c.responses(c.driver.pump(1.5))
    assert code_of(resp) == 0 and resp.get(tat.CONNECTION_ID) == ev.connection_id
    assert c.verified(resp)
    d = _data_client(c)
    assert _bind(d, ev.connection_id) == 0
    (bound,) = c.driver.take_events(ConnectionBound)
    assert bound.connection_id == ev.connection_id
    assert bound.data_connection == FiveTuple(d.client, SERVER, Transport.TCP)
    c.driver.advance(100.0)  # bound connections do not time out
    assert c.driver.take_events(PeerConnectionReleased) == []


def test_connect_on_a_udp_allocation_is_400() -> None:
    c, _ = _tcp(protocol=17)
    assert code_of(c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, PEER)], now=1.0)) == 400


def test_connect_twice_to_the_same_peer_is_446() -> None:
    c, _ = _tcp_allocation()
    _connect(c)
    assert code_of(c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, PEER)], now=1.0)) == 446


def test_failed_connect_is_447() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connect_failed(ev.connection_id, now=2.0)
    (resp,) = c.responses(c.driver.pump(2.0))
    assert code_of(resp) == 447
    assert c.server.table_sizes()["peer_connections"] == 0


def test_unanswered_connect_times_out_with_447() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    (resp,) = c.responses(c.driver.advance(31.5))
    assert code_of(resp) == 447
    assert PeerConnectionReleased(connection_id=ev.connection_id) in c.driver.events


def test_unbound_peer_connection_is_released_after_30_seconds() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    c.driver.advance(30.5)
    assert c.driver.take_events(PeerConnectionReleased) == []
    c.driver.advance(31.5)
    assert c.driver.take_events(PeerConnectionReleased) == [
        PeerConnectionReleased(connection_id=ev.connection_id)
    ]
    assert _bind(_data_client(c), ev.connection_id, now=32.0) == 400


def test_connection_bind_with_unknown_id_is_400() -> None:
    c, _ = _tcp_allocation()
    assert _bind(_data_client(c), 12345) == 400


def test_connection_bind_on_the_control_connection_is_400() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    c.driver.pump(1.0)
    assert _bind(c, ev.connection_id) == 400


def test_connection_bind_by_another_user_is_441() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    c.driver.pump(1.0)
    bob = Client(
        c.driver, client=Endpoint(CLIENT.host, 40009), transport=Transport.TCP, username="bob"
    )
    assert _bind(bob, ev.connection_id) == 441


def test_connection_bind_over_udp_is_400() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    d = Client(c.driver, client=Endpoint(CLIENT.host, 40002))
    assert _bind(d, ev.connection_id) == 400


def test_incoming_peer_connection_needs_a_permission() -> None:
    c, relay = _tcp_allocation()
    assert c.server.peer_connection_accepted(relay, PEER, now=1.0) is None
    c.permit(PEER, now=1.0)
    cid = c.server.peer_connection_accepted(relay, PEER, now=2.0)
    assert cid is not None
    (ind,) = c.responses(c.driver.pump(2.0))
    assert ind.method == Method.CONNECTION_ATTEMPT
    assert ind.message_class == MessageClass.INDICATION
    assert ind.get(tat.CONNECTION_ID) == cid and ind.get(at.XOR_PEER_ADDRESS) == PEER
    assert _bind(_data_client(c), cid, now=3.0) == 0


def test_accepted_connection_on_an_unknown_relay_is_refused() -> None:
    server, _ = make_server()
    assert server.peer_connection_accepted(Endpoint("192.0.2.10", 1), PEER, now=0.0) is None


def test_deleting_a_tcp_allocation_releases_its_peer_connections() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    d = _data_client(c)
    _bind(d, ev.connection_id)
    c.server.stream_closed(CLIENT, local=SERVER, now=3.0)
    c.driver.pump(3.0)
    assert PeerConnectionReleased(connection_id=ev.connection_id) in c.driver.events
    assert c.server.table_sizes()["data_connections"] == 0


def test_closing_the_data_connection_releases_the_peer_connection() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    d = _data_client(c)
    _bind(d, ev.connection_id)
    c.server.stream_closed(d.client, local=SERVER, now=3.0)
    c.driver.pump(3.0)
    assert PeerConnectionReleased(connection_id=ev.connection_id) in c.driver.events
    assert len(c.server.allocations()) == 1
    c.server.peer_connection_closed(ev.connection_id, now=4.0)


def test_peer_connection_closed_forgets_it_and_allows_a_new_connect() -> None:
    c, _ = _tcp_allocation()
    ev = _connect(c)
    c.server.peer_connected(ev.connection_id, now=1.0)
    c.driver.pump(1.0)
    c.server.peer_connection_closed(ev.connection_id, now=2.0)
    assert c.server.table_sizes()["peer_connections"] == 0
    _connect(c, now=3.0)


def test_late_driver_answers_for_unknown_connections_are_ignored() -> None:
    server: TurnServer
    server, driver = make_server()
    server.peer_connected(99, now=0.0)
    server.peer_connect_failed(99, now=0.0)
    server.peer_connection_closed(99, now=0.0)
    assert isinstance(driver, FakeDriver) and driver.pump(0.0) == []


def test_hot_path_for_stream_clients_needs_the_transport() -> None:
    c, relay = _tcp()
    c.bind(0x4000, PEER)
    cd = pack_channel_data(0x4000, b"fast")
    udp = Transport.UDP  # not this client's 5-tuple
    assert c.server.relay_client_packet(cd, CLIENT, SERVER, 1.0, transport=udp) is None
    out = c.server.relay_client_packet(cd, CLIENT, SERVER, 1.0, transport=Transport.TCP)
    assert out == (b"fast", PEER, relay, Transport.UDP)


def test_late_open_after_the_client_left_releases_the_held_port_too() -> None:
    _, driver = make_server()
    driver.auto_open = False
    c = Client(driver, transport=Transport.TCP)
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17), (tat.EVEN_PORT, True)], now=0.0)
    (req,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    assert req.reserve is not None
    driver.server.stream_closed(CLIENT, local=SERVER, now=1.0)
    driver.server.relay_opened(req.request_id, req.relays, now=1.5)
    driver.pump(1.5)
    released = {e.relay for e in driver.take_events(RelayReleased)}
    assert released == {req.relays[0], req.reserve}
    assert all(v == 0 for k, v in driver.server.table_sizes().items() if k != "timers")


def test_duplicate_relay_opened_never_releases_a_live_relay() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    (req,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    driver.server.relay_opened(req.request_id, req.relays, now=1.0)
    driver.server.relay_failed(req.request_id, now=1.0)
    driver.pump(1.0)
    assert driver.take_events(RelayReleased) == []
    assert len(driver.server.allocations()) == 1


def test_connect_to_the_other_family_is_443() -> None:
    c, _ = _tcp_allocation()
    peer = Endpoint("2001:db8::9", 80)
    assert code_of(c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, peer)], now=1.0)) == 443


def test_channel_data_too_big_for_one_udp_datagram_is_dropped() -> None:
    c, _ = _tcp()
    c.bind(0x4000, PEER)
    assert c.channel_data(0x4000, bytes(65508), 1.0) == []
    assert len(c.channel_data(0x4000, bytes(65507), 1.0)) == 1
    assert c.send_indication(PEER, bytes(65508), 1.0) == []


def test_largest_peer_datagram_still_fits_a_data_indication_over_udp() -> None:
    _, driver = make_server()
    c = Client(driver)
    relay = relayed(c.allocate(0.0))[0]
    c.permit(PEER)
    out = c.server.relay_peer_packet(bytes(65459), PEER, relay, 1.0)
    assert out is not None and len(out.data) <= 65507
    assert c.server.relay_peer_packet(bytes(65460), PEER, relay, 1.0) is None
