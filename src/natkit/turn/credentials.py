"""Where a TURN server's long-term keys come from (RFC 8489 §9.2.2), sans-IO.

* :class:`StaticCredentials`: a fixed table of users (``--user u:p``), or of
  precomputed keys (what the store keeps: a password never needs to be stored).
* :class:`RestCredentials`: ephemeral credentials of the TURN REST API
  (draft-uberti-behave-turn-rest, coturn's ``use-auth-secret``): the username
  is ``expiry:user`` (a Unix time, then anything), the password is
  base64(HMAC-SHA1(secret, username)). Several secrets may be valid at once,
  so that an operator can rotate them; every secret's key is a candidate.
  A username whose expiry has passed has no key.
* :class:`CombinedCredentials`: the union of several sources.

The core asks :meth:`CredentialSource.keys` for every candidate key of a
username and accepts the request if any verifies its integrity. It asks
:meth:`CredentialSource.resolves_every_userhash` at every challenge whether
to announce USERNAME-ANONYMITY (RFC 8489 §9.2.4), and counts allocations per
:meth:`CredentialSource.quota_user` (a REST username ``expiry:user`` counts
as ``user``, as coturn's ``user-quota`` does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence

from natkit.stun.constants import PasswordAlgorithm
from natkit.stun.credentials import long_term_key, userhash

__all__ = [
    "CombinedCredentials",
    "CredentialSource",
    "RestCredentials",
    "StaticCredentials",
    "rest_credentials",
    "rest_password",
]


class CredentialSource:
    """What the core asks about users: every candidate long-term key of
    ``username`` for ``algorithm`` (empty: unknown user or expired REST
    username), and the username behind a USERHASH (§14.4), if known."""

    def keys(
        self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
    ) -> tuple[bytes, ...]:
        raise NotImplementedError

    def username_for_hash(self, digest: bytes) -> str | None:
        return None

    def resolves_every_userhash(self) -> bool:
        """Can every user be found by USERHASH (RFC 8489 §14.4)? Only then may
        the server tell clients to send USERHASH instead of USERNAME. The
        default: yes if the class overrides :meth:`username_for_hash`."""
        return type(self).username_for_hash is not CredentialSource.username_for_hash

    def quota_user(self, username: str) -> str:
        """The name ``username``'s allocations are counted under (per-user quota)."""
        return username


class StaticCredentials(CredentialSource):
    """A fixed table of users of one realm."""

    def __init__(self, keys: Mapping[str, Mapping[PasswordAlgorithm, bytes]], realm: str) -> None:
        self.realm = realm
        self._keys = {user: dict(by_alg) for user, by_alg in keys.items()}
        self._by_hash = {userhash(user, realm): user for user in keys}

    @classmethod
    def from_passwords(cls, passwords: Mapping[str, str], realm: str) -> StaticCredentials:
        return cls(
            {
                user: {alg: long_term_key(user, realm, pw, alg) for alg in PasswordAlgorithm}
                for user, pw in passwords.items()
            },
            realm,
        )

    def keys(
        self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
    ) -> tuple[bytes, ...]:
        key = self._keys.get(username, {}).get(algorithm)
        return (key,) if key is not None else ()

    def username_for_hash(self, digest: bytes) -> str | None:
        return self._by_hash.get(digest)

    def __len__(self) -> int:
        return len(self._keys)


def rest_password(secret: str, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)): the REST API's password."""
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_credentials(
    secret: str, user: str, *, expiry: int, separator: str = ":"
) -> tuple[str, str]:
    """``(username, password)`` valid until Unix time ``expiry`` for ``user``."""
    username = f"{expiry}{separator}{user}" if user else str(expiry)
    return username, rest_password(secret, username)


class RestCredentials(CredentialSource):
    """TURN REST API ephemeral credentials under one or more shared secrets."""

    def __init__(self, secrets: Sequence[str], realm: str, *, separator: str = ":") -> None:
        self.secrets = tuple(secrets)
        self.realm = realm
        self.separator = separator

    def expiry_of(self, username: str) -> int | None:
        """The Unix time a REST username expires at, or None if it is not one
        (ASCII digits only: ``str.isdigit`` accepts "²", which ``int`` refuses)."""
        head = username.split(self.separator, 1)[0]
        if _EXPIRY.fullmatch(head) is None:
            return None
        return int(head)

    def resolves_every_userhash(self) -> bool:
        # A REST username is unknown until a request names it; with no
        # secret there are no REST users at all.
        return not self.secrets

    def quota_user(self, username: str) -> str:
        """``user`` of ``expiry:user`` (coturn strips the timestamp too), so that
        fresh credentials of one user share that user's quota."""
        if self.expiry_of(username) is None:
            return username
        _, sep, user = username.partition(self.separator)
        return user if sep else username

    def keys(
        self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
    ) -> tuple[bytes, ...]:
        expiry = self.expiry_of(username)
        if expiry is None or expiry < wallclock:
            return ()
        return tuple(
            long_term_key(username, self.realm, rest_password(secret, username), algorithm)
            for secret in self.secrets
        )


class CombinedCredentials(CredentialSource):
    """Every key any of ``sources`` offers (static users and REST secrets together)."""

    def __init__(self, sources: Iterable[CredentialSource]) -> None:
        self.sources = tuple(sources)

    def keys(
        self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
    ) -> tuple[bytes, ...]:
        out: list[bytes] = []
        for source in self.sources:
            out.extend(source.keys(username, algorithm, wallclock=wallclock))
        return tuple(out)

    def username_for_hash(self, digest: bytes) -> str | None:
        for source in self.sources:
            user = source.username_for_hash(digest)
            if user is not None:
                return user
        return None

    def resolves_every_userhash(self) -> bool:
        return all(source.resolves_every_userhash() for source in self.sources)

    def quota_user(self, username: str) -> str:
        for source in self.sources:
            user = source.quota_user(username)
            if user != username:
                return user
        return username


_EXPIRY = re.compile(r"[0-9]{1,12}")
