"""SIP digest authentication, client and server (RFC 3261 §22, RFC 7616, RFC 8760).

Theory of operation.

*Syntax.* A challenge (WWW-Authenticate §20.44, Proxy-Authenticate §20.27) and
credentials (Authorization §20.7, Proxy-Authorization §20.28) are one header
line each: a scheme token, then a comma list of ``name=value`` auth-params
whose value is a token or a quoted-string (RFC 3261 §25.1 escapes). Names are
case-insensitive, duplicates make the value invalid, unknown names are kept in
``extra`` and otherwise ignored. :func:`parse_challenge` and
:func:`parse_credentials` never raise: other schemes (RFC 4475 regaut01's
``NoOneKnowsThisScheme``), broken syntax, missing mandatory params or an
unknown algorithm give ``None``.

*Hashes* (RFC 7616 §3.4.1-§3.4.3, RFC 2617 §3.2.2): ``HA1 = H(user:realm:pw)``,
and for the ``-sess`` algorithms ``H(HA1:nonce:cnonce)``; ``HA2 =
H(method:digest-uri)`` (qop=auth or none) or ``H(method:uri:H(body))``
(auth-int); ``response = H(HA1:nonce:nc:cnonce:qop:HA2)``, or
``H(HA1:nonce:HA2)`` without qop (RFC 2069 compatibility, RFC 3261 §22.4).
A stored HA1 is always the plain ``H(user:realm:pw)`` of the algorithm's hash
function (MD5, SHA-256, SHA-512/256), shared by an algorithm and its -sess form.

*Client* (:class:`DigestClient`): given the request and the 401/407 it drew,
answers every realm of the response with the strongest algorithm and a qop it
supports, a fresh cnonce from the injected ``rng`` and the next nonce-count of
that nonce. It gives up (``None``) when the request already carried its
credentials for a realm and the new challenge is not ``stale=true`` (wrong
password), or is stale with the very nonce it just used (no progress).

*Server* (:class:`DigestServer`): nonces are stateless, ``base64url(timestamp
|| salt || HMAC-SHA256(secret, timestamp || salt || realm)[:16])``, so any
server holding the secret validates them; several secrets are accepted (the
first signs) for rotation. ``now`` is therefore a clock every such server
shares (Unix time from the driver's ``wallclock()``; a single server may pass
its monotonic clock). Verification is split so the core never waits on
storage: :meth:`DigestServer.credentials_for` tells the caller which user to
look up, :meth:`DigestServer.check` takes the HA1 found and returns an
:data:`AuthResult`. A correctly signed nonce older than ``nonce_lifetime``
with a correct response is :class:`AuthStale` (answer with ``stale=true``,
RFC 7616 §3.3). Replay: with ``replay_window > 0`` the server remembers, for a
bounded number of nonces, which nonce-counts it accepted (a sliding bitmap,
as IPsec's anti-replay window) and refuses a repeated or too old nc; a nonce
pushed out of that table is answered stale, so the client moves to a new one.
With ``replay_window = 0`` (the default: several servers share nonces and
each sees only some requests) a captured request can be replayed until its
nonce expires; the response still binds method, Request-URI and nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final
from urllib.parse import unquote

from natkit.errors import MalformedMessageError
from natkit.rng import Rng
from natkit.sip.headers import quote_string, unquote_string
from natkit.sip.message import SipRequest, SipResponse, make_response
from natkit.sip.uri import parse_uri

__all__ = [
    "CLIENT_PREFERENCE",
    "AuthFailed",
    "AuthMissing",
    "AuthOk",
    "AuthResult",
    "AuthStale",
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestClient",
    "DigestCredentials",
    "DigestServer",
    "DigestServerConfig",
    "Failed",
    "Missing",
    "Ok",
    "Stale",
    "compute_ha1",
    "compute_ha2",
    "compute_response",
    "format_challenge",
    "format_credentials",
    "hash_hex",
    "parse_challenge",
    "parse_credentials",
    "session_ha1",
    "userhash",
]


class DigestAlgorithm(StrEnum):
    """The algorithm= values of the IANA "HTTP Digest Algorithm Values"
    registry (RFC 7616 §6.1) that SIP uses (RFC 8760 §2)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"
    SHA512_256 = "SHA-512-256"
    SHA512_256_SESS = "SHA-512-256-sess"

    @property
    def hash_name(self) -> str:
        """The hashlib name of the hash function H."""
        return _HASHLIB[self.base]

    @property
    def is_session(self) -> bool:
        """A -sess variant (HA1 mixed with nonce and cnonce, RFC 7616 §3.4.2)."""
        return self.value.endswith("-sess")

    @property
    def base(self) -> DigestAlgorithm:
        """The algorithm without -sess: the one whose HA1 is stored."""
        return DigestAlgorithm(self.value.removesuffix("-sess"))

    @property
    def hex_length(self) -> int:
        """Length of H's output in hex digits."""
        return 32 if self.base is DigestAlgorithm.MD5 else 64

    @classmethod
    def from_text(cls, text: str) -> DigestAlgorithm | None:
        """The algorithm named *text* (case-insensitive, as deployed clients
        vary), or None if unknown or its hash is not available here."""
        alg = _BY_LOWER.get(text.lower())
        return alg if alg is not None and alg.base in _AVAILABLE else None


_HASHLIB: Final = {
    DigestAlgorithm.MD5: "md5",
    DigestAlgorithm.SHA256: "sha256",
    DigestAlgorithm.SHA512_256: "sha512_256",
}
_BY_LOWER: Final = {alg.value.lower(): alg for alg in DigestAlgorithm}


def _available() -> frozenset[DigestAlgorithm]:
    found = set()
    for alg, name in _HASHLIB.items():
        try:
            hashlib.new(name, b"")
        except ValueError:  # OpenSSL without SHA-512/256
            continue
        found.add(alg)
    return frozenset(found)


_AVAILABLE: Final = _available()

CLIENT_PREFERENCE: Final[tuple[DigestAlgorithm, ...]] = tuple(
    alg
    for alg in (
        DigestAlgorithm.SHA512_256,
        DigestAlgorithm.SHA512_256_SESS,
        DigestAlgorithm.SHA256,
        DigestAlgorithm.SHA256_SESS,
        DigestAlgorithm.MD5,
        DigestAlgorithm.MD5_SESS,
    )
    if alg.base in _AVAILABLE
)
"""Strongest first: the client's default ranking of the challenges of one
realm. RFC 8760 §2.4 has a UAC use the topmost challenge it supports "unless
a local policy dictates otherwise"; ranking by strength is that local policy
and picks the same for servers that list stronger algorithms first (§2.3).
``DigestClient(follow_server_order=True)`` takes the topmost instead."""

QOP_AUTH: Final = "auth"
QOP_AUTH_INT: Final = "auth-int"

# --- hashes ----------------------------------------------------------------------


def hash_hex(algorithm: DigestAlgorithm, data: str | bytes) -> str:
    """H(data) in lowercase hex; strings are UTF-8 (RFC 7616 §3.4, charset)."""
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return hashlib.new(algorithm.hash_name, raw).hexdigest()


def compute_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """The storable HA1, ``H(username:realm:password)`` (RFC 7616 §3.4.2),
    identical for an algorithm and its -sess variant."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def session_ha1(algorithm: DigestAlgorithm, ha1: str, nonce: str, cnonce: str) -> str:
    """HA1 as used in the response: ``H(HA1:nonce:cnonce)`` for -sess
    algorithms (RFC 7616 §3.4.2, RFC 2617 §3.2.2.2), else *ha1* itself."""
    if not algorithm.is_session:
        return ha1
    return hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce}")


def compute_ha2(
    algorithm: DigestAlgorithm, method: str, uri: str, qop: str | None, body: bytes = b""
) -> str:
    """``H(method:digest-uri)``, or with qop=auth-int ``H(method:uri:H(body))``
    (RFC 7616 §3.4.3; RFC 3261 §22.4: an empty body hashes the empty string)."""
    if qop is not None and qop.lower() == QOP_AUTH_INT:
        return hash_hex(algorithm, f"{method}:{uri}:{hash_hex(algorithm, body)}")
    return hash_hex(algorithm, f"{method}:{uri}")


def compute_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    *,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: int | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 without qop),
    from the stored HA1 (-sess applied here)."""
    ha2 = compute_ha2(algorithm, method, uri, qop, body)
    if qop is None:
        return hash_hex(algorithm, f"{ha1.lower()}:{nonce}:{ha2}")
    cn = cnonce or ""
    real_ha1 = session_ha1(algorithm, ha1.lower(), nonce, cn)
    return hash_hex(algorithm, f"{real_ha1}:{nonce}:{nc or 0:08x}:{cn}:{qop}:{ha2}")


def userhash(algorithm: DigestAlgorithm, username: str, realm: str) -> str:
    """``H(username:realm)``, sent instead of the username when the server
    offered userhash=true (RFC 7616 §3.4.4)."""
    return hash_hex(algorithm, f"{username}:{realm}")


# --- auth-param syntax -----------------------------------------------------------

_MAX_PARAMS: Final = 64
_LWS: Final = re.compile(r"(?:[ \t]|\r?\n[ \t])*+")
_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]++")
# Unquoted values: a token, but deployed clients also send '/', ':' or '='
# (base64 nonces, uris) bare; anything up to a delimiter is accepted.
_BARE_VALUE: Final = re.compile(r"[^\s,\"]++")
_QUOTED: Final = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.S)

AuthParams = tuple[tuple[str, str], ...]
"""(lowercased name, value with quotes and escapes resolved) in order."""


def _skip_lws(text: str, i: int) -> int:
    match = _LWS.match(text, i)
    return match.end() if match is not None else i


def _parse_auth(value: str) -> tuple[str, AuthParams, frozenset[str]] | None:
    """*value* as ``scheme LWS auth-param *(COMMA auth-param)`` (RFC 3261
    §25.1): the scheme (as written), the params, and the names whose value was
    quoted. None on any syntax error or a duplicated name."""
    text = value.strip(" \t\r\n")
    scheme = _TOKEN.match(text)
    if scheme is None:
        return None
    i = scheme.end()
    params: list[tuple[str, str]] = []
    quoted: set[str] = set()
    seen: set[str] = set()
    n = len(text)
    if i < n and text[i] not in " \t\r\n":
        return None
    while True:
        i = _skip_lws(text, i)
        while i < n and text[i] == ",":  # empty list elements (#rule)
            i = _skip_lws(text, i + 1)
        if i >= n:
            break
        name = _TOKEN.match(text, i)
        if name is None:
            return None
        key = name.group().lower()
        i = _skip_lws(text, name.end())
        if i >= n or text[i] != "=":
            return None
        i = _skip_lws(text, i + 1)
        if i < n and text[i] == '"':
            match = _QUOTED.match(text, i)
            if match is None:
                return None
            item = unquote_string(match.group())
            quoted.add(key)
        else:
            match = _BARE_VALUE.match(text, i)
            if match is None:
                return None
            item = match.group()
        if key in seen or len(params) >= _MAX_PARAMS:
            return None
        seen.add(key)
        params.append((key, item))
        i = _skip_lws(text, match.end())
        if i < n and text[i] != ",":
            return None
    return scheme.group(), tuple(params), frozenset(quoted)


def _format_params(items: Sequence[tuple[str, str, bool]]) -> str:
    return ", ".join(f"{k}={quote_string(v) if q else v}" for k, v, q in items)


def _bare_ok(value: str) -> bool:
    return _TOKEN.fullmatch(value) is not None


# --- challenges ------------------------------------------------------------------

_CHALLENGE_KNOWN: Final = frozenset(
    {"realm", "nonce", "algorithm", "qop", "opaque", "stale", "domain", "userhash", "charset"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestChallenge:
    """A ``Digest`` challenge (RFC 3261 §20.44/§20.27 value, RFC 7616 §3.3).

    ``qop`` holds the offered qop-values lowercased (empty: the server asks
    for the RFC 2069 form); ``algorithm`` is MD5 when absent; ``extra`` keeps
    unknown params."""

    realm: str
    nonce: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    qop: tuple[str, ...] = (QOP_AUTH,)
    opaque: str | None = None
    stale: bool = False
    domain: tuple[str, ...] = ()
    userhash: bool = False
    charset: str | None = None
    extra: AuthParams = ()

    def __str__(self) -> str:
        return format_challenge(self)


def parse_challenge(value: str) -> DigestChallenge | None:
    """One WWW-Authenticate/Proxy-Authenticate value; None if its scheme is not
    Digest, its syntax is broken, realm or nonce is missing, or the algorithm
    is unknown here. Never raises."""
    parsed = _parse_auth(value)
    if parsed is None or parsed[0].lower() != "digest":
        return None
    params = dict(parsed[1])
    realm, nonce = params.get("realm"), params.get("nonce")
    if realm is None or nonce is None:
        return None
    algorithm = DigestAlgorithm.from_text(params.get("algorithm", "MD5"))
    if algorithm is None:
        return None
    qop = tuple(q.strip(" \t").lower() for q in params.get("qop", "").split(",") if q.strip(" \t"))
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
        domain=tuple(params.get("domain", "").split()),
        userhash=params.get("userhash", "").lower() == "true",
        charset=params.get("charset"),
        extra=tuple((k, v) for k, v in parsed[1] if k not in _CHALLENGE_KNOWN),
    )


def format_challenge(challenge: DigestChallenge) -> str:
    """The header value: ``Digest realm="...", nonce="...", algorithm=..., qop="..."``."""
    items: list[tuple[str, str, bool]] = [
        ("realm", challenge.realm, True),
        ("nonce", challenge.nonce, True),
        ("algorithm", challenge.algorithm.value, False),
    ]
    if challenge.qop:
        items.append(("qop", ",".join(challenge.qop), True))
    if challenge.opaque is not None:
        items.append(("opaque", challenge.opaque, True))
    if challenge.domain:
        items.append(("domain", " ".join(challenge.domain), True))
    if challenge.stale:
        items.append(("stale", "TRUE", False))
    if challenge.userhash:
        items.append(("userhash", "true", False))
    if challenge.charset is not None:
        items.append(("charset", challenge.charset, not _bare_ok(challenge.charset)))
    items.extend((k, v, not _bare_ok(v)) for k, v in challenge.extra)
    return "Digest " + _format_params(items)


# --- credentials -----------------------------------------------------------------

_CREDENTIAL_KNOWN: Final = frozenset(
    {
        "username",
        "username*",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "nc",
        "qop",
        "opaque",
        "userhash",
    }
)
_NC: Final = re.compile(r"[0-9A-Fa-f]{1,8}")
_EXT_VALUE: Final = re.compile(r"(?i:utf-8)'[^']*'(.*)", re.S)


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestCredentials:
    """``Digest`` credentials (RFC 3261 §20.7/§20.28 value, RFC 7616 §3.4).

    ``nc`` is the nonce-count as an int; ``cnonce``, ``nc`` and ``qop`` are
    all set or all None (RFC 2069 form). ``response`` is lowercased hex."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: DigestAlgorithm = DigestAlgorithm.MD5
    cnonce: str | None = None
    nc: int | None = None
    qop: str | None = None
    opaque: str | None = None
    userhash: bool = False
    extra: AuthParams = ()

    def __str__(self) -> str:
        return format_credentials(self)


def _ext_username(text: str) -> str | None:
    """RFC 7616 §3.4.4 ``username*`` (RFC 5987 ext-value), UTF-8 only."""
    match = _EXT_VALUE.fullmatch(text)
    if match is None:
        return None
    try:
        return unquote(match.group(1), encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None


def parse_credentials(value: str) -> DigestCredentials | None:
    """One Authorization/Proxy-Authorization value; None if its scheme is not
    Digest, the syntax is broken, a mandatory param is missing (username,
    realm, nonce, uri, response; with qop also cnonce and nc), nc is not
    1-8 hex digits, or the algorithm is unknown. Never raises."""
    parsed = _parse_auth(value)
    if parsed is None or parsed[0].lower() != "digest":
        return None
    params = dict(parsed[1])
    username = params.get("username")
    if "username*" in params:
        if username is not None:
            return None  # RFC 7616 §3.4.4: MUST NOT send both
        username = _ext_username(params["username*"])
    fields = (username, params.get("realm"), params.get("nonce"), params.get("uri"))
    response = params.get("response")
    if any(f is None for f in fields) or response is None:
        return None
    algorithm = DigestAlgorithm.from_text(params.get("algorithm", "MD5"))
    if algorithm is None:
        return None
    qop, cnonce, nc_text = params.get("qop"), params.get("cnonce"), params.get("nc")
    nc: int | None = None
    if qop is not None:
        if cnonce is None or nc_text is None or _NC.fullmatch(nc_text) is None:
            return None
        nc = int(nc_text, 16)
    else:
        cnonce = None
    username, realm, nonce, uri = (str(f) for f in fields)
    return DigestCredentials(
        username=username,
        realm=realm,
        nonce=nonce,
        uri=uri,
        response=response.lower(),
        algorithm=algorithm,
        cnonce=cnonce,
        nc=nc,
        qop=qop,
        opaque=params.get("opaque"),
        userhash=params.get("userhash", "").lower() == "true",
        extra=tuple((k, v) for k, v in parsed[1] if k not in _CREDENTIAL_KNOWN),
    )


def format_credentials(credentials: DigestCredentials) -> str:
    """The header value, in the order RFC 3261 §22.4's examples use; qop, nc
    and algorithm unquoted (RFC 7616 §3.4)."""
    c = credentials
    items: list[tuple[str, str, bool]] = [
        ("username", c.username, True),
        ("realm", c.realm, True),
        ("nonce", c.nonce, True),
        ("uri", c.uri, True),
        ("response", c.response, True),
        ("algorithm", c.algorithm.value, False),
    ]
    if c.qop is not None:
        items += [
            ("cnonce", c.cnonce or "", True),
            ("qop", c.qop, not _bare_ok(c.qop)),
            ("nc", f"{c.nc or 0:08x}", False),
        ]
    if c.opaque is not None:
        items.append(("opaque", c.opaque, True))
    if c.userhash:
        items.append(("userhash", "true", False))
    items.extend((k, v, not _bare_ok(v)) for k, v in c.extra)
    return "Digest " + _format_params(items)


# --- header names ----------------------------------------------------------------

WWW_AUTHENTICATE: Final = "WWW-Authenticate"
PROXY_AUTHENTICATE: Final = "Proxy-Authenticate"
AUTHORIZATION: Final = "Authorization"
PROXY_AUTHORIZATION: Final = "Proxy-Authorization"


def _answer_header(status: int) -> tuple[str, str] | None:
    """(challenge header, credentials header) for a 401 or 407 (RFC 3261 §22.2, §22.3)."""
    if status == 401:
        return WWW_AUTHENTICATE, AUTHORIZATION
    if status == 407:
        return PROXY_AUTHENTICATE, PROXY_AUTHORIZATION
    return None


# --- client ----------------------------------------------------------------------


@dataclass(slots=True)
class _NonceUse:
    nonce: str
    nc: int = 0


class DigestClient:
    """Answers 401/407 challenges for one user (RFC 3261 §22.2, §22.3).

    State: the nonce last used per (header, realm) and its nonce-count, so a
    client reusing a nonce (preemptively, :meth:`preemptive_headers`) counts
    on. The TU sends the result as a new request: new CSeq, new Via branch."""

    def __init__(
        self,
        username: str,
        password: str,
        *,
        rng: Rng,
        algorithms: Sequence[DigestAlgorithm] = CLIENT_PREFERENCE,
        use_userhash: bool = False,
        follow_server_order: bool = False,
    ) -> None:
        self.username = username
        self.password = password
        self.rng = rng
        self.algorithms = tuple(a for a in algorithms if a.base in _AVAILABLE)
        self.use_userhash = use_userhash
        self.follow_server_order = follow_server_order
        self._nonces: dict[tuple[str, str], _NonceUse] = {}
        self._challenges: dict[tuple[str, str], DigestChallenge] = {}

    def _rank(self, challenge: DigestChallenge) -> int | None:
        if challenge.algorithm not in self.algorithms:
            return None
        if challenge.qop and not {QOP_AUTH, QOP_AUTH_INT} & set(challenge.qop):
            return None
        return self.algorithms.index(challenge.algorithm)

    def _is_mine(self, credentials: DigestCredentials) -> bool:
        if credentials.username == self.username:
            return True
        return credentials.userhash and credentials.username == userhash(
            credentials.algorithm, self.username, credentials.realm
        )

    def credentials_headers(
        self, request: SipRequest, response: SipResponse
    ) -> list[tuple[str, str]] | None:
        """One (header name, value) per realm challenged in *response* (a 401's
        WWW-Authenticate or a 407's Proxy-Authenticate lines), or None when
        there is nothing usable or the client gives up: *request* already
        carried this user's credentials for a realm and the new challenge is
        not stale, or is stale with the nonce just used (RFC 3261 §22.2)."""
        names = _answer_header(response.status)
        if names is None:
            return None
        challenge_name, answer_name = names
        best: dict[str, tuple[int, DigestChallenge]] = {}
        for position, line in enumerate(response.headers.get_all(challenge_name)):
            challenge = parse_challenge(line)
            if challenge is None or (rank := self._rank(challenge)) is None:
                continue
            if self.follow_server_order:
                rank = position
            held = best.get(challenge.realm)
            if held is None or rank < held[0]:
                best[challenge.realm] = (rank, challenge)
        if not best:
            return None
        sent = {
            c.realm: c
            for line in request.headers.get_all(answer_name)
            if (c := parse_credentials(line)) is not None and self._is_mine(c)
        }
        out: list[tuple[str, str]] = []
        for realm, (_, challenge) in best.items():
            previous = sent.get(realm)
            if previous is not None and (not challenge.stale or previous.nonce == challenge.nonce):
                return None
            self._challenges[(answer_name, realm)] = challenge
            out.append((answer_name, self._answer(challenge, request, answer_name)))
        return out

    def credentials_header(
        self, request: SipRequest, response: SipResponse
    ) -> tuple[str, str] | None:
        """The header to add (name, value) for the first realm challenged:
        Authorization for a 401, Proxy-Authorization for a 407; None as in
        :meth:`credentials_headers`."""
        headers = self.credentials_headers(request, response)
        return headers[0] if headers else None

    def authorize(self, request: SipRequest, response: SipResponse) -> SipRequest | None:
        """A copy of *request* with its credentials for the challenged realms
        replaced by fresh ones; None as in :meth:`credentials_headers`. The TU
        still bumps CSeq and sends it in a new transaction (§22.2, §8.1.3.5)."""
        headers = self.credentials_headers(request, response)
        if not headers:
            return None
        out = request.copy()
        _replace_credentials(out, headers)
        return out

    def preemptive_headers(self, request: SipRequest) -> list[tuple[str, str]]:
        """Credentials for *request* from the challenges answered before, with
        the next nonce-count (RFC 7616 §3.4: a nonce may be reused; a
        registration refresh then needs no new 401). Only qop challenges can
        be reused, since the nonce-count is what tells the requests apart."""
        return [
            (name, self._answer(challenge, request, name))
            for (name, _), challenge in self._challenges.items()
            if challenge.qop
        ]

    def _answer(self, challenge: DigestChallenge, request: SipRequest, answer_name: str) -> str:
        uri = str(request.uri)
        username = self.username
        hashed = self.use_userhash and challenge.userhash
        if hashed:
            username = userhash(challenge.algorithm, self.username, challenge.realm)
        ha1 = compute_ha1(challenge.algorithm, self.username, challenge.realm, self.password)
        qop: str | None = None
        cnonce: str | None = None
        nc: int | None = None
        if challenge.qop:
            qop = QOP_AUTH if QOP_AUTH in challenge.qop else QOP_AUTH_INT
            cnonce = f"{self.rng.getrandbits(128):032x}"
            key = (answer_name, challenge.realm)
            use = self._nonces.get(key)
            if use is None or use.nonce != challenge.nonce:
                use = self._nonces[key] = _NonceUse(challenge.nonce)
            use.nc += 1
            nc = use.nc
        response = compute_response(
            challenge.algorithm,
            ha1,
            nonce=challenge.nonce,
            method=request.method,
            uri=uri,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=request.body,
        )
        return format_credentials(
            DigestCredentials(
                username=username,
                realm=challenge.realm,
                nonce=challenge.nonce,
                uri=uri,
                response=response,
                algorithm=challenge.algorithm,
                cnonce=cnonce,
                nc=nc,
                qop=qop,
                opaque=challenge.opaque,
                userhash=hashed,
            )
        )


def _credential_realm(value: str) -> str | None:
    parsed = _parse_auth(value)
    if parsed is None:
        return None
    return dict(parsed[1]).get("realm")


def _replace_credentials(request: SipRequest, headers: list[tuple[str, str]]) -> None:
    for name in {name for name, _ in headers}:
        realms = {_credential_realm(v) for n, v in headers if n == name}
        kept = [v for v in request.headers.get_all(name) if _credential_realm(v) not in realms]
        request.headers.remove(name)
        for value in kept:
            request.headers.add(name, value)
    for name, value in headers:
        request.headers.add(name, value)


# --- server ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthOk:
    """The credentials are valid for *username* (as sent: a userhash if the
    client hashed it) in *realm*."""

    username: str
    realm: str
    algorithm: DigestAlgorithm


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthStale:
    """Right password, expired (or no longer tracked) nonce: answer with a
    fresh challenge and ``stale=true`` (RFC 7616 §3.3)."""

    realm: str
    username: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed:
    """Credentials present but not valid; *reason* is for logs, never the wire."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthMissing:
    """No Digest credentials for this realm: challenge."""


AuthResult = AuthOk | AuthStale | AuthFailed | AuthMissing
Ok = AuthOk
Stale = AuthStale
Failed = AuthFailed
Missing = AuthMissing

DEFAULT_SERVER_ALGORITHMS: Final = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestServerConfig:
    """How a :class:`DigestServer` challenges and verifies.

    * ``secrets``: nonce keys; the first signs, all verify (rotation).
    * ``algorithms``: offered in this order, one challenge each (RFC 8760
      §2.4: SHA-256 before MD5).
    * ``qop``: offered qop-values; ``require_qop`` refuses RFC 2069 style
      credentials (no cnonce/nc) — off only for very old clients.
    * ``nonce_lifetime``: seconds a nonce is fresh (RFC 7616 §5.4 leaves it
      to the server); ``max_clock_skew``: how far in the future a nonce's
      timestamp may be (servers sharing secrets have slightly different clocks).
    * ``proxy``: challenge with 407/Proxy-Authenticate (RFC 3261 §22.3).
    * ``replay_window``: 0 = no nonce-count tracking; N > 0 = accept each nc
      once, and none more than N below the highest seen for that nonce;
      ``max_tracked_nonces`` bounds the memory this takes.
    * ``check_uri``: the digest-uri must equal the Request-URI (RFC 2617
      §3.2.2.5), compared as URIs (§19.1.4)."""

    realm: str
    secrets: tuple[bytes, ...]
    algorithms: tuple[DigestAlgorithm, ...] = DEFAULT_SERVER_ALGORITHMS
    qop: tuple[str, ...] = (QOP_AUTH,)
    require_qop: bool = True
    nonce_lifetime: float = 300.0
    max_clock_skew: float = 30.0
    proxy: bool = False
    replay_window: int = 0
    max_tracked_nonces: int = 10_000
    check_uri: bool = True

    def __post_init__(self) -> None:
        if not self.realm:
            raise ValueError("a digest realm is a non-empty string")
        if not self.secrets or not all(isinstance(s, bytes) and s for s in self.secrets):
            raise ValueError("a digest server needs at least one non-empty secret (bytes)")
        if not self.algorithms or any(a.base not in _AVAILABLE for a in self.algorithms):
            raise ValueError(f"digest algorithms must be a non-empty subset of {CLIENT_PREFERENCE}")
        if not self.qop or any(q not in (QOP_AUTH, QOP_AUTH_INT) for q in self.qop):
            raise ValueError("qop must be a non-empty subset of ('auth', 'auth-int')")
        if self.nonce_lifetime <= 0 or self.max_clock_skew < 0:
            raise ValueError("nonce_lifetime must be positive and max_clock_skew not negative")
        if self.replay_window < 0 or self.max_tracked_nonces < 1:
            raise ValueError("replay_window >= 0 and max_tracked_nonces >= 1")


_STAMP_BYTES: Final = 8
_SALT_BYTES: Final = 8
_MAC_BYTES: Final = 16
_NONCE_BYTES: Final = _STAMP_BYTES + _SALT_BYTES + _MAC_BYTES
_NONCE_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def _mac(secret: bytes, signed: bytes, realm: str) -> bytes:
    return hmac.new(secret, signed + realm.encode("utf-8"), hashlib.sha256).digest()[:_MAC_BYTES]


@dataclass(slots=True)
class _ReplayWindow:
    highest: int = 0
    seen: int = 0  # bit i: nc == highest - i was accepted


@dataclass(slots=True)
class _ReplayTable:
    """Accepted nonce-counts per nonce, bounded (oldest nonce evicted first).
    A nonce issued no later than the newest evicted one is not trusted any
    more (``stale``), so eviction never reopens a replay."""

    window: int
    capacity: int
    nonces: OrderedDict[str, _ReplayWindow] = field(default_factory=OrderedDict)
    evicted_through: int = -1

    def accept(self, nonce: str, stamp: int, nc: int) -> str:
        """'ok', 'replay' or 'stale'; records *nc* when 'ok'."""
        entry = self.nonces.get(nonce)
        if entry is None:
            if stamp <= self.evicted_through:
                return "stale"
            entry = self.nonces[nonce] = _ReplayWindow()
            while len(self.nonces) > self.capacity:
                old, _ = self.nonces.popitem(last=False)
                self.evicted_through = max(self.evicted_through, _stamp_of(old))
        if nc > entry.highest:
            shift = nc - entry.highest  # up to 2**32: never shift by more than the window
            kept = entry.seen << shift if shift < self.window else 0
            entry.seen = (kept | 1) & ((1 << self.window) - 1)
            entry.highest = nc
            return "ok"
        offset = entry.highest - nc
        if offset >= self.window or entry.seen >> offset & 1:
            return "replay"
        entry.seen |= 1 << offset
        return "ok"


def _decode_nonce(nonce: str) -> bytes | None:
    if _NONCE_TEXT.fullmatch(nonce) is None:
        return None
    return base64.urlsafe_b64decode(nonce + "=")


def _stamp_of(nonce: str) -> int:
    raw = _decode_nonce(nonce)
    return int.from_bytes(raw[:_STAMP_BYTES], "big") if raw is not None else -1


class DigestServer:
    """Challenges and verifies digest credentials for one realm (RFC 3261
    §22.1, §22.3, §22.4; RFC 7616 §3.3, §3.5). Stateless apart from the
    optional replay table; ``now`` must be the clock shared by every server
    holding the same secrets (see the module docstring)."""

    def __init__(self, config: DigestServerConfig, *, rng: Rng) -> None:
        self.config = config
        self.rng = rng
        self._replay = (
            _ReplayTable(config.replay_window, config.max_tracked_nonces)
            if config.replay_window
            else None
        )

    @property
    def challenge_header(self) -> str:
        return PROXY_AUTHENTICATE if self.config.proxy else WWW_AUTHENTICATE

    @property
    def credentials_header(self) -> str:
        return PROXY_AUTHORIZATION if self.config.proxy else AUTHORIZATION

    # -- nonces -----------------------------------------------------------------

    def issue_nonce(self, *, now: float, realm: str | None = None) -> str:
        """A fresh nonce: base64url(ms timestamp, 8 random octets, HMAC)."""
        stamp = max(0, int(now * 1000)).to_bytes(_STAMP_BYTES, "big")
        salt = self.rng.getrandbits(8 * _SALT_BYTES).to_bytes(_SALT_BYTES, "big")
        signed = stamp + salt
        mac = _mac(self.config.secrets[0], signed, realm or self.config.realm)
        return base64.urlsafe_b64encode(signed + mac).decode("ascii").rstrip("=")

    def nonce_issued_at(self, nonce: str, *, realm: str | None = None) -> float | None:
        """When *nonce* was issued (seconds), or None if no secret of ours
        signed it for *realm* (forged, altered, or another realm's)."""
        raw = _decode_nonce(nonce)
        if raw is None or len(raw) != _NONCE_BYTES:
            return None
        signed, mac = raw[: _STAMP_BYTES + _SALT_BYTES], raw[_STAMP_BYTES + _SALT_BYTES :]
        target = realm or self.config.realm
        if not any(hmac.compare_digest(_mac(s, signed, target), mac) for s in self.config.secrets):
            return None
        return int.from_bytes(signed[:_STAMP_BYTES], "big") / 1000

    # -- challenges ---------------------------------------------------------------

    def challenges(
        self, *, now: float, stale: bool = False, realm: str | None = None
    ) -> list[DigestChallenge]:
        """One challenge per configured algorithm, in order, sharing one nonce."""
        nonce = self.issue_nonce(now=now, realm=realm)
        return [
            DigestChallenge(
                realm=realm or self.config.realm,
                nonce=nonce,
                algorithm=alg,
                qop=self.config.qop,
                stale=stale,
            )
            for alg in self.config.algorithms
        ]

    def challenge_headers(
        self, *, now: float, stale: bool = False, realm: str | None = None
    ) -> list[tuple[str, str]]:
        """The WWW-Authenticate (or Proxy-Authenticate) lines of a challenge."""
        return [
            (self.challenge_header, format_challenge(c))
            for c in self.challenges(now=now, stale=stale, realm=realm)
        ]

    def challenge(
        self,
        request: SipRequest,
        *,
        now: float,
        stale: bool = False,
        realm: str | None = None,
        to_tag: str | None = None,
    ) -> SipResponse:
        """A 401 (407 for a proxy) answering *request* with a challenge per
        algorithm (RFC 3261 §22.1, §22.3; RFC 8760 §2.4). A To tag is drawn
        from ``rng`` unless given (§8.2.6.2)."""
        tag = to_tag if to_tag is not None else f"{self.rng.getrandbits(64):016x}"
        return make_response(
            request,
            407 if self.config.proxy else 401,
            to_tag=tag,
            headers=self.challenge_headers(now=now, stale=stale, realm=realm),
        )

    def answer(
        self, request: SipRequest, result: AuthResult, *, now: float, realm: str | None = None
    ) -> SipResponse | None:
        """The response a failed verification calls for: a fresh challenge,
        ``stale=true`` after :class:`AuthStale` (§22.1, RFC 7616 §3.3); None
        after :class:`AuthOk` (go on with the request)."""
        if isinstance(result, AuthOk):
            return None
        return self.challenge(request, now=now, stale=isinstance(result, AuthStale), realm=realm)

    # -- verification ---------------------------------------------------------------

    def credentials_for(
        self, request: SipRequest, realm: str | None = None
    ) -> DigestCredentials | None:
        """The Digest credentials for *realm* in *request*'s Authorization
        (proxy: Proxy-Authorization) lines (RFC 3261 §22.3: a proxy picks
        those of its own realm), so the caller can look up the user's HA1.
        Other schemes and unparsable lines are ignored."""
        wanted = realm or self.config.realm
        for line in request.headers.get_all(self.credentials_header):
            credentials = parse_credentials(line)
            if credentials is not None and credentials.realm == wanted:
                return credentials
        return None

    def check(
        self,
        credentials: DigestCredentials,
        request: SipRequest,
        ha1: str | None,
        *,
        now: float,
        realm: str | None = None,
    ) -> AuthResult:
        """Verify *credentials* for *request*, given the stored HA1 of
        ``credentials.username`` for ``credentials.algorithm.base`` (None:
        unknown user). The response is checked first, so only the right
        password earns ``stale`` (RFC 7616 §3.3): for an expired nonce, and
        also for one no secret of ours signed or issued in the future (the
        client then retries with a fresh nonce instead of giving up after a
        secret was retired or a server restarted with a new one); with a
        wrong response such nonces are ``AuthFailed``. The replay window is
        updated last, only for valid requests."""
        cfg = self.config
        wanted = realm or cfg.realm
        c = credentials
        if c.realm != wanted:
            return AuthFailed(reason=f"realm {c.realm!r} is not {wanted!r}")
        if c.algorithm not in cfg.algorithms:
            return AuthFailed(reason=f"algorithm {c.algorithm} was not offered")
        if c.qop is None:
            if cfg.require_qop:
                return AuthFailed(reason="credentials without qop")
        elif c.qop.lower() not in cfg.qop:
            return AuthFailed(reason=f"qop {c.qop!r} was not offered")
        if cfg.check_uri and not _same_uri(c.uri, request):
            return AuthFailed(reason="digest-uri is not the Request-URI")
        issued = self.nonce_issued_at(c.nonce, realm=wanted)
        refused: str | None = None
        if issued is None:
            refused = "nonce not issued with our secrets"
        elif issued > now + cfg.max_clock_skew:
            refused = "nonce issued in the future"
        expected = compute_response(  # also for an unknown user: same work, same timing
            c.algorithm,
            ha1 if ha1 is not None else "0" * c.algorithm.hex_length,
            nonce=c.nonce,
            method=request.method,
            uri=c.uri,
            qop=c.qop,
            nc=c.nc,
            cnonce=c.cnonce,
            body=request.body,
        )
        matches = hmac.compare_digest(expected.encode(), c.response.encode("utf-8", "replace"))
        if ha1 is None:
            return AuthFailed(reason="unknown user")
        if not matches:
            return AuthFailed(reason=refused or "wrong response (password)")
        if issued is None or refused is not None:
            # The right password over a nonce we cannot accept (a retired
            # secret, a restarted server with a new one, a clock far ahead):
            # stale, so the client retries with ours instead of giving up.
            return AuthStale(realm=wanted, username=c.username)
        if now - issued > cfg.nonce_lifetime:
            return AuthStale(realm=wanted, username=c.username)
        if self._replay is not None and c.nc is not None:
            verdict = self._replay.accept(c.nonce, int(issued * 1000), c.nc)
            if verdict == "stale":
                return AuthStale(realm=wanted, username=c.username)
            if verdict == "replay":
                return AuthFailed(reason=f"nonce-count {c.nc} replayed")
        return AuthOk(username=c.username, realm=wanted, algorithm=c.algorithm)

    def verify(
        self,
        request: SipRequest,
        lookup_ha1: Callable[[str, str, DigestAlgorithm], str | None],
        *,
        now: float,
        realm: str | None = None,
    ) -> AuthResult:
        """:meth:`credentials_for` then :meth:`check`, with a synchronous
        ``lookup_ha1(username, realm, base algorithm)``."""
        credentials = self.credentials_for(request, realm)
        if credentials is None:
            return AuthMissing()
        ha1 = lookup_ha1(credentials.username, credentials.realm, credentials.algorithm.base)
        return self.check(credentials, request, ha1, now=now, realm=realm)


def _same_uri(digest_uri: str, request: SipRequest) -> bool:
    if digest_uri == str(request.uri):
        return True
    try:
        return parse_uri(digest_uri).equivalent(request.uri)
    except MalformedMessageError:
        return False
