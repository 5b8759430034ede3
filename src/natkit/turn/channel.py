"""ChannelData messages (RFC 8656 §12.4-12.5), sans-IO.

A ChannelData message is a 4-byte header - channel number, then the length
of the application data - followed by the data. Channel numbers 0x4000-0x4FFF
are valid (RFC 8656 §12; RFC 5766 allowed up to 0x7FFF, which now belongs to
no one). The first two bits, 01, tell ChannelData apart from STUN (00) on the
same transport (RFC 7983). Over UDP the message may carry up to three
padding bytes that the receiver ignores; over TCP and TLS it is padded to a
multiple of four (§12.5), and :class:`~natkit.stun.framing.StreamFramer`
strips that padding.
"""

from __future__ import annotations

import struct

from natkit.errors import MalformedMessageError

__all__ = [
    "CHANNEL_MAX",
    "CHANNEL_MIN",
    "CHANNEL_HEADER",
    "is_channel_data",
    "is_valid_channel",
    "pack_channel_data",
    "parse_channel_data",
]

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
CHANNEL_HEADER = struct.Struct("!HH")


def is_valid_channel(number: int) -> bool:
    """RFC 8656 §12: 0x4000 through 0x4FFF."""
    return CHANNEL_MIN <= number <= CHANNEL_MAX


def is_channel_data(data: bytes) -> bool:
    """Whether ``data`` starts like ChannelData (first two bits 01)."""
    return len(data) >= 4 and data[0] >> 6 == 1


def parse_channel_data(data: bytes) -> tuple[int, bytes]:
    """Split one ChannelData message into ``(channel, application data)``.

    Raises :class:`MalformedMessageError` (``error_code=None``: such messages
    are dropped, never answered) when the header is short, the number is out
    of range, or the length overruns the datagram. Trailing bytes after the
    data (padding) are ignored, as §12.5 requires of UDP receivers.
    """
    if len(data) < 4:
        raise MalformedMessageError("ChannelData shorter than its header", error_code=None)
    number, length = CHANNEL_HEADER.unpack_from(data)
    if not is_valid_channel(number):
        raise MalformedMessageError(f"channel {number:#x} out of range", error_code=None)
    if 4 + length > len(data):
        raise MalformedMessageError("ChannelData length overruns the message", error_code=None)
    return number, data[4 : 4 + length]


def pack_channel_data(number: int, payload: bytes, *, stream: bool = False) -> bytes:
    """One ChannelData message; ``stream=True`` pads to four bytes (§12.5)."""
    head = CHANNEL_HEADER.pack(number, len(payload))
    if stream and len(payload) & 3:
        return head + payload + bytes(-len(payload) % 4)
    return head + payload
