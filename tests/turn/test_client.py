"""The sans-IO TURN client against hand-built server answers, with explicit ``now``."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method, PasswordAlgorithm
from natkit.stun.credentials import long_term_key
from natkit.stun.message import StunMessage, parse_message, serialize_message, verify_integrity
from natkit.stun.transaction import LongTermCredentials
from natkit.turn import attributes as tat
from natkit.turn.attributes import AddressErrorCode, TransportProtocol
from natkit.turn.channel import pack_channel_data
from natkit.turn.client import ClientState, TurnClient, TurnClientConfig, TurnConnectionBinder
from natkit.turn.client_events import (
    Allocated,
    AllocationFailed,
    AllocationLost,
    AllocationRefreshed,
    AllocationReleased,
    ChannelBindFailed,
    ChannelBound,
    ConnectFailed,
    ConnectionAttempted,
    DataConnectionBound,
    DataConnectionFailed,
    DataReceived,
    IcmpReceived,
    PeerConnected,
    PermissionCreated,
    PermissionFailed,
    Redirected,
)

SERVER = Endpoint("192.0.2.1", 3478)
ALTERNATE = Endpoint("192.0.2.2", 3478)
RELAYED = Endpoint("192.0.2.1", 61000)
RELAYED6 = Endpoint("2001:db8::1", 61001)
MAPPED = Endpoint("198.51.100.7", 40000)
PEER = Endpoint("203.0.113.5", 5000)
PEER2 = Endpoint("203.0.113.6", 5001)
CREDS = LongTermCredentials("user", "pass")
REALM = "example.org"
NONCE = "nonce-1"
KEY = long_term_key("user", REALM, "pass", PasswordAlgorithm.MD5)


# -- helpers: a hand-driven server ---------------------------------------------------


def make_client(*, creds: LongTermCredentials | None = CREDS, **cfg: Any) -> TurnClient:
    cfg.setdefault("keepalive_interval", None)  # schedules below are exact; keepalives tested apart
    return TurnClient(SERVER, creds, TurnClientConfig(rng=random.Random(5766), **cfg))


def out(client: TurnClient, now: float = 0.0) -> list[bytes]:
    return [d.data for d in client.datagrams_to_send(now=now)]


def requests(client: TurnClient, now: float = 0.0) -> list[StunMessage]:
    msgs = [parse_message(d) for d in out(client, now) if d[0] >> 6 == 0]
    return [m for m in msgs if m.message_class == MessageClass.REQUEST]


def one_request(client: TurnClient, now: float = 0.0) -> StunMessage:
    reqs = requests(client, now)
    assert len(reqs) == 1, reqs
    return reqs[0]


def events(client: TurnClient) -> list[Any]:
    got = []
    while (event := client.next_event()) is not None:
        got.append(event)
    return got


def success(req: StunMessage, *attrs: tuple[Any, Any], sign: bool = True) -> bytes:
    resp = req.success()
    for spec, value in attrs:
        resp.add(spec, value)
    return serialize_message(resp, key=KEY if sign else None)


def error(
    req: StunMessage, code: int, *attrs: tuple[Any, Any], sign: bool = True, reason: str = ""
) -> bytes:
    resp = req.error_response(code, reason or None)
    for spec, value in attrs:
        resp.add(spec, value)
    return serialize_message(resp, key=KEY if sign else None)


def challenge(req: StunMessage, nonce: str = NONCE) -> bytes:
    return error(req, 401, (at.REALM, REALM), (at.NONCE, nonce), sign=False)


def feed(client: TurnClient, data: bytes, now: float = 0.0, addr: Endpoint = SERVER) -> None:
    client.receive_datagram(data, addr, now=now)


def authenticate(client: TurnClient, now: float = 0.0) -> StunMessage:
    """Answer the unsigned first request with 401; return the signed retry."""
    first = one_request(client, now)
    feed(client, challenge(first), now)
    signed = one_request(client, now)
    assert signed.get(at.USERNAME) == "user"
    assert signed.has(at.MESSAGE_INTEGRITY.type)
    return signed


def allocated(
    *, lifetime: int = 600, now: float = 0.0, relayed: tuple[Endpoint, ...] = (RELAYED,), **cfg: Any
) -> TurnClient:
    client = make_client(**cfg)
    client.allocate(now=now)
    req = authenticate(client, now)
    attrs = [(at.XOR_RELAYED_ADDRESS, r) for r in relayed]
    feed(
        client, success(req, *attrs, (at.XOR_MAPPED_ADDRESS, MAPPED), (at.LIFETIME, lifetime)), now
    )
    assert [type(e) for e in events(client)] == [Allocated]
    return client


def permitted(client: TurnClient, *peers: Endpoint, now: float = 0.0) -> None:
    client.create_permission(list(peers), now=now)
    feed(client, success(one_request(client, now)), now)
    events(client)


def bound(client: TurnClient, peer: Endpoint, now: float = 0.0) -> int:
    number = client.bind_channel(peer, now=now)
    feed(client, success(one_request(client, now)), now)
    events(client)
    return number


# -- Allocate ------------------------------------------------------------------------


def test_allocate_retries_the_401_challenge_signed_and_reports_the_allocation() -> None:
    client = make_client()
    client.allocate(now=0.0)
    first = one_request(client)
    assert first.method == Method.ALLOCATE
    assert first.get(tat.REQUESTED_TRANSPORT) == TransportProtocol.UDP
    assert not first.has(at.MESSAGE_INTEGRITY.type)
    feed(client, challenge(first))
    signed = one_request(client)
    assert signed.transaction_id != first.transaction_id
    assert (signed.get(at.REALM), signed.get(at.NONCE)) == (REALM, NONCE)
    assert verify_integrity(signed, KEY)
    feed(
        client,
        success(
            signed,
            (at.XOR_RELAYED_ADDRESS, RELAYED),
            (at.XOR_MAPPED_ADDRESS, MAPPED),
            (at.LIFETIME, 600),
        ),
    )
    assert events(client) == [
        Allocated(relayed=(RELAYED,), mapped=MAPPED, lifetime=600.0, server=SERVER)
    ]
    assert client.state is ClientState.ALLOCATED
    assert client.auth is not None and client.auth.nonce == NONCE


def test_allocate_sends_the_requested_options() -> None:
    client = make_client()
    client.allocate(now=0.0, lifetime=1200, even_port=True, dont_fragment=True)
    req = one_request(client)
    assert req.get(at.LIFETIME) == 1200
    assert req.get(tat.EVEN_PORT) is True
    assert req.get(tat.DONT_FRAGMENT) is True


def test_allocate_with_a_reservation_token_sends_it_and_nothing_that_excludes_it() -> None:
    client = make_client()
    client.allocate(now=0.0, reservation_token=b"12345678")
    req = one_request(client)
    assert req.get(tat.RESERVATION_TOKEN) == b"12345678"
    assert not req.has(tat.EVEN_PORT.type)
    with pytest.raises(LocalProtocolError):
        make_client().allocate(now=0.0, reservation_token=b"12345678", even_port=False)


def test_dual_allocation_asks_for_ipv6_too_and_reports_both_relays() -> None:
    client = make_client()
    client.allocate(now=0.0, additional_family=Family.IPV6)
    req = authenticate(client)
    assert req.get(tat.ADDITIONAL_ADDRESS_FAMILY) == Family.IPV6
    assert not req.has(tat.REQUESTED_ADDRESS_FAMILY.type)
    feed(
        client, success(req, (at.XOR_RELAYED_ADDRESS, RELAYED6), (at.XOR_RELAYED_ADDRESS, RELAYED))
    )
    (event,) = events(client)
    assert event.relayed == (RELAYED, RELAYED6)


def test_dual_allocation_reports_the_address_error_of_the_refused_family() -> None:
    client = make_client()
    client.allocate(now=0.0, additional_family=Family.IPV6)
    req = authenticate(client)
    refusal = AddressErrorCode(Family.IPV6, 440, "no IPv6")
    feed(client, success(req, (at.XOR_RELAYED_ADDRESS, RELAYED), (tat.ADDRESS_ERROR_CODE, refusal)))
    (event,) = events(client)
    assert event.relayed == (RELAYED,)
    assert event.address_error == refusal


def test_dual_allocation_also_speaks_coturns_draft_code_points() -> None:
    client = make_client()
    client.allocate(now=0.0, additional_family=Family.IPV6)
    req = authenticate(client)
    assert req.get_raw(0x8032) == b"\x02\x00\x00\x00"  # draft ADDITIONAL-ADDRESS-FAMILY
    resp = req.success().add(at.XOR_RELAYED_ADDRESS, RELAYED)
    resp.add_raw(0x8033, b"\x02\x00\x04\x28")  # draft ADDRESS-ERROR-CODE 440
    feed(client, serialize_message(resp, key=KEY))
    (event,) = events(client)
    assert event.address_error == AddressErrorCode(Family.IPV6, 440, "")
    strict = make_client(draft_dual_allocation=False)
    strict.allocate(now=0.0, additional_family=Family.IPV6)
    assert one_request(strict).get_raw(0x8032) is None


def test_ipv6_allocation_requests_the_family_and_refuses_ipv4_peers() -> None:
    client = make_client()
    client.allocate(now=0.0, family=Family.IPV6)
    req = authenticate(client)
    assert req.get(tat.REQUESTED_ADDRESS_FAMILY) == Family.IPV6
    feed(client, success(req, (at.XOR_RELAYED_ADDRESS, RELAYED6)))
    events(client)
    with pytest.raises(LocalProtocolError, match="443"):
        client.send_to(b"x", PEER, now=0.0)
    client.create_permission(Endpoint("2001:db8::9", 1), now=0.0)
    assert one_request(client).get(at.XOR_PEER_ADDRESS) == Endpoint("2001:db8::9", 0)


@pytest.mark.parametrize(
    ("kwargs", "stream"),
    [
        pytest.param({"transport": TransportProtocol.TCP}, False, id="tcp-relay-over-udp"),
        pytest.param(
            {"transport": TransportProtocol.TCP, "even_port": True}, True, id="tcp-with-even-port"
        ),
        pytest.param({"additional_family": Family.IPV4}, False, id="additional-ipv4"),
        pytest.param({"reservation_token": b"short"}, False, id="short-token"),
    ],
)
def test_allocate_refuses_combinations_the_rfcs_forbid(
    kwargs: dict[str, Any], stream: bool
) -> None:
    with pytest.raises(LocalProtocolError):
        make_client(stream=stream).allocate(now=0.0, **kwargs)


def test_wrong_credentials_fail_the_allocation_with_401() -> None:
    client = make_client()
    client.allocate(now=0.0)
    signed = authenticate(client)
    feed(client, challenge(signed))  # same nonce refused again: wrong password
    assert events(client) == [AllocationFailed(code=401, reason="Unauthenticated")]
    assert client.state is ClientState.FAILED


@pytest.mark.parametrize("code", [403, 440, 442, 486, 508])
def test_other_allocate_errors_are_reported_with_their_code(code: int) -> None:
    client = make_client()
    client.allocate(now=0.0)
    feed(client, error(authenticate(client), code, reason="no"))
    assert events(client) == [AllocationFailed(code=code, reason="no")]


def test_an_unanswered_allocate_fails_after_the_rfc_timeout() -> None:
    client = make_client()
    client.allocate(now=0.0)
    out(client)
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
    assert deadline is None
    (event,) = events(client)
    assert isinstance(event, AllocationFailed) and event.code is None


def test_300_over_udp_follows_the_alternate_with_fresh_authentication() -> None:
    client = make_client()
    client.allocate(now=0.0)
    first = one_request(client)
    feed(client, error(first, 300, (at.ALTERNATE_SERVER, ALTERNATE), sign=False))
    assert events(client) == [
        Redirected(previous=SERVER, alternate=ALTERNATE, alternate_domain=None, followed=True)
    ]
    (datagram,) = client.datagrams_to_send(now=0.0)
    assert datagram.remote == ALTERNATE
    again = parse_message(datagram.data)
    assert again.method == Method.ALLOCATE and not again.has(at.MESSAGE_INTEGRITY.type)
    feed(client, challenge(again), addr=ALTERNATE)
    signed = one_request(client)
    feed(client, success(signed, (at.XOR_RELAYED_ADDRESS, RELAYED)), addr=ALTERNATE)
    (event,) = events(client)
    assert isinstance(event, Allocated) and event.server == ALTERNATE


def test_300_over_a_stream_stops_and_leaves_reconnecting_to_the_driver() -> None:
    client = make_client(stream=True)
    client.allocate(now=0.0)
    first = one_request(client)
    feed(
        client,
        error(
            first,
            300,
            (at.ALTERNATE_SERVER, ALTERNATE),
            (at.ALTERNATE_DOMAIN, "b.example"),
            sign=False,
        ),
    )
    assert events(client) == [
        Redirected(
            previous=SERVER, alternate=ALTERNATE, alternate_domain="b.example", followed=False
        )
    ]
    assert client.state is ClientState.REDIRECTED
    assert out(client) == []
    assert client.allocate_params is not None
    fresh = TurnClient(ALTERNATE, CREDS, TurnClientConfig(stream=True, rng=random.Random(1)))
    fresh.allocate_with(client.allocate_params, now=0.0)
    assert one_request(fresh).method == Method.ALLOCATE


def test_a_redirect_back_to_a_server_already_tried_fails() -> None:
    client = make_client()
    client.allocate(now=0.0)
    feed(client, error(one_request(client), 300, (at.ALTERNATE_SERVER, ALTERNATE), sign=False))
    events(client)
    back = one_request(client)
    feed(client, error(back, 300, (at.ALTERNATE_SERVER, SERVER), sign=False), addr=ALTERNATE)
    (event,) = events(client)
    assert isinstance(event, AllocationFailed) and event.code == 300


def test_437_clears_the_stale_allocation_then_allocates_again_once() -> None:
    client = make_client()
    client.allocate(now=0.0)
    feed(client, error(authenticate(client), 437))
    clear = one_request(client)
    assert (clear.method, clear.get(at.LIFETIME)) == (Method.REFRESH, 0)
    feed(client, success(clear, (at.LIFETIME, 0)))
    again = one_request(client)
    assert again.method == Method.ALLOCATE
    assert events(client) == []
    feed(client, error(again, 437))
    (event,) = events(client)
    assert isinstance(event, AllocationFailed) and event.code == 437


def test_420_for_dont_fragment_retries_without_it() -> None:
    client = make_client()
    client.allocate(now=0.0, dont_fragment=True)
    feed(
        client,
        error(authenticate(client), 420, (at.UNKNOWN_ATTRIBUTES, (int(tat.DONT_FRAGMENT.type),))),
    )
    again = one_request(client)
    assert again.method == Method.ALLOCATE and not again.has(tat.DONT_FRAGMENT.type)


def test_allocate_success_without_a_relayed_address_fails() -> None:
    client = make_client()
    client.allocate(now=0.0)
    feed(client, success(authenticate(client), (at.LIFETIME, 600)))
    (event,) = events(client)
    assert isinstance(event, AllocationFailed)


# -- refresh and release ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("lifetime", "refresh_at"),
    [
        pytest.param(600, 540.0, id="600s"),
        pytest.param(3600, 3540.0, id="3600s"),
        pytest.param(100, 50.0, id="short"),
    ],
)
def test_allocation_is_refreshed_before_it_expires(lifetime: int, refresh_at: float) -> None:
    client = allocated(lifetime=lifetime)
    assert client.get_timer() == refresh_at
    client.handle_timer(now=refresh_at)
    req = one_request(client, refresh_at)
    assert req.method == Method.REFRESH and verify_integrity(req, KEY)
    feed(client, success(req, (at.LIFETIME, lifetime)), refresh_at)
    assert events(client) == [AllocationRefreshed(lifetime=float(lifetime))]
    assert client.get_timer() == refresh_at * 2


def test_stale_nonce_on_refresh_is_retried_with_the_new_nonce() -> None:
    client = allocated()
    client.handle_timer(now=540.0)
    req = one_request(client)
    feed(client, error(req, 438, (at.REALM, REALM), (at.NONCE, "nonce-2"), sign=False), 540.0)
    retry = one_request(client)
    assert retry.get(at.NONCE) == "nonce-2"
    feed(client, success(retry, (at.LIFETIME, 600)), 540.0)
    assert [type(e) for e in events(client)] == [AllocationRefreshed]
    assert client.auth is not None and client.auth.nonce == "nonce-2"


def test_a_failed_refresh_loses_the_allocation() -> None:
    client = allocated()
    client.handle_timer(now=540.0)
    feed(client, error(one_request(client), 437), 540.0)
    assert events(client) == [AllocationLost(code=437, reason="Allocation Mismatch")]
    assert client.state is ClientState.LOST
    assert client.get_timer() is None


def test_an_unanswered_refresh_loses_the_allocation() -> None:
    client = allocated()
    client.handle_timer(now=540.0)
    out(client)
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
    (event,) = events(client)
    assert isinstance(event, AllocationLost) and event.code is None


def test_a_quiet_udp_client_sends_binding_indications_as_keepalives() -> None:
    client = allocated(keepalive_interval=10.0)
    assert client.get_timer() == 10.0
    client.handle_timer(now=10.0)  # the Allocate went out since the last tick
    assert out(client, 10.0) == []
    client.handle_timer(now=20.0)  # quiet for a whole interval: keepalive
    (wire,) = out(client, 20.0)
    msg = parse_message(wire)
    assert (msg.method, msg.message_class, msg.attributes) == (
        Method.BINDING,
        MessageClass.INDICATION,
        [],
    )
    client.handle_timer(now=30.0)
    assert len(out(client, 30.0)) == 1
    assert client.keepalives == 2


def test_traffic_makes_keepalives_unnecessary() -> None:
    client = allocated(keepalive_interval=10.0, auto_bind=False)
    permitted(client, PEER, now=5.0)
    client.handle_timer(now=10.0)
    client.handle_timer(now=20.0)
    assert [parse_message(d).method for d in out(client, 20.0)] == [Method.BINDING]
    client.send_to(b"x", PEER, now=22.0)
    out(client, 22.0)
    client.handle_timer(now=30.0)  # data went out at 22 s
    assert out(client, 30.0) == []
    client.handle_timer(now=40.0)
    assert [parse_message(d).method for d in out(client, 40.0)] == [Method.BINDING]


def test_stream_clients_send_no_keepalives() -> None:
    client = allocated(keepalive_interval=10.0, stream=True)
    assert client.get_timer() == 540.0


def test_release_sends_refresh_with_lifetime_zero() -> None:
    client = allocated()
    client.release(now=10.0)
    req = one_request(client)
    assert (req.method, req.get(at.LIFETIME)) == (Method.REFRESH, 0)
    feed(client, success(req, (at.LIFETIME, 0)), 10.0)
    assert events(client) == [AllocationReleased(confirmed=True)]
    assert client.state is ClientState.RELEASED


def test_refresh_to_zero_is_a_release() -> None:
    client = allocated()
    client.refresh(now=1.0, lifetime=0)
    req = one_request(client, 1.0)
    feed(client, success(req, (at.LIFETIME, 0)), 1.0)
    assert events(client) == [AllocationReleased(confirmed=True)]


def test_release_before_any_allocation_ends_at_once() -> None:
    client = make_client()
    client.release(now=0.0)
    assert events(client) == [AllocationReleased(confirmed=False)]
    assert out(client) == []


def test_commands_need_an_allocation() -> None:
    client = make_client()
    for command in (
        lambda: client.send_to(b"x", PEER, now=0.0),
        lambda: client.create_permission(PEER, now=0.0),
        lambda: client.bind_channel(PEER, now=0.0),
        lambda: client.connect(PEER, now=0.0),
    ):
        with pytest.raises(LocalProtocolError):
            command()


def test_closed_control_connection_loses_the_allocation() -> None:
    client = allocated(stream=True)
    client.transport_closed(now=1.0)
    assert events(client) == [AllocationLost(code=None, reason="connection closed")]


# -- permissions -----------------------------------------------------------------------


def test_create_permission_sends_every_ip_once_and_reports_success() -> None:
    client = allocated()
    rid = client.create_permission([PEER, PEER.with_port(9), PEER2.host], now=0.0)
    req = one_request(client)
    assert req.method == Method.CREATE_PERMISSION
    assert req.get_all(at.XOR_PEER_ADDRESS) == [Endpoint(PEER.host, 0), Endpoint(PEER2.host, 0)]
    feed(client, success(req))
    assert events(client) == [PermissionCreated(request_id=rid, peer_ips=(PEER.host, PEER2.host))]
    assert client.permissions == (PEER.host, PEER2.host)


def test_explicit_permissions_are_refreshed_every_240_seconds_while_idle() -> None:
    client = allocated()
    permitted(client, PEER)
    for n in (1, 2, 3):
        assert client.get_timer() == 240.0 * n
        client.handle_timer(now=240.0 * n)
        req = one_request(client)
        assert req.method == Method.CREATE_PERMISSION
        feed(client, success(req), 240.0 * n)
        if n == 2:  # the allocation refresh at 540 s comes between
            client.handle_timer(now=540.0)
            feed(client, success(one_request(client), (at.LIFETIME, 600)), 540.0)
    assert [type(e) for e in events(client)] == [AllocationRefreshed]


def test_implicit_permissions_are_refreshed_only_while_used() -> None:
    client = allocated(auto_bind=False)
    client.send_to(b"a", PEER, now=0.0)
    feed(client, success(one_request(client)))
    client.handle_timer(now=240.0)  # used since install: refreshed
    feed(client, success(one_request(client)), 240.0)
    client.handle_timer(now=480.0)  # idle for 240 s: dropped, not refreshed
    assert requests(client) == []
    assert client.permissions == ()


def test_send_to_queues_data_until_the_permission_is_installed() -> None:
    client = allocated(auto_bind=False)
    client.send_to(b"one", PEER, now=0.0)
    client.send_to(b"two", PEER, now=0.0)
    (req,) = [parse_message(d) for d in out(client)]  # only the CreatePermission
    assert req.method == Method.CREATE_PERMISSION
    feed(client, success(req))
    sent = [parse_message(d) for d in out(client)]
    assert [(m.method, m.message_class) for m in sent] == [
        (Method.SEND, MessageClass.INDICATION)
    ] * 2
    assert [m.get(at.DATA) for m in sent] == [b"one", b"two"]
    assert {m.get(at.XOR_PEER_ADDRESS) for m in sent} == {PEER}
    assert events(client) == [PermissionCreated(request_id=None, peer_ips=(PEER.host,))]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 1200])
def test_send_indications_are_the_codecs_bytes(size: int) -> None:
    client = allocated(auto_bind=False)
    permitted(client, PEER)
    client.send_to(b"d" * size, PEER, now=0.0)
    (wire,) = out(client)
    msg = parse_message(wire)
    expected = StunMessage(Method.SEND, MessageClass.INDICATION, msg.transaction_id)
    expected.add(at.XOR_PEER_ADDRESS, PEER).add(at.DATA, b"d" * size)
    assert wire == serialize_message(expected)


def test_the_permission_queue_is_bounded_and_drops_the_oldest() -> None:
    client = allocated(auto_bind=False, max_queued=2)
    for data in (b"1", b"2", b"3"):
        client.send_to(data, PEER, now=0.0)
    feed(client, success(one_request(client)))
    assert [parse_message(d).get(at.DATA) for d in out(client)] == [b"2", b"3"]


def test_a_refused_permission_drops_its_queue_and_says_so() -> None:
    client = allocated(auto_bind=False)
    client.send_to(b"1", PEER, now=0.0)
    client.send_to(b"2", PEER, now=0.0)
    feed(client, error(one_request(client), 403, reason="Forbidden IP"))
    assert events(client) == [
        PermissionFailed(
            request_id=None, peer_ips=(PEER.host,), code=403, reason="Forbidden IP", dropped=2
        )
    ]
    assert out(client) == []


def test_data_to_a_refused_peer_is_dropped_without_asking_again_for_a_while() -> None:
    client = allocated(auto_bind=False, permission_retry=30.0)
    client.send_to(b"1", PEER, now=0.0)
    feed(client, error(one_request(client), 403, reason="Forbidden IP"))
    events(client)
    client.send_to(b"2", PEER, now=10.0)
    assert out(client, 10.0) == []
    assert client.dropped == 2  # the queued one and this one
    client.send_to(b"3", PEER, now=31.0)
    assert one_request(client, 31.0).method == Method.CREATE_PERMISSION


def test_explicit_create_permission_retries_a_refused_peer_at_once() -> None:
    client = allocated(auto_bind=False)
    client.send_to(b"1", PEER, now=0.0)
    feed(client, error(one_request(client), 403))
    client.create_permission(PEER, now=1.0)
    assert one_request(client, 1.0).method == Method.CREATE_PERMISSION


def test_queued_data_older_than_the_queue_delay_is_dropped() -> None:
    client = allocated(auto_bind=False, max_queue_delay=5.0)
    client.send_to(b"old", PEER, now=0.0)
    client.send_to(b"new", PEER, now=4.0)
    feed(client, success(one_request(client)), now=6.0)
    assert [parse_message(d).get(at.DATA) for d in out(client, 6.0)] == [b"new"]
    assert client.dropped == 1


# -- channels --------------------------------------------------------------------------


def test_bind_channel_picks_numbers_from_0x4000_and_reports_the_binding() -> None:
    client = allocated()
    first = client.bind_channel(PEER, now=0.0)
    req = one_request(client)
    assert (req.get(tat.CHANNEL_NUMBER), req.get(at.XOR_PEER_ADDRESS)) == (0x4000, PEER)
    feed(client, success(req))
    assert events(client) == [ChannelBound(channel=0x4000, peer=PEER)]
    assert first == 0x4000 and client.bind_channel(PEER, now=0.0) == 0x4000
    assert client.bind_channel(PEER2, now=0.0) == 0x4001
    assert client.channels == {0x4000: PEER}
    assert client.permissions == (PEER.host,)  # ChannelBind installs the permission


def test_channel_bindings_are_refreshed_at_540_seconds() -> None:
    client = allocated(lifetime=3600)
    permitted(client, PEER)
    bound(client, PEER, now=10.0)
    client.handle_timer(now=240.0)
    feed(client, success(one_request(client)), 240.0)  # the permission
    client.handle_timer(now=480.0)
    feed(client, success(one_request(client)), 480.0)
    assert client.get_timer() == 550.0
    client.handle_timer(now=550.0)
    req = one_request(client, 550.0)
    assert (req.method, req.get(tat.CHANNEL_NUMBER)) == (Method.CHANNEL_BIND, 0x4000)
    feed(client, success(req), 550.0)
    assert events(client) == []  # a refresh, not a new binding
    assert client.get_timer() == 720.0  # the next permission refresh


def test_a_refused_channel_bind_is_reported_and_forgotten() -> None:
    client = allocated()
    client.bind_channel(PEER, now=0.0)
    feed(client, error(one_request(client), 400, reason="Bad Request"))
    assert events(client) == [
        ChannelBindFailed(channel=0x4000, peer=PEER, code=400, reason="Bad Request")
    ]
    assert client.channels == {}


def test_send_to_uses_channel_data_once_the_channel_is_bound() -> None:
    client = allocated()
    bound(client, PEER)
    client.send_to(b"hello", PEER, now=1.0)
    assert out(client) == [pack_channel_data(0x4000, b"hello")]
    assert client.sent_channel_data == 1


def test_channel_frame_is_the_hot_path_for_bound_peers_only() -> None:
    client = allocated(auto_bind=False)
    assert client.channel_frame(b"x", PEER) is None
    bound(client, PEER)
    assert client.channel_frame(b"x", PEER) == pack_channel_data(0x4000, b"x")
    assert out(client) == []
    assert client.sent_channel_data == 1


@pytest.mark.parametrize(
    ("payload", "wire_len"), [(b"", 4), (b"a", 8), (b"abcd", 8), (b"abcde", 12)]
)
def test_channel_data_is_padded_to_four_bytes_on_streams(payload: bytes, wire_len: int) -> None:
    client = allocated(stream=True)
    bound(client, PEER)
    client.send_to(payload, PEER, now=1.0)
    (wire,) = out(client)
    assert len(wire) == wire_len
    assert wire[4 : 4 + len(payload)] == payload


def test_channel_data_is_not_padded_over_udp() -> None:
    client = allocated()
    bound(client, PEER)
    client.send_to(b"a", PEER, now=1.0)
    assert out(client) == [b"\x40\x00\x00\x01a"]


def test_first_send_binds_a_channel_automatically_and_switches_to_it() -> None:
    client = allocated()
    client.send_to(b"first", PEER, now=0.0)
    perm, bind = requests(client)
    assert (perm.method, bind.method) == (Method.CREATE_PERMISSION, Method.CHANNEL_BIND)
    feed(client, success(perm))
    assert parse_message(out(client)[0]).get(at.DATA) == b"first"
    feed(client, success(bind))
    client.send_to(b"second", PEER, now=0.0)
    assert out(client) == [pack_channel_data(0x4000, b"second")]


def test_a_refused_auto_bind_is_not_retried_for_every_packet() -> None:
    client = allocated()
    client.send_to(b"1", PEER, now=0.0)
    perm, bind = requests(client)
    feed(client, success(perm))
    feed(client, error(bind, 508, reason="Insufficient Capacity"))
    out(client)
    client.send_to(b"2", PEER, now=1.0)
    (wire,) = out(client, 1.0)
    assert parse_message(wire).method == Method.SEND


def test_an_idle_auto_permission_takes_its_channel_with_it_and_send_starts_afresh() -> None:
    client = allocated(lifetime=3600)
    client.send_to(b"x", PEER, now=0.0)
    for req in requests(client):
        feed(client, success(req))
    events(client)
    client.handle_timer(now=240.0)  # the channel was used, so the permission is kept
    feed(client, success(one_request(client)), 240.0)
    client.handle_timer(now=480.0)  # idle since 240 s: permission and channel go
    assert (client.permissions, client.channels) == ((), {})
    client.send_to(b"again", PEER, now=500.0)
    perm, bind = requests(client, 500.0)
    assert perm.method == Method.CREATE_PERMISSION
    assert bind.get(tat.CHANNEL_NUMBER) == 0x4001  # 0x4000 is still tied to the old binding


def test_auto_bound_channels_expire_when_idle() -> None:
    client = allocated(lifetime=3600)
    client.send_to(b"x", PEER, now=0.0)
    for req in requests(client):
        feed(client, success(req))
    events(client)
    client.handle_timer(now=240.0)  # used: the permission is refreshed
    feed(client, success(one_request(client)), 240.0)
    client.handle_timer(now=480.0)  # idle since: dropped
    client.handle_timer(now=540.0)
    assert requests(client, 540.0) == []
    assert client.channels == {}


# -- incoming data ---------------------------------------------------------------------


def data_indication(peer: Endpoint, payload: bytes, tid: bytes = b"\x01" * 12) -> bytes:
    msg = StunMessage(Method.DATA, MessageClass.INDICATION, tid)
    msg.add(at.XOR_PEER_ADDRESS, peer).add(at.DATA, payload)
    return serialize_message(msg)


def test_data_indications_from_permitted_peers_become_data_received() -> None:
    client = allocated()
    permitted(client, PEER)
    feed(client, data_indication(PEER, b"hi"))
    assert events(client) == [DataReceived(peer=PEER, data=b"hi")]
    assert client.parse_incoming(data_indication(PEER, b"fast"), SERVER) == (PEER, b"fast")


def test_data_indications_with_other_attributes_take_the_general_path() -> None:
    client = allocated()
    permitted(client, PEER)
    msg = StunMessage(Method.DATA, MessageClass.INDICATION, b"\x04" * 12)
    msg.add(at.XOR_PEER_ADDRESS, PEER).add(at.DATA, b"hi").add(at.SOFTWARE, "x")
    assert client.parse_incoming(serialize_message(msg, fingerprint=True), SERVER) == (PEER, b"hi")


def test_data_indications_from_peers_without_permission_are_dropped() -> None:
    client = allocated()
    permitted(client, PEER)
    feed(client, data_indication(PEER2, b"hi"))
    assert events(client) == []
    assert client.parse_incoming(data_indication(PEER2, b"hi"), SERVER) is None


def test_channel_data_on_a_bound_channel_becomes_data_received() -> None:
    client = allocated()
    bound(client, PEER)
    feed(client, pack_channel_data(0x4000, b"abc", stream=True))
    assert events(client) == [DataReceived(peer=PEER, data=b"abc", channel=0x4000)]
    assert client.parse_incoming(pack_channel_data(0x4000, b"z"), SERVER) == (PEER, b"z")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(pack_channel_data(0x4001, b"abc"), id="unknown-channel"),
        pytest.param(b"\x40\x00\x00\x09abc", id="overrun"),
        pytest.param(b"\x40\x00", id="short"),
        pytest.param(b"\xff" * 40, id="not-turn"),
    ],
)
def test_bad_channel_data_is_dropped(data: bytes) -> None:
    client = allocated()
    bound(client, PEER)
    feed(client, data)
    assert events(client) == []
    assert client.parse_incoming(data, SERVER) is None


def test_datagrams_from_other_addresses_are_ignored() -> None:
    client = allocated()
    bound(client, PEER)
    feed(client, pack_channel_data(0x4000, b"abc"), addr=PEER)
    assert events(client) == []
    assert client.parse_incoming(pack_channel_data(0x4000, b"abc"), PEER) is None


def test_icmp_in_a_data_indication_is_reported() -> None:
    client = allocated()
    permitted(client, PEER)
    msg = StunMessage(Method.DATA, MessageClass.INDICATION, b"\x02" * 12)
    msg.add(at.XOR_PEER_ADDRESS, PEER).add(tat.ICMP, tat.IcmpValue(3, 3, 0))
    feed(client, serialize_message(msg))
    assert events(client) == [IcmpReceived(peer=PEER, icmp_type=3, icmp_code=3, error_data=0)]


def test_responses_to_unknown_transactions_are_dropped() -> None:
    client = allocated()
    stray = StunMessage.request(Method.REFRESH, b"\x07" * 12)
    feed(client, success(stray, (at.LIFETIME, 0)))
    feed(client, error(stray, 500))
    assert events(client) == []
    assert client.state is ClientState.ALLOCATED


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_never_raises(data: bytes) -> None:
    client = allocated()
    bound(client, PEER)
    feed(client, data)
    client.parse_incoming(data, SERVER)
    feed(client, b"\x00\x17" + data)  # looks like a Data indication
    client.parse_incoming(b"\x00\x17" + data, SERVER)
    events(client)
    assert client.state is ClientState.ALLOCATED


# -- RFC 6062 --------------------------------------------------------------------------


def tcp_allocated() -> TurnClient:
    client = make_client(stream=True)
    client.allocate(now=0.0, transport=TransportProtocol.TCP)
    req = authenticate(client)
    assert req.get(tat.REQUESTED_TRANSPORT) == TransportProtocol.TCP
    feed(client, success(req, (at.XOR_RELAYED_ADDRESS, RELAYED), (at.LIFETIME, 600)))
    events(client)
    return client


def test_connect_installs_a_permission_then_reports_the_connection_id() -> None:
    client = tcp_allocated()
    rid = client.connect(PEER, now=0.0)
    perm, connect = requests(client)
    assert perm.method == Method.CREATE_PERMISSION
    assert (connect.method, connect.get(at.XOR_PEER_ADDRESS)) == (Method.CONNECT, PEER)
    feed(client, success(perm))
    feed(client, success(connect, (tat.CONNECTION_ID, 77)))
    assert events(client)[-1] == PeerConnected(request_id=rid, connection_id=77, peer=PEER)


def test_a_failed_connect_is_reported() -> None:
    client = tcp_allocated()
    permitted(client, PEER)
    rid = client.connect(PEER, now=0.0)
    feed(client, error(one_request(client), 447, reason="Connection Timeout or Failure"))
    assert events(client) == [
        ConnectFailed(request_id=rid, peer=PEER, code=447, reason="Connection Timeout or Failure")
    ]


def test_connect_needs_a_tcp_allocation() -> None:
    with pytest.raises(LocalProtocolError):
        allocated().connect(PEER, now=0.0)


def test_connection_attempt_indications_are_reported() -> None:
    client = tcp_allocated()
    msg = StunMessage(Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, b"\x03" * 12)
    msg.add(tat.CONNECTION_ID, 5).add(at.XOR_PEER_ADDRESS, PEER)
    feed(client, serialize_message(msg))
    assert events(client) == [ConnectionAttempted(connection_id=5, peer=PEER)]


def test_binder_signs_connection_bind_with_the_control_auth_and_keeps_peer_bytes() -> None:
    control = tcp_allocated()
    binder = TurnConnectionBinder(SERVER, CREDS, 77, auth=control.auth)
    binder.start(now=0.0)
    req = parse_message(binder.data_to_send())
    assert (req.method, req.get(tat.CONNECTION_ID)) == (Method.CONNECTION_BIND, 77)
    assert (req.get(at.NONCE), verify_integrity(req, KEY)) == (NONCE, True)
    response = success(req)
    binder.receive_data(response[:7], now=0.1)
    binder.receive_data(response[7:] + b"peer bytes", now=0.1)
    assert binder.next_event() == DataConnectionBound(connection_id=77, data=b"peer bytes")
    assert binder.get_timer() is None


def test_binder_answers_a_stale_nonce_on_the_same_connection() -> None:
    control = tcp_allocated()
    binder = TurnConnectionBinder(SERVER, CREDS, 77, auth=control.auth)
    binder.start(now=0.0)
    req = parse_message(binder.data_to_send())
    binder.receive_data(error(req, 438, (at.NONCE, "nonce-3"), sign=False), now=0.1)
    retry = parse_message(binder.data_to_send())
    assert retry.get(at.NONCE) == "nonce-3"
    binder.receive_data(success(retry), now=0.2)
    assert isinstance(binder.next_event(), DataConnectionBound)


def test_binder_without_auth_answers_the_401_itself() -> None:
    binder = TurnConnectionBinder(SERVER, CREDS, 9)
    binder.start(now=0.0)
    first = parse_message(binder.data_to_send())
    assert not first.has(at.MESSAGE_INTEGRITY.type)
    binder.receive_data(challenge(first), now=0.0)
    signed = parse_message(binder.data_to_send())
    binder.receive_data(success(signed), now=0.0)
    assert binder.next_event() == DataConnectionBound(connection_id=9, data=b"")


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        pytest.param(lambda req: error(req, 400, reason="x"), 400, id="error"),
        pytest.param(lambda req: success(req, sign=False), None, id="unsigned-success"),
        pytest.param(lambda req: b"\xff" * 20, None, id="garbage"),
        pytest.param(lambda req: b"", None, id="closed"),
    ],
)
def test_binder_failures_are_reported(reply: Any, code: int | None) -> None:
    control = tcp_allocated()
    binder = TurnConnectionBinder(SERVER, CREDS, 77, auth=control.auth)
    binder.start(now=0.0)
    req = parse_message(binder.data_to_send())
    binder.receive_data(reply(req), now=0.1)
    event = binder.next_event()
    assert isinstance(event, DataConnectionFailed) and event.code == code


def test_binder_times_out() -> None:
    control = tcp_allocated()
    binder = TurnConnectionBinder(SERVER, CREDS, 77, auth=control.auth)
    binder.start(now=0.0)
    assert binder.get_timer() == 39.5
    binder.handle_timer(now=39.5)
    assert isinstance(binder.next_event(), DataConnectionFailed)


def test_no_credentials_means_unsigned_requests() -> None:
    client = make_client(creds=None)
    client.allocate(now=0.0)
    req = one_request(client)
    feed(client, success(req, (at.XOR_RELAYED_ADDRESS, RELAYED), sign=False))
    assert [type(e) for e in events(client)] == [Allocated]
    assert client.auth is None
