"""What only the SQLite store does: a file that survives, WAL, permissions."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from natkit.store import StoreError, open_store
from natkit.store.sqlite import SCHEMA_VERSION, SqliteStore

from .fixtures import FakeClock


async def test_data_survives_closing_and_reopening(tmp_path: Path, fake_clock: FakeClock) -> None:
    url = f"sqlite:{tmp_path / 'natkit.db'}"
    store = await open_store(url, clock=fake_clock)
    await store.put("ns", "k", {"a": 1})
    await store.put("ns", "short", {"a": 2}, ttl=5)
    await store.incr("counters", "c", 7)
    await store.close()
    fake_clock.advance(10)
    store = await open_store(url, clock=fake_clock)
    try:
        assert await store.scan("ns") == {"k": {"a": 1}}
        assert await store.incr("counters", "c") == 8
    finally:
        await store.close()


async def test_the_file_is_in_wal_mode_and_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "natkit.db"
    store = await SqliteStore.open(path)
    try:
        assert store.journal_mode == "wal"
        assert store.url == f"sqlite:{path}"
    finally:
        await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_file_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "natkit.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer natkit"):
        await SqliteStore.open(path)


async def test_a_file_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "natkit.db"
    path.write_bytes(b"this is not a database, just some bytes " * 100)
    with pytest.raises(StoreError, match="cannot open"):
        await open_store(f"sqlite:{path}")


async def test_an_unwritable_place_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create"):
        await open_store(f"sqlite:{blocker / 'sub' / 'natkit.db'}")


async def test_a_document_someone_else_wrote_badly_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "natkit.db"
    store = await SqliteStore.open(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO entries (ns, key, doc) VALUES ('ns', 'k', '[1, 2]')")
    store = await SqliteStore.open(path)
    try:
        with pytest.raises(StoreError, match="not a JSON object"):
            await store.get("ns", "k")
    finally:
        await store.close()
