"""SIP digest users in the store: HA1 per algorithm, never the password.

What is stored (per realm, like TURN users in :mod:`natkit.turn.aio.credentials`):
``sip/users/<realm>``, key ``<username>``:
``{"md5": hex, "sha256": hex, "sha512_256": hex}``, the HA1 values
``H(username:realm:password)`` of RFC 7616 §3.4.2 for each hash function
(an algorithm and its -sess variant share one). The realm is part of HA1,
so a user belongs to exactly one realm; renaming a realm means new passwords.

:func:`lookup_ha1` answers what :meth:`natkit.sip.digest.DigestServer.check`
needs; :func:`authenticate` is the whole verification of one request
(credentials_for, a lookup, check) for an asyncio driver.

:class:`Ha1Cache` keeps recently used user documents so that a busy
registrar does not ask the store for every request (a REGISTER with digest
is two requests, and a SQLite or Redis lookup is a hop to another thread or
host). It is bounded (least recently used users leave first) and entries
expire after ``ttl`` seconds. Changes made elsewhere (another process, another
registrar of a cluster) reach it thus: a request that fails against a cached
HA1 is checked again against the store's current one (so a new password
works at once), and a removed user or an old password keeps working for at
most ``ttl`` seconds. Changes made in this process through
:func:`add_user` / :func:`add_user_ha1` / :func:`remove_user` with
``cache=`` drop the entry at once.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Final

from natkit.sip.digest import (
    AuthFailed,
    AuthMissing,
    AuthResult,
    DigestAlgorithm,
    DigestServer,
    compute_ha1,
)
from natkit.sip.message import SipRequest
from natkit.store.base import Document, Store

__all__ = [
    "HA1_FIELDS",
    "Ha1Cache",
    "add_user",
    "add_user_ha1",
    "authenticate",
    "list_users",
    "lookup_ha1",
    "remove_user",
    "user_document",
    "users_namespace",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

HA1_FIELDS: Final[dict[DigestAlgorithm, str]] = {
    DigestAlgorithm.MD5: "md5",
    DigestAlgorithm.SHA256: "sha256",
    DigestAlgorithm.SHA512_256: "sha512_256",
}
"""Document field of each stored HA1, by base algorithm."""

_HEX: Final = re.compile(r"[0-9a-f]+")


class Ha1Cache:
    """Recently used user documents, by (realm, username); see the module
    docstring for how changes reach it. ``max_users`` bounds it (LRU),
    ``ttl`` is each entry's lifetime in seconds of the ``now`` passed in."""

    __slots__ = ("_entries", "hits", "max_users", "misses", "ttl")

    def __init__(self, *, max_users: int = 10_000, ttl: float = 30.0) -> None:
        if max_users < 1 or ttl <= 0:
            raise ValueError("an HA1 cache needs max_users >= 1 and ttl > 0")
        self.max_users = max_users
        self.ttl = ttl
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], tuple[float, Document]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, realm: str, username: str, *, now: float) -> Document | None:
        """The cached document, None when absent or expired."""
        key = (realm, username)
        entry = self._entries.get(key)
        if entry is None or entry[0] <= now:
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, realm: str, username: str, doc: Document, *, now: float) -> None:
        key = (realm, username)
        self._entries[key] = (now + self.ttl, doc)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_users:
            self._entries.popitem(last=False)

    def invalidate(self, realm: str, username: str) -> None:
        """Forget one user (its password changed or it was removed)."""
        self._entries.pop((realm, username), None)

    def clear(self) -> None:
        self._entries.clear()


def users_namespace(realm: str) -> str:
    return f"sip/users/{realm}"


def _check(realm: str, username: str) -> None:
    if not realm:
        raise ValueError("a SIP realm is a non-empty string")
    if not username:
        raise ValueError("a SIP username is a non-empty string")


def user_document(username: str, realm: str, password: str) -> Document:
    """The stored form of a user: every HA1 this machine can compute."""
    doc: Document = {}
    for alg, name in HA1_FIELDS.items():
        if DigestAlgorithm.from_text(alg.value) is not None:
            doc[name] = compute_ha1(alg, username, realm, password)
    return doc


async def add_user(
    store: Store, realm: str, username: str, password: str, *, cache: Ha1Cache | None = None
) -> bool:
    """Store *username*'s HA1s in *realm* (replacing an older password); True if new.
    This is what ``natkit sip user add`` calls."""
    _check(realm, username)
    if cache is not None:
        cache.invalidate(realm, username)
    return await _put(store, realm, username, user_document(username, realm, password))


async def add_user_ha1(
    store: Store,
    realm: str,
    username: str,
    ha1s: Mapping[DigestAlgorithm, str],
    *,
    cache: Ha1Cache | None = None,
) -> bool:
    """Store precomputed HA1s (imported from another server, e.g. Kamailio's
    ``ha1``/``ha1b`` columns) by base algorithm; True if new. ``ValueError``
    for a -sess algorithm or a value that is not a hex digest of the right size."""
    _check(realm, username)
    doc: Document = {}
    for alg, ha1 in ha1s.items():
        if alg.is_session:
            raise ValueError(f"store the HA1 of {alg.base}, not of {alg}")
        text = ha1.lower()
        if len(text) != alg.hex_length or _HEX.fullmatch(text) is None:
            raise ValueError(f"not a {alg} HA1: {ha1!r}")
        doc[HA1_FIELDS[alg]] = text
    if not doc:
        raise ValueError("no HA1 given")
    if cache is not None:
        cache.invalidate(realm, username)
    return await _put(store, realm, username, doc)


async def _put(store: Store, realm: str, username: str, doc: Document) -> bool:
    ns = users_namespace(realm)
    existed = await store.get(ns, username) is not None
    await store.put(ns, username, doc)
    return not existed


async def remove_user(
    store: Store, realm: str, username: str, *, cache: Ha1Cache | None = None
) -> bool:
    """Remove *username* from *realm*; True if it was there."""
    _check(realm, username)
    if cache is not None:
        cache.invalidate(realm, username)
    return await store.delete(users_namespace(realm), username)


async def list_users(store: Store, realm: str) -> list[str]:
    """The users of *realm*, sorted."""
    _check(realm, "-")
    return sorted(await store.scan(users_namespace(realm)))


async def lookup_ha1(
    store: Store, realm: str, username: str, algorithm: DigestAlgorithm
) -> str | None:
    """The stored HA1 of *username* for *algorithm* (its base: MD5-sess uses
    the MD5 HA1), or None if the user is unknown, has no HA1 of that kind,
    or the stored one is malformed (logged)."""
    if not realm or not username:
        return None
    return _ha1_of(await store.get(users_namespace(realm), username), realm, username, algorithm)


def _ha1_of(
    doc: Document | None, realm: str, username: str, algorithm: DigestAlgorithm
) -> str | None:
    if doc is None:
        return None
    base = algorithm.base
    value = doc.get(HA1_FIELDS[base])
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != base.hex_length or not _HEX.fullmatch(value):
        logger.warning("SIP user %r in %r: ignoring a malformed %s HA1", username, realm, base)
        return None
    return value


async def authenticate(
    server: DigestServer,
    store: Store,
    request: SipRequest,
    *,
    now: float,
    realm: str | None = None,
    cache: Ha1Cache | None = None,
) -> AuthResult:
    """Verify *request* against the users of the store: the credentials for
    *realm* (default: the server's), their user's HA1, then
    :meth:`DigestServer.check`. Answer anything but ``AuthOk`` with
    :meth:`DigestServer.answer`. With ``cache``, the user's document comes
    from it when fresh; a failure against a cached HA1 is checked again
    against the store (``check`` records nothing for a failed response, so
    the second check sees the same request)."""
    credentials = server.credentials_for(request, realm)
    if credentials is None:
        return AuthMissing()
    user_realm, username, algorithm = credentials.realm, credentials.username, credentials.algorithm
    if cache is None or not user_realm or not username:
        ha1 = await lookup_ha1(store, user_realm, username, algorithm)
        return server.check(credentials, request, ha1, now=now, realm=realm)
    cached = cache.get(user_realm, username, now=now)
    if cached is not None:
        ha1 = _ha1_of(cached, user_realm, username, algorithm)
        result = server.check(credentials, request, ha1, now=now, realm=realm)
        if not isinstance(result, AuthFailed):
            return result
        cache.invalidate(user_realm, username)
    doc = await store.get(users_namespace(user_realm), username)
    if doc is not None:
        cache.put(user_realm, username, doc, now=now)
        if cached is not None and doc == cached:
            return result  # the store says the same: the failure stands
    ha1 = _ha1_of(doc, user_realm, username, algorithm)
    return server.check(credentials, request, ha1, now=now, realm=realm)
