"""The SQLite store: the embedded default (``sqlite:PATH``).

One table, ``entries(ns, key, doc, count, expires)``, in a file opened in WAL
mode so that readers (a TURN server refreshing its users) never block a
writer (``natkit turn user add`` in another process) and vice versa; writers
wait up to :data:`BUSY_TIMEOUT` for each other. The file is created with
mode 0600 (it holds REST secrets), its directory with 0700 if missing.
aiosqlite runs the stdlib ``sqlite3`` connection on a thread of its own, so
the event loop never waits for the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiosqlite

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

__all__ = ["BUSY_TIMEOUT", "SCHEMA_VERSION", "SqliteStore"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 5.0
"""Seconds a statement waits for another process's write lock before failing."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    doc TEXT,               -- JSON object; NULL for a counter
    count INTEGER NOT NULL DEFAULT 0,
    expires REAL,           -- Unix time; NULL: never
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires) WHERE expires IS NOT NULL;
"""


class SqliteStore(Store):
    """Entries in one SQLite file. Open with :meth:`open` (or :func:`open_store`)."""

    def __init__(self, path: Path, conn: aiosqlite.Connection, *, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.path = path
        self.url = f"sqlite:{path}"
        self._conn: aiosqlite.Connection | None = conn
        self._lock = asyncio.Lock()
        self.journal_mode = ""
        """What SQLite granted for ``PRAGMA journal_mode = WAL`` (``wal`` on a local disk)."""

    @classmethod
    async def open(cls, path: str | Path, *, clock: Clock = time.time) -> SqliteStore:
        """Open (creating if needed) the store file at ``path``."""
        path = Path(path).expanduser()
        try:
            if not path.parent.exists():
                path.parent.mkdir(mode=0o700, parents=True)
            if not path.exists():
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError as exc:
            raise StoreError(f"cannot create the SQLite store {path}: {exc.strerror}") from exc
        conn: aiosqlite.Connection | None = None
        try:
            conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
            await conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            mode = await conn.execute_fetchall("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            (version,) = next(iter(await conn.execute_fetchall("PRAGMA user_version")))
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{path} was written by a newer natkit (schema {version} > {SCHEMA_VERSION})"
                )
            await conn.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                await conn.close()
            raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
        except BaseException:
            if conn is not None:
                await conn.close()
            raise
        store = cls(path, conn, clock=clock)
        store.journal_mode = str(next(iter(mode))[0])
        return store

    def _db(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreError(f"{self.url} is closed")
        return self._conn

    async def _rows(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        try:
            async with self._lock:
                return list(await self._db().execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    async def _exec(self, sql: str, params: tuple[Any, ...]) -> int:
        try:
            async with self._lock:
                cursor = await self._db().execute(sql, params)
                count = cursor.rowcount
                await cursor.close()
                return count
        except sqlite3.Error as exc:
            raise StoreError(f"{self.url}: {exc}") from exc

    async def get(self, ns: str, key: str) -> Document | None:
        check_name(ns, key)
        rows = await self._rows(
            "SELECT doc FROM entries WHERE ns = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (ns, key, self.clock()),
        )
        if not rows:
            return None
        (doc,) = rows[0]
        if doc is None:
            raise StoreError(f"{ns}/{key} holds a counter, not a document")
        return decode_document(doc, f"{ns}/{key}")

    async def put(
        self, ns: str, key: str, value: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        check_name(ns, key)
        text = encode_document(value)
        await self._exec(
            "INSERT OR REPLACE INTO entries (ns, key, doc, count, expires) VALUES (?, ?, ?, 0, ?)",
            (ns, key, text, self._expiry(ttl)),
        )

    async def delete(self, ns: str, key: str) -> bool:
        check_name(ns, key)
        live = await self._exec(
            "DELETE FROM entries WHERE ns = ? AND key = ? AND (expires IS NULL OR expires > ?)",
            (ns, key, self.clock()),
        )
        return live > 0

    async def scan(self, ns: str) -> dict[str, Document]:
        check_name(ns)
        now = self.clock()
        await self._exec("DELETE FROM entries WHERE ns = ? AND expires <= ?", (ns, now))
        rows = await self._rows(
            "SELECT key, doc FROM entries WHERE ns = ? AND doc IS NOT NULL"
            " AND (expires IS NULL OR expires > ?)",
            (ns, now),
        )
        return {key: decode_document(doc, f"{ns}/{key}") for key, doc in rows}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction: BEGIN IMMEDIATE, COMMIT when the block ends,
        ROLLBACK (and re-raise) on any exception. It holds the store's lock,
        so no other statement joins it; SQLite errors become StoreError."""
        async with self._lock:
            db = self._db()
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{self.url}: {exc}") from exc

    async def incr(self, ns: str, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_name(ns, key)
        check_amount(amount)
        expires = self._expiry(ttl)
        async with self.transaction() as db:
            rows = list(
                await db.execute_fetchall(
                    "SELECT doc, count, expires FROM entries WHERE ns = ? AND key = ?",
                    (ns, key),
                )
            )
            now = self.clock()
            if rows and (rows[0][2] is None or rows[0][2] > now):
                doc, count, expires = rows[0]
                if doc is not None:
                    raise StoreError(f"{ns}/{key} holds a document, not a counter")
            else:
                count = 0
            count += amount
            await db.execute(
                "INSERT OR REPLACE INTO entries (ns, key, doc, count, expires)"
                " VALUES (?, ?, NULL, ?, ?)",
                (ns, key, count, expires),
            )
        return int(count)

    async def purge(self) -> int:
        return await self._exec(
            "DELETE FROM entries WHERE expires IS NOT NULL AND expires <= ?", (self.clock(),)
        )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.url}: {exc}") from exc
