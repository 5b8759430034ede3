"""Refresh, CreatePermission and ChannelBind (RFC 8656 §8, §9, §11) with lifetimes on timers."""

from __future__ import annotations

from typing import Any

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data
from natkit.turn.events import AllocationDeleted, RelayReleased

from .server_helpers import PEER, PEER2, PEER_V6, Client, code_of, make_server, relayed


def _allocated(**overrides: Any) -> tuple[Client, Endpoint]:
    _, driver = make_server(**overrides)
    c = Client(driver)
    return c, relayed(c.allocate(0.0))[0]


def _deleted(c: Client) -> list[AllocationDeleted]:
    return [e for e in c.driver.events if isinstance(e, AllocationDeleted)]


def test_allocation_expires_on_its_timer() -> None:
    c, relay = _allocated()
    assert c.server.get_timer() is not None
    c.driver.advance(599.0)
    assert _deleted(c) == []
    c.driver.advance(600.0)
    (gone,) = _deleted(c)
    assert gone.reason == "expired"
    assert RelayReleased(relay=relay, transport=Transport.UDP) in c.driver.events
    assert c.server.allocations() == []


def test_refresh_extends_the_lifetime() -> None:
    c, _ = _allocated()
    resp = c.refresh(now=500.0)
    assert code_of(resp) == 0 and resp.get(at.LIFETIME) == 600
    c.driver.advance(600.0)
    assert _deleted(c) == []
    c.driver.advance(1100.0)
    assert len(_deleted(c)) == 1


def test_refresh_can_shorten_the_lifetime() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0, [(at.LIFETIME, 3600)])
    c.refresh(600, now=10.0)
    driver.advance(611.0)
    assert len(_deleted(c)) == 1


def test_refresh_without_allocation_is_437() -> None:
    _, driver = make_server()
    assert code_of(Client(driver).refresh(now=0.0)) == 437


def test_refresh_with_a_family_the_allocation_lacks_is_443() -> None:
    c, _ = _allocated()
    resp = c.request(Method.REFRESH, [(tat.REQUESTED_ADDRESS_FAMILY, Family.IPV6)], now=1.0)
    assert code_of(resp) == 443


def test_retransmitted_refresh_gets_the_same_answer() -> None:
    c, _ = _allocated()
    data = c.build(Method.REFRESH, [(at.LIFETIME, 700)])
    first = c.send_raw(data, 1.0)
    again = c.send_raw(data, 2.0)
    assert [d.data for d in again] == [d.data for d in first]


def test_permission_expires_after_300_seconds() -> None:
    c, _ = _allocated()
    c.permit(PEER, now=0.0)
    assert c.send_indication(PEER, b"a", 299.0) != []
    c.driver.advance(300.0)
    assert c.send_indication(PEER, b"a", 300.0) == []
    assert c.server.table_sizes()["permissions"] == 0


def test_permission_refresh_keeps_it() -> None:
    c, _ = _allocated()
    c.permit(PEER, now=0.0)
    c.permit(PEER, now=200.0)
    c.driver.advance(350.0)
    assert c.send_indication(PEER, b"a", 350.0) != []


def test_create_permission_with_several_peers() -> None:
    c, _ = _allocated()
    assert code_of(c.permit(PEER, PEER2, now=0.0)) == 0
    assert {d.remote for d in c.send_indication(PEER, b"a") + c.send_indication(PEER2, b"b")} == {
        PEER,
        PEER2,
    }


def test_create_permission_without_peer_is_400() -> None:
    c, _ = _allocated()
    assert code_of(c.request(Method.CREATE_PERMISSION, [], now=0.0)) == 400


def test_create_permission_without_allocation_is_437() -> None:
    _, driver = make_server()
    assert code_of(Client(driver).permit(PEER)) == 437


def test_create_permission_for_the_other_family_is_443() -> None:
    c, _ = _allocated()
    assert code_of(c.permit(PEER, PEER_V6)) == 443
    assert c.send_indication(PEER, b"a") == []  # all or nothing


def test_dual_allocation_relays_each_family_from_its_own_address() -> None:
    _, driver = make_server()
    c = Client(driver)
    v4, v6 = relayed(c.allocate(0.0, [(tat.ADDITIONAL_ADDRESS_FAMILY, Family.IPV6)]))
    assert code_of(c.permit(PEER, PEER_V6)) == 0
    assert c.send_indication(PEER, b"a")[0].local == v4
    assert c.send_indication(PEER_V6, b"b")[0].local == v6
    assert code_of(c.request(Method.REFRESH, [(tat.REQUESTED_ADDRESS_FAMILY, 2)], now=1.0)) == 0


def test_ipv6_peer_data_indication_round_trip() -> None:
    _, driver = make_server()
    c = Client(driver)
    (v6,) = relayed(c.allocate(0.0, [(tat.REQUESTED_ADDRESS_FAMILY, Family.IPV6)]))
    c.permit(PEER_V6)
    c.server.receive_peer_datagram(b"six", PEER_V6, relay=v6, now=1.0)
    (ind,) = c.responses(driver.pump(1.0))
    assert ind.get(at.XOR_PEER_ADDRESS) == PEER_V6 and ind.get(at.DATA) == b"six"


@pytest.mark.parametrize("number", [0x3FFF, 0x8000, 0x0000, 0xFFFF])
def test_channel_number_out_of_range_is_400(number: int) -> None:
    c, _ = _allocated()
    assert code_of(c.bind(number, PEER)) == 400


@pytest.mark.parametrize("number", [0x5000, 0x5DDE, 0x7FFF])
def test_rfc5766_channel_numbers_are_accepted_by_default(number: int) -> None:
    c, relay = _allocated()
    assert code_of(c.bind(number, PEER)) == 0  # coturn's turnutils_uclient uses them
    assert c.channel_data(number, b"x")[0].remote == PEER
    c.server.receive_peer_datagram(b"y", PEER, relay=relay, now=1.0)
    assert c.driver.pump(1.0)[0].data == pack_channel_data(number, b"y")


@pytest.mark.parametrize("number", [0x5000, 0x7FFF])
def test_rfc8656_channel_range_only_when_configured(number: int) -> None:
    c, _ = _allocated(rfc5766_channels=False)
    assert code_of(c.bind(number, PEER)) == 400
    assert code_of(c.bind(0x4FFF, PEER)) == 0


def test_channel_bind_without_attributes_is_400() -> None:
    c, _ = _allocated()
    assert code_of(c.request(Method.CHANNEL_BIND, [(tat.CHANNEL_NUMBER, 0x4000)], now=0)) == 400
    assert code_of(c.request(Method.CHANNEL_BIND, [(at.XOR_PEER_ADDRESS, PEER)], now=0)) == 400


def test_channel_bind_without_allocation_is_437() -> None:
    _, driver = make_server()
    assert code_of(Client(driver).bind(0x4000, PEER)) == 437


def test_channel_bind_for_the_other_family_is_443() -> None:
    c, _ = _allocated()
    assert code_of(c.bind(0x4000, PEER_V6)) == 443


def test_channel_bound_to_another_peer_is_400() -> None:
    c, _ = _allocated()
    assert code_of(c.bind(0x4000, PEER)) == 0
    assert code_of(c.bind(0x4000, PEER2)) == 400


def test_peer_bound_to_another_channel_is_400() -> None:
    c, _ = _allocated()
    assert code_of(c.bind(0x4000, PEER)) == 0
    assert code_of(c.bind(0x4001, PEER)) == 400


def test_same_port_other_ip_is_another_peer() -> None:
    c, _ = _allocated()
    assert code_of(c.bind(0x4000, PEER)) == 0
    assert code_of(c.bind(0x4001, Endpoint(PEER.host, PEER.port + 1))) == 0


def test_channel_bind_installs_a_permission() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER)
    assert c.send_indication(PEER, b"a") != []
    assert c.server.allocations()[0].permissions == (PEER.host,)


def test_rebinding_refreshes_the_channel_and_the_permission() -> None:
    c, _relay = _allocated()
    c.bind(0x4000, PEER, now=0.0)
    c.refresh(now=250.0)
    assert code_of(c.bind(0x4000, PEER, now=250.0)) == 0
    c.refresh(now=500.0)
    c.driver.advance(650.0)
    assert c.channel_data(0x4000, b"x", 650.0) == []  # permission (300 s) ran out at 550
    c.bind(0x4000, PEER, now=651.0)
    assert c.channel_data(0x4000, b"x", 652.0)[0].remote == PEER
    assert c.server.allocations()[0].channels == {0x4000: PEER}


def test_channel_expires_after_600_seconds_and_is_quarantined_5_minutes() -> None:
    c, relay = _allocated()
    c.bind(0x4000, PEER, now=0.0)
    for t in (280.0, 560.0, 840.0, 1120.0):
        c.refresh(now=t)
        c.permit(PEER, now=t)
    c.driver.advance(600.0)
    assert c.channel_data(0x4000, b"x", 600.0) == []
    c.server.receive_peer_datagram(b"p", PEER, relay=relay, now=600.0)
    (ind,) = c.responses(c.driver.pump(600.0))  # no channel: a Data indication
    assert ind.method == Method.DATA
    assert code_of(c.bind(0x4000, PEER2, now=700.0)) == 400
    assert code_of(c.bind(0x4001, PEER, now=700.0)) == 400
    c.driver.advance(900.0)
    assert c.server.table_sizes()["channels"] == 0
    assert code_of(c.bind(0x4000, PEER2, now=900.0)) == 0
    assert code_of(c.bind(0x4001, PEER, now=900.0)) == 0


def test_expired_channel_can_be_rebound_to_the_same_peer_at_once() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER, now=0.0)
    c.refresh(now=500.0)
    c.driver.advance(601.0)
    assert code_of(c.bind(0x4000, PEER, now=601.0)) == 0
    assert c.channel_data(0x4000, b"x", 602.0) != []


def test_channel_data_on_unbound_channel_is_dropped() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER)
    assert c.channel_data(0x4001, b"x") == []
    assert c.server.stats.dropped == 1


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x40\x00\x00\x10abc", id="truncated"),
        pytest.param(b"\x40\x00", id="short-header"),
        pytest.param(b"\x50\x00\x00\x01a", id="unbound-rfc5766-number"),
        pytest.param(b"\x7f\xff\x00\x01a", id="unbound-top-number"),
    ],
)
def test_bad_channel_data_is_dropped(data: bytes) -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER)
    before = c.server.stats.dropped
    assert c.send_raw(data, 1.0) == []
    assert c.server.stats.dropped == before + 1


def test_channel_data_padding_from_udp_client_is_ignored() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER)
    out = c.send_raw(pack_channel_data(0x4000, b"abc") + b"\x00", 1.0)
    assert out[0].data == b"abc"


def test_send_indication_without_data_is_dropped() -> None:
    c, _ = _allocated()
    c.permit(PEER)
    from natkit.stun.constants import MessageClass

    raw = c.build(
        Method.SEND, [(at.XOR_PEER_ADDRESS, PEER)], sign=False, cls=MessageClass.INDICATION
    )
    assert c.send_raw(raw, 1.0) == []
    raw = c.build(Method.SEND, [(at.DATA, b"x")], sign=False, cls=MessageClass.INDICATION)
    assert c.send_raw(raw, 1.0) == []


def test_send_indication_without_allocation_is_dropped() -> None:
    _, driver = make_server()
    assert Client(driver).send_indication(PEER, b"x") == []


def test_icmp_error_is_reported_with_a_data_indication() -> None:
    c, relay = _allocated()
    c.server.peer_icmp(relay, PEER, icmp_type=3, icmp_code=3, now=1.0)
    assert c.driver.pump(1.0) == []  # no permission: nothing
    c.permit(PEER, now=1.0)
    c.server.peer_icmp(relay, PEER, icmp_type=3, icmp_code=4, error_data=1400, now=2.0)
    (ind,) = c.responses(c.driver.pump(2.0))
    assert ind.method == Method.DATA and ind.get(at.DATA) is None
    assert ind.get(at.XOR_PEER_ADDRESS) == PEER
    icmp = ind.get(tat.ICMP)
    assert icmp is not None and (icmp.icmp_type, icmp.icmp_code, icmp.error_data) == (3, 4, 1400)
    c.server.peer_icmp(Endpoint("192.0.2.10", 1), PEER, icmp_type=3, icmp_code=3, now=2.0)
    assert c.driver.pump(2.0) == []


def test_rebound_channel_outlives_its_first_quarantine() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER, now=0.0)
    for t in (280.0, 560.0, 840.0):
        c.refresh(now=t)
        c.bind(0x4000, PEER, now=t)
    c.driver.advance(901.0)  # first deadline (600 + 300) passes: re-armed, not dropped
    assert c.channel_data(0x4000, b"x", 901.0) != []


def test_refresh_with_the_allocations_own_family_succeeds() -> None:
    c, _ = _allocated()
    assert code_of(c.request(Method.REFRESH, [(tat.REQUESTED_ADDRESS_FAMILY, 1)], now=1.0)) == 0
    assert code_of(c.request(Method.REFRESH, [(tat.REQUESTED_ADDRESS_FAMILY, 9)], now=1.0)) == 443


def test_send_indication_to_the_other_family_or_malformed_is_dropped() -> None:
    from natkit.stun.constants import MessageClass

    c, _ = _allocated()
    c.permit(PEER)
    assert c.send_indication(PEER_V6, b"x") == []
    raw = c.build(Method.SEND, [(at.DATA, b"x")], sign=False, cls=MessageClass.INDICATION)
    bad = raw[:2] + (len(raw) - 20 + 8).to_bytes(2, "big") + raw[4:] + b"\x00\x12\x00\x04abcd"
    assert c.send_raw(bad, 1.0) == []
    truncated = raw[:2] + (len(raw) - 20 + 8).to_bytes(2, "big") + raw[4:] + b"\x00\x13\x00\x10abcd"
    assert c.send_raw(truncated, 1.0) == []
    assert c.server.stats.dropped == 3


def test_oversized_peer_datagram_is_dropped() -> None:
    c, relay = _allocated()
    c.permit(PEER)
    assert c.server.relay_peer_packet(bytes(65520), PEER, relay, 1.0) is None
    c.server.receive_peer_datagram(bytes(65520), PEER, relay=relay, now=1.0)
    assert c.driver.pump(1.0) == []


def test_kick_with_permissions_and_channels_empties_everything() -> None:
    c, _ = _allocated()
    c.bind(0x4000, PEER)
    c.permit(PEER2)
    (info,) = c.server.allocations()
    c.server.kick(info.allocation_id, now=1.0)
    assert all(
        v == 0
        for k, v in c.server.table_sizes().items()
        if k not in ("timers", "queued_events", "queued_datagrams")
    )
