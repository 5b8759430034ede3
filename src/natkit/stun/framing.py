"""Framing of STUN (and TURN ChannelData) on stream transports.

RFC 8489 §6.2.2: over TCP and TLS, STUN messages follow one another with
nothing between them; the header's length field delimits each one. RFC 8656
§12.5 adds ChannelData messages on the same stream (first two bits 01), padded
to a multiple of four bytes on streams. :class:`StreamFramer` splits a byte
stream into those messages; anything else is a framing error and the
connection must be closed.

With ``channel_data=True`` any first two bits 01 start a ChannelData message,
so some text does too: an HTTP request's "GET " reads as channel 0x4745 with
21536 bytes ("T ") to come, and the framer waits for them. The channel number cannot
tell (0x4745 is a valid number, and servers accept RFC 5766's 0x4000-0x7FFF
for compatibility) and neither can the length (up to 65535 is legal), so the
framer does not guess: whoever knows whether ChannelData can be valid on the
connection decides. The TURN server's runner does, by aborting a connection
whose bytes start ChannelData (:attr:`StreamFramer.holds_channel_data`, or a
message returned) before the connection holds an allocation (RFC 8656 §12:
channels exist only on allocations).

A connection that stops carrying messages (an RFC 6062 data connection after
ConnectionBind, §5.4) takes the bytes already buffered with
:meth:`StreamFramer.take_buffered` and passes them on raw.
"""

from __future__ import annotations

from natkit.errors import MalformedMessageError
from natkit.stun.constants import HEADER_LENGTH

__all__ = ["StreamFramer"]

MAX_STREAM_MESSAGE = 65535 + HEADER_LENGTH


class StreamFramer:
    """Accumulates stream bytes and yields whole messages (sans-IO).

    Feed with :meth:`feed`; each call returns the messages completed so far.
    Raises :class:`MalformedMessageError` (``error_code=None``: close the
    connection) on bytes that cannot start a STUN or ChannelData message.
    """

    __slots__ = ("_buf", "channel_data")

    def __init__(self, *, channel_data: bool = False) -> None:
        self._buf = bytearray()
        self.channel_data = channel_data

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while len(buf) >= 4:
            first = buf[0] >> 6
            length = buf[2] << 8 | buf[3]
            if first == 0:
                total = HEADER_LENGTH + length
                if len(buf) < HEADER_LENGTH:
                    break
                if length & 3:
                    raise MalformedMessageError("STUN length not a multiple of 4", error_code=None)
            elif first == 1 and self.channel_data:
                total = 4 + length
                padded = (total + 3) & ~3
                if len(buf) < padded:
                    break
                out.append(bytes(buf[:total]))
                del buf[:padded]
                continue
            else:
                raise MalformedMessageError("not a STUN message on the stream", error_code=None)
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a whole message."""
        return len(self._buf)

    @property
    def holds_channel_data(self) -> bool:
        """Whether the bytes held start a ChannelData message (``channel_data``
        framers only; first two bits 01, RFC 8656 §12.4)."""
        buf = self._buf
        return self.channel_data and bool(buf) and buf[0] >> 6 == 1

    def take_buffered(self) -> bytes:
        """Remove and return the bytes held (those not yet forming a message),
        for a stream that switches to raw bytes (RFC 6062 §5.4)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data
