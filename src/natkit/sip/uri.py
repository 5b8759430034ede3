"""SIP, SIPS, tel and other URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 3986).

Theory of operation: :func:`parse_uri` reads the scheme and hands the rest to
the scheme's parser. ``sip:``/``sips:`` URIs are split on their delimiters
(the one ``@`` ends the userinfo, then ``;`` starts uri-parameters and ``?``
headers) by a single left-to-right pass, no regular expression, so the cost is
linear in the length. Every ``%HH`` escape is decoded exactly once into the
fields (``%2541`` gives ``%41``, never ``A``: RFC 4475 §3.1.1.3) and
:meth:`SipUri.__str__` re-escapes whatever the component's grammar does not
allow literally, so ``str(parse_uri(s))`` is a canonical form that parses back
to an equal value. Decoded octets that are not UTF-8 are kept as surrogate
escapes so that they survive the round trip. ``tel:`` URIs keep their number
as written; any other scheme becomes an :class:`AbsoluteUri` kept verbatim
(a proxy forwards it unchanged; RFC 4475 §3.3.2 asks for 416 when it is a
Request-URI, which :func:`natkit.sip.message.validate_request` decides).

Case rules (§19.1.4): scheme, host and parameter names are case-insensitive
and are stored lowercased; user and password are case-sensitive; parameter
values are kept as written and compared case-insensitively.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
from dataclasses import dataclass

from natkit.errors import MalformedMessageError

__all__ = [
    "AbsoluteUri",
    "param_present",
    "params_changed",
    "SipUri",
    "TelUri",
    "Uri",
    "parse_uri",
    "percent_decode",
    "percent_encode",
]

_ALPHANUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MARK = frozenset("-_.!~*'()")
_UNRESERVED = _ALPHANUM | _MARK
_USER_SAFE = _UNRESERVED | frozenset("&=+$,;?/")  # §25.1 user-unreserved
_PASSWORD_SAFE = _UNRESERVED | frozenset("&=+$,")
_PARAM_SAFE = _UNRESERVED | frozenset("[]/:&+$")  # §25.1 param-unreserved
_HEADER_SAFE = _UNRESERVED | frozenset("[]/?:+$")  # §25.1 hnv-unreserved
_HOST_CHARS = _ALPHANUM | frozenset("-._")  # "_": not RFC 1123, but devices send it
_HEX = frozenset("0123456789abcdefABCDEF")
_SCHEME_CHARS = _ALPHANUM | frozenset("+-.")
# RFC 3986 / RFC 2396 uric: what an opaque absolute URI may hold literally.
_URIC = _UNRESERVED | frozenset(";/?:@&=+$,%#[]")
_TEL_CHARS = _ALPHANUM | frozenset("+-.()*#%")
_SINGLE_VALUED_URI_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _bad(why: str) -> MalformedMessageError:
    return MalformedMessageError(why, error_code=400)


def _run_of(chars: frozenset[str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(ch) for ch in sorted(chars)) + "]*")


_RUNS: dict[frozenset[str], re.Pattern[str]] = {}


def percent_decode(text: str, allowed: frozenset[str], what: str) -> str:
    """Decode every ``%HH`` in *text* once (RFC 3261 §19.1.2); every other
    character must be in *allowed*. Raises 400 on a broken escape."""
    if "%" not in text:
        pattern = _RUNS.get(allowed)
        if pattern is None:
            pattern = _RUNS[allowed] = _run_of(allowed)
        if pattern.fullmatch(text) is None:
            bad = next((ch for ch in text if ch not in allowed), "?")
            raise _bad(f"character {bad!r} not allowed in {what}")
        return text
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise _bad(f"bad escape %{pair} in {what}")
            out.append(int(pair, 16))
            i += 3
            continue
        if ch not in allowed:
            raise _bad(f"character {ch!r} not allowed in {what}")
        out += ch.encode()
        i += 1
    return out.decode("utf-8", "surrogateescape")


def percent_encode(text: str, safe: frozenset[str]) -> str:
    """Escape every character of *text* not in *safe* as ``%HH`` of its UTF-8
    octets (the inverse of :func:`percent_decode`)."""
    for ch in text:
        if ch not in safe:
            break
    else:
        return text
    parts: list[str] = []
    for ch in text:
        if ch in safe:
            parts.append(ch)
        else:
            parts.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogateescape"))
    return "".join(parts)


Params = tuple[tuple[str, str | None], ...]


def _param_lookup(params: Params, name: str) -> str | None:
    key = name.lower()
    for pname, value in params:
        if pname == key:
            return value
    return None


def param_present(params: Params, name: str) -> bool:
    """Whether a parameter *name* (case-insensitive) is in *params*."""
    key = name.lower()
    return any(pname == key for pname, _ in params)


def params_changed(params: Params, changes: dict[str, str | None]) -> Params:
    """*params* with each of *changes* replacing the parameter of that name in
    place, or appended (names lowercased; value None: no value)."""
    result = list(params)
    for name, value in changes.items():
        key = name.lower()
        for i, (pname, _) in enumerate(result):
            if pname == key:
                result[i] = (key, value)
                break
        else:
            result.append((key, value))
    return tuple(result)


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1), components decoded once."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """The value of uri-parameter *name*; None if absent or valueless
        (use :meth:`has_param` to tell those apart)."""
        return _param_lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return param_present(self.params, name)

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value is not None else None

    @property
    def lr(self) -> bool:
        return self.has_param("lr")

    @property
    def maddr(self) -> str | None:
        return self.param("maddr")

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def with_params(self, **changes: str | None) -> SipUri:
        """A copy with params added or replaced (value None: valueless, ``lr``)."""
        return dataclasses.replace(self, params=params_changed(self.params, changes))

    def with_param(self, name: str, value: str | None) -> SipUri:
        """Like :meth:`with_params` for names that are not identifiers."""
        return dataclasses.replace(self, params=params_changed(self.params, {name: value}))

    def without_params(self, *names: str) -> SipUri:
        drop = {n.lower() for n in names}
        return dataclasses.replace(self, params=tuple(p for p in self.params if p[0] not in drop))

    def replace(self, **fields: object) -> SipUri:
        return dataclasses.replace(self, **fields)  # type: ignore[arg-type]

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def aor(self) -> str:
        """``scheme:user@host[:port]``: the address-of-record key (RFC 3261 §10.3
        step 5), the user re-escaped canonically, no params or headers."""
        user = f"{percent_encode(self.user, _USER_SAFE)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.hostport}"

    def equivalent(self, other: Uri) -> bool:
        """URI comparison of RFC 3261 §19.1.4: userinfo case-sensitive, host,
        params and headers case-insensitive; user/ttl/method/maddr/transport
        must match if either has them, other params only where both have them;
        headers must all match; no default port."""
        if not isinstance(other, SipUri):
            return False
        if self.scheme != other.scheme or self.user != other.user:
            return False
        if self.password != other.password or self.port != other.port:
            return False
        if not _hosts_equal(self.host, other.host):
            return False
        mine = dict(self.params)
        theirs = dict(other.params)
        for name in _SINGLE_VALUED_URI_PARAMS:
            if (name in mine) != (name in theirs):
                return False
        for name in mine.keys() & theirs.keys():
            a, b = mine[name], theirs[name]
            if (a is None) != (b is None):
                return False
            if a is not None and b is not None and a.lower() != b.lower():
                return False
        mine_h = sorted((k.lower(), v.lower()) for k, v in self.headers)
        theirs_h = sorted((k.lower(), v.lower()) for k, v in other.headers)
        return mine_h == theirs_h

    def __str__(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(percent_encode(self.user, _USER_SAFE))
            if self.password is not None:
                parts.append(":")
                parts.append(percent_encode(self.password, _PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.hostport)
        for name, value in self.params:
            parts.append(";")
            parts.append(percent_encode(name, _PARAM_SAFE))
            if value is not None:
                parts.append("=")
                parts.append(percent_encode(value, _PARAM_SAFE))
        for i, (name, value) in enumerate(self.headers):
            parts.append("?" if i == 0 else "&")
            parts.append(percent_encode(name, _HEADER_SAFE))
            parts.append("=")
            parts.append(percent_encode(value, _HEADER_SAFE))
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): the number as written, params lowercased names."""

    number: str
    params: Params = ()

    def param(self, name: str) -> str | None:
        return _param_lookup(self.params, name)

    def has_param(self, name: str) -> bool:
        return param_present(self.params, name)

    @property
    def scheme(self) -> str:
        return "tel"

    def equivalent(self, other: Uri) -> bool:
        """RFC 3966 §4: equal numbers (visual separators ignored) and params."""
        if not isinstance(other, TelUri):
            return False
        strip = str.maketrans("", "", "-.()")
        if self.number.translate(strip).lower() != other.number.translate(strip).lower():
            return False
        return sorted((k, (v or "").lower()) for k, v in self.params) == sorted(
            (k, (v or "").lower()) for k, v in other.params
        )

    def __str__(self) -> str:
        out = [f"tel:{self.number}"]
        for name, value in self.params:
            out.append(f";{name}" if value is None else f";{name}={value}")
        return "".join(out)


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other scheme (RFC 3986 absolute URI), kept verbatim: scheme as
    written (compared case-insensitively), everything after the colon opaque."""

    scheme: str
    opaque: str

    def equivalent(self, other: Uri) -> bool:
        return (
            isinstance(other, AbsoluteUri)
            and self.scheme.lower() == other.scheme.lower()
            and self.opaque == other.opaque
        )

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri


def _hosts_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    if ":" in a and ":" in b:
        try:
            return ipaddress.IPv6Address(a) == ipaddress.IPv6Address(b)
        except ValueError:
            return False
    return False


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI: SIP/SIPS (RFC 3261 §19.1, §25.1), tel (RFC 3966)
    or any other scheme kept verbatim. Raises MalformedMessageError(400).

    URIs are immutable, so the last few thousand results are remembered: one
    REGISTER names the same URI in its To, From and Request-URI, and its
    Contact is read again by the registrar and the NAT helper."""
    return _parse_uri_cached(text)


@functools.lru_cache(maxsize=4096)
def _parse_uri_cached(text: str) -> Uri:
    return _parse_uri(text)


def _parse_uri(text: str) -> Uri:
    colon = text.find(":")
    if colon <= 0:
        raise _bad(f"not a URI: {text[:80]!r}")
    scheme = text[:colon]
    if not scheme[0].isascii() or not scheme[0].isalpha():
        raise _bad(f"bad URI scheme {scheme[:40]!r}")
    for ch in scheme:
        if ch not in _SCHEME_CHARS:
            raise _bad(f"bad URI scheme {scheme[:40]!r}")
    lower = scheme.lower()
    rest = text[colon + 1 :]
    if lower in ("sip", "sips"):
        return _parse_sip_uri(lower, rest)
    if lower == "tel":
        return _parse_tel_uri(rest)
    for ch in rest:
        if ch not in _URIC:
            raise _bad(f"character {ch!r} not allowed in a {scheme[:40]} URI")
    return AbsoluteUri(scheme, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        if rest.find("@", at + 1) >= 0:
            raise _bad("more than one '@' in a SIP URI")
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        colon = userinfo.find(":")
        if colon >= 0:
            password = percent_decode(userinfo[colon + 1 :], _PASSWORD_SAFE, "URI password")
            userinfo = userinfo[:colon]
        if not userinfo:
            raise _bad("empty user part in a SIP URI")
        user = percent_decode(userinfo, _USER_SAFE, "URI user part")
    headers_text: str | None = None
    question = rest.find("?")
    if question >= 0:
        headers_text = rest[question + 1 :]
        rest = rest[:question]
    params_text = ""
    semi = rest.find(";")
    if semi >= 0:
        params_text = rest[semi + 1 :]
        rest = rest[:semi]
    host, port = _parse_hostport(rest)
    params: Params = ()
    if semi >= 0:
        plist: list[tuple[str, str | None]] = []
        for item in params_text.split(";"):
            eq = item.find("=")
            if eq < 0:
                name = percent_decode(item, _PARAM_SAFE, "URI parameter")
                value: str | None = None
            else:
                name = percent_decode(item[:eq], _PARAM_SAFE, "URI parameter")
                value = percent_decode(item[eq + 1 :], _PARAM_SAFE, "URI parameter value")
                if not value:
                    raise _bad(f"empty value for URI parameter {name[:40]!r}")
            if not name:
                raise _bad("empty URI parameter")
            plist.append((name.lower(), value))
        params = tuple(plist)
    headers: tuple[tuple[str, str], ...] = ()
    if headers_text is not None:
        hlist: list[tuple[str, str]] = []
        for item in headers_text.split("&"):
            eq = item.find("=")
            if eq <= 0:
                raise _bad("URI header without '='")
            hname = percent_decode(item[:eq], _HEADER_SAFE, "URI header name")
            hvalue = percent_decode(item[eq + 1 :], _HEADER_SAFE, "URI header value")
            hlist.append((hname, hvalue))
        headers = tuple(hlist)
    return SipUri(scheme, host, user, password, port, params, headers)


def parse_host(text: str) -> str:
    """A host (RFC 3261 §25.1): hostname (lowercased), IPv4 or bracketed IPv6
    (returned without brackets). Raises 400."""
    host, port = _parse_hostport(text)
    if port is not None:
        raise _bad(f"unexpected port in host {text[:80]!r}")
    return host


def _parse_hostport(text: str) -> tuple[str, int | None]:
    port: int | None = None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise _bad("unterminated IPv6 reference")
        literal = text[1:close]
        if "%" in literal:
            raise _bad("zone index in an IPv6 reference")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _bad(f"bad IPv6 address {literal[:60]!r}") from None
        host = literal.lower()
        tail = text[close + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise _bad(f"junk after IPv6 reference: {tail[:40]!r}")
            port = parse_port(tail[1:])
        return host, port
    colon = text.find(":")
    if colon >= 0:
        port = parse_port(text[colon + 1 :])
        text = text[:colon]
    if not text:
        raise _bad("empty host")
    for ch in text:
        if ch not in _HOST_CHARS:
            raise _bad(f"character {ch!r} not allowed in a host name")
    if text.startswith((".", "-")) or ".." in text:
        raise _bad(f"bad host name {text[:80]!r}")
    return text.lower(), port


def parse_port(text: str) -> int:
    """A port: 1-5 digits, at most 65535 (RFC 3261 §25.1). Raises 400."""
    if not text or len(text) > 5 or not text.isascii() or not text.isdigit():
        raise _bad(f"bad port {text[:20]!r}")
    port = int(text)
    if port > 65535:
        raise _bad(f"port {port} out of range")
    return port


def _parse_tel_uri(rest: str) -> TelUri:
    number, _, params_text = rest.partition(";")
    if not number:
        raise _bad("empty tel: number")
    for ch in number:
        if ch not in _TEL_CHARS:
            raise _bad(f"character {ch!r} not allowed in a tel: number")
    params: list[tuple[str, str | None]] = []
    if params_text or rest.endswith(";"):
        for item in params_text.split(";"):
            name, eq, value = item.partition("=")
            if not name:
                raise _bad("empty tel: parameter")
            for ch in name + value:
                if ch not in _PARAM_SAFE and ch != "%":
                    raise _bad(f"character {ch!r} not allowed in a tel: parameter")
            params.append((name.lower(), value if eq else None))
    return TelUri(number, tuple(params))
