"""STUN credentials: keys, password preparation, nonces, USERHASH (RFC 8489 §9).

Short-term key (§9.1.1): ``OpaqueString(password)``.
Long-term key (§9.2.2): ``MD5(username ":" OpaqueString(realm) ":"
OpaqueString(password))`` or the same with SHA-256, chosen through
PASSWORD-ALGORITHM(S). RFC 5389 prepared passwords with SASLprep (RFC 4013)
instead of OpaqueString (RFC 8265 §4.2); the RFC 5769 vectors use SASLprep,
and so do older clients with non-ASCII passwords, so both profiles exist.
For ASCII passwords, as nearly every deployment uses, they agree.

Nonces (§9.2): the server's nonce starts with the cookie ``obMatJos2`` and
four base64 characters carrying 24 security-feature bits (bit 0, the most
significant, announces PASSWORD-ALGORITHMS and so protects against
bid-down attacks; bit 1 announces username anonymity, i.e. USERHASH).
:class:`NonceIssuer` makes nonces that need no server state: the rest of
the nonce is an expiry time and an HMAC over it and the client's address, so
any server holding the same secret validates it, and it goes stale on time
(438 Stale Nonce). Each issuer remembers (bounded) the nonces it issued or
verified, per client, so the HMAC is not recomputed for every request a
client signs with the same nonce; the verdict is the same either way.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import stringprep
import struct
import unicodedata
from dataclasses import dataclass, field

from natkit.stun.constants import NONCE_COOKIE, PasswordAlgorithm, SecurityFeature
from natkit.stun.keyed_mac import keyed_digest

__all__ = [
    "NonceCheck",
    "NonceIssuer",
    "PasswordProfile",
    "long_term_key",
    "make_nonce",
    "nonce_features",
    "prepare_password",
    "saslprep",
    "short_term_key",
    "userhash",
]


class PasswordProfile(enum.Enum):
    """How passwords (and realms) are prepared before hashing."""

    OPAQUE_STRING = "opaque-string"  # RFC 8265 §4.2, as RFC 8489 requires
    SASLPREP = "saslprep"  # RFC 4013, as RFC 5389 required
    NONE = "none"  # bytes as given


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013): stringprep with the B.1/C.1.2 maps, NFKC,
    prohibited output and bidi checks. Raises ``ValueError`` on prohibited input."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch for ch in text if not stringprep.in_table_b1(ch)
    )
    norm = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for ch in norm:
        if any(table(ch) for table in prohibited):
            raise ValueError(f"SASLprep: prohibited character U+{ord(ch):04X}")
        if stringprep.in_table_a1(ch):
            raise ValueError(f"SASLprep: unassigned code point U+{ord(ch):04X}")
    if any(stringprep.in_table_d1(ch) for ch in norm):
        if any(stringprep.in_table_d2(ch) for ch in norm):
            raise ValueError("SASLprep: mixed bidirectional text")
        if not (stringprep.in_table_d1(norm[0]) and stringprep.in_table_d1(norm[-1])):
            raise ValueError("SASLprep: RandALCat text must start and end with RandALCat")
    return norm


def _opaque_string(text: str) -> str:
    from precis_i18n import get_profile

    try:
        return str(get_profile("OpaqueString").enforce(text))
    except UnicodeEncodeError as exc:
        raise ValueError(f"OpaqueString: {exc.reason}") from exc


def prepare_password(text: str, profile: PasswordProfile = PasswordProfile.OPAQUE_STRING) -> str:
    """Prepare a password (or realm) per ``profile``; ``ValueError`` if disallowed."""
    if profile is PasswordProfile.NONE or (text.isascii() and text.isprintable()):
        # Printable ASCII is unchanged by both profiles; skip the tables.
        return text
    if profile is PasswordProfile.SASLPREP:
        return saslprep(text)
    return _opaque_string(text)


def short_term_key(
    password: str, profile: PasswordProfile = PasswordProfile.OPAQUE_STRING
) -> bytes:
    """RFC 8489 §9.1.1: the HMAC key is the prepared password itself."""
    return prepare_password(password, profile).encode("utf-8")


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: PasswordAlgorithm = PasswordAlgorithm.MD5,
    profile: PasswordProfile = PasswordProfile.OPAQUE_STRING,
) -> bytes:
    """RFC 8489 §9.2.2 key for MESSAGE-INTEGRITY(-SHA256)."""
    if profile is PasswordProfile.SASLPREP:
        material = f"{username}:{realm}:{saslprep(password)}"
    else:
        material = (
            f"{username}:{prepare_password(realm, profile)}:{prepare_password(password, profile)}"
        )
    data = material.encode("utf-8")
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(data).digest()
    if algorithm == PasswordAlgorithm.MD5:
        return hashlib.md5(data).digest()
    raise ValueError(f"unsupported password algorithm {algorithm}")


def userhash(username: str, realm: str) -> bytes:
    """USERHASH (RFC 8489 §14.4): SHA-256 of ``username ":" realm``, both prepared."""
    material = f"{prepare_password(username)}:{prepare_password(realm)}"
    return hashlib.sha256(material.encode("utf-8")).digest()


def make_nonce(features: SecurityFeature, opaque: str) -> str:
    """A nonce announcing ``features`` (RFC 8489 §9.2): cookie, 4 base64 chars, rest."""
    if not features:
        return opaque
    bits = base64.b64encode(int(features).to_bytes(3, "big")).decode("ascii")
    return f"{NONCE_COOKIE}{bits}{opaque}"


def nonce_features(nonce: str) -> SecurityFeature:
    """The security features a nonce announces (none if it has no cookie)."""
    if not nonce.startswith(NONCE_COOKIE) or len(nonce) < len(NONCE_COOKIE) + 4:
        return SecurityFeature(0)
    try:
        raw = base64.b64decode(nonce[len(NONCE_COOKIE) : len(NONCE_COOKIE) + 4], validate=True)
    except ValueError:
        return SecurityFeature(0)
    return SecurityFeature(int.from_bytes(raw, "big"))


class NonceCheck(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # ours, but expired: answer 438
    INVALID = "invalid"  # not ours (or for another client): answer 401


_EXPIRY = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class NonceIssuer:
    """Stateless nonces: ``features | expiry | HMAC(secret, expiry | client)``.

    ``now`` is whatever clock all servers sharing ``secret`` agree on
    (monotonic for one process; the injected wall clock for a cluster).
    """

    secret: bytes
    lifetime: float = 600.0
    features: SecurityFeature = SecurityFeature.PASSWORD_ALGORITHMS
    # The cookie and feature characters every nonce of this issuer starts with
    # (computed once: the 4 base64 characters encode exactly 24 bits, so a nonce
    # announces our features if and only if it starts with this prefix).
    _prefix: str = field(init=False, repr=False, compare=False)
    # (nonce, client) -> expiry of the nonces whose MAC verified: a client
    # presents its nonce with every request, and the HMAC need not be redone.
    _verified: dict[tuple[str, str], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prefix", make_nonce(self.features, ""))
        object.__setattr__(self, "_verified", {})

    @property
    def prefix(self) -> str:
        """What every nonce of this issuer starts with (cookie and feature bits)."""
        return self._prefix

    def _mac(self, expiry: bytes, client: str) -> str:
        mac = keyed_digest(self.secret, expiry + client.encode(), "sha256")[:12]
        return binascii.b2a_base64(expiry + mac, newline=False).decode("ascii")

    def issue(self, client: str, *, now: float) -> str:
        """A fresh nonce for requests from ``client`` (an IP address)."""
        value = int(now + self.lifetime) & 0xFFFFFFFF
        nonce = self._prefix + self._mac(_EXPIRY.pack(value), client)
        self._remember(nonce, client, value)  # its next request need not verify it
        return nonce

    def _remember(self, nonce: str, client: str, expiry: int) -> None:
        verified = self._verified
        if len(verified) >= _VERIFIED_MAX:
            verified.clear()  # bounded; the next requests verify again
        verified[(nonce, client)] = expiry

    def check(self, nonce: str, client: str, *, now: float) -> NonceCheck:
        """Is ``nonce`` one we issued to ``client``, and still fresh?"""
        expiry = self._verified.get((nonce, client))
        if expiry is None:
            expiry = self._verify(nonce, client)
            if expiry is None:
                return NonceCheck.INVALID
            self._remember(nonce, client, expiry)
        return NonceCheck.STALE if expiry < int(now) else NonceCheck.VALID

    def _verify(self, nonce: str, client: str) -> int | None:
        """The expiry in ``nonce`` if its MAC is ours for ``client``."""
        prefix = self._prefix
        if not nonce.startswith(prefix):
            return None
        body = nonce[len(prefix) :]
        if len(body) != 24:  # base64 of 16 bytes
            return None
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            return None
        if len(raw) != 16:
            return None
        expiry = raw[:4]
        if not hmac.compare_digest(self._mac(expiry, client), body):
            return None
        value: int = _EXPIRY.unpack(expiry)[0]
        return value


_VERIFIED_MAX = 16384  # verified (nonce, client) pairs remembered
