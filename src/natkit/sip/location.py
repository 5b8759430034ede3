"""The location service: an AoR's bindings in the natkit store (RFC 3261 §10).

Theory of operation
-------------------
Each AoR is **one document** in namespace :data:`NAMESPACE` (key: the AoR,
``sip:alice@example.org``) holding all its bindings as compact JSON arrays
(:meth:`Binding.to_json`), with the store TTL set to the latest binding
expiry: an AoR whose bindings all lapse disappears from every backend by
itself (Redis natively), and a binding that lapses earlier is dropped when
its AoR is next read (the store's injected wall clock decides). One
document per AoR keeps a registration at a few hundred bytes
(docs/sip-registrar.md has the measurements) and makes an update one write.

Concurrency. :meth:`LocationService.update` reads the AoR, lets a pure
function (the registrar's :meth:`~natkit.sip.registrar.SipRegistrar.process`)
compute the changes, and writes them, atomically per AoR as far as the
backend allows:

* memory: the store's coroutines never suspend, so read-compute-write runs
  without another task getting in between (one process, one view);
* SQLite: the read and the write are one ``BEGIN IMMEDIATE`` transaction,
  which serializes writers on the same file across tasks *and* processes;
  updates that arrive while one runs share the next transaction (group
  commit, :mod:`natkit.store.sqlite_batch`), each answered once it is
  committed;
* Redis: optimistic, ``WATCH`` on the AoR's key then ``MULTI``/``EXEC``; when
  another registrar or edge changed the AoR in between, the computation is
  rerun on the fresh bindings (at most :data:`MAX_RETRIES` times);
* any other :class:`~natkit.store.Store`: a plain read then write (not atomic).

This module is driver glue (async, over the store); it imports no asyncio.
A flow index (namespace :data:`FLOW_NAMESPACE`: flow id -> AoRs, same TTL
rule) lets :meth:`remove_flow` drop the bindings of a flow that failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from natkit.sip.registrar import Binding, BindingChanges, sort_bindings
from natkit.store import MemoryStore, Store, StoreError
from natkit.store.base import decode_document

if TYPE_CHECKING:
    from natkit.store.sqlite_batch import SqliteGroupCommit

__all__ = ["FLOW_NAMESPACE", "MAX_RETRIES", "NAMESPACE", "LocationService"]

NAMESPACE = "sip/location"
FLOW_NAMESPACE = "sip/location-flows"
MAX_RETRIES = 16

_T = TypeVar("_T")
Compute = Callable[[tuple[Binding, ...]], tuple[BindingChanges, _T]]


def _decode(doc: dict[str, Any] | None, now: float) -> tuple[Binding, ...]:
    if not doc:
        return ()
    try:
        rows = doc.get("b", [])
        return tuple(b for b in (Binding.from_json(r) for r in rows) if b.expires > now)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"a stored binding is corrupt: {exc}") from exc


def _encode(bindings: Iterable[Binding]) -> tuple[dict[str, Any], float] | None:
    """The AoR document and its latest expiry, or None when no binding is left."""
    rows = list(bindings)
    if not rows:
        return None
    return {"b": [b.to_json() for b in rows]}, max(b.expires for b in rows)


class LocationService:
    """Bindings per AoR over a :class:`~natkit.store.Store`; wall time is the store's clock."""

    def __init__(self, store: Store, *, index_flows: bool = True) -> None:
        self.store = store
        self.index_flows = index_flows
        self._group_commit: SqliteGroupCommit | None = None

    def now(self) -> float:
        """Current wall time, the store's injected clock (pass it to the registrar)."""
        return self.store.clock()

    async def bindings(self, aor: str) -> tuple[Binding, ...]:
        """The AoR's live bindings, highest q first."""
        return sort_bindings(_decode(await self.store.get(NAMESPACE, aor), self.now()))

    async def lookup(self, aor: str) -> list[Binding]:
        """The targets of a request for ``aor`` (RFC 3261 §16.5), highest q first."""
        return list(await self.bindings(aor))

    async def apply(self, aor: str, changes: BindingChanges) -> tuple[Binding, ...]:
        """Write ``changes`` to the AoR atomically; returns the bindings after them."""
        result, _ = await self.update(aor, lambda current: (changes, None))
        return result

    async def update(
        self, aor: str, compute: Callable[[tuple[Binding, ...]], tuple[BindingChanges, _T]]
    ) -> tuple[tuple[Binding, ...], _T]:
        """Read the AoR's bindings, call ``compute(bindings) -> (changes, value)``,
        write the changes, all atomically per AoR (see the module doc); returns
        the bindings after the changes and ``compute``'s value. ``compute`` must
        be pure: on Redis it may run again after a concurrent change."""
        store = self.store
        if isinstance(store, MemoryStore) or not _is_special(store):
            after, value, flows = await self._update_plain(aor, compute)
        elif _is_sqlite(store):
            after, value, flows = await self._update_sqlite(aor, compute)
        else:
            after, value, flows = await self._update_redis(aor, compute)
        if self.index_flows and flows:
            await self._index(aor, flows, after)
        return after, value

    async def remove_flow(self, flow: str) -> int:
        """Drop every binding registered over ``flow`` (it failed: RFC 5626 §5.3,
        the NAT helpers' dead contacts); returns how many were removed."""
        doc = await self.store.get(FLOW_NAMESPACE, flow)
        await self.store.delete(FLOW_NAMESPACE, flow)
        removed = 0
        for aor in (doc or {}).get("a", []):

            def compute(current: tuple[Binding, ...]) -> tuple[BindingChanges, int]:
                keys = tuple(b.key for b in current if b.flow == flow)
                return BindingChanges(remove=keys), len(keys)

            _, count = await self.update(str(aor), compute)
            removed += count
        return removed

    async def remove_aor(self, aor: str) -> bool:
        """Forget every binding of ``aor`` (administrative removal)."""
        return await self.store.delete(NAMESPACE, aor)

    # -- backends ----------------------------------------------------------------

    async def _update_plain(
        self, aor: str, compute: Compute[_T]
    ) -> tuple[tuple[Binding, ...], _T, set[str]]:
        current = _decode(await self.store.get(NAMESPACE, aor), self.now())
        changes, value = compute(current)
        after = changes.applied_to(current)
        if changes:
            encoded = _encode(after)
            if encoded is None:
                await self.store.delete(NAMESPACE, aor)
            else:
                doc, latest = encoded
                await self.store.put(NAMESPACE, aor, doc, ttl=latest - self.now())
        return after, value, _flows(changes)

    async def _update_sqlite(
        self, aor: str, compute: Compute[_T]
    ) -> tuple[tuple[Binding, ...], _T, set[str]]:
        # Group commit: updates that arrive while a transaction runs share the
        # next one (natkit.store.sqlite_batch; same semantics, fewer hops).
        from natkit.store.sqlite import SqliteStore
        from natkit.store.sqlite_batch import UNCHANGED, SqliteGroupCommit

        if self._group_commit is None:
            store = self.store
            if not isinstance(store, SqliteStore):
                raise TypeError(f"not a SqliteStore: {store!r}")
            self._group_commit = SqliteGroupCommit(store, NAMESPACE)
        now = self.now()

        def on_document(doc: dict[str, Any] | None) -> tuple[Any, Any]:
            current = _decode(doc, now)
            changes, value = compute(current)
            after = changes.applied_to(current)
            result = (after, value, _flows(changes))
            return (_encode(after) if changes else UNCHANGED), result

        result: tuple[tuple[Binding, ...], _T, set[str]] = await self._group_commit.update(
            aor, on_document
        )
        return result

    async def _update_redis(
        self, aor: str, compute: Compute[_T]
    ) -> tuple[tuple[Binding, ...], _T, set[str]]:
        from redis.exceptions import RedisError, WatchError

        from natkit.store.redis import RedisStore

        store = self.store
        if not isinstance(store, RedisStore):
            raise TypeError(f"not a RedisStore: {store!r}")
        name = store.key(NAMESPACE, aor)
        try:
            for _ in range(MAX_RETRIES):
                async with store.client.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        text, expires = await pipe.hmget(name, ["v", "x"])
                        now = self.now()
                        doc = None
                        if text is not None and (expires is None or float(expires) > now):
                            doc = decode_document(text, aor)
                        current = _decode(doc, now)
                        changes, value = compute(current)
                        after = changes.applied_to(current)
                        pipe.multi()  # type: ignore[no-untyped-call]
                        if changes:
                            encoded = _encode(after)
                            pipe.delete(name)
                            if encoded is not None:
                                new_doc, latest = encoded
                                pipe.hset(name, "v", json.dumps(new_doc, separators=(",", ":")))
                                pipe.hset(name, "x", repr(latest))
                                pipe.pexpire(name, max(1, int((latest - now) * 1000) + 1))
                        await pipe.execute()
                        return after, value, _flows(changes)
                    except WatchError:
                        continue
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis at {store.url}: {exc}") from exc
        raise StoreError(f"{aor}: gave up after {MAX_RETRIES} concurrent updates")

    async def _index(self, aor: str, flows: set[str], after: tuple[Binding, ...]) -> None:
        """Remember which AoRs each flow carries (a hint: remove_flow rechecks)."""
        live = {b.flow: b.expires for b in after if b.flow is not None}
        for flow in flows:
            if flow not in live:
                continue
            doc = await self.store.get(FLOW_NAMESPACE, flow) or {}
            aors = [a for a in doc.get("a", []) if a != aor] + [aor]
            ttl = max(live[flow], float(doc.get("x", 0))) - self.now()
            if ttl > 0:
                expiry = self.now() + ttl
                await self.store.put(FLOW_NAMESPACE, flow, {"a": aors, "x": expiry}, ttl=ttl)


def _flows(changes: BindingChanges) -> set[str]:
    return {b.flow for b in changes.upsert if b.flow is not None}


def _is_sqlite(store: Store) -> bool:
    return type(store).__name__ == "SqliteStore" and type(store).__module__ == (
        "natkit.store.sqlite"
    )


def _is_special(store: Store) -> bool:
    return _is_sqlite(store) or (
        type(store).__name__ == "RedisStore" and type(store).__module__ == "natkit.store.redis"
    )
