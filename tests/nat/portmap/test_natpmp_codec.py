"""NAT-PMP codec (RFC 6886 §3): byte layouts built from the RFC's figures,
round trips, and rejection of everything else."""

from __future__ import annotations

import pytest

from natkit.errors import MalformedMessageError
from natkit.nat.portmap import natpmp
from natkit.nat.portmap.natpmp import (
    ExternalAddressRequest,
    ExternalAddressResponse,
    MapRequest,
    MapResponse,
    NatPmpErrorResponse,
    NatPmpResult,
)
from natkit.packet import IpProto

# §3.2: Vers = 0, OP = 0.
ADDR_REQUEST = bytes.fromhex("0000")
# §3.3: Vers 0, OP 1 (UDP), Reserved 0, internal 5000, suggested 6000, lifetime 7200.
MAP_REQUEST = bytes.fromhex("0001 0000 1388 1770 00001c20")
# §3.2: Vers 0, OP 128, result 0, epoch 3600, 203.0.113.7.
ADDR_RESPONSE = bytes.fromhex("0080 0000 00000e10 cb007107")
# §3.3: Vers 0, OP 130 (TCP), result 0, epoch 3600, internal 5000, mapped 40000, lifetime 7200.
MAP_RESPONSE = bytes.fromhex("0082 0000 00000e10 1388 9c40 00001c20")
# §3.5: the 8-byte answer to a version it does not speak: OP 128 + 1, result 1.
UNSUPPORTED_VERSION = bytes.fromhex("0081 0001 00000005")


def test_external_address_request_is_two_bytes() -> None:
    assert natpmp.serialize_request(ExternalAddressRequest()) == ADDR_REQUEST
    assert natpmp.parse_request(ADDR_REQUEST) == ExternalAddressRequest()


def test_map_request_layout() -> None:
    msg = MapRequest(
        proto=IpProto.UDP, internal_port=5000, suggested_external_port=6000, lifetime=7200
    )
    assert natpmp.serialize_request(msg) == MAP_REQUEST
    assert natpmp.parse_request(MAP_REQUEST) == msg


def test_map_request_reserved_field_is_ignored_on_reception() -> None:
    data = bytearray(MAP_REQUEST)
    data[2:4] = b"\xbe\xef"
    assert natpmp.parse_request(bytes(data)) == natpmp.parse_request(MAP_REQUEST)


def test_tcp_map_request_uses_opcode_2() -> None:
    msg = MapRequest(proto=IpProto.TCP, internal_port=1, suggested_external_port=0, lifetime=0)
    assert natpmp.serialize_request(msg)[:2] == b"\x00\x02"


def test_external_address_response_layout() -> None:
    msg = ExternalAddressResponse(result=NatPmpResult.SUCCESS, epoch=3600, address="203.0.113.7")
    assert natpmp.serialize_response(msg) == ADDR_RESPONSE
    assert natpmp.parse_response(ADDR_RESPONSE) == msg


def test_map_response_layout() -> None:
    msg = MapResponse(
        proto=IpProto.TCP,
        result=NatPmpResult.SUCCESS,
        epoch=3600,
        internal_port=5000,
        external_port=40000,
        lifetime=7200,
    )
    assert natpmp.serialize_response(msg) == MAP_RESPONSE
    assert natpmp.parse_response(MAP_RESPONSE) == msg


def test_short_error_response_layout() -> None:
    msg = NatPmpErrorResponse(opcode=1, result=NatPmpResult.UNSUPPORTED_VERSION, epoch=5)
    assert natpmp.serialize_response(msg) == UNSUPPORTED_VERSION
    assert natpmp.parse_response(UNSUPPORTED_VERSION) == msg


def test_unknown_result_code_is_kept_as_a_number() -> None:
    data = bytes.fromhex("0081 0063 00000005")
    msg = natpmp.parse_response(data)
    assert msg.result == 99
    assert not isinstance(msg.result, NatPmpResult)


def test_error_in_full_form_is_accepted() -> None:
    data = bytes.fromhex("0080 0003 00000001 00000000")
    msg = natpmp.parse_response(data)
    assert msg == ExternalAddressResponse(
        result=NatPmpResult.NETWORK_FAILURE, epoch=1, address="0.0.0.0"
    )


@pytest.mark.parametrize(
    "data",
    [ADDR_RESPONSE, MAP_RESPONSE, UNSUPPORTED_VERSION],
    ids=["address", "map", "short-error"],
)
def test_every_truncated_response_is_rejected(data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(MalformedMessageError) as info:
            natpmp.parse_response(data[:n])
        assert info.value.error_code is None


@pytest.mark.parametrize("data", [ADDR_REQUEST, MAP_REQUEST], ids=["address", "map"])
def test_every_truncated_request_is_rejected(data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(MalformedMessageError):
            natpmp.parse_request(data[:n])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(ADDR_REQUEST + b"\x00", id="address-request-too-long"),
        pytest.param(MAP_REQUEST + b"\x00\x00", id="map-request-too-long"),
        pytest.param(b"\x02\x00", id="pcp-version"),
        pytest.param(b"\x00\x03", id="unknown-opcode"),
        pytest.param(b"\x00\x80", id="response-opcode"),
    ],
)
def test_bad_requests_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        natpmp.parse_request(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x01" + ADDR_RESPONSE[1:], id="version-1"),
        pytest.param(b"\x00\x00" + ADDR_RESPONSE[2:], id="request-opcode"),
        pytest.param(ADDR_RESPONSE + b"\x00", id="too-long"),
        pytest.param(bytes.fromhex("0081 0000 00000005"), id="short-success"),
        pytest.param(bytes.fromhex("0083 0000 00000005 00000000"), id="unknown-op-success"),
    ],
)
def test_bad_responses_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        natpmp.parse_response(data)


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(
            MapRequest(
                proto=IpProto.UDP, internal_port=70000, suggested_external_port=0, lifetime=1
            ),
            id="port",
        ),
        pytest.param(
            MapRequest(proto=IpProto.UDP, internal_port=1, suggested_external_port=0, lifetime=-1),
            id="lifetime",
        ),
        pytest.param(
            MapRequest(proto=IpProto.ICMP, internal_port=1, suggested_external_port=0, lifetime=1),
            id="icmp",
        ),
    ],
)
def test_out_of_range_requests_cannot_be_serialized(msg: MapRequest) -> None:
    with pytest.raises(ValueError):
        natpmp.serialize_request(msg)


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(
            ExternalAddressResponse(result=70000, epoch=0, address="1.2.3.4"), id="result"
        ),
        pytest.param(ExternalAddressResponse(result=0, epoch=-1, address="1.2.3.4"), id="epoch"),
        pytest.param(NatPmpErrorResponse(opcode=128, result=1, epoch=0), id="opcode"),
        pytest.param(
            MapResponse(
                proto=IpProto.UDP,
                result=0,
                epoch=0,
                internal_port=1,
                external_port=1,
                lifetime=2**32,
            ),
            id="lifetime",
        ),
    ],
)
def test_out_of_range_responses_cannot_be_serialized(msg: natpmp.NatPmpResponse) -> None:
    with pytest.raises(ValueError):
        natpmp.serialize_response(msg)


def test_opcode_and_proto_helpers_agree() -> None:
    for proto in (IpProto.UDP, IpProto.TCP):
        assert natpmp.proto_for(natpmp.opcode_for(proto)) == proto
