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
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Final

from natkit.sip.digest import (
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


async def add_user(store: Store, realm: str, username: str, password: str) -> bool:
    """Store *username*'s HA1s in *realm* (replacing an older password); True if new.
    This is what ``natkit sip user add`` calls."""
    _check(realm, username)
    return await _put(store, realm, username, user_document(username, realm, password))


async def add_user_ha1(
    store: Store, realm: str, username: str, ha1s: Mapping[DigestAlgorithm, str]
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
    return await _put(store, realm, username, doc)


async def _put(store: Store, realm: str, username: str, doc: Document) -> bool:
    ns = users_namespace(realm)
    existed = await store.get(ns, username) is not None
    await store.put(ns, username, doc)
    return not existed


async def remove_user(store: Store, realm: str, username: str) -> bool:
    """Remove *username* from *realm*; True if it was there."""
    _check(realm, username)
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
    doc = await store.get(users_namespace(realm), username)
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
) -> AuthResult:
    """Verify *request* against the users of the store: the credentials for
    *realm* (default: the server's), their user's HA1, then
    :meth:`DigestServer.check`. Answer anything but ``AuthOk`` with
    :meth:`DigestServer.answer`."""
    credentials = server.credentials_for(request, realm)
    if credentials is None:
        return AuthMissing()
    ha1 = await lookup_ha1(store, credentials.realm, credentials.username, credentials.algorithm)
    return server.check(credentials, request, ha1, now=now, realm=realm)
