"""IPv4 fragments for the TUN NAT: reassembly (RFC 791 §3.2, RFC 815) and
fragmentation on the way out.

A NAT rewrites ports, and only the first fragment of a datagram carries
them, so a NAT that translates fragments one by one loses the rest. Linux
(conntrack's defragmentation), like most NATs, reassembles before it
translates and fragments again on the way out; natkit's TUN NAT does the
same with :class:`Ipv4Reassembler` and :func:`fragment_ipv4`. A SIP INVITE
with ICE candidates is easily larger than 1500 bytes, so this matters for
calls, not just for the lab's completeness.

Reassembly is strict and bounded, as an exposed middlebox must be:
overlapping or inconsistent fragments drop the whole datagram (the policy
RFC 5722 prescribes for IPv6, to defeat overlap evasion), at most
``max_datagrams`` are pending, each at most 65,535 bytes, and a datagram
not complete ``timeout`` seconds after its first fragment is dropped
(Linux's ``ipfrag_time`` default, 30 s). Sans-IO: time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from natkit.errors import MalformedMessageError
from natkit.packet import internet_checksum

__all__ = ["Ipv4Reassembler", "ReassemblyConfig", "fragment_ipv4", "is_ipv4_fragment"]

_MF = 0x2000
_DF = 0x4000
_OFFSET = 0x1FFF
_MAX_DATAGRAM = 65_535


def _drop(reason: str) -> MalformedMessageError:
    return MalformedMessageError(reason, error_code=None)


def is_ipv4_fragment(data: bytes) -> bool:
    """Whether ``data`` (an IPv4 datagram) is a fragment: MF set or a
    non-zero offset."""
    return len(data) >= 20 and bool(int.from_bytes(data[6:8], "big") & (_MF | _OFFSET))


def _with_header(header: bytes, *, total: int, frag: int) -> bytes:
    head = bytearray(header)
    head[2:4] = total.to_bytes(2, "big")
    head[6:8] = frag.to_bytes(2, "big")
    head[10:12] = b"\x00\x00"
    head[10:12] = internet_checksum(bytes(head)).to_bytes(2, "big")
    return bytes(head)


def fragment_ipv4(datagram: bytes, mtu: int) -> list[bytes]:
    """``datagram`` as it leaves over a link of ``mtu`` bytes (RFC 791
    §3.2): itself when it fits; else fragments of at most ``mtu`` bytes,
    each carrying the original header (options included: the lab's NAT
    writes none) with the offset, MF bit, length and checksum set.

    Raises :class:`MalformedMessageError` for a datagram with DF set that
    does not fit (the caller drops it, as a router would after sending
    ICMP "fragmentation needed") or one that is not IPv4.
    """
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        raise _drop("not an IPv4 datagram")
    if len(datagram) <= mtu:
        return [datagram]
    ihl = (datagram[0] & 0x0F) * 4
    frag = int.from_bytes(datagram[6:8], "big")
    if frag & _DF:
        raise _drop(f"a {len(datagram)}-byte datagram with DF set exceeds MTU {mtu}")
    chunk = (mtu - ihl) // 8 * 8
    if chunk <= 0:
        raise _drop(f"MTU {mtu} leaves no room for data")
    header, body = datagram[:ihl], datagram[ihl:]
    base = frag & _OFFSET
    more = frag & _MF
    out: list[bytes] = []
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        last = start + chunk >= len(body)
        flags = (base + start // 8) | (more if last else _MF)
        out.append(_with_header(header, total=ihl + len(piece), frag=flags) + piece)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class ReassemblyConfig:
    """Limits of :class:`Ipv4Reassembler`."""

    timeout: float = 30.0  # Linux net.ipv4.ipfrag_time
    max_datagrams: int = 256  # pending at once; the oldest goes first


@dataclass(slots=True)
class _Pending:
    started: float
    header: bytes = b""  # the offset-0 fragment's header
    pieces: dict[int, bytes] = field(default_factory=dict)  # byte offset -> data
    end: int | None = None  # total data length, known from the MF=0 fragment
    size: int = 0


class Ipv4Reassembler:
    """Collects fragments until their datagram is whole (RFC 791 §3.2)."""

    def __init__(self, config: ReassemblyConfig | None = None) -> None:
        self.config = config if config is not None else ReassemblyConfig()
        self._pending: dict[tuple[bytes, bytes, int, int], _Pending] = {}
        self.dropped = 0  # datagrams given up: overlap, size, timeout, eviction

    @property
    def pending(self) -> int:
        """Datagrams with some fragments held."""
        return len(self._pending)

    def expire(self, *, now: float) -> None:
        """Drop datagrams whose first fragment came ``timeout`` ago."""
        cutoff = now - self.config.timeout
        for key in [k for k, p in self._pending.items() if p.started <= cutoff]:
            del self._pending[key]
            self.dropped += 1

    def add(self, data: bytes, *, now: float) -> bytes | None:
        """Take one fragment; the whole datagram (unfragmented header,
        fresh checksum) when this completed it, else None. Raises
        :class:`MalformedMessageError` (drop it) for a fragment that is
        malformed or inconsistent with those held (which are dropped too).
        """
        if len(data) < 20 or data[0] >> 4 != 4:
            raise _drop("not an IPv4 datagram")
        ihl = (data[0] & 0x0F) * 4
        total = int.from_bytes(data[2:4], "big")
        if ihl < 20 or total < ihl or total > len(data):
            raise _drop("bad IPv4 lengths")
        if internet_checksum(data[:ihl]) != 0:
            raise _drop("bad IPv4 header checksum")
        frag = int.from_bytes(data[6:8], "big")
        offset = (frag & _OFFSET) * 8
        more = bool(frag & _MF)
        piece = data[ihl:total]
        if more and (not piece or len(piece) % 8):
            raise _drop("a fragment other than the last must carry a multiple of 8 bytes")
        if offset + len(piece) > _MAX_DATAGRAM - ihl:
            raise _drop("fragments beyond 65,535 bytes")
        self.expire(now=now)
        key = (data[12:16], data[16:20], data[9], int.from_bytes(data[4:6], "big"))
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.config.max_datagrams:
                del self._pending[next(iter(self._pending))]
                self.dropped += 1
            pending = self._pending[key] = _Pending(started=now)
        try:
            self._place(pending, offset, piece, more, data[:ihl])
        except MalformedMessageError:
            del self._pending[key]
            self.dropped += 1
            raise
        if pending.end is None or pending.size != pending.end or not pending.header:
            return None
        del self._pending[key]
        body = b"".join(pending.pieces[o] for o in sorted(pending.pieces))
        header = pending.header
        return _with_header(header, total=len(header) + len(body), frag=0) + body

    @staticmethod
    def _place(pending: _Pending, offset: int, piece: bytes, more: bool, header: bytes) -> None:
        end = offset + len(piece)
        if not more:
            if pending.end is not None and pending.end != end:
                raise _drop("two last fragments disagree on the length")
            if any(o + len(p) > end for o, p in pending.pieces.items()):
                raise _drop("a fragment lies beyond the last one")
            pending.end = end
        elif pending.end is not None and end > pending.end:
            raise _drop("a fragment lies beyond the last one")
        for start, held in pending.pieces.items():
            if offset < start + len(held) and start < end:
                if start == offset and held == piece:
                    return  # a duplicate, as retransmitted by nobody but harmless
                raise _drop("overlapping fragments")
        pending.pieces[offset] = piece
        pending.size += len(piece)
        if offset == 0:
            pending.header = header
