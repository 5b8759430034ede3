"""NatPmpServer (RFC 6886) against a fake box: answers, result codes, the
box calls behind them, and the epoch."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.nat.portmap import natpmp
from natkit.nat.portmap.natpmp import MapRequest, MapResponse, NatPmpResult
from natkit.nat.portmap.server import NatPmpServer, NatPmpServerConfig
from natkit.packet import IpProto

from .fakes import CLIENT, CLIENT_IP, PUBLIC_IP, FakeBox, ask


def map_req(
    port: int = 5000, *, suggested: int = 0, lifetime: int = 7200, proto: IpProto = IpProto.UDP
) -> bytes:
    return natpmp.serialize_request(
        MapRequest(
            proto=proto, internal_port=port, suggested_external_port=suggested, lifetime=lifetime
        )
    )


def one(
    server: NatPmpServer, data: bytes, now: float = 10.0, src: Endpoint = CLIENT
) -> natpmp.NatPmpResponse:
    (answer,) = ask(server, data, now=now, src=src)
    return natpmp.parse_response(answer)


def test_external_address_with_epoch_from_server_start() -> None:
    server = NatPmpServer(FakeBox(), now=1000.0)
    assert one(server, b"\x00\x00", now=1042.7) == natpmp.ExternalAddressResponse(
        result=NatPmpResult.SUCCESS, epoch=42, address=PUBLIC_IP
    )


def test_no_public_address_is_network_failure() -> None:
    box = FakeBox(public=[])
    server = NatPmpServer(box, now=0.0)
    assert one(server, b"\x00\x00").result == NatPmpResult.NETWORK_FAILURE
    assert one(server, map_req()).result == NatPmpResult.NETWORK_FAILURE


def test_ipv6_public_addresses_are_skipped() -> None:
    server = NatPmpServer(FakeBox(public=["2001:db8::1", PUBLIC_IP]), now=0.0)
    response = one(server, b"\x00\x00")
    assert isinstance(response, natpmp.ExternalAddressResponse)
    assert response.address == PUBLIC_IP


def test_map_creates_the_mapping_for_the_source_host() -> None:
    box = FakeBox()
    server = NatPmpServer(box, now=0.0)
    assert one(server, map_req(suggested=6000)) == MapResponse(
        proto=IpProto.UDP,
        result=NatPmpResult.SUCCESS,
        epoch=10,
        internal_port=5000,
        external_port=6000,
        lifetime=7200,
    )
    assert box.calls == [("add", IpProto.UDP, Endpoint(CLIENT_IP, 5000), 6000, 7200)]


def test_taken_suggestion_falls_back_to_any_port() -> None:
    box = FakeBox(taken={6000}, strict=True)
    server = NatPmpServer(box, now=0.0)
    response = one(server, map_req(suggested=6000))
    assert isinstance(response, MapResponse) and response.external_port == 40000
    assert [c[3] for c in box.calls] == [6000, None]


def test_rerequest_refreshes_and_keeps_the_port() -> None:
    box = FakeBox()
    server = NatPmpServer(box, now=0.0)
    first = one(server, map_req(), now=1.0)
    again = one(server, map_req(suggested=7777), now=2.0)
    assert isinstance(first, MapResponse) and isinstance(again, MapResponse)
    assert again.external_port == first.external_port
    assert box.calls[-1][3] == first.external_port


def test_lifetime_is_capped() -> None:
    box = FakeBox()
    server = NatPmpServer(box, NatPmpServerConfig(max_lifetime=600), now=0.0)
    response = one(server, map_req(lifetime=7200))
    assert isinstance(response, MapResponse) and response.lifetime == 600
    assert box.calls[0][4] == 600


def test_refused_mapping_is_out_of_resources() -> None:
    server = NatPmpServer(FakeBox(refuse=True), now=0.0)
    response = one(server, map_req())
    assert response == MapResponse(
        proto=IpProto.UDP,
        result=NatPmpResult.OUT_OF_RESOURCES,
        epoch=10,
        internal_port=5000,
        external_port=0,
        lifetime=0,
    )


def test_internal_port_zero_with_lifetime_is_refused() -> None:
    server = NatPmpServer(FakeBox(), now=0.0)
    assert one(server, map_req(port=0)).result == NatPmpResult.NOT_AUTHORIZED


def test_per_client_quota() -> None:
    server = NatPmpServer(FakeBox(), NatPmpServerConfig(max_mappings_per_client=2), now=0.0)
    assert one(server, map_req(5000)).result == NatPmpResult.SUCCESS
    assert one(server, map_req(5001)).result == NatPmpResult.SUCCESS
    assert one(server, map_req(5002)).result == NatPmpResult.OUT_OF_RESOURCES
    # Other hosts have their own quota; a refresh is not a new mapping.
    other = Endpoint("192.168.1.11", 50000)
    assert one(server, map_req(5002), src=other).result == NatPmpResult.SUCCESS
    assert one(server, map_req(5000)).result == NatPmpResult.SUCCESS


def test_expired_grants_free_the_quota() -> None:
    server = NatPmpServer(FakeBox(), NatPmpServerConfig(max_mappings_per_client=1), now=0.0)
    assert one(server, map_req(5000, lifetime=100), now=0.0).result == NatPmpResult.SUCCESS
    assert one(server, map_req(5001), now=50.0).result == NatPmpResult.OUT_OF_RESOURCES
    assert one(server, map_req(5001), now=101.0).result == NatPmpResult.SUCCESS


def test_delete_removes_the_mapping() -> None:
    box = FakeBox()
    server = NatPmpServer(box, now=0.0)
    one(server, map_req())
    response = one(server, map_req(lifetime=0))
    assert response == MapResponse(
        proto=IpProto.UDP,
        result=NatPmpResult.SUCCESS,
        epoch=10,
        internal_port=5000,
        external_port=0,
        lifetime=0,
    )
    assert box.mappings == {}


def test_delete_all_of_a_protocol_with_internal_port_zero() -> None:
    box = FakeBox()
    server = NatPmpServer(box, now=0.0)
    for port in (5000, 5001):
        one(server, map_req(port))
    one(server, map_req(5000, proto=IpProto.TCP))
    one(server, map_req(port=0, lifetime=0))
    assert list(box.mappings) == [(IpProto.TCP, Endpoint(CLIENT_IP, 5000))]


def test_unsupported_version_gets_the_short_answer() -> None:
    server = NatPmpServer(FakeBox(), now=0.0)
    (answer,) = ask(server, b"\x02\x01" + b"\x00" * 58, now=5.0)
    assert answer == bytes.fromhex("0081 0001 00000005")


def test_unsupported_opcode_gets_the_short_answer() -> None:
    server = NatPmpServer(FakeBox(), now=0.0)
    (answer,) = ask(server, b"\x00\x03", now=5.0)
    assert answer == bytes.fromhex("0083 0005 00000005")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="one-byte"),
        pytest.param(b"\x00\x80", id="a-response"),
        pytest.param(map_req()[:11], id="truncated-map"),
        pytest.param(b"\x00\x00\x00", id="long-address-request"),
    ],
)
def test_what_is_not_a_request_is_dropped(data: bytes) -> None:
    server = NatPmpServer(FakeBox(), now=0.0)
    assert ask(server, data, now=1.0) == []


def test_server_core_has_no_timers_or_events() -> None:
    server = NatPmpServer(FakeBox(), now=0.0)
    assert server.get_timer() is None
    server.handle_timer(now=1.0)
    server.next_event()  # a server reports nothing


def test_expired_grant_is_not_renewed_as_such() -> None:
    box = FakeBox(taken=set())
    server = NatPmpServer(box, now=0.0)
    one(server, map_req(lifetime=10), now=0.0)
    box.mappings.clear()  # the box expired it too
    box.taken.add(40000)
    response = one(server, map_req(), now=20.0)
    # A live grant would have asked the box for its old port 40000 again.
    assert box.calls[-1][3] is None
    assert isinstance(response, MapResponse) and response.external_port == 40001
