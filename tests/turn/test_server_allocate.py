"""Allocate (RFC 8656 §7.2, RFC 6156, RFC 6062 §5.1): every success and error path."""

from __future__ import annotations

from typing import Any

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import parse_message, serialize_message
from natkit.turn import attributes as tat
from natkit.turn.events import AllocationCreated, RelayReleased, RelayRequested

from .server_helpers import (
    CLIENT,
    RELAY_V4,
    RELAY_V6,
    SERVER,
    Client,
    code_of,
    make_server,
    relayed,
)


def _client(**overrides: Any) -> Client:
    _, driver = make_server(**overrides)
    return Client(driver)


def test_missing_requested_transport_is_400() -> None:
    c = _client()
    assert code_of(c.request(Method.ALLOCATE, [], now=0.0)) == 400


def test_unknown_transport_protocol_is_442() -> None:
    c = _client()
    assert code_of(c.allocate(0.0, protocol=99)) == 442


def test_tcp_relay_when_disabled_is_442() -> None:
    _, driver = make_server(tcp_relay=False)
    c = Client(driver, transport=Transport.TCP)
    assert code_of(c.allocate(0.0, protocol=6)) == 442


def test_tcp_relay_from_a_udp_client_is_400() -> None:
    c = _client()
    assert code_of(c.allocate(0.0, protocol=6)) == 400


def test_tcp_relay_with_even_port_is_400() -> None:
    _, driver = make_server()
    c = Client(driver, transport=Transport.TCP)
    assert code_of(c.allocate(0.0, [(tat.EVEN_PORT, False)], protocol=6)) == 400


def test_second_allocate_on_the_same_five_tuple_is_437() -> None:
    c = _client()
    assert code_of(c.allocate(0.0)) == 0
    assert code_of(c.allocate(1.0)) == 437


def test_retransmitted_allocate_gets_the_same_success_bytes() -> None:
    c = _client()
    c.allocate(0.0)  # learns the nonce
    c.refresh(0, now=0.5)
    data = c.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)])
    first = c.send_raw(data, 1.0)
    again = c.send_raw(data, 1.5)
    assert code_of(parse_message(first[0].data)) == 0
    assert [d.data for d in again] == [first[0].data]
    assert len(c.server.allocations()) == 1


def test_retransmission_while_sockets_are_being_opened_is_absorbed() -> None:
    c = _client()
    c.driver.auto_open = False
    c.request(Method.BINDING, now=0.0)
    c.nonce = None
    c.request(Method.REFRESH, now=0.0)  # 437, but learns the nonce
    data = c.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)])
    assert c.send_raw(data, 0.1) == []
    assert c.send_raw(data, 0.2) == []
    other = c.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)])
    assert code_of(parse_message(c.send_raw(other, 0.3)[0].data)) == 437
    (req,) = [e for e in c.driver.events if isinstance(e, RelayRequested)][-1:]
    c.server.relay_opened(req.request_id, req.relays, now=0.4)
    out = c.driver.pump(0.4)
    assert code_of(parse_message(out[0].data)) == 0


def test_lifetime_is_clamped_between_default_and_maximum() -> None:
    c = _client()
    assert c.allocate(0.0, [(at.LIFETIME, 30)]).get(at.LIFETIME) == 600
    c2 = Client(c.driver, client=Endpoint(CLIENT.host, 2))
    assert c2.allocate(0.0, [(at.LIFETIME, 99999)]).get(at.LIFETIME) == 3600
    c3 = Client(c.driver, client=Endpoint(CLIENT.host, 3))
    assert c3.allocate(0.0, [(at.LIFETIME, 1200)]).get(at.LIFETIME) == 1200


def test_per_user_quota_is_486() -> None:
    _, driver = make_server(max_allocations_per_user=1)
    assert code_of(Client(driver).allocate(0.0)) == 0
    second = Client(driver, client=Endpoint(CLIENT.host, 2))
    assert code_of(second.allocate(0.0)) == 486
    bob = Client(driver, client=Endpoint(CLIENT.host, 3), username="bob")
    assert code_of(bob.allocate(0.0)) == 0
    assert driver.server.stats.quota_rejections == 1


def test_total_quota_is_486_and_frees_on_delete() -> None:
    _, driver = make_server(max_allocations=1)
    first = Client(driver)
    assert code_of(first.allocate(0.0)) == 0
    bob = Client(driver, client=Endpoint(CLIENT.host, 3), username="bob")
    assert code_of(bob.allocate(0.0)) == 486
    first.refresh(0, now=1.0)
    assert code_of(bob.allocate(1.0)) == 0


def test_no_free_port_is_508() -> None:
    _, driver = make_server(min_port=61000, max_port=61000)
    assert code_of(Client(driver).allocate(0.0)) == 0
    assert code_of(Client(driver, client=Endpoint(CLIENT.host, 2)).allocate(0.0)) == 508


def test_failed_bind_is_retried_on_other_ports_then_508() -> None:
    _, driver = make_server()
    c = Client(driver)
    driver.fail_all = True
    assert code_of(c.allocate(0.0)) == 508
    requests = [e for e in driver.events if isinstance(e, RelayRequested)]
    assert len(requests) == 4
    assert len({r.relays[0].port for r in requests}) == 4
    assert driver.server.table_sizes()["ports"] == 0
    assert driver.server.table_sizes()["users"] == 0


def test_failed_bind_then_success_on_another_port() -> None:
    _, driver = make_server()
    c = Client(driver)
    first_port: list[int] = []
    driver.auto_open = False
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    (req,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    first_port.append(req.relays[0].port)
    driver.server.relay_failed(req.request_id, now=0.1)
    driver.pump(0.1)
    (retry,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    assert retry.relays[0].port != first_port[0]
    driver.server.relay_opened(retry.request_id, retry.relays, now=0.2)
    out = driver.pump(0.2)
    assert relayed(parse_message(out[0].data)) == list(retry.relays)


def test_driver_that_never_answers_gets_508_and_late_sockets_released() -> None:
    _, driver = make_server()
    c = Client(driver)
    driver.auto_open = False
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    (req,) = [e for e in driver.take_events() if isinstance(e, RelayRequested)]
    out = driver.advance(11.0)
    assert code_of(parse_message(out[0].data)) == 508
    driver.server.relay_opened(req.request_id, req.relays, now=12.0)
    driver.pump(12.0)
    assert RelayReleased(relay=req.relays[0], transport=Transport.UDP) in driver.events
    assert driver.server.table_sizes()["pending"] == 0


def test_alternate_server_answers_300_after_authentication() -> None:
    alt = Endpoint("192.0.2.99", 3478)
    c = _client(alternate_server=alt)
    resp = c.allocate(0.0)
    assert code_of(resp) == 300
    assert resp.get(at.ALTERNATE_SERVER) == alt
    assert c.verified(resp)
    assert c.server.allocations() == []


def test_requested_family_ipv6_gets_an_ipv6_relay() -> None:
    c = _client()
    resp = c.allocate(0.0, [(tat.REQUESTED_ADDRESS_FAMILY, Family.IPV6)])
    assert code_of(resp) == 0
    assert relayed(resp)[0].host == RELAY_V6


def test_requested_family_without_a_relay_ip_is_440() -> None:
    c = _client(relay_ips=(RELAY_V4,))
    assert code_of(c.allocate(0.0, [(tat.REQUESTED_ADDRESS_FAMILY, Family.IPV6)])) == 440


def test_unknown_requested_family_is_440() -> None:
    c = _client()
    assert code_of(c.allocate(0.0, [(tat.REQUESTED_ADDRESS_FAMILY, 7)])) == 440


def test_ipv6_only_server_without_requested_family_is_440() -> None:
    c = _client(relay_ips=(RELAY_V6,))
    assert code_of(c.allocate(0.0)) == 440


def test_dual_allocation_gets_both_families() -> None:
    c = _client()
    resp = c.allocate(0.0, [(tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6)])
    assert code_of(resp) == 0
    assert [r.host for r in relayed(resp)] == [RELAY_V4, RELAY_V6]
    assert resp.get(tat.ADDRESS_ERROR_CODE) is None


def test_dual_allocation_without_ipv6_reports_address_error_code() -> None:
    c = _client(relay_ips=(RELAY_V4,))
    resp = c.allocate(0.0, [(tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6)])
    assert code_of(resp) == 0
    assert [r.host for r in relayed(resp)] == [RELAY_V4]
    err = resp.get(tat.ADDRESS_ERROR_CODE)
    assert err is not None and err.family == Family.IPV6 and err.code == 440


@pytest.mark.parametrize(
    "attrs",
    [
        pytest.param([(tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV4)], id="additional-ipv4"),
        pytest.param(
            [
                (tat.REQUESTED_ADDRESS_FAMILY, Family.IPV4),
                (tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6),
            ],
            id="requested-and-additional",
        ),
        pytest.param(
            [(tat.RESERVATION_TOKEN, b"12345678"), (tat.EVEN_PORT, False)], id="token-and-even"
        ),
        pytest.param(
            [(tat.RESERVATION_TOKEN, b"12345678"), (tat.REQUESTED_ADDRESS_FAMILY, Family.IPV4)],
            id="token-and-family",
        ),
        pytest.param(
            [(tat.EVEN_PORT, True), (tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6)],
            id="reserve-and-dual",
        ),
    ],
)
def test_conflicting_attributes_are_400(attrs: list[tuple[object, object]]) -> None:
    c = _client()
    assert code_of(c.allocate(0.0, attrs)) == 400  # type: ignore[arg-type]


def test_unknown_reservation_token_is_508() -> None:
    c = _client()
    assert code_of(c.allocate(0.0, [(tat.RESERVATION_TOKEN, b"nosuchtk")])) == 508


def test_even_port_gives_an_even_port() -> None:
    c = _client()
    resp = c.allocate(0.0, [(tat.EVEN_PORT, False)])
    assert relayed(resp)[0].port % 2 == 0
    assert resp.get(tat.RESERVATION_TOKEN) is None


def test_even_port_with_r_reserves_the_next_port_for_a_token() -> None:
    c = _client()
    resp = c.allocate(0.0, [(tat.EVEN_PORT, True)])
    relay = relayed(resp)[0]
    token = resp.get(tat.RESERVATION_TOKEN)
    assert relay.port % 2 == 0 and token is not None and len(token) == 8
    (req,) = [e for e in c.driver.events if isinstance(e, RelayRequested)]
    assert req.reserve == Endpoint(RELAY_V4, relay.port + 1)
    other = Client(c.driver, client=Endpoint(CLIENT.host, 2))
    resp2 = other.allocate(1.0, [(tat.RESERVATION_TOKEN, token)])
    assert code_of(resp2) == 0
    assert relayed(resp2) == [Endpoint(RELAY_V4, relay.port + 1)]
    third = Client(c.driver, client=Endpoint(CLIENT.host, 3))
    assert code_of(third.allocate(2.0, [(tat.RESERVATION_TOKEN, token)])) == 508


def test_unused_reservation_is_released_after_30_seconds() -> None:
    c = _client()
    resp = c.allocate(0.0, [(tat.EVEN_PORT, True)])
    held = Endpoint(RELAY_V4, relayed(resp)[0].port + 1)
    c.driver.advance(29.0)
    assert RelayReleased(relay=held, transport=Transport.UDP) not in c.driver.events
    c.driver.advance(30.5)
    assert RelayReleased(relay=held, transport=Transport.UDP) in c.driver.events
    assert c.server.table_sizes()["reservations"] == 0
    token = resp.get(tat.RESERVATION_TOKEN)
    other = Client(c.driver, client=Endpoint(CLIENT.host, 2))
    assert code_of(other.allocate(31.0, [(tat.RESERVATION_TOKEN, token)])) == 508


def test_dont_fragment_is_accepted() -> None:
    c = _client()
    assert code_of(c.allocate(0.0, [(tat.DONT_FRAGMENT, True)])) == 0


def test_external_ip_is_advertised_for_a_private_relay() -> None:
    c = _client(relay_ips=("10.0.0.5",), external_ips={"10.0.0.5": "198.51.100.200"})
    resp = c.allocate(0.0)
    relay = relayed(resp)[0]
    assert relay.host == "198.51.100.200"
    (req,) = [e for e in c.driver.events if isinstance(e, RelayRequested)]
    assert req.relays[0] == Endpoint("10.0.0.5", relay.port)
    (created,) = [e for e in c.driver.events if isinstance(e, AllocationCreated)]
    assert created.relays == (relay,)
    assert c.server.allocations()[0].relays == (relay,)


def test_unknown_comprehension_required_attribute_is_a_signed_420() -> None:
    c = _client()
    c.allocate(0.0)
    c.refresh(0, now=0.1)
    msg_attrs = [(tat.REQUESTED_TRANSPORT, 17)]
    raw = c.build(Method.ALLOCATE, msg_attrs)
    # Rebuild with an extra unknown attribute 0x7777 before the integrity.
    from natkit.stun.message import StunMessage

    m = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, c.tid())
    m.add(tat.REQUESTED_TRANSPORT, 17)
    m.add_raw(0x7777, b"abcd")
    m.add(at.USERNAME, c.username).add(at.REALM, c.realm).add(at.NONCE, c.nonce or "")
    assert c.offered is not None and c.algorithm is not None
    from natkit.stun.attributes import PasswordAlgorithmParams
    from natkit.stun.message import Integrity

    m.add(at.PASSWORD_ALGORITHMS, c.offered)
    m.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(c.algorithm))
    raw = serialize_message(m, key=c.key, integrity=Integrity.SHA256)
    resp = parse_message(c.send_raw(raw, 1.0)[0].data)
    assert code_of(resp) == 420
    assert resp.get(at.UNKNOWN_ATTRIBUTES) == (0x7777,)
    assert c.verified(resp)


def test_binding_request_is_answered_without_authentication() -> None:
    c = _client()
    out = c.send_raw(c.build(Method.BINDING, sign=False, fingerprint=True), 0.0)
    resp = parse_message(out[0].data)
    assert resp.message_class == MessageClass.SUCCESS
    assert resp.get(at.XOR_MAPPED_ADDRESS) == CLIENT
    assert resp.has_fingerprint


def test_unknown_method_is_400() -> None:
    c = _client()
    out = c.send_raw(c.build(0x0555, sign=False), 0.0)
    assert code_of(parse_message(out[0].data)) == 400


def test_other_user_on_an_allocation_is_441() -> None:
    _, driver = make_server()
    alice = Client(driver)
    alice.allocate(0.0)
    mallory = Client(driver, username="bob")
    assert code_of(mallory.refresh(now=1.0)) == 441


def test_responses_go_back_from_the_local_address_they_arrived_at() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    assert all(d.local == SERVER and d.remote == CLIENT for d in driver.sent)


def test_driver_reporting_no_sockets_opened_is_a_failure_and_retried() -> None:
    _, driver = make_server()
    c = Client(driver)
    driver.auto_open = False
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    (req,) = driver.take_events(RelayRequested)
    driver.server.relay_opened(req.request_id, (), now=0.1)
    driver.pump(0.1)
    (retry,) = driver.take_events(RelayRequested)
    assert retry.relays != req.relays


def test_dual_allocation_when_no_ipv6_port_is_free_is_508() -> None:
    _, driver = make_server(min_port=61000, max_port=61000)
    v6 = Client(driver, client=Endpoint(CLIENT.host, 2))
    assert code_of(v6.allocate(0.0, [(tat.REQUESTED_ADDRESS_FAMILY, Family.IPV6)])) == 0
    dual = Client(driver)
    assert code_of(dual.allocate(0.0, [(tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6)])) == 508
    assert driver.server.table_sizes()["ports"] == 1  # the IPv4 port picked first went back


def test_even_port_in_a_range_without_an_even_pair_is_508() -> None:
    c = _client(min_port=61001, max_port=61002)
    assert code_of(c.allocate(0.0, [(tat.EVEN_PORT, True)])) == 508
    c2 = _client(min_port=61001, max_port=61001)
    assert code_of(c2.allocate(0.0, [(tat.EVEN_PORT, False)])) == 508


def test_port_scan_finds_the_last_free_port() -> None:
    _, driver = make_server(min_port=61000, max_port=61003)
    ports = set()
    for i in range(4):
        resp = Client(driver, client=Endpoint(CLIENT.host, 10 + i)).allocate(0.0)
        ports.add(relayed(resp)[0].port)
    assert ports == {61000, 61001, 61002, 61003}


def test_failed_even_port_with_reservation_is_retried_with_a_new_pair() -> None:
    _, driver = make_server()
    c = Client(driver)
    driver.auto_open = False
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17), (tat.EVEN_PORT, True)], now=0.0)
    (req,) = driver.take_events(RelayRequested)
    driver.server.relay_failed(req.request_id, now=0.1)
    driver.pump(0.1)
    (retry,) = driver.take_events(RelayRequested)
    assert retry.reserve is not None and retry.relays[0].port % 2 == 0
    assert retry.reserve.port == retry.relays[0].port + 1
    assert driver.server.table_sizes()["ports"] == 2


def test_reservation_consumed_by_an_allocate_that_times_out_is_released() -> None:
    c = _client()
    token = c.allocate(0.0, [(tat.EVEN_PORT, True)]).get(tat.RESERVATION_TOKEN)
    (first,) = c.driver.take_events(RelayRequested)
    c.driver.auto_open = False
    other = Client(c.driver, client=Endpoint(CLIENT.host, 2))
    other.request(
        Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17), (tat.RESERVATION_TOKEN, token)], now=1.0
    )
    (req,) = c.driver.take_events(RelayRequested)
    assert req.relays == (first.reserve,)
    out = c.driver.advance(12.0)
    assert code_of(parse_message(out[0].data)) == 508
    assert RelayReleased(relay=first.reserve, transport=Transport.UDP) in c.driver.events


def test_shutdown_cancels_pending_allocates() -> None:
    c = _client()
    c.driver.auto_open = False
    c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    (req,) = c.driver.take_events(RelayRequested)
    c.server.shutdown(now=1.0)
    c.server.relay_opened(req.request_id, req.relays, now=1.5)
    c.driver.pump(1.5)
    assert RelayReleased(relay=req.relays[0], transport=Transport.UDP) in c.driver.events
    assert all(v == 0 for v in c.server.table_sizes().values())


def test_malformed_attribute_after_authentication_is_a_signed_400() -> None:
    c = _client()
    c.allocate(0.0)
    m_attrs = [(tat.REQUESTED_TRANSPORT, 17)]
    del m_attrs
    from natkit.stun.attributes import PasswordAlgorithmParams
    from natkit.stun.message import Integrity, StunMessage

    m = StunMessage(Method.CHANNEL_BIND, MessageClass.REQUEST, c.tid())
    m.add_raw(0x000C, b"\x40\x00\x00")  # CHANNEL-NUMBER of 3 bytes
    m.add(at.XOR_PEER_ADDRESS, Endpoint("203.0.113.7", 1))
    m.add(at.USERNAME, c.username).add(at.REALM, c.realm).add(at.NONCE, c.nonce or "")
    assert c.offered is not None
    m.add(at.PASSWORD_ALGORITHMS, c.offered)
    m.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(2))
    resp = parse_message(
        c.send_raw(serialize_message(m, key=c.key, integrity=Integrity.SHA256), 1.0)[0].data
    )
    assert code_of(resp) == 400 and c.verified(resp)


def test_a_bug_in_a_credential_source_is_contained() -> None:
    from natkit.stun.constants import PasswordAlgorithm
    from natkit.turn.credentials import CredentialSource

    class Broken(CredentialSource):
        def keys(
            self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
        ) -> tuple[bytes, ...]:
            raise RuntimeError("store down")

    server, driver = make_server(credentials=Broken())
    c = Client(driver)
    resp = c.request(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)
    assert resp is None  # dropped, counted, not raised
    assert server.stats.internal_errors == 1
    out = c.send_raw(c.build(Method.BINDING, sign=False), 1.0)
    assert code_of(parse_message(out[0].data)) == 0  # still serving
