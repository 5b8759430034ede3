"""Store URLs and the default store."""

from __future__ import annotations

from pathlib import Path

import pytest

from natkit.store import (
    MemoryStore,
    StoreError,
    StoreUrl,
    default_sqlite_path,
    default_store_url,
    open_store,
    parse_store_url,
)
from natkit.store.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("memory:", StoreUrl("memory"), id="memory"),
        pytest.param("sqlite:natkit.db", StoreUrl("sqlite", Path("natkit.db")), id="relative"),
        pytest.param("sqlite:/var/lib/n.db", StoreUrl("sqlite", Path("/var/lib/n.db")), id="abs"),
        pytest.param("sqlite:///var/lib/n.db", StoreUrl("sqlite", Path("/var/lib/n.db")), id="3sl"),
        pytest.param("SQLite:x.db", StoreUrl("sqlite", Path("x.db")), id="case"),
        pytest.param("redis://h:6379/0", StoreUrl("redis", url="redis://h:6379/0"), id="redis"),
        pytest.param("rediss://h/1", StoreUrl("redis", url="rediss://h/1"), id="rediss"),
        pytest.param("unix:///run/r.sock", StoreUrl("redis", url="unix:///run/r.sock"), id="unix"),
    ],
)
def test_parse_store_url(url: str, expected: StoreUrl) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["", "natkit.db", "postgres://h/db", "memory:x", "redis:h:6379", "sqlite://host/x.db"],
)
def test_bad_store_urls_are_store_errors(url: str) -> None:
    with pytest.raises(StoreError):
        parse_store_url(url)


def test_sqlite_alone_is_the_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_sqlite_path() == tmp_path / "natkit" / "natkit.db"
    assert parse_store_url("sqlite:") == StoreUrl("sqlite", tmp_path / "natkit" / "natkit.db")


def test_without_xdg_state_home_the_default_is_under_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_sqlite_path() == tmp_path / ".local/state/natkit/natkit.db"


def test_natkit_store_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATKIT_STORE", "redis://r:6379/3")
    assert default_store_url() == "redis://r:6379/3"
    monkeypatch.delenv("NATKIT_STORE")
    assert default_store_url() == f"sqlite:{default_sqlite_path()}"


async def test_open_store_picks_the_backend(tmp_path: Path) -> None:
    memory = await open_store("memory:")
    assert isinstance(memory, MemoryStore)
    sqlite = await open_store(f"sqlite:{tmp_path / 'a.db'}")
    try:
        assert isinstance(sqlite, SqliteStore)
    finally:
        await sqlite.close()
    with pytest.raises(StoreError, match="unknown store"):
        await open_store("mysql://h/db")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis:alice:hunter2@db.example", id="no-slashes"),
        pytest.param("rediss:x?password=hunter2", id="query"),
        pytest.param("mysql://alice:hunter2@db.example/1", id="unknown-scheme"),
    ],
)
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(StoreError) as info:
        parse_store_url(url)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)
