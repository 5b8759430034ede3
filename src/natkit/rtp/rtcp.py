"""RTCP packets and compound packets: the codec (RFC 3550 §6, §A.2; RFC 5506).

Theory of operation
-------------------
An RTCP datagram is a compound packet: RTCP packets back to back, each with
the common header (version 2, padding bit, a 5-bit count, the packet type
and a length in 32-bit words minus one, §6.4.1). :func:`parse_rtcp` walks
them with every length checked against what is left, and applies the
validity checks of §A.2: version 2 everywhere, the padding bit only on the
last packet (its count inside that packet), the lengths adding up to the
datagram exactly, and - for a full-size compound - an SR or RR first.
RFC 5506 reduced-size RTCP (a single packet of any type, e.g. a feedback
message) passes with ``allow_reduced_size=True``.

Known packet types become typed values: :class:`SenderReport` and
:class:`ReceiverReport` (§6.4.1-6.4.2, with :class:`ReportBlock`),
:class:`SourceDescription` (§6.5, chunks of :class:`SdesItem`),
:class:`Bye` (§6.6) and :class:`App` (§6.7). Any other type (RFC 4585
feedback, RFC 3611 XR, ...) is kept as :class:`RtcpUnknown`, opaque.

:func:`serialize_rtcp` writes a compound packet from such values (no
padding; SRTCP needs none). NTP timestamps (§4) convert with
:func:`ntp_timestamp` and :func:`ntp_middle32`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from natkit.errors import LocalProtocolError, MalformedMessageError

__all__ = [
    "MAX_PACKETS",
    "NTP_UNIX_OFFSET",
    "App",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtcpPacketType",
    "RtcpUnknown",
    "SdesChunk",
    "SdesItem",
    "SdesItemType",
    "SenderReport",
    "SourceDescription",
    "ntp_middle32",
    "ntp_timestamp",
    "parse_rtcp",
    "serialize_rtcp",
]

MAX_PACKETS = 64  # bounds the work one compound packet can cause
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_HEAD = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IQIII")
_BLOCK = struct.Struct("!IBBHIIII")  # cumulative lost split: high byte + low 16 bits
_U32 = struct.Struct("!I")


class RtcpPacketType(enum.IntEnum):
    """RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1, RFC 3611 §2)."""

    SR = 200
    RR = 201
    SDES = 202
    BYE = 203
    APP = 204
    RTPFB = 205
    PSFB = 206
    XR = 207


class SdesItemType(enum.IntEnum):
    """SDES item types (RFC 3550 §6.5, §12.2)."""

    CNAME = 1
    NAME = 2
    EMAIL = 3
    PHONE = 4
    LOC = 5
    TOOL = 6
    NOTE = 7
    PRIV = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBlock:
    """A reception report block (RFC 3550 §6.4.1).

    ``fraction_lost`` is the 8-bit fixed-point fraction (lost/expected x
    256) of the last interval; ``cumulative_lost`` the 24-bit *signed*
    total (duplicates can make it negative); ``highest_sequence`` the
    extended highest sequence number (cycles << 16 | seq); ``jitter`` in
    timestamp units; ``last_sr`` the middle 32 bits of the NTP timestamp of
    the source's last SR and ``delay_since_last_sr`` in 1/65536 s (both 0
    when no SR was received).
    """

    ssrc: int
    fraction_lost: int = 0
    cumulative_lost: int = 0
    highest_sequence: int = 0
    jitter: int = 0
    last_sr: int = 0
    delay_since_last_sr: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SenderReport:
    """SR (RFC 3550 §6.4.1): sender info plus up to 31 report blocks.

    ``ntp_timestamp`` is the full 64-bit NTP time; ``octet_count`` counts
    payload octets only. ``extension`` is the profile-specific tail, opaque.
    """

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverReport:
    """RR (RFC 3550 §6.4.2): the reporter's SSRC and up to 31 report blocks."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class SdesItem:
    """One SDES item (RFC 3550 §6.5): a type (:class:`SdesItemType` or any
    other 8-bit value) and up to 255 octets of (normally UTF-8) text."""

    type: int
    value: bytes

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """The items describing one SSRC/CSRC."""

    ssrc: int
    items: tuple[SdesItem, ...] = ()

    def get(self, item_type: SdesItemType) -> str | None:
        """The first item of ``item_type`` as text, if present."""
        for item in self.items:
            if item.type == item_type:
                return item.text
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """SDES (RFC 3550 §6.5): up to 31 chunks."""

    chunks: tuple[SdesChunk, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    """BYE (RFC 3550 §6.6): the sources leaving and an optional reason."""

    ssrcs: tuple[int, ...]
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """APP (RFC 3550 §6.7): subtype, SSRC, a 4-octet ASCII name, opaque data
    (a multiple of 4 octets)."""

    subtype: int
    ssrc: int
    name: bytes
    data: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtcpUnknown:
    """Any other RTCP packet type, kept opaque: ``count`` is the 5-bit
    header field (RC/SC/FMT), ``body`` everything after the 4-byte header."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | App | RtcpUnknown


def ntp_timestamp(seconds: float) -> int:
    """The 64-bit NTP timestamp (RFC 3550 §4) of ``seconds`` since 1900."""
    whole = int(seconds)
    return (whole & 0xFFFFFFFF) << 32 | int((seconds - whole) * (1 << 32)) & 0xFFFFFFFF


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: LSR's format (§6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def _malformed(reason: str) -> MalformedMessageError:
    return MalformedMessageError(reason, error_code=None)


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc, fraction, lost_hi, lost_lo, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(
            body, offset
        )
        lost = lost_hi << 16 | lost_lo
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(
            ReportBlock(
                ssrc=ssrc,
                fraction_lost=fraction,
                cumulative_lost=lost,
                highest_sequence=highest,
                jitter=jitter,
                last_sr=lsr,
                delay_since_last_sr=dlsr,
            )
        )
        offset += _BLOCK.size
    return tuple(blocks)


def _parse_sr(count: int, body: bytes) -> SenderReport:
    need = _SENDER_INFO.size + count * _BLOCK.size
    if len(body) < need:
        raise _malformed("SR shorter than its report count")
    ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
    return SenderReport(
        ssrc=ssrc,
        ntp_timestamp=ntp,
        rtp_timestamp=rtp_ts,
        packet_count=packets,
        octet_count=octets,
        reports=_parse_blocks(body, _SENDER_INFO.size, count),
        extension=body[need:],
    )


def _parse_rr(count: int, body: bytes) -> ReceiverReport:
    need = 4 + count * _BLOCK.size
    if len(body) < need:
        raise _malformed("RR shorter than its report count")
    return ReceiverReport(
        ssrc=_U32.unpack_from(body)[0],
        reports=_parse_blocks(body, 4, count),
        extension=body[need:],
    )


def _parse_sdes(count: int, body: bytes) -> SourceDescription:
    chunks = []
    offset, end = 0, len(body)
    for _ in range(count):
        if offset + 4 > end:
            raise _malformed("SDES chunk truncated")
        ssrc = _U32.unpack_from(body, offset)[0]
        offset += 4
        items = []
        while True:
            if offset >= end:
                raise _malformed("SDES chunk without its terminating null item")
            item_type = body[offset]
            if item_type == 0:
                # The null item, then zero octets up to the next 32-bit boundary.
                offset += 1
                offset += -offset % 4
                if offset > end:
                    raise _malformed("SDES chunk padding overruns the packet")
                break
            if offset + 2 > end:
                raise _malformed("SDES item truncated")
            length = body[offset + 1]
            if offset + 2 + length > end:
                raise _malformed("SDES item overruns the packet")
            items.append(SdesItem(item_type, body[offset + 2 : offset + 2 + length]))
            offset += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return SourceDescription(tuple(chunks))


def _parse_bye(count: int, body: bytes) -> Bye:
    need = 4 * count
    if len(body) < need:
        raise _malformed("BYE shorter than its source count")
    ssrcs = struct.unpack_from(f"!{count}I", body)
    reason = None
    if len(body) > need:
        length = body[need]
        if need + 1 + length > len(body):
            raise _malformed("BYE reason overruns the packet")
        reason = body[need + 1 : need + 1 + length].decode("utf-8", "replace")
    return Bye(tuple(ssrcs), reason)


def _parse_app(count: int, body: bytes) -> App:
    if len(body) < 8:
        raise _malformed("APP shorter than SSRC and name")
    return App(subtype=count, ssrc=_U32.unpack_from(body)[0], name=body[4:8], data=body[8:])


_PARSERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    RtcpPacketType.SR: _parse_sr,
    RtcpPacketType.RR: _parse_rr,
    RtcpPacketType.SDES: _parse_sdes,
    RtcpPacketType.BYE: _parse_bye,
    RtcpPacketType.APP: _parse_app,
}


def parse_rtcp(data: bytes, *, allow_reduced_size: bool = False) -> list[RtcpPacket]:
    """Parse a compound RTCP packet (RFC 3550 §6.1, validity checks §A.2).

    With ``allow_reduced_size`` the first packet need not be an SR or RR
    (RFC 5506 §3.4). Raises :class:`~natkit.errors.MalformedMessageError`
    (``error_code`` ``None``: drop) on any violation.
    """
    packets: list[RtcpPacket] = []
    offset, end = 0, len(data)
    if end < 4:
        raise _malformed("RTCP packet shorter than its header")
    while offset < end:
        if len(packets) >= MAX_PACKETS:
            raise _malformed("too many packets in one RTCP compound")
        if offset + 4 > end:
            raise _malformed("RTCP packet header truncated")
        b0, packet_type, words = _HEAD.unpack_from(data, offset)
        if b0 & 0xC0 != 0x80:
            raise _malformed(f"RTCP version {b0 >> 6}, not 2")
        size = 4 * (words + 1)
        if offset + size > end:
            raise _malformed("RTCP packet length overruns the datagram")
        body = data[offset + 4 : offset + size]
        offset += size
        if b0 & 0x20:
            # §A.2: only the last packet of a compound may be padded.
            if offset != end:
                raise _malformed("RTCP padding before the last packet of a compound")
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise _malformed("RTCP padding count out of range")
            body = body[:-pad]
        if not packets and not allow_reduced_size and packet_type not in (200, 201):
            raise _malformed("compound RTCP must start with SR or RR")
        count = b0 & 0x1F
        parser = _PARSERS.get(packet_type)
        if parser is None:
            packets.append(RtcpUnknown(packet_type=packet_type, count=count, body=body))
        else:
            packets.append(parser(count, body))
    return packets


# -- serialization --------------------------------------------------------------------------


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise LocalProtocolError("RTCP packet body must be a multiple of 4 octets")
    if not 0 <= count <= 31:
        raise LocalProtocolError(f"RTCP count out of range: {count}")
    words = len(body) // 4
    if words > 0xFFFF:
        raise LocalProtocolError("RTCP packet too long")
    return _HEAD.pack(0x80 | count, packet_type, words)


def _blocks(reports: tuple[ReportBlock, ...]) -> bytes:
    out = []
    for r in reports:
        if not -0x800000 <= r.cumulative_lost <= 0x7FFFFF:
            raise LocalProtocolError(f"cumulative lost out of 24-bit range: {r.cumulative_lost}")
        lost = r.cumulative_lost & 0xFFFFFF
        out.append(
            _BLOCK.pack(
                r.ssrc,
                r.fraction_lost,
                lost >> 16,
                lost & 0xFFFF,
                r.highest_sequence,
                r.jitter,
                r.last_sr,
                r.delay_since_last_sr,
            )
        )
    return b"".join(out)


def _sdes_body(sdes: SourceDescription) -> bytes:
    out = bytearray()
    for chunk in sdes.chunks:
        out += _U32.pack(chunk.ssrc)
        for item in chunk.items:
            if not 1 <= item.type <= 255 or len(item.value) > 255:
                raise LocalProtocolError("SDES item type must be 1-255 and value at most 255")
            out += bytes((item.type, len(item.value))) + item.value
        out += bytes(4 - len(out) % 4)  # the null item plus padding: 1 to 4 zero octets
    return bytes(out)


def _serialize_one(packet: RtcpPacket) -> bytes:
    match packet:
        case SenderReport():
            body = (
                _SENDER_INFO.pack(
                    packet.ssrc,
                    packet.ntp_timestamp,
                    packet.rtp_timestamp,
                    packet.packet_count,
                    packet.octet_count,
                )
                + _blocks(packet.reports)
                + packet.extension
            )
            return _header(len(packet.reports), RtcpPacketType.SR, body) + body
        case ReceiverReport():
            body = _U32.pack(packet.ssrc) + _blocks(packet.reports) + packet.extension
            return _header(len(packet.reports), RtcpPacketType.RR, body) + body
        case SourceDescription():
            body = _sdes_body(packet)
            return _header(len(packet.chunks), RtcpPacketType.SDES, body) + body
        case Bye():
            body = struct.pack(f"!{len(packet.ssrcs)}I", *packet.ssrcs)
            if packet.reason is not None:
                reason = packet.reason.encode()
                if len(reason) > 255:
                    raise LocalProtocolError("BYE reason longer than 255 octets")
                body += bytes((len(reason),)) + reason
                body += bytes(-len(body) % 4)
            return _header(len(packet.ssrcs), RtcpPacketType.BYE, body) + body
        case App():
            if len(packet.name) != 4:
                raise LocalProtocolError("APP name must be 4 octets")
            body = _U32.pack(packet.ssrc) + packet.name + packet.data
            return _header(packet.subtype, RtcpPacketType.APP, body) + body
        case RtcpUnknown():
            if not 0 <= packet.packet_type <= 255:
                raise LocalProtocolError(f"RTCP packet type out of range: {packet.packet_type}")
            return _header(packet.count, packet.packet_type, packet.body) + packet.body
    raise LocalProtocolError(f"not an RTCP packet: {packet!r}")  # pragma: no cover


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    """Encode a compound RTCP packet (RFC 3550 §6.1), packets in the order given.

    Raises :class:`~natkit.errors.LocalProtocolError` for values that do not
    fit their wire fields.
    """
    try:
        return b"".join(_serialize_one(p) for p in packets)
    except struct.error as exc:
        raise LocalProtocolError(f"RTCP field out of range: {exc}") from None
