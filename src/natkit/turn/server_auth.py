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
  refresh.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from natkit.stun.constants import PasswordAlgorithm, SecurityFeature
from natkit.stun.credentials import NonceCheck, NonceIssuer
from natkit.turn.server_base import _ServerBase


class _ServerAuth(_ServerBase):
    """The credential lookup the authenticator calls back."""

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
