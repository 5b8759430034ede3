"""Property tests: RTP/RTCP codec round trips, and truncated, mutated or random
bytes never raising anything but MalformedMessageError (parsers) or anything
at all (the session, the demultiplexer, SRTP unprotect).

Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import contextlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.rtp.demux import classify_datagram
from natkit.rtp.packet import (
    ONE_BYTE_PROFILE,
    ExtensionElement,
    RtpPacket,
    parse_rtp,
    peek_rtp_header,
    serialize_rtp,
)
from natkit.rtp.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpUnknown,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from natkit.rtp.session import RtpSession, RtpSessionConfig
from natkit.rtp.srtp import SrtpContext, SrtpError, generate_sdes_key

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

one_byte_elements = st.lists(
    st.builds(ExtensionElement, st.integers(1, 14), st.binary(min_size=1, max_size=16)),
    max_size=6,
).map(tuple)
two_byte_elements = st.lists(
    st.builds(ExtensionElement, st.integers(1, 255), st.binary(max_size=40)), max_size=6
).map(tuple)


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    kind = draw(st.sampled_from(["none", "one", "two", "opaque"]))
    profile: int | None = None
    elements: tuple[ExtensionElement, ...] = ()
    opaque = b""
    if kind == "one":
        profile, elements = ONE_BYTE_PROFILE, draw(one_byte_elements)
    elif kind == "two":
        profile, elements = 0x1000 | draw(st.integers(0, 15)), draw(two_byte_elements)
    elif kind == "opaque":
        profile = draw(u16.filter(lambda p: p != ONE_BYTE_PROFILE and p & 0xFFF0 != 0x1000))
        opaque = draw(st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4)))
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        sequence_number=draw(u16),
        timestamp=draw(u32),
        ssrc=draw(u32),
        payload=draw(st.binary(max_size=64)),
        marker=draw(st.booleans()),
        csrcs=tuple(draw(st.lists(u32, max_size=15))),
        extension_profile=profile,
        extensions=elements,
        extension_data=opaque,
        padding=draw(st.integers(0, 255)),
    )


blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=u8,
    cumulative_lost=st.integers(-0x800000, 0x7FFFFF),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)
block_lists = st.lists(blocks, max_size=31).map(tuple)
word_aligned = st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))
reports = st.one_of(
    st.builds(
        SenderReport,
        ssrc=u32,
        ntp_timestamp=st.integers(0, (1 << 64) - 1),
        rtp_timestamp=u32,
        packet_count=u32,
        octet_count=u32,
        reports=block_lists,
        extension=word_aligned,
    ),
    st.builds(ReceiverReport, ssrc=u32, reports=block_lists, extension=word_aligned),
)
others: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                u32,
                st.lists(
                    st.builds(SdesItem, st.integers(1, 255), st.binary(max_size=255)), max_size=4
                ).map(tuple),
            ),
            max_size=4,
        ).map(tuple),
    ),
    st.builds(
        Bye,
        st.lists(u32, max_size=31).map(tuple),
        st.none() | st.text(max_size=60),
    ),
    st.builds(App, subtype=st.integers(0, 31), ssrc=u32, name=st.binary(min_size=4, max_size=4),
              data=word_aligned),
    st.builds(RtcpUnknown, packet_type=st.integers(205, 255), count=st.integers(0, 31),
              body=word_aligned),
)  # fmt: skip
compounds = st.tuples(reports, st.lists(others, max_size=4)).map(lambda t: [t[0], *t[1]])


@FUZZ
@given(rtp_packets())
def test_rtp_round_trip(packet: RtpPacket) -> None:
    data = serialize_rtp(packet)
    assert parse_rtp(data) == packet
    fields = peek_rtp_header(data)
    assert fields is not None
    assert (fields.ssrc, fields.sequence_number, fields.payload_type) == (
        packet.ssrc,
        packet.sequence_number,
        packet.payload_type,
    )


@FUZZ
@given(rtp_packets(), st.data())
def test_rtp_truncations_raise_only_malformed(packet: RtpPacket, data: st.DataObject) -> None:
    wire = serialize_rtp(packet)
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(MalformedMessageError):
        parse_rtp(wire[:cut])


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_parse_as_rtp_or_raise_malformed(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except MalformedMessageError:
        return
    assert packet.ssrc >= 0


@FUZZ
@given(compounds)
def test_rtcp_round_trip(packets: list[RtcpPacket]) -> None:
    assert parse_rtcp(serialize_rtcp(packets)) == packets


@FUZZ
@given(compounds, st.data())
def test_rtcp_truncations_and_bit_flips_raise_only_malformed(
    packets: list[RtcpPacket], data: st.DataObject
) -> None:
    wire = bytearray(serialize_rtcp(packets))
    cut = data.draw(st.integers(0, len(wire)))
    flip = data.draw(st.integers(0, len(wire) - 1))
    for candidate in (
        bytes(wire[:cut]),
        bytes(wire[:flip] + bytes([wire[flip] ^ 0xFF]) + wire[flip + 1 :]),
    ):
        with contextlib.suppress(MalformedMessageError):
            parse_rtcp(candidate, allow_reduced_size=data.draw(st.booleans()))


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_parse_as_rtcp_or_raise_malformed(data: bytes) -> None:
    for reduced in (False, True):
        with contextlib.suppress(MalformedMessageError):
            parse_rtcp(b"\x80" + data, allow_reduced_size=reduced)


LOCAL = Endpoint("192.0.2.1", 40000)
REMOTE = Endpoint("198.51.100.2", 50000)


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=20), st.booleans())
def test_session_survives_random_datagrams(datagrams: list[bytes], mux: bool) -> None:
    config = RtpSessionConfig(rng=random.Random(1), rtcp_mux=mux, latch=True)
    session = RtpSession(config, local_rtp=LOCAL, remote_rtp=REMOTE, now=0.0)
    for i, data in enumerate(datagrams):
        classify_datagram(data)
        session.receive_datagram(bytes([0x80]) + data, REMOTE, now=i * 0.02)
        session.receive_datagram(data, REMOTE, now=i * 0.02)
        session.handle_timer(now=i * 0.02)
        while session.next_event() is not None:
            pass
    session.datagrams_to_send(now=1.0)


SRTP_KEY = generate_sdes_key(rng=random.Random(7))


@FUZZ
@given(st.binary(max_size=200))
def test_srtp_unprotect_of_random_bytes_raises_only_srtp_errors(data: bytes) -> None:
    context = SrtpContext.from_sdes("AES_CM_128_HMAC_SHA1_80", SRTP_KEY)
    for unprotect in (context.unprotect_rtp, context.unprotect_rtcp):
        with contextlib.suppress(SrtpError):
            unprotect(b"\x80" + data)
