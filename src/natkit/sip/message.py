"""SIP messages: parse, serialize, validate (RFC 3261 §7, §8.2, §18.3, §20).

Theory of operation: :func:`parse_message` takes the bytes of one message as
received (a whole UDP datagram, or one frame cut by the stream framer) and
builds a mutable :class:`SipRequest` or :class:`SipResponse`.

1. The header section ends at the first empty line (CRLF CRLF); CRLFs before
   the start line are skipped (§7.5). It is decoded as UTF-8 with surrogate
   escapes, so any octet survives to the serializer. A bare CR or LF in it is
   malformed.
2. Continuation lines (starting with SP/HTAB) are unfolded into one SP (§7.3.1).
   Header names are tokens; known names, long or compact (§7.3.3, §20), are
   stored canonically ("v" -> "Via"), unknown ones exactly as received, and all
   compare case-insensitively.
3. The body is framed by Content-Length: on a datagram, octets after it are
   ignored (§18.3: RFC 4475 dblreq) and a missing Content-Length means "the
   rest of the datagram" (RFC 4475 inv2543); ``stream=True`` requires it. A
   value larger than the octets present, negative, non-numeric or given twice
   with different values is a 400 (RFC 4475 clerr, ncl, mcl01). The body is
   kept as bytes, multipart or not.
4. The headers every element reads (Via, From, To, Call-ID, CSeq, Contact,
   Max-Forwards) are parsed once here to reject broken syntax with 400; the
   typed values are cached in the :class:`Headers` object (cleared on every
   change), so the properties (``msg.vias``, ``msg.cseq`` ...) cost nothing
   afterwards. Other headers stay text until someone asks.

Errors: requests raise ``MalformedMessageError`` with the status a server
answers (400, 505 for an unknown SIP version); anything wrong with a response
raises with ``error_code=None`` (drop: RFC 4475 scalarlg, bigcode). Semantic
faults of a well-formed request (missing headers, CSeq method mismatch,
duplicated single-value headers, unknown URI scheme, Max-Forwards 0 at a
proxy ...) are answered by :func:`validate_request`, so each element chooses.
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal, Self, TypeVar

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    is_token,
    parse_contacts,
    parse_cseq,
    parse_delta_seconds,
    parse_name_addr,
    parse_name_addr_list,
    parse_via_list,
    split_header_values,
)
from natkit.sip.uri import SipUri, TelUri, Uri, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "KNOWN_METHODS",
    "Headers",
    "SipLimits",
    "SipMessage",
    "SipRequest",
    "SipResponse",
    "canonical_name",
    "make_response",
    "parse_message",
    "reason_phrase",
    "serialize_message",
    "stream_message_length",
    "unsupported_options",
    "validate_request",
    "validate_response",
]

_T = TypeVar("_T")

COMPACT_FORMS: Final[dict[str, str]] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}
"""Compact header names (RFC 3261 §7.3.3 and the extensions noted)."""

_LONG_NAMES = [
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "Flow-Timer",
    "From",
    "GRUU",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Join",
    "Max-Forwards",
    "Min-Expires",
    "Min-SE",
    "MIME-Version",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Target-Dialog",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
]

_CANONICAL: Final[dict[str, str]] = {name.lower(): name for name in _LONG_NAMES} | COMPACT_FORMS

# Headers whose value is not a comma list, though it may hold commas
# (Date, the auth headers' challenge/credential params, free text).
_NOT_LISTS: Final = frozenset(
    name.lower()
    for name in [
        "Authorization",
        "Proxy-Authorization",
        "WWW-Authenticate",
        "Proxy-Authenticate",
        "Authentication-Info",
        "Date",
        "Subject",
        "Organization",
        "Server",
        "User-Agent",
        "Call-ID",
        "CSeq",
        "Retry-After",
        "Timestamp",
        "Identity",
        "Identity-Info",
        "MIME-Version",
    ]
)

# RFC 3261 §20 headers that may appear at most once (multi01, §3.3.8).
_SINGLE_VALUED: Final = tuple(
    [
        "call-id",
        "cseq",
        "from",
        "to",
        "max-forwards",
        "content-length",
        "content-type",
        "expires",
        "min-expires",
        "mime-version",
        "date",
        "timestamp",
    ]
)

KNOWN_METHODS: Final = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)
"""Methods defined by RFC 3261 and its common extensions (for 501 vs 400)."""


def canonical_name(name: str) -> str:
    """The canonical form of a header name: compact and any-case known names
    expanded ("v" -> "Via", "call-id" -> "Call-ID", "cseq" -> "CSeq"); unknown
    names exactly as written (they compare case-insensitively)."""
    return _CANONICAL.get(name.lower(), name)


# Lookup key of a header name: the lowercased canonical name. Pre-filled with
# every spelling the stack itself uses, so lookups by "Via" cost one dict get.
_KEYS: Final[dict[str, str]] = {
    spelling: canon.lower()
    for lower, canon in _CANONICAL.items()
    for spelling in (lower, canon, lower.upper())
}


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        lower = name.lower()
        key = _KEYS.get(lower, lower)
    return key


class Headers:
    """Ordered multi-dict of header lines, case-insensitive, compact forms
    expanded. Values are text; typed views parsed from them are cached here
    and dropped on every change."""

    __slots__ = ("_cache", "_items")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = [
            (_key(name), canonical_name(name), value) for name, value in items
        ]
        self._cache: dict[str, object] = {}

    @classmethod
    def _from_parsed(cls, items: list[tuple[str, str, str]]) -> Headers:
        headers = cls.__new__(cls)
        headers._items = items
        headers._cache = {}
        return headers

    def get(self, name: str) -> str | None:
        """The first value of *name* (None if absent)."""
        key = _key(name)
        for k, _, value in self._items:
            if k == key:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every header line's value of *name*, in order (not comma-split)."""
        key = _key(name)
        return [value for k, _, value in self._items if k == key]

    def values(self, name: str) -> list[str]:
        """Every value of *name*, comma lists split (§7.3.1). Headers that are
        not lists (Date, the auth headers, free text) are not split. Raises
        MalformedMessageError (400) on an unterminated quoted string."""
        key = _key(name)
        lines = [value for k, _, value in self._items if k == key]
        if key in _NOT_LISTS:
            return lines
        result: list[str] = []
        for line in lines:
            result.extend(split_header_values(line))
        return result

    def count(self, name: str) -> int:
        """How many header lines *name* has."""
        key = _key(name)
        return sum(1 for k, _, _ in self._items if k == key)

    def add(self, name: str, value: str) -> None:
        """Append a header line."""
        key = _key(name)
        self._items.append((key, canonical_name(name), value))
        self._forget(key)

    def prepend(self, name: str, value: str) -> None:
        """Insert before the first line of *name* (at the top if none): Via,
        Record-Route (§16.6, §16.7)."""
        key = _key(name)
        entry = (key, canonical_name(name), value)
        for i, (k, _, _) in enumerate(self._items):
            if k == key:
                self._items.insert(i, entry)
                break
        else:
            self._items.insert(0, entry)
        self._forget(key)

    def set(self, name: str, value: str) -> None:
        """Replace every line of *name* by one, at the first one's place."""
        key = _key(name)
        entry = (key, canonical_name(name), value)
        out: list[tuple[str, str, str]] = []
        placed = False
        for item in self._items:
            if item[0] == key:
                if not placed:
                    out.append(entry)
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append(entry)
        self._items = out
        self._forget(key)

    def remove(self, name: str) -> int:
        """Remove every line of *name*; return how many."""
        key = _key(name)
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        self._forget(key)
        return before - len(self._items)

    def remove_first(self, name: str) -> str | None:
        """Pop the first value of *name*, comma-aware: ``Via: a, b`` loses
        ``a`` only (§16.7 step 3, §18.1.2)."""
        key = _key(name)
        for i, (k, canon, value) in enumerate(self._items):
            if k != key:
                continue
            parts = split_header_values(value)
            self._forget(key)
            if len(parts) <= 1:
                del self._items[i]
                return parts[0] if parts else value
            self._items[i] = (k, canon, ", ".join(parts[1:]))
            return parts[0]
        return None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _key(name)
        return any(k == key for k, _, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(canon, value) for _, canon, value in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def copy(self) -> Headers:
        """Same lines, and the same cached views (they are immutable)."""
        copy = Headers._from_parsed(list(self._items))
        if self._cache:
            copy._cache = dict(self._cache)
        return copy

    def _forget(self, key: str) -> None:
        """Drop the views built from *key*'s lines (each view reads one header)."""
        cache = self._cache
        if cache:
            cache.pop(key, None)
            cache.pop("name-addrs:" + key, None)

    def _view(self, key: str, build: Callable[[], _T]) -> _T:
        cached = self._cache.get(key)
        if cached is None:
            cached = build()
            self._cache[key] = cached
        return cached  # type: ignore[return-value]


def _bad(why: str) -> MalformedMessageError:
    return MalformedMessageError(why, error_code=400)


class _SipMessage:
    """What requests and responses share: headers, body, typed views."""

    headers: Headers
    body: bytes
    version: str

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise _bad(f"no {name} header")
        return value

    @property
    def vias(self) -> list[Via]:
        """Every Via value in order, comma lists split (§20.42)."""

        def build() -> tuple[Via, ...]:
            vias: list[Via] = []
            for line in self.headers.get_all("Via"):
                vias.extend(parse_via_list(line))
            return tuple(vias)

        return list(self.headers._view("via", build))

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise _bad("no Via header")
        return vias[0]

    @property
    def call_id(self) -> str:
        value = self._required("Call-ID")
        return self.headers._view("call-id", lambda: _check_call_id(value))

    @property
    def cseq(self) -> CSeq:
        value = self._required("CSeq")
        return self.headers._view("cseq", lambda: parse_cseq(value))

    @property
    def from_(self) -> NameAddr:
        value = self._required("From")
        return self.headers._view("from", lambda: parse_name_addr(value))

    @property
    def to(self) -> NameAddr:
        value = self._required("To")
        return self.headers._view("to", lambda: parse_name_addr(value))

    @property
    def contacts(self) -> list[NameAddr] | Literal["*"]:
        """The Contacts (RFC 3261 §20.10), [] if none, or the wildcard "*"."""
        values = self.headers.get_all("Contact")
        result = self.headers._view("contact", lambda: _frozen_contacts(values))
        return result if isinstance(result, str) else list(result)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (§20.22), None if absent; values above 255 are returned
        as they are for :func:`validate_request` to judge."""
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        return self.headers._view("max-forwards", lambda: _max_forwards(value))

    @property
    def expires(self) -> int | None:
        """Expires in seconds (§20.19); None if absent or above 2**32-1 (RFC
        4475 §3.1.2.4: an overlarge value is treated as absent)."""
        value = self.headers.get("Expires")
        if value is None:
            return None
        return parse_delta_seconds(value, what="Expires")

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return value.strip() if value is not None else None

    def name_addrs(self, header: str) -> list[NameAddr]:
        """Every name-addr of *header* in order (Route, Record-Route, Path,
        Service-Route ...), comma lists split."""
        lines = self.headers.get_all(header)
        key = "name-addrs:" + _key(header)

        def build() -> tuple[NameAddr, ...]:
            out: list[NameAddr] = []
            for line in lines:
                out.extend(parse_name_addr_list(line))
            return tuple(out)

        return list(self.headers._view(key, build))

    def copy(self) -> Self:
        """A copy whose headers can be changed independently."""
        clone = _copy.copy(self)
        clone.headers = self.headers.copy()
        return clone


def _check_call_id(value: str) -> str:
    text = value.strip()
    if not text or " " in text or "\t" in text:
        raise _bad(f"bad Call-ID {value[:60]!r}")
    return text


def _max_forwards(value: str) -> int:
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        raise _bad(f"bad Max-Forwards {value[:40]!r}")
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= 10 else 2**32


def _frozen_contacts(values: list[str]) -> tuple[NameAddr, ...] | Literal["*"]:
    result = parse_contacts(values)
    return result if isinstance(result, str) else tuple(result)


@dataclass(eq=False)
class SipRequest(_SipMessage):
    """A request (RFC 3261 §7.1). ``method`` is case-sensitive."""

    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __repr__(self) -> str:
        return f"SipRequest({self.method} {self.uri})"


@dataclass(eq=False)
class SipResponse(_SipMessage):
    """A response (RFC 3261 §7.2)."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"

    def __repr__(self) -> str:
        return f"SipResponse({self.status} {self.reason})"


SipMessage = SipRequest | SipResponse


@dataclass(frozen=True, slots=True)
class SipLimits:
    """Parser limits: what one message may use at most (RFC 3261 §18.1.1's
    65535-octet datagram bound by default)."""

    max_message_size: int = 65535
    max_headers: int = 256
    max_line_length: int = 8192
    max_body_size: int = 65535


_DEFAULT_LIMITS: Final = SipLimits()


def parse_message(
    data: bytes, *, limits: SipLimits = _DEFAULT_LIMITS, stream: bool = False
) -> SipMessage:
    """Parse one SIP message (RFC 3261 §7) from a datagram or a stream frame.

    Raises MalformedMessageError: error_code 400 (or 505 for an unsupported
    SIP version, §21.5.20) for requests, None for responses (drop, §18.1.2)."""
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    is_response = data[start : start + 4].upper() == b"SIP/"
    try:
        return _parse(data, start, limits, stream, is_response)
    except MalformedMessageError as exc:
        if is_response and exc.error_code is not None:
            raise MalformedMessageError(str(exc), error_code=None) from None
        raise


def _parse(
    data: bytes, start: int, limits: SipLimits, stream: bool, is_response: bool
) -> SipMessage:
    if len(data) > limits.max_message_size:
        raise _bad(f"message larger than {limits.max_message_size} octets")
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise _bad("no empty line ending the header section")
    head = data[start:end].decode("utf-8", "surrogateescape")
    lines = head.split("\r\n")
    if len(lines) > limits.max_headers + 1:
        raise _bad(f"more than {limits.max_headers} header lines")
    items: list[tuple[str, str, str]] = []
    max_line = limits.max_line_length
    if max(map(len, lines)) > max_line:
        raise _bad(f"line longer than {max_line} octets")
    breaks = len(lines) - 1
    if head.count("\r") != breaks or head.count("\n") != breaks:
        raise _bad("bare CR or LF in the header section")
    first = lines[0]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not items:
                raise _bad("continuation line before any header")
            k, canon, value = items[-1]
            more = line.strip(" \t")
            items[-1] = (k, canon, f"{value} {more}" if value and more else value or more)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise _bad(f"header line without ':': {line[:60]!r}")
        name = name.rstrip(" \t")
        key = _KEYS.get(name)
        if key is None:
            if not is_token(name):
                raise _bad(f"bad header name {name[:60]!r}")
            lower = name.lower()
            key = _KEYS.get(lower)
            if key is None:
                items.append((lower, name, value.strip(" \t")))
                continue
        items.append((key, _CANONICAL[key], value.strip(" \t")))
    headers = Headers._from_parsed(items)
    body_start = end + 4
    body = _frame_body(data, body_start, headers, limits, stream)
    msg: SipMessage
    if is_response:
        version, status, reason = _parse_status_line(first)
        msg = SipResponse(status, reason, headers, body, version)
    else:
        method, uri, version = _parse_request_line(first)
        msg = SipRequest(method, uri, headers, body, version)
    _check_common_headers(msg)
    return msg


def _content_length(lengths: list[str], limits: SipLimits) -> int | None:
    """The one Content-Length of a message (None if absent), RFC 3261 §20.14.
    Several different values, non-digits (``-999``, ``five``) or a value above
    the body limit: 400 (RFC 4475 ncl, mcl01)."""
    if not lengths:
        return None
    texts = {text.strip(" \t") for text in lengths}
    if len(texts) > 1:
        raise _bad("several different Content-Length values (RFC 4475 §3.3.9)")
    text = texts.pop()
    if not text or not text.isascii() or not text.isdigit():
        raise _bad(f"bad Content-Length {text[:40]!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > 10 or int(digits) > limits.max_body_size:
        raise _bad(f"Content-Length above {limits.max_body_size}")
    return int(digits)


def _frame_body(
    data: bytes, body_start: int, headers: Headers, limits: SipLimits, stream: bool
) -> bytes:
    length = _content_length(headers.get_all("Content-Length"), limits)
    if length is None:
        if stream:
            raise _bad("no Content-Length on a stream transport (RFC 3261 §18.3)")
        body = data[body_start:]
    else:
        if len(data) - body_start < length:
            raise _bad(
                f"Content-Length {length} but {len(data) - body_start} octets follow"
                " (RFC 4475 §3.1.2.2)"
            )
        body = data[body_start : body_start + length]
    if len(body) > limits.max_body_size:
        raise _bad(f"body larger than {limits.max_body_size} octets")
    return body


def stream_message_length(
    buffer: bytes, *, limits: SipLimits = _DEFAULT_LIMITS, header_end: int | None = None
) -> int | None:
    """How many octets of *buffer* (which starts at a start line) form the
    first message on a stream transport (RFC 3261 §18.3), or None if more
    octets are needed. Content-Length is read with the same rules as
    :func:`parse_message` (compact ``l``, any case, LWS, folding). Raises 400
    when framing is lost: no, negative, non-numeric or conflicting
    Content-Length, or a header block or message above the limits.

    *header_end*: where ``b"\\r\\n\\r\\n"`` starts, if the caller already
    found it (a framer fed a byte at a time searches only the new octets, so
    the whole stays linear); else it is searched for here."""
    end = buffer.find(b"\r\n\r\n") if header_end is None else header_end
    if end < 0:
        if len(buffer) > limits.max_message_size:
            raise _bad(f"header section larger than {limits.max_message_size} octets")
        return None
    lengths: list[str] = []
    in_length = False
    for line in buffer[:end].decode("latin-1").split("\r\n")[1:]:
        if line[:1] in (" ", "\t"):
            if in_length:
                lengths[-1] += line
            continue
        name, _, value = line.partition(":")
        in_length = name.rstrip(" \t").lower() in ("content-length", "l")
        if in_length:
            lengths.append(value)
    length = _content_length(lengths, limits)
    if length is None:
        raise _bad("no Content-Length on a stream transport (RFC 3261 §18.3)")
    total = end + 4 + length
    if total > limits.max_message_size:
        raise _bad(f"message larger than {limits.max_message_size} octets")
    return total if len(buffer) >= total else None


def _parse_version(text: str) -> str:
    """``SIP/2.0`` (case-insensitive literal, §25.1); another SIP/x.y is 505."""
    if text.upper() == "SIP/2.0":
        return "SIP/2.0"
    if text[:4].upper() == "SIP/":
        major, dot, minor = text[4:].partition(".")
        if dot and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit():
            raise MalformedMessageError(f"unsupported version {text[:20]!r}", error_code=505)
    raise _bad(f"bad SIP version {text[:20]!r}")


def _parse_request_line(line: str) -> tuple[str, Uri, str]:
    """``Method SP Request-URI SP SIP-Version`` with exactly one SP each
    (§7.1; RFC 4475 lwsstart, trws: 400)."""
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise _bad(f"bad request line {line[:80]!r}")
    method, uri_text, version_text = parts
    if not is_token(method):
        raise _bad(f"bad method {method[:40]!r}")
    version = _parse_version(version_text)
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        # §19.1.5: headers are not allowed in a Request-URI (RFC 4475 escruri).
        raise _bad("headers in the Request-URI")
    return method, uri, version


def _parse_status_line(line: str) -> tuple[str, int, str]:
    """``SIP-Version SP 3DIGIT SP Reason-Phrase`` (§7.2). A missing SP before
    an empty phrase is tolerated; codes outside 100-699 are malformed."""
    version_text, sp, rest = line.partition(" ")
    if not sp:
        raise _bad(f"bad status line {line[:80]!r}")
    version = _parse_version(version_text)
    code = rest[:3]
    if len(code) != 3 or not code.isascii() or not code.isdigit() or rest[3:4] not in ("", " "):
        raise _bad(f"bad status code in {line[:80]!r}")
    status = int(code)
    if not 100 <= status <= 699:
        raise _bad(f"status code {status} outside 100-699")
    return version, status, rest[4:]


def _check_common_headers(msg: SipMessage) -> None:
    """Parse the headers every element reads, so broken syntax is a 400 now.
    One pass collects their lines; the typed values go straight into the
    views' cache, so this work is not repeated when the element reads them
    (every line is checked, the cache holds the first, as the views do)."""
    headers = msg.headers
    found: dict[str, list[str]] = {}
    for key, _, value in headers._items:
        if key in _EAGER_KEYS:
            found.setdefault(key, []).append(value)
    cache = headers._cache
    vias: list[Via] = []
    for line in found.get("via", ()):
        vias.extend(parse_via_list(line))
    cache["via"] = tuple(vias)
    for key, parse in _EAGER_VIEWS:
        lines = found.get(key)
        if lines:
            cache[key] = parse(lines[0])
            for line in lines[1:]:
                parse(line)
    contacts = found.get("contact")
    if contacts:
        cache["contact"] = _frozen_contacts(contacts)


_EAGER_VIEWS: Final[tuple[tuple[str, Callable[[str], object]], ...]] = (
    ("cseq", parse_cseq),
    ("from", parse_name_addr),
    ("to", parse_name_addr),
    ("call-id", _check_call_id),
    ("max-forwards", _max_forwards),
)
_EAGER_KEYS: Final = frozenset(["via", "contact", *(key for key, _ in _EAGER_VIEWS)])


def serialize_message(msg: SipMessage) -> bytes:
    """The wire form (§7): start line, headers in order with their canonical
    names, Content-Length set to len(body) (kept in place, else appended).
    Raises LocalProtocolError if a header value holds CR or LF (it would
    inject header lines)."""
    if isinstance(msg, SipRequest):
        start = f"{msg.method} {msg.uri} {msg.version}"
    else:
        start = f"{msg.version} {msg.status} {msg.reason}"
    if "\r" in start or "\n" in start:
        raise LocalProtocolError("CR or LF in the start line")
    lines = [start]
    length_written = False
    for key, canon, value in msg.headers._items:
        if key == "content-length":
            if not length_written:
                lines.append(f"Content-Length: {len(msg.body)}")
                length_written = True
            continue
        if "\r" in value or "\n" in value or "\r" in canon or "\n" in canon or ":" in canon:
            raise LocalProtocolError(f"CR, LF or ':' where they would inject headers: {canon!r}")
        lines.append(f"{canon}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(msg.body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + msg.body


# --- responses -----------------------------------------------------------------

_REASONS: Final[dict[int, str]] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    417: "Unknown Resource-Priority",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    428: "Use Identity Header",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    436: "Bad Identity-Info",
    437: "Unsupported Certificate",
    438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    469: "Bad Info Package",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    555: "Push Notification Service Not Supported",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

_CLASS_REASONS: Final = {
    1: "Trying",
    2: "OK",
    3: "Redirected",
    4: "Request Failure",
    5: "Server Failure",
    6: "Global Failure",
}


def reason_phrase(status: int) -> str:
    """The default Reason-Phrase of *status* (RFC 3261 §21 and the IANA
    registry); a class-generic phrase for unregistered codes."""
    return _REASONS.get(status) or _CLASS_REASONS.get(status // 100, "Unknown")


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    copy_record_route: bool = False,
) -> SipResponse:
    """A response to *request* (RFC 3261 §8.2.6.2): Via lines (all, in order),
    From, To (with *to_tag* added if To has no tag), Call-ID and CSeq copied;
    Timestamp copied into a 100 (§8.2.6.1); with *copy_record_route* the
    Record-Route lines too, as a UAS must in a dialog-forming response
    (§12.1.1); then *headers*."""
    src = request.headers
    items: list[tuple[str, str]] = [("Via", value) for value in src.get_all("Via")]
    from_value = src.get("From")
    if from_value is not None:
        items.append(("From", from_value))
    to_value = src.get("To")
    if to_value is not None:
        if to_tag is not None and request.to.tag is None:
            to_value = f"{to_value};tag={to_tag}"
        items.append(("To", to_value))
    for name in ("Call-ID", "CSeq"):
        value = src.get(name)
        if value is not None:
            items.append((name, value))
    if copy_record_route:
        items.extend(("Record-Route", value) for value in src.get_all("Record-Route"))
    if status == 100:
        stamp = src.get("Timestamp")
        if stamp is not None:
            items.append(("Timestamp", stamp))
    items.extend(headers)
    return SipResponse(
        status, reason if reason is not None else reason_phrase(status), Headers(items), body
    )


# --- semantic validation ---------------------------------------------------------


def unsupported_options(
    request: SipRequest, supported: Collection[str], *, proxy: bool = False
) -> list[str]:
    """Option tags of Require (a UAS, §8.2.2.3) or Proxy-Require (a proxy,
    §16.3 step 5) that are not in *supported*: the Unsupported header of a 420.
    A UAS ignores Require in CANCEL and ACK (§8.2.2.3)."""
    if not proxy and request.method in ("ACK", "CANCEL"):
        return []
    known = {tag.lower() for tag in supported}
    header = "Proxy-Require" if proxy else "Require"
    return [tag for tag in request.headers.values(header) if tag.lower() not in known]


def validate_request(
    request: SipRequest,
    *,
    proxy: bool = False,
    supported: Collection[str] | None = None,
) -> int | None:
    """The status a UAS (or, with *proxy*, a proxy) answers for a semantic
    fault of a well-formed request, or None if there is none. Decisions:

    * 400: a mandatory header is missing (To, From, CSeq, Call-ID, Via: §8.1.1;
      RFC 4475 insuf). Max-Forwards is not required: RFC 2543 requests
      (RFC 4475 inv2543) lack it and proxies add it (§16.6 step 3).
    * 400: a single-value header given twice (Call-ID, CSeq, From, To,
      Max-Forwards ...: RFC 4475 multi01).
    * 400 / 501: the CSeq method differs from the method (§8.1.1.5): 501 when
      the method is unknown (RFC 4475 mismatch02 prefers it), else 400
      (mismatch01).
    * 400: Max-Forwards above 255 (§20.22), or any typed header failing to parse.
    * 400: a top Via branch that is the bare magic cookie ``z9hG4bK``
      (RFC 4475 badbranch: rejected statelessly rather than matched as 2543).
    * 416: the Request-URI is neither sip, sips nor tel (§8.2.2.1; unkscm,
      novelsc).
    * 483: Max-Forwards 0 at a proxy (§16.3 step 3; RFC 4475 zeromf). An
      endpoint processes such a request normally.
    * 420: with *supported* given, an option tag of Require (UAS) or
      Proxy-Require (proxy) that is not in it (bext01); build the
      Unsupported header with :func:`unsupported_options`.

    Unknown methods (intmeth, esc02) are not faults here: a UAS answers 501,
    a proxy forwards them; that is the element's choice."""
    headers = request.headers
    for name in ("To", "From", "CSeq", "Call-ID", "Via"):
        if name not in headers:
            return 400
    for name in _SINGLE_VALUED:
        if headers.count(name) > 1:
            return 400
    try:
        cseq = request.cseq
        _ = request.from_, request.to, request.call_id
        top = request.top_via
        max_forwards = request.max_forwards
        _ = request.contacts
    except MalformedMessageError as exc:
        return exc.error_code if exc.error_code is not None else 400
    if cseq.method != request.method:
        return 501 if request.method not in KNOWN_METHODS else 400
    if max_forwards is not None and max_forwards > 255:
        return 400
    if top.branch is not None and top.branch == "z9hG4bK":
        return 400
    if not isinstance(request.uri, SipUri | TelUri):
        return 416
    if proxy and max_forwards == 0:
        return 483
    if supported is not None:
        try:
            if unsupported_options(request, supported, proxy=proxy):
                return 420
        except MalformedMessageError:
            return 400
    return None


def validate_response(response: SipResponse) -> bool:
    """True if *response* carries what a client needs to match and process it
    (RFC 3261 §8.1.3, §17.1.3): Via, From, To, Call-ID and CSeq, each once and
    well formed. A response failing this is dropped (§18.1.2: nobody answers a
    response)."""
    headers = response.headers
    for name in ("From", "To", "CSeq", "Call-ID"):
        if headers.count(name) != 1:
            return False
    try:
        _ = response.top_via, response.cseq, response.from_, response.to, response.call_id
    except MalformedMessageError:
        return False
    return True
