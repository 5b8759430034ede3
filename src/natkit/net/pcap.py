"""pcap files that Wireshark and tshark open (LINKTYPE_RAW: bare IP packets,
IPv4 or IPv6, told apart by the version nibble).

The lab writes one file per link it is asked to capture; timestamps are the
simulation's virtual seconds (or real time for the namespace lab).
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from natkit.addr import Endpoint, ip_of
from natkit.packet import IcmpError, IpProto, Packet, encode_ipv4, internet_checksum

__all__ = ["LINKTYPE_RAW", "PcapWriter", "encode_ipv6"]

LINKTYPE_RAW = 101
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_IPV6 = struct.Struct("!IHBB16s16s")
_ICMPV6 = 58
_ICMPV6_CODE = {IcmpError.PORT_UNREACHABLE: 4, IcmpError.ADMIN_PROHIBITED: 1}
"""RFC 4443 §3.1 Destination Unreachable codes for the modelled errors."""


def encode_ipv6(packet: Packet) -> bytes:
    """``packet`` as an IPv6 datagram (RFC 8200 §3, no extension headers)
    with the transport checksum over the IPv6 pseudo-header (§8.1; UDP's
    is mandatory, a zero sum is sent as 0xFFFF). ICMP errors become ICMPv6
    Destination Unreachable (RFC 4443 §3.1)."""
    src = ip_of(packet.src.host).packed
    dst = ip_of(packet.dst.host).packed
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("encode_ipv6 needs IPv6 addresses")
    # The UDP/TCP segment (and the ICMP error body) is laid out as for IPv4;
    # build it there and redo the checksum over the IPv6 pseudo-header.
    stand_in = packet._replace(
        src=Endpoint("0.0.0.0", packet.src.port), dst=Endpoint("0.0.0.0", packet.dst.port)
    )
    segment = bytearray(encode_ipv4(stand_in)[20:])
    if packet.proto is IpProto.ICMP:
        next_header = _ICMPV6
        segment[0] = 1
        segment[1] = _ICMPV6_CODE.get(packet.icmp or IcmpError.PORT_UNREACHABLE, 4)
        at = 2
    else:
        next_header = int(packet.proto)
        at = 6 if packet.proto is IpProto.UDP else 16
    segment[at : at + 2] = b"\x00\x00"
    pseudo = src + dst + struct.pack("!IxxxB", len(segment), next_header)
    checksum = internet_checksum(pseudo + bytes(segment))
    if packet.proto is IpProto.UDP and checksum == 0:
        checksum = 0xFFFF
    segment[at : at + 2] = checksum.to_bytes(2, "big")
    header = _IPV6.pack(6 << 28, len(segment), next_header, packet.ttl, src, dst)
    return header + bytes(segment)


class PcapWriter:
    """Append packets to a classic (microsecond) pcap file."""

    def __init__(self, path: str | Path, *, snaplen: int = 65535) -> None:
        self.path = Path(path)
        self._file: BinaryIO = self.path.open("wb")
        self._file.write(_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_RAW))
        self.snaplen = snaplen
        self.count = 0

    def write_raw(self, timestamp: float, data: bytes) -> None:
        """One IP datagram seen at ``timestamp`` seconds."""
        sec = int(timestamp)
        usec = round((timestamp - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        captured = data[: self.snaplen]
        self._file.write(_RECORD.pack(sec, usec, len(captured), len(data)) + captured)
        self.count += 1

    def write(self, timestamp: float, packet: Packet) -> None:
        """One modelled packet, IPv4 or IPv6 by its addresses."""
        if ":" in packet.src.host:
            self.write_raw(timestamp, encode_ipv6(packet))
        else:
            self.write_raw(timestamp, encode_ipv4(packet, ident=self.count))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
