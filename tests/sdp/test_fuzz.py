"""Property tests: generated descriptions round-trip; random text, mutations and
truncations of real bodies never raise anything but MalformedMessageError, from
the parser or from offer/answer on whatever parsed; work stays bounded.

Deterministic: ``derandomize=True`` and no example database.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.rng import seeded_rng
from natkit.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    LocalCapabilities,
    MediaCapabilities,
    MediaDescription,
    Origin,
    SdpConfig,
    SessionDescription,
    SrtpPolicy,
    Timing,
    answer,
    negotiated_media,
    parse_sdp,
    rewrite_connection,
    serialize_sdp,
)
from tests.sdp import bodies

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=None)
BOUNDED = settings(max_examples=20, derandomize=True, database=None, deadline=timedelta(seconds=1))

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._+!#$%&'*^`|~"
UNKNOWN_LETTERS = "dfghjlnqwxyDFGHQX"
CAPS = LocalCapabilities(
    address="192.0.2.5",
    media=(
        MediaCapabilities(port=4000, srtp=SrtpPolicy.OPTIONAL),
        MediaCapabilities(port=4002),
        MediaCapabilities(media="video", port=4004),
    ),
    rng=seeded_rng(7),
)

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
# Free text of a line: no CR, LF or NUL, and no trailing blank (the parser strips it).
texts = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=24,
).filter(lambda t: not t.endswith((" ", "\t")))
numbers = st.integers(min_value=0, max_value=2**64)


@st.composite
def connections(draw: st.DrawFn) -> Connection:
    addrtype = draw(st.sampled_from(["IP4", "IP6", "X25"]))
    address = draw(st.text(alphabet=TOKEN_CHARS + ":", min_size=1, max_size=20))
    ttl = None if addrtype == "IP6" else draw(st.none() | st.integers(0, 255))
    number = draw(st.none() | st.integers(1, 255)) if ttl is not None or addrtype == "IP6" else None
    return Connection(
        nettype=draw(tokens), addrtype=addrtype, address=address, ttl=ttl, number=number
    )


attributes = st.builds(
    Attribute, st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12), st.none() | texts
)
bandwidths = st.builds(Bandwidth, st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=6), numbers)
extra_lines = st.tuples(st.sampled_from(UNKNOWN_LETTERS), texts)


@st.composite
def media_sections(draw: st.DrawFn, session_has_connection: bool) -> MediaDescription:
    proto = draw(
        st.sampled_from(
            ["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "TCP/RTP/AVP", "UDP/DTLS/SCTP", "udp"]
        )
    )
    if "RTP" in proto:
        formats = draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=6))
    else:
        formats = draw(st.lists(tokens, min_size=1, max_size=3))
    port = draw(st.integers(0, 0xFFFF))
    own = draw(st.lists(connections(), max_size=2))
    if port != 0 and not session_has_connection and not own:
        own = [draw(connections())]
    return MediaDescription(
        media=draw(st.sampled_from(["audio", "video", "application", "image"])),
        port=port,
        port_count=draw(st.none() | st.integers(1, 8)),
        proto=proto,
        formats=tuple(formats),
        title=draw(st.none() | texts),
        connections=tuple(own),
        bandwidths=tuple(draw(st.lists(bandwidths, max_size=2))),
        key=draw(st.none() | texts),
        attributes=tuple(draw(st.lists(attributes, max_size=6))),
        extra_lines=tuple(draw(st.lists(extra_lines, max_size=2))),
    )


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    connection = draw(st.none() | connections())
    return SessionDescription(
        origin=Origin(
            username=draw(tokens),
            session_id=draw(numbers),
            session_version=draw(numbers),
            nettype=draw(tokens),
            addrtype=draw(tokens),
            address=draw(tokens),
        ),
        session_name=draw(texts),
        information=draw(st.none() | texts),
        uri=draw(st.none() | texts),
        emails=tuple(draw(st.lists(texts, max_size=2))),
        phones=tuple(draw(st.lists(texts, max_size=2))),
        connection=connection,
        bandwidths=tuple(draw(st.lists(bandwidths, max_size=2))),
        timings=tuple(
            draw(
                st.lists(
                    st.builds(Timing, numbers, numbers, st.lists(texts, max_size=2).map(tuple)),
                    min_size=1,
                    max_size=2,
                )
            )
        ),
        time_zones=draw(st.none() | texts),
        key=draw(st.none() | texts),
        attributes=tuple(draw(st.lists(attributes, max_size=6))),
        media=tuple(draw(st.lists(media_sections(connection is not None), max_size=4))),
        extra_lines=tuple(draw(st.lists(extra_lines, max_size=2))),
    )


def exercise(data: bytes | str) -> None:
    """Parse; on success, serialize, reparse, answer and negotiate."""
    try:
        desc = parse_sdp(data)
    except MalformedMessageError as err:
        assert err.error_code in (400, 488)
        return
    assert parse_sdp(serialize_sdp(desc)) == desc
    try:
        reply = answer(desc, CAPS)
        assert len(reply.media) == len(desc.media)
        negotiated_media(desc, reply, local_is_offerer=False)
        negotiated_media(reply, desc, local_is_offerer=True)
    except MalformedMessageError as err:
        assert err.error_code == 488
    for index in range(len(desc.media)):
        rewrite_connection(desc, index, "203.0.113.50", 30000, 30001)


@FUZZ
@given(descriptions())
def test_generated_description_round_trips(desc: SessionDescription) -> None:
    assert parse_sdp(serialize_sdp(desc)) == desc


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.text(alphabet="vosiuepcbtrzkam=:/ 0123456789INP4.\r\nRTAV", max_size=400))
def test_random_sdp_like_text_never_crashes(text: str) -> None:
    exercise("v=0\r\n" + text)


MUTATIONS = st.sampled_from(["delete", "insert", "replace", "drop-line", "dup-line", "swap-lines"])


@FUZZ
@given(
    st.sampled_from(sorted(bodies.REAL_BODIES)),
    st.lists(
        st.tuples(MUTATIONS, st.integers(0, 10_000), st.binary(min_size=1, max_size=3)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_real_bodies_never_crash(
    name: str, mutations: list[tuple[str, int, bytes]]
) -> None:
    data = bodies.REAL_BODIES[name]
    for kind, where, junk in mutations:
        lines = data.split(b"\n")
        at = where % max(len(data), 1)
        row = where % len(lines)
        if kind == "delete":
            data = data[:at] + data[at + len(junk) :]
        elif kind == "insert":
            data = data[:at] + junk + data[at:]
        elif kind == "replace":
            data = data[:at] + junk + data[at + len(junk) :]
        elif kind == "drop-line":
            data = b"\n".join(lines[:row] + lines[row + 1 :])
        elif kind == "dup-line":
            data = b"\n".join(lines[: row + 1] + lines[row:])
        else:
            other = (row * 7 + 3) % len(lines)
            lines[row], lines[other] = lines[other], lines[row]
            data = b"\n".join(lines)
    exercise(data)


@FUZZ
@given(
    st.sampled_from(sorted(bodies.REAL_BODIES)),
    st.sampled_from(
        [
            "a=rtpmap:",
            "a=crypto:",
            "a=rtcp:",
            "a=setup:",
            "a=ptime:",
            "a=fmtp:",
            "c=IN IP4 ",
            "m=audio ",
        ]
    ),
    texts,
)
def test_real_bodies_with_garbage_in_known_fields_never_crash(
    name: str, field: str, junk: str
) -> None:
    text = bodies.REAL_BODIES[name].decode("utf-8", "surrogateescape")
    exercise(text.replace(field, field + junk, 1) + field + junk + "\r\n")


@pytest.mark.parametrize("name", sorted(bodies.REAL_BODIES))
def test_every_truncation_of_real_body_is_clean(name: str) -> None:
    data = bodies.REAL_BODIES[name]
    step = 1 if len(data) < 1000 else 7
    for end in range(0, len(data), step):
        exercise(data[:end])


def test_every_line_dropped_from_real_body_is_clean() -> None:
    for data in bodies.REAL_BODIES.values():
        lines = data.split(b"\r\n")
        for row in range(len(lines)):
            exercise(b"\r\n".join(lines[:row] + lines[row + 1 :]))


WORST_CASES = {
    "max-size-of-attributes": bodies.SIPP_UAC + b"a=x\r\n" * 12_000,
    "max-size-one-line": bodies.SIPP_UAC + b"a=x:" + b"y" * 65_000,
    "many-media": bodies.SIPP_UAC + (b"m=audio 4000 RTP/AVP " + b"0 " * 120 + b"\r\n") * 31,
    "all-formats": bodies.SIPP_UAC.replace(
        b"RTP/AVP 0", b"RTP/AVP " + b" ".join(str(i).encode() for i in range(128))
    ),
    "many-rtpmaps": bodies.SIPP_UAC.replace(
        b"RTP/AVP 0", b"RTP/AVP " + b" ".join(str(i).encode() for i in range(96, 128))
    )
    + b"".join(b"a=rtpmap:%d X%d/8000\r\n" % (i, i) for i in range(96, 128)) * 60,
    "many-crypto": bodies.BARESIP_SRTP_ICE
    + b"a=crypto:9 AES_CM_128_HMAC_SHA1_80 inline:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
    * 700,
    "over-size": b"v=0\r\n" + b"a=x\r\n" * 40_000,
}


@BOUNDED
@given(st.sampled_from(sorted(WORST_CASES)))
def test_worst_case_bodies_take_bounded_time(name: str) -> None:
    exercise(WORST_CASES[name])


def test_text_that_utf8_cannot_carry_is_rejected() -> None:
    with pytest.raises(MalformedMessageError):
        parse_sdp(bodies.SIPP_UAC.decode().replace("s=-", "s=\ud800"))


def test_size_limit_applies_to_text_input() -> None:
    with pytest.raises(MalformedMessageError):
        parse_sdp("v=0\r\n" + "a=x\r\n" * 40_000)


def test_stricter_config_bounds_each_dimension() -> None:
    config = SdpConfig(max_size=2048, max_media=2, max_attributes=16, max_formats=8)
    for data in bodies.REAL_BODIES.values():
        try:
            desc = parse_sdp(data, config)
        except MalformedMessageError:
            continue
        assert len(desc.media) <= 2
        assert sum(len(m.attributes) for m in desc.media) + len(desc.attributes) <= 16


def test_generated_description_answer_is_well_formed() -> None:
    desc = dataclasses.replace(parse_sdp(bodies.LINPHONE), session_name="")
    reply = answer(desc, CAPS)
    assert parse_sdp(serialize_sdp(reply)) == reply
