"""The SDP data model (RFC 8866 §5): immutable session and media descriptions.

Theory of operation
-------------------
A :class:`SessionDescription` holds the session-level fields in RFC 8866's
order (``v o s i u e p c b t r z k a``) and a tuple of
:class:`MediaDescription` (``m i c b k a``). Everything is a frozen
dataclass: offer/answer and the media relay's rewriting build new
descriptions with :func:`dataclasses.replace` instead of editing one that a
dialog may still hold. Attributes stay an ordered tuple of raw
:class:`~natkit.sdp.attributes.Attribute`; the accessors below decode the
ones natkit understands (``rtpmap``, direction, ``rtcp``, ``crypto`` ...).
Lines whose type letter SDP does not define are kept, when the parser's
policy says so, in ``extra_lines`` and written back at the end of their
section.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from natkit.addr import IPAddress
from natkit.sdp.attributes import (
    DIRECTION_NAMES,
    Attribute,
    ConnectionMode,
    Crypto,
    Direction,
    Fmtp,
    Rtcp,
    RtpMap,
    Setup,
    parse_connection_mode,
    parse_crypto,
    parse_fmtp,
    parse_packet_time,
    parse_rtcp,
    parse_rtpmap,
    parse_setup,
)

__all__ = [
    "ICE_ATTRIBUTE_NAMES",
    "Bandwidth",
    "Connection",
    "MediaDescription",
    "Origin",
    "SessionDescription",
    "Timing",
    "is_rtp_proto",
]

# RFC 8839 §5 (and RFC 8840's end-of-candidates): what the media relay strips
# when it takes ICE out of a description.
ICE_ATTRIBUTE_NAMES = frozenset(
    {
        "candidate",
        "remote-candidates",
        "ice-ufrag",
        "ice-pwd",
        "ice-lite",
        "ice-mismatch",
        "ice-options",
        "ice-pacing",
        "end-of-candidates",
    }
)


def is_rtp_proto(proto: str) -> bool:
    """True for RTP-based protocols (``RTP/AVP``, ``UDP/TLS/RTP/SAVPF``, ``TCP/RTP/AVP``...).

    Their formats are RTP payload type numbers (RFC 8866 §5.14).
    """
    return "RTP" in proto.upper().split("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`` (§5.2)."""

    username: str = "-"
    session_id: int
    session_version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    def format(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Connection:
    """``c=<nettype> <addrtype> <address>[/<ttl>][/<number>]`` (RFC 8866 §5.7).

    ``ttl`` exists only for IPv4 multicast; ``number`` counts consecutive
    multicast groups. ``address`` may be a host name (RFC 8866 allows one).
    """

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str
    ttl: int | None = None
    number: int | None = None

    def format(self) -> str:
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.number is not None:
            text += f"/{self.number}"
        return text

    @property
    def ip(self) -> IPAddress | None:
        """The address as an IP, or ``None`` for a host name."""
        try:
            return ipaddress.ip_address(self.address)
        except ValueError:
            return None

    @property
    def is_unspecified(self) -> bool:
        """``0.0.0.0`` or ``::``: RFC 2543 hold, or "address not known yet" (RFC 3264 §8.4)."""
        ip = self.ip
        return ip is not None and ip.is_unspecified

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4`` or ``IN IP6`` chosen by the address's family."""
        ip = ipaddress.ip_address(address)
        return cls(addrtype="IP6" if ip.version == 6 else "IP4", address=str(ip))


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8); unknown types are kept."""

    type: str
    value: int

    def format(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` with its ``r=`` lines, kept as text (§5.9-5.10)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


class _Attributes:
    """Typed accessors over an ``attributes`` tuple, shared by both levels."""

    __slots__ = ()
    attributes: tuple[Attribute, ...]

    def get(self, name: str) -> Attribute | None:
        """The first attribute named ``name`` (case-insensitively)."""
        name = name.lower()
        for attr in self.attributes:
            if attr.name.lower() == name:
                return attr
        return None

    def get_all(self, name: str) -> list[Attribute]:
        name = name.lower()
        return [a for a in self.attributes if a.name.lower() == name]

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    @property
    def direction(self) -> Direction | None:
        """This level's own direction attribute (RFC 8866 §6.7), if any; the last wins."""
        found: Direction | None = None
        for attr in self.attributes:
            lowered = attr.name.lower()
            if lowered in DIRECTION_NAMES:
                found = Direction(lowered)
        return found

    @property
    def setup(self) -> Setup | None:
        """``a=setup`` (RFC 4145 §4)."""
        attr = self.get("setup")
        return None if attr is None else parse_setup(attr.value)

    @property
    def connection_mode(self) -> ConnectionMode | None:
        """``a=connection`` (RFC 4145 §5)."""
        attr = self.get("connection")
        return None if attr is None else parse_connection_mode(attr.value)

    @property
    def ice_ufrag(self) -> str | None:
        attr = self.get("ice-ufrag")
        return None if attr is None else attr.value

    def without(self, names: frozenset[str]) -> tuple[Attribute, ...]:
        """This level's attributes minus those named in ``names`` (lower case)."""
        return tuple(a for a in self.attributes if a.name.lower() not in names)


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaDescription(_Attributes):
    """One ``m=`` section (RFC 8866 §5.14) and its lines.

    ``port_count`` is the ``/<number of ports>`` suffix, ``None`` if absent.
    A port of 0 means the stream is rejected or disabled (RFC 3264 §5.1, §6).
    """

    media: str
    port: int
    port_count: int | None = None
    proto: str
    formats: tuple[str, ...]
    title: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    extra_lines: tuple[tuple[str, str], ...] = ()

    @property
    def connection(self) -> Connection | None:
        return self.connections[0] if self.connections else None

    @property
    def is_rtp(self) -> bool:
        return is_rtp_proto(self.proto)

    @property
    def rejected(self) -> bool:
        return self.port == 0

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats as RTP payload types (the parser checked RTP protos' formats)."""
        return tuple(int(f) for f in self.formats if f.isdigit())

    def rtpmaps(self) -> dict[int, RtpMap]:
        """``a=rtpmap`` by payload type (RFC 8866 §6.6); the first one for a PT wins."""
        out: dict[int, RtpMap] = {}
        for attr in self.get_all("rtpmap"):
            rtpmap = parse_rtpmap(attr.value)
            out.setdefault(rtpmap.payload_type, rtpmap)
        return out

    def fmtps(self) -> dict[str, Fmtp]:
        """``a=fmtp`` by format (RFC 8866 §6.15)."""
        out: dict[str, Fmtp] = {}
        for attr in self.get_all("fmtp"):
            fmtp = parse_fmtp(attr.value)
            out.setdefault(fmtp.format, fmtp)
        return out

    @property
    def ptime(self) -> float | None:
        """``a=ptime`` in milliseconds (RFC 8866 §6.4)."""
        attr = self.get("ptime")
        return None if attr is None else parse_packet_time(attr.value)

    @property
    def maxptime(self) -> float | None:
        """``a=maxptime`` in milliseconds (RFC 8866 §6.5)."""
        attr = self.get("maxptime")
        return None if attr is None else parse_packet_time(attr.value)

    @property
    def rtcp(self) -> Rtcp | None:
        """``a=rtcp`` (RFC 3605 §2.1)."""
        attr = self.get("rtcp")
        return None if attr is None else parse_rtcp(attr.value)

    @property
    def rtcp_mux(self) -> bool:
        """``a=rtcp-mux`` present (RFC 5761 §5.1.1)."""
        return self.has("rtcp-mux")

    def crypto(self) -> list[Crypto]:
        """Every ``a=crypto`` line in order of preference (RFC 4568 §9.1)."""
        return [parse_crypto(a.value) for a in self.get_all("crypto")]

    @property
    def mid(self) -> str | None:
        """``a=mid`` (RFC 5888 §4)."""
        attr = self.get("mid")
        return None if attr is None else attr.value

    def with_attributes(self, attributes: tuple[Attribute, ...]) -> MediaDescription:
        return dataclasses.replace(self, attributes=attributes)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionDescription(_Attributes):
    """A whole SDP body (RFC 8866 §5)."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    timings: tuple[Timing, ...] = field(default_factory=lambda: (Timing(),))
    time_zones: str | None = None
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()
    extra_lines: tuple[tuple[str, str], ...] = ()

    def connection_of(self, index: int) -> Connection | None:
        """The media section's own ``c=``, else the session's (RFC 8866 §5.7)."""
        return self.media[index].connection or self.connection

    def direction_of(self, index: int) -> Direction:
        """Media-level direction, else session-level, else ``sendrecv`` (RFC 8866 §6.7)."""
        return self.media[index].direction or self.direction or Direction.SENDRECV

    def setup_of(self, index: int) -> Setup | None:
        """Media-level ``a=setup``, else session-level (RFC 4145 §4)."""
        return self.media[index].setup or self.setup

    def ice_ufrag_of(self, index: int) -> str | None:
        """``a=ice-ufrag`` of the media section, else the session's (RFC 8839 §5.4)."""
        return self.media[index].ice_ufrag or self.ice_ufrag

    def with_media(self, index: int, media: MediaDescription) -> SessionDescription:
        items = list(self.media)
        items[index] = media
        return dataclasses.replace(self, media=tuple(items))
