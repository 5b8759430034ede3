"""The SDP codec (RFC 8866 §5): real peers' bodies, tolerance and rejections."""

from __future__ import annotations

import pytest

from natkit.errors import MalformedMessageError
from natkit.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    SdpConfig,
    Timing,
    UnknownLines,
    parse_sdp,
    serialize_sdp,
)
from tests.sdp import bodies

MINIMAL = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
AUDIO = MINIMAL + b"m=audio 4000 RTP/AVP 0\r\n"


@pytest.mark.parametrize("body", bodies.REAL_BODIES.values(), ids=bodies.REAL_BODIES.keys())
def test_real_body_survives_a_round_trip(body: bytes) -> None:
    desc = parse_sdp(body)
    assert parse_sdp(serialize_sdp(desc)) == desc


@pytest.mark.parametrize(
    "body",
    [b for k, b in bodies.REAL_BODIES.items() if k != "sipp-uac-pcap"],
    ids=[k for k in bodies.REAL_BODIES if k != "sipp-uac-pcap"],
)
def test_real_crlf_body_is_written_back_byte_for_byte(body: bytes) -> None:
    assert serialize_sdp(parse_sdp(body)) == body


def test_bare_lf_body_parses_like_its_crlf_form() -> None:
    lf = parse_sdp(bodies.SIPP_UAC_PCAP)
    crlf = parse_sdp(bodies.SIPP_UAC_PCAP.replace(b"\n", b"\r\n"))
    assert lf == crlf
    assert serialize_sdp(lf) == bodies.SIPP_UAC_PCAP.replace(b"\n", b"\r\n")


def test_str_input_parses_like_bytes() -> None:
    assert parse_sdp(bodies.ASTERISK.decode()) == parse_sdp(bodies.ASTERISK)


def test_origin_fields() -> None:
    origin = parse_sdp(bodies.CHROME).origin
    assert origin.username == "-"
    assert origin.session_id == 4611731400430051336
    assert origin.session_version == 2
    assert (origin.nettype, origin.addrtype, origin.address) == ("IN", "IP4", "127.0.0.1")


def test_session_text_fields_of_rfc8866_example() -> None:
    desc = parse_sdp(bodies.RFC8866_EXAMPLE)
    assert desc.session_name == "Call to John Smith"
    assert desc.information == "SDP Offer #1"
    assert desc.uri == "http://www.jdoe.example.com/home.html"
    assert desc.emails == ("Jane Doe <jane@jdoe.example.com>",)
    assert desc.phones == ("+1 617 555-6011",)
    assert [m.port for m in desc.media] == [49170, 49180, 51372]


def test_media_level_ipv6_connection_overrides_session() -> None:
    desc = parse_sdp(bodies.RFC8866_EXAMPLE)
    assert desc.connection_of(0) == Connection(address="198.51.100.1")
    assert desc.connection_of(2) == Connection(addrtype="IP6", address="2001:db8::2")


def test_ipv4_multicast_ttl_and_session_recvonly() -> None:
    desc = parse_sdp(bodies.RFC4566_EXAMPLE)
    assert desc.connection == Connection(address="224.2.17.12", ttl=127)
    assert desc.timings == (Timing(2873397496, 2873404696),)
    assert desc.direction_of(0) is Direction.RECVONLY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "IN IP4 224.2.1.1/127/3",
            Connection(address="224.2.1.1", ttl=127, number=3),
            id="ttl-number",
        ),
        pytest.param(
            "IN IP6 ff15::101/3",
            Connection(addrtype="IP6", address="ff15::101", number=3),
            id="ip6-number",
        ),
        pytest.param("IN IP4 host.example.com", Connection(address="host.example.com"), id="fqdn"),
    ],
)
def test_connection_forms(text: str, expected: Connection) -> None:
    desc = parse_sdp(MINIMAL.replace(b"c=IN IP4 192.0.2.1", b"c=" + text.encode()))
    assert desc.connection == expected
    assert parse_sdp(serialize_sdp(desc)) == desc


def test_bandwidth_lines_at_both_levels() -> None:
    body = (
        MINIMAL.replace(b"t=0", b"b=CT:128\r\nt=0")
        + b"m=audio 4000 RTP/AVP 0\r\nb=AS:64\r\nb=TIAS:64000\r\n"
    )
    desc = parse_sdp(body)
    assert desc.bandwidths == (Bandwidth("CT", 128),)
    assert desc.media[0].bandwidths == (Bandwidth("AS", 64), Bandwidth("TIAS", 64000))


def test_port_count_and_non_rtp_formats() -> None:
    desc = parse_sdp(
        MINIMAL
        + b"m=video 49170/2 RTP/AVP 31\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    )
    assert (desc.media[0].port, desc.media[0].port_count) == (49170, 2)
    assert desc.media[1].formats == ("webrtc-datachannel",)
    assert not desc.media[1].is_rtp


def test_attributes_keep_order_and_unknown_ones() -> None:
    media = parse_sdp(bodies.CHROME).media[0]
    names = [a.name for a in media.attributes]
    assert names[:4] == ["rtcp", "ice-ufrag", "ice-pwd", "ice-options"]
    assert media.get("extmap") == Attribute(
        "extmap", "1 urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    )
    assert parse_sdp(bodies.CHROME).get("msid-semantic") == Attribute(
        "msid-semantic", " WMS 2f5d3c4e-7a0b-4c1d-9e8f-112233445566"
    )


def test_attribute_without_value_and_with_empty_value() -> None:
    desc = parse_sdp(AUDIO + b"a=rtcp-mux\r\na=label:\r\n")
    assert desc.media[0].attributes == (Attribute("rtcp-mux"), Attribute("label", ""))
    assert desc.media[0].rtcp_mux


def test_trailing_whitespace_and_blank_lines_are_tolerated() -> None:
    body = AUDIO.replace(b"\r\n", b"  \t\r\n") + b"\r\n\r\n"
    assert parse_sdp(body) == parse_sdp(AUDIO)


def test_lines_out_of_rfc_order_are_accepted() -> None:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=0 0\r\ns=-\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\nc=IN IP4 192.0.2.9\r\n"
    )
    desc = parse_sdp(body)
    assert desc.connection_of(0) == Connection(address="192.0.2.9")
    assert desc.direction_of(0) is Direction.SENDONLY


def test_missing_t_line_defaults_to_unbounded_session() -> None:
    desc = parse_sdp(AUDIO.replace(b"t=0 0\r\n", b""))
    assert desc.timings == (Timing(0, 0),)


def test_repeat_lines_stay_with_their_timing() -> None:
    desc = parse_sdp(MINIMAL + b"r=604800 3600 0 90000\r\n")
    assert desc.timings == (Timing(0, 0, ("604800 3600 0 90000",)),)


def test_repeat_lines_stay_with_their_own_timing_among_several() -> None:
    body = MINIMAL + b"r=1 2 3\r\nr=4 5 6\r\nt=7 8\r\nt=9 10\r\nr=11 12 13\r\n"
    assert parse_sdp(body).timings == (
        Timing(0, 0, ("1 2 3", "4 5 6")),
        Timing(7, 8),
        Timing(9, 10, ("11 12 13",)),
    )


def test_timing_and_repeat_lines_are_bounded_like_other_lines() -> None:
    with pytest.raises(MalformedMessageError, match="too many lines"):
        parse_sdp(MINIMAL + b"r=1 2 3\r\n" * 10, SdpConfig(max_attributes=10))
    with pytest.raises(MalformedMessageError, match="too many lines"):
        parse_sdp(MINIMAL + b"t=1 2\r\n" * 10, SdpConfig(max_attributes=10))


def test_unknown_line_types_are_kept_by_default() -> None:
    body = AUDIO.replace(b"t=0 0\r\n", b"t=0 0\r\nx=vendor session\r\n") + b"y=vendor media\r\n"
    desc = parse_sdp(body)
    assert desc.extra_lines == (("x", "vendor session"),)
    assert desc.media[0].extra_lines == (("y", "vendor media"),)
    assert b"x=vendor session\r\n" in serialize_sdp(desc)


def test_unknown_line_types_can_be_dropped() -> None:
    body = AUDIO + b"y=vendor media\r\n"
    desc = parse_sdp(body, SdpConfig(unknown_lines=UnknownLines.DROP))
    assert desc == parse_sdp(AUDIO)


def test_unknown_line_types_can_be_rejected() -> None:
    with pytest.raises(MalformedMessageError) as err:
        parse_sdp(AUDIO + b"y=vendor\r\n", SdpConfig(unknown_lines=UnknownLines.REJECT))
    assert err.value.error_code == 400


def test_latin1_session_name_survives_a_round_trip() -> None:
    body = MINIMAL.replace(b"s=-", b"s=Caf\xe9")
    assert serialize_sdp(parse_sdp(body)) == body


def test_port_zero_media_needs_no_connection() -> None:
    body = MINIMAL.replace(b"c=IN IP4 192.0.2.1\r\n", b"") + b"m=video 0 RTP/AVP 31\r\n"
    assert parse_sdp(body).media[0].rejected


REJECTED_400 = [
    pytest.param(b"", id="empty"),
    pytest.param(b"o=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", id="no-v"),
    pytest.param(b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n", id="v-not-0"),
    pytest.param(b"v=0\r\ns=-\r\nt=0 0\r\n", id="no-o"),
    pytest.param(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nt=0 0\r\n", id="no-s"),
    pytest.param(MINIMAL + b"s=again\r\n", id="two-s"),
    pytest.param(MINIMAL + b"o=- 1 1 IN IP4 192.0.2.1\r\n", id="two-o"),
    pytest.param(MINIMAL + b"v=0\r\n", id="two-v"),
    pytest.param(MINIMAL.replace(b"o=- 1 1", b"o=- x 1"), id="origin-id-not-number"),
    pytest.param(MINIMAL.replace(b" IP4 192.0.2.1\r\ns", b" IP4\r\ns"), id="origin-5-fields"),
    pytest.param(MINIMAL + b"m=audio 65536 RTP/AVP 0\r\n", id="port-too-big"),
    pytest.param(MINIMAL + b"m=audio -1 RTP/AVP 0\r\n", id="port-negative"),
    pytest.param(MINIMAL + b"m=audio x RTP/AVP 0\r\n", id="port-not-number"),
    pytest.param(MINIMAL + b"m=audio 4000/0 RTP/AVP 0\r\n", id="port-count-0"),
    pytest.param(MINIMAL + b"m=audio 4000\r\n", id="m-too-short"),
    pytest.param(MINIMAL + b"m=audio 4000 RTP/AVP\r\n", id="m-no-formats"),
    pytest.param(MINIMAL + b"garbage\r\n", id="not-a-line"),
    pytest.param(MINIMAL + b"a=\r\n", id="empty-attribute"),
    pytest.param(MINIMAL + b"a=x\rb\r\n", id="cr-inside-line"),
    pytest.param(MINIMAL + b"a=x\x00\r\n", id="nul"),
    pytest.param(MINIMAL + b"b=AS\r\n", id="bandwidth-no-colon"),
    pytest.param(MINIMAL + b"b=AS:lots\r\n", id="bandwidth-not-number"),
    pytest.param(MINIMAL.replace(b"t=0 0", b"t=0"), id="timing-one-field"),
    pytest.param(MINIMAL.replace(b"t=0 0\r\n", b"r=1 2 3\r\nt=0 0\r\n"), id="repeat-before-timing"),
    pytest.param(MINIMAL.replace(b"192.0.2.1\r\nt", b"224.2.1.1/256\r\nt"), id="ttl-too-big"),
    pytest.param(
        MINIMAL.replace(b"c=IN IP4 192.0.2.1", b"c=IN IP6 ff15::1/2/3"), id="ip6-with-ttl"
    ),
    pytest.param(MINIMAL.replace(b"c=IN IP4 192.0.2.1", b"c=IN IP4"), id="connection-2-fields"),
    pytest.param(AUDIO + b"t=0 0\r\n", id="t-inside-media"),
    pytest.param(
        MINIMAL.replace(b"c=IN IP4 192.0.2.1", b"c=IN IP4 /127"), id="connection-no-address"
    ),
    pytest.param(
        MINIMAL.replace(b"192.0.2.1\r\nt", b"224.2.1.1/1/2/3\r\nt"), id="connection-3-suffixes"
    ),
    pytest.param(AUDIO + b"i=one\r\ni=two\r\n", id="two-media-titles"),
]


@pytest.mark.parametrize("body", REJECTED_400)
def test_unparsable_body_is_rejected_with_400(body: bytes) -> None:
    with pytest.raises(MalformedMessageError) as err:
        parse_sdp(body)
    assert err.value.error_code == 400


REJECTED_488 = [
    pytest.param(
        MINIMAL.replace(b"c=IN IP4 192.0.2.1\r\n", b"") + b"m=audio 4000 RTP/AVP 0\r\n",
        id="no-connection",
    ),
    pytest.param(
        MINIMAL.replace(b"c=IN IP4 192.0.2.1\r\n", b"")
        + b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4002 RTP/AVP 0\r\n",
        id="second-media-no-connection",
    ),
    pytest.param(MINIMAL + b"m=audio 4000 RTP/AVP PCMU\r\n", id="rtp-format-not-number"),
    pytest.param(MINIMAL + b"m=audio 4000 RTP/AVP 128\r\n", id="rtp-format-over-127"),
    pytest.param(
        MINIMAL + b"m=audio 4000 UDP/TLS/RTP/SAVPF 0 x\r\n", id="webrtc-format-not-number"
    ),
]


@pytest.mark.parametrize("body", REJECTED_488)
def test_unusable_body_is_rejected_with_488(body: bytes) -> None:
    with pytest.raises(MalformedMessageError) as err:
        parse_sdp(body)
    assert err.value.error_code == 488


def test_body_over_size_limit_is_rejected_before_parsing() -> None:
    with pytest.raises(MalformedMessageError, match="limit 100"):
        parse_sdp(AUDIO + b"a=x\r\n" * 30, SdpConfig(max_size=100))


def test_too_many_media_sections() -> None:
    body = MINIMAL + b"m=audio 4000 RTP/AVP 0\r\n" * 3
    assert len(parse_sdp(body, SdpConfig(max_media=3)).media) == 3
    with pytest.raises(MalformedMessageError, match="media sections"):
        parse_sdp(body, SdpConfig(max_media=2))


def test_too_many_attributes() -> None:
    with pytest.raises(MalformedMessageError, match="attributes"):
        parse_sdp(AUDIO + b"a=x\r\n" * 11, SdpConfig(max_attributes=10))


def test_too_many_unknown_lines_count_as_attributes() -> None:
    with pytest.raises(MalformedMessageError, match="attributes"):
        parse_sdp(AUDIO + b"y=x\r\n" * 11, SdpConfig(max_attributes=10))


def test_too_many_formats() -> None:
    with pytest.raises(MalformedMessageError, match="formats"):
        parse_sdp(
            MINIMAL + b"m=audio 4000 RTP/AVP " + b"0 " * 5 + b"\r\n", SdpConfig(max_formats=4)
        )


def test_too_many_other_lines_in_a_section() -> None:
    with pytest.raises(MalformedMessageError, match="too many lines"):
        parse_sdp(AUDIO + b"b=AS:1\r\n" * 11, SdpConfig(max_attributes=10))


def test_default_limits_carry_chrome_offer() -> None:
    assert len(parse_sdp(bodies.CHROME).media) == 3


def test_serialized_empty_session_name_is_a_space() -> None:
    desc = parse_sdp(MINIMAL.replace(b"s=-", b"s="))
    assert desc.session_name == ""
    assert b"\r\ns= \r\n" in serialize_sdp(desc)


def test_size_limit_counts_bytes_of_text_input() -> None:
    text = bodies.SIPP_UAC.decode().replace("s=-", "s=" + "\u00e9" * 60)
    assert len(text) < 200 < len(text.encode())
    with pytest.raises(MalformedMessageError, match="bytes"):
        parse_sdp(text, SdpConfig(max_size=200))


def test_key_time_zone_and_media_title_lines() -> None:
    body = (
        MINIMAL.replace(b"t=0 0\r\n", b"t=0 0\r\nz=2882844526 -1h 2898848070 0\r\nk=prompt\r\n")
        + b"m=audio 4000 RTP/AVP 0\r\ni=main audio\r\nk=clear:secret\r\n"
    )
    desc = parse_sdp(body)
    assert (desc.time_zones, desc.key) == ("2882844526 -1h 2898848070 0", "prompt")
    assert (desc.media[0].title, desc.media[0].key) == ("main audio", "clear:secret")
    assert serialize_sdp(desc) == body
