"""The in-memory store: one process, nothing survives it (tests, ``memory:``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Entry:
    doc: str | None  # JSON text of a document, or None for a counter
    count: int
    expires: float | None


class MemoryStore(Store):
    """Entries in a dict of dicts; expired ones are dropped when next touched."""

    url = "memory:"

    def __init__(self, *, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self._data: dict[str, dict[str, _Entry]] = {}

    def _live(self, ns: str, key: str) -> _Entry | None:
        table = self._data.get(ns)
        entry = table.get(key) if table is not None else None
        if entry is None:
            return None
        if entry.expires is not None and entry.expires <= self.clock():
            self._remove(ns, key)
            return None
        return entry

    def _remove(self, ns: str, key: str) -> None:
        table = self._data.get(ns)
        if table is not None:
            table.pop(key, None)
            if not table:
                del self._data[ns]

    async def get(self, ns: str, key: str) -> Document | None:
        check_name(ns, key)
        entry = self._live(ns, key)
        if entry is None:
            return None
        if entry.doc is None:
            raise StoreError(f"{ns}/{key} holds a counter, not a document")
        return decode_document(entry.doc, f"{ns}/{key}")

    async def put(
        self, ns: str, key: str, value: Mapping[str, Any], ttl: float | None = None
    ) -> None:
        check_name(ns, key)
        text = encode_document(value)
        self._data.setdefault(ns, {})[key] = _Entry(text, 0, self._expiry(ttl))

    async def delete(self, ns: str, key: str) -> bool:
        check_name(ns, key)
        if self._live(ns, key) is None:
            return False
        self._remove(ns, key)
        return True

    async def scan(self, ns: str) -> dict[str, Document]:
        check_name(ns)
        now = self.clock()
        out: dict[str, Document] = {}
        for key, entry in list(self._data.get(ns, {}).items()):
            if entry.expires is not None and entry.expires <= now:
                self._remove(ns, key)
            elif entry.doc is not None:
                out[key] = decode_document(entry.doc, f"{ns}/{key}")
        return out

    async def incr(self, ns: str, key: str, amount: int = 1, ttl: float | None = None) -> int:
        check_name(ns, key)
        check_amount(amount)
        expires = self._expiry(ttl)
        entry = self._live(ns, key)
        if entry is None:
            entry = self._data.setdefault(ns, {})[key] = _Entry(None, 0, expires)
        elif entry.doc is not None:
            raise StoreError(f"{ns}/{key} holds a document, not a counter")
        entry.count += amount
        return entry.count

    async def purge(self) -> int:
        now = self.clock()
        expired = [
            (ns, key)
            for ns, table in self._data.items()
            for key, entry in table.items()
            if entry.expires is not None and entry.expires <= now
        ]
        for ns, key in expired:
            self._remove(ns, key)
        return len(expired)

    async def close(self) -> None:
        """Nothing to release; the data stays readable (one process, one view)."""
