"""The STUN codec: header, message type, integrity rules, attribute codecs, bad input."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.attributes import ChangeRequest, ErrorCodeValue, PasswordAlgorithmParams
from natkit.stun.constants import (
    FINGERPRINT_XOR,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    AttributeType,
    MessageClass,
    Method,
    PasswordAlgorithm,
)
from natkit.stun.message import (
    MAX_ATTRIBUTES,
    Attribute,
    Integrity,
    StunMessage,
    is_stun_message,
    message_type,
    parse_message,
    serialize_message,
    split_message_type,
    verify_integrity,
)

TID = bytes(range(1, 13))
CLASSIC_TID = bytes(range(100, 116))
KEY = b"secret key"
A = AttributeType


def _binding(*attrs: tuple[int, bytes]) -> StunMessage:
    msg = StunMessage.request(Method.BINDING, TID)
    for atype, value in attrs:
        msg.add_raw(atype, value)
    return msg


def _append_raw(data: bytes, atype: int, value: bytes) -> bytes:
    """Append an attribute after whatever ``data`` already has, fixing the length."""
    out = data + struct.pack("!HH", atype, len(value)) + value + bytes(-len(value) & 3)
    return out[:2] + (len(out) - 20).to_bytes(2, "big") + out[4:]


def _with_fingerprint(data: bytes) -> bytes:
    """Append a correct FINGERPRINT to ``data``."""
    patched = data[:2] + (len(data) - 20 + 8).to_bytes(2, "big") + data[4:]
    crc = (zlib.crc32(patched) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    return _append_raw(data, A.FINGERPRINT, crc.to_bytes(4, "big"))


def _with_sha256(data: bytes, key: bytes, length: int) -> bytes:
    """Append MESSAGE-INTEGRITY-SHA256 truncated to ``length`` bytes."""
    patched = data[:2] + (len(data) - 20 + 4 + length).to_bytes(2, "big") + data[4:]
    mac = hmac.new(key, patched, hashlib.sha256).digest()[:length]
    return _append_raw(data, A.MESSAGE_INTEGRITY_SHA256, mac)


# -- message type ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "cls", "wire"),
    [
        pytest.param(Method.BINDING, MessageClass.REQUEST, 0x0001, id="binding-request"),
        pytest.param(Method.BINDING, MessageClass.INDICATION, 0x0011, id="binding-indication"),
        pytest.param(Method.BINDING, MessageClass.SUCCESS, 0x0101, id="binding-success"),
        pytest.param(Method.BINDING, MessageClass.ERROR, 0x0111, id="binding-error"),
        pytest.param(Method.ALLOCATE, MessageClass.ERROR, 0x0113, id="allocate-error"),
        pytest.param(Method.SEND, MessageClass.INDICATION, 0x0016, id="send-indication"),
        pytest.param(Method.DATA, MessageClass.INDICATION, 0x0017, id="data-indication"),
        pytest.param(Method.CHANNEL_BIND, MessageClass.SUCCESS, 0x0109, id="channel-bind-ok"),
        pytest.param(
            Method.CONNECTION_ATTEMPT, MessageClass.INDICATION, 0x001C, id="connection-attempt"
        ),
        pytest.param(0xFFF, MessageClass.REQUEST, 0x3EEF, id="all-method-bits"),
        pytest.param(0x000, MessageClass.ERROR, 0x0110, id="all-class-bits"),
    ],
)
def test_message_type_interleaves_known_values(method: int, cls: MessageClass, wire: int) -> None:
    assert message_type(method, cls) == wire
    assert split_message_type(wire) == (method, cls)


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.name)
@pytest.mark.parametrize("cls", list(MessageClass), ids=lambda c: c.name)
def test_every_method_and_class_survives_the_wire(method: Method, cls: MessageClass) -> None:
    msg = parse_message(serialize_message(StunMessage(method, cls, TID)))
    assert (msg.method, msg.message_class) == (method, cls)


def test_message_type_round_trips_for_every_12_bit_method() -> None:
    for method in range(0x1000):
        for cls in MessageClass:
            wire = message_type(method, cls)
            assert wire < 0x4000
            assert split_message_type(wire) == (method, cls)


# -- header and builders -----------------------------------------------------------


def test_serialized_header_has_cookie_length_and_transaction_id() -> None:
    data = serialize_message(_binding((A.SOFTWARE, b"abc")))
    assert data[:2] == b"\x00\x01"
    assert int.from_bytes(data[2:4], "big") == len(data) - 20 == 8
    assert data[4:8] == MAGIC_COOKIE_BYTES
    assert data[8:20] == TID


def test_attribute_padding_uses_the_given_byte() -> None:
    data = serialize_message(_binding((A.SOFTWARE, b"a")), padding=0x20)
    assert data[20:] == b"\x80\x22\x00\x01a   "


def test_serialize_rejects_bad_transaction_id_length() -> None:
    with pytest.raises(ValueError):
        serialize_message(StunMessage.request(Method.BINDING, b"short"))


def test_success_and_error_builders_keep_method_and_transaction_id() -> None:
    req = StunMessage.request(Method.ALLOCATE, TID)
    ok, err = req.success(), req.error_response(437)
    assert (ok.method, ok.message_class, ok.transaction_id) == (
        Method.ALLOCATE,
        MessageClass.SUCCESS,
        TID,
    )
    assert (err.method, err.message_class) == (Method.ALLOCATE, MessageClass.ERROR)
    assert err.error == ErrorCodeValue(437, "Allocation Mismatch")


def test_error_response_takes_a_custom_reason() -> None:
    err = StunMessage.request(Method.BINDING, TID).error_response(499, "Odd")
    assert parse_message(serialize_message(err)).error == ErrorCodeValue(499, "Odd")


def test_get_returns_first_and_get_all_every_instance() -> None:
    msg = parse_message(serialize_message(_binding((A.SOFTWARE, b"one"), (A.SOFTWARE, b"two"))))
    assert msg.get(at.SOFTWARE) == "one"
    assert msg.get_all(at.SOFTWARE) == ["one", "two"]
    assert msg.get_raw(A.SOFTWARE) == b"one"
    assert msg.get(at.REALM) is None
    assert msg.get_raw(A.REALM) is None
    assert msg.error is None


def test_unknown_required_lists_only_comprehension_required_types() -> None:
    msg = _binding((0x7FFF, b""), (0x8FFF, b""), (A.USERNAME, b"u"))
    assert msg.unknown_required(frozenset({A.USERNAME})) == (0x7FFF,)


def test_repr_names_method_class_and_attributes() -> None:
    text = repr(_binding((A.SOFTWARE, b"x"), (0x7FFF, b"")))
    assert "BINDING REQUEST" in text
    assert "SOFTWARE" in text
    assert "0x7fff" in text
    assert "0xabc" in repr(StunMessage.request(0xABC, TID))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(serialize_message(_binding()), True, id="binding"),
        pytest.param(serialize_message(_binding())[:19], False, id="short"),
        pytest.param(b"\x40" + serialize_message(_binding())[1:], False, id="channel-data"),
        pytest.param(serialize_message(_binding()) + b"\0\0\0\0", False, id="length-mismatch"),
        pytest.param(
            serialize_message(StunMessage.request(Method.BINDING, CLASSIC_TID)),
            False,
            id="no-cookie",
        ),
    ],
)
def test_is_stun_message(data: bytes, expected: bool) -> None:
    assert is_stun_message(data) is expected


# -- classic RFC 3489 messages -------------------------------------------------------


def test_classic_message_rejected_by_default() -> None:
    data = serialize_message(StunMessage.request(Method.BINDING, CLASSIC_TID))
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.error_code is None


def test_classic_message_parses_with_allow_classic() -> None:
    classic = StunMessage.request(Method.BINDING, CLASSIC_TID).add(
        at.MAPPED_ADDRESS, Endpoint("192.0.2.9", 4000)
    )
    data = serialize_message(classic)
    assert data[4:20] == CLASSIC_TID
    msg = parse_message(data, allow_classic=True)
    assert msg.classic
    assert msg.transaction_id == CLASSIC_TID
    assert msg.get(at.MAPPED_ADDRESS) == Endpoint("192.0.2.9", 4000)


def test_classic_message_cannot_carry_fingerprint() -> None:
    with pytest.raises(ValueError):
        serialize_message(StunMessage.request(Method.BINDING, CLASSIC_TID), fingerprint=True)
    data = _with_fingerprint(serialize_message(StunMessage.request(Method.BINDING, CLASSIC_TID)))
    with pytest.raises(MalformedMessageError):
        parse_message(data, allow_classic=True)


def test_modern_message_is_not_classic_when_classic_allowed() -> None:
    msg = parse_message(serialize_message(_binding()), allow_classic=True)
    assert not msg.classic
    assert msg.transaction_id == TID


# -- integrity and fingerprint ---------------------------------------------------------


@pytest.mark.parametrize(
    ("integrity", "sha1", "sha256"),
    [
        pytest.param(Integrity.SHA1, True, False, id="sha1"),
        pytest.param(Integrity.SHA256, False, True, id="sha256"),
        pytest.param(Integrity.BOTH, True, True, id="both"),
    ],
)
def test_serialized_integrity_verifies(integrity: Integrity, sha1: bool, sha256: bool) -> None:
    data = serialize_message(
        _binding((A.SOFTWARE, b"x")), key=KEY, integrity=integrity, fingerprint=True
    )
    msg = parse_message(data)
    assert (msg.integrity_offset >= 0, msg.integrity_sha256_offset >= 0) == (sha1, sha256)
    assert msg.has_fingerprint
    assert verify_integrity(msg, KEY)
    assert not verify_integrity(msg, b"other key")


def test_verify_integrity_is_false_without_integrity_attribute() -> None:
    assert not verify_integrity(parse_message(serialize_message(_binding())), KEY)


def test_tampered_message_fails_integrity() -> None:
    data = bytearray(serialize_message(_binding((A.SOFTWARE, b"abcd")), key=KEY))
    data[24] ^= 0x01  # a byte of the SOFTWARE value, covered by the MAC
    assert not verify_integrity(parse_message(bytes(data)), KEY)


def test_attributes_after_message_integrity_are_ignored() -> None:
    data = serialize_message(_binding((A.SOFTWARE, b"x")), key=KEY)
    data = _append_raw(data, A.REALM, b"after")
    data = _append_raw(data, 0x7FFF, b"unknown but ignored")
    msg = parse_message(data)
    assert msg.get(at.REALM) is None
    assert msg.unknown_required(frozenset({A.MESSAGE_INTEGRITY})) == ()
    assert [a.type for a in msg.attributes] == [A.SOFTWARE, A.MESSAGE_INTEGRITY]
    assert verify_integrity(msg, KEY)


def test_second_message_integrity_is_ignored() -> None:
    data = serialize_message(_binding(), key=KEY)
    data = _append_raw(data, A.MESSAGE_INTEGRITY, bytes(20))
    msg = parse_message(data)
    assert [a.type for a in msg.attributes] == [A.MESSAGE_INTEGRITY]
    assert verify_integrity(msg, KEY)


def test_sha256_and_fingerprint_may_follow_message_integrity() -> None:
    data = serialize_message(_binding(), key=KEY, integrity=Integrity.BOTH, fingerprint=True)
    msg = parse_message(data)
    assert [a.type for a in msg.attributes] == [
        A.MESSAGE_INTEGRITY,
        A.MESSAGE_INTEGRITY_SHA256,
        A.FINGERPRINT,
    ]


def test_only_fingerprint_is_kept_after_sha256() -> None:
    data = serialize_message(_binding(), key=KEY, integrity=Integrity.SHA256)
    data = _append_raw(data, A.MESSAGE_INTEGRITY, bytes(20))
    data = _append_raw(data, A.MESSAGE_INTEGRITY_SHA256, bytes(32))
    data = _append_raw(data, A.SOFTWARE, b"late")
    data = _with_fingerprint(data)
    msg = parse_message(data)
    assert [a.type for a in msg.attributes] == [A.MESSAGE_INTEGRITY_SHA256, A.FINGERPRINT]
    assert msg.integrity_offset == -1
    assert verify_integrity(msg, KEY)


@pytest.mark.parametrize("length", [16, 20, 24, 28, 32])
def test_message_integrity_sha256_verifies_at_every_allowed_length(length: int) -> None:
    data = _with_sha256(serialize_message(_binding((A.SOFTWARE, b"abc"))), KEY, length)
    msg = parse_message(data)
    assert msg.integrity_sha256_offset >= 0
    assert verify_integrity(msg, KEY)
    assert not verify_integrity(msg, b"wrong")


@pytest.mark.parametrize("length", [0, 12, 18, 36])
def test_message_integrity_sha256_with_bad_length_is_malformed(length: int) -> None:
    data = _append_raw(serialize_message(_binding()), A.MESSAGE_INTEGRITY_SHA256, bytes(length))
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.error_code == 400


@pytest.mark.parametrize("length", [0, 16, 24, 32])
def test_message_integrity_with_bad_length_is_malformed(length: int) -> None:
    data = _append_raw(serialize_message(_binding()), A.MESSAGE_INTEGRITY, bytes(length))
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.error_code == 400


def test_wrong_fingerprint_is_dropped() -> None:
    data = bytearray(serialize_message(_binding(), fingerprint=True))
    data[-1] ^= 0xFF
    with pytest.raises(MalformedMessageError) as info:
        parse_message(bytes(data))
    assert info.value.error_code is None


def test_fingerprint_of_wrong_length_is_dropped() -> None:
    data = _append_raw(serialize_message(_binding()), A.FINGERPRINT, bytes(8))
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data)
    assert info.value.error_code is None


@pytest.mark.parametrize(
    "atype",
    [
        pytest.param(A.SOFTWARE, id="software"),
        pytest.param(A.MESSAGE_INTEGRITY, id="message-integrity"),
        pytest.param(A.FINGERPRINT, id="second-fingerprint"),
    ],
)
def test_anything_after_fingerprint_is_malformed(atype: int) -> None:
    # The FINGERPRINT itself is valid: it covers a header that already counts
    # the attribute that follows it.
    header = _set_length(serialize_message(_binding()), 8 + 8)
    crc = (zlib.crc32(header) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    data = header + b"\x80\x28\x00\x04" + crc.to_bytes(4, "big")
    data += struct.pack("!HH", atype, 4) + bytes(4)
    with pytest.raises(MalformedMessageError, match="after FINGERPRINT") as info:
        parse_message(data)
    assert info.value.error_code is None


def test_fingerprint_covers_the_message_before_it() -> None:
    data = serialize_message(_binding((A.SOFTWARE, b"fp")), fingerprint=True)
    expected = (zlib.crc32(data[:-8]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
    assert data[-8:] == b"\x80\x28\x00\x04" + expected.to_bytes(4, "big")


def test_too_many_attributes_is_malformed() -> None:
    msg = _binding(*[(A.SOFTWARE, b"")] * (MAX_ATTRIBUTES + 1))
    with pytest.raises(MalformedMessageError):
        parse_message(serialize_message(msg))
    ok = _binding(*[(A.SOFTWARE, b"")] * MAX_ATTRIBUTES)
    assert len(parse_message(serialize_message(ok)).attributes) == MAX_ATTRIBUTES


# -- bad input ------------------------------------------------------------------


def _valid() -> bytes:
    return serialize_message(_binding((A.SOFTWARE, b"hello")), fingerprint=True)


def _set_length(data: bytes, length: int) -> bytes:
    return data[:2] + length.to_bytes(2, "big") + data[4:]


@pytest.mark.parametrize(
    ("data", "error_code"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(_valid()[:19], None, id="truncated-header"),
        pytest.param(_set_length(_valid(), 18) + bytes(2), None, id="length-not-multiple-of-4"),
        pytest.param(_set_length(_valid(), 64), None, id="length-beyond-datagram"),
        pytest.param(_valid() + bytes(4), None, id="trailing-bytes"),
        pytest.param(_valid()[:4] + b"\x21\x12\xa4\x43" + _valid()[8:], None, id="bad-cookie"),
        pytest.param(b"\x80" + _valid()[1:], None, id="top-bit-set"),
        pytest.param(b"\x40" + _valid()[1:], None, id="second-bit-set"),
        pytest.param(
            _set_length(serialize_message(_binding()), 8) + b"\x80\x22\x00\x09abcd",
            400,
            id="attribute-overrun",
        ),
        pytest.param(
            _set_length(serialize_message(_binding()), 12)
            + b"\x80\x22\x00\x00\x00\x06\x00\x08abcd",
            400,
            id="second-attribute-overrun",
        ),
        pytest.param(_valid()[:-1] + b"\x00", None, id="bad-fingerprint"),
        pytest.param(
            _append_raw(serialize_message(_binding()), A.MESSAGE_INTEGRITY, bytes(19)),
            400,
            id="bad-integrity-length",
        ),
    ],
)
def test_bad_input_raises_malformed(data: bytes, error_code: int | None) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(data, allow_classic=False)
    assert info.value.error_code == error_code


def test_malformed_error_carries_code_400_by_default() -> None:
    assert MalformedMessageError("x").error_code == 400


# -- attribute codecs -------------------------------------------------------------

V4 = Endpoint("192.0.2.1", 32853)
V6 = Endpoint("2001:db8:1234:5678:11:2233:4455:6677", 32853)

ROUND_TRIPS: list[Any] = [
    pytest.param(at.MAPPED_ADDRESS, V4, id="mapped-v4"),
    pytest.param(at.MAPPED_ADDRESS, V6, id="mapped-v6"),
    pytest.param(at.XOR_MAPPED_ADDRESS, V4, id="xor-mapped-v4"),
    pytest.param(at.XOR_MAPPED_ADDRESS, V6, id="xor-mapped-v6"),
    pytest.param(at.XOR_PEER_ADDRESS, Endpoint("::1", 0), id="xor-peer-v6-port-0"),
    pytest.param(at.XOR_RELAYED_ADDRESS, Endpoint("255.255.255.255", 65535), id="xor-relayed"),
    pytest.param(at.RESPONSE_ORIGIN, V4, id="response-origin"),
    pytest.param(at.OTHER_ADDRESS, V6, id="other-address"),
    pytest.param(at.SOURCE_ADDRESS, V4, id="source-address"),
    pytest.param(at.CHANGED_ADDRESS, V4, id="changed-address"),
    pytest.param(at.RESPONSE_ADDRESS, V4, id="response-address"),
    pytest.param(at.ALTERNATE_SERVER, V6, id="alternate-server"),
    pytest.param(at.USERNAME, "user:ä", id="username"),
    pytest.param(at.USERNAME, "u" * 513, id="username-at-limit"),
    pytest.param(at.REALM, "example.org", id="realm"),
    pytest.param(at.NONCE, "n" * 763, id="nonce-at-limit"),
    pytest.param(at.SOFTWARE, "", id="software-empty"),
    pytest.param(at.ALTERNATE_DOMAIN, "d" * 255, id="alternate-domain-at-limit"),
    pytest.param(at.ERROR_CODE, ErrorCodeValue(300, "Try Alternate"), id="error-300"),
    pytest.param(at.ERROR_CODE, ErrorCodeValue(420, ""), id="error-420-no-reason"),
    pytest.param(at.ERROR_CODE, ErrorCodeValue(699, "ünïcode"), id="error-699"),
    pytest.param(at.UNKNOWN_ATTRIBUTES, (0x0003,), id="unknown-one"),
    pytest.param(at.UNKNOWN_ATTRIBUTES, (0x0003, 0x7FFF, 0x0027), id="unknown-three"),
    pytest.param(at.UNKNOWN_ATTRIBUTES, (), id="unknown-none"),
    pytest.param(at.CHANGE_REQUEST, ChangeRequest(), id="change-none"),
    pytest.param(at.CHANGE_REQUEST, ChangeRequest(change_ip=True), id="change-ip"),
    pytest.param(at.CHANGE_REQUEST, ChangeRequest(change_port=True), id="change-port"),
    pytest.param(at.CHANGE_REQUEST, ChangeRequest(True, True), id="change-both"),
    pytest.param(at.RESPONSE_PORT, 0, id="response-port-0"),
    pytest.param(at.RESPONSE_PORT, 65535, id="response-port-max"),
    pytest.param(at.PADDING, bytes(5), id="padding"),
    pytest.param(
        at.PASSWORD_ALGORITHMS,
        (PasswordAlgorithmParams(PasswordAlgorithm.SHA256), PasswordAlgorithmParams(1)),
        id="password-algorithms",
    ),
    pytest.param(
        at.PASSWORD_ALGORITHMS,
        (PasswordAlgorithmParams(7, b"\x01"), PasswordAlgorithmParams(2, b"abcde")),
        id="password-algorithms-padded-parameters",
    ),
    pytest.param(at.PASSWORD_ALGORITHMS, (), id="password-algorithms-empty"),
    pytest.param(
        at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(PasswordAlgorithm.MD5), id="algorithm"
    ),
    pytest.param(
        at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(9, b"xyz"), id="algorithm-with-params"
    ),
    pytest.param(at.USERHASH, bytes(range(32)), id="userhash"),
    pytest.param(at.PRIORITY, 0xFFFFFFFF, id="priority"),
    pytest.param(at.LIFETIME, 600, id="lifetime"),
    pytest.param(at.ICE_CONTROLLING, 0xFFFFFFFFFFFFFFFF, id="ice-controlling"),
    pytest.param(at.ICE_CONTROLLED, 1, id="ice-controlled"),
    pytest.param(at.USE_CANDIDATE, True, id="use-candidate"),
    pytest.param(at.DATA, b"\x00\x01\x02", id="data"),
]
# serialize_message places these itself; as raw values they only round-trip the codec.
IN_MESSAGE_ROUND_TRIPS = list(ROUND_TRIPS)
ROUND_TRIPS += [
    pytest.param(at.MESSAGE_INTEGRITY, bytes(20), id="message-integrity-raw"),
    pytest.param(at.FINGERPRINT, 0xDEADBEEF, id="fingerprint-raw"),
]


@pytest.mark.parametrize(("spec", "value"), ROUND_TRIPS)
def test_attribute_codec_round_trips(spec: at.AttrSpec[Any], value: Any) -> None:
    assert spec.decode(spec.encode(value, TID), TID) == value


@pytest.mark.parametrize(("spec", "value"), IN_MESSAGE_ROUND_TRIPS)
def test_attribute_round_trips_through_a_message(spec: at.AttrSpec[Any], value: Any) -> None:
    msg = StunMessage.request(Method.BINDING, TID).add(spec, value).add_raw(0x8FFF, b"end")
    parsed = parse_message(serialize_message(msg))
    assert parsed.get(spec) == value
    assert parsed.get_raw(0x8FFF) == b"end"


@pytest.mark.parametrize(
    ("ep", "wire"),
    [
        pytest.param(V4, "0001a147e112a643", id="ipv4"),
        pytest.param(V6, "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9", id="ipv6"),
    ],
)
def test_xor_address_wire_format_matches_rfc5769(ep: Endpoint, wire: str) -> None:
    tid = bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert at.XOR_MAPPED_ADDRESS.encode(ep, tid) == bytes.fromhex(wire)
    assert at.XOR_MAPPED_ADDRESS.decode(bytes.fromhex(wire), tid) == ep


@given(st.ip_addresses(v=4), st.integers(0, 0xFFFF), st.binary(min_size=12, max_size=12))
def test_ipv4_xor_address_agrees_with_the_packed_form(
    ip: ipaddress.IPv4Address, port: int, tid: bytes
) -> None:
    # The dotted-quad fast path against the RFC 8489 §14.2 formula on ip.packed.
    ep = Endpoint(str(ip), port)
    xaddr = int.from_bytes(ip.packed, "big") ^ MAGIC_COOKIE
    expected = struct.pack("!BBHI", 0, 1, port ^ (MAGIC_COOKIE >> 16), xaddr)
    assert at.XOR_MAPPED_ADDRESS.encode(ep, tid) == expected
    assert at.XOR_MAPPED_ADDRESS.decode(expected, tid) == ep


@pytest.mark.parametrize("host", ["192.0.2.256", "192.0.2", "-1.0.2.1", "192.0.2.x"])
def test_a_host_that_is_no_ipv4_address_is_refused(host: str) -> None:
    with pytest.raises(ValueError):
        at.XOR_MAPPED_ADDRESS.encode(Endpoint(host, 1), TID)


def test_ipv6_xor_address_depends_on_the_transaction_id() -> None:
    a = at.XOR_MAPPED_ADDRESS.encode(V6, TID)
    b = at.XOR_MAPPED_ADDRESS.encode(V6, bytes(12))
    assert a != b
    assert at.XOR_MAPPED_ADDRESS.decode(a, bytes(12)) != V6


def test_plain_address_wire_format() -> None:
    assert at.MAPPED_ADDRESS.encode(Endpoint("192.0.2.1", 3478), TID) == bytes.fromhex(
        "00010d96c0000201"
    )


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(at.MAPPED_ADDRESS, id="plain"),
        pytest.param(at.XOR_MAPPED_ADDRESS, id="xor"),
    ],
)
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00\x01\x00", id="short-header"),
        pytest.param(b"\x00\x01\x00\x50\xc0\x00\x02", id="ipv4-short"),
        pytest.param(b"\x00\x02\x00\x50" + bytes(4), id="ipv6-with-4-bytes"),
        pytest.param(b"\x00\x01\x00\x50" + bytes(16), id="ipv4-with-16-bytes"),
        pytest.param(b"\x00\x03\x00\x50" + bytes(4), id="unknown-family"),
    ],
)
def test_bad_address_is_malformed(spec: at.AttrSpec[Endpoint], value: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        spec.decode(value, TID)
    assert info.value.error_code == 400


@pytest.mark.parametrize(
    ("value", "code"),
    [
        pytest.param(b"\x00\x00\x03\x00", 300, id="300"),
        pytest.param(b"\x00\x00\x06\x63", 699, id="699"),
        pytest.param(b"\xff\xff\x04\x01", 401, id="reserved-bits-ignored"),
    ],
)
def test_error_code_decodes_class_and_number(value: bytes, code: int) -> None:
    assert at.ERROR_CODE.decode(value, TID).code == code


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\x00\x00\x04", id="short"),
        pytest.param(b"\x00\x00\x02\x63", id="class-2"),
        pytest.param(b"\x00\x00\x07\x00", id="class-7"),
        pytest.param(b"\x00\x00\x04\x64", id="number-100"),
        pytest.param(b"\x00\x00\x04\x00\xff", id="reason-not-utf8"),
    ],
)
def test_bad_error_code_is_malformed(value: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        at.ERROR_CODE.decode(value, TID)


@pytest.mark.parametrize("code", [0, 299, 700, 1000])
def test_error_code_out_of_range_is_refused_on_encode(code: int) -> None:
    with pytest.raises(ValueError):
        at.ERROR_CODE.encode(ErrorCodeValue(code), TID)


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param("x" * 1000, id="ascii"),
        pytest.param("é" * 400, id="two-byte"),
        pytest.param("€" * 300, id="three-byte"),
    ],
)
def test_long_error_reason_is_cut_to_763_bytes_of_valid_utf8(reason: str) -> None:
    value = at.ERROR_CODE.encode(ErrorCodeValue(400, reason), TID)
    assert len(value) - 4 <= 763
    decoded = at.ERROR_CODE.decode(value, TID)
    assert reason.startswith(decoded.reason)
    assert len(decoded.reason.encode()) > 763 - 4


@pytest.mark.parametrize(
    ("value", "types"),
    [
        pytest.param(b"\x00\x03\x00", (0x0003,), id="odd-3"),
        pytest.param(b"\x00\x03\x00\x27\x80", (0x0003, 0x0027), id="odd-5"),
        pytest.param(b"\x00", (), id="odd-1"),
        pytest.param(b"\x00\x03\x00\x03", (0x0003, 0x0003), id="rfc3489-repeat"),
    ],
)
def test_unknown_attributes_tolerates_odd_lengths(value: bytes, types: tuple[int, ...]) -> None:
    assert at.UNKNOWN_ATTRIBUTES.decode(value, TID) == types


def test_unknown_attributes_of_odd_count_are_padded_in_a_message() -> None:
    msg = StunMessage(Method.BINDING, MessageClass.ERROR, TID).add(at.UNKNOWN_ATTRIBUTES, (1, 2, 3))
    data = serialize_message(msg)
    assert len(data) == 20 + 4 + 8
    assert parse_message(data).get(at.UNKNOWN_ATTRIBUTES) == (1, 2, 3)


@pytest.mark.parametrize(
    ("request_", "flags"),
    [
        pytest.param(ChangeRequest(), 0, id="none"),
        pytest.param(ChangeRequest(change_port=True), 2, id="port"),
        pytest.param(ChangeRequest(change_ip=True), 4, id="ip"),
        pytest.param(ChangeRequest(change_ip=True, change_port=True), 6, id="both"),
    ],
)
def test_change_request_flag_bits(request_: ChangeRequest, flags: int) -> None:
    assert at.CHANGE_REQUEST.encode(request_, TID) == flags.to_bytes(4, "big")
    assert at.CHANGE_REQUEST.decode((flags | 0xFFFFFF09).to_bytes(4, "big"), TID) == request_


def test_response_port_is_port_then_two_bytes_of_padding() -> None:
    assert at.RESPONSE_PORT.encode(3479, TID) == b"\x0d\x97\x00\x00"


def test_password_algorithms_pad_parameters_inside_the_value() -> None:
    value = at.PASSWORD_ALGORITHMS.encode(
        (PasswordAlgorithmParams(7, b"\x01"), PasswordAlgorithmParams(2)), TID
    )
    assert value == b"\x00\x07\x00\x01\x01\x00\x00\x00" + b"\x00\x02\x00\x00"


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        pytest.param(at.PASSWORD_ALGORITHMS, b"\x00\x01\x00", id="truncated-entry"),
        pytest.param(at.PASSWORD_ALGORITHMS, b"\x00\x01\x00\x08abcd", id="parameters-overrun"),
        pytest.param(at.PASSWORD_ALGORITHM, b"", id="algorithm-none"),
        pytest.param(at.PASSWORD_ALGORITHM, b"\x00\x01\x00\x00\x00\x02\x00\x00", id="two"),
        pytest.param(at.USERHASH, bytes(31), id="userhash-31"),
        pytest.param(at.USERHASH, bytes(33), id="userhash-33"),
        pytest.param(at.CHANGE_REQUEST, bytes(2), id="change-request-short"),
        pytest.param(at.RESPONSE_PORT, bytes(2), id="response-port-short"),
        pytest.param(at.PRIORITY, bytes(8), id="u32-long"),
        pytest.param(at.ICE_CONTROLLING, bytes(4), id="u64-short"),
        pytest.param(at.USE_CANDIDATE, b"\x00", id="flag-not-empty"),
        pytest.param(at.USERNAME, b"u" * 514, id="username-too-long"),
        pytest.param(at.REALM, b"r" * 764, id="realm-too-long"),
        pytest.param(at.NONCE, b"n" * 764, id="nonce-too-long"),
        pytest.param(at.SOFTWARE, b"s" * 764, id="software-too-long"),
        pytest.param(at.ALTERNATE_DOMAIN, b"d" * 256, id="alternate-domain-too-long"),
        pytest.param(at.USERNAME, b"\xc3", id="username-not-utf8"),
        pytest.param(at.REALM, b"\xff", id="realm-not-utf8"),
    ],
)
def test_bad_attribute_value_is_malformed(spec: at.AttrSpec[Any], value: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        spec.decode(value, TID)
    assert info.value.error_code == 400


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        pytest.param(at.USERNAME, "u" * 514, id="username"),
        pytest.param(at.USERNAME, "ü" * 257, id="username-multibyte"),
        pytest.param(at.REALM, "r" * 764, id="realm"),
        pytest.param(at.ALTERNATE_DOMAIN, "d" * 256, id="alternate-domain"),
    ],
)
def test_text_over_limit_is_refused_on_encode(spec: at.AttrSpec[str], text: str) -> None:
    with pytest.raises(ValueError):
        spec.encode(text, TID)


def test_malformed_attribute_only_fails_when_read() -> None:
    data = serialize_message(_binding((A.XOR_MAPPED_ADDRESS, b"\x00\x09"), (A.SOFTWARE, b"ok")))
    msg = parse_message(data)
    assert msg.get(at.SOFTWARE) == "ok"
    with pytest.raises(MalformedMessageError):
        msg.get(at.XOR_MAPPED_ADDRESS)


def test_raw_attribute_list_matches_the_wire() -> None:
    msg = parse_message(serialize_message(_binding((0x8FFF, b"abc"), (A.USERNAME, b"u"))))
    assert msg.attributes == [Attribute(0x8FFF, b"abc"), Attribute(A.USERNAME, b"u")]
    assert msg.has(0x8FFF)
    assert not msg.has(A.REALM)
