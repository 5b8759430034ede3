"""RTP data packets: the codec (RFC 3550 §5.1, header extensions RFC 8285).

Theory of operation
-------------------
:func:`parse_rtp` checks the fixed header (version 2, at least 12 bytes),
the CSRC list (CC x 4 bytes), the header extension (RFC 3550 §5.3.1: a
16-bit profile word and a length in 32-bit words) and the padding (§5.1: the
last byte counts the padding octets, itself included, and may not reach into
the header), every length before it is used. Extensions in the RFC 8285
forms are parsed into :class:`ExtensionElement` values: the one-byte form
(profile ``0xBEDE``, §4.2: 4-bit ID and length-minus-one, ID 0 a padding
byte, ID 15 ends parsing) and the two-byte form (profile ``0x100`` followed
by 4 "appbits", §4.3: one byte of ID, one of length). Any other profile is
kept opaque in :attr:`RtpPacket.extension_data`.

:func:`serialize_rtp` is the inverse; it encodes RFC 8285 elements in the
form the profile names, padding the block to a 32-bit boundary with zeros.

:func:`peek_rtp_header` is the media relay's fast path: one ``struct``
unpack of the fixed header and no copy of the payload, ``None`` for
anything that is not version-2 RTP.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from natkit.errors import LocalProtocolError, MalformedMessageError

__all__ = [
    "HEADER_LENGTH",
    "ONE_BYTE_PROFILE",
    "TWO_BYTE_PROFILE",
    "ExtensionElement",
    "RtpHeaderFields",
    "RtpPacket",
    "is_rfc8285_profile",
    "parse_rtp",
    "peek_rtp_header",
    "serialize_rtp",
]

HEADER_LENGTH = 12
ONE_BYTE_PROFILE = 0xBEDE  # RFC 8285 §4.2
TWO_BYTE_PROFILE = 0x1000  # RFC 8285 §4.3: 0x100 plus 4 appbits
_FIXED = struct.Struct("!BBHII")
_EXT_HEAD = struct.Struct("!HH")
_VERSION_BITS = 0x80  # version 2 in the top two bits of the first byte


def is_rfc8285_profile(profile: int) -> bool:
    """Whether an extension profile word names one of the RFC 8285 forms."""
    return profile == ONE_BYTE_PROFILE or profile & 0xFFF0 == TWO_BYTE_PROFILE


@dataclass(frozen=True, slots=True)
class ExtensionElement:
    """One RFC 8285 header extension element: a local ID (negotiated with
    ``a=extmap``) and its value."""

    id: int
    value: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """An RTP data packet (RFC 3550 §5.1); the version is always 2.

    ``padding`` is the number of padding octets, count byte included (0 for
    none). The header extension, when present, has a 16-bit
    ``extension_profile``; for the RFC 8285 profiles its content is
    ``extensions``, for any other profile ``extension_data`` (a multiple of
    4 bytes).
    """

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extensions: tuple[ExtensionElement, ...] = ()
    extension_data: bytes = b""
    padding: int = 0


class RtpHeaderFields(NamedTuple):
    """The fixed header fields, as :func:`peek_rtp_header` reads them."""

    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int


_unpack_fixed = _FIXED.unpack_from
_new_fields = tuple.__new__  # RtpHeaderFields(...) without the NamedTuple's Python __new__


def peek_rtp_header(data: bytes) -> RtpHeaderFields | None:
    """Read the fixed RTP header without parsing (or copying) the rest.

    Returns ``None`` when ``data`` is shorter than 12 bytes or not version 2.
    It does not check the CSRC count, extension or padding against the
    length: that is :func:`parse_rtp`'s job, for the packets that need it.
    """
    if len(data) < HEADER_LENGTH or data[0] & 0xC0 != _VERSION_BITS:
        return None
    _, b1, seq, ts, ssrc = _unpack_fixed(data)
    return _new_fields(RtpHeaderFields, (b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc))


def _parse_one_byte(data: bytes) -> tuple[ExtensionElement, ...]:
    elements: list[ExtensionElement] = []
    i, end = 0, len(data)
    while i < end:
        head = data[i]
        if head == 0:  # padding between elements (RFC 8285 §4.2)
            i += 1
            continue
        ident, length = head >> 4, (head & 0x0F) + 1
        if ident == 15:  # reserved: stop processing the extension
            break
        if i + 1 + length > end:
            raise MalformedMessageError(
                "one-byte header extension element overruns the block", error_code=None
            )
        elements.append(ExtensionElement(ident, data[i + 1 : i + 1 + length]))
        i += 1 + length
    return tuple(elements)


def _parse_two_byte(data: bytes) -> tuple[ExtensionElement, ...]:
    elements: list[ExtensionElement] = []
    i, end = 0, len(data)
    while i < end:
        ident = data[i]
        if ident == 0:  # padding (RFC 8285 §4.3)
            i += 1
            continue
        if i + 2 > end:
            raise MalformedMessageError(
                "two-byte header extension element truncated", error_code=None
            )
        length = data[i + 1]
        if i + 2 + length > end:
            raise MalformedMessageError(
                "two-byte header extension element overruns the block", error_code=None
            )
        elements.append(ExtensionElement(ident, data[i + 2 : i + 2 + length]))
        i += 2 + length
    return tuple(elements)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet (RFC 3550 §5.1, §5.3.1; RFC 8285).

    Raises :class:`~natkit.errors.MalformedMessageError` (``error_code``
    ``None``: RTP is never answered, only dropped) for anything else.
    """
    if len(data) < HEADER_LENGTH:
        raise MalformedMessageError("RTP packet shorter than 12 bytes", error_code=None)
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data)
    if b0 & 0xC0 != _VERSION_BITS:
        raise MalformedMessageError(f"RTP version {b0 >> 6}, not 2", error_code=None)
    end = len(data)
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0:
            raise MalformedMessageError("RTP padding count of zero", error_code=None)
        end -= padding
    cc = b0 & 0x0F
    offset = HEADER_LENGTH + 4 * cc
    if offset > end:
        raise MalformedMessageError("RTP CSRC list overruns the packet", error_code=None)
    csrcs = struct.unpack_from(f"!{cc}I", data, HEADER_LENGTH) if cc else ()
    profile: int | None = None
    elements: tuple[ExtensionElement, ...] = ()
    ext_data = b""
    if b0 & 0x10:
        if offset + 4 > end:
            raise MalformedMessageError("RTP header extension truncated", error_code=None)
        profile, words = _EXT_HEAD.unpack_from(data, offset)
        body_start = offset + 4
        offset = body_start + 4 * words
        if offset > end:
            raise MalformedMessageError("RTP header extension overruns the packet", error_code=None)
        body = data[body_start:offset]
        if profile == ONE_BYTE_PROFILE:
            elements = _parse_one_byte(body)
        elif profile & 0xFFF0 == TWO_BYTE_PROFILE:
            elements = _parse_two_byte(body)
        else:
            ext_data = body
    return RtpPacket(
        payload_type=b1 & 0x7F,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=data[offset:end],
        marker=bool(b1 & 0x80),
        csrcs=tuple(csrcs),
        extension_profile=profile,
        extensions=elements,
        extension_data=ext_data,
        padding=padding,
    )


def _encode_elements(profile: int, elements: tuple[ExtensionElement, ...]) -> bytes:
    out = bytearray()
    one_byte = profile == ONE_BYTE_PROFILE
    for element in elements:
        size = len(element.value)
        if one_byte:
            if not 1 <= element.id <= 14 or not 1 <= size <= 16:
                raise LocalProtocolError(
                    f"one-byte extension needs ID 1-14 and 1-16 bytes, got {element.id}/{size}"
                )
            out.append(element.id << 4 | (size - 1))
        else:
            if not 1 <= element.id <= 255 or size > 255:
                raise LocalProtocolError(
                    f"two-byte extension needs ID 1-255 and 0-255 bytes, got {element.id}/{size}"
                )
            out += bytes((element.id, size))
        out += element.value
    out += bytes(-len(out) % 4)
    return bytes(out)


def serialize_rtp(packet: RtpPacket) -> bytes:
    """Encode ``packet`` (RFC 3550 §5.1); the inverse of :func:`parse_rtp`.

    Raises :class:`~natkit.errors.LocalProtocolError` for fields that do not
    fit their wire size.
    """
    p = packet
    if not 0 <= p.payload_type <= 127:
        raise LocalProtocolError(f"payload type out of range: {p.payload_type}")
    if len(p.csrcs) > 15:
        raise LocalProtocolError("at most 15 CSRCs")
    if not 0 <= p.padding <= 255:
        raise LocalProtocolError(f"padding out of range: {p.padding}")
    b0 = _VERSION_BITS | len(p.csrcs)
    if p.padding:
        b0 |= 0x20
    parts = [b""]
    if p.csrcs:
        try:
            parts.append(struct.pack(f"!{len(p.csrcs)}I", *p.csrcs))
        except struct.error as exc:
            raise LocalProtocolError(f"CSRC out of range: {exc}") from None
    if p.extension_profile is not None:
        if not 0 <= p.extension_profile <= 0xFFFF:
            raise LocalProtocolError(f"extension profile out of range: {p.extension_profile}")
        b0 |= 0x10
        if is_rfc8285_profile(p.extension_profile):
            body = _encode_elements(p.extension_profile, p.extensions)
        else:
            body = p.extension_data
            if len(body) % 4:
                raise LocalProtocolError("opaque extension data must be a multiple of 4 bytes")
        if len(body) > 4 * 0xFFFF:
            raise LocalProtocolError("header extension too long")
        parts.append(_EXT_HEAD.pack(p.extension_profile, len(body) // 4))
        parts.append(body)
    try:
        parts[0] = _FIXED.pack(
            b0, (0x80 if p.marker else 0) | p.payload_type, p.sequence_number, p.timestamp, p.ssrc
        )
    except struct.error as exc:
        raise LocalProtocolError(f"RTP header field out of range: {exc}") from None
    parts.append(p.payload)
    if p.padding:
        parts.append(bytes(p.padding - 1) + bytes((p.padding,)))
    return b"".join(parts)
