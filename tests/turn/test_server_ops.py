"""Operations: sessions listing, kick, shutdown, counters, bandwidth quotas, and
the 10k-allocation leak check."""

from __future__ import annotations

import random
from typing import Any

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, serialize_message
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data
from natkit.turn.events import AllocationDeleted, RelayReleased, RelayRequested
from natkit.turn.server import TurnServer

from .server_helpers import CLIENT, PEER, PEER2, SERVER, Client, code_of, make_server, relayed


def _allocated(**overrides: Any) -> tuple[Client, Endpoint]:
    _, driver = make_server(**overrides)
    c = Client(driver)
    return c, relayed(c.allocate(0.0))[0]


def test_allocations_lists_sessions_with_counters() -> None:
    c, relay = _allocated()
    c.bind(0x4000, PEER)
    c.permit(PEER2)
    c.channel_data(0x4000, b"12345")
    c.server.receive_peer_datagram(b"abc", PEER, relay=relay, now=1.0)
    c.driver.pump(1.0)
    (info,) = c.server.allocations()
    assert info.username == "alice" and info.relays == (relay,)
    assert info.five_tuple.client == CLIENT and info.five_tuple.transport == Transport.UDP
    assert set(info.permissions) == {PEER.host, PEER2.host}
    assert info.channels == {0x4000: PEER}
    assert (info.packets_out, info.bytes_out, info.packets_in, info.bytes_in) == (1, 5, 1, 3)
    assert info.expires == 600.0 and info.created == 0.0
    stats = c.server.stats
    assert (stats.packets_to_peers, stats.bytes_to_peers) == (1, 5)
    assert (stats.packets_to_clients, stats.bytes_to_clients) == (1, 3)
    assert stats.requests >= 4 and stats.internal_errors == 0


def test_kick_deletes_one_allocation() -> None:
    c, relay = _allocated()
    (info,) = c.server.allocations()
    assert c.server.kick(info.allocation_id, now=1.0)
    assert not c.server.kick(info.allocation_id, now=1.0)
    c.driver.pump(1.0)
    (gone,) = [e for e in c.driver.events if isinstance(e, AllocationDeleted)]
    assert gone.reason == "kicked"
    assert c.server.relay_peer_packet(b"x", PEER, relay, 1.0) is None


def test_shutdown_deletes_everything_and_releases_every_socket() -> None:
    _, driver = make_server()
    a = Client(driver)
    b = Client(driver, client=Endpoint(CLIENT.host, 2))
    ra = relayed(a.allocate(0.0))[0]
    resp = b.allocate(0.0, [(tat.EVEN_PORT, True)])
    rb = relayed(resp)[0]
    driver.server.shutdown(now=1.0)
    driver.pump(1.0)
    reasons = [e.reason for e in driver.events if isinstance(e, AllocationDeleted)]
    assert reasons == ["shutdown", "shutdown"]
    released = {e.relay for e in driver.events if isinstance(e, RelayReleased)}
    assert released == {ra, rb, Endpoint(rb.host, rb.port + 1)}
    assert all(v == 0 for v in driver.server.table_sizes().values())
    assert driver.server.get_timer() is None


def test_bandwidth_quota_per_allocation_drops_the_excess() -> None:
    c, relay = _allocated(max_bps_per_allocation=1000)
    c.bind(0x4000, PEER)
    sent = sum(len(c.channel_data(0x4000, bytes(100), 1.0)) for _ in range(20))
    assert sent == 10
    assert c.server.stats.dropped == 10
    assert len(c.channel_data(0x4000, bytes(100), 1.5)) == 1  # refilled 500 bytes
    delivered = 0
    for _ in range(20):
        delivered += c.server.relay_peer_packet(bytes(100), PEER, relay, 1.0) is not None
    assert delivered == 10  # the other direction has its own bucket


def test_bandwidth_quota_in_total_is_shared() -> None:
    _, driver = make_server(max_bps_total=1000)
    a, b = Client(driver), Client(driver, client=Endpoint(CLIENT.host, 2))
    for c in (a, b):
        c.allocate(0.0)
        c.bind(0x4000, PEER)
    sent = 0
    for _ in range(10):
        sent += len(a.channel_data(0x4000, bytes(100), 1.0))
        sent += len(b.channel_data(0x4000, bytes(100), 1.0))
    assert sent == 10


def test_send_indications_count_against_the_quota() -> None:
    c, _ = _allocated(max_bps_per_allocation=150)
    c.permit(PEER)
    assert len(c.send_indication(PEER, bytes(100), 1.0)) == 1
    assert c.send_indication(PEER, bytes(100), 1.0) == []


def test_timer_is_the_earliest_deadline() -> None:
    c, _ = _allocated()
    assert c.server.get_timer() == 10.0
    c.driver.advance(10.0)  # the pending-Allocate guard, already answered: stale
    assert c.server.get_timer() == 600.0
    c.permit(PEER, now=20.0)
    assert c.server.get_timer() == 320.0


def _signed_allocate(key: bytes, nonce: str, client: Client, rng: random.Random) -> bytes:
    m = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, rng.randbytes(12))
    m.add(tat.REQUESTED_TRANSPORT, 17)
    m.add(at.USERNAME, "alice").add(at.REALM, client.realm).add(at.NONCE, nonce)
    return serialize_message(m, key=key)


def test_ten_thousand_allocations_expire_and_every_table_empties() -> None:
    server, driver = make_server(min_port=50000, max_port=65000)
    # An RFC 5766 client (MD5, no PASSWORD-ALGORITHMS) keeps the requests small.
    probe = Client(driver, algorithm=None)
    probe.allocate(0.0)
    probe.refresh(0, now=0.0)
    assert probe.nonce is not None
    base = server.table_sizes()
    rng = random.Random(5)
    key = probe.key
    relays = []
    for i in range(10_000):
        ep = Endpoint(CLIENT.host, 1024 + i)  # the nonce is bound to the client's IP
        server.receive_datagram(
            _signed_allocate(key, probe.nonce, probe, rng), ep, local=SERVER, now=1.0
        )
        for ev in iter(server.next_event, None):
            if isinstance(ev, RelayRequested):
                server.relay_opened(ev.request_id, ev.relays, now=1.0)
                relays.append(ev.relays[0])
        if i % 4 == 0:
            tid = rng.randbytes(12)
            m = StunMessage(Method.CHANNEL_BIND, MessageClass.REQUEST, tid)
            m.add(tat.CHANNEL_NUMBER, 0x4000).add(at.XOR_PEER_ADDRESS, PEER)
            m.add(at.USERNAME, "alice").add(at.REALM, probe.realm).add(at.NONCE, probe.nonce)
            server.receive_datagram(serialize_message(m, key=key), ep, local=SERVER, now=2.0)
        server.datagrams_to_send()
    assert len(server.allocations()) == 10_000
    assert server.table_sizes()["channels"] == 2_500
    assert server.stats.internal_errors == 0
    server.handle_timer(now=2000.0)
    while server.next_event() is not None:
        pass
    sizes = server.table_sizes()
    assert {k: v for k, v in sizes.items() if k != "timers"} == {
        k: v for k, v in base.items() if k != "timers"
    }
    assert all(v == 0 for k, v in sizes.items()), sizes
    assert server.get_timer() is None
    assert server.stats.allocations_deleted == 10_001


def test_expired_allocation_stops_relaying_even_before_its_timer_runs() -> None:
    c, relay = _allocated()
    c.bind(0x4000, PEER, now=0.0)
    late = 900.0  # the driver is late to call handle_timer; permissions already lapsed
    assert (
        c.server.relay_client_packet(
            pack_channel_data(0x4000, b"x"), CLIENT, SERVER, late, transport=Transport.UDP
        )
        is None
    )
    assert c.server.relay_peer_packet(b"x", PEER, relay, late) is None


def test_core_never_reads_its_own_config_for_missing_relay_ips() -> None:
    import pytest

    from natkit.turn.credentials import StaticCredentials
    from natkit.turn.server import TurnServerConfig

    with pytest.raises(ValueError):
        TurnServer(TurnServerConfig(realm="r", relay_ips=()), StaticCredentials({}, "r"))
    with pytest.raises(ValueError):
        TurnServer(
            TurnServerConfig(realm="r", relay_ips=("192.0.2.1", "192.0.2.2")),
            StaticCredentials({}, "r"),
        )
    with pytest.raises(ValueError):
        TurnServer(
            TurnServerConfig(realm="r", relay_ips=("192.0.2.1",), min_port=5, max_port=4),
            StaticCredentials({}, "r"),
        )
    assert code_of(None) is None


def test_byte_bucket_needs_a_positive_rate() -> None:
    import pytest

    from natkit.turn.quota import ByteBucket

    with pytest.raises(ValueError):
        ByteBucket(0)
    bucket = ByteBucket(100, now=5.0)
    assert bucket.take(100, 5.0) and not bucket.take(1, 5.0) and bucket.take(50, 5.5)


class _StuckRng(random.Random):
    """Every random port is the lowest one: only the scan can find a free port."""

    def randint(self, a: int, b: int) -> int:
        return a


def test_port_scan_finds_a_free_port_when_random_tries_keep_hitting_used_ones() -> None:
    _, driver = make_server(min_port=61000, max_port=61009, rng=_StuckRng(1))
    ports = [
        relayed(Client(driver, client=Endpoint(CLIENT.host, 10 + i)).allocate(0.0))[0].port
        for i in range(3)
    ]
    assert ports == [61000, 61001, 61002]


def test_software_attribute_is_configurable() -> None:
    import pytest

    from natkit.stun.message import parse_message

    c, _ = _allocated(software=None)
    assert parse_message(c.driver.sent[-1].data).get(at.SOFTWARE) is None
    c2, _ = _allocated(software="relay 1.0")
    assert parse_message(c2.driver.sent[-1].data).get(at.SOFTWARE) == "relay 1.0"
    with pytest.raises(ValueError):
        make_server(software="x" * 800)
