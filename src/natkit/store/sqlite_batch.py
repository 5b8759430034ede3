"""Group commit of read-modify-write updates on the SQLite store.

:meth:`natkit.sip.location.LocationService.update` on SQLite must read an
AoR, compute its changes and write them in one ``BEGIN IMMEDIATE``
transaction (atomic per AoR across tasks and processes). Done one REGISTER
at a time that is four statements, each a hop to aiosqlite's thread and back
(``BEGIN``, ``SELECT``, ``INSERT``, ``COMMIT``): the SQLite server did ~400
digest REGISTERs a second, most of it waiting for those hops.

:class:`SqliteGroupCommit` queues the updates that arrive while a
transaction is running and runs them together in the next one: ``BEGIN
IMMEDIATE``, one ``SELECT`` of every queued key, each computation in arrival
order on the event loop (a second update of the same key sees the first
one's result), one ``executemany`` of the writes, one of the deletions,
``COMMIT``. Each caller's ``await`` returns only once its change is
committed; semantics are those of one transaction per update, in arrival
order. A computation that raises fails its own update only; a failed
statement rolls the whole batch back and fails every update in it with
:class:`~natkit.store.StoreError`.

A computation gets the key's live document (or None) and returns ``(write,
value)``: ``write`` is :data:`UNCHANGED`, ``None`` (delete the entry) or
``(document, expires)`` (Unix time, or None for no expiry); ``value`` goes
back to the caller. It must not change the document it is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from natkit.store.base import Document, StoreError, decode_document, encode_document

if TYPE_CHECKING:
    from natkit.store.sqlite import SqliteStore

__all__ = ["MAX_BATCH", "UNCHANGED", "SqliteGroupCommit"]

MAX_BATCH = 256
"""Updates per transaction at most (SQLite's host-parameter limit is far above)."""

UNCHANGED: Final = object()
"""What a computation returns as ``write`` to leave the entry as it is."""

Compute = Callable[[Document | None], tuple[Any, Any]]


class _Update:
    __slots__ = ("compute", "future", "key")

    def __init__(self, key: str, compute: Compute, future: asyncio.Future[Any]) -> None:
        self.key = key
        self.compute = compute
        self.future = future


class SqliteGroupCommit:
    """Batches :meth:`update` calls on one namespace into shared transactions."""

    def __init__(self, store: SqliteStore, namespace: str) -> None:
        self._store = store
        self._ns = namespace
        self._queue: list[_Update] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions run so far (tests and metrics: updates per transaction)."""

    async def update(self, key: str, compute: Compute) -> Any:
        """Queue one read-compute-write of ``key``; return the computation's
        ``value`` once the write is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Update(key, compute, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # A cancelled caller leaves its update queued: it is written all the
        # same (as a request already sent), and nobody waits for the answer.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._run(batch)
            except BaseException as exc:
                error = (
                    exc
                    if isinstance(exc, StoreError)
                    else StoreError(f"{self._store.url}: update failed: {exc!r}")
                )
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(error)
                if not isinstance(exc, Exception):  # cancelled: fail what is still queued
                    for item in self._queue:
                        if not item.future.done():
                            item.future.set_exception(StoreError(f"{self._store.url} closed"))
                    self._queue = []
                    raise

    async def _run(self, batch: list[_Update]) -> None:
        store = self._store
        ns = self._ns
        results: list[tuple[_Update, Any, BaseException | None]] = []
        async with store.transaction() as db:
            keys = list(dict.fromkeys(item.key for item in batch))
            marks = ",".join("?" * len(keys))
            rows = await db.execute_fetchall(
                f"SELECT key, doc FROM entries WHERE ns = ? AND key IN ({marks})"
                " AND (expires IS NULL OR expires > ?)",
                (ns, *keys, store.clock()),
            )
            current: dict[str, Document | None] = dict.fromkeys(keys)
            for key, doc in rows:
                current[key] = decode_document(doc, f"{ns}/{key}") if doc else None
            pending: dict[str, Any] = {}  # key -> the batch's last write
            for item in batch:
                try:
                    write, value = item.compute(current[item.key])
                except Exception as exc:  # the computation's own failure
                    results.append((item, None, exc))
                    continue
                if write is not UNCHANGED:
                    current[item.key] = None if write is None else write[0]
                    pending[item.key] = write
                results.append((item, value, None))
            writes = [
                (ns, key, encode_document(w[0]), w[1])
                for key, w in pending.items()
                if w is not None
            ]
            deletes = [(ns, key) for key, w in pending.items() if w is None]
            if writes:
                await db.executemany(
                    "INSERT OR REPLACE INTO entries (ns, key, doc, count, expires)"
                    " VALUES (?, ?, ?, 0, ?)",
                    writes,
                )
            if deletes:
                await db.executemany("DELETE FROM entries WHERE ns = ? AND key = ?", deletes)
        self.transactions += 1
        for item, value, error in results:
            if item.future.done():
                continue
            if error is not None:
                item.future.set_exception(error)
            else:
                item.future.set_result(value)
