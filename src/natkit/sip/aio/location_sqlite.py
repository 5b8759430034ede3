"""Group commit of location updates on the SQLite store.

:meth:`natkit.sip.location.LocationService.update` on SQLite must read an
AoR, compute its changes and write them in one ``BEGIN IMMEDIATE``
transaction (atomic per AoR across tasks and processes). Done one REGISTER
at a time that is four statements, each a hop to aiosqlite's thread and back
(``BEGIN``, ``SELECT``, ``INSERT``, ``COMMIT``): the SQLite server did ~400
digest REGISTERs a second, most of it waiting for those hops.

:class:`SqliteGroupCommit` queues the updates that arrive while a
transaction is running and runs them together in the next one: ``BEGIN
IMMEDIATE``, one ``SELECT`` of every queued AoR, each computation in arrival
order on the event loop (a second update of the same AoR sees the first
one's result), one ``executemany`` of the writes, one of the deletions,
``COMMIT``. Each caller's ``await`` returns only once its change is
committed, so a 200 OK still means the binding is on disk; semantics are
those of one transaction per update, in arrival order. A computation that
raises fails its own update only; a failed statement rolls the whole batch
back and fails every update in it with :class:`~natkit.store.StoreError`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from natkit.store import StoreError
from natkit.store.base import decode_document, encode_document

if TYPE_CHECKING:
    from natkit.sip.registrar import Binding, BindingChanges
    from natkit.store.sqlite import SqliteStore

__all__ = ["MAX_BATCH", "SqliteGroupCommit"]

MAX_BATCH = 256
"""Updates per transaction at most (SQLite's host-parameter limit is far above)."""

Decode = Callable[[dict[str, Any] | None, float], "tuple[Binding, ...]"]
Encode = Callable[["tuple[Binding, ...]"], "tuple[dict[str, Any], float] | None"]
Compute = Callable[["tuple[Binding, ...]"], "tuple[BindingChanges, Any]"]
Result = tuple["tuple[Binding, ...]", Any, "BindingChanges"]


class _Update:
    __slots__ = ("aor", "compute", "future")

    def __init__(self, aor: str, compute: Compute, future: asyncio.Future[Result]) -> None:
        self.aor = aor
        self.compute = compute
        self.future = future


class SqliteGroupCommit:
    """Batches :meth:`update` calls into shared transactions; see the module doc."""

    def __init__(
        self,
        store: SqliteStore,
        namespace: str,
        *,
        decode: Decode,
        encode: Encode,
        now: Callable[[], float],
    ) -> None:
        self._store = store
        self._ns = namespace
        self._decode = decode
        self._encode = encode
        self._now = now
        self._queue: list[_Update] = []
        self._flusher: asyncio.Task[None] | None = None
        self.transactions = 0
        """Transactions run so far (tests and metrics: updates per transaction)."""

    async def update(self, aor: str, compute: Compute) -> Result:
        """Queue one read-compute-write of ``aor``; return ``(after, value,
        changes)`` once it is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Update(aor, compute, future))
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
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            exc
                            if isinstance(exc, StoreError)
                            else StoreError(f"{self._store.url}: location update failed: {exc!r}")
                        )
                if not isinstance(exc, Exception):  # cancelled: fail what is still queued
                    for item in self._queue:
                        if not item.future.done():
                            item.future.set_exception(StoreError("the location service closed"))
                    self._queue = []
                    raise

    async def _run(self, batch: list[_Update]) -> None:
        store = self._store
        ns = self._ns
        results: list[tuple[_Update, Result | BaseException]] = []
        async with store._lock:
            db = store._db()
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    now = self._now()
                    aors = list(dict.fromkeys(item.aor for item in batch))
                    marks = ",".join("?" * len(aors))
                    rows = await db.execute_fetchall(
                        f"SELECT key, doc FROM entries WHERE ns = ? AND key IN ({marks})"
                        " AND (expires IS NULL OR expires > ?)",
                        (ns, *aors, now),
                    )
                    current: dict[str, tuple[Binding, ...]] = {aor: () for aor in aors}
                    for key, doc in rows:
                        current[key] = self._decode(decode_document(doc, key) if doc else None, now)
                    touched: set[str] = set()
                    for item in batch:
                        before = current[item.aor]
                        try:
                            changes, value = item.compute(before)
                            after = changes.applied_to(before)
                        except Exception as exc:  # the computation's own failure
                            results.append((item, exc))
                            continue
                        if changes:
                            current[item.aor] = after
                            touched.add(item.aor)
                        results.append((item, (after, value, changes)))
                    writes: list[tuple[str, str, str, float]] = []
                    deletes: list[tuple[str, str]] = []
                    for aor in touched:
                        encoded = self._encode(current[aor])
                        if encoded is None:
                            deletes.append((ns, aor))
                        else:
                            doc, latest = encoded
                            writes.append((ns, aor, encode_document(doc), latest))
                    if writes:
                        await db.executemany(
                            "INSERT OR REPLACE INTO entries (ns, key, doc, count, expires)"
                            " VALUES (?, ?, ?, 0, ?)",
                            writes,
                        )
                    if deletes:
                        await db.executemany(
                            "DELETE FROM entries WHERE ns = ? AND key = ?", deletes
                        )
                    await db.execute("COMMIT")
                except BaseException:
                    await db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"{store.url}: {exc}") from exc
        self.transactions += 1
        for item, outcome in results:
            if item.future.done():
                continue
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)
