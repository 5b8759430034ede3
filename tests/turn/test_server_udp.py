"""The TURN server core over UDP: Allocate, permissions, channels, Send/Data,
ChannelData (RFC 8656 §7-12)."""

from __future__ import annotations

from typing import Any

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import parse_message
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data, parse_channel_data
from natkit.turn.events import AllocationCreated, AllocationDeleted, RelayReleased, RelayRequested

from .server_helpers import (
    CLIENT,
    PEER,
    PEER2,
    RELAY_V4,
    SERVER,
    Client,
    code_of,
    make_server,
    relayed,
)


def _allocated(now: float = 0.0, **overrides: Any) -> tuple[Client, Endpoint]:
    _server, driver = make_server(**overrides)
    client = Client(driver)
    resp = client.allocate(now)
    assert code_of(resp) == 0
    return client, relayed(resp)[0]


def test_first_allocate_is_challenged_with_401_realm_nonce_and_algorithms() -> None:
    _server, driver = make_server()
    client = Client(driver)
    out = client.send_raw(client.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)]), 0.0)
    resp = parse_message(out[0].data)
    assert code_of(resp) == 401
    assert resp.get(at.REALM) == "natkit.test"
    assert resp.get(at.NONCE)
    assert resp.get(at.PASSWORD_ALGORITHMS)


def test_allocate_succeeds_with_relayed_mapped_lifetime_signed() -> None:
    server, driver = make_server()
    client = Client(driver)
    resp = client.allocate(0.0)
    assert code_of(resp) == 0
    assert resp.message_class == MessageClass.SUCCESS
    relay = relayed(resp)[0]
    assert relay.host == RELAY_V4 and 61000 <= relay.port <= 61999
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT
    assert resp.get(at.LIFETIME) == 600
    assert resp.integrity_sha256_offset >= 0
    assert client.verified(resp)
    requested = [e for e in driver.events if isinstance(e, RelayRequested)]
    assert requested[0].relays == (relay,) and requested[0].transport == Transport.UDP
    created = [e for e in driver.events if isinstance(e, AllocationCreated)]
    assert created[0].username == "alice" and created[0].relays == (relay,)
    assert server.stats.allocations_created == 1


def test_send_indication_needs_a_permission() -> None:
    client, relay = _allocated()
    assert client.send_indication(PEER, b"hello", 1.0) == []
    assert client.server.stats.dropped == 1
    assert code_of(client.permit(PEER, now=1.0)) == 0
    out = client.send_indication(PEER, b"hello", 2.0)
    assert [(d.data, d.remote, d.local) for d in out] == [(b"hello", PEER, relay)]


def test_permission_is_per_ip_any_port() -> None:
    client, _relay = _allocated()
    client.permit(PEER, now=1.0)
    other_port = Endpoint(PEER.host, 9999)
    out = client.send_indication(other_port, b"x", 1.0)
    assert out[0].remote == other_port


def test_peer_datagram_becomes_data_indication() -> None:
    client, relay = _allocated()
    client.permit(PEER, now=1.0)
    server = client.server
    server.receive_peer_datagram(b"from peer", PEER, relay=relay, now=2.0)
    out = client.driver.pump(2.0)
    assert len(out) == 1 and out[0].remote == CLIENT and out[0].local == SERVER
    ind = parse_message(out[0].data)
    assert ind.method == Method.DATA and ind.message_class == MessageClass.INDICATION
    assert ind.get(at.XOR_PEER_ADDRESS) == PEER
    assert ind.get(at.DATA) == b"from peer"


def test_peer_datagram_without_permission_is_dropped() -> None:
    client, relay = _allocated()
    client.server.receive_peer_datagram(b"x", PEER, relay=relay, now=1.0)
    assert client.driver.pump(1.0) == []
    assert client.server.stats.dropped == 1


def test_channel_data_both_ways() -> None:
    client, relay = _allocated()
    assert code_of(client.bind(0x4001, PEER, now=1.0)) == 0
    out = client.channel_data(0x4001, b"abc", 2.0)
    assert [(d.data, d.remote, d.local) for d in out] == [(b"abc", PEER, relay)]
    client.server.receive_peer_datagram(b"reply", PEER, relay=relay, now=2.0)
    out = client.driver.pump(2.0)
    assert parse_channel_data(out[0].data) == (0x4001, b"reply")
    assert out[0].data == pack_channel_data(0x4001, b"reply")  # no padding over UDP


def test_hot_paths_match_the_general_paths() -> None:
    client, relay = _allocated()
    client.bind(0x4002, PEER, now=1.0)
    server = client.server
    fast = server.relay_client_packet(
        pack_channel_data(0x4002, b"q"), CLIENT, SERVER, 2.0, transport=Transport.UDP
    )
    assert fast is not None and fast.data == b"q" and fast.remote == PEER and fast.local == relay
    back = server.relay_peer_packet(b"r", PEER, relay, 2.0)
    assert back is not None and back.data == pack_channel_data(0x4002, b"r")
    unbound = pack_channel_data(0x4003, b"q")
    assert server.relay_client_packet(unbound, CLIENT, SERVER, 2.0, transport=Transport.UDP) is None
    assert server.relay_peer_packet(b"r", PEER2, relay, 2.0) is None


def test_refresh_zero_deletes_the_allocation_and_releases_the_relay() -> None:
    client, relay = _allocated()
    resp = client.refresh(0, now=5.0)
    assert code_of(resp) == 0 and resp.get(at.LIFETIME) == 0
    events = client.driver.events
    assert RelayReleased(relay=relay, transport=Transport.UDP) in events
    deleted = [e for e in events if isinstance(e, AllocationDeleted)]
    assert deleted[0].reason == "refreshed to zero"
    assert client.server.allocations() == []
