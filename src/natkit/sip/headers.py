"""Typed values of the SIP headers the stack works with (RFC 3261 §20, §25.1).

Theory of operation: a header value arrives as text with folding already
undone (:mod:`natkit.sip.message` turns each CRLF+WSP into one SP). The
parsers here are left-to-right scanners over that text, linear in its length:
the only regular expressions are runs of one character class or possessive
patterns (quoted strings, one generic-param, the Via head) that cannot
backtrack, so hostile input cannot blow them up. Each knows the three lexical
traps of SIP values:

* quoted strings with quoted-pair escapes (``\\"``, and raw NUL/BEL/DEL, which
  must survive: RFC 4475 §3.1.1.2);
* ``<...>`` around a URI, inside which ``,`` ``;`` and ``?`` belong to the URI;
* SWS (optional whitespace) around ``;`` ``=`` ``/`` ``:`` (§25.1 SEMI, EQUAL,
  SLASH, COLON), which RFC 4475 §3.1.1.1 exercises everywhere.

Parameter values in :data:`Params` are kept *as written*: a token as is, a
quoted-string with its quotes and escapes (so re-serializing is exact and
``+sip.instance="<urn:...>"`` keeps its quotes); the ``param()`` accessors
return quoted values unquoted and unescaped. Parameter names are lowercased
(§7.3.1: case-insensitive). Every parser raises
``MalformedMessageError(error_code=400)`` on bad syntax; the message parser
turns that into a drop for responses.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Final, Literal

from natkit.errors import MalformedMessageError
from natkit.sip.uri import Uri, param_present, params_changed, parse_host, parse_port, parse_uri

__all__ = [
    "WILDCARD",
    "CSeq",
    "NameAddr",
    "Params",
    "RetryAfter",
    "Via",
    "format_params",
    "parse_contacts",
    "parse_cseq",
    "parse_delta_seconds",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_params",
    "parse_qvalue",
    "parse_retry_after",
    "parse_via",
    "parse_via_list",
    "quote_string",
    "split_header_values",
    "unquote_string",
]

Params = tuple[tuple[str, str | None], ...]
"""Header parameters: names lowercased, values as written (None: no value)."""

WILDCARD: Final = "*"
MAX_CSEQ: Final = 2**31 - 1  # RFC 3261 §8.1.1.5
MAX_DELTA_SECONDS: Final = 2**32 - 1  # RFC 3261 §20.19 / §25.1 delta-seconds

_ALPHANUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN_CHARS: Final = frozenset(_ALPHANUM + "-.!%*_+`'~")
_WS = " \t"


def _bad(why: str) -> MalformedMessageError:
    return MalformedMessageError(why, error_code=400)


# Single character-class runs: linear, no backtracking on any input.
_TOKEN_FULL: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DIGIT_RUN: Final = re.compile(r"[0-9]*")
_WS_RUN: Final = re.compile(r"[ \t]*")
# One generic-param: SEMI token [ EQUAL ( quoted-string / token / host ) ] (§25.1).
_PARAM: Final = re.compile(
    r"[ \t]*;[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)"
    r'(?:[ \t]*=[ \t]*("(?:[^"\\]|\\.)*+"|[A-Za-z0-9\-.!%*_+`\'~:\[\]]+))?+[ \t]*',
    re.S,
)


def is_token(text: str) -> bool:
    """True if *text* is a non-empty RFC 3261 token."""
    return _TOKEN_FULL.fullmatch(text) is not None


def _skip_ws(text: str, i: int) -> int:
    return _WS_RUN.match(text, i).end()  # type: ignore[union-attr]


def _scan_while(text: str, i: int, run: re.Pattern[str]) -> int:
    return run.match(text, i).end()  # type: ignore[union-attr]


_QUOTED: Final = re.compile(r'"(?:[^"\\]|\\.)*+"', re.S)  # possessive: linear


def _scan_quoted(text: str, i: int) -> int:
    """*text[i]* is '"': the index just past the closing quote (§25.1
    quoted-string, quoted-pair = "\\" any octet but CR/LF). Raises 400."""
    match = _QUOTED.match(text, i)
    if match is None:
        raise _bad("unterminated quoted string")
    return match.end()


def unquote_string(text: str) -> str:
    """The content of a quoted-string (with its quotes), escapes resolved."""
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    out: list[str] = []
    i = 0
    n = len(inner)
    while i < n:
        ch = inner[i]
        if ch == "\\" and i + 1 < n:
            out.append(inner[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


_NEEDS_QUOTED_PAIR = frozenset('"\\\x7f') | frozenset(
    chr(c) for c in range(32) if c not in (9, 10, 13)
)


def quote_string(text: str) -> str:
    """*text* as a quoted-string (§25.1): ``"``, ``\\`` and the control
    characters qdtext does not allow (NUL, BEL, DEL ...) as quoted-pairs. CR
    and LF cannot be quoted (quoted-pair excludes them) and become SP, so a
    value can never inject a header line."""
    if not any(ch in _NEEDS_QUOTED_PAIR or ch in "\r\n" for ch in text):
        return f'"{text}"'
    out = ['"']
    for ch in text:
        if ch in _NEEDS_QUOTED_PAIR:
            out.append("\\" + ch)
        elif ch in "\r\n":
            out.append(" ")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _unquote_param(value: str | None) -> str | None:
    if value is not None and value.startswith('"'):
        return unquote_string(value)
    return value


_LIST_DELIMITER: Final = re.compile(r'[",<>]')


def split_header_values(value: str, *, keep_empty: bool = False) -> list[str]:
    """Split a header value on commas outside quoted strings and ``<>``
    (RFC 3261 §7.3.1), elements stripped of whitespace. Empty elements are
    dropped unless *keep_empty* (the list parsers keep them to reject them)."""
    if '"' not in value and "<" not in value:
        items = [item.strip(_WS) for item in value.split(",")]
    else:
        items = []
        start = 0
        pos = 0
        in_angle = False
        search = _LIST_DELIMITER.search
        while (found := search(value, pos)) is not None:
            i = found.start()
            ch = value[i]
            if ch == '"' and not in_angle:
                pos = _scan_quoted(value, i)
                continue
            if ch == "<":
                in_angle = True
            elif ch == ">":
                in_angle = False
            elif ch == "," and not in_angle:
                items.append(value[start:i].strip(_WS))
                start = i + 1
            pos = i + 1
        items.append(value[start:].strip(_WS))
    if keep_empty:
        return items
    return [item for item in items if item]


def parse_params(text: str) -> Params:
    """``;a=b;c`` (with SWS around ``;`` and ``=``) as ``(("a","b"),("c",None))``.
    Names must be tokens (lowercased); a value is a token, a host (IPv6 with or
    without brackets) or a quoted-string kept with its quotes (§25.1
    generic-param). Raises 400, e.g. on ``;;`` (RFC 4475 §3.1.2.1)."""
    params: list[tuple[str, str | None]] = []
    n = len(text)
    pos = 0
    match = _PARAM.match
    while pos < n:
        found = match(text, pos)
        if found is None:
            if not text[pos:].strip(_WS):
                break
            raise _bad(f"bad parameter at {text[pos : pos + 30]!r}")
        params.append((found.group(1).lower(), found.group(2)))
        pos = found.end()
    return tuple(params)


def format_params(params: Params) -> str:
    """The wire form of *params*: ``;name`` or ``;name=value`` each."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _lookup(params: Params, name: str) -> str | None:
    key = name.lower()
    for pname, value in params:
        if pname == key:
            return _unquote_param(value)
    return None


_present = param_present
_changed = params_changed


def _without(params: Params, names: tuple[str, ...]) -> Params:
    drop = {n.lower() for n in names}
    return tuple(p for p in params if p[0] not in drop)


# --- Via ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42, §18.2.1; RFC 3581 rport)."""

    transport: str
    host: str
    port: int | None
    params: Params = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> str | None:
        """Value of *name* (quoted values unquoted); None if absent or valueless."""
        return _lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return _present(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The rport value a server filled in (RFC 3581 §4), if any."""
        value = self.param("rport")
        if value is None or not value.isascii() or not value.isdigit() or len(value) > 5:
            return None
        return int(value)

    @property
    def has_rport(self) -> bool:
        """``;rport`` present, with or without value (RFC 3581 §3)."""
        return self.has_param("rport")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def sent_by(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def with_params(self, **changes: str | None) -> Via:
        return dataclasses.replace(self, params=_changed(self.params, changes))

    def with_param(self, name: str, value: str | None) -> Via:
        return dataclasses.replace(self, params=_changed(self.params, {name: value}))

    def without_params(self, *names: str) -> Via:
        return dataclasses.replace(self, params=_without(self.params, names))

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """One via-parm (RFC 3261 §25.1): ``SIP / 2.0 / UDP host[:port] *(;param)``
    with SWS around ``/`` and ``:``. Raises 400."""
    head = _VIA_HEAD.match(value)
    if head is None:
        raise _bad(f"bad Via {value[:80]!r}")
    name, version, transport, host_text, port_text = head.groups()
    if host_text.startswith("["):
        host = parse_host(host_text)
    else:
        if host_text.startswith((".", "-")) or ".." in host_text:
            raise _bad(f"bad Via host {host_text[:80]!r}")
        host = host_text.lower()
    port = None if port_text is None else parse_port(port_text)
    rest = head.end()
    params = parse_params(value[rest:]) if rest < len(value) else ()
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=params,
        protocol=f"{name.upper()}/{version}",
    )


# sent-protocol LWS sent-by (§25.1), SWS around "/" and ":"; each part is a
# run of one character class, so matching is linear.
_VIA_HEAD: Final = re.compile(
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*/"
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+"
    r"(\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9\-._]+)(?:[ \t]*:[ \t]*([0-9]+))?+[ \t]*"
)


def parse_via_list(value: str) -> list[Via]:
    """Every via-parm of one Via header value (comma list). Raises 400,
    also on empty elements (``a,,b``: RFC 4475 §3.1.2.1)."""
    items = split_header_values(value, keep_empty=True)
    if any(not item for item in items):
        raise _bad("empty element in Via list")
    return [parse_via(item) for item in items]


# --- name-addr -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NameAddr:
    """name-addr or addr-spec with header params (RFC 3261 §20.10, §20.20,
    §20.39 ...): From, To, Contact, Route, Record-Route, Path, Reply-To."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    def param(self, name: str) -> str | None:
        """Value of header param *name*, quoted values unquoted; None if absent
        or valueless."""
        return _lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return _present(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_params(self, **changes: str | None) -> NameAddr:
        return dataclasses.replace(self, params=_changed(self.params, changes))

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return dataclasses.replace(self, params=_changed(self.params, {name: value}))

    def without_params(self, *names: str) -> NameAddr:
        return dataclasses.replace(self, params=_without(self.params, names))

    def __str__(self) -> str:
        display = "" if self.display_name is None else quote_string(self.display_name) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


_ADDR_SPEC_FORBIDDEN: Final = re.compile(r'[ \t,?"<>]')  # §20.10: these need <>
_ANGLE_FORBIDDEN: Final = re.compile(r"[ \t<]")
# An unquoted display-name word: a token, liberally also UTF-8 text (devices
# send "Jöran <sip:...>"; RFC 3261 wants it quoted, nothing is ambiguous).
_DISPLAY_WORD: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~\u0080-\U0010ffff]+")


def parse_name_addr(value: str) -> NameAddr:
    """One ``[display] <uri> *(;param)`` or ``addr-spec *(;param)`` (§25.1).

    Accepts a token display name directly followed by ``<`` (RFC 4475
    §3.1.1.6), and non-ASCII words in an unquoted display name. Without
    ``<>`` the params are header params (§20.10: RFC 4475 §3.3.12) and the
    URI may not hold ``,``, ``?`` or ``;`` (§3.1.2.13: 400). No whitespace
    inside ``<>`` (§3.1.2.14: 400). Raises 400."""
    text = value.strip(_WS)
    if not text:
        raise _bad("empty name-addr")
    display: str | None = None
    first = text[0]
    if first == '"':
        end = _scan_quoted(text, 0)
        display = unquote_string(text[:end])
        i = _skip_ws(text, end)
        if i >= len(text) or text[i] != "<":
            raise _bad("quoted display name without <URI>")
        return _angle(text, i, display)
    lt = text.find("<")
    if lt >= 0:
        words = text[:lt].split()
        for word in words:
            if _DISPLAY_WORD.fullmatch(word) is None:
                raise _bad(f"display name {text[:lt][:60]!r} must be quoted")
        if words:
            display = " ".join(words)
        return _angle(text, lt, display)
    semi = text.find(";")
    uri_text = text if semi < 0 else text[:semi].rstrip(_WS)
    if _ADDR_SPEC_FORBIDDEN.search(uri_text) is not None:
        raise _bad(f"addr-spec {uri_text[:80]!r} needs <> (RFC 3261 §20.10)")
    uri = parse_uri(uri_text)
    params = parse_params(text[semi:]) if semi >= 0 else ()
    return NameAddr(uri, None, params)


def _angle(text: str, lt: int, display: str | None) -> NameAddr:
    gt = text.find(">", lt + 1)
    if gt < 0:
        raise _bad("'<' without '>'")
    uri_text = text[lt + 1 : gt]
    if _ANGLE_FORBIDDEN.search(uri_text) is not None:
        raise _bad(f"whitespace inside <{uri_text[:80]}>")
    uri = parse_uri(uri_text)
    rest = text[gt + 1 :]
    params = parse_params(rest) if rest else ()
    return NameAddr(uri, display, params)


def parse_name_addr_list(value: str) -> list[NameAddr]:
    """Every element of a comma list of name-addrs (Contact, Route,
    Record-Route, Path, Service-Route). Raises 400, also on empty elements."""
    items = split_header_values(value, keep_empty=True)
    if any(not item for item in items):
        raise _bad("empty element in name-addr list")
    return [parse_name_addr(item) for item in items]


def parse_contacts(values: list[str]) -> list[NameAddr] | Literal["*"]:
    """The Contact header values of one message (RFC 3261 §20.10): the
    wildcard ``*`` alone, or the list of contacts ([] if none)."""
    if len(values) == 1 and values[0].strip(_WS) == WILDCARD:
        return WILDCARD
    contacts: list[NameAddr] = []
    for value in values:
        if value.strip(_WS) == WILDCARD:
            raise _bad("Contact: * mixed with other contacts")
        contacts.extend(parse_name_addr_list(value))
    return contacts


# --- CSeq and scalars -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number 0..2**31-1 and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method``; seq above 2**31-1 (§8.1.1.5) raises 400
    (RFC 4475 §3.1.2.4)."""
    text = value.strip(_WS)
    end = _scan_while(text, 0, _DIGIT_RUN)
    if end == 0:
        raise _bad(f"bad CSeq {value[:60]!r}")
    digits = text[:end].lstrip("0") or "0"
    if len(digits) > 10 or int(digits) > MAX_CSEQ:
        raise _bad("CSeq number above 2**31-1")
    i = _skip_ws(text, end)
    if i == end:
        raise _bad(f"bad CSeq {value[:60]!r}")
    method = text[i:]
    if not is_token(method):
        raise _bad(f"bad CSeq method {method[:60]!r}")
    return CSeq(int(digits), method)


def parse_delta_seconds(value: str, *, what: str = "value") -> int | None:
    """``1*DIGIT`` (Expires, Max-Forwards, Min-Expires ...). None if the value
    exceeds 2**32-1 (RFC 4475 §3.1.2.4: treat as absent, i.e. the default);
    raises 400 if not digits. Leading zeros are fine (RFC 4475 §3.1.1.1)."""
    text = value.strip(_WS)
    if not text or not text.isascii() or not text.isdigit():
        raise _bad(f"bad {what} {value[:60]!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > 10:
        return None
    number = int(digits)
    return number if number <= MAX_DELTA_SECONDS else None


def _scan_comment(text: str, i: int) -> int:
    """*text[i]* is '(': the index just past the matching ')' (§25.1 comment:
    nested comments and quoted-pairs). Raises 400 if unbalanced."""
    depth = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise _bad("unterminated comment")


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Retry-After (RFC 3261 §20.33): seconds, optional comment (without its
    parentheses, escapes kept) and params (``duration``)."""

    seconds: int
    comment: str | None = None
    params: Params = ()

    @property
    def duration(self) -> int | None:
        value = self.param("duration")
        return None if value is None else parse_delta_seconds(value, what="duration")

    def param(self, name: str) -> str | None:
        return _lookup(self.params, name)

    def __str__(self) -> str:
        comment = "" if self.comment is None else f" ({self.comment})"
        return f"{self.seconds}{comment}{format_params(self.params)}"


def parse_retry_after(value: str) -> RetryAfter:
    """``delta-seconds [ comment ] *( SEMI retry-param )`` (§25.1). Seconds
    above 2**32-1 are malformed here (RFC 4475 §3.1.2.5). Raises 400."""
    text = value.strip(_WS)
    end = _scan_while(text, 0, _DIGIT_RUN)
    seconds = parse_delta_seconds(text[:end], what="Retry-After")
    if seconds is None:
        raise _bad("Retry-After above 2**32-1")
    i = _skip_ws(text, end)
    comment: str | None = None
    if i < len(text) and text[i] == "(":
        close = _scan_comment(text, i)
        comment = text[i + 1 : close - 1]
        i = _skip_ws(text, close)
    return RetryAfter(seconds, comment, parse_params(text[i:]))


_QVALUE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")


def parse_qvalue(value: str) -> float:
    """A Contact ``q`` value (RFC 3261 §20.10, §25.1 qvalue): 0 to 1 with at
    most three decimals. Raises 400 otherwise."""
    text = value.strip(_WS)
    if _QVALUE.fullmatch(text) is None:
        raise _bad(f"bad q-value {value[:20]!r}")
    return float(text)
