"""The store's behaviour, the same for every backend (memory, SQLite, Redis)."""

from __future__ import annotations

import asyncio
import math

import pytest

from natkit.store import Store, StoreError

from .fixtures import FakeClock, StoreFactory

NS = "test/things"


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert await store.get(NS, "nothing") is None


async def test_put_then_get_returns_an_equal_json_copy(store: Store) -> None:
    doc = {"name": "alice", "n": 3, "f": 0.5, "tags": ["a", "b"], "sub": {"ok": True, "x": None}}
    await store.put(NS, "k", doc)
    got = await store.get(NS, "k")
    assert got == doc
    assert got is not doc
    doc["n"] = 4
    assert (await store.get(NS, "k")) == {**doc, "n": 3}


async def test_tuples_come_back_as_lists(store: Store) -> None:
    await store.put(NS, "k", {"pair": (1, 2)})
    assert await store.get(NS, "k") == {"pair": [1, 2]}


async def test_put_replaces_the_whole_document(store: Store) -> None:
    await store.put(NS, "k", {"a": 1, "b": 2})
    await store.put(NS, "k", {"c": 3})
    assert await store.get(NS, "k") == {"c": 3}


async def test_delete_says_whether_something_was_there(store: Store) -> None:
    await store.put(NS, "k", {"a": 1})
    assert await store.delete(NS, "k") is True
    assert await store.get(NS, "k") is None
    assert await store.delete(NS, "k") is False


async def test_scan_lists_one_namespace_only(store: Store) -> None:
    await store.put("a", "1", {"v": 1})
    await store.put("a", "x:y", {"v": 2})
    await store.put("a:b", "1", {"v": 3})
    await store.put("ab", "1", {"v": 4})
    await store.put("a*", "1", {"v": 5})
    assert await store.scan("a") == {"1": {"v": 1}, "x:y": {"v": 2}}
    assert await store.scan("a:b") == {"1": {"v": 3}}
    assert await store.scan("a*") == {"1": {"v": 5}}
    assert await store.scan("empty") == {}


async def test_scan_returns_every_entry_of_a_large_namespace(store: Store) -> None:
    for i in range(600):  # more than one Redis SCAN batch (500)
        await store.put(NS, f"k{i}", {"i": i})
    found = await store.scan(NS)
    assert len(found) == 600
    assert found["k599"] == {"i": 599}


async def test_unicode_namespaces_keys_and_values(store: Store) -> None:
    await store.put("réalm/ü", "ключ", {"名前": "值"})
    assert await store.get("réalm/ü", "ключ") == {"名前": "值"}
    assert await store.scan("réalm/ü") == {"ключ": {"名前": "值"}}


async def test_an_entry_with_a_ttl_expires_by_the_injected_clock(
    store: Store, fake_clock: FakeClock
) -> None:
    await store.put(NS, "k", {"a": 1}, ttl=30)
    fake_clock.advance(29.9)
    assert await store.get(NS, "k") == {"a": 1}
    assert await store.scan(NS) == {"k": {"a": 1}}
    fake_clock.advance(0.1)
    assert await store.get(NS, "k") is None
    assert await store.scan(NS) == {}
    assert await store.delete(NS, "k") is False


async def test_put_without_ttl_makes_an_entry_permanent(
    store: Store, fake_clock: FakeClock
) -> None:
    await store.put(NS, "k", {"a": 1}, ttl=10)
    await store.put(NS, "k", {"a": 2})
    fake_clock.advance(1e6)
    assert await store.get(NS, "k") == {"a": 2}


async def test_put_renews_a_ttl(store: Store, fake_clock: FakeClock) -> None:
    await store.put(NS, "k", {"a": 1}, ttl=10)
    fake_clock.advance(8)
    await store.put(NS, "k", {"a": 1}, ttl=10)
    fake_clock.advance(8)
    assert await store.get(NS, "k") == {"a": 1}


async def test_expired_entries_can_be_written_again(store: Store, fake_clock: FakeClock) -> None:
    await store.put(NS, "k", {"a": 1}, ttl=1)
    fake_clock.advance(2)
    await store.put(NS, "k", {"a": 2})
    assert await store.get(NS, "k") == {"a": 2}


async def test_purge_removes_expired_entries(
    store: Store, store_factory: StoreFactory, fake_clock: FakeClock
) -> None:
    await store.put(NS, "old", {"a": 1}, ttl=1)
    await store.put(NS, "new", {"a": 2}, ttl=100)
    await store.incr("test/counters", "c", ttl=1)
    fake_clock.advance(2)
    removed = await store.purge()
    assert removed == (0 if store_factory.kind == "redis" else 2)  # Redis expires natively
    assert await store.scan(NS) == {"new": {"a": 2}}


async def test_incr_counts_from_zero(store: Store) -> None:
    assert await store.incr("test/counters", "c") == 1
    assert await store.incr("test/counters", "c", 5) == 6
    assert await store.incr("test/counters", "c", -2) == 4
    assert await store.incr("test/counters", "d", 0) == 0


async def test_incr_ttl_is_a_fixed_window_from_creation(
    store: Store, fake_clock: FakeClock
) -> None:
    assert await store.incr("test/counters", "c", ttl=60) == 1
    fake_clock.advance(59)
    assert await store.incr("test/counters", "c", ttl=60) == 2  # does not extend the window
    fake_clock.advance(1)
    assert await store.incr("test/counters", "c", ttl=60) == 1


async def test_counters_are_not_documents(store: Store) -> None:
    await store.incr("test/mixed", "c")
    await store.put("test/mixed", "d", {"a": 1})
    assert await store.scan("test/mixed") == {"d": {"a": 1}}
    with pytest.raises(StoreError, match="counter"):
        await store.get("test/mixed", "c")
    with pytest.raises(StoreError, match="document"):
        await store.incr("test/mixed", "d")
    assert await store.delete("test/mixed", "c") is True


@pytest.mark.parametrize(
    ("ns", "key"),
    [pytest.param("", "k", id="empty-ns"), pytest.param("ns", "", id="empty-key")],
)
async def test_empty_names_are_refused(store: Store, ns: str, key: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        await store.put(ns, key, {"a": 1})
    with pytest.raises(ValueError, match="non-empty"):
        await store.get(ns, key)


@pytest.mark.parametrize("ttl", [0, -1, math.inf, math.nan])
async def test_a_ttl_must_be_positive_and_finite(store: Store, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.put(NS, "k", {"a": 1}, ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        await store.incr(NS, "c", ttl=ttl)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([1, 2], id="list"),
        pytest.param({"x": {1, 2}}, id="set-inside"),
        pytest.param({"x": math.nan}, id="nan"),
    ],
)
async def test_a_document_must_be_a_json_object(store: Store, value: object) -> None:
    with pytest.raises(TypeError):
        await store.put(NS, "k", value)  # type: ignore[arg-type]
    assert await store.get(NS, "k") is None


async def test_a_second_handle_sees_the_first_ones_writes(store_factory: StoreFactory) -> None:
    first = await store_factory.open()
    second = await store_factory.open()
    await first.put(NS, "k", {"a": 1})
    assert await second.get(NS, "k") == {"a": 1}
    assert await second.incr("test/counters", "c") == 1
    assert await first.incr("test/counters", "c") == 2
    assert await second.delete(NS, "k") is True
    assert await first.scan(NS) == {}


async def test_a_closed_store_raises_store_error(store_factory: StoreFactory) -> None:
    if store_factory.kind == "memory":
        pytest.skip("the memory store has nothing to close")
    store = await store_factory.open()
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.get(NS, "k")


async def test_async_with_closes_the_store(store_factory: StoreFactory) -> None:
    async with await store_factory.open() as store:
        await store.put(NS, "k", {"a": 1})
    if store_factory.kind != "memory":
        with pytest.raises(StoreError):
            await store.put(NS, "k", {"a": 2})


async def test_increments_from_two_handles_are_atomic(store_factory: StoreFactory) -> None:
    first = await store_factory.open()
    second = await store_factory.open()
    await asyncio.gather(
        *(handle.incr("test/counters", "c") for _ in range(50) for handle in (first, second))
    )
    assert await first.incr("test/counters", "c", 0) == 100
