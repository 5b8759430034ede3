"""Review fixes in the TURN core: USERHASH announcement, REST username
parsing, per-user quotas of REST users, per-allocation caps, Binding rate
limit, peer policy gaps and RFC 6062 limits."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from natkit.addr import Endpoint, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method, SecurityFeature
from natkit.stun.credentials import nonce_features
from natkit.stun.message import StunMessage, serialize_message
from natkit.turn import attributes as tat
from natkit.turn.credentials import (
    CombinedCredentials,
    CredentialSource,
    RestCredentials,
    StaticCredentials,
    rest_credentials,
)
from natkit.turn.events import PeerConnectRequested
from natkit.turn.policy import PeerPolicy

from .server_helpers import (
    ALLOCATE,
    CLIENT,
    PEER,
    REALM,
    RELAY_V4,
    SERVER,
    USERS,
    Client,
    code_of,
    make_server,
    relayed,
)

WALL = 1_700_000_000.0


def _wall() -> float:
    return WALL


def _challenge(source: CredentialSource) -> str:
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    nonce = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert nonce is not None
    return nonce


class _Switchable(CredentialSource):
    """A source whose users become unresolvable by hash at runtime."""

    def __init__(self) -> None:
        self.inner = StaticCredentials.from_passwords(USERS, REALM)
        self.rest = False

    def keys(self, username, algorithm, *, wallclock):  # type: ignore[no-untyped-def]
        return self.inner.keys(username, algorithm, wallclock=wallclock)

    def username_for_hash(self, digest: bytes) -> str | None:
        return self.inner.username_for_hash(digest)

    def resolves_every_userhash(self) -> bool:
        return not self.rest


# -- item 3: USERNAME-ANONYMITY -------------------------------------------------------


def test_sources_say_whether_every_userhash_resolves() -> None:
    static = StaticCredentials.from_passwords(USERS, REALM)
    rest = RestCredentials(["s"], REALM)
    assert static.resolves_every_userhash()
    assert not rest.resolves_every_userhash()
    assert not CombinedCredentials((static, rest)).resolves_every_userhash()
    assert CombinedCredentials((static,)).resolves_every_userhash()


def test_anonymity_is_announced_per_challenge_not_at_construction() -> None:
    source = _Switchable()
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    first = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert first is not None
    assert nonce_features(first) & SecurityFeature.USERNAME_ANONYMITY
    source.rest = True  # e.g. a store refresh brought a REST secret
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    second = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert second is not None
    assert not nonce_features(second) & SecurityFeature.USERNAME_ANONYMITY


def test_a_nonce_issued_before_the_switch_still_authenticates() -> None:
    source = _Switchable()
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    c.learn(c.responses(c.send_raw(c.build(ALLOCATE, sign=False), 0.0))[-1])
    source.rest = True
    assert code_of(c.allocate(1.0)) == 0


def test_rest_secrets_mean_no_anonymity_and_rest_users_allocate() -> None:
    source = CombinedCredentials(
        (StaticCredentials.from_passwords(USERS, REALM), RestCredentials(["s3cret"], REALM))
    )
    assert not nonce_features(_challenge(source)) & SecurityFeature.USERNAME_ANONYMITY


# -- item 4: REST usernames with non-ASCII digits ---------------------------------------


@pytest.mark.parametrize("head", ["\u00b2", "\u0661\u0662", "\uff11", "12x", "", "9" * 13])
def test_rest_expiry_takes_ascii_digits_only(head: str) -> None:
    assert RestCredentials(["s"], REALM).expiry_of(f"{head}:x") is None


def test_unicode_digit_rest_username_is_401_not_an_internal_error() -> None:
    server, driver = make_server(RestCredentials(["s3cret"], REALM), wallclock=_wall)
    c = Client(driver, username="\u00b2:x", password="p")
    assert code_of(c.request(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)) == 401
    assert server.stats.internal_errors == 0


def test_internal_errors_log_one_traceback_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _driver = make_server()

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(server, "_receive_stun", broken)
    with caplog.at_level(logging.ERROR, logger="natkit.turn.server"):
        for i in range(100):
            server.receive_datagram(
                b"\x00" * 20,
                Endpoint("203.0.113.1", 1),
                local=Endpoint("192.0.2.1", 3478),
                now=float(i) / 10,
            )
        assert len(caplog.records) == 1
        server.receive_datagram(
            b"\x00" * 20, Endpoint("203.0.113.1", 1), local=Endpoint("192.0.2.1", 3478), now=61.0
        )
    assert server.stats.internal_errors == 101
    assert len(caplog.records) == 2
    assert "99 more" in caplog.records[1].getMessage()


# -- item 5: per-user quota for REST usernames ---------------------------------------


def test_rest_users_share_their_quota_across_fresh_credentials() -> None:
    server, driver = make_server(
        RestCredentials(["s3cret"], REALM), wallclock=_wall, max_allocations_per_user=1
    )
    codes = []
    for i in range(3):
        username, password = rest_credentials("s3cret", "dave", expiry=int(WALL) + 3600 + i)
        c = Client(
            driver, username=username, password=password, client=Endpoint("198.51.100.5", 40000 + i)
        )
        codes.append(code_of(c.allocate(0.0)))
    assert codes == [0, 486, 486]
    other, pw = rest_credentials("s3cret", "erin", expiry=int(WALL) + 3600)
    c = Client(driver, username=other, password=pw, client=Endpoint("198.51.100.6", 40000))
    assert code_of(c.allocate(0.0)) == 0
    assert server.table_sizes()["users"] == 2


def test_a_deleted_rest_allocation_gives_its_quota_back() -> None:
    server, driver = make_server(
        RestCredentials(["s3cret"], REALM), wallclock=_wall, max_allocations_per_user=1
    )
    first, pw1 = rest_credentials("s3cret", "dave", expiry=int(WALL) + 3600)
    a = Client(driver, username=first, password=pw1)
    assert code_of(a.allocate(0.0)) == 0
    assert code_of(a.refresh(0, now=1.0)) == 0
    second, pw2 = rest_credentials("s3cret", "dave", expiry=int(WALL) + 7200)
    b = Client(driver, username=second, password=pw2, client=Endpoint("198.51.100.5", 40001))
    assert code_of(b.allocate(2.0)) == 0
    assert server.table_sizes()["users"] == 1


def test_quota_user_strips_the_rest_timestamp_only() -> None:
    rest = RestCredentials(["s"], REALM)
    assert rest.quota_user("1700000000:dave") == "dave"
    assert rest.quota_user("1700000000") == "1700000000"
    assert rest.quota_user("alice") == "alice"
    combined = CombinedCredentials((StaticCredentials({}, REALM), rest))
    assert combined.quota_user("1700000000:dave") == "dave"
    assert StaticCredentials({}, REALM).quota_user("1:x") == "1:x"


# -- item 6: per-allocation caps ------------------------------------------------------


def _peers(n: int, base: int = 0x08000000) -> list[Endpoint]:
    return [Endpoint(str(ipaddress.IPv4Address(base + i)), 1) for i in range(n)]


def test_permissions_per_allocation_are_capped_with_508() -> None:
    server, driver = make_server(max_permissions=150)
    c = Client(driver)
    c.allocate(0.0)
    assert code_of(c.permit(*_peers(100), now=1.0)) == 0
    assert code_of(c.permit(*_peers(51, base=0x09000000), now=1.0)) == 508  # all or nothing
    assert server.table_sizes()["permissions"] == 100
    assert code_of(c.permit(*_peers(50, base=0x09000000), now=1.0)) == 0
    assert code_of(c.permit(*_peers(100), now=2.0)) == 0  # refreshing existing ones is fine
    assert server.table_sizes()["permissions"] == 150
    assert server.stats.quota_rejections == 1


def test_one_create_permission_carries_at_most_128_peers() -> None:
    server, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    assert code_of(c.permit(*_peers(129), now=1.0)) == 508
    assert code_of(c.permit(*_peers(128), now=1.0)) == 0
    assert server.table_sizes()["permissions"] == 128


def test_the_default_caps_bound_the_reviewers_5000_permissions() -> None:
    server, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    codes = {code_of(c.permit(*_peers(100, base=0x08000000 + k * 100), now=1.0)) for k in range(50)}
    assert codes == {0, 508}
    assert server.table_sizes()["permissions"] == server.config.max_permissions


def test_channels_per_allocation_are_capped_with_508() -> None:
    server, driver = make_server(max_channels=2)
    c = Client(driver)
    c.allocate(0.0)
    peers = _peers(3)
    assert code_of(c.bind(0x4000, peers[0], now=1.0)) == 0
    assert code_of(c.bind(0x4001, peers[1], now=1.0)) == 0
    assert code_of(c.bind(0x4002, peers[2], now=1.0)) == 508
    assert code_of(c.bind(0x4001, peers[1], now=2.0)) == 0  # a refresh still works
    assert server.table_sizes()["channels"] == 2


def test_channel_bind_counts_against_the_permission_cap() -> None:
    server, driver = make_server(max_permissions=1)
    c = Client(driver)
    c.allocate(0.0)
    peers = _peers(2)
    assert code_of(c.bind(0x4000, peers[0], now=1.0)) == 0
    assert code_of(c.bind(0x4001, peers[1], now=1.0)) == 508
    assert server.table_sizes()["permissions"] == 1


# -- item 9: Binding rate limit --------------------------------------------------------


def _binding() -> bytes:
    return serialize_message(StunMessage(Method.BINDING, MessageClass.REQUEST, b"x" * 12))


def test_binding_answers_to_one_source_are_rate_limited() -> None:
    server, _ = make_server(binding_rate=10.0, binding_burst=20.0)
    spoofed = Endpoint("203.0.113.99", 1234)
    for _ in range(1000):
        server.receive_datagram(_binding(), spoofed, local=SERVER, now=0.0)
    assert len(server.datagrams_to_send()) == 20
    assert server.stats.rate_limited == 980
    server.receive_datagram(_binding(), Endpoint("203.0.113.98", 1), local=SERVER, now=0.0)
    assert len(server.datagrams_to_send()) == 1  # another source has its own budget
    for _ in range(100):
        server.receive_datagram(_binding(), spoofed, local=SERVER, now=1.0)
    assert len(server.datagrams_to_send()) == 10  # refilled at binding_rate


def test_bindings_over_tcp_or_on_an_allocation_are_not_limited() -> None:
    server, driver = make_server(binding_rate=1.0, binding_burst=1.0)
    c = Client(driver)
    c.allocate(0.0)
    for _ in range(10):
        server.receive_datagram(_binding(), CLIENT, local=SERVER, now=1.0)
        server.receive_datagram(
            _binding(), Endpoint("198.51.100.77", 1), local=SERVER, transport=Transport.TCP, now=1.0
        )
    assert len(server.datagrams_to_send()) == 20
    assert server.stats.rate_limited == 0


def test_binding_rate_zero_means_no_limit() -> None:
    server, _ = make_server(binding_rate=0.0)
    for _ in range(500):
        server.receive_datagram(_binding(), Endpoint("203.0.113.99", 1), local=SERVER, now=0.0)
    assert len(server.datagrams_to_send()) == 500


# -- item 12: peer policy gaps and the server's own addresses ---------------------------


@pytest.mark.parametrize(
    "host",
    [
        "::127.0.0.1",
        "::8.8.8.8",
        "fec0::1",
        "100::1",
        "2001:2::1",
        "2001:10::1",
        "2001:20::1",
        "192.88.99.1",
    ],
)
def test_more_special_ranges_are_denied(host: str) -> None:
    assert not PeerPolicy().allowed(host)
    assert PeerPolicy(allowed=[ipaddress.ip_network(host)]).allowed(host)  # allow-list wins


def test_documentation_ranges_stay_allowed() -> None:
    policy = PeerPolicy()
    for host in ("192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1"):
        assert policy.allowed(host)


def test_own_addresses_are_peers_only_on_relay_ports() -> None:
    policy = PeerPolicy(own_ips=["192.0.2.10"], relay_ports=(61000, 61999))
    assert policy.allowed_peer(Endpoint("192.0.2.10", 61500))  # another allocation
    assert not policy.allowed_peer(Endpoint("192.0.2.10", 3478))
    assert not policy.allowed_peer(Endpoint("192.0.2.10", 22))
    assert policy.allowed_peer(Endpoint("192.0.2.11", 22))
    policy.add_listener(Endpoint("192.0.2.1", 61001))
    assert not policy.allowed_peer(Endpoint("192.0.2.1", 61001))  # a listener, even in range
    assert not policy.allowed_peer(Endpoint("192.0.2.1", 80))
    policy.add_listener(Endpoint("0.0.0.0", 3478))
    assert policy.allowed_peer(Endpoint("8.8.8.8", 80))


def test_allow_list_overrides_own_addresses_but_not_listeners() -> None:
    policy = PeerPolicy(
        allowed=[ipaddress.ip_network("127.0.0.0/8")],
        own_ips=["127.0.0.1"],
        relay_ports=(61000, 61999),
    )
    policy.add_listener(Endpoint("127.0.0.1", 3478))
    assert policy.allowed_peer(Endpoint("127.0.0.1", 3480))
    assert not policy.allowed_peer(Endpoint("127.0.0.1", 3478))


def test_the_servers_listener_and_relay_ip_are_not_peers() -> None:
    _server, driver = make_server()
    c = Client(driver)
    relay = relayed(c.allocate(0.0))[0]
    assert code_of(c.permit(Endpoint(RELAY_V4, 1), now=1.0)) == 0  # permissions are per IP
    assert code_of(c.bind(0x4000, Endpoint(RELAY_V4, 22), now=1.0)) == 403
    assert code_of(c.bind(0x4001, Endpoint(RELAY_V4, relay.port + 1), now=1.0)) == 0
    assert code_of(c.permit(SERVER, now=1.0)) == 0
    assert code_of(c.bind(0x4002, SERVER, now=1.0)) == 403  # TURN in TURN
    assert c.send_indication(SERVER, b"\x00\x01\x00\x00", now=1.0) == []
    assert c.send_indication(Endpoint(RELAY_V4, relay.port + 1), b"hi", now=1.0) != []


# -- item 13: RFC 6062 Connect ------------------------------------------------------


def _tcp_client(**overrides: object) -> Client:
    _, driver = make_server(**overrides)
    c = Client(driver, transport=Transport.TCP)
    assert code_of(c.allocate(0.0, protocol=6)) == 0
    return c


def _connect(c: Client, peer: Endpoint, now: float = 1.0) -> int | None:
    """None: the Connect went to the driver (no answer yet); else the error code."""
    resp = c.request(Method.CONNECT, [(at.XOR_PEER_ADDRESS, peer)], now=now)
    return code_of(resp)


def test_connect_needs_no_permission_and_installs_none() -> None:
    # RFC 6062 §5.2 lists 437, 446, 400 and 403 (local policy), nothing about
    # permissions; §5.3 requires one only for connections a peer opens.
    c = _tcp_client()
    assert _connect(c, PEER) is None
    assert c.driver.take_events(PeerConnectRequested)
    assert c.server.table_sizes()["permissions"] == 0


def test_connect_to_a_denied_port_is_403() -> None:
    c = _tcp_client()
    assert _connect(c, Endpoint(PEER.host, 25)) == 403
    c = _tcp_client(denied_connect_ports=())
    assert _connect(c, Endpoint(PEER.host, 25)) is None
    c = _tcp_client(denied_connect_ports=(25, 587))
    assert _connect(c, Endpoint(PEER.host, 587)) == 403


def test_connect_to_the_servers_own_listener_is_403() -> None:
    c = _tcp_client()
    assert _connect(c, SERVER) == 403


def test_peer_connections_per_allocation_are_capped() -> None:
    _, driver = make_server(max_peer_connections=2)
    c = Client(driver, transport=Transport.TCP)
    relay = relayed(c.allocate(0.0, protocol=6))[0]
    assert _connect(c, Endpoint(PEER.host, 5000)) is None
    c.permit(PEER, now=1.0)
    assert c.server.peer_connection_accepted(relay, Endpoint(PEER.host, 6000), now=1.0) is not None
    assert _connect(c, Endpoint(PEER.host, 5002)) == 508
    assert c.server.peer_connection_accepted(relay, Endpoint(PEER.host, 6001), now=1.0) is None
    assert c.server.table_sizes()["peer_connections"] == 2
