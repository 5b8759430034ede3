"""What only the Redis store does: its key layout, native TTLs, SCAN, errors."""

from __future__ import annotations

import socket

import pytest

from natkit.store import StoreError, open_store
from natkit.store.redis import RedisStore, split_redis_url

from ..redis_fixture import RedisServer
from .fixtures import FakeClock


async def _open(url: str, clock: FakeClock | None = None) -> RedisStore:
    store = await open_store(url) if clock is None else await open_store(url, clock=clock)
    assert isinstance(store, RedisStore)
    return store


async def test_entries_are_hashes_under_natkit_ns_key(redis_url: str) -> None:
    store = await _open(redis_url)
    try:
        await store.put("turn/users/example.org", "alice", {"md5": "00"})
        assert await store.client.hgetall("natkit:turn/users/example.org:alice") == {
            "v": '{"md5":"00"}'
        }
        await store.incr("quota", "alice")
        assert await store.client.hgetall("natkit:quota:alice") == {"n": "1"}
        await store.put("a:b", "k", {})
        assert await store.client.exists("natkit:a%3Ab:k") == 1
    finally:
        await store.close()


async def test_a_ttl_is_also_redis_native_expiry(redis_url: str) -> None:
    store = await _open(redis_url)
    try:
        await store.put("ns", "k", {"a": 1}, ttl=30)
        await store.incr("counters", "c", ttl=2.5)
        assert 29_000 < await store.client.pttl("natkit:ns:k") <= 30_000
        assert 2_000 < await store.client.pttl("natkit:counters:c") <= 2_500
        await store.put("ns", "k", {"a": 1})
        assert await store.client.pttl("natkit:ns:k") == -1  # permanent again
    finally:
        await store.close()


async def test_scan_uses_scan_not_keys(redis_url: str, redis_server: RedisServer) -> None:
    redis_server.command("CONFIG", "RESETSTAT")
    store = await _open(redis_url)
    try:
        await store.put("ns", "k", {"a": 1})
        assert await store.scan("ns") == {"k": {"a": 1}}
        stats = await store.client.info("commandstats")
    finally:
        await store.close()
    assert "cmdstat_scan" in stats
    assert "cmdstat_keys" not in stats


async def test_a_prefix_in_the_url_separates_deployments(redis_url: str) -> None:
    plain = await _open(redis_url)
    other = await _open(redis_url + "?prefix=staging")
    try:
        await other.put("ns", "k", {"a": 1})
        assert await plain.get("ns", "k") is None
        assert await other.client.exists("staging:ns:k") == 1
    finally:
        await plain.close()
        await other.close()


async def test_keys_of_another_type_are_left_alone_by_scan(redis_url: str) -> None:
    store = await _open(redis_url)
    try:
        await store.client.set("natkit:ns:stranger", "hello")
        await store.put("ns", "k", {"a": 1})
        assert await store.scan("ns") == {"k": {"a": 1}}
        with pytest.raises(StoreError, match="WRONGTYPE"):
            await store.get("ns", "stranger")
    finally:
        await store.close()


async def test_an_unreachable_server_is_a_store_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(StoreError, match="cannot reach redis"):
            await open_store(f"redis://127.0.0.1:{port}/0")


def test_the_shown_url_hides_the_password() -> None:
    client_url, prefix, shown = split_redis_url("redis://user:s3cret@db.example:6380/2?prefix=p")
    assert prefix == "p"
    assert "s3cret" in client_url and "prefix" not in client_url
    assert shown == "redis://user:***@db.example:6380/2?prefix=p"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        pytest.param(
            "redis://db.example/0?password=s3cret&db=1",
            "redis://db.example/0?password=***&db=1",
            id="password",
        ),
        pytest.param(
            "rediss://u:s3cret@h/0?ssl_password=s3cret&prefix=p",
            "rediss://u:***@h/0?ssl_password=***&prefix=p",
            id="both",
        ),
        pytest.param(
            "unix:///run/r.sock?Pass%77ord=s3cret", "unix:///run/r.sock?Pass%77ord=***", id="quoted"
        ),
    ],
)
def test_the_shown_url_hides_passwords_in_the_query(url: str, shown: str) -> None:
    client_url, _, got = split_redis_url(url)
    assert got == shown
    assert "s3cret" in client_url  # redis-py still gets it


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(StoreError, match="prefix"):
        split_redis_url("redis://localhost/0?prefix=a:b")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("redis://h:notaport/0", "bad redis URL", id="port"),
        pytest.param("redis://h:6379/abc", "database is a number", id="db"),
    ],
)
def test_bad_redis_urls_are_store_errors(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        split_redis_url(url)


def test_urls_without_a_password_are_shown_as_given() -> None:
    assert split_redis_url("unix:///run/redis.sock?db=1")[2] == "unix:///run/redis.sock?db=1"
