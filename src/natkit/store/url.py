"""Store URLs: ``memory:``, ``sqlite:PATH``, ``redis://HOST:PORT/DB``.

* ``memory:``: this process only, gone when it exits.
* ``sqlite:PATH`` (also ``sqlite:///ABSOLUTE/PATH``): a file; ``sqlite:``
  alone is the default file :func:`default_sqlite_path`.
* ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P]``, ``rediss://``
  (TLS) and ``unix:///PATH/redis.sock?db=N``: a Redis server, keys under
  ``P:`` (default ``natkit:``); other query options go to redis-py.

The default, when neither ``--store`` nor ``$NATKIT_STORE`` says otherwise,
is :func:`default_store_url`: ``sqlite:`` at
``$XDG_STATE_HOME/natkit/natkit.db`` (``~/.local/state/natkit/natkit.db``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from natkit.store.base import Clock, Store, StoreError

__all__ = [
    "STORE_ENV",
    "StoreUrl",
    "default_sqlite_path",
    "default_store_url",
    "open_store",
    "parse_store_url",
]

STORE_ENV = "NATKIT_STORE"
"""The environment variable naming the store when no ``--store`` is given."""

_REDIS_SCHEMES = ("redis", "rediss", "unix")


def default_sqlite_path() -> Path:
    """``$XDG_STATE_HOME/natkit/natkit.db``, or ``~/.local/state/natkit/natkit.db``."""
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local/state"
    return base / "natkit" / "natkit.db"


def default_store_url() -> str:
    """``$NATKIT_STORE`` if set, else ``sqlite:`` at :func:`default_sqlite_path`."""
    return os.environ.get(STORE_ENV) or f"sqlite:{default_sqlite_path()}"


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A parsed store URL: ``kind`` is ``memory``, ``sqlite`` or ``redis``."""

    kind: str
    path: Path | None = None
    url: str = ""


_USERINFO_PASSWORD = re.compile(r":[^:/@]*@")
_QUERY_PASSWORD = re.compile(r"([?&][^=&]*password[^=&]*=)[^&]*", re.IGNORECASE)


def masked(url: str) -> str:
    """``url`` with any password in it (``user:PASSWORD@``, ``?password=``) hidden,
    for messages: an operator's typo must not print a secret into a log."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(":***@", url))


def parse_store_url(url: str) -> StoreUrl:
    """Check ``url`` without opening anything; ``StoreError`` says what is wrong
    (naming the URL with its password hidden)."""
    try:
        return _parse(url)
    except StoreError as exc:
        raise StoreError(str(exc).replace(repr(url), repr(masked(url)))) from None


def _parse(url: str) -> StoreUrl:
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise StoreError(
            f"{url!r} is not a store URL: use memory:, sqlite:PATH or redis://HOST:PORT/DB"
        )
    if scheme == "memory":
        if rest:
            raise StoreError(f"{url!r}: memory: takes nothing after the colon")
        return StoreUrl("memory")
    if scheme == "sqlite":
        if rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            if authority not in ("", "localhost") or not slash:
                raise StoreError(f"{url!r}: use sqlite:PATH or sqlite:///ABSOLUTE/PATH")
            rest = "/" + path
        return StoreUrl("sqlite", Path(rest).expanduser() if rest else default_sqlite_path())
    if scheme in _REDIS_SCHEMES:
        if not rest.startswith("//"):
            raise StoreError(f"{url!r}: use redis://HOST:PORT/DB")
        return StoreUrl("redis", url=url)
    raise StoreError(
        f"unknown store {scheme!r} in {url!r}: use memory:, sqlite:PATH or redis://HOST:PORT/DB"
    )


async def open_store(url: str, *, clock: Clock = time.time) -> Store:
    """Open the store at ``url`` (connecting to Redis, creating a SQLite file).

    ``StoreError`` if the URL is wrong or the backend cannot be reached.
    """
    parsed = parse_store_url(url)
    if parsed.kind == "memory":
        from natkit.store.memory import MemoryStore

        return MemoryStore(clock=clock)
    if parsed.kind == "sqlite":
        from natkit.store.sqlite import SqliteStore

        return await SqliteStore.open(parsed.path or default_sqlite_path(), clock=clock)
    from natkit.store.redis import RedisStore

    return await RedisStore.open(parsed.url, clock=clock)
