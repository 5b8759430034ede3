"""Framing of STUN (and TURN ChannelData) on stream transports.

RFC 8489 §6.2.2: over TCP and TLS, STUN messages follow one another with
nothing between them; the header's length field delimits each one. RFC 8656
§12.5 adds ChannelData messages on the same stream (first two bits 01), padded
to a multiple of four bytes on streams. :class:`StreamFramer` splits a byte
stream into those messages; anything else is a framing error and the
connection must be closed.
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
