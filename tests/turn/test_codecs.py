"""TURN attribute and ChannelData codecs (RFC 8656 §12, §18; RFC 6062 §6.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.stun.attributes import AttrSpec
from natkit.turn import attributes as ta
from natkit.turn.channel import (
    is_channel_data,
    is_valid_channel,
    pack_channel_data,
    parse_channel_data,
)

TID = bytes(range(12))


@pytest.mark.parametrize(
    ("spec", "value", "wire"),
    [
        pytest.param(ta.CHANNEL_NUMBER, 0x4001, b"\x40\x01\x00\x00", id="channel-number"),
        pytest.param(ta.EVEN_PORT, True, b"\x80", id="even-port-reserve"),
        pytest.param(ta.EVEN_PORT, False, b"\x00", id="even-port"),
        pytest.param(ta.REQUESTED_TRANSPORT, 17, b"\x11\x00\x00\x00", id="udp"),
        pytest.param(ta.REQUESTED_TRANSPORT, 6, b"\x06\x00\x00\x00", id="tcp"),
        pytest.param(ta.DONT_FRAGMENT, True, b"", id="dont-fragment"),
        pytest.param(ta.RESERVATION_TOKEN, b"12345678", b"12345678", id="token"),
        pytest.param(ta.REQUESTED_ADDRESS_FAMILY, 2, b"\x02\x00\x00\x00", id="family"),
        pytest.param(ta.ADDITIONAL_ADDRESS_FAMILY, 2, b"\x02\x00\x00\x00", id="additional"),
        pytest.param(
            ta.ADDRESS_ERROR_CODE,
            ta.AddressErrorCode(2, 440, "no v6"),
            b"\x02\x00\x04\x28no v6",
            id="address-error",
        ),
        pytest.param(
            ta.ICMP, ta.IcmpValue(3, 3, 7), b"\x00\x00\x03\x03\x00\x00\x00\x07", id="icmp"
        ),
        pytest.param(ta.CONNECTION_ID, 0xDEADBEEF, b"\xde\xad\xbe\xef", id="connection-id"),
    ],
)
def test_attribute_round_trips_byte_exact(
    spec: AttrSpec[object], value: object, wire: bytes
) -> None:
    assert spec.encode(value, TID) == wire
    assert spec.decode(wire, TID) == value


@pytest.mark.parametrize(
    ("spec", "wire"),
    [
        pytest.param(ta.CHANNEL_NUMBER, b"\x40\x01", id="channel-short"),
        pytest.param(ta.EVEN_PORT, b"\x80\x00", id="even-port-long"),
        pytest.param(ta.REQUESTED_TRANSPORT, b"\x11", id="transport-short"),
        pytest.param(ta.DONT_FRAGMENT, b"\x00", id="dont-fragment-value"),
        pytest.param(ta.RESERVATION_TOKEN, b"1234567", id="token-short"),
        pytest.param(ta.REQUESTED_ADDRESS_FAMILY, b"\x01\x00", id="family-short"),
        pytest.param(ta.ADDRESS_ERROR_CODE, b"\x01\x00\x09\x00", id="address-error-class"),
        pytest.param(ta.ADDRESS_ERROR_CODE, b"\x01\x00\x04\x28\xff", id="address-error-utf8"),
        pytest.param(ta.ICMP, b"\x00" * 7, id="icmp-short"),
        pytest.param(ta.CONNECTION_ID, b"\x00" * 5, id="connection-id-long"),
    ],
)
def test_malformed_attribute_is_a_400(spec: AttrSpec[object], wire: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        spec.decode(wire, TID)
    assert info.value.error_code == 400


def test_channel_range_is_rfc_8656s() -> None:
    assert [is_valid_channel(n) for n in (0x3FFF, 0x4000, 0x4FFF, 0x5000, 0x7FFF)] == [
        False,
        True,
        True,
        False,
        False,
    ]


def test_channel_data_round_trip_and_udp_padding_is_ignored() -> None:
    msg = pack_channel_data(0x4000, b"abcde")
    assert msg == b"\x40\x00\x00\x05abcde"
    assert is_channel_data(msg)
    assert parse_channel_data(msg + b"\x00\x00\x00") == (0x4000, b"abcde")


def test_channel_data_on_streams_is_padded_to_four() -> None:
    assert pack_channel_data(0x4FFF, b"abcde", stream=True) == b"\x4f\xff\x00\x05abcde\x00\x00\x00"
    assert pack_channel_data(0x4FFF, b"abcd", stream=True) == b"\x4f\xff\x00\x04abcd"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x40\x00\x00", id="short-header"),
        pytest.param(b"\x40\x00\x00\x05abc", id="overrun"),
        pytest.param(b"\x50\x00\x00\x00", id="out-of-range"),
        pytest.param(b"\x7f\xff\x00\x00", id="rfc5766-range"),
    ],
)
def test_bad_channel_data_is_dropped_silently(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_channel_data(data)
    assert info.value.error_code is None


@settings(max_examples=300, derandomize=True)
@given(st.binary(max_size=80))
def test_channel_data_parser_never_raises_anything_else(data: bytes) -> None:
    try:
        number, payload = parse_channel_data(data)
    except MalformedMessageError:
        return
    assert is_valid_channel(number)
    assert data[4 : 4 + len(payload)] == payload


@settings(max_examples=200, derandomize=True)
@given(st.integers(0x4000, 0x4FFF), st.binary(max_size=300), st.booleans())
def test_channel_data_round_trips(number: int, payload: bytes, stream: bool) -> None:
    msg = pack_channel_data(number, payload, stream=stream)
    assert parse_channel_data(msg) == (number, payload)
    assert not stream or len(msg) % 4 == 0
