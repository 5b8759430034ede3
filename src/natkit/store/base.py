"""The store interface: namespaced JSON documents and counters, with TTLs.

State that must outlive a process, or be shared by several servers (TURN
users and REST secrets, SIP registrations, quotas), is kept behind this one
small async interface (DESIGN.md principle 4). Three backends implement it:
:class:`~natkit.store.memory.MemoryStore` (tests, single process),
:class:`~natkit.store.sqlite.SqliteStore` (the embedded default) and
:class:`~natkit.store.redis.RedisStore` (several servers sharing one view).

Model: a *namespace* (any non-empty string, e.g. ``turn/users/example.org``)
holds *entries* by *key* (any non-empty string). An entry is either a
*document* (a JSON object, :meth:`Store.put` / :meth:`Store.get`) or a
*counter* (an integer, :meth:`Store.incr`); keep counters in namespaces of
their own, :meth:`Store.scan` lists documents only. An entry may carry a TTL:
it expires ``ttl`` seconds after it was written (a counter: after it was
created), by the store's injected wall clock ``clock`` (``time.time`` unless
given; tests pass a fake one and never sleep). Expired entries are invisible
at once and removed lazily (Redis: natively, with the same TTL).

Documents are copied through JSON on the way in and out: what :meth:`get`
returns is never the caller's object, tuples come back as lists.

Every failure of the backend (unreachable Redis, locked or corrupt SQLite
file, an entry of the wrong kind) raises :class:`StoreError`. ``StoreError``
lives here, not in :mod:`natkit.errors`, and derives from ``NatkitError``.
Arguments that can never be valid (an empty namespace, ``ttl <= 0``, a value
that is not a JSON object) raise ``ValueError``/``TypeError`` as usual.
"""

from __future__ import annotations

import abc
import json
import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from natkit.errors import NatkitError

__all__ = ["Clock", "Document", "Store", "StoreError"]

Clock = Callable[[], float]
"""A wall clock: Unix time in seconds (``time.time``)."""

Document = dict[str, Any]
"""A JSON object as Python sees it."""


class StoreError(NatkitError):
    """The store failed: unreachable, unwritable, corrupt, or an entry of the wrong kind."""


class Store(abc.ABC):
    """Namespaced JSON documents and integer counters with optional TTLs."""

    url: str
    """Where the data lives, as :func:`natkit.store.open_store` takes it (no password)."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock

    @abc.abstractmethod
    async def get(self, ns: str, key: str) -> Document | None:
        """The document at ``ns``/``key``, or None if absent or expired."""

    @abc.abstractmethod
    async def put(
        self, ns: str, key: str, value: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        """Store ``value`` (a JSON object) at ``ns``/``key``, replacing whatever was
        there; with ``ttl``, it expires ``ttl`` seconds from now (by ``clock``)."""

    @abc.abstractmethod
    async def delete(self, ns: str, key: str) -> bool:
        """Remove ``ns``/``key``; True if a live entry was there."""

    @abc.abstractmethod
    async def scan(self, ns: str) -> dict[str, Document]:
        """Every live document of ``ns`` by key (counters are left out)."""

    @abc.abstractmethod
    async def incr(self, ns: str, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter at ``ns``/``key`` atomically (a missing or
        expired counter starts at 0) and return the new value. ``ttl`` applies
        when the counter is created and is kept by later increments: a
        fixed-window quota. ``StoreError`` if the key holds a document."""

    @abc.abstractmethod
    async def purge(self) -> int:
        """Remove expired entries now; returns how many (Redis: 0, it expires natively)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the backend (idempotent)."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    # -- helpers shared by the backends ----------------------------------------------

    def _expiry(self, ttl: float | None) -> float | None:
        if ttl is None:
            return None
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        return self.clock() + float(ttl)


def check_name(ns: str, key: str | None = None) -> None:
    """Namespaces and keys are non-empty strings."""
    if not isinstance(ns, str) or not ns:
        raise ValueError(f"a store namespace is a non-empty string, not {ns!r}")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError(f"a store key is a non-empty string, not {key!r}")


def encode_document(value: Mapping[str, Any]) -> str:
    """``value`` as compact JSON; ``TypeError`` if it is not a JSON object."""
    if not isinstance(value, Mapping):
        raise TypeError(f"a store document is a JSON object (a mapping), not {type(value)}")
    try:
        return json.dumps(dict(value), separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise TypeError(f"a store document must be JSON: {exc}") from exc


def decode_document(text: str | bytes, where: str) -> Document:
    """Parse a stored document; ``StoreError`` if it is not a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StoreError(f"{where}: stored value is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{where}: stored value is not a JSON object")
    return value


def check_amount(amount: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError(f"a counter increment is an int, not {amount!r}")
