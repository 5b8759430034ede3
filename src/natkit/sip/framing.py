"""SIP message framing on stream transports (RFC 3261 §18.3), with the CRLF
keepalives of RFC 5626 §3.5.1 and §4.4.1.

Theory of operation
-------------------
A TCP or TLS connection carries SIP messages back to back. Each message is a
header block ended by an empty line, then exactly ``Content-Length`` octets
of body; on a stream Content-Length is mandatory (§18.3, §20.14), for it is
the only thing that says where the next message starts. Between messages a
client may send a *ping*, CRLFCRLF, and the server answers with a *pong*, a
single CRLF (RFC 5626 §4.4.1); any other lone CRLF before a start line is
ignorable (RFC 3261 §7.5).

:class:`SipStreamFramer` buffers what :meth:`~SipStreamFramer.feed` gives it
and :meth:`~SipStreamFramer.next_frame` returns one whole message's bytes at a
time (for :func:`natkit.sip.message.parse_message` with ``stream=True``), or a
:class:`KeepAlive`. It does not parse messages: it finds the end of the
header block (CRLFCRLF, or LF LF from lenient senders) and the
Content-Length header itself (long or compact ``l`` name, any case, folded
values). The search resumes where it stopped, so feeding a byte at a time
costs linear time.

Which side pings decides how CRLFs are read. The side that accepted the
connection (``expect_pings=True``) holds a lone CRLF back until the next
octets show whether it is a ping; the side that opened it reads every CRLF as
a pong at once, so its keepalive timer sees the answer promptly. Either way
the frames do not depend on how the stream was split into segments.

When framing is lost (Content-Length missing, negative, not a number, given
twice with different values; a header block or body over the limits)
:meth:`~SipStreamFramer.next_frame` raises :class:`StreamFramingError`
(error code 400) and keeps raising: the connection cannot be resynchronised
and must be closed, after answering 400 if the header block allows it
(:func:`error_response_for` builds that answer from the raw header lines).
"""

from __future__ import annotations

import enum
import re

from natkit.errors import MalformedMessageError
from natkit.sip.message import SipLimits

__all__ = [
    "KeepAlive",
    "SipStreamFramer",
    "StreamFramingError",
    "error_response_for",
    "header_lines",
]

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_DIGITS = re.compile(rb"[0-9]+")
_CONTENT_LENGTH_NAMES = (b"content-length", b"l")
_CONTENT_LENGTH_LINE = re.compile(rb"\n(?:content-length|l)[ \t]*:([^\r\n]*)", re.IGNORECASE)
_MAX_CONTENT_LENGTH_DIGITS = 10  # anything longer is over every limit anyway
_DEFAULT_LIMITS = SipLimits()


class KeepAlive(enum.Enum):
    """A keepalive seen between messages (RFC 5626 §4.4.1)."""

    PING = "ping"  # CRLFCRLF: answer with one CRLF
    PONG = "pong"  # a single CRLF: a pong, or an ignorable CRLF (RFC 3261 §7.5)


class StreamFramingError(MalformedMessageError):
    """Framing on a stream is lost (RFC 3261 §18.3): answer, then close.

    ``head`` is the complete header block when one was received (so that a
    400 can be built from it with :func:`error_response_for`), else ``None``.
    """

    def __init__(self, message: str, *, head: bytes | None = None) -> None:
        super().__init__(message, error_code=400)
        self.head = head


def header_lines(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Split a header block into its start line and ``(name, value)`` pairs.

    Folded lines (starting with SP or HT, RFC 3261 §7.3.1) are joined to the
    header before with one space; names keep their case and values are
    stripped. Lines without a colon are skipped: this is a scanner for
    framing and error answers, not the parser (which rejects them).
    """
    lines = head.split(b"\n")
    start = lines[0].rstrip(b"\r") if lines else b""
    pairs: list[tuple[bytes, bytes]] = []
    current: list[bytes] | None = None
    for raw in lines[1:]:
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line.strip())
            continue
        if current is not None:
            _append_pair(pairs, current)
        current = [line]
    if current is not None:
        _append_pair(pairs, current)
    return start, pairs


def _append_pair(pairs: list[tuple[bytes, bytes]], parts: list[bytes]) -> None:
    name, sep, value = parts[0].partition(b":")
    if not sep:
        return
    joined = b" ".join([value.strip(), *parts[1:]]).strip()
    pairs.append((name.strip(), joined))


def content_length_of(head: bytes) -> int | None:
    """The Content-Length a header block declares, or None when it has none.

    Raises :class:`StreamFramingError` for a value that is not a plain
    non-negative decimal number, or for several headers that disagree
    (RFC 4475 §3.1.2.3 ``ncl``, §3.1.2.9 ``mcl01``). Equal repeats are
    accepted: they leave no doubt about the framing.
    """
    if b"\n " in head or b"\n\t" in head:  # folded lines: unfold them all
        values = [v for n, v in header_lines(head)[1] if n.lower() in _CONTENT_LENGTH_NAMES]
    else:  # the common case: one regex pass, no per-line objects
        values = [m.group(1).strip() for m in _CONTENT_LENGTH_LINE.finditer(head)]
    found: int | None = None
    for value in values:
        if not _DIGITS.fullmatch(value) or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
            raise StreamFramingError(f"bad Content-Length {value[:32]!r}", head=head)
        length = int(value)
        if found is not None and found != length:
            raise StreamFramingError(
                f"conflicting Content-Length values {found} and {length}", head=head
            )
        found = length
    return found


class SipStreamFramer:
    """Cuts a SIP byte stream into messages and keepalives (RFC 3261 §18.3).

    ``limits`` bounds the header block (``max_message_size``) and the body
    (``max_body_size``); ``expect_pings``: see the module docstring (True on
    connections this side accepted).
    """

    def __init__(self, *, limits: SipLimits = _DEFAULT_LIMITS, expect_pings: bool = True) -> None:
        self._max_message = limits.max_message_size
        self._max_body = limits.max_body_size
        self._expect_pings = expect_pings
        self._buffer = bytearray()
        self._scan_from = 0  # where the search for the end of headers resumes
        self._frame_length: int | None = None  # head + body, once the head is known
        self._failure: StreamFramingError | None = None

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as frames."""
        return len(self._buffer)

    @property
    def idle(self) -> bool:
        """True between messages: nothing of a partial message is buffered."""
        return not self._buffer

    def feed(self, data: bytes) -> None:
        """Append received octets (call :meth:`next_frame` until it returns None)."""
        if self._failure is None:
            self._buffer += data

    def next_frame(self) -> bytes | KeepAlive | None:
        """The next whole message, keepalive, or None when more octets are needed.

        Raises :class:`StreamFramingError` (400) when framing is lost; every
        later call raises it again.
        """
        if self._failure is not None:
            raise self._failure
        try:
            return self._next()
        except StreamFramingError as exc:
            self._failure = exc
            self._buffer.clear()
            raise

    def _next(self) -> bytes | KeepAlive | None:
        buf = self._buffer
        if self._frame_length is None:
            keepalive = self._keepalive()
            if keepalive is not None or not buf or (buf[:1] == b"\r" and len(buf) < 2):
                return keepalive
            if self._expect_pings and _PING.startswith(bytes(buf[:4])):
                return None  # CRLF or CRLF CR: wait to tell a ping from a pong
            match = _END_OF_HEADERS.search(buf, max(0, self._scan_from - 3))
            if match is None:
                if len(buf) > self._max_message:
                    raise StreamFramingError(f"no end of headers within {self._max_message} octets")
                self._scan_from = len(buf)
                return None
            head_length = match.end()
            head = bytes(buf[:head_length])
            body_length = content_length_of(head)
            if body_length is None:
                raise StreamFramingError(
                    "Content-Length is required on stream transports (RFC 3261 §18.3)",
                    head=head,
                )
            if body_length > self._max_body:
                raise StreamFramingError(
                    f"body of {body_length} octets is over the limit of {self._max_body}",
                    head=head,
                )
            if head_length + body_length > self._max_message:
                raise StreamFramingError(
                    f"message of {head_length + body_length} octets is over the limit "
                    f"of {self._max_message}",
                    head=head,
                )
            self._frame_length = head_length + body_length
        length = self._frame_length
        if len(buf) < length:
            return None
        frame = bytes(buf[:length])
        del buf[:length]  # bytearray drops a prefix in O(1)
        self._frame_length = None
        self._scan_from = 0
        return frame

    def _keepalive(self) -> KeepAlive | None:
        """Consume a keepalive at the start of the buffer, if one is complete."""
        buf = self._buffer
        if buf[:2] != _CRLF:
            return None
        if not self._expect_pings:
            del buf[:2]
            return KeepAlive.PONG
        if buf[:4] == _PING:
            del buf[:4]
            return KeepAlive.PING
        if len(buf) < 4 and _PING.startswith(bytes(buf)):
            return None
        del buf[:2]
        return KeepAlive.PONG


_ANSWER_HEADERS: dict[bytes, bytes] = {
    b"via": b"Via",
    b"v": b"Via",
    b"from": b"From",
    b"f": b"From",
    b"to": b"To",
    b"t": b"To",
    b"call-id": b"Call-ID",
    b"i": b"Call-ID",
    b"cseq": b"CSeq",
}
_REQUIRED_FOR_ANSWER = frozenset(_ANSWER_HEADERS.values())


def error_response_for(
    head: bytes, status: int, reason: str, *, to_tag: str | None = None
) -> bytes | None:
    """An error response built from a request's raw header lines, or None.

    For a request the parser could not accept: RFC 3261 §8.2.6.2 copies Via
    (every value, in order), From, To, Call-ID and CSeq into the response;
    they are copied as received, without being parsed. ``to_tag`` is added
    to a To without a tag (§8.2.6.2). Returns None (the request is dropped,
    RFC 3261 §17.2.3, §18.3) when the start line is not a request line, the
    request is an ACK (never answered, §17), or one of those headers is
    missing, so no response could be matched by the client.
    """
    start, pairs = header_lines(head)
    parts = start.split(b" ")
    if len(parts) < 3 or start.startswith(b"SIP/") or parts[0] == b"ACK":
        return None
    copied: list[tuple[bytes, bytes]] = []
    for name, value in pairs:
        canonical = _ANSWER_HEADERS.get(name.lower())
        if canonical is None:
            continue
        tagged = value
        if canonical == b"To" and to_tag is not None and b";tag=" not in value.lower():
            tagged = value + b";tag=" + to_tag.encode()
        copied.append((canonical, tagged))
    if {name for name, _ in copied} != _REQUIRED_FOR_ANSWER:
        return None
    out = [b"SIP/2.0 %d %s" % (status, reason.encode())]
    out += [name + b": " + value for name, value in copied]
    out += [b"Content-Length: 0", b"", b""]
    return b"\r\n".join(out)
