"""SIP digest users in the store (natkit.sip.aio.users): HA1 per algorithm,
over memory, SQLite and Redis, and a whole verification from the store."""

from __future__ import annotations

import random

import pytest

from natkit.sip.aio.users import (
    Ha1Cache,
    add_user,
    add_user_ha1,
    authenticate,
    list_users,
    lookup_ha1,
    remove_user,
    user_document,
    users_namespace,
)
from natkit.sip.digest import (
    AuthFailed,
    AuthMissing,
    AuthOk,
    DigestAlgorithm,
    DigestClient,
    DigestServer,
    DigestServerConfig,
    compute_ha1,
)
from natkit.sip.message import SipRequest, parse_message
from natkit.store import MemoryStore

from ..redis_fixture import redis_server_fixture, redis_url_fixture  # noqa: F401
from ..store.fixtures import (  # noqa: F401
    StoreFactory,
    fake_clock_fixture,
    store_factory_fixture,
)

REALM = "example.org"
NOW = 1_700_000_000.0
MD5, MD5_SESS = DigestAlgorithm.MD5, DigestAlgorithm.MD5_SESS
SHA256, SHA512 = DigestAlgorithm.SHA256, DigestAlgorithm.SHA512_256


def _register() -> SipRequest:
    msg = parse_message(
        b"REGISTER sip:example.org SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKu1\r\n"
        b"From: <sip:alice@example.org>;tag=1\r\nTo: <sip:alice@example.org>\r\n"
        b"Call-ID: u1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(msg, SipRequest)
    return msg


async def test_users_are_stored_as_ha1_never_passwords(store_factory: StoreFactory) -> None:
    store = await store_factory.open()
    assert await add_user(store, REALM, "alice", "wonderland") is True
    doc = await store.get(users_namespace(REALM), "alice")
    assert doc == {
        "md5": compute_ha1(MD5, "alice", REALM, "wonderland"),
        "sha256": compute_ha1(SHA256, "alice", REALM, "wonderland"),
        "sha512_256": compute_ha1(SHA512, "alice", REALM, "wonderland"),
    }
    assert "wonderland" not in str(doc)
    assert await add_user(store, REALM, "alice", "new") is False
    assert await lookup_ha1(store, REALM, "alice", MD5) == compute_ha1(MD5, "alice", REALM, "new")


async def test_lookup_by_algorithm_list_and_remove(store_factory: StoreFactory) -> None:
    admin, server = await store_factory.open(), await store_factory.open()
    await add_user(admin, REALM, "bob", "pw")
    await add_user(admin, REALM, "alice", "pw")
    await add_user(admin, "other.org", "carol", "pw")
    assert await list_users(server, REALM) == ["alice", "bob"]
    expected = compute_ha1(MD5, "bob", REALM, "pw")
    assert await lookup_ha1(server, REALM, "bob", MD5_SESS) == expected
    assert await lookup_ha1(server, REALM, "carol", MD5) is None
    assert await lookup_ha1(server, REALM, "", MD5) is None
    assert await remove_user(admin, REALM, "bob") is True
    assert await remove_user(admin, REALM, "bob") is False
    assert await lookup_ha1(server, REALM, "bob", MD5) is None


async def test_imported_ha1_and_malformed_entries(store_factory: StoreFactory) -> None:
    store = await store_factory.open()
    ha1 = compute_ha1(MD5, "dave", REALM, "pw").upper()
    assert await add_user_ha1(store, REALM, "dave", {MD5: ha1}) is True
    assert await lookup_ha1(store, REALM, "dave", MD5) == ha1.lower()
    assert await lookup_ha1(store, REALM, "dave", SHA256) is None
    await store.put(users_namespace(REALM), "eve", {"md5": "zz", "sha256": 5})
    assert await lookup_ha1(store, REALM, "eve", MD5) is None
    assert await lookup_ha1(store, REALM, "eve", SHA256) is None


@pytest.mark.parametrize(
    "ha1s",
    [
        pytest.param({MD5: "abc"}, id="short"),
        pytest.param({MD5_SESS: "0" * 32}, id="sess"),
        pytest.param({SHA256: "g" * 64}, id="not-hex"),
        pytest.param({}, id="empty"),
    ],
)
async def test_add_user_ha1_refuses_bad_values(ha1s: dict[DigestAlgorithm, str]) -> None:
    with pytest.raises(ValueError):
        await add_user_ha1(MemoryStore(), REALM, "x", ha1s)


async def test_empty_names_are_refused() -> None:
    store = MemoryStore()
    with pytest.raises(ValueError):
        await add_user(store, "", "alice", "pw")
    with pytest.raises(ValueError):
        await add_user(store, REALM, "", "pw")


async def test_authenticate_a_register_against_the_store(store_factory: StoreFactory) -> None:
    store = await store_factory.open()
    await add_user(store, REALM, "alice", "wonderland")
    server = DigestServer(DigestServerConfig(realm=REALM, secrets=(b"s",)), rng=random.Random(1))
    req = _register()
    assert isinstance(await authenticate(server, store, req, now=NOW), AuthMissing)
    challenge = server.challenge(req, now=NOW)
    good = DigestClient("alice", "wonderland", rng=random.Random(2)).authorize(req, challenge)
    bad = DigestClient("alice", "guess", rng=random.Random(3)).authorize(req, challenge)
    assert good is not None and bad is not None
    assert await authenticate(server, store, good, now=NOW) == AuthOk(
        username="alice", realm=REALM, algorithm=SHA256
    )
    assert isinstance(await authenticate(server, store, bad, now=NOW), AuthFailed)


class _CountingStore(MemoryStore):
    """A memory store that counts reads (what the HA1 cache saves)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, ns: str, key: str) -> dict[str, object] | None:
        self.reads += 1
        return await super().get(ns, key)


def _signed(password: str, seed: int, server: DigestServer) -> SipRequest:
    req = _register()
    challenge = server.challenge(req, now=NOW)
    signed = DigestClient("alice", password, rng=random.Random(seed)).authorize(req, challenge)
    assert signed is not None
    return signed


async def test_the_ha1_cache_spares_the_store_and_follows_password_changes() -> None:
    store = _CountingStore()
    await add_user(store, REALM, "alice", "wonderland")
    server = DigestServer(DigestServerConfig(realm=REALM, secrets=(b"s",)), rng=random.Random(1))
    cache = Ha1Cache(ttl=30.0)
    store.reads = 0
    for seed in range(5):
        ok = await authenticate(server, store, _signed("wonderland", seed, server), now=NOW,
                                cache=cache)  # fmt: skip
        assert isinstance(ok, AuthOk)
    assert store.reads == 1 and cache.hits == 4
    # a wrong password is checked against the store once more, and still fails
    bad = await authenticate(server, store, _signed("guess", 9, server), now=NOW, cache=cache)
    assert isinstance(bad, AuthFailed) and store.reads == 2
    # the password changes behind the cache's back (another process): the new
    # one works at once, the old one until the entry expires
    await store.put(users_namespace(REALM), "alice", user_document("alice", REALM, "rabbit"))
    old = await authenticate(server, store, _signed("wonderland", 10, server), now=NOW + 1,
                             cache=cache)  # fmt: skip
    assert isinstance(old, AuthOk)  # the cached entry is younger than ttl
    new = await authenticate(server, store, _signed("rabbit", 11, server), now=NOW + 2,
                             cache=cache)  # fmt: skip
    assert isinstance(new, AuthOk)  # failed against the cache, re-read: the new HA1
    old = await authenticate(server, store, _signed("wonderland", 13, server), now=NOW + 2,
                             cache=cache)  # fmt: skip
    assert isinstance(old, AuthFailed)  # the re-read replaced the cached entry
    # removed through this module with the cache: gone at once
    reads = store.reads
    await remove_user(store, REALM, "alice", cache=cache)
    assert len(cache) == 0
    gone = await authenticate(server, store, _signed("rabbit", 12, server), now=NOW + 3,
                              cache=cache)  # fmt: skip
    assert isinstance(gone, AuthFailed) and store.reads == reads + 1


def test_the_ha1_cache_is_bounded_and_entries_expire() -> None:
    cache = Ha1Cache(max_users=2, ttl=10.0)
    for name in ("a", "b", "c"):
        cache.put(REALM, name, {"md5": name}, now=0.0)
    assert len(cache) == 2 and cache.get(REALM, "a", now=1.0) is None  # least recent left
    assert cache.get(REALM, "c", now=9.9) == {"md5": "c"}
    assert cache.get(REALM, "c", now=10.0) is None  # expired
    with pytest.raises(ValueError):
        Ha1Cache(ttl=0)
