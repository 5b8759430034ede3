"""natkit's state store: namespaced JSON documents and counters with TTLs,
in memory, in SQLite (the embedded default) or in Redis (several servers
sharing one view). See :mod:`natkit.store.base` for the model and
docs/store.md for operators.

The backends import their drivers (aiosqlite, redis) only when opened.
"""

from natkit.store.base import Clock, Document, Store, StoreError
from natkit.store.memory import MemoryStore
from natkit.store.url import (
    STORE_ENV,
    StoreUrl,
    default_sqlite_path,
    default_store_url,
    open_store,
    parse_store_url,
)

__all__ = [
    "STORE_ENV",
    "Clock",
    "Document",
    "MemoryStore",
    "Store",
    "StoreError",
    "StoreUrl",
    "default_sqlite_path",
    "default_store_url",
    "open_store",
    "parse_store_url",
]
