"""RTP codec (RFC 3550 §5.1, RFC 8285) with hand-built wire bytes."""

from __future__ import annotations

import pytest

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rtp.packet import (
    ONE_BYTE_PROFILE,
    ExtensionElement,
    RtpHeaderFields,
    RtpPacket,
    parse_rtp,
    peek_rtp_header,
    serialize_rtp,
)

# V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304
SIMPLE = bytes.fromhex("80801234deadbeef01020304") + b"abc"


def test_parse_fixed_header_fields() -> None:
    packet = parse_rtp(SIMPLE)
    assert packet == RtpPacket(
        payload_type=0,
        sequence_number=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"abc",
        marker=True,
    )


def test_serialize_is_the_inverse_of_parse_for_the_simple_packet() -> None:
    assert serialize_rtp(parse_rtp(SIMPLE)) == SIMPLE


def test_csrc_list_is_read() -> None:
    data = bytes.fromhex("82000001000000020000000300000000aaaaaaaa") + b"p"
    packet = parse_rtp(data)
    assert packet.csrcs == (0, 0xAAAAAAAA)
    assert packet.payload == b"p"
    assert serialize_rtp(packet) == data


def test_padding_is_stripped_and_counted() -> None:
    data = bytes.fromhex("a0000001000000020000000300") + b"pay" + b"\x00\x00\x03"
    packet = parse_rtp(data)
    assert packet.payload == bytes.fromhex("00") + b"pay"
    assert packet.padding == 3
    assert serialize_rtp(packet) == data


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes.fromhex("a00000010000000200000003") + b"\x00", id="zero-count"),
        pytest.param(bytes.fromhex("a00000010000000200000003") + b"\x05", id="count-into-header"),
        pytest.param(bytes.fromhex("400000010000000200000003"), id="version-1"),
        pytest.param(bytes.fromhex("80000001000000020000"), id="short-header"),
        pytest.param(bytes.fromhex("830000010000000200000003000000ff"), id="csrc-overrun"),
        pytest.param(bytes.fromhex("9000000100000002000000030000"), id="extension-header-cut"),
        pytest.param(bytes.fromhex("90000001000000020000000300000002aaaaaaaa"), id="ext-overrun"),
    ],
)
def test_malformed_packets_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_rtp(data)
    assert info.value.error_code is None


def test_one_byte_extension_elements_with_padding_and_stop_id() -> None:
    # profile 0xBEDE, 2 words: id1 len1 "\x11", pad byte, id2 len2 "\x22\x33", then ID 15 stops.
    body = bytes.fromhex("10 11 00 21 2233 f0 00".replace(" ", ""))
    data = bytes.fromhex("900000010000000200000003") + bytes.fromhex("bede0002") + body + b"P"
    packet = parse_rtp(data)
    assert packet.extension_profile == ONE_BYTE_PROFILE
    assert packet.extensions == (ExtensionElement(1, b"\x11"), ExtensionElement(2, b"\x22\x33"))
    assert packet.payload == b"P"


def test_two_byte_extension_keeps_appbits_and_allows_empty_values() -> None:
    body = bytes.fromhex("0100 0203616263 00")  # id1 empty, id2 "abc", pad
    data = bytes.fromhex("900000010000000200000003") + bytes.fromhex("100a0002") + body
    packet = parse_rtp(data)
    assert packet.extension_profile == 0x100A
    assert packet.extensions == (ExtensionElement(1, b""), ExtensionElement(2, b"abc"))
    assert parse_rtp(serialize_rtp(packet)) == packet


@pytest.mark.parametrize(
    ("profile", "body"),
    [
        pytest.param("bede0001", "3f000000", id="one-byte-overrun"),
        pytest.param("10000001", "000000ff", id="two-byte-truncated-length"),
        pytest.param("10000001", "0105aabb", id="two-byte-overrun"),
    ],
)
def test_malformed_rfc8285_extensions_are_rejected(profile: str, body: str) -> None:
    data = bytes.fromhex("900000010000000200000003" + profile + body)
    with pytest.raises(MalformedMessageError):
        parse_rtp(data)


def test_other_extension_profiles_stay_opaque() -> None:
    data = bytes.fromhex("900000010000000200000003" + "abcd0001" + "01020304")
    packet = parse_rtp(data)
    assert packet.extension_profile == 0xABCD
    assert packet.extension_data == bytes.fromhex("01020304")
    assert packet.extensions == ()
    assert serialize_rtp(packet) == data


def test_serialize_one_byte_extension_pads_to_a_word() -> None:
    packet = RtpPacket(
        payload_type=96,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        extension_profile=ONE_BYTE_PROFILE,
        extensions=(ExtensionElement(5, b"\x01\x02"),),
    )
    data = serialize_rtp(packet)
    assert data[12:16] == bytes.fromhex("bede0001")
    assert data[16:20] == bytes.fromhex("51010200")


def _packet(**changes: object) -> RtpPacket:
    fields: dict[str, object] = {"payload_type": 0, "sequence_number": 0, "timestamp": 0, "ssrc": 0}
    fields.update(changes)
    return RtpPacket(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"payload_type": 128}, id="pt"),
        pytest.param({"sequence_number": 1 << 16}, id="seq"),
        pytest.param({"csrcs": (0,) * 16}, id="cc"),
        pytest.param({"csrcs": (-1,)}, id="csrc"),
        pytest.param(
            {"extension_profile": ONE_BYTE_PROFILE, "extensions": (ExtensionElement(15, b"x"),)},
            id="one-byte-id-15",
        ),
        pytest.param(
            {"extension_profile": 0x1000, "extensions": (ExtensionElement(1, bytes(256)),)},
            id="two-byte-too-long",
        ),
        pytest.param(
            {"extension_profile": 0x1234, "extension_data": b"abc"}, id="opaque-unaligned"
        ),
        pytest.param({"extension_profile": 1 << 16}, id="profile"),
        pytest.param({"padding": 256}, id="pad"),
        pytest.param(
            {"extension_profile": 0x1234, "extension_data": bytes(4 << 16)}, id="ext-long"
        ),
    ],
)
def test_unencodable_packets_raise_local_protocol_error(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        serialize_rtp(_packet(**changes))


def test_peek_reads_the_fixed_header() -> None:
    assert peek_rtp_header(SIMPLE) == RtpHeaderFields(0, True, 0x1234, 0xDEADBEEF, 0x01020304)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(SIMPLE[:11], id="short"),
        pytest.param(b"\x00" + SIMPLE[1:], id="version-0"),
        pytest.param(b"", id="empty"),
    ],
)
def test_peek_returns_none_for_non_rtp(data: bytes) -> None:
    assert peek_rtp_header(data) is None
