"""How the TURN server authenticates requests (RFC 8656 §5, §7.2, RFC 8489 §9.2), sans-IO.

Every request except Binding goes through
:class:`~natkit.stun.auth.LongTermAuthenticator`: the first one is answered
401 with REALM, a NONCE and PASSWORD-ALGORITHMS, later ones must be signed
with the long-term key of their USERNAME (or USERHASH); a stale nonce is
438. This module holds the two things the server adds to it:

* :meth:`_ServerAuth._keys`: the candidate keys of a user from the
  :class:`~natkit.turn.credentials.CredentialSource` (several per user, so
  REST secrets can rotate); REST usernames need the wall clock to be shown
  unexpired, and without one they are all refused (fail closed);
* :class:`_Nonces`: nonces whose USERNAME-ANONYMITY bit (RFC 8489 §9.2.4)
  is announced only while every user can be found by USERHASH, asked at
  each challenge since a credential store may gain REST secrets at any
  refresh;
* :meth:`_ServerAuth._challenge_bytes`: the 401 every client's first
  request draws, from a template per method made by the general path
  (the authenticator's challenge, SOFTWARE, FINGERPRINT as the request
  had it), with the transaction ID, the nonce and the CRC written in.
  tests/turn/test_server_challenge.py checks it byte for byte against the
  general path.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.stun.constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    AttributeType,
    ErrorCode,
    MessageClass,
    PasswordAlgorithm,
    SecurityFeature,
)
from natkit.stun.credentials import NonceCheck, NonceIssuer
from natkit.stun.message import StunMessage, serialize_message
from natkit.turn.server_base import _ServerBase

_NONCE = int(AttributeType.NONCE)
_NOBODY = Endpoint("0.0.0.0", 0)


class _ServerAuth(_ServerBase):
    """The credential lookup the authenticator calls back, and the 401."""

    # (method, FINGERPRINT, nonce length) -> (template, offset of the nonce)
    _challenges: dict[tuple[int, bool, int], tuple[bytes, int]]

    def _challenge_bytes(self, request: StunMessage, client: Endpoint, now: float) -> bytes:
        """What the general path sends for an unsigned ``request`` (12-byte
        transaction ID) from ``client``: 401 with REALM, a fresh NONCE,
        PASSWORD-ALGORITHMS when announced, SOFTWARE, and FINGERPRINT when
        the request had one (RFC 8489 §9.2.4, §14.7)."""
        nonce = self._nonces.issue(client.host, now=now).encode("ascii")
        fingerprint = request.has_fingerprint
        key = (request.method, fingerprint, len(nonce))
        template = self._challenges.get(key)
        if template is None:
            template = self._challenges[key] = self._challenge_template(*key)
        data, at = template
        out = bytearray(data)
        out[8:HEADER_LENGTH] = request.transaction_id
        out[at : at + len(nonce)] = nonce
        if fingerprint:
            crc = (zlib.crc32(memoryview(out)[:-8]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            out[-4:] = crc.to_bytes(4, "big")
        return bytes(out)

    def _challenge_template(self, method: int, fingerprint: bool, size: int) -> tuple[bytes, int]:
        # The general path's answer, with a placeholder no nonce, realm or
        # SOFTWARE text can contain (0xff never occurs in UTF-8).
        placeholder = b"\xff" * size
        request = StunMessage(method, MessageClass.REQUEST, bytes(12))
        resp = self._auth.challenge(request, ErrorCode.UNAUTHENTICATED, _NOBODY, now=0.0).response
        resp.attributes = [
            type(a)(a.type, placeholder) if a.type == _NONCE else a for a in resp.attributes
        ]
        if self._software is not None:
            resp.add_raw(AttributeType.SOFTWARE, self._software)
        data = serialize_message(resp, fingerprint=fingerprint)
        return data, data.index(placeholder, HEADER_LENGTH)

    def _keys(self, username: str, algorithm: PasswordAlgorithm) -> tuple[bytes, ...]:
        clock = self.config.wallclock
        # Without a wall clock no REST username can be shown to be unexpired:
        # treat them all as expired (fail closed). Static users are unaffected.
        wall = clock() if clock is not None else math.inf
        return self._credentials.keys(username, algorithm, wallclock=wall)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class _Nonces(NonceIssuer):
    """Nonces whose USERNAME-ANONYMITY bit follows ``anonymous()`` at each
    challenge (RFC 8489 §9.2): a nonce issued with the bit and one issued
    without both stay valid, each checked by the issuer of its own features."""

    anonymous: Callable[[], bool] = _never
    _plain: NonceIssuer = field(init=False)
    _anon: NonceIssuer = field(init=False)

    def __post_init__(self) -> None:
        NonceIssuer.__post_init__(self)  # its prefix (zero-argument super() fails with slots)
        plain = NonceIssuer(self.secret, self.lifetime, self.features)
        anon = NonceIssuer(
            self.secret, self.lifetime, self.features | SecurityFeature.USERNAME_ANONYMITY
        )
        object.__setattr__(self, "_plain", plain)
        object.__setattr__(self, "_anon", anon)

    def issue(self, client: str, *, now: float) -> str:
        issuer = self._anon if self.anonymous() else self._plain
        return issuer.issue(client, now=now)

    def check(self, nonce: str, client: str, *, now: float) -> NonceCheck:
        # The anonymous issuer's prefix (cookie + feature bits) picks it without
        # decoding the bits: a nonce that starts with neither prefix is INVALID
        # for either issuer, as it was when the bits were decoded.
        anon = self._anon
        return (anon if nonce.startswith(anon.prefix) else self._plain).check(
            nonce, client, now=now
        )
