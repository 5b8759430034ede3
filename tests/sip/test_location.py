"""The location service over the memory, SQLite and Redis stores: one behaviour
table for all three, restart persistence, concurrency, and memory per binding."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from pathlib import Path

import pytest

from natkit.sip.location import FLOW_NAMESPACE, NAMESPACE, LocationService
from natkit.sip.message import SipRequest, parse_message
from natkit.sip.registrar import Binding, BindingChanges, RegistrarConfig, SipRegistrar
from natkit.store import MemoryStore, open_store
from tests.redis_fixture import redis_server_fixture, redis_url_fixture
from tests.store.fixtures import FakeClock, StoreFactory, fake_clock_fixture, store_factory_fixture

__all__ = [
    "fake_clock_fixture",
    "redis_server_fixture",
    "redis_url_fixture",
    "store_factory_fixture",
]

AOR = "sip:alice@example.com"


def binding(
    key: str, *, expires: float, q: float | None = None, flow: str | None = None, cseq: int = 1
) -> Binding:
    return Binding(
        key=key,
        contact=f"<sip:alice@{key}.example.net>",
        expires=expires,
        call_id="c1",
        cseq=cseq,
        q=q,
        flow=flow,
    )


def register_request(contact: str, cseq: int) -> SipRequest:
    text = (
        "REGISTER sip:example.com SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=1\r\n"
        "To: <sip:alice@example.com>\r\nCall-ID: reg-call\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, SipRequest)
    return msg


async def test_apply_then_lookup_sorted_by_q(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    location = LocationService(await store_factory.open())
    low = binding("low", expires=clock.now + 60, q=0.2)
    high = binding("high", expires=clock.now + 60, q=0.9)
    plain = binding("plain", expires=clock.now + 30)
    after = await location.apply(AOR, BindingChanges(upsert=(low, high, plain)))
    assert [b.key for b in after] == ["plain", "high", "low"]
    assert [b.key for b in await location.lookup(AOR)] == ["plain", "high", "low"]
    assert await location.lookup("sip:nobody@example.com") == []


async def test_changes_replace_and_remove_by_key(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    location = LocationService(await store_factory.open())
    both = (binding("a", expires=clock.now + 60), binding("b", expires=clock.now + 60))
    await location.apply(AOR, BindingChanges(upsert=both))
    refreshed = binding("a", expires=clock.now + 600, cseq=2)
    after = await location.apply(AOR, BindingChanges(upsert=(refreshed,), remove=("b",)))
    assert after == (refreshed,)
    assert await location.bindings(AOR) == (refreshed,)
    assert await location.apply(AOR, BindingChanges(remove=("a",))) == ()
    assert await location.store.get(NAMESPACE, AOR) is None  # the document is gone


async def test_bindings_expire_one_by_one_and_the_aor_by_ttl(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    location = LocationService(await store_factory.open())
    pair = (binding("short", expires=clock.now + 30), binding("long", expires=clock.now + 90))
    await location.apply(AOR, BindingChanges(upsert=pair))
    clock.advance(31)
    assert [b.key for b in await location.lookup(AOR)] == ["long"]
    clock.advance(60)
    assert await location.lookup(AOR) == []
    assert await location.store.get(NAMESPACE, AOR) is None


async def test_a_second_handle_sees_the_same_bindings(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    one = LocationService(await store_factory.open())
    two = LocationService(await store_factory.open())
    await one.apply(AOR, BindingChanges(upsert=(binding("a", expires=clock.now + 60),)))
    await two.apply(AOR, BindingChanges(upsert=(binding("b", expires=clock.now + 60),)))
    assert sorted(b.key for b in await one.lookup(AOR)) == ["a", "b"]


async def test_update_runs_the_registrar_atomically(store_factory: StoreFactory) -> None:
    """Eight REGISTERs of one AoR at once, through two handles (two servers on
    SQLite and Redis): every binding survives, none overwrote another."""
    handles = [LocationService(await store_factory.open()) for _ in range(2)]
    registrar = SipRegistrar(RegistrarConfig(domains=frozenset({"example.com"})))

    async def register(contact: str, cseq: int) -> int:
        location = handles[cseq % 2]
        request = register_request(contact, cseq)
        _, outcome = await location.update(
            AOR,
            lambda current: (
                (o := registrar.process(request, current, now=location.now())).changes,
                o,
            ),
        )
        return outcome.response.status

    statuses = await asyncio.gather(*(register(f"<sip:alice@h{i}>", i + 1) for i in range(8)))
    assert statuses == [200] * 8
    assert len(await handles[0].lookup(AOR)) == 8
    assert await register("<sip:alice@h0>", 1) == 500  # stale CSeq


async def test_remove_flow_drops_the_bindings_of_that_flow(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    location = LocationService(await store_factory.open())
    await location.apply(AOR, BindingChanges(upsert=(
        binding("a", expires=clock.now + 60, flow="f1"),
        binding("b", expires=clock.now + 60, flow="f2"),
    )))  # fmt: skip
    await location.apply(
        "sip:bob@example.com",
        BindingChanges(upsert=(binding("c", expires=clock.now + 60, flow="f1"),)),
    )
    assert await location.remove_flow("f1") == 2
    assert [b.key for b in await location.lookup(AOR)] == ["b"]
    assert await location.lookup("sip:bob@example.com") == []
    assert await location.store.get(FLOW_NAMESPACE, "f1") is None
    assert await location.remove_flow("f1") == 0


async def test_remove_aor(store_factory: StoreFactory) -> None:
    clock = store_factory.clock
    location = LocationService(await store_factory.open())
    await location.apply(AOR, BindingChanges(upsert=(binding("a", expires=clock.now + 60),)))
    assert await location.remove_aor(AOR)
    assert await location.lookup(AOR) == []


# -- persistence ---------------------------------------------------------------------


async def test_sqlite_bindings_survive_a_restart(tmp_path: Path, fake_clock: FakeClock) -> None:
    url = f"sqlite:{tmp_path / 'natkit.db'}"
    store = await open_store(url, clock=fake_clock)
    full = Binding(
        key="i:<urn:uuid:1>:1", contact='<sip:alice@192.0.2.1;ob>;+sip.instance="<urn:uuid:1>"',
        expires=fake_clock.now + 3600, call_id="c", cseq=3, q=0.5, instance="<urn:uuid:1>",
        reg_id=1, path=("<sip:tok@edge;lr;ob>",), source="tcp:203.0.113.1:4000", flow="f9",
        user_agent="phone/2",
    )  # fmt: skip
    await LocationService(store).apply(AOR, BindingChanges(upsert=(full,)))
    await store.close()
    fake_clock.advance(100)
    store = await open_store(url, clock=fake_clock)
    try:
        assert await LocationService(store).lookup(AOR) == [full]
    finally:
        await store.close()


async def test_redis_bindings_survive_a_new_client_and_carry_native_ttl(
    redis_url: str, fake_clock: FakeClock
) -> None:
    store = await open_store(redis_url, clock=fake_clock)
    b = binding("a", expires=fake_clock.now + 120)
    await LocationService(store).apply(AOR, BindingChanges(upsert=(b,)))
    await store.close()
    store = await open_store(redis_url, clock=fake_clock)
    try:
        assert await LocationService(store).lookup(AOR) == [b]
        from natkit.store.redis import RedisStore

        assert isinstance(store, RedisStore)
        assert 119_000 < await store.client.pttl(store.key(NAMESPACE, AOR)) <= 120_001
    finally:
        await store.close()


# -- memory ----------------------------------------------------------------------------

REGISTRATIONS = 10_000
MAX_BYTES_PER_REGISTRATION = 2048


def realistic_binding(i: int, now: float) -> Binding:
    """What an outbound UA behind an edge proxy leaves: instance, reg-id, Path, flow."""
    instance = f"<urn:uuid:{i:08x}-0000-1000-8000-000a95a0e128>"
    return Binding(
        key=f"i:{instance}:1",
        contact=f"<sip:user{i}@10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:5060;"
        f'transport=tcp;ob>;+sip.instance="{instance}";reg-id=1',
        expires=now + 3600,
        call_id=f"{i:016x}-reg@10.0.0.1",
        cseq=1 + i % 1000,
        instance=instance,
        reg_id=1,
        path=(f"<sip:AQIEwAACAcQEwAACAcQEhYVm{i:08x}@edge.example.com;lr;ob>",),
        source=f"tcp:198.51.{i // 256 % 256}.{i % 256}:{40000 + i % 20000}",
        flow=f"tcp-{i:08x}",
        user_agent="natkit-ua/1.0",
    )


async def test_memory_store_holds_a_registration_in_under_2_kb() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    location = LocationService(store)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(REGISTRATIONS):
            await location.apply(
                f"sip:user{i}@example.com",
                BindingChanges(upsert=(realistic_binding(i, clock.now),)),
            )
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_registration = used / REGISTRATIONS
    assert per_registration <= MAX_BYTES_PER_REGISTRATION, per_registration
    assert len(await location.lookup("sip:user42@example.com")) == 1


async def test_sqlite_file_holds_a_registration_in_under_2_kb(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "natkit.db"
    store = await open_store(f"sqlite:{path}", clock=clock)
    try:
        location = LocationService(store, index_flows=False)
        for i in range(2000):
            await location.apply(
                f"sip:user{i}@example.com",
                BindingChanges(upsert=(realistic_binding(i, clock.now),)),
            )
    finally:
        await store.close()
    size = sum(p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("natkit.db"))
    assert size / 2000 <= MAX_BYTES_PER_REGISTRATION, size / 2000


@pytest.mark.parametrize("index_flows", [pytest.param(True, id="indexed"),
                                         pytest.param(False, id="no-index")])  # fmt: skip
async def test_flow_index_is_optional(index_flows: bool) -> None:
    clock = FakeClock()
    location = LocationService(MemoryStore(clock=clock), index_flows=index_flows)
    await location.apply(AOR, BindingChanges(upsert=(binding("a", expires=clock.now + 9,
                                                             flow="f"),)))  # fmt: skip
    assert (await location.store.get(FLOW_NAMESPACE, "f") is not None) is index_flows
