"""Stream framing (RFC 3261 §18.3) and CRLF keepalives (RFC 5626 §4.4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.sip.framing import (
    KeepAlive,
    SipStreamFramer,
    StreamFramingError,
    content_length_of,
    error_response_for,
    header_lines,
)

TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip_torture"

OPTIONS = (
    b"OPTIONS sip:bob@example.org SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"To: <sip:bob@example.org>\r\n"
    b"From: <sip:alice@example.org>;tag=a1\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
MESSAGE_WITH_BODY = (
    b"MESSAGE sip:bob@example.org SIP/2.0\r\n"
    b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK2\r\n"
    b"t: <sip:bob@example.org>\r\n"
    b"f: <sip:alice@example.org>;tag=a2\r\n"
    b"i: c2\r\n"
    b"CSeq: 2 MESSAGE\r\n"
    b"c: text/plain\r\n"
    b"L:\r\n 11\r\n"
    b"\r\n"
    b"hello\r\n\r\nyo"
)
RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"To: <sip:bob@example.org>;tag=b1\r\n"
    b"From: <sip:alice@example.org>;tag=a1\r\n"
    b"Call-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"content-LENGTH: 3\r\n"
    b"\r\n"
    b"abc"
)


def _frames(framer: SipStreamFramer) -> list[bytes | KeepAlive]:
    out: list[bytes | KeepAlive] = []
    while (frame := framer.next_frame()) is not None:
        out.append(frame)
    return out


def _feed_in_pieces(
    stream: bytes, cuts: list[int], *, expect_pings: bool = True
) -> list[bytes | KeepAlive]:
    framer = SipStreamFramer(expect_pings=expect_pings)
    out: list[bytes | KeepAlive] = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        framer.feed(stream[previous:cut])
        out += _frames(framer)
        previous = cut
    return out


def test_one_message_at_once() -> None:
    framer = SipStreamFramer()
    framer.feed(OPTIONS)
    assert _frames(framer) == [OPTIONS]
    assert framer.idle


def test_body_is_cut_by_content_length_not_by_lines() -> None:
    framer = SipStreamFramer()
    framer.feed(MESSAGE_WITH_BODY + OPTIONS)
    assert _frames(framer) == [MESSAGE_WITH_BODY, OPTIONS]


def test_byte_at_a_time_gives_the_same_frames() -> None:
    stream = OPTIONS + b"\r\n\r\n" + MESSAGE_WITH_BODY + RESPONSE
    framer = SipStreamFramer()
    out: list[bytes | KeepAlive] = []
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
        out += _frames(framer)
    assert out == [OPTIONS, KeepAlive.PING, MESSAGE_WITH_BODY, RESPONSE]
    assert framer.buffered == 0


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"\r\n\r\n", [KeepAlive.PING], id="ping"),
        pytest.param(b"\r\n\r\n\r\n\r\n", [KeepAlive.PING, KeepAlive.PING], id="two-pings"),
        pytest.param(b"\r\n", [], id="lone-crlf-waits"),
        pytest.param(b"\r\n\r", [], id="partial-ping-waits"),
        pytest.param(b"\r\n" + OPTIONS, [KeepAlive.PONG, OPTIONS], id="crlf-before-message"),
        pytest.param(b"\r\n\r\n" + OPTIONS, [KeepAlive.PING, OPTIONS], id="ping-then-message"),
        pytest.param(OPTIONS + b"\r\n", [OPTIONS], id="crlf-after-message-waits"),
    ],
)
def test_keepalives_on_the_accepting_side(stream: bytes, expected: list[object]) -> None:
    framer = SipStreamFramer()
    framer.feed(stream)
    assert _frames(framer) == expected


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(b"\r\n", [KeepAlive.PONG], id="pong-at-once"),
        pytest.param(b"\r\n\r\n", [KeepAlive.PONG, KeepAlive.PONG], id="two-pongs"),
        pytest.param(RESPONSE + b"\r\n", [RESPONSE, KeepAlive.PONG], id="after-response"),
    ],
)
def test_keepalives_on_the_connecting_side(stream: bytes, expected: list[object]) -> None:
    framer = SipStreamFramer(expect_pings=False)
    framer.feed(stream)
    assert _frames(framer) == expected


def test_lenient_lf_only_header_end() -> None:
    message = b"OPTIONS sip:a@b SIP/2.0\nCall-ID: x\nContent-Length: 2\n\nok"
    framer = SipStreamFramer()
    framer.feed(message + OPTIONS)
    assert _frames(framer) == [message, OPTIONS]


_PIECES = [OPTIONS, MESSAGE_WITH_BODY, RESPONSE, b"\r\n\r\n"]


@given(
    parts=st.lists(st.sampled_from(_PIECES), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_random_splits_give_the_same_frames(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    expected = [KeepAlive.PING if p == b"\r\n\r\n" else p for p in parts]
    cuts = [c for c in cuts if c <= len(stream)]
    assert _feed_in_pieces(stream, cuts) == expected


@given(
    parts=st.lists(st.sampled_from([RESPONSE, OPTIONS, b"\r\n"]), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
def test_random_splits_on_the_connecting_side(parts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(parts)
    expected = [KeepAlive.PONG if p == b"\r\n" else p for p in parts]
    cuts = [c for c in cuts if c <= len(stream)]
    assert _feed_in_pieces(stream, cuts, expect_pings=False) == expected


@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_garbage_never_raises_anything_but_framing_errors(data: bytes, cuts: list[int]) -> None:
    try:
        _feed_in_pieces(data, [c for c in cuts if c <= len(data)])
    except StreamFramingError as exc:
        assert exc.error_code == 400


def _with_content_length(value: bytes) -> bytes:
    return OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + value)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(OPTIONS.replace(b"Content-Length: 0\r\n", b""), id="missing"),
        pytest.param(_with_content_length(b"-999"), id="negative"),
        pytest.param(_with_content_length(b"five"), id="not-a-number"),
        pytest.param(_with_content_length(b"1 2"), id="two-numbers"),
        pytest.param(_with_content_length(b"99999999999"), id="too-many-digits"),
        pytest.param(_with_content_length(b"0\r\nl: 4"), id="conflicting-compact"),
        pytest.param(_with_content_length(b"70000"), id="body-over-limit"),
    ],
)
def test_lost_framing_raises_400_and_keeps_failing(head: bytes) -> None:
    framer = SipStreamFramer()
    framer.feed(head)
    with pytest.raises(StreamFramingError) as info:
        framer.next_frame()
    assert info.value.error_code == 400
    assert isinstance(info.value, MalformedMessageError)
    assert info.value.head == head
    framer.feed(OPTIONS)
    with pytest.raises(StreamFramingError):
        framer.next_frame()


def test_equal_repeated_content_length_is_accepted() -> None:
    message = _with_content_length(b"0\r\nl: 0")
    framer = SipStreamFramer()
    framer.feed(message)
    assert _frames(framer) == [message]


def test_header_block_without_end_over_the_limit() -> None:
    framer = SipStreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 12000)
    with pytest.raises(StreamFramingError, match="no end of headers") as info:
        framer.next_frame()
    assert info.value.head is None


def test_a_header_block_under_the_limit_waits() -> None:
    framer = SipStreamFramer()
    framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 100)
    assert framer.next_frame() is None
    assert not framer.idle


def _torture(name: str) -> bytes:
    path = TORTURE / f"{name}.dat"
    if not path.exists():
        pytest.skip(f"{path} not copied yet")
    return path.read_bytes()


def test_rfc4475_clerr_waits_for_the_missing_body() -> None:
    """RFC 4475 §3.1.2.2: Content-Length 9999 over a stream: nothing is framed."""
    framer = SipStreamFramer()
    framer.feed(_torture("clerr"))
    assert framer.next_frame() is None


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param("ncl", "bad Content-Length", id="ncl-3.1.2.3"),
        pytest.param("mcl01", "conflicting", id="mcl01-3.1.2.9"),
    ],
)
def test_rfc4475_framing_failures(name: str, match: str) -> None:
    framer = SipStreamFramer()
    framer.feed(_torture(name))
    with pytest.raises(StreamFramingError, match=match):
        framer.next_frame()


@pytest.mark.parametrize(
    "name", [pytest.param(n, id=n) for n in ("wsinv", "mpart01", "longreq", "dblreq")]
)
def test_rfc4475_valid_messages_frame_whole(name: str) -> None:
    data = _torture(name)
    framer = SipStreamFramer()
    framer.feed(data)
    frame = framer.next_frame()
    assert isinstance(frame, bytes)
    assert data.startswith(frame)
    head_end = frame.index(b"\r\n\r\n") + 4
    assert len(frame) - head_end == content_length_of(frame[:head_end])


def test_header_lines_unfold_and_keep_names() -> None:
    start, pairs = header_lines(
        b"INVITE sip:a@b SIP/2.0\r\nSubject: one\r\n two\r\n\tthree\r\nl: 0\r\n"
    )
    assert start == b"INVITE sip:a@b SIP/2.0"
    assert pairs == [(b"Subject", b"one two three"), (b"l", b"0")]


def test_error_response_copies_the_matching_headers() -> None:
    head = OPTIONS.replace(b"To: <sip:bob@example.org>", b"t: <sip:bob@example.org>")
    answer = error_response_for(head, 400, "Bad Request", to_tag="x1")
    assert answer == (
        b"SIP/2.0 400 Bad Request\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        b"To: <sip:bob@example.org>;tag=x1\r\n"
        b"From: <sip:alice@example.org>;tag=a1\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(RESPONSE, id="response"),
        pytest.param(OPTIONS.replace(b"OPTIONS sip", b"ACK sip"), id="ack"),
        pytest.param(OPTIONS.replace(b"Call-ID: c1\r\n", b""), id="no-call-id"),
        pytest.param(b"garbage\r\n\r\n", id="garbage"),
    ],
)
def test_no_error_response_when_the_client_could_not_match_it(head: bytes) -> None:
    assert error_response_for(head, 400, "Bad Request") is None


def _reference_content_length(head: bytes) -> int | str | None:
    values = [v for n, v in header_lines(head)[1] if n.lower() in (b"content-length", b"l")]
    if any(not v.isdigit() or not v.isascii() or len(v) > 10 for v in values):
        return "error"
    if len(set(map(int, values))) > 1:
        return "error"
    return int(values[0]) if values else None


_HEADER_PIECES = [
    b"Content-Length: 5",
    b"content-length:5",
    b"L : 5",
    b"l: 7",
    b"Content-Length: x",
    b"Content-Lengthy: 9",
    b"Xl: 3",
    b"Via: SIP/2.0/TCP h",
    b" l: 4",
    b"\tfolded",
    b"Subject: l: 2",
]


@given(st.lists(st.sampled_from(_HEADER_PIECES), max_size=6), st.sampled_from([b"\r\n", b"\n"]))
def test_content_length_fast_path_agrees_with_unfolding(pieces: list[bytes], eol: bytes) -> None:
    head = eol.join([b"OPTIONS sip:a@b SIP/2.0", *pieces]) + eol + eol
    try:
        got: int | str | None = content_length_of(head)
    except StreamFramingError:
        got = "error"
    assert got == _reference_content_length(head)
