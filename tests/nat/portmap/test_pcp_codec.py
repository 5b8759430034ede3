"""PCP codec (RFC 6887 §7, §11-14): layouts built from the RFC's figures,
IPv4-mapped addresses, options, and the result code each malformation earns."""

from __future__ import annotations

import pytest

from natkit.errors import MalformedMessageError
from natkit.nat.portmap import pcp
from natkit.nat.portmap.pcp import (
    MapData,
    PcpOpcode,
    PcpOption,
    PcpOptionCode,
    PcpRequest,
    PcpResponse,
    PcpResult,
    PeerData,
)

NONCE = bytes(range(1, 13))
V4_MAPPED_CLIENT = "00000000000000000000ffff c0a8010a"  # ::ffff:192.168.1.10
V4_ANY = "00000000000000000000ffff 00000000"  # ::ffff:0.0.0.0
V4_PUBLIC = "00000000000000000000ffff cb007107"  # ::ffff:203.0.113.7

# §7.1 header + §11.1 MAP: version 2, opcode 1, lifetime 7200, client
# 192.168.1.10; nonce 01..0c, protocol 17, internal 5000, any port, any IPv4.
MAP_REQUEST = bytes.fromhex(
    "02 01 0000 00001c20" + V4_MAPPED_CLIENT + NONCE.hex() + "11 000000 1388 0000" + V4_ANY
)
# §7.2 header + §11.2: R bit, result 0, lifetime 7200, epoch 3600, 96 reserved
# bits; assigned port 40000 on 203.0.113.7.
MAP_RESPONSE = bytes.fromhex(
    "02 81 00 00 00001c20 00000e10" + "00" * 12 + NONCE.hex() + "11 000000 1388 9c40" + V4_PUBLIC
)
# §14.1: ANNOUNCE request is the bare header with lifetime 0.
ANNOUNCE_REQUEST = bytes.fromhex("02 00 0000 00000000" + V4_MAPPED_CLIENT)


def map_request(**changes: object) -> PcpRequest:
    fields: dict[str, object] = {
        "opcode": PcpOpcode.MAP,
        "lifetime": 7200,
        "client_ip": "192.168.1.10",
        "data": MapData(
            nonce=NONCE, protocol=17, internal_port=5000, external_port=0, external_ip="0.0.0.0"
        ),
    }
    fields.update(changes)
    return PcpRequest(**fields)  # type: ignore[arg-type]


def test_map_request_layout() -> None:
    assert len(MAP_REQUEST) == pcp.HEADER_LEN + pcp.MAP_DATA_LEN == 60
    assert pcp.serialize_request(map_request()) == MAP_REQUEST
    assert pcp.parse_request(MAP_REQUEST) == map_request()


def test_map_response_layout() -> None:
    msg = PcpResponse(
        opcode=PcpOpcode.MAP,
        result=PcpResult.SUCCESS,
        lifetime=7200,
        epoch=3600,
        data=MapData(
            nonce=NONCE,
            protocol=17,
            internal_port=5000,
            external_port=40000,
            external_ip="203.0.113.7",
        ),
    )
    assert pcp.serialize_response(msg) == MAP_RESPONSE
    assert pcp.parse_response(MAP_RESPONSE) == msg


def test_announce_request_is_the_bare_header() -> None:
    msg = PcpRequest(opcode=PcpOpcode.ANNOUNCE, lifetime=0, client_ip="192.168.1.10")
    assert pcp.serialize_request(msg) == ANNOUNCE_REQUEST
    assert pcp.parse_request(ANNOUNCE_REQUEST) == msg


def test_response_reserved_bits_are_ignored() -> None:
    data = bytearray(MAP_RESPONSE)
    data[2] = 0xFF
    data[12:24] = b"\xff" * 12
    assert pcp.parse_response(bytes(data)) == pcp.parse_response(MAP_RESPONSE)


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        pytest.param("192.0.2.1", "00000000000000000000ffffc0000201", id="ipv4-mapped"),
        pytest.param("0.0.0.0", "00000000000000000000ffff00000000", id="any-ipv4"),
        pytest.param("::", "00" * 16, id="any-ipv6"),
        pytest.param("2001:db8::1", "20010db8000000000000000000000001", id="ipv6"),
    ],
)
def test_address_fields_are_128_bits_with_ipv4_mapped(text: str, wire: str) -> None:
    assert pcp.encode_ip(text) == bytes.fromhex(wire)
    assert pcp.decode_ip(bytes.fromhex(wire)) == text


def test_mapped_text_decodes_to_dotted_ipv4() -> None:
    assert pcp.decode_ip(pcp.encode_ip("::ffff:198.51.100.4")) == "198.51.100.4"


def test_ipv6_client_round_trips() -> None:
    msg = map_request(client_ip="2001:db8::10")
    assert pcp.parse_request(pcp.serialize_request(msg)) == msg


def test_prefer_failure_option_layout() -> None:
    msg = map_request(options=(pcp.prefer_failure(),))
    data = pcp.serialize_request(msg)
    assert data[60:] == bytes.fromhex("02 00 0000")
    assert pcp.parse_request(data) == msg
    assert pcp.parse_request(data).option(PcpOptionCode.PREFER_FAILURE) == pcp.prefer_failure()


def test_third_party_option_layout() -> None:
    data = pcp.serialize_request(map_request(options=(pcp.third_party("192.168.1.20"),)))
    assert data[60:] == bytes.fromhex("01 00 0010 00000000000000000000ffff c0a80114")


def test_filter_option_layout_and_parse() -> None:
    opt = pcp.filter_option(32, 3478, "198.51.100.1")
    data = pcp.serialize_request(map_request(options=(opt,)))
    assert data[60:] == bytes.fromhex("03 00 0014 00 20 0d96 00000000000000000000ffff c6336401")
    parsed = pcp.parse_request(data).options[0]
    assert pcp.parse_filter(parsed) == pcp.FilterOption(
        prefix_length=32, remote_peer_port=3478, remote_peer_ip="198.51.100.1"
    )


def test_parse_filter_rejects_other_options() -> None:
    with pytest.raises(MalformedMessageError):
        pcp.parse_filter(pcp.prefer_failure())


def test_unknown_option_data_is_padded_to_four_octets() -> None:
    opt = PcpOption(200, b"\xaa")
    data = pcp.serialize_request(map_request(options=(opt,)))
    assert data[60:] == bytes.fromhex("c8 00 0001 aa000000")
    assert pcp.parse_request(data).options == (opt,)
    assert not opt.mandatory and pcp.prefer_failure().mandatory


def test_peer_request_round_trips() -> None:
    data = PeerData(
        nonce=NONCE,
        protocol=6,
        internal_port=5000,
        external_port=0,
        external_ip="0.0.0.0",
        remote_peer_port=443,
        remote_peer_ip="198.51.100.9",
    )
    msg = map_request(opcode=PcpOpcode.PEER, data=data)
    wire = pcp.serialize_request(msg)
    assert len(wire) == pcp.HEADER_LEN + pcp.PEER_DATA_LEN
    assert pcp.parse_request(wire) == msg


def test_unknown_opcode_keeps_its_data_raw() -> None:
    wire = bytes.fromhex("02 05 0000 00000000" + V4_MAPPED_CLIENT + "deadbeef")
    msg = pcp.parse_request(wire)
    assert msg.opcode == 5 and msg.data == bytes.fromhex("deadbeef") and msg.options == ()
    response = PcpResponse(
        opcode=5, result=PcpResult.UNSUPP_OPCODE, lifetime=1800, epoch=1, data=msg.data
    )
    assert pcp.parse_response(pcp.serialize_response(response)) == response


def test_error_response_may_carry_a_truncated_copy() -> None:
    response = PcpResponse(
        opcode=PcpOpcode.MAP,
        result=PcpResult.MALFORMED_REQUEST,
        lifetime=1800,
        epoch=1,
        data=NONCE,
    )
    assert pcp.parse_response(pcp.serialize_response(response)) == response


def test_error_response_with_full_copy_decodes_the_map_data() -> None:
    data = bytearray(MAP_RESPONSE)
    data[3] = PcpResult.NO_RESOURCES
    msg = pcp.parse_response(bytes(data))
    assert msg.result == PcpResult.NO_RESOURCES
    assert isinstance(msg.data, MapData) and msg.data.nonce == NONCE


def test_unknown_result_is_kept_as_a_number() -> None:
    data = bytearray(MAP_RESPONSE)
    data[3] = 99
    assert pcp.parse_response(bytes(data)).result == 99


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(MAP_REQUEST[:23], PcpResult.MALFORMED_REQUEST, id="shorter-than-header"),
        pytest.param(MAP_REQUEST[:58], PcpResult.MALFORMED_REQUEST, id="not-multiple-of-4"),
        pytest.param(MAP_REQUEST[:56], PcpResult.MALFORMED_REQUEST, id="short-map-data"),
        pytest.param(
            MAP_REQUEST + b"\x00" * 1044, PcpResult.MALFORMED_REQUEST, id="over-1100-octets"
        ),
        pytest.param(b"\x01" + MAP_REQUEST[1:], PcpResult.UNSUPP_VERSION, id="version-1"),
        pytest.param(b"\x00\x00", PcpResult.UNSUPP_VERSION, id="natpmp-request"),
        pytest.param(b"\x02\x81" + MAP_REQUEST[2:], None, id="r-bit"),
        pytest.param(b"\x02", None, id="one-octet"),
        pytest.param(
            MAP_REQUEST + bytes.fromhex("02 00 0004 00000000"),
            PcpResult.MALFORMED_OPTION,
            id="prefer-failure-with-data",
        ),
        pytest.param(
            MAP_REQUEST + bytes.fromhex("c8 00 0008 00000000"),
            PcpResult.MALFORMED_OPTION,
            id="option-overruns",
        ),
    ],
)
def test_malformed_requests_name_their_result(data: bytes, code: int | None) -> None:
    with pytest.raises(MalformedMessageError) as info:
        pcp.parse_request(data)
    assert info.value.error_code == code


def test_exactly_1100_octets_is_accepted() -> None:
    padding = PcpOption(200, b"\x00" * (1100 - 60 - 4))
    data = pcp.serialize_request(map_request(options=(padding,)))
    assert len(data) == 1100
    assert pcp.parse_request(data).options == (padding,)


def test_every_truncated_response_is_rejected() -> None:
    for n in range(len(MAP_RESPONSE)):
        with pytest.raises(MalformedMessageError):
            pcp.parse_response(MAP_RESPONSE[:n])


def test_response_without_r_bit_is_rejected() -> None:
    with pytest.raises(MalformedMessageError) as info:
        pcp.parse_response(MAP_REQUEST)
    assert info.value.error_code is None


@pytest.mark.parametrize(
    "msg",
    [
        pytest.param(map_request(opcode=128), id="opcode"),
        pytest.param(map_request(lifetime=2**32), id="lifetime"),
        pytest.param(
            map_request(
                data=MapData(
                    nonce=b"x", protocol=17, internal_port=1, external_port=0, external_ip="::"
                )
            ),
            id="nonce",
        ),
        pytest.param(map_request(data=b"abc"), id="raw-not-multiple-of-4"),
        pytest.param(map_request(opcode=PcpOpcode.PEER), id="map-data-peer-opcode"),
        pytest.param(map_request(options=(PcpOption(300),)), id="option-code"),
        pytest.param(map_request(options=(PcpOption(200, b"\x00" * 1100),)), id="too-large"),
    ],
)
def test_unencodable_requests_raise_value_error(msg: PcpRequest) -> None:
    with pytest.raises(ValueError):
        pcp.serialize_request(msg)


def test_peer_data_needs_peer_opcode() -> None:
    data = PeerData(
        nonce=NONCE,
        protocol=6,
        internal_port=1,
        external_port=0,
        external_ip="::",
        remote_peer_port=1,
        remote_peer_ip="::",
    )
    with pytest.raises(ValueError):
        pcp.serialize_request(map_request(data=data))


@pytest.mark.parametrize(
    ("result", "long"),
    [
        (PcpResult.NOT_AUTHORIZED, True),
        (PcpResult.MALFORMED_REQUEST, True),
        (PcpResult.UNSUPP_OPCODE, True),
        (PcpResult.ADDRESS_MISMATCH, True),
        (PcpResult.NETWORK_FAILURE, False),
        (PcpResult.NO_RESOURCES, False),
        (PcpResult.USER_EX_QUOTA, False),
        (PcpResult.CANNOT_PROVIDE_EXTERNAL, False),
        (PcpResult.SUCCESS, False),
    ],
)
def test_error_lifetime_classes(result: PcpResult, long: bool) -> None:
    assert pcp.is_long_lifetime_error(result) is long


def test_response_option_lookup() -> None:
    msg = PcpResponse(
        opcode=PcpOpcode.ANNOUNCE, result=0, lifetime=0, epoch=0, options=(PcpOption(200),)
    )
    assert msg.option(200) == PcpOption(200) and msg.option(2) is None
    assert pcp.opcode_data_length(PcpOpcode.ANNOUNCE) == 0
    assert pcp.opcode_data_length(PcpOpcode.PEER) == 56
    assert pcp.opcode_data_length(77) is None
