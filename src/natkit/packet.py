"""IP packets as the NAT lab sees them: a small model plus the wire format.

:class:`Packet` is what the NAT behaviour core, the simulated internet and
the TUN NAT pass around: protocol, source and destination transport
addresses, payload, and for TCP the flags and sequence numbers a NAT's
connection tracking (RFC 5382) looks at. It is cheap to build and copy,
because the simulator moves hundreds of thousands of them per second.

:func:`encode_ipv4` / :func:`decode_ipv4` convert to and from real IPv4
datagrams (RFC 791, UDP RFC 768, TCP RFC 9293, checksums RFC 1071) for
TUN devices and pcap files. ICMP (RFC 792) is modelled only as far as a NAT
needs: destination-unreachable errors quoting the packet that caused them.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from natkit.addr import Endpoint, ip_of
from natkit.errors import MalformedMessageError

__all__ = [
    "IcmpError",
    "IpProto",
    "Packet",
    "TcpFlags",
    "decode_ipv4",
    "encode_ipv4",
    "internet_checksum",
]


class IpProto(enum.IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


class TcpFlags(enum.IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10


NO_FLAGS = TcpFlags(0)


class IcmpError(enum.IntEnum):
    """ICMP destination-unreachable codes a NAT may send (RFC 792, RFC 4787 REQ-14)."""

    PORT_UNREACHABLE = 3
    ADMIN_PROHIBITED = 13


class Packet(NamedTuple):
    """One IP packet. ``flags``/``seq``/``ack`` matter only for TCP; for
    ICMP errors ``icmp`` is the code and ``payload`` the quoted packet.

    A named tuple rather than a frozen dataclass: the simulator builds one
    or two per packet it moves, and tuple construction is four times faster.
    """

    proto: IpProto
    src: Endpoint
    dst: Endpoint
    payload: bytes = b""
    flags: TcpFlags = NO_FLAGS
    seq: int = 0
    ack: int = 0
    ttl: int = 64
    icmp: IcmpError | None = None

    def reply(self, payload: bytes = b"", flags: TcpFlags = NO_FLAGS) -> Packet:
        """A packet from this one's destination back to its source."""
        return Packet(self.proto, self.dst, self.src, payload, flags)

    @property
    def size(self) -> int:
        """Bytes on the wire (IPv4 header, transport header, payload)."""
        header = 20 + (8 if self.proto == IpProto.UDP else 20 if self.proto == IpProto.TCP else 8)
        return header + len(self.payload)


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement sum of RFC 1071, complemented.

    Because 2**16 is 1 modulo 0xFFFF, the one's complement sum of the 16-bit
    words is the whole buffer, read as one integer, modulo 0xFFFF (RFC 1071
    §2's "deferred carries" taken to the end) - with the one wrinkle that a
    non-zero buffer sums to 0xFFFF, never to 0. Four times faster than adding
    the words, which matters to the TUN NAT's per-packet path.
    """
    if len(data) % 2:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF
    if total == 0 and value:
        total = 0xFFFF
    return ~total & 0xFFFF


_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_ICMP = struct.Struct("!BBHI")


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    return src + dst + struct.pack("!BBH", 0, proto, length)


def encode_ipv4(packet: Packet, *, ident: int = 0, dont_fragment: bool = True) -> bytes:
    """Serialise ``packet`` as an IPv4 datagram with valid checksums; DF
    set unless ``dont_fragment`` is false (a datagram to be fragmented,
    :func:`natkit.ipfrag.fragment_ipv4`)."""
    src = ip_of(packet.src.host).packed
    dst = ip_of(packet.dst.host).packed
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("encode_ipv4 needs IPv4 addresses")
    if packet.proto == IpProto.UDP:
        length = 8 + len(packet.payload)
        seg = _UDP.pack(packet.src.port, packet.dst.port, length, 0) + packet.payload
        csum = internet_checksum(_pseudo(src, dst, IpProto.UDP, length) + seg) or 0xFFFF
        seg = seg[:6] + csum.to_bytes(2, "big") + seg[8:]
    elif packet.proto == IpProto.TCP:
        head = _TCP.pack(
            packet.src.port,
            packet.dst.port,
            packet.seq & 0xFFFFFFFF,
            packet.ack & 0xFFFFFFFF,
            5 << 4,
            int(packet.flags),
            65535,
            0,
            0,
        )
        seg = head + packet.payload
        csum = internet_checksum(_pseudo(src, dst, IpProto.TCP, len(seg)) + seg)
        seg = seg[:16] + csum.to_bytes(2, "big") + seg[18:]
    else:
        code = int(packet.icmp or IcmpError.PORT_UNREACHABLE)
        body = _ICMP.pack(3, code, 0, 0) + packet.payload
        csum = internet_checksum(body)
        seg = body[:2] + csum.to_bytes(2, "big") + body[4:]
    total = 20 + len(seg)
    header = _IPV4.pack(
        0x45,
        0,
        total,
        ident & 0xFFFF,
        0x4000 if dont_fragment else 0,
        packet.ttl,
        packet.proto,
        0,
        src,
        dst,
    )
    csum = internet_checksum(header)
    return header[:10] + csum.to_bytes(2, "big") + header[12:] + seg


def _ipv4_text(raw: bytes) -> str:
    return f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"


def decode_ipv4(data: bytes, *, verify: bool = True) -> Packet:
    """Parse an IPv4 datagram carrying UDP, TCP or an ICMP unreachable error.

    Raises :class:`MalformedMessageError` (``error_code=None``: drop it) for
    anything else, for truncation, fragments, and bad checksums when ``verify``.
    """
    if len(data) < 20 or data[0] >> 4 != 4:
        raise MalformedMessageError("not an IPv4 packet", error_code=None)
    ver_ihl, _, total, _, frag, ttl, proto, _, src_raw, dst_raw = _IPV4.unpack_from(data)
    ihl = (ver_ihl & 0x0F) * 4
    if ihl < 20 or total < ihl or total > len(data):
        raise MalformedMessageError("bad IPv4 lengths", error_code=None)
    if frag & 0x3FFF:
        raise MalformedMessageError("IPv4 fragments are not supported", error_code=None)
    if verify and internet_checksum(data[:ihl]) != 0:
        raise MalformedMessageError("bad IPv4 header checksum", error_code=None)
    src_ip, dst_ip = _ipv4_text(src_raw), _ipv4_text(dst_raw)
    seg = data[ihl:total]
    if proto == IpProto.UDP:
        if len(seg) < 8:
            raise MalformedMessageError("truncated UDP header", error_code=None)
        sport, dport, length, csum = _UDP.unpack_from(seg)
        if length < 8 or length > len(seg):
            raise MalformedMessageError("bad UDP length", error_code=None)
        if (
            verify
            and csum
            and internet_checksum(_pseudo(src_raw, dst_raw, proto, length) + seg[:length])
        ):
            raise MalformedMessageError("bad UDP checksum", error_code=None)
        return Packet(
            IpProto.UDP,
            Endpoint(src_ip, sport),
            Endpoint(dst_ip, dport),
            bytes(seg[8:length]),
            ttl=ttl,
        )
    if proto == IpProto.TCP:
        if len(seg) < 20:
            raise MalformedMessageError("truncated TCP header", error_code=None)
        sport, dport, seq, ack, off, flags, _, _, _ = _TCP.unpack_from(seg)
        doff = (off >> 4) * 4
        if doff < 20 or doff > len(seg):
            raise MalformedMessageError("bad TCP data offset", error_code=None)
        if verify and internet_checksum(_pseudo(src_raw, dst_raw, proto, len(seg)) + seg):
            raise MalformedMessageError("bad TCP checksum", error_code=None)
        return Packet(
            IpProto.TCP,
            Endpoint(src_ip, sport),
            Endpoint(dst_ip, dport),
            bytes(seg[doff:]),
            TcpFlags(flags & 0x1F),
            seq,
            ack,
            ttl,
        )
    if proto == IpProto.ICMP:
        if len(seg) < 8:
            raise MalformedMessageError("truncated ICMP header", error_code=None)
        icmp_type, code, _, _ = _ICMP.unpack_from(seg)
        if icmp_type != 3 or code not in (c.value for c in IcmpError):
            raise MalformedMessageError(
                "only ICMP destination unreachable is modelled", error_code=None
            )
        return Packet(
            IpProto.ICMP,
            Endpoint(src_ip, 0),
            Endpoint(dst_ip, 0),
            bytes(seg[8:]),
            ttl=ttl,
            icmp=IcmpError(code),
        )
    raise MalformedMessageError(f"IP protocol {proto} is not modelled", error_code=None)
