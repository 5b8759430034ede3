"""RFC 5769 test vectors: parse, verify, decode and re-serialize byte-exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.constants import AttributeType, MessageClass, Method
from natkit.stun.credentials import PasswordProfile, long_term_key, saslprep, short_term_key
from natkit.stun.message import StunMessage, parse_message, serialize_message, verify_integrity

_DATA = Path(__file__).resolve().parents[1] / "data" / "stun_rfc5769_vectors.json"
VECTORS: dict[str, dict[str, Any]] = {
    v["rfc_section"]: v for v in json.loads(_DATA.read_text("utf-8"))["vectors"]
}
SECTIONS = sorted(VECTORS)
WITH_FINGERPRINT = ["2.1", "2.2", "2.3"]
RESPONSES = ["2.2", "2.3"]


def _raw(section: str) -> bytes:
    return bytes.fromhex(VECTORS[section]["hex"])


def _key(section: str) -> bytes:
    v = VECTORS[section]
    if v["credential_mechanism"] == "short-term":
        return short_term_key(v["password"])
    return long_term_key(
        v["username"],
        v["realm"],
        v["password_before_saslprep"],
        profile=PasswordProfile.SASLPREP,
    )


def _attr_boundaries(raw: bytes) -> set[int]:
    """Offsets at which an attribute starts (or the message ends)."""
    ends = {20}
    pos = 20
    while pos < len(raw):
        alen = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        pos += 4 + alen + (-alen & 3)
        ends.add(pos)
    return ends


def test_vector_file_holds_the_four_rfc5769_vectors() -> None:
    assert SECTIONS == ["2.1", "2.2", "2.3", "2.4"]


@pytest.mark.parametrize("section", SECTIONS)
def test_vector_header_parses(section: str) -> None:
    msg = parse_message(_raw(section))
    expected_class = MessageClass.SUCCESS if section in RESPONSES else MessageClass.REQUEST
    assert msg.method == Method.BINDING
    assert msg.message_class == expected_class
    assert msg.transaction_id.hex() == VECTORS[section]["transaction_id"]
    assert not msg.classic


@pytest.mark.parametrize("section", WITH_FINGERPRINT)
def test_vector_fingerprint_is_verified(section: str) -> None:
    msg = parse_message(_raw(section))
    assert msg.has_fingerprint
    assert msg.get(at.FINGERPRINT) == int(VECTORS[section]["expected_fingerprint"], 16)


def test_vector_2_4_has_no_fingerprint() -> None:
    msg = parse_message(_raw("2.4"))
    assert not msg.has_fingerprint
    assert msg.attributes[-1].type == AttributeType.MESSAGE_INTEGRITY


@pytest.mark.parametrize("section", SECTIONS)
def test_vector_message_integrity_verifies(section: str) -> None:
    msg = parse_message(_raw(section))
    assert msg.get(at.MESSAGE_INTEGRITY) == bytes.fromhex(
        VECTORS[section]["expected_message_integrity"]
    )
    assert verify_integrity(msg, _key(section))


@pytest.mark.parametrize("section", SECTIONS)
def test_vector_message_integrity_fails_with_wrong_key(section: str) -> None:
    msg = parse_message(_raw(section))
    assert not verify_integrity(msg, _key(section) + b"x")


@pytest.mark.parametrize("section", RESPONSES)
def test_vector_xor_mapped_address_decodes(section: str) -> None:
    expected = VECTORS[section]["expected_mapped_address"]
    msg = parse_message(_raw(section))
    assert msg.get(at.XOR_MAPPED_ADDRESS) == Endpoint(expected["ip"], expected["port"])
    assert msg.get(at.SOFTWARE) == VECTORS[section]["software"]


def test_vector_2_1_request_attributes_decode() -> None:
    v = VECTORS["2.1"]
    msg = parse_message(_raw("2.1"))
    assert msg.get(at.USERNAME) == v["username"]
    assert msg.get(at.SOFTWARE) == v["software"]
    assert msg.get(at.PRIORITY) == v["priority"]
    assert msg.get(at.ICE_CONTROLLED) == int(v["ice_controlled_tiebreaker"], 16)


def test_vector_2_4_long_term_attributes_decode() -> None:
    v = VECTORS["2.4"]
    msg = parse_message(_raw("2.4"))
    assert msg.get(at.USERNAME) == v["username"]
    assert msg.get(at.USERNAME).encode() == bytes.fromhex(v["username_utf8_hex"])  # type: ignore[union-attr]
    assert msg.get(at.NONCE) == v["nonce"]
    assert msg.get(at.REALM) == v["realm"]


def test_vector_2_4_password_saslprep_gives_the_rfc_password() -> None:
    v = VECTORS["2.4"]
    assert saslprep(v["password_before_saslprep"]) == v["password"]


@pytest.mark.parametrize("section", SECTIONS)
def test_vector_reserializes_byte_exactly(section: str) -> None:
    raw = _raw(section)
    parsed = parse_message(raw)
    body = [
        a
        for a in parsed.attributes
        if a.type not in (AttributeType.MESSAGE_INTEGRITY, AttributeType.FINGERPRINT)
    ]
    rebuilt = StunMessage(parsed.method, parsed.message_class, parsed.transaction_id, body)
    out = serialize_message(
        rebuilt,
        key=_key(section),
        fingerprint=parsed.has_fingerprint,
        padding=0x20 if section in WITH_FINGERPRINT else 0x00,
    )
    assert out == raw


def test_vector_2_1_built_from_typed_values() -> None:
    v = VECTORS["2.1"]
    msg = (
        StunMessage.request(Method.BINDING, bytes.fromhex(v["transaction_id"]))
        .add(at.SOFTWARE, v["software"])
        .add(at.PRIORITY, v["priority"])
        .add(at.ICE_CONTROLLED, int(v["ice_controlled_tiebreaker"], 16))
        .add(at.USERNAME, v["username"])
    )
    out = serialize_message(msg, key=_key("2.1"), fingerprint=True, padding=0x20)
    assert out == _raw("2.1")


@pytest.mark.parametrize("section", RESPONSES)
def test_vector_response_built_from_typed_values(section: str) -> None:
    v = VECTORS[section]
    mapped = v["expected_mapped_address"]
    msg = StunMessage(Method.BINDING, MessageClass.SUCCESS, bytes.fromhex(v["transaction_id"])).add(
        at.SOFTWARE, v["software"]
    )
    msg.add(at.XOR_MAPPED_ADDRESS, Endpoint(mapped["ip"], mapped["port"]))
    out = serialize_message(msg, key=_key(section), fingerprint=True, padding=0x20)
    assert out == _raw(section)


def test_vector_2_4_built_from_typed_values() -> None:
    v = VECTORS["2.4"]
    msg = (
        StunMessage.request(Method.BINDING, bytes.fromhex(v["transaction_id"]))
        .add(at.USERNAME, v["username"])
        .add(at.NONCE, v["nonce"])
        .add(at.REALM, v["realm"])
    )
    assert serialize_message(msg, key=_key("2.4")) == _raw("2.4")


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize("allow_classic", [False, True], ids=["modern", "classic-allowed"])
def test_every_truncation_of_vector_is_rejected(section: str, allow_classic: bool) -> None:
    raw = _raw(section)
    for n in range(len(raw)):
        with pytest.raises(MalformedMessageError):
            parse_message(raw[:n], allow_classic=allow_classic)


@pytest.mark.parametrize("section", SECTIONS)
def test_truncation_with_patched_length_is_rejected_or_a_prefix(section: str) -> None:
    """Cutting a vector and fixing up the header length either yields a valid
    message holding a prefix of the attributes (cut at a boundary) or raises
    MalformedMessageError; never anything else."""
    raw = _raw(section)
    full = parse_message(raw).attributes
    boundaries = _attr_boundaries(raw)
    for n in range(20, len(raw), 4):
        cut = raw[:2] + (n - 20).to_bytes(2, "big") + raw[4:n]
        try:
            msg = parse_message(cut)
        except MalformedMessageError:
            continue
        assert n in boundaries
        assert msg.attributes == full[: len(msg.attributes)]
