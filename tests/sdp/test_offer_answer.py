"""RFC 3264 offer/answer: offers from capabilities, answers, and what was agreed."""

from __future__ import annotations

import dataclasses

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.rng import seeded_rng
from natkit.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Attribute,
    Codec,
    Direction,
    LocalCapabilities,
    MediaCapabilities,
    PayloadNumbering,
    SessionDescription,
    Setup,
    SrtpPolicy,
    answer,
    build_offer,
    has_accepted_media,
    negotiated_media,
    parse_sdp,
    serialize_sdp,
)
from tests.sdp import bodies

OPUS = Codec(name="opus", clock_rate=48000, channels=2, payload_type=111, fmtp="useinbandfec=1")
HEAD = b"v=0\r\no=bob 7 7 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n"


def caps(
    *media: MediaCapabilities, address: str = "192.0.2.5", seed: int = 1, **kw: object
) -> LocalCapabilities:
    return LocalCapabilities(
        address=address,
        media=media or (MediaCapabilities(port=4000),),
        rng=seeded_rng(seed),
        **kw,  # type: ignore[arg-type]
    )


def audio(**kw: object) -> MediaCapabilities:
    return MediaCapabilities(port=4000, **kw)  # type: ignore[arg-type]


def offer_of(*lines: str) -> SessionDescription:
    return parse_sdp(HEAD + "".join(line + "\r\n" for line in lines).encode())


def attr_names(desc: SessionDescription, index: int = 0) -> list[str]:
    return [a.name for a in desc.media[index].attributes]


# -- offers ---------------------------------------------------------------------------


def test_offer_lists_codecs_with_rtpmap_and_fmtp() -> None:
    offer = build_offer(caps())
    text = serialize_sdp(offer).decode()
    assert "m=audio 4000 RTP/AVP 0 8 101\r\n" in text
    assert (
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        in text
    )
    assert "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n" in text
    assert "c=IN IP4 192.0.2.5\r\n" in text
    assert parse_sdp(serialize_sdp(offer)) == offer


def test_offer_origin_is_random_from_rng_and_uses_local_address() -> None:
    one, two = build_offer(caps(seed=1)), build_offer(caps(seed=2))
    assert one.origin.session_id != two.origin.session_id
    assert build_offer(caps(seed=1)) == one
    assert (one.origin.username, one.origin.address, one.origin.session_version) == (
        "-",
        "192.0.2.5",
        1,
    )


def test_offer_on_ipv6() -> None:
    offer = build_offer(caps(address="2001:db8::5"))
    assert offer.connection is not None and offer.connection.addrtype == "IP6"
    assert offer.origin.addrtype == "IP6"


def test_offer_announces_rtcp_port_only_when_not_rtp_plus_one() -> None:
    assert "rtcp" not in attr_names(build_offer(caps(audio(rtcp_port=4001))))
    offer = build_offer(caps(audio(rtcp_port=4010)))
    assert offer.media[0].get("rtcp") == Attribute("rtcp", "4010")


def test_offer_packet_times() -> None:
    media = build_offer(caps(audio(ptime=30, maxptime=60))).media[0]
    assert (media.ptime, media.maxptime) == (30.0, 60.0)
    assert build_offer(caps(audio(ptime=None))).media[0].ptime is None


def test_offer_without_rtcp_mux() -> None:
    assert not build_offer(caps(audio(rtcp_mux=False))).media[0].rtcp_mux


def test_offer_with_required_srtp_is_savp_with_a_key_per_suite() -> None:
    offer = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED)))
    media = offer.media[0]
    assert media.proto == "RTP/SAVP"
    cryptos = media.crypto()
    assert [(c.tag, c.suite) for c in cryptos] == [
        (1, "AES_CM_128_HMAC_SHA1_80"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
    ]
    assert all(len(c.keys[0].key_salt) == 30 for c in cryptos)
    assert cryptos[0].keys[0].key_salt != cryptos[1].keys[0].key_salt


def test_offer_with_optional_srtp_is_avp_with_crypto() -> None:
    media = build_offer(caps(audio(srtp=SrtpPolicy.OPTIONAL))).media[0]
    assert media.proto == "RTP/AVP"
    assert len(media.crypto()) == 2


def test_offer_key_length_follows_suite() -> None:
    media = build_offer(
        caps(audio(srtp=SrtpPolicy.REQUIRED, crypto_suites=("AES_256_CM_HMAC_SHA1_80",)))
    ).media[0]
    assert len(media.crypto()[0].keys[0].key_salt) == 46


def test_offer_connection_oriented_media() -> None:
    media = build_offer(caps(audio(proto="TCP/RTP/AVP", setup=Setup.ACTPASS))).media[0]
    assert media.proto == "TCP/RTP/AVP"
    assert (media.setup, media.connection_mode and media.connection_mode.value) == (
        Setup.ACTPASS,
        "new",
    )


def test_offer_media_level_address_and_mid() -> None:
    offer = build_offer(caps(audio(address="203.0.113.9", mid="a0")))
    assert offer.connection_of(0) is not None and offer.connection_of(0).address == "203.0.113.9"  # type: ignore[union-attr]
    assert offer.media[0].mid == "a0"


# -- answers: codecs ------------------------------------------------------------------


def test_answer_keeps_offerer_order_of_common_codecs() -> None:
    ours = caps(audio(codecs=(PCMA, PCMU, TELEPHONE_EVENT)))
    result = answer(parse_sdp(bodies.BARESIP), ours)
    assert result.media[0].formats == ("0", "8", "101")
    assert result.media[0].port == 4000


def test_answer_matches_static_payload_types_by_number_without_rtpmap() -> None:
    result = answer(offer_of("m=audio 5000 RTP/AVP 8 0"), caps())
    assert result.media[0].formats == ("8", "0")


def test_answer_uses_own_numbers_for_dynamic_codecs() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 96 0", "a=rtpmap:96 OPUS/48000/2")
    result = answer(offer, caps(audio(codecs=(OPUS, PCMU))))
    assert result.media[0].formats == ("111", "0")
    assert result.media[0].get("fmtp") == Attribute("fmtp", "111 useinbandfec=1")


def test_answer_can_use_offerers_numbers() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 96 0", "a=rtpmap:96 opus/48000/2")
    result = answer(
        offer, caps(audio(codecs=(OPUS, PCMU)), payload_numbering=PayloadNumbering.OFFERER)
    )
    assert result.media[0].formats == ("96", "0")


def test_answer_avoids_own_number_when_offer_uses_it_for_another_codec() -> None:
    # Linphone offers telephone-event/48000 on 101 and telephone-event/8000 on 100.
    result = answer(parse_sdp(bodies.LINPHONE), caps())
    assert result.media[0].formats == ("0", "8", "100")
    assert result.media[1].port == 0


def test_answer_codec_match_needs_same_clock_rate_and_channels() -> None:
    offer = offer_of(
        "m=audio 5000 RTP/AVP 96 97", "a=rtpmap:96 opus/48000", "a=rtpmap:97 PCMU/16000"
    )
    result = answer(offer, caps(audio(codecs=(OPUS, PCMU))))
    assert result.media[0].port == 0


def test_answer_drops_a_local_codec_whose_payload_type_is_taken() -> None:
    clash = Codec(name="G722", clock_rate=8000, payload_type=101)
    offer = offer_of(
        "m=audio 5000 RTP/AVP 96 97", "a=rtpmap:96 telephone-event/8000", "a=rtpmap:97 G722/8000"
    )
    result = answer(offer, caps(audio(codecs=(TELEPHONE_EVENT, clash, PCMU))))
    assert result.media[0].port == 0  # G722 cannot have 101 too; events alone are no audio


def test_answer_rejects_stream_with_no_common_codec() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 18", "a=rtpmap:18 G729/8000")
    result = answer(offer, caps())
    assert (result.media[0].port, result.media[0].proto, result.media[0].formats) == (
        0,
        "RTP/AVP",
        ("18",),
    )
    assert not has_accepted_media(result)


def test_answer_rejects_telephone_event_alone() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 18 101", "a=rtpmap:101 telephone-event/8000")
    assert answer(offer, caps()).media[0].port == 0


def test_answer_ignores_dynamic_type_without_rtpmap() -> None:
    assert answer(offer_of("m=audio 5000 RTP/AVP 97 0"), caps()).media[0].formats == ("0",)


def test_answer_rejects_only_the_stream_with_a_malformed_rtpmap() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 0", "a=rtpmap:0 PCMU", "m=audio 5002 RTP/AVP 0")
    result = answer(offer, caps(audio(), MediaCapabilities(port=4002)))
    assert [m.port for m in result.media] == [0, 4000]  # the unused capability answers it


def test_answer_has_one_m_line_per_offered_in_order() -> None:
    result = answer(parse_sdp(bodies.LINPHONE), caps())
    assert [(m.media, m.port) for m in result.media] == [("audio", 4000), ("video", 0)]


def test_answer_rejects_webrtc_offer_natkit_cannot_do() -> None:
    result = answer(parse_sdp(bodies.CHROME), caps(audio(srtp=SrtpPolicy.OPTIONAL)))
    assert [m.port for m in result.media] == [0, 0, 0]
    assert [m.mid for m in result.media] == ["0", "1", "2"]
    assert [m.proto for m in result.media] == [
        "UDP/TLS/RTP/SAVPF",
        "UDP/TLS/RTP/SAVPF",
        "UDP/DTLS/SCTP",
    ]


def test_answer_rejects_offered_port_zero_stream() -> None:
    assert answer(offer_of("m=audio 0 RTP/AVP 0"), caps()).media[0].port == 0


def test_each_capability_answers_one_stream() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 0", "m=audio 5002 RTP/AVP 0")
    assert [m.port for m in answer(offer, caps()).media] == [4000, 0]
    two = caps(audio(), MediaCapabilities(port=4002))
    assert [m.port for m in answer(offer, two).media] == [4000, 4002]


def test_answer_proto_not_in_capabilities_is_rejected() -> None:
    offer = offer_of("m=audio 5000 RTP/AVPF 0")
    assert answer(offer, caps()).media[0].proto == "RTP/AVPF"
    assert answer(offer, caps(audio(protos=("RTP/AVP",)))).media[0].port == 0


# -- answers: direction and hold ------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "local", "expected"),
    [
        ("sendrecv", Direction.SENDRECV, Direction.SENDRECV),
        ("sendonly", Direction.SENDRECV, Direction.RECVONLY),
        ("recvonly", Direction.SENDRECV, Direction.SENDONLY),
        ("inactive", Direction.SENDRECV, Direction.INACTIVE),
        ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),
        ("sendrecv", Direction.RECVONLY, Direction.RECVONLY),
        ("sendonly", Direction.SENDONLY, Direction.INACTIVE),
        ("recvonly", Direction.RECVONLY, Direction.INACTIVE),
        ("sendrecv", Direction.INACTIVE, Direction.INACTIVE),
    ],
)
def test_answer_direction_rfc3264_6_1(offered: str, local: Direction, expected: Direction) -> None:
    result = answer(
        offer_of("m=audio 5000 RTP/AVP 0", f"a={offered}"), caps(audio(direction=local))
    )
    assert result.direction_of(0) is expected


def test_session_level_direction_applies_to_media() -> None:
    result = answer(parse_sdp(bodies.POLYCOM_HOLD), caps())
    assert result.direction_of(0) is Direction.RECVONLY


def test_rfc2543_hold_with_zero_address_is_answered_recvonly() -> None:
    offer = parse_sdp(bodies.CISCO_HOLD)
    result = answer(offer, caps())
    assert result.direction_of(0) is Direction.RECVONLY
    (stream,) = negotiated_media(offer, result, local_is_offerer=False)
    assert stream.remote_hold
    assert stream.remote_rtp is None and stream.remote_rtcp is None
    assert stream.direction is Direction.RECVONLY


def test_zero_address_with_ice_is_not_hold() -> None:
    offer = offer_of(
        "m=audio 9 RTP/AVP 0",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdefghijkl",
    )
    result = answer(offer, caps())
    assert result.direction_of(0) is Direction.SENDRECV
    (stream,) = negotiated_media(offer, result, local_is_offerer=False)
    assert not stream.remote_hold
    assert stream.remote_rtp is None  # the address comes from ICE


def test_hold_by_sendonly_seen_by_answerer() -> None:
    offer = parse_sdp(bodies.ASTERISK_HOLD)
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert stream.remote_hold
    assert stream.direction is Direction.RECVONLY
    assert stream.remote_rtp == Endpoint("203.0.113.10", 10442)


def test_our_hold_is_not_remote_hold() -> None:
    local = caps(audio(direction=Direction.SENDONLY))
    offer = build_offer(local)
    reply = answer(offer, caps(address="198.51.100.7"))
    assert reply.direction_of(0) is Direction.RECVONLY
    (stream,) = negotiated_media(offer, reply)
    assert not stream.remote_hold
    assert stream.direction is Direction.SENDONLY


# -- answers: rtcp, rtcp-mux ----------------------------------------------------------


def test_rtcp_mux_is_accepted_when_offered_and_wanted() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 0", "a=rtcp-mux")
    assert answer(offer, caps()).media[0].rtcp_mux
    assert not answer(offer, caps(audio(rtcp_mux=False))).media[0].rtcp_mux
    assert not answer(offer_of("m=audio 5000 RTP/AVP 0"), caps()).media[0].rtcp_mux


def test_negotiated_rtcp_mux_sends_rtcp_to_rtp_port() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 0", "a=rtcp-mux", "a=rtcp:5009")
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert stream.rtcp_mux
    assert stream.remote_rtcp == stream.remote_rtp == Endpoint("198.51.100.7", 5000)


def test_negotiated_rtcp_attribute_with_address_rfc3605() -> None:
    offer = offer_of("m=audio 49170 RTP/AVP 0", "a=rtcp:53020 IN IP4 126.16.64.4")
    (stream,) = negotiated_media(
        offer, answer(offer, caps(audio(rtcp_mux=False))), local_is_offerer=False
    )
    assert stream.remote_rtcp == Endpoint("126.16.64.4", 53020)
    assert stream.remote_rtp == Endpoint("198.51.100.7", 49170)


def test_negotiated_rtcp_attribute_port_only() -> None:
    offer = offer_of("m=audio 49170 RTP/AVP 0", "a=rtcp:53020")
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert stream.remote_rtcp == Endpoint("198.51.100.7", 53020)


def test_negotiated_rtcp_to_unspecified_address_is_unknown() -> None:
    offer = offer_of("m=audio 49170 RTP/AVP 0", "a=rtcp:9 IN IP4 0.0.0.0")
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert stream.remote_rtp == Endpoint("198.51.100.7", 49170)
    assert stream.remote_rtcp is None


def test_negotiated_rtcp_defaults_to_rtp_plus_one() -> None:
    offer = parse_sdp(bodies.SIPP_UAC)
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert (stream.remote_rtp, stream.remote_rtcp) == (
        Endpoint("127.0.0.1", 6000),
        Endpoint("127.0.0.1", 6001),
    )


def test_answer_announces_nondefault_rtcp_port() -> None:
    result = answer(parse_sdp(bodies.SIPP_UAC), caps(audio(rtcp_port=4100)))
    assert result.media[0].get("rtcp") == Attribute("rtcp", "4100")


# -- answers: SRTP --------------------------------------------------------------------


def test_answer_picks_first_supported_suite_with_fresh_key() -> None:
    offer = parse_sdp(bodies.BARESIP_SRTP_ICE)
    result = answer(offer, caps(audio(srtp=SrtpPolicy.OPTIONAL)))
    media = result.media[0]
    assert media.proto == "RTP/SAVP"
    (crypto,) = media.crypto()
    assert (crypto.tag, crypto.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    offered_key = offer.media[0].crypto()[0].keys[0].key_salt
    assert len(crypto.keys[0].key_salt) == 30 and crypto.keys[0].key_salt != offered_key


def test_answer_honours_offerers_suite_order() -> None:
    offer = parse_sdp(bodies.BARESIP_SRTP_ICE)
    ours = caps(audio(srtp=SrtpPolicy.REQUIRED, crypto_suites=("AES_CM_128_HMAC_SHA1_32",)))
    (crypto,) = answer(offer, ours).media[0].crypto()
    assert (crypto.tag, crypto.suite) == (2, "AES_CM_128_HMAC_SHA1_32")


def test_srtp_keys_seen_from_both_ends() -> None:
    alice_caps = caps(audio(srtp=SrtpPolicy.REQUIRED), seed=10)
    bob_caps = caps(audio(srtp=SrtpPolicy.REQUIRED), address="198.51.100.7", seed=20)
    offer = build_offer(alice_caps)
    reply = answer(offer, bob_caps)
    (alice,) = negotiated_media(offer, reply, local_is_offerer=True)
    (bob,) = negotiated_media(offer, reply, local_is_offerer=False)
    assert alice.srtp is not None and bob.srtp is not None
    assert alice.srtp.local_key_salt == bob.srtp.remote_key_salt
    assert alice.srtp.remote_key_salt == bob.srtp.local_key_salt
    assert alice.srtp.local_key_salt != alice.srtp.remote_key_salt
    assert alice.srtp.suite == "AES_CM_128_HMAC_SHA1_80"


@pytest.mark.parametrize(
    ("offer_lines", "policy", "accepted", "with_crypto"),
    [
        pytest.param(
            ("m=audio 5000 RTP/SAVP 0",),
            SrtpPolicy.OPTIONAL,
            False,
            False,
            id="savp-without-crypto",
        ),
        pytest.param(
            ("m=audio 5000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40),
            SrtpPolicy.NONE,
            False,
            False,
            id="savp-but-no-srtp-here",
        ),
        pytest.param(
            ("m=audio 5000 RTP/AVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40),
            SrtpPolicy.NONE,
            True,
            False,
            id="best-effort-declined",
        ),
        pytest.param(
            ("m=audio 5000 RTP/AVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40),
            SrtpPolicy.OPTIONAL,
            True,
            True,
            id="best-effort-taken",
        ),
        pytest.param(
            ("m=audio 5000 RTP/AVP 0",), SrtpPolicy.REQUIRED, False, False, id="required-but-plain"
        ),
        pytest.param(
            ("m=audio 5000 RTP/AVP 0",), SrtpPolicy.OPTIONAL, True, False, id="optional-plain"
        ),
        pytest.param(
            ("m=audio 5000 RTP/SAVP 0", "a=crypto:1 F8_128_HMAC_SHA1_80 inline:" + "A" * 40),
            SrtpPolicy.REQUIRED,
            False,
            False,
            id="unsupported-suite",
        ),
        pytest.param(
            (
                "m=audio 5000 RTP/SAVP 0",
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "A" * 40 + " UNENCRYPTED_SRTP",
            ),
            SrtpPolicy.REQUIRED,
            False,
            False,
            id="session-params",
        ),
        pytest.param(
            (
                "m=audio 5000 RTP/SAVP 0",
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:short",
                "a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:" + "A" * 40,
            ),
            SrtpPolicy.REQUIRED,
            True,
            True,
            id="malformed-line-skipped",
        ),
    ],
)
def test_answer_srtp_policy(
    offer_lines: tuple[str, ...], policy: SrtpPolicy, accepted: bool, with_crypto: bool
) -> None:
    media = answer(offer_of(*offer_lines), caps(audio(srtp=policy))).media[0]
    assert (media.port != 0, bool(media.get_all("crypto"))) == (accepted, with_crypto)


def test_best_effort_srtp_declined_means_plain_rtp_both_ways() -> None:
    offer = build_offer(caps(audio(srtp=SrtpPolicy.OPTIONAL)))
    reply = answer(offer, caps(address="198.51.100.7"))
    assert not reply.media[0].get_all("crypto")
    assert negotiated_media(offer, reply)[0].srtp is None
    assert negotiated_media(offer, reply, local_is_offerer=False)[0].srtp is None


def test_savp_answer_without_keys_is_unusable() -> None:
    offer = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED)))
    reply = answer(offer, caps(audio(srtp=SrtpPolicy.REQUIRED), seed=3))
    stripped = reply.with_media(
        0, reply.media[0].with_attributes(reply.media[0].without(frozenset({"crypto"})))
    )
    with pytest.raises(MalformedMessageError, match="without SRTP keys"):
        negotiated_media(offer, stripped)


def test_negotiated_crypto_answer_for_no_offered_tag_is_unusable() -> None:
    offer = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED)))
    reply = answer(offer, caps(audio(srtp=SrtpPolicy.REQUIRED), seed=3))
    crypto = reply.media[0].crypto()[0]
    bad = dataclasses.replace(crypto, tag=9)
    forged = reply.with_media(
        0,
        reply.media[0].with_attributes(
            tuple(
                Attribute("crypto", bad.format()) if a.name == "crypto" else a
                for a in reply.media[0].attributes
            )
        ),
    )
    with pytest.raises(MalformedMessageError) as err:
        negotiated_media(offer, forged)
    assert err.value.error_code == 488


# -- answers: connection-oriented media -----------------------------------------------


def test_actpass_is_answered_active_and_roles_agree() -> None:
    tcp = audio(proto="TCP/RTP/AVP", protos=("TCP/RTP/AVP",), setup=Setup.ACTPASS)
    offer = build_offer(caps(tcp))
    reply = answer(offer, caps(dataclasses.replace(tcp, setup=None), address="198.51.100.7"))
    assert reply.media[0].setup is Setup.ACTIVE
    assert (
        reply.media[0].connection_mode is not None and reply.media[0].connection_mode.value == "new"
    )
    (ours,) = negotiated_media(offer, reply)
    (theirs,) = negotiated_media(offer, reply, local_is_offerer=False)
    assert (ours.local_setup, theirs.local_setup) == (Setup.PASSIVE, Setup.ACTIVE)


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("a=setup:passive", Setup.ACTIVE),
        ("a=setup:active", Setup.PASSIVE),
        ("a=setup:holdconn", Setup.HOLDCONN),
    ],
)
def test_setup_answers(offered: str, answered: Setup) -> None:
    offer = offer_of("m=audio 5000 TCP/RTP/AVP 0", offered)
    assert answer(offer, caps(audio(protos=("TCP/RTP/AVP",)))).media[0].setup is answered


def test_tcp_offer_without_setup_is_active_so_answer_is_passive() -> None:
    offer = offer_of("m=audio 5000 TCP/RTP/AVP 0")
    assert answer(offer, caps(audio(protos=("TCP/RTP/AVP",)))).media[0].setup is Setup.PASSIVE


def test_non_rtp_tcp_stream_is_rejected() -> None:
    offer = offer_of("m=image 54111 TCP t38", "a=setup:passive", "a=connection:new")
    assert answer(offer, caps()).media[0].port == 0


# -- re-offers ------------------------------------------------------------------------


def test_unchanged_reoffer_keeps_version() -> None:
    first = build_offer(caps())
    again = build_offer(caps(seed=99), previous=first)
    assert again == first


def test_changed_reoffer_increments_version_keeps_session_id() -> None:
    first = build_offer(caps())
    hold = build_offer(caps(audio(direction=Direction.SENDONLY), seed=99), previous=first)
    assert hold.origin.session_id == first.origin.session_id
    assert hold.origin.session_version == first.origin.session_version + 1
    assert hold.direction_of(0) is Direction.SENDONLY


def test_reoffer_keeps_srtp_keys() -> None:
    first = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED)))
    again = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED), seed=99), previous=first)
    assert again.media[0].crypto() == first.media[0].crypto()


def test_reoffer_that_turns_srtp_on_makes_fresh_keys() -> None:
    plain = build_offer(caps())
    broken = plain.with_media(
        0,
        plain.media[0].with_attributes(
            (
                *plain.media[0].attributes,
                Attribute("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:bad"),
            )
        ),
    )
    secure = build_offer(caps(audio(srtp=SrtpPolicy.REQUIRED)), previous=broken)
    assert [c.tag for c in secure.media[0].crypto()] == [1, 2]
    assert secure.origin.session_version == plain.origin.session_version + 1


def test_reoffer_turns_dropped_stream_into_port_zero() -> None:
    first = build_offer(
        caps(
            audio(),
            MediaCapabilities(
                media="video",
                port=4002,
                codecs=(Codec(name="H264", clock_rate=90000, payload_type=99),),
            ),
        )
    )
    second = build_offer(caps(audio()), previous=first)
    assert [(m.media, m.port) for m in second.media] == [("audio", 4000), ("video", 0)]


def test_reanswer_to_same_offer_is_the_same_answer() -> None:
    offer = parse_sdp(bodies.BARESIP_SRTP_ICE)
    ours = audio(srtp=SrtpPolicy.REQUIRED)
    first = answer(offer, caps(ours))
    assert answer(offer, caps(ours, seed=42), previous=first) == first


def test_reanswer_to_hold_increments_version() -> None:
    first = answer(parse_sdp(bodies.POLYCOM), caps())
    held = answer(parse_sdp(bodies.POLYCOM_HOLD), caps(), previous=first)
    assert held.origin.session_version == first.origin.session_version + 1
    assert held.direction_of(0) is Direction.RECVONLY


# -- negotiated media -----------------------------------------------------------------


def test_negotiated_codecs_payload_types_both_ways() -> None:
    alice = caps(audio(codecs=(OPUS, PCMU, TELEPHONE_EVENT)))
    offer = build_offer(alice)
    bob_opus = dataclasses.replace(OPUS, payload_type=96)
    bob_dtmf = dataclasses.replace(TELEPHONE_EVENT, payload_type=100)
    reply = answer(offer, caps(audio(codecs=(PCMU, bob_opus, bob_dtmf)), address="198.51.100.7"))
    assert reply.media[0].formats == ("96", "0", "100")
    (a,) = negotiated_media(offer, reply)
    assert a.codec is not None and (
        a.codec.name,
        a.codec.send_payload_type,
        a.codec.receive_payload_type,
    ) == ("opus", 96, 111)
    assert a.telephone_event is not None
    assert (a.telephone_event.send_payload_type, a.telephone_event.receive_payload_type) == (
        100,
        101,
    )
    (b,) = negotiated_media(offer, reply, local_is_offerer=False)
    assert b.codec is not None and (b.codec.send_payload_type, b.codec.receive_payload_type) == (
        111,
        96,
    )
    assert b.codec.remote_fmtp == "useinbandfec=1"
    assert a.remote_rtp == Endpoint("198.51.100.7", 4000)
    assert b.remote_rtp == Endpoint("192.0.2.5", 4000)
    assert a.remote_ptime == 20.0


def test_negotiated_codec_skips_comfort_noise_and_events() -> None:
    offer = parse_sdp(bodies.CISCO)
    cn = Codec(name="CN", clock_rate=8000, payload_type=13)
    reply = answer(offer, caps(audio(codecs=(PCMU, TELEPHONE_EVENT, cn))))
    assert reply.media[0].formats == ("0", "101", "19")
    (stream,) = negotiated_media(offer, reply, local_is_offerer=False)
    assert stream.codec is not None and stream.codec.name == "PCMU"
    assert [c.name for c in stream.codecs] == ["PCMU", "telephone-event", "CN"]


def test_negotiated_rejected_stream() -> None:
    offer = parse_sdp(bodies.LINPHONE)
    video = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)[1]
    assert not video.accepted and video.remote_rtp is None and video.codec is None


def test_negotiated_host_name_connection() -> None:
    offer = parse_sdp(
        HEAD.replace(b"c=IN IP4 198.51.100.7", b"c=IN IP4 host.example.com")
        + b"m=audio 5000 RTP/AVP 0\r\n"
    )
    (stream,) = negotiated_media(offer, answer(offer, caps()), local_is_offerer=False)
    assert (stream.remote_host, stream.remote_rtp) == ("host.example.com", None)


def test_negotiated_ipv6_endpoints() -> None:
    offer = build_offer(caps(address="2001:db8::5"))
    reply = answer(offer, caps(address="2001:db8::7"))
    (stream,) = negotiated_media(offer, reply)
    assert stream.remote_rtp == Endpoint("2001:db8::7", 4000)


def test_negotiated_media_needs_same_number_of_m_lines() -> None:
    offer = parse_sdp(bodies.LINPHONE)
    reply = answer(offer, caps())
    with pytest.raises(MalformedMessageError) as err:
        negotiated_media(offer, dataclasses.replace(reply, media=reply.media[:1]))
    assert err.value.error_code == 488


def test_negotiated_mid_and_local_port() -> None:
    offer = offer_of("m=audio 5000 RTP/AVP 0", "a=mid:audio")
    reply = answer(offer, caps())
    assert reply.media[0].mid == "audio"
    (stream,) = negotiated_media(offer, reply, local_is_offerer=False)
    assert (stream.mid, stream.local_port) == ("audio", 4000)


@pytest.mark.parametrize("body", bodies.REAL_BODIES.values(), ids=bodies.REAL_BODIES.keys())
def test_every_real_offer_gets_an_answer_with_as_many_m_lines(body: bytes) -> None:
    offer = parse_sdp(body)
    reply = answer(offer, caps(audio(srtp=SrtpPolicy.OPTIONAL)))
    assert len(reply.media) == len(offer.media)
    assert parse_sdp(serialize_sdp(reply)) == reply
    assert len(negotiated_media(offer, reply, local_is_offerer=False)) == len(offer.media)
