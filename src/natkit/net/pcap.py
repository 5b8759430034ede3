"""pcap files that Wireshark and tshark open (LINKTYPE_RAW: bare IP packets).

The lab writes one file per link it is asked to capture; timestamps are the
simulation's virtual seconds (or real time for the namespace lab).
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from natkit.packet import Packet, encode_ipv4

__all__ = ["LINKTYPE_RAW", "PcapWriter"]

LINKTYPE_RAW = 101
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


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
        """One modelled packet (IPv4 only; others are skipped)."""
        if ":" in packet.src.host:
            return
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
