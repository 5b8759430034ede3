"""Typed SDP attributes: rtpmap, fmtp, ptime, direction, rtcp, crypto, setup, mid."""

from __future__ import annotations

import base64

import pytest

from natkit.errors import MalformedMessageError
from natkit.sdp import (
    ConnectionMode,
    Crypto,
    CryptoKey,
    Direction,
    Rtcp,
    RtpMap,
    Setup,
    parse_sdp,
)
from natkit.sdp.attributes import (
    parse_crypto,
    parse_fmtp,
    parse_packet_time,
    parse_rtcp,
    parse_rtpmap,
)
from tests.sdp import bodies

HEAD = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def media_with(*lines: str) -> bytes:
    return HEAD + b"m=audio 4000 RTP/AVP 0 96\r\n" + b"".join(f"a={x}\r\n".encode() for x in lines)


def test_rtpmap_with_and_without_channels() -> None:
    maps = parse_sdp(bodies.BARESIP).media[0].rtpmaps()
    assert maps[96] == RtpMap(payload_type=96, encoding_name="opus", clock_rate=48000, channels=2)
    assert maps[0] == RtpMap(payload_type=0, encoding_name="PCMU", clock_rate=8000)
    assert maps[96].format() == "96 opus/48000/2"


def test_rtpmap_same_codec_ignores_case_and_default_channel() -> None:
    one = RtpMap(payload_type=0, encoding_name="pcmu", clock_rate=8000)
    two = RtpMap(payload_type=99, encoding_name="PCMU", clock_rate=8000, channels=1)
    assert one.same_codec(two)
    assert not one.same_codec(RtpMap(payload_type=0, encoding_name="PCMU", clock_rate=16000))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "96",
        "96 opus",
        "x opus/48000",
        "128 opus/48000",
        "96 opus/fast",
        "96 opus/48000/2/1",
        "96 /8000",
    ],
)
def test_malformed_rtpmap_is_unusable(value: str) -> None:
    with pytest.raises(MalformedMessageError) as err:
        parse_rtpmap(value)
    assert err.value.error_code == 488


def test_fmtp_parameters() -> None:
    fmtps = parse_sdp(bodies.CHROME).media[0].fmtps()
    assert fmtps["111"].params == {"minptime": "10", "useinbandfec": "1"}
    assert parse_fmtp("101 0-16").params == {"0-16": ""}
    with pytest.raises(MalformedMessageError):
        parse_fmtp("")


def test_ptime_and_maxptime() -> None:
    media = parse_sdp(bodies.ASTERISK).media[0]
    assert (media.ptime, media.maxptime) == (20.0, 150.0)
    assert parse_packet_time("2.5") == 2.5
    for bad in ("", "0", "-20", "twenty"):
        with pytest.raises(MalformedMessageError):
            parse_packet_time(bad)


@pytest.mark.parametrize(
    ("direction", "reversed_"),
    [
        (Direction.SENDRECV, Direction.SENDRECV),
        (Direction.SENDONLY, Direction.RECVONLY),
        (Direction.RECVONLY, Direction.SENDONLY),
        (Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_direction_reversed(direction: Direction, reversed_: Direction) -> None:
    assert direction.reversed() is reversed_


def test_media_direction_overrides_session_default() -> None:
    desc = parse_sdp(
        HEAD.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
        + b"m=audio 4000 RTP/AVP 0\r\na=inactive\r\nm=audio 4002 RTP/AVP 0\r\n"
    )
    assert desc.direction_of(0) is Direction.INACTIVE
    assert desc.direction_of(1) is Direction.SENDONLY


def test_no_direction_means_sendrecv() -> None:
    assert parse_sdp(bodies.SIPP_UAC).direction_of(0) is Direction.SENDRECV


def test_rtcp_port_only_and_with_address() -> None:
    assert parse_rtcp("53020") == Rtcp(port=53020)
    assert Rtcp(port=53020).format() == "53020"
    full = parse_rtcp("53020 IN IP4 126.16.64.4")
    assert full == Rtcp(port=53020, nettype="IN", addrtype="IP4", address="126.16.64.4")
    assert full.format() == "53020 IN IP4 126.16.64.4"
    assert parse_sdp(bodies.CHROME).media[0].rtcp == Rtcp(
        port=9, nettype="IN", addrtype="IP4", address="0.0.0.0"
    )


@pytest.mark.parametrize("value", ["", "x", "70000", "5000 IN IP4", "5000 IN IP4 a b"])
def test_malformed_rtcp_is_unusable(value: str) -> None:
    with pytest.raises(MalformedMessageError):
        parse_rtcp(value)


def test_rtcp_mux_flag() -> None:
    assert parse_sdp(bodies.CHROME).media[0].rtcp_mux
    assert not parse_sdp(bodies.ASTERISK).media[0].rtcp_mux


def test_crypto_of_rfc4568_example() -> None:
    (crypto,) = parse_sdp(bodies.RFC4568_EXAMPLE).media[0].crypto()
    assert crypto.tag == 1
    assert crypto.suite == "AES_CM_128_HMAC_SHA1_80"
    (key,) = crypto.keys
    assert key.key_salt == base64.b64decode("WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz")
    assert key.lifetime == 2**20
    assert key.mki == (1, 4)
    assert crypto.session_params == ("FEC_ORDER=FEC_SRTP",)
    assert crypto.format() == bodies.RFC4568_EXAMPLE.decode().split("a=crypto:")[1].strip()


def test_crypto_with_several_keys_and_decimal_lifetime() -> None:
    key1 = base64.b64encode(bytes(30)).decode()
    key2 = base64.b64encode(bytes(range(30))).decode()
    crypto = parse_crypto(f"7 AES_CM_128_HMAC_SHA1_32 inline:{key1}|1000|1:1;inline:{key2}|2:1")
    assert crypto.keys == (
        CryptoKey(key_salt=bytes(30), lifetime=1000, mki=(1, 1)),
        CryptoKey(key_salt=bytes(range(30)), mki=(2, 1)),
    )
    assert parse_crypto(crypto.format()) == crypto


def test_crypto_with_unknown_suite_keeps_any_key_length() -> None:
    crypto = parse_crypto("1 FUTURE_SUITE inline:" + base64.b64encode(b"k" * 10).decode())
    assert crypto == Crypto(tag=1, suite="FUTURE_SUITE", keys=(CryptoKey(key_salt=b"k" * 10),))


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80", id="no-key"),
        pytest.param("x AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40, id="tag-not-number"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 uri:http://x", id="not-inline"),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", id="not-base64"),
        pytest.param(
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(16)).decode(),
            id="short-key",
        ),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "|1:1|2:1", id="two-mki"),
        pytest.param(
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "|1:4|2^20", id="lifetime-after-mki"
        ),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "|2^x", id="bad-exponent"),
        pytest.param(
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + "|1|2|3", id="too-many-fields"
        ),
        pytest.param("1 AES_CM_128_HMAC_SHA1_80 inline:", id="empty-key"),
        pytest.param("1 FUTURE inline:", id="empty-key-unknown-suite"),
    ],
)
def test_malformed_crypto_is_unusable(value: str) -> None:
    with pytest.raises(MalformedMessageError) as err:
        parse_crypto(value)
    assert err.value.error_code == 488


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        (Setup.ACTPASS, Setup.ACTIVE),
        (Setup.ACTIVE, Setup.PASSIVE),
        (Setup.PASSIVE, Setup.ACTIVE),
        (Setup.HOLDCONN, Setup.HOLDCONN),
    ],
)
def test_setup_answer_rfc4145(offered: Setup, answered: Setup) -> None:
    assert offered.answer() is answered


def test_setup_and_connection_accessors() -> None:
    desc = parse_sdp(media_with("setup:passive", "connection:new", "mid:audio0"))
    media = desc.media[0]
    assert media.setup is Setup.PASSIVE
    assert media.connection_mode is ConnectionMode.NEW
    assert media.mid == "audio0"
    assert parse_sdp(bodies.CHROME).setup_of(0) is Setup.ACTPASS


@pytest.mark.parametrize("line", ["setup:sideways", "connection:old", "setup"])
def test_malformed_setup_or_connection_is_unusable(line: str) -> None:
    media = parse_sdp(media_with(line)).media[0]
    with pytest.raises(MalformedMessageError):
        _ = media.setup if line.startswith("setup") else media.connection_mode


def test_ice_attributes_stay_raw() -> None:
    desc = parse_sdp(bodies.BARESIP_SRTP_ICE)
    assert desc.has("ice-lite")
    assert desc.ice_ufrag_of(0) == "jB7e"
    first = desc.media[0].get_all("candidate")[0]
    assert first.value == "1 1 UDP 2113932031 192.0.2.10 10002 typ host"
