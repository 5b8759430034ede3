"""Splitting TCP/TLS byte streams into STUN and ChannelData messages (RFC 8489 §6.2.2)."""

from __future__ import annotations

import pytest

from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.stun.framing import StreamFramer
from natkit.stun.message import StunMessage, parse_message, serialize_message


def _stun(n: int, software: str = "") -> bytes:
    msg = StunMessage.request(Method.BINDING, n.to_bytes(12, "big"))
    if software:
        msg.add(at.SOFTWARE, software)
    return serialize_message(msg, fingerprint=True)


def _channel_data(channel: int, payload: bytes) -> bytes:
    return channel.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload


STREAM = [_stun(1), _stun(2, "odd"), _stun(3, "a longer software value")]


def test_whole_stream_in_one_chunk_yields_every_message() -> None:
    framer = StreamFramer()
    assert framer.feed(b"".join(STREAM)) == STREAM
    assert framer.buffered == 0


def test_byte_at_a_time_yields_the_same_messages() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for byte in b"".join(STREAM):
        out += framer.feed(bytes([byte]))
    assert out == STREAM
    assert framer.buffered == 0


@pytest.mark.parametrize("cut", [1, 3, 4, 19, 20, 21, 27])
def test_split_anywhere_yields_the_same_messages(cut: int) -> None:
    data = b"".join(STREAM)
    framer = StreamFramer()
    assert framer.feed(data[:cut]) + framer.feed(data[cut:]) == STREAM


def test_partial_message_is_held_until_complete() -> None:
    framer = StreamFramer()
    assert framer.feed(STREAM[1][:-1]) == []
    assert framer.buffered == len(STREAM[1]) - 1
    assert framer.feed(STREAM[1][-1:]) == [STREAM[1]]


def test_framed_messages_parse() -> None:
    framer = StreamFramer()
    msgs = [parse_message(m) for m in framer.feed(b"".join(STREAM))]
    assert [m.transaction_id[-1] for m in msgs] == [1, 2, 3]


def test_empty_feed_yields_nothing() -> None:
    assert StreamFramer().feed(b"") == []


# -- ChannelData (RFC 8656 §12.5) ----------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "pad"),
    [
        pytest.param(b"", 0, id="empty"),
        pytest.param(b"a", 3, id="len-1"),
        pytest.param(b"abcd", 0, id="len-4"),
        pytest.param(b"abcde", 3, id="len-5"),
        pytest.param(b"abcdef", 2, id="len-6"),
        pytest.param(b"abcdefg", 1, id="len-7"),
    ],
)
def test_channel_data_is_padded_to_four_on_streams(payload: bytes, pad: int) -> None:
    framer = StreamFramer(channel_data=True)
    frame = _channel_data(0x4001, payload)
    data = frame + b"\x00" * pad + STREAM[0]
    assert framer.feed(data) == [frame, STREAM[0]]
    assert framer.buffered == 0


def test_channel_data_waits_for_its_padding() -> None:
    framer = StreamFramer(channel_data=True)
    frame = _channel_data(0x7FFF, b"abcde")
    assert framer.feed(frame) == []
    assert framer.feed(b"\x00\x00") == []
    assert framer.feed(b"\x00") == [frame]


def test_channel_data_and_stun_byte_at_a_time() -> None:
    frames = [_channel_data(0x4000, b"xyz"), STREAM[1], _channel_data(0x4FFF, b"12345678")]
    padded = [f + b"\x00" * (-len(f) % 4) for f in frames]
    framer = StreamFramer(channel_data=True)
    out: list[bytes] = []
    for byte in b"".join(padded):
        out += framer.feed(bytes([byte]))
    assert out == frames


# -- garbage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "channel_data"),
    [
        pytest.param(b"\x80\x00\x00\x00", False, id="first-bits-10"),
        pytest.param(b"\xc0\x00\x00\x00", True, id="first-bits-11"),
        pytest.param(_channel_data(0x4000, b"abcd"), False, id="channel-data-not-enabled"),
        pytest.param(STREAM[0][:2] + b"\x00\x05" + STREAM[0][4:], False, id="length-not-x4"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", False, id="http"),
        pytest.param(STREAM[0] + b"\xff\xff\xff\xff", False, id="garbage-after-a-message"),
    ],
)
def test_garbage_raises_malformed(data: bytes, channel_data: bool) -> None:
    with pytest.raises(MalformedMessageError) as info:
        StreamFramer(channel_data=channel_data).feed(data)
    assert info.value.error_code is None


def test_garbage_fed_byte_at_a_time_raises_once_a_header_is_seen() -> None:
    framer = StreamFramer()
    for byte in b"\xff\xff\xff":
        assert framer.feed(bytes([byte])) == []
    with pytest.raises(MalformedMessageError):
        framer.feed(b"\xff")


# -- switching to raw bytes, and text that looks like ChannelData --------------------


def test_take_buffered_returns_the_partial_message_and_empties_the_framer() -> None:
    framer = StreamFramer(channel_data=True)
    whole, partial = STREAM[0], STREAM[1][:7]
    assert framer.feed(whole + partial) == [whole]
    assert framer.take_buffered() == partial
    assert framer.buffered == 0
    assert framer.take_buffered() == b""


def test_http_request_reads_as_channel_data_the_framer_holds() -> None:
    framer = StreamFramer(channel_data=True)
    # "GE" = channel 0x4745, "T " = 21536 bytes to come: it waits for them.
    assert framer.feed(b"GET / HTTP/1.1\r\n") == []
    assert framer.holds_channel_data
    assert not StreamFramer(channel_data=True).holds_channel_data


def test_a_partial_stun_message_is_not_channel_data() -> None:
    framer = StreamFramer(channel_data=True)
    assert framer.feed(STREAM[0][:10]) == []
    assert not framer.holds_channel_data
