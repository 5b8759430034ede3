"""Group commit of location updates on SQLite (natkit.store.sqlite_batch):
concurrent updates share transactions, each is committed before it returns,
in arrival order, and one failure does not take the others down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from natkit.sip.location import LocationService
from natkit.sip.registrar import Binding, BindingChanges
from natkit.store import StoreError, open_store
from natkit.store.sqlite import SqliteStore
from natkit.store.sqlite_batch import MAX_BATCH
from tests.store.fixtures import FakeClock, fake_clock_fixture

__all__ = ["fake_clock_fixture"]


def binding(key: str, expires: float) -> Binding:
    return Binding(key=key, contact=f"<sip:u@{key}.example.net>", expires=expires,
                   call_id="c", cseq=1)  # fmt: skip


async def open_sqlite(path: Path, clock: FakeClock) -> SqliteStore:
    store = await open_store(f"sqlite:{path}", clock=clock)
    assert isinstance(store, SqliteStore)
    return store


@pytest.fixture
async def store(tmp_path: Path, fake_clock: FakeClock) -> AsyncIterator[SqliteStore]:
    opened = await open_sqlite(tmp_path / "loc.db", fake_clock)
    yield opened
    await opened.close()


async def test_concurrent_updates_share_transactions_and_are_committed_on_return(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    store = await open_sqlite(tmp_path / "loc.db", fake_clock)
    other = await open_sqlite(tmp_path / "loc.db", fake_clock)  # another process's view
    try:
        location = LocationService(store)
        expires = fake_clock.now + 60
        committed: list[bool] = []

        async def register(i: int) -> None:
            aor = f"sip:u{i}@example.com"
            await location.apply(aor, BindingChanges(upsert=(binding(f"b{i}", expires),)))
            # Returned: the binding is on disk, visible through another connection.
            committed.append(bool(await LocationService(other).lookup(aor)))

        await asyncio.gather(*(register(i) for i in range(300)))
        assert committed == [True] * 300
        group = location._group_commit
        assert group is not None
        # 300 updates at once: the first alone, then batches of at most MAX_BATCH.
        assert 2 <= group.transactions <= 1 + -(-299 // MAX_BATCH) + 1
    finally:
        await store.close()
        await other.close()


async def test_updates_of_one_aor_in_a_batch_apply_in_arrival_order(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    location = LocationService(store)
    aor = "sip:alice@example.com"
    seen: list[tuple[str, ...]] = []

    async def add(key: str) -> tuple[Binding, ...]:
        def compute(current: tuple[Binding, ...]) -> tuple[BindingChanges, None]:
            seen.append(tuple(b.key for b in current))
            return BindingChanges(upsert=(binding(key, fake_clock.now + 60),)), None

        after, _ = await location.update(aor, compute)
        return after

    results = await asyncio.gather(add("a"), add("b"), add("c"), add("d"))
    assert seen == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    assert [sorted(b.key for b in r) for r in results] == [
        ["a"], ["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]
    ]  # fmt: skip
    assert sorted(b.key for b in await location.lookup(aor)) == ["a", "b", "c", "d"]


async def test_a_failing_computation_fails_only_its_own_update(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    location = LocationService(store)
    expires = fake_clock.now + 60

    def broken(current: tuple[Binding, ...]) -> tuple[BindingChanges, None]:
        raise ValueError("bad REGISTER")

    results = await asyncio.gather(
        location.apply("sip:a@example.com", BindingChanges(upsert=(binding("a", expires),))),
        location.update("sip:a@example.com", broken),
        location.apply("sip:a@example.com", BindingChanges(upsert=(binding("b", expires),))),
        return_exceptions=True,
    )
    assert isinstance(results[1], ValueError)
    assert [b.key for b in results[2]] == ["a", "b"]  # type: ignore[union-attr]
    assert sorted(b.key for b in await location.lookup("sip:a@example.com")) == ["a", "b"]


async def test_removing_the_last_binding_deletes_the_document(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    location = LocationService(store)
    aor = "sip:a@example.com"
    await location.apply(aor, BindingChanges(upsert=(binding("a", fake_clock.now + 60),)))
    after = await asyncio.gather(
        location.apply(aor, BindingChanges(remove=("a",))),
        location.apply("sip:b@example.com", BindingChanges(remove=("x",))),
    )
    assert list(after) == [(), ()]
    assert await store.get("sip/location", aor) is None


async def test_a_closed_store_fails_every_update_with_store_error(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    store = await open_sqlite(tmp_path / "loc.db", fake_clock)
    location = LocationService(store)
    await location.apply("sip:a@example.com", BindingChanges())
    await store.close()
    results = await asyncio.gather(
        *(location.apply(f"sip:{i}@example.com", BindingChanges()) for i in range(3)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results


async def test_a_cancelled_caller_still_gets_its_update_written(
    store: SqliteStore, fake_clock: FakeClock
) -> None:
    location = LocationService(store)
    aor = "sip:a@example.com"
    first = asyncio.ensure_future(
        location.apply(aor, BindingChanges(upsert=(binding("a", fake_clock.now + 60),)))
    )
    await asyncio.sleep(0)  # queued
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The lookup waits for the store's statement lock, so for the batch.
    assert [b.key for b in await location.lookup(aor)] == ["a"]
