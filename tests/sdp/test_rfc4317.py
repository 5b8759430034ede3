"""The offer/answer flows of RFC 4317 (SDP Offer/Answer Examples).

Alice and Bob are two natkit ends with the capabilities each example gives
them; where the RFC shows the offer, the test starts from that text (host
names as in the RFC: natkit keeps them, ``remote_host`` carries them).
Covered: §2.1, §2.2, §2.4 (codec negotiation), §3.1, §3.2 (hold and
resume), §4.1-4.3 (streams added and deleted).
"""

from __future__ import annotations

from natkit.rng import seeded_rng
from natkit.sdp import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    Direction,
    LocalCapabilities,
    MediaCapabilities,
    SessionDescription,
    answer,
    build_offer,
    negotiated_media,
    parse_sdp,
    serialize_sdp,
)
from tests.sdp.bodies import crlf

ILBC_97 = Codec(name="iLBC", clock_rate=8000, payload_type=97)
ILBC_99 = Codec(name="iLBC", clock_rate=8000, payload_type=99)
H261 = Codec(name="H261", clock_rate=90000, payload_type=31)
MPV = Codec(name="MPV", clock_rate=90000, payload_type=32)
DTMF_98 = Codec(name="telephone-event", clock_rate=8000, payload_type=98, fmtp="0-16")

ALICE_OFFER_AUDIO_VIDEO = crlf("""
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
""")

ALICE_OFFER_TWO_AUDIO = crlf("""
v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 97
a=rtpmap:0 PCMU/8000
a=rtpmap:97 iLBC/8000
m=audio 49172 RTP/AVP 98
a=rtpmap:98 telephone-event/8000
a=sendonly
""")


def bob(*media: MediaCapabilities) -> LocalCapabilities:
    return LocalCapabilities(address="192.0.2.20", username="bob", media=media, rng=seeded_rng(20))


def alice(*media: MediaCapabilities) -> LocalCapabilities:
    return LocalCapabilities(
        address="192.0.2.10", username="alice", media=media, rng=seeded_rng(10)
    )


def audio(
    port: int, *codecs: Codec, direction: Direction = Direction.SENDRECV
) -> MediaCapabilities:
    return MediaCapabilities(
        port=port, codecs=codecs, direction=direction, ptime=None, rtcp_mux=False
    )


def video(
    port: int, *codecs: Codec, direction: Direction = Direction.SENDRECV
) -> MediaCapabilities:
    return MediaCapabilities(
        media="video", port=port, codecs=codecs, direction=direction, ptime=None, rtcp_mux=False
    )


def wire(desc: SessionDescription) -> SessionDescription:
    """What the other end parses: every description crosses the wire as text."""
    return parse_sdp(serialize_sdp(desc))


def test_2_1_audio_and_video_answerer_picks_a_subset() -> None:
    offer = parse_sdp(ALICE_OFFER_AUDIO_VIDEO)
    reply = wire(answer(offer, bob(audio(49174, PCMU), video(49170, MPV))))
    assert [(m.port, m.formats) for m in reply.media] == [(49174, ("0",)), (49170, ("32",))]
    stream_audio, stream_video = negotiated_media(offer, reply, local_is_offerer=False)
    assert stream_audio.codec is not None and stream_audio.codec.name == "PCMU"
    assert stream_video.codec is not None and stream_video.codec.name == "MPV"
    assert stream_audio.remote_host == "host.atlanta.example.com"
    assert stream_audio.remote_rtp is None  # a host name: resolved by the caller


def test_2_2_video_declined_then_alice_narrows_to_one_codec() -> None:
    alice_caps = alice(audio(49170, PCMU, PCMA, ILBC_97), video(51372, H261, MPV))
    offer = wire(build_offer(alice_caps))
    reply = wire(answer(offer, bob(audio(49172, PCMU, ILBC_99))))
    assert [(m.port, m.formats) for m in reply.media] == [(49172, ("0", "99")), (0, ("31",))]
    (ours, declined) = negotiated_media(offer, reply)
    assert [c.name for c in ours.codecs] == ["PCMU", "iLBC"]
    assert not declined.accepted
    # Alice's updated offer lists only iLBC; the declined video stays as port 0.
    narrowed = wire(build_offer(alice(audio(49170, ILBC_97)), previous=offer))
    assert narrowed.origin.session_id == offer.origin.session_id
    assert narrowed.origin.session_version == offer.origin.session_version + 1
    assert [(m.media, m.port) for m in narrowed.media] == [("audio", 49170), ("video", 0)]
    second = wire(answer(narrowed, bob(audio(49172, PCMU, ILBC_99)), previous=reply))
    assert second.origin.session_version == reply.origin.session_version + 1
    (ours, _) = negotiated_media(narrowed, second)
    assert ours.codec is not None
    assert (ours.codec.name, ours.codec.send_payload_type, ours.codec.receive_payload_type) == (
        "iLBC",
        99,
        97,
    )


def test_2_4_two_audio_streams_one_for_telephone_events() -> None:
    offer = parse_sdp(ALICE_OFFER_TWO_AUDIO)
    reply = wire(answer(offer, bob(audio(49172, PCMU, ILBC_99), audio(49174, DTMF_98))))
    assert [(m.port, m.formats) for m in reply.media] == [(49172, ("0", "99")), (49174, ("98",))]
    assert reply.direction_of(1) is Direction.RECVONLY
    voice, events = negotiated_media(offer, reply, local_is_offerer=False)
    assert voice.direction is Direction.SENDRECV
    assert events.telephone_event is not None and events.telephone_event.send_payload_type == 98
    assert events.direction is Direction.RECVONLY


def test_2_4_without_a_dtmf_capability_the_event_stream_is_declined() -> None:
    offer = parse_sdp(ALICE_OFFER_TWO_AUDIO)
    reply = answer(offer, bob(audio(49172, PCMU, TELEPHONE_EVENT), audio(49174, PCMU)))
    assert [m.port for m in reply.media] == [49172, 0]


def test_3_1_hold_and_unhold() -> None:
    alice_media = audio(49170, PCMU)
    offer = wire(build_offer(alice(alice_media)))
    reply = wire(answer(offer, bob(audio(3456, PCMU))))
    assert negotiated_media(offer, reply)[0].direction is Direction.SENDRECV
    # Alice holds: sendonly; Bob answers recvonly (not held SDP, RFC 3264 §8.4).
    hold = wire(
        build_offer(alice(audio(49170, PCMU, direction=Direction.SENDONLY)), previous=offer)
    )
    held_reply = wire(answer(hold, bob(audio(3456, PCMU)), previous=reply))
    assert held_reply.direction_of(0) is Direction.RECVONLY
    (bob_view,) = negotiated_media(hold, held_reply, local_is_offerer=False)
    assert bob_view.remote_hold and bob_view.direction is Direction.RECVONLY
    (alice_view,) = negotiated_media(hold, held_reply)
    assert alice_view.direction is Direction.SENDONLY and not alice_view.remote_hold
    # Alice resumes.
    resume = wire(build_offer(alice(alice_media), previous=hold))
    assert resume.origin.session_version == hold.origin.session_version + 1
    resumed = wire(answer(resume, bob(audio(3456, PCMU)), previous=held_reply))
    assert negotiated_media(resume, resumed)[0].direction is Direction.SENDRECV
    assert resumed.origin.session_version == held_reply.origin.session_version + 1


def test_3_2_hold_with_two_streams() -> None:
    streams = (audio(49170, PCMU), video(51372, H261))
    offer = wire(build_offer(alice(*streams)))
    reply = wire(answer(offer, bob(audio(49172, PCMU), video(49168, H261))))
    held = tuple(
        MediaCapabilities(
            media=s.media,
            port=s.port,
            codecs=s.codecs,
            ptime=None,
            rtcp_mux=False,
            direction=Direction.SENDONLY,
        )
        for s in streams
    )
    hold = wire(build_offer(alice(*held), previous=offer))
    held_reply = wire(answer(hold, bob(audio(49172, PCMU), video(49168, H261)), previous=reply))
    assert [held_reply.direction_of(i) for i in range(2)] == [
        Direction.RECVONLY,
        Direction.RECVONLY,
    ]
    assert all(s.remote_hold for s in negotiated_media(hold, held_reply, local_is_offerer=False))


def test_4_1_second_audio_stream_added() -> None:
    offer = wire(build_offer(alice(audio(49170, PCMU))))
    reply = wire(answer(offer, bob(audio(49172, PCMU))))
    more = wire(build_offer(alice(audio(49170, PCMU), audio(51372, ILBC_97)), previous=offer))
    assert [m.port for m in more.media] == [49170, 51372]
    second = wire(answer(more, bob(audio(49172, PCMU), audio(49174, ILBC_99)), previous=reply))
    assert [(m.port, m.formats) for m in second.media] == [(49172, ("0",)), (49174, ("99",))]
    assert second.media[0] == reply.media[0]  # the first stream is unchanged


def test_4_2_audio_then_video_added() -> None:
    offer = wire(build_offer(alice(audio(49170, PCMU))))
    reply = wire(answer(offer, bob(audio(49172, PCMU), video(49168, H261))))
    assert len(reply.media) == 1
    more = wire(build_offer(alice(audio(49170, PCMU), video(51372, H261)), previous=offer))
    second = wire(answer(more, bob(audio(49172, PCMU), video(49168, H261)), previous=reply))
    assert [(m.media, m.port) for m in second.media] == [("audio", 49172), ("video", 49168)]


def test_4_3_audio_and_video_then_video_deleted() -> None:
    offer = wire(build_offer(alice(audio(49170, PCMU), video(51372, H261))))
    bob_caps = bob(audio(49172, PCMU), video(49168, H261))
    reply = wire(answer(offer, bob_caps))
    fewer = wire(build_offer(alice(audio(49170, PCMU)), previous=offer))
    assert [(m.media, m.port) for m in fewer.media] == [("audio", 49170), ("video", 0)]
    second = wire(answer(fewer, bob_caps, previous=reply))
    assert [(m.media, m.port) for m in second.media] == [("audio", 49172), ("video", 0)]
    _, deleted = negotiated_media(fewer, second)
    assert not deleted.accepted
