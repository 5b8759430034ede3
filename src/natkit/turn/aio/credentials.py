"""TURN users and REST secrets in the store, and the credential source that
serves them to a running server.

What is stored (per realm, like coturn's ``turnadmin``):

* ``turn/users/<realm>``, key ``<username>``: ``{"md5": hex, "sha256": hex}``,
  the RFC 8489 §9.2.2 long-term keys (MD5 and SHA-256 of
  ``username:realm:password``), never the password. MD5 is what RFC 5389
  clients need; SHA-256 serves PASSWORD-ALGORITHM SHA-256 (RFC 8489 §18.5).
  A realm is part of the key, so a user belongs to exactly one realm.
* ``turn/secrets/<realm>``, key: the secret's id (12 random hex digits drawn
  when it is added; older natkit derived it from the secret's unsalted
  SHA-256, which let anyone who saw a listing test guesses of a weak secret
  offline, and such stored ids keep working):
  ``{"secret": ..., "label": ..., "created": unix time}``, the
  TURN REST API shared secrets (coturn's ``use-auth-secret``). Every stored
  secret is valid at once, so rotation is: add the new one, let the web
  service switch, remove the old one when its last usernames have expired.
  The secrets themselves are stored in the clear: the server needs them to
  compute the HMAC.

:class:`StoreCredentials` is a :class:`~natkit.turn.credentials.CredentialSource`
for the sans-IO server. The core asks it synchronously, so it answers from an
in-memory mirror of the store (users as :class:`StaticCredentials`, secrets as
:class:`RestCredentials`), rebuilt by :meth:`StoreCredentials.refresh` (which a
driver calls every few seconds, :meth:`StoreCredentials.keep_fresh`). A user
added or removed with ``natkit turn user ...`` takes effect on every server
sharing the store within one refresh interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets as _secrets
from dataclasses import dataclass

from natkit.store.base import Document, Store, StoreError
from natkit.stun.constants import PasswordAlgorithm
from natkit.stun.credentials import long_term_key
from natkit.turn.credentials import (
    CombinedCredentials,
    CredentialSource,
    RestCredentials,
    StaticCredentials,
)

__all__ = [
    "REFRESH_INTERVAL",
    "StoreCredentials",
    "StoredSecret",
    "add_secret",
    "add_user",
    "find_secret",
    "list_secrets",
    "list_users",
    "remove_secret",
    "remove_user",
    "secret_id",
    "secrets_namespace",
    "users_namespace",
]

logger = logging.getLogger(__name__)
logger.addHandler(logging.NullHandler())

REFRESH_INTERVAL = 5.0
"""Seconds between two reloads of users and secrets by :meth:`StoreCredentials.keep_fresh`."""

_FIELDS = {PasswordAlgorithm.MD5: "md5", PasswordAlgorithm.SHA256: "sha256"}
_KEY_SIZES = {PasswordAlgorithm.MD5: 16, PasswordAlgorithm.SHA256: 32}


def users_namespace(realm: str) -> str:
    return f"turn/users/{realm}"


def secrets_namespace(realm: str) -> str:
    return f"turn/secrets/{realm}"


def _check(realm: str, what: str, value: str) -> None:
    if not realm:
        raise ValueError("a TURN realm is a non-empty string")
    if not value:
        raise ValueError(f"a TURN {what} is a non-empty string")


def user_document(user: str, realm: str, password: str) -> Document:
    """The stored form of a user: both long-term keys, hex (``ValueError`` if the
    password is not allowed by OpaqueString, RFC 8265 §4.2)."""
    return {
        field: long_term_key(user, realm, password, alg).hex() for alg, field in _FIELDS.items()
    }


def _user_keys(name: str, doc: Document) -> dict[PasswordAlgorithm, bytes] | None:
    keys: dict[PasswordAlgorithm, bytes] = {}
    for alg, field in _FIELDS.items():
        text = doc.get(field)
        if text is None:
            continue
        try:
            key = bytes.fromhex(text) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) != _KEY_SIZES[alg]:
            logger.warning("TURN user %r: ignoring a malformed %s key in the store", name, field)
            continue
        keys[alg] = key
    return keys or None


async def add_user(store: Store, realm: str, user: str, password: str) -> bool:
    """Store ``user``'s keys in ``realm`` (replacing an older password); True if new."""
    _check(realm, "username", user)
    doc = user_document(user, realm, password)
    ns = users_namespace(realm)
    existed = await store.get(ns, user) is not None
    await store.put(ns, user, doc)
    return not existed


async def remove_user(store: Store, realm: str, user: str) -> bool:
    """Remove ``user`` from ``realm``; True if it was there."""
    _check(realm, "username", user)
    return await store.delete(users_namespace(realm), user)


async def list_users(store: Store, realm: str) -> list[str]:
    """The users of ``realm``, sorted."""
    _check(realm, "username", "-")
    return sorted(await store.scan(users_namespace(realm)))


@dataclass(frozen=True, slots=True)
class StoredSecret:
    """A REST API shared secret as the store keeps it."""

    id: str
    secret: str
    label: str | None
    created: float

    def to_json(self, *, reveal: bool = False) -> Document:
        return {
            "id": self.id,
            "secret": self.secret if reveal else None,
            "label": self.label,
            "created": self.created,
        }


def secret_id(secret: str) -> str:
    """The id older natkit derived from a secret (12 hex digits of its SHA-256).
    No longer a secret's name in the store: :func:`add_secret` draws a random
    id, and :func:`find_secret` finds a secret by value or by id."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]


def _new_secret_id() -> str:
    return _secrets.token_hex(6)


def _stored_secret(key: str, doc: Document) -> StoredSecret | None:
    secret, label, created = doc.get("secret"), doc.get("label"), doc.get("created", 0.0)
    if not isinstance(secret, str) or not secret:
        logger.warning("TURN REST secret %s: no secret in the stored document, ignored", key)
        return None
    return StoredSecret(
        key,
        secret,
        label if isinstance(label, str) else None,
        float(created) if isinstance(created, int | float) else 0.0,
    )


async def add_secret(
    store: Store, realm: str, secret: str, *, label: str | None = None, ttl: float | None = None
) -> StoredSecret:
    """Add a REST secret to ``realm`` (adding one again only relabels it); with
    ``ttl`` it disappears by itself after ``ttl`` seconds."""
    _check(realm, "REST secret", secret)
    existing = await _find_by_value(store, realm, secret)
    sid = existing.id if existing is not None else _new_secret_id()
    stored = StoredSecret(sid, secret, label, store.clock())
    await store.put(
        secrets_namespace(realm),
        sid,
        {"secret": secret, "label": label, "created": stored.created},
        ttl,
    )
    return stored


async def _find_by_value(store: Store, realm: str, secret: str) -> StoredSecret | None:
    wanted = secret.encode("utf-8")
    for stored in await list_secrets(store, realm):
        if hmac.compare_digest(stored.secret.encode("utf-8"), wanted):
            return stored
    return None


async def find_secret(store: Store, realm: str, secret_or_id: str) -> StoredSecret | None:
    """The REST secret of ``realm`` named by its id, or else by its value."""
    _check(realm, "REST secret", secret_or_id)
    doc = await store.get(secrets_namespace(realm), secret_or_id)
    if doc is not None and (stored := _stored_secret(secret_or_id, doc)) is not None:
        return stored
    return await _find_by_value(store, realm, secret_or_id)


async def remove_secret(store: Store, realm: str, secret_or_id: str) -> bool:
    """Remove a REST secret of ``realm``, named by itself or by its id; True if found."""
    stored = await find_secret(store, realm, secret_or_id)
    if stored is None:
        return False
    return await store.delete(secrets_namespace(realm), stored.id)


async def list_secrets(store: Store, realm: str) -> list[StoredSecret]:
    """The REST secrets of ``realm``, oldest first."""
    _check(realm, "REST secret", "-")
    found = [
        stored
        for key, doc in (await store.scan(secrets_namespace(realm))).items()
        if (stored := _stored_secret(key, doc)) is not None
    ]
    return sorted(found, key=lambda s: (s.created, s.id))


class StoreCredentials(CredentialSource):
    """Users and REST secrets of one realm, mirrored from a store.

    Create with :meth:`load`; the mirror changes only in :meth:`refresh`,
    which replaces it whole (a request is checked against one consistent
    snapshot). A failed refresh raises :class:`StoreError` and keeps the
    previous mirror, so a store outage does not lock users out.
    """

    def __init__(self, store: Store, realm: str, *, separator: str = ":") -> None:
        self.store = store
        self.realm = realm
        self.separator = separator
        self.users = StaticCredentials({}, realm)
        self.rest = RestCredentials((), realm, separator=separator)
        self._source = CombinedCredentials((self.users, self.rest))
        self._users_docs: dict[str, Document] = {}
        self.refreshes = 0

    @classmethod
    async def load(cls, store: Store, realm: str, *, separator: str = ":") -> StoreCredentials:
        """Read ``realm``'s users and secrets from ``store``."""
        source = cls(store, realm, separator=separator)
        await source.refresh()
        return source

    async def refresh(self) -> None:
        """Reload users and secrets from the store (rebuilding only what changed:
        10k users cost ~60 ms of key parsing and USERHASHes to rebuild)."""
        users_docs = await self.store.scan(users_namespace(self.realm))
        secrets = tuple(s.secret for s in await list_secrets(self.store, self.realm))
        users, rest = self.users, self.rest
        if users_docs != self._users_docs:
            keys = {
                name: by_alg
                for name, doc in users_docs.items()
                if (by_alg := _user_keys(name, doc)) is not None
            }
            users = StaticCredentials(keys, self.realm)
            self._users_docs = users_docs
        if secrets != rest.secrets:
            rest = RestCredentials(secrets, self.realm, separator=self.separator)
        self.users, self.rest = users, rest
        self._source = CombinedCredentials((users, rest))
        self.refreshes += 1

    async def keep_fresh(self, interval: float = REFRESH_INTERVAL) -> None:
        """Refresh every ``interval`` seconds until cancelled; failures are logged
        (once per outage) and the previous mirror kept."""
        failing = False
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except StoreError as exc:
                if not failing:
                    logger.warning("TURN credentials: cannot refresh from %s: %s", self.store, exc)
                failing = True
            else:
                if failing:
                    logger.warning("TURN credentials: %s reachable again", self.store)
                failing = False

    def keys(
        self, username: str, algorithm: PasswordAlgorithm, *, wallclock: float
    ) -> tuple[bytes, ...]:
        return self._source.keys(username, algorithm, wallclock=wallclock)

    def username_for_hash(self, digest: bytes) -> str | None:
        return self._source.username_for_hash(digest)

    def resolves_every_userhash(self) -> bool:
        """No while the mirror holds REST secrets (their users cannot be found
        by USERHASH); asked at every challenge, so a refresh that adds or
        removes the last secret changes what the next nonce announces."""
        return self._source.resolves_every_userhash()

    def quota_user(self, username: str) -> str:
        return self._source.quota_user(username)
