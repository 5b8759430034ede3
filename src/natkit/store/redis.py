"""The Redis store: several servers sharing one view (``redis://HOST:PORT/DB``).

Every entry is one Redis hash at ``<prefix>:<ns>:<key>`` (prefix ``natkit``
unless the URL says ``?prefix=...``; ``%`` and ``:`` in the namespace are
percent-encoded so that keys stay unambiguous). Fields:

* ``v``: the document's JSON text, or ``n``: the counter's value;
* ``x``: the Unix time it expires at, when it has a TTL.

An entry with a TTL also carries Redis's own expiry (``PEXPIRE``), so Redis
removes it without help; ``x`` lets every reader agree with the store's
injected clock (and with the other two backends) to the second, whatever
Redis's own clock says. Increments and conditional deletes are Lua scripts,
so they are atomic among any number of servers. :meth:`RedisStore.scan`
walks keys with ``SCAN`` (never ``KEYS``, which blocks the server) and reads
each batch of keys with one short script (one reply per batch: parsing
replies is what costs in redis-py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from natkit.store.base import (
    Clock,
    Document,
    Store,
    StoreError,
    check_amount,
    check_name,
    decode_document,
    encode_document,
)

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

DEFAULT_PREFIX = "natkit"
CONNECT_TIMEOUT = 5.0
"""Seconds to connect, and to wait for any one reply, unless the URL sets
``socket_connect_timeout`` / ``socket_timeout``."""
SCAN_BATCH = 500

_NOT_COUNTER = "NATKIT_NOT_COUNTER"

# KEYS[1] the entry; ARGV: amount, now, expires ('' for none), ttl in ms.
_INCR = """
local t = redis.call('HMGET', KEYS[1], 'v', 'n', 'x')
if t[3] and tonumber(t[3]) <= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
  t = {false, false, false}
end
if t[1] then return redis.error_reply('NATKIT_NOT_COUNTER') end
local n = redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])
if not t[2] and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'x', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return n
"""

# KEYS[1] the entry; ARGV[1] now. 1 if a live entry was deleted.
_DELETE = """
local x = redis.call('HGET', KEYS[1], 'x')
local n = redis.call('DEL', KEYS[1])
if n == 1 and x and tonumber(x) <= tonumber(ARGV[1]) then return 0 end
return n
"""


# KEYS: a batch of entries. Returns v1, x1, v2, x2, ... (nil where absent or not a hash):
# one reply per batch instead of one per key, which is what makes a scan fast in redis-py.
_READ = """
local out = {}
for i, name in ipairs(KEYS) do
  local t = redis.pcall('HMGET', name, 'v', 'x')
  if type(t) == 'table' and t.err == nil then
    out[2 * i - 1] = t[1]
    out[2 * i] = t[2]
  else
    out[2 * i - 1] = false
    out[2 * i] = false
  end
end
return out
"""


def _escape_ns(ns: str) -> str:
    return ns.replace("%", "%25").replace(":", "%3A")


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def split_redis_url(url: str) -> tuple[str, str, str]:
    """``(url for redis-py, key prefix, url without password for display)``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise StoreError(f"bad redis URL: {exc}") from exc
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise StoreError(f"bad redis URL: the database is a number (HOST:PORT/0), not {db!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    rest = []
    for name, value in query:
        if name == "prefix":
            if not value or ":" in value:
                raise StoreError(f"redis URL: prefix must be non-empty without ':', not {value!r}")
            prefix = value
        else:
            rest.append((name, value))
    client_url = urlunsplit(parts._replace(query=urlencode(rest)))
    # redis-py also takes secrets as query arguments (?password=, ?ssl_password=).
    masked = _mask_query(parts.query)
    if parts.password is None:
        if masked == parts.query:
            return client_url, prefix, url
        head, _, tail = url.partition("?")  # (urlunsplit would turn unix:/// into unix:/)
        return client_url, prefix, f"{head}?{masked}{''.join(tail.partition('#')[1:])}"
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if port is not None:
        netloc += f":{port}"
    netloc = f"{parts.username or ''}:***@{netloc}"
    return client_url, prefix, urlunsplit(parts._replace(netloc=netloc, query=masked))


def _mask_query(query: str) -> str:
    """``query`` with the value of every argument whose name holds "password" as ``***``."""
    pieces = query.split("&") if query else []
    for i, piece in enumerate(pieces):
        name, sep, _ = piece.partition("=")
        if sep and "password" in unquote_plus(name).lower():
            pieces[i] = f"{name}=***"
    return "&".join(pieces)


class RedisStore(Store):
    """Entries in Redis (``redis.asyncio``). Open with :meth:`open` (or :func:`open_store`)."""

    def __init__(
        self, client: aioredis.Redis, *, prefix: str, url: str, clock: Clock = time.time
    ) -> None:
        super().__init__(clock=clock)
        self.client = client
        self.prefix = prefix
        self.url = url
        self._closed = False
        self._incr = client.register_script(_INCR)
        self._delete = client.register_script(_DELETE)
        self._read = client.register_script(_READ)

    @classmethod
    async def open(cls, url: str, *, clock: Clock = time.time) -> RedisStore:
        """Connect to ``url`` and check that Redis answers (``PING``)."""
        client_url, prefix, shown = split_redis_url(url)
        query = dict(parse_qsl(urlsplit(url).query))
        options: dict[str, Any] = {"decode_responses": True}
        if "socket_connect_timeout" not in query:
            options["socket_connect_timeout"] = CONNECT_TIMEOUT
        if "socket_timeout" not in query:
            options["socket_timeout"] = CONNECT_TIMEOUT
        try:
            client = aioredis.Redis.from_url(client_url, **options)
        except (ValueError, TypeError, RedisError) as exc:
            raise StoreError(f"bad redis URL {shown}: {exc}") from exc
        store = cls(client, prefix=prefix, url=shown, clock=clock)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await store.close()
            raise StoreError(f"cannot reach redis at {shown}: {exc}") from exc
        except BaseException:
            await store.close()
            raise
        return store

    def key(self, ns: str, key: str) -> str:
        """The Redis key of ``ns``/``key``."""
        return f"{self.prefix}:{_escape_ns(ns)}:{key}"

    def _fail(self, exc: Exception) -> StoreError:
        return StoreError(f"redis at {self.url}: {exc}")

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.url} is closed")

    async def get(self, ns: str, key: str) -> Document | None:
        check_name(ns, key)
        self._check_open()
        try:
            doc, count, expires = await self.client.hmget(self.key(ns, key), ["v", "n", "x"])
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
        if expires is not None and float(expires) <= self.clock():
            return None
        if doc is None:
            if count is not None:
                raise StoreError(f"{ns}/{key} holds a counter, not a document")
            return None
        return decode_document(doc, f"{ns}/{key}")

    async def put(
        self, ns: str, key: str, value: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        check_name(ns, key)
        self._check_open()
        text = encode_document(value)
        expires = self._expiry(ttl)
        name = self.key(ns, key)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.delete(name)
                pipe.hset(name, "v", text)
                if ttl is not None and expires is not None:
                    pipe.hset(name, "x", repr(expires))
                    pipe.pexpire(name, _ttl_ms(ttl))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc

    async def delete(self, ns: str, key: str) -> bool:
        check_name(ns, key)
        self._check_open()
        try:
            result = await self._delete(keys=[self.key(ns, key)], args=[repr(self.clock())])
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
        return bool(int(result))

    async def scan(self, ns: str) -> dict[str, Document]:
        check_name(ns)
        self._check_open()
        head = f"{self.prefix}:{_escape_ns(ns)}:"
        out: dict[str, Document] = {}
        try:
            batch: list[str] = []
            async for name in self.client.scan_iter(
                match=_glob_escape(head) + "*", count=SCAN_BATCH
            ):
                batch.append(name)
                if len(batch) >= SCAN_BATCH:
                    await self._read_batch(batch, head, ns, out)
                    batch = []
            if batch:
                await self._read_batch(batch, head, ns, out)
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
        return out

    async def _read_batch(
        self, names: list[str], head: str, ns: str, out: dict[str, Document]
    ) -> None:
        flat = await self._read(keys=names)
        now = self.clock()
        for index, name in enumerate(names):
            doc, expires = flat[2 * index], flat[2 * index + 1]
            if doc is None or (expires is not None and float(expires) <= now):
                continue  # a counter, expired, gone since SCAN, or not one of ours
            key = name[len(head) :]
            out[key] = decode_document(doc, f"{ns}/{key}")

    async def incr(self, ns: str, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_name(ns, key)
        check_amount(amount)
        self._check_open()
        expires = self._expiry(ttl)
        args = [
            str(amount),
            repr(self.clock()),
            "" if expires is None else repr(expires),
            "" if ttl is None else str(_ttl_ms(ttl)),
        ]
        try:
            result = await self._incr(keys=[self.key(ns, key)], args=args)
        except ResponseError as exc:
            if _NOT_COUNTER in str(exc):
                raise StoreError(f"{ns}/{key} holds a document, not a counter") from exc
            raise self._fail(exc) from exc
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
        return int(result)

    async def purge(self) -> int:
        """Redis expires entries itself."""
        return 0

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.client.aclose()
        except (RedisError, OSError) as exc:
            raise self._fail(exc) from exc
