"""SDP text codec (RFC 8866 §5, tolerant of RFC 4566 peers).

Theory of operation
-------------------
:func:`parse_sdp` checks the body's size before looking at it, splits it into
``<type>=<value>`` lines (CRLF or bare LF, trailing blanks dropped, empty
lines skipped), and walks them: the session section up to the first ``m=``,
then one section per ``m=``. Within a section lines may come in any order
(real peers put ``c=`` after ``a=``); :func:`serialize_sdp` always writes
RFC 8866's order. Counts of media sections, attributes and formats are
bounded by :class:`SdpConfig`.

Two kinds of rejection, told apart by ``MalformedMessageError.error_code``:

- **400** -- the body is not SDP: no ``v=0`` first, ``o=`` or ``s=``
  missing or repeated, a line that is not ``<letter>=``, a field that is not
  a number where one must be, a port beyond 65535, a body over the size
  limits. A SIP UA answers 400 Bad Request.
- **488** -- it is SDP but cannot be used: an active media section with no
  ``c=`` at either level (RFC 8866 §5.7), an RTP media section whose formats
  are not payload types 0-127 (§5.14). A SIP UA answers 488 Not Acceptable
  Here. Typed attribute accessors raise 488 too.

Lines whose type letter RFC 8866 does not define follow
:class:`UnknownLines`: kept by default (RFC 4566 §5 told parsers to ignore
such a description entirely; RFC 8866 §5 keeps the small set of letters but
real peers add their own, so natkit keeps and re-emits them), or dropped, or
rejected (400).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from natkit.errors import MalformedMessageError
from natkit.sdp.attributes import UNUSABLE, Attribute
from natkit.sdp.model import (
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)

__all__ = ["SdpConfig", "UnknownLines", "parse_sdp", "serialize_sdp"]

_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_SESSION_ONLY = frozenset("vosuept rz".replace(" ", ""))
_KNOWN = frozenset("vosiuepcbtrzkam")


class UnknownLines(enum.Enum):
    """What to do with a line whose type letter RFC 8866 does not define."""

    KEEP = "keep"
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True, slots=True, kw_only=True)
class SdpConfig:
    """Parser limits and policy.

    The defaults carry a long WebRTC offer (several m-sections of dozens of
    attributes each) with room to spare while bounding the work one SIP body
    can cause.
    """

    max_size: int = 65_536
    max_media: int = 32
    max_attributes: int = 2_048  # in the whole body
    max_formats: int = 128  # per m= line
    unknown_lines: UnknownLines = UnknownLines.KEEP


DEFAULT_CONFIG = SdpConfig()


def _bad(text: str) -> MalformedMessageError:
    return MalformedMessageError(text, error_code=400)


def _number(text: str, what: str, high: int | None = None) -> int:
    if not _DIGITS.match(text):
        raise _bad(f"{what} is not a number: {text!r}")
    value = int(text)
    if high is not None and value > high:
        raise _bad(f"{what} out of range: {value}")
    return value


def _split_lines(text: str) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for raw in text.split("\n"):
        line = raw.rstrip(" \t\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise _bad(f"not an SDP line: {line[:40]!r}")
        if "\r" in line or "\x00" in line:
            raise _bad("CR or NUL inside an SDP line")
        lines.append((line[0], line[2:]))
    return lines


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise _bad(f"o= needs 6 fields: {value!r}")
    return Origin(
        username=parts[0],
        session_id=_number(parts[1], "o= sess-id"),
        session_version=_number(parts[2], "o= sess-version"),
        nettype=parts[3],
        addrtype=parts[4],
        address=parts[5],
    )


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise _bad(f"c= needs 3 fields: {value!r}")
    address, *suffix = parts[2].split("/")
    if not address or len(suffix) > 2:
        raise _bad(f"bad c= address {parts[2]!r}")
    ttl: int | None = None
    number: int | None = None
    if parts[1].upper() == "IP6":
        if len(suffix) > 1:
            raise _bad(f"IP6 c= takes no TTL: {parts[2]!r}")
        if suffix:
            number = _number(suffix[0], "c= number of addresses")
    elif suffix:  # IPv4 multicast: /ttl[/number] (RFC 8866 §5.7)
        ttl = _number(suffix[0], "c= TTL", 255)
        if len(suffix) == 2:
            number = _number(suffix[1], "c= number of addresses")
    return Connection(nettype=parts[0], addrtype=parts[1], address=address, ttl=ttl, number=number)


def _parse_bandwidth(value: str) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not bwtype.strip():
        raise _bad(f"bad b= line {value!r}")
    return Bandwidth(bwtype.strip(), _number(amount.strip(), "b= bandwidth"))


def _parse_timing(value: str) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise _bad(f"t= needs 2 fields: {value!r}")
    return Timing(_number(parts[0], "t= start"), _number(parts[1], "t= stop"))


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    if not name or name != name.strip():
        raise _bad(f"bad a= line {value[:40]!r}")
    return Attribute(name, rest if sep else None)


def _parse_media_line(value: str, config: SdpConfig) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise _bad(f"m= needs media, port and proto: {value[:60]!r}")
    port_text, _, count_text = parts[1].partition("/")
    port = _number(port_text, "m= port", 0xFFFF)
    port_count = None
    if count_text:
        port_count = _number(count_text, "m= number of ports", 0xFFFF)
        if port_count == 0:
            raise _bad("m= number of ports is 0")
    formats = tuple(parts[3:])
    if len(formats) > config.max_formats:
        raise _bad(f"m= line with {len(formats)} formats (limit {config.max_formats})")
    if not formats and port != 0:
        raise _bad("m= line without formats")
    return MediaDescription(
        media=parts[0], port=port, port_count=port_count, proto=parts[2], formats=formats
    )


class _Section:
    """Fields collected for one section before it is frozen."""

    def __init__(self) -> None:
        self.values: dict[str, list[str]] = {}
        self.value_lines = 0  # lines in ``values``, kept as a count: no sum per line
        self.attributes: list[Attribute] = []
        self.extra: list[tuple[str, str]] = []

    def one(self, letter: str) -> str | None:
        found = self.values.get(letter)
        if not found:
            return None
        if len(found) > 1:
            raise _bad(f"more than one {letter}= line")
        return found[0]


def parse_sdp(data: bytes | str, config: SdpConfig = DEFAULT_CONFIG) -> SessionDescription:
    """Parse an SDP body (RFC 8866 §5); see the module docstring for the rules.

    Raises :class:`MalformedMessageError` with ``error_code`` 400 (not SDP)
    or 488 (unusable SDP).
    """
    if len(data) > config.max_size:
        raise _bad(f"SDP body of {len(data)} bytes (limit {config.max_size})")
    if isinstance(data, str):
        try:  # the size limit is in bytes, and what is parsed must serialize again
            data = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise _bad("SDP text with characters UTF-8 cannot carry") from None
        if len(data) > config.max_size:
            raise _bad(f"SDP body of {len(data)} bytes (limit {config.max_size})")
    # SDP is UTF-8 (RFC 8866 §5); other bytes are kept, not refused, so that
    # a Latin-1 session name from an old phone survives a proxy's rewrite.
    text = data.decode("utf-8", "surrogateescape")
    lines = _split_lines(text)
    if not lines or lines[0] != ("v", "0"):
        raise _bad("SDP must start with v=0")
    session = _Section()
    media: list[tuple[MediaDescription, _Section]] = []
    current = session
    attribute_count = 0
    timings: list[Timing] = []
    repeats: list[list[str]] = []  # each t= line's r= lines, frozen once at the end
    for letter, value in lines[1:]:
        if letter == "m":
            if len(media) >= config.max_media:
                raise _bad(f"more than {config.max_media} media sections")
            current = _Section()
            media.append((_parse_media_line(value, config), current))
        elif letter == "a":
            attribute_count += 1
            if attribute_count > config.max_attributes:
                raise _bad(f"more than {config.max_attributes} attributes")
            current.attributes.append(_parse_attribute(value))
        elif letter not in _KNOWN:
            if config.unknown_lines is UnknownLines.REJECT:
                raise _bad(f"unknown SDP line type {letter!r}")
            if config.unknown_lines is UnknownLines.KEEP:
                attribute_count += 1
                if attribute_count > config.max_attributes:
                    raise _bad(f"more than {config.max_attributes} attributes")
                current.extra.append((letter, value))
        elif current is not session and letter in _SESSION_ONLY:
            raise _bad(f"{letter}= line inside a media section")
        elif letter == "v":
            raise _bad("second v= line")
        elif letter in {"t", "r"}:
            session.value_lines += 1
            if session.value_lines > config.max_attributes:
                raise _bad("too many lines in one section")
            if letter == "t":
                timings.append(_parse_timing(value))
                repeats.append([])
            elif not timings:
                raise _bad("r= before t=")
            else:
                repeats[-1].append(value)
        else:
            current.values.setdefault(letter, []).append(value)
            current.value_lines += 1
            if current.value_lines > config.max_attributes:
                raise _bad("too many lines in one section")
    timings = [
        Timing(t.start, t.stop, tuple(r)) if r else t for t, r in zip(timings, repeats, strict=True)
    ]
    desc = _build(session, media, timings)
    _check_usable(desc)
    return desc


def _build(
    session: _Section, media: list[tuple[MediaDescription, _Section]], timings: list[Timing]
) -> SessionDescription:
    origin_text = session.one("o")
    if origin_text is None:
        raise _bad("o= line missing")
    session_name = session.one("s")
    if session_name is None:
        raise _bad("s= line missing")
    connection = session.one("c")
    built = []
    for m, section in media:
        built.append(
            MediaDescription(
                media=m.media,
                port=m.port,
                port_count=m.port_count,
                proto=m.proto,
                formats=m.formats,
                title=section.one("i"),
                connections=tuple(_parse_connection(c) for c in section.values.get("c", ())),
                bandwidths=tuple(_parse_bandwidth(b) for b in section.values.get("b", ())),
                key=section.one("k"),
                attributes=tuple(section.attributes),
                extra_lines=tuple(section.extra),
            )
        )
    return SessionDescription(
        version=0,
        origin=_parse_origin(origin_text),
        session_name=session_name,
        information=session.one("i"),
        uri=session.one("u"),
        emails=tuple(session.values.get("e", ())),
        phones=tuple(session.values.get("p", ())),
        connection=None if connection is None else _parse_connection(connection),
        bandwidths=tuple(_parse_bandwidth(b) for b in session.values.get("b", ())),
        timings=tuple(timings) or (Timing(),),  # t= is mandatory; some peers omit it
        time_zones=session.one("z"),
        key=session.one("k"),
        attributes=tuple(session.attributes),
        media=tuple(built),
        extra_lines=tuple(session.extra),
    )


def _check_usable(desc: SessionDescription) -> None:
    for index, m in enumerate(desc.media):
        if m.port != 0 and desc.connection_of(index) is None:
            raise MalformedMessageError(
                f"media section {index} has no c= line and the session none", error_code=UNUSABLE
            )
        if m.is_rtp:
            for fmt in m.formats:
                if not (fmt.isascii() and fmt.isdigit() and len(fmt) <= 3 and int(fmt) <= 127):
                    raise MalformedMessageError(
                        f"media section {index}: {fmt!r} is not an RTP payload type",
                        error_code=UNUSABLE,
                    )


def _section_lines(
    out: list[str],
    attributes: tuple[Attribute, ...],
    extra: tuple[tuple[str, str], ...],
) -> None:
    out.extend("a=" + a.format() for a in attributes)
    out.extend(f"{letter}={value}" for letter, value in extra)


def serialize_sdp(desc: SessionDescription) -> bytes:
    """Write ``desc`` in RFC 8866 §5's line order with CRLF line ends."""
    out = [f"v={desc.version}", "o=" + desc.origin.format(), f"s={desc.session_name or ' '}"]
    if desc.information is not None:
        out.append(f"i={desc.information}")
    if desc.uri is not None:
        out.append(f"u={desc.uri}")
    out.extend(f"e={e}" for e in desc.emails)
    out.extend(f"p={p}" for p in desc.phones)
    if desc.connection is not None:
        out.append("c=" + desc.connection.format())
    out.extend("b=" + b.format() for b in desc.bandwidths)
    for timing in desc.timings or (Timing(),):
        out.append(f"t={timing.start} {timing.stop}")
        out.extend(f"r={r}" for r in timing.repeats)
    if desc.time_zones is not None:
        out.append(f"z={desc.time_zones}")
    if desc.key is not None:
        out.append(f"k={desc.key}")
    _section_lines(out, desc.attributes, desc.extra_lines)
    for m in desc.media:
        port = str(m.port) if m.port_count is None else f"{m.port}/{m.port_count}"
        out.append(" ".join(("m=" + m.media, port, m.proto, *m.formats)))
        if m.title is not None:
            out.append(f"i={m.title}")
        out.extend("c=" + c.format() for c in m.connections)
        out.extend("b=" + b.format() for b in m.bandwidths)
        if m.key is not None:
            out.append(f"k={m.key}")
        _section_lines(out, m.attributes, m.extra_lines)
    out.append("")
    return "\r\n".join(out).encode("utf-8", "surrogateescape")
