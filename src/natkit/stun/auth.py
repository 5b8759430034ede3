"""Server-side STUN authentication (RFC 8489 §9.1.3, §9.2.4).

:class:`LongTermAuthenticator` decides, for one request, whether it is
authenticated, and if not, which error response to send: 401 with REALM,
NONCE and PASSWORD-ALGORITHMS when credentials are missing or wrong, 438
when the nonce is stale, 400 when the request is inconsistent (integrity
without USERNAME/REALM/NONCE, a PASSWORD-ALGORITHMS list that differs from
the one the server sent, i.e. a bid-down attempt). Keys come from a
synchronous lookup so that the core stays sans-IO; drivers backed by a
store warm a cache before they call in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.attributes import PasswordAlgorithmParams
from natkit.stun.constants import AttributeType, ErrorCode, PasswordAlgorithm, SecurityFeature
from natkit.stun.credentials import (
    NonceCheck,
    NonceIssuer,
    PasswordProfile,
    long_term_key,
    nonce_features,
    short_term_key,
    userhash,
)
from natkit.stun.message import Integrity, StunMessage, verify_integrity

__all__ = [
    "Authenticated",
    "KeyLookup",
    "LongTermAuthenticator",
    "Rejected",
    "ShortTermAuthenticator",
    "StaticUsers",
]

KeyLookup = Callable[[str, PasswordAlgorithm], bytes | Sequence[bytes] | None]
"""``(username, algorithm) -> key`` or ``None`` for an unknown user. A lookup
may also return several candidate keys (TURN REST credentials while shared
secrets rotate: one key per valid secret); the request is authentic if any
of them verifies its integrity, and that key signs the response."""


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The request is authentic; sign the response with ``key``."""

    username: str
    key: bytes
    integrity: Integrity


@dataclass(frozen=True, slots=True)
class Rejected:
    """Send ``response`` (an error response, never signed)."""

    response: StunMessage


AuthResult = Authenticated | Rejected


class StaticUsers:
    """A fixed table of ``username -> password`` for one realm."""

    def __init__(
        self,
        passwords: Mapping[str, str],
        realm: str,
        profile: PasswordProfile = PasswordProfile.OPAQUE_STRING,
    ) -> None:
        self._keys = {
            (user, alg): long_term_key(user, realm, pw, alg, profile)
            for user, pw in passwords.items()
            for alg in PasswordAlgorithm
        }
        self._by_hash = {userhash(user, realm): user for user in passwords}

    def key(self, username: str, algorithm: PasswordAlgorithm) -> bytes | None:
        return self._keys.get((username, algorithm))

    def username_for_hash(self, digest: bytes) -> str | None:
        return self._by_hash.get(digest)


def _integrity_of(request: StunMessage) -> Integrity:
    return Integrity.SHA256 if request.integrity_sha256_offset >= 0 else Integrity.SHA1


def _verified_key(request: StunMessage, found: bytes | Sequence[bytes] | None) -> bytes | None:
    """The first candidate key that verifies ``request``'s integrity, if any."""
    if found is None:
        return None
    if isinstance(found, bytes):
        return found if verify_integrity(request, found) else None
    for key in found:
        if verify_integrity(request, key):
            return key
    return None


class LongTermAuthenticator:
    """The long-term credential mechanism, server side (RFC 8489 §9.2.4)."""

    def __init__(
        self,
        realm: str,
        keys: KeyLookup,
        nonces: NonceIssuer,
        *,
        algorithms: tuple[PasswordAlgorithm, ...] = (
            PasswordAlgorithm.SHA256,
            PasswordAlgorithm.MD5,
        ),
        username_for_hash: Callable[[bytes], str | None] | None = None,
    ) -> None:
        self.realm = realm
        self._keys = keys
        self._nonces = nonces
        self._algorithms = tuple(PasswordAlgorithmParams(a) for a in algorithms)
        self._username_for_hash = username_for_hash
        # Encoded once: every challenge carries the same REALM and PASSWORD-ALGORITHMS.
        self._realm_value = at.REALM.encode(realm, b"")
        self._algorithms_value = at.PASSWORD_ALGORITHMS.encode(self._algorithms, b"")
        # Every nonce this issuer makes announces the same features.
        self._announces_algorithms = bool(
            nonce_features(nonces.issue("", now=0.0)) & SecurityFeature.PASSWORD_ALGORITHMS
        )
        self._md5_ok = PasswordAlgorithmParams(PasswordAlgorithm.MD5) in self._algorithms

    def challenge(
        self, request: StunMessage, code: int, client: Endpoint, *, now: float
    ) -> Rejected:
        """The answer to an unsigned or unverifiable ``request``: ``code``
        (401, or 438 for a stale nonce) with REALM, a fresh NONCE for
        ``client`` and, when the nonce announces them, PASSWORD-ALGORITHMS."""
        return self._challenge(request, code, client, now)

    def _challenge(self, request: StunMessage, code: int, client: Endpoint, now: float) -> Rejected:
        resp = request.error_response(code)
        resp.add_raw(_REALM, self._realm_value)
        # A nonce is ASCII (cookie, base64) and far below NONCE's 763-byte limit.
        resp.add_raw(_NONCE, self._nonces.issue(client.host, now=now).encode("ascii"))
        if self._announces_algorithms:
            resp.add_raw(_PASSWORD_ALGORITHMS, self._algorithms_value)
        return Rejected(resp)

    def check(self, request: StunMessage, client: Endpoint, *, now: float) -> AuthResult:
        """Authenticate ``request`` from ``client``; see the module docstring."""
        if request.integrity_offset < 0 and request.integrity_sha256_offset < 0:
            return self._challenge(request, ErrorCode.UNAUTHENTICATED, client, now)
        # One pass over the attributes: the first of each type counts (as get() does).
        raw: dict[int, bytes] = {}
        for atype, value in request.attributes:
            if atype in _AUTH_TYPES and atype not in raw:
                raw[atype] = value
        tid = request.transaction_id[-12:]
        v = raw.get(_USERNAME)
        username = None if v is None else at.USERNAME.decode(v, tid)
        v = raw.get(_USERHASH)
        digest = None if v is None else at.USERHASH.decode(v, tid)
        v = raw.get(_REALM)
        realm = None if v is None else at.REALM.decode(v, tid)
        v = raw.get(_NONCE)
        nonce = None if v is None else at.NONCE.decode(v, tid)
        if (username is None and digest is None) or realm is None or nonce is None:
            return Rejected(request.error_response(ErrorCode.BAD_REQUEST))
        verdict = self._nonces.check(nonce, client.host, now=now)
        if verdict is NonceCheck.STALE:
            return self._challenge(request, ErrorCode.STALE_NONCE, client, now)
        if verdict is NonceCheck.INVALID or realm != self.realm:
            return self._challenge(request, ErrorCode.UNAUTHENTICATED, client, now)
        algorithm = self._algorithm(raw, tid, nonce)
        if algorithm is None:
            return Rejected(request.error_response(ErrorCode.BAD_REQUEST))
        if username is None and digest is not None:
            username = self._username_for_hash(digest) if self._username_for_hash else None
        found = self._keys(username, algorithm) if username is not None else None
        key = _verified_key(request, found)
        if username is None or key is None:
            return self._challenge(request, ErrorCode.UNAUTHENTICATED, client, now)
        return Authenticated(username, key, _integrity_of(request))

    def _algorithm(self, raw: dict[int, bytes], tid: bytes, nonce: str) -> PasswordAlgorithm | None:
        """RFC 8489 §9.2.4 bid-down protection; ``None`` means 400."""
        v = raw.get(_PASSWORD_ALGORITHMS)
        offered = None if v is None else at.PASSWORD_ALGORITHMS.decode(v, tid)
        v = raw.get(_PASSWORD_ALGORITHM)
        chosen = None if v is None else at.PASSWORD_ALGORITHM.decode(v, tid)
        if offered is None and chosen is None:
            # An RFC 5389 client: MD5 - unless this server was told not to accept it.
            return PasswordAlgorithm.MD5 if self._md5_ok else None
        if not nonce_features(nonce) & SecurityFeature.PASSWORD_ALGORITHMS:
            return None
        if offered is None or chosen is None or tuple(offered) != self._algorithms:
            return None
        if chosen not in self._algorithms:
            return None
        return PasswordAlgorithm(chosen.algorithm)


_USERNAME = int(AttributeType.USERNAME)
_USERHASH = int(AttributeType.USERHASH)
_REALM = int(AttributeType.REALM)
_NONCE = int(AttributeType.NONCE)
_PASSWORD_ALGORITHMS = int(AttributeType.PASSWORD_ALGORITHMS)
_PASSWORD_ALGORITHM = int(AttributeType.PASSWORD_ALGORITHM)
_AUTH_TYPES = frozenset(
    (_USERNAME, _USERHASH, _REALM, _NONCE, _PASSWORD_ALGORITHMS, _PASSWORD_ALGORITHM)
)


class ShortTermAuthenticator:
    """The short-term credential mechanism, server side (RFC 8489 §9.1.3)."""

    def __init__(self, passwords: Callable[[str], str | None]) -> None:
        self._passwords = passwords

    def check(self, request: StunMessage, client: Endpoint, *, now: float) -> AuthResult:
        del client, now
        username = request.get(at.USERNAME)
        if request.integrity_offset < 0 and request.integrity_sha256_offset < 0:
            return Rejected(request.error_response(ErrorCode.BAD_REQUEST))
        if username is None:
            return Rejected(request.error_response(ErrorCode.BAD_REQUEST))
        password = self._passwords(username)
        if password is None:
            return Rejected(request.error_response(ErrorCode.UNAUTHENTICATED))
        key = short_term_key(password)
        if not verify_integrity(request, key):
            return Rejected(request.error_response(ErrorCode.UNAUTHENTICATED))
        return Authenticated(username, key, _integrity_of(request))
