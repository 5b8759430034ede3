"""Peer address policy (RFC 8656 §21.3): denied classes, allow-list, and every relay path."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.turn.policy import PeerPolicy

from .server_helpers import PEER, Client, code_of, make_server, relayed

DENIED = [
    pytest.param("127.0.0.1", id="loopback-v4"),
    pytest.param("::1", id="loopback-v6"),
    pytest.param("0.0.0.0", id="this-network"),
    pytest.param("0.1.2.3", id="this-network-8"),
    pytest.param("::", id="unspecified-v6"),
    pytest.param("169.254.169.254", id="cloud-metadata"),
    pytest.param("fe80::1", id="link-local-v6"),
    pytest.param("fd00::1", id="unique-local"),
    pytest.param("fc00::1", id="unique-local-fc"),
    pytest.param("224.0.0.1", id="multicast-v4"),
    pytest.param("239.255.255.250", id="multicast-ssdp"),
    pytest.param("ff02::1", id="multicast-v6"),
    pytest.param("10.1.2.3", id="rfc1918-10"),
    pytest.param("172.16.0.1", id="rfc1918-172"),
    pytest.param("172.31.255.254", id="rfc1918-172-top"),
    pytest.param("192.168.1.1", id="rfc1918-192"),
    pytest.param("100.64.0.1", id="shared-cgn"),
    pytest.param("100.127.255.254", id="shared-cgn-top"),
    pytest.param("2001::1", id="teredo"),
    pytest.param("2002:c000:0201::1", id="6to4"),
    pytest.param("::ffff:8.8.8.8", id="ipv4-mapped"),
    pytest.param("240.0.0.1", id="reserved-240"),
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("198.18.0.1", id="benchmarking"),
    pytest.param("192.0.0.8", id="ietf-protocol"),
    pytest.param("64:ff9b::10.0.0.1", id="nat64-to-private"),
    pytest.param("not an ip", id="garbage"),
]

ALLOWED = [
    pytest.param("8.8.8.8", id="global-v4"),
    pytest.param("2606:4700::1111", id="global-v6"),
    pytest.param("192.0.2.1", id="doc-192-0-2"),
    pytest.param("198.51.100.9", id="doc-198-51-100"),
    pytest.param("203.0.113.200", id="doc-203-0-113"),
    pytest.param("2001:db8::5", id="doc-v6"),
    pytest.param("64:ff9b::8.8.8.8", id="nat64-to-global"),
    pytest.param("172.32.0.1", id="just-above-172-16-12"),
    pytest.param("100.128.0.1", id="just-above-cgn"),
]


@pytest.mark.parametrize("host", DENIED)
def test_special_ranges_are_denied_by_default(host: str) -> None:
    assert not PeerPolicy().allowed(host)


@pytest.mark.parametrize("host", ALLOWED)
def test_public_and_documentation_ranges_are_allowed(host: str) -> None:
    assert PeerPolicy().allowed(host)


def test_allow_list_overrides_the_default_denial() -> None:
    policy = PeerPolicy(allowed=[ip_network("127.0.0.0/8"), ip_network("fd00::/8")])
    assert policy.allowed("127.0.0.1") and policy.allowed("fd00::1")
    assert not policy.allowed("10.0.0.1")


def test_allow_list_overrides_the_deny_list_like_coturn() -> None:
    policy = PeerPolicy(allowed=[ip_network("8.8.8.8/32")], denied=[ip_network("8.0.0.0/8")])
    assert policy.allowed("8.8.8.8") and not policy.allowed("8.8.4.4")


def test_deny_list_adds_ranges() -> None:
    policy = PeerPolicy(denied=[ip_network("203.0.113.0/24"), ip_network("2001:db8:1::/48")])
    assert not policy.allowed("203.0.113.7")
    assert not policy.allowed("2001:db8:1::1")
    assert policy.allowed("2001:db8:2::1")


def test_verdict_cache_stays_bounded() -> None:
    policy = PeerPolicy(cache_size=100)
    for i in range(250):
        assert policy.allowed(f"8.8.{i >> 8}.{i & 255}")
    assert len(policy) <= 100
    assert not policy.allowed("10.0.0.1")


LOOPBACK = Endpoint("127.0.0.1", 5000)
PRIVATE = Endpoint("10.0.0.9", 5000)


def _allocated(**overrides: Any) -> tuple[Client, Endpoint]:
    _, driver = make_server(**overrides)
    c = Client(driver)
    return c, relayed(c.allocate(0.0))[0]


def test_create_permission_for_a_denied_peer_is_403() -> None:
    c, _ = _allocated()
    assert code_of(c.permit(PRIVATE)) == 403
    assert code_of(c.permit(PEER, LOOPBACK)) == 403
    assert c.send_indication(PEER, b"x") == []  # nothing installed
    assert c.server.stats.denied_peers == 2


def test_channel_bind_to_a_denied_peer_is_403() -> None:
    c, _ = _allocated()
    assert code_of(c.bind(0x4000, LOOPBACK)) == 403


def test_send_indication_to_a_denied_peer_is_dropped_and_counted() -> None:
    c, _ = _allocated()
    assert c.send_indication(LOOPBACK, b"x") == []
    assert c.server.stats.denied_peers == 1


def test_peer_datagram_from_a_denied_peer_is_dropped_and_counted() -> None:
    c, relay = _allocated()
    c.server.receive_peer_datagram(b"x", PRIVATE, relay=relay, now=1.0)
    assert c.driver.pump(1.0) == []
    assert c.server.stats.denied_peers == 1


def test_allow_listed_loopback_peer_works_everywhere() -> None:
    c, relay = _allocated(allowed_peers=(ip_network("127.0.0.0/8"),))
    assert code_of(c.bind(0x4000, LOOPBACK)) == 0
    assert c.channel_data(0x4000, b"x")[0].remote == LOOPBACK
    c.server.receive_peer_datagram(b"y", LOOPBACK, relay=relay, now=1.0)
    assert len(c.driver.pump(1.0)) == 1


def test_denied_peers_config_adds_to_defaults_at_the_server() -> None:
    c, _ = _allocated(denied_peers=(ip_network("203.0.113.0/24"),))
    assert code_of(c.permit(PEER)) == 403


def test_connect_to_a_denied_peer_is_403() -> None:
    _, driver = make_server()
    c = Client(driver, transport=Transport.TCP)
    c.allocate(0.0, protocol=6)
    resp = c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, LOOPBACK)], now=1.0)
    assert code_of(resp) == 403


def test_accepted_tcp_connection_from_a_denied_peer_is_refused() -> None:
    _, driver = make_server()
    c = Client(driver, transport=Transport.TCP)
    relay = relayed(c.allocate(0.0, protocol=6))[0]
    assert c.server.peer_connection_accepted(relay, PRIVATE, now=1.0) is None
    assert c.server.stats.denied_peers == 1
