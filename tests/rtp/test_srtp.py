"""SRTP/SRTCP through natkit's libsrtp wrapper (RFC 3711, RFC 4568 §6.2)."""

from __future__ import annotations

import base64
import random

import pylibsrtp
import pytest

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rtp.packet import RtpPacket, serialize_rtp
from natkit.rtp.rtcp import ReceiverReport, SdesChunk, SdesItem, SourceDescription, serialize_rtcp
from natkit.rtp.srtp import (
    SDES_KEY_LENGTH,
    SrtpAuthenticationError,
    SrtpContext,
    SrtpError,
    SrtpReplayError,
    SrtpSuite,
    generate_sdes_key,
    parse_sdes_key,
)
from tests.rtp import srtp_reference as ref

KEY = generate_sdes_key(rng=random.Random(42))
MASTER = base64.b64decode(KEY)
SUITE = SrtpSuite.AES_CM_128_HMAC_SHA1_80


def rtp(seq: int, payload: bytes = b"\x55" * 160) -> bytes:
    return serialize_rtp(
        RtpPacket(payload_type=0, sequence_number=seq, timestamp=seq * 160, ssrc=0xCAFE,
                  payload=payload)
    )  # fmt: skip


RTCP = serialize_rtcp(
    [ReceiverReport(ssrc=0xCAFE), SourceDescription((SdesChunk(0xCAFE, (SdesItem(1, b"me"),)),))]
)


# -- RFC 3711 Appendix B, and libsrtp computing the same --------------------------------------


def test_reference_key_derivation_matches_rfc3711_b3() -> None:
    key = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
    salt = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")
    assert ref.derive(key, salt, ref.LABEL_RTP_ENCRYPTION, 16).hex().upper() == (
        "C61E7A93744F39EE10734AFE3FF7A087"
    )
    assert ref.derive(key, salt, ref.LABEL_RTP_SALT, 14).hex().upper() == (
        "30CBBC08863D8C85D49DB34A9AE1"
    )
    assert ref.derive(key, salt, ref.LABEL_RTP_AUTH, 20).hex().upper() == (
        "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
    )


def test_reference_aes_cm_keystream_matches_rfc3711_b2() -> None:
    session_key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    iv = int.from_bytes(bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"), "big")
    stream = ref.aes_cm_keystream(session_key, iv, 48)
    assert stream.hex().upper() == (
        "E03EAD0935C95E80E166B16DD92B4EB4"
        "D23513162B02D0F72A43A2FE4A5F97AB"
        "41E95B3BB0A2E8DD477901E4FCA894C0"
    )


def test_rfc3711_b3_master_key_through_the_wrapper_matches_the_reference() -> None:
    master = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE41390EC675AD498AFEEBB6960B3AABE6")
    context = SrtpContext(SUITE, master)
    assert context.protect_rtp(rtp(1)) == ref.protect_rtp(master, rtp(1))


@pytest.mark.parametrize(
    ("suite", "tag_length"),
    [
        pytest.param(SrtpSuite.AES_CM_128_HMAC_SHA1_80, 10, id="sha1-80"),
        pytest.param(SrtpSuite.AES_CM_128_HMAC_SHA1_32, 4, id="sha1-32"),
    ],
)
def test_protected_rtp_is_exactly_the_rfc3711_transform(suite: SrtpSuite, tag_length: int) -> None:
    context = SrtpContext.from_sdes(suite, KEY)
    for seq in (1, 2, 3):
        assert context.protect_rtp(rtp(seq)) == ref.protect_rtp(
            MASTER, rtp(seq), tag_length=tag_length
        )


def test_protected_rtcp_decrypts_with_the_reference() -> None:
    context = SrtpContext.from_sdes(SUITE, KEY)
    first = ref.unprotect_rtcp(MASTER, context.protect_rtcp(RTCP))
    second = ref.unprotect_rtcp(MASTER, context.protect_rtcp(RTCP))
    assert first[1] == second[1] == RTCP
    assert second[0] == first[0] + 1


def test_reference_protected_rtp_unprotects_with_the_wrapper() -> None:
    context = SrtpContext.from_sdes(SUITE, KEY)
    assert context.unprotect_rtp(ref.protect_rtp(MASTER, rtp(7))) == rtp(7)


def test_pylibsrtp_protected_packets_unprotect_with_the_wrapper() -> None:
    policy = pylibsrtp.Policy(
        key=MASTER,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    sender = pylibsrtp.Session(policy)
    receiver = SrtpContext.from_sdes("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY}")
    assert receiver.unprotect_rtp(sender.protect(rtp(10))) == rtp(10)
    assert receiver.unprotect_rtcp(sender.protect_rtcp(RTCP)) == RTCP


# -- the wrapper's behaviour -----------------------------------------------------------------


@pytest.mark.parametrize("suite", list(SrtpSuite))
def test_round_trip_rtp_and_rtcp(suite: SrtpSuite) -> None:
    sender, receiver = SrtpContext.from_sdes(suite, KEY), SrtpContext.from_sdes(suite, KEY)
    for seq in range(65530, 65536):
        protected = sender.protect_rtp(rtp(seq))
        assert protected != rtp(seq)
        assert receiver.unprotect_rtp(protected) == rtp(seq)
    assert receiver.unprotect_rtcp(sender.protect_rtcp(RTCP)) == RTCP


def test_tampered_packets_fail_authentication() -> None:
    sender = SrtpContext.from_sdes(SUITE, KEY)
    protected = bytearray(sender.protect_rtp(rtp(1)))
    protected[20] ^= 0x01
    with pytest.raises(SrtpAuthenticationError) as info:
        SrtpContext.from_sdes(SUITE, KEY).unprotect_rtp(bytes(protected))
    assert info.value.error_code is None
    rtcp = bytearray(sender.protect_rtcp(RTCP))
    rtcp[9] ^= 0x80
    with pytest.raises(SrtpAuthenticationError):
        SrtpContext.from_sdes(SUITE, KEY).unprotect_rtcp(bytes(rtcp))


def test_wrong_key_fails_authentication() -> None:
    protected = SrtpContext.from_sdes(SUITE, KEY).protect_rtp(rtp(1))
    other = SrtpContext.from_sdes(SUITE, generate_sdes_key(rng=random.Random(1)))
    with pytest.raises(SrtpAuthenticationError):
        other.unprotect_rtp(protected)


def test_replayed_packets_are_refused() -> None:
    sender, receiver = SrtpContext.from_sdes(SUITE, KEY), SrtpContext.from_sdes(SUITE, KEY)
    protected = sender.protect_rtp(rtp(1))
    receiver.unprotect_rtp(protected)
    with pytest.raises(SrtpReplayError):
        receiver.unprotect_rtp(protected)
    rtcp = sender.protect_rtcp(RTCP)
    receiver.unprotect_rtcp(rtcp)
    with pytest.raises(SrtpReplayError):
        receiver.unprotect_rtcp(rtcp)


def test_packet_older_than_the_replay_window_is_refused() -> None:
    sender, receiver = SrtpContext.from_sdes(SUITE, KEY), SrtpContext.from_sdes(SUITE, KEY)
    old = sender.protect_rtp(rtp(1))
    for seq in range(2, 200):
        receiver.unprotect_rtp(sender.protect_rtp(rtp(seq)))
    with pytest.raises(SrtpReplayError):
        receiver.unprotect_rtp(old)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80\x00", id="short"),
        pytest.param(b"\x80" * 1600, id="too-long"),
    ],
)
def test_garbage_raises_srtp_error(data: bytes) -> None:
    context = SrtpContext.from_sdes(SUITE, KEY)
    with pytest.raises(SrtpError):
        context.unprotect_rtp(data)
    with pytest.raises(SrtpError):
        context.unprotect_rtcp(data)


def test_protecting_a_sequence_number_twice_is_a_local_error() -> None:
    sender = SrtpContext.from_sdes(SUITE, KEY)
    sender.protect_rtp(rtp(1))
    with pytest.raises(LocalProtocolError):
        sender.protect_rtp(rtp(1))
    with pytest.raises(LocalProtocolError):
        sender.protect_rtcp(b"")


def test_sdes_key_parameters() -> None:
    assert parse_sdes_key(f"inline:{KEY}|2^31") == MASTER
    assert parse_sdes_key(KEY) == MASTER
    assert SrtpContext.from_sdes(SUITE, KEY).key_b64 == KEY


@pytest.mark.parametrize(
    ("suite", "key"),
    [
        pytest.param("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY}|2^20|1:4", id="mki"),
        pytest.param("AES_CM_128_HMAC_SHA1_80", "inline:not base64!", id="not-base64"),
        pytest.param("AES_CM_128_HMAC_SHA1_80", base64.b64encode(bytes(16)).decode(), id="short"),
        pytest.param("F8_128_HMAC_SHA1_80", KEY, id="unknown-suite"),
    ],
)
def test_bad_sdes_parameters_are_not_acceptable(suite: str, key: str) -> None:
    with pytest.raises(MalformedMessageError) as info:
        SrtpContext.from_sdes(suite, key)
    assert info.value.error_code == 488


def test_key_generation() -> None:
    assert generate_sdes_key(rng=random.Random(42)) == KEY
    assert len(MASTER) == SDES_KEY_LENGTH
    fresh = {generate_sdes_key() for _ in range(3)}
    assert len(fresh) == 3
    assert all(len(base64.b64decode(k)) == SDES_KEY_LENGTH for k in fresh)
    with pytest.raises(LocalProtocolError):
        SrtpContext(SUITE, bytes(16))
