"""TURN users and REST secrets in the store, and StoreCredentials mirroring
them for the server: the same tests over memory, SQLite and Redis."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from natkit.addr import Endpoint
from natkit.store import MemoryStore, Store, StoreError
from natkit.stun.auth import LongTermAuthenticator
from natkit.stun.constants import Method, PasswordAlgorithm
from natkit.stun.credentials import NonceIssuer, long_term_key, userhash
from natkit.stun.events import ResponseReceived
from natkit.stun.message import StunMessage
from natkit.stun.server import StunServer, StunServerConfig
from natkit.stun.transaction import LongTermCredentials, StunClient, StunClientConfig
from natkit.turn.aio.credentials import (
    StoreCredentials,
    add_secret,
    add_user,
    find_secret,
    list_secrets,
    list_users,
    remove_secret,
    remove_user,
    secret_id,
    secrets_namespace,
    users_namespace,
)
from natkit.turn.credentials import CredentialSource, rest_credentials

from ...redis_fixture import redis_server_fixture, redis_url_fixture  # noqa: F401
from ...store.fixtures import (  # noqa: F401
    FakeClock,
    StoreFactory,
    fake_clock_fixture,
    store_factory_fixture,
)

REALM = "example.org"
MD5, SHA256 = PasswordAlgorithm.MD5, PasswordAlgorithm.SHA256
NOW = 1_700_000_000.0


def _key(user: str, password: str, alg: PasswordAlgorithm = MD5, realm: str = REALM) -> bytes:
    return long_term_key(user, realm, password, alg)


def _rest_key(secret: str, user: str, *, expiry: int, alg: PasswordAlgorithm = MD5) -> bytes:
    username, password = rest_credentials(secret, user, expiry=expiry)
    return long_term_key(username, REALM, password, alg)


async def _two(factory: StoreFactory) -> tuple[Store, StoreCredentials]:
    """An admin handle, and a server's credentials loaded from another handle."""
    admin = await factory.open()
    server = await StoreCredentials.load(await factory.open(), REALM)
    return admin, server


async def test_users_are_stored_as_keys_never_passwords(store_factory: StoreFactory) -> None:
    store = await store_factory.open()
    assert await add_user(store, REALM, "alice", "wonderland") is True
    doc = await store.get(users_namespace(REALM), "alice")
    assert doc == {
        "md5": _key("alice", "wonderland").hex(),
        "sha256": _key("alice", "wonderland", SHA256).hex(),
    }
    assert "wonderland" not in str(doc)


async def test_a_user_added_elsewhere_works_after_refresh(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_user(admin, REALM, "alice", "pw")
    assert server.keys("alice", MD5, wallclock=NOW) == ()
    await server.refresh()
    assert server.keys("alice", MD5, wallclock=NOW) == (_key("alice", "pw"),)
    assert server.keys("alice", SHA256, wallclock=NOW) == (_key("alice", "pw", SHA256),)
    assert server.username_for_hash(userhash("alice", REALM)) == "alice"


async def test_a_removed_user_stops_working_after_refresh(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_user(admin, REALM, "alice", "pw")
    await server.refresh()
    assert await remove_user(admin, REALM, "alice") is True
    assert await remove_user(admin, REALM, "alice") is False
    await server.refresh()
    assert server.keys("alice", MD5, wallclock=NOW) == ()
    assert server.username_for_hash(userhash("alice", REALM)) is None


async def test_a_new_password_replaces_the_old_one(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_user(admin, REALM, "alice", "old")
    assert await add_user(admin, REALM, "alice", "new") is False
    await server.refresh()
    assert server.keys("alice", MD5, wallclock=NOW) == (_key("alice", "new"),)


async def test_users_belong_to_their_realm(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_user(admin, "other.example", "bob", "pw")
    await add_user(admin, REALM, "carol", "pw")
    await add_user(admin, REALM, "alice", "pw")
    await server.refresh()
    assert server.keys("bob", MD5, wallclock=NOW) == ()
    assert await list_users(admin, REALM) == ["alice", "carol"]
    assert await list_users(admin, "other.example") == ["bob"]


async def test_rest_usernames_verify_under_a_stored_secret(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_secret(admin, REALM, "s3cret", label="web")
    await server.refresh()
    expiry = int(NOW) + 3600
    username, _password = rest_credentials("s3cret", "alice", expiry=expiry)
    assert server.keys(username, MD5, wallclock=NOW) == (
        _rest_key("s3cret", "alice", expiry=expiry),
    )
    assert server.keys(username, SHA256, wallclock=NOW) == (
        _rest_key("s3cret", "alice", expiry=expiry, alg=SHA256),
    )
    assert server.keys(username, MD5, wallclock=expiry + 1) == ()  # expired username


async def test_secrets_rotate(store_factory: StoreFactory, fake_clock: FakeClock) -> None:
    admin, server = await _two(store_factory)
    old = await add_secret(admin, REALM, "old-secret", label="2025")
    fake_clock.advance(60)
    await add_secret(admin, REALM, "new-secret", label="2026")
    await server.refresh()
    expiry = int(NOW) + 3600
    old_name, _ = rest_credentials("old-secret", "u", expiry=expiry)
    new_name, _ = rest_credentials("new-secret", "u", expiry=expiry)
    old_key = _rest_key("old-secret", "u", expiry=expiry)
    new_key = _rest_key("new-secret", "u", expiry=expiry)
    assert old_key in server.keys(old_name, MD5, wallclock=NOW)  # both valid during rotation
    assert new_key in server.keys(new_name, MD5, wallclock=NOW)
    assert await remove_secret(admin, REALM, old.id) is True  # by id
    await server.refresh()
    assert old_key not in server.keys(old_name, MD5, wallclock=NOW)
    assert server.keys(new_name, MD5, wallclock=NOW) == (new_key,)
    assert await remove_secret(admin, REALM, "new-secret") is True  # by the secret itself
    assert await remove_secret(admin, REALM, "new-secret") is False
    await server.refresh()
    assert server.keys(new_name, MD5, wallclock=NOW) == ()


async def test_list_secrets_is_oldest_first(
    store_factory: StoreFactory, fake_clock: FakeClock
) -> None:
    store = await store_factory.open()
    await add_secret(store, REALM, "b-second", label="one")
    fake_clock.advance(1)
    await add_secret(store, REALM, "a-first")
    listed = await list_secrets(store, REALM)
    assert [(s.secret, s.label, s.created) for s in listed] == [
        ("b-second", "one", NOW),
        ("a-first", None, NOW + 1),
    ]
    assert len(listed[0].id) == 12 and int(listed[0].id, 16) >= 0
    assert listed[0].to_json()["secret"] is None
    assert listed[0].to_json(reveal=True)["secret"] == "b-second"


async def test_a_secret_with_a_ttl_retires_itself(
    store_factory: StoreFactory, fake_clock: FakeClock
) -> None:
    admin, server = await _two(store_factory)
    await add_secret(admin, REALM, "temporary", ttl=600)
    await server.refresh()
    assert len(server.rest.secrets) == 1
    fake_clock.advance(600)
    await server.refresh()
    assert server.rest.secrets == ()


async def test_malformed_user_documents_are_skipped(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    admin, server = await _two(store_factory)
    await admin.put(users_namespace(REALM), "bad", {"md5": "zz", "sha256": "00"})
    await admin.put(users_namespace(REALM), "half", {"md5": _key("half", "pw").hex()})
    with caplog.at_level(logging.WARNING, logger="natkit.turn.aio.credentials"):
        await server.refresh()
    assert server.keys("bad", MD5, wallclock=NOW) == ()
    assert server.keys("half", MD5, wallclock=NOW) == (_key("half", "pw"),)
    assert server.keys("half", SHA256, wallclock=NOW) == ()
    assert "malformed" in caplog.text


@pytest.mark.parametrize(
    ("realm", "user"), [pytest.param("", "u", id="no-realm"), pytest.param(REALM, "", id="no-user")]
)
async def test_empty_realms_and_users_are_refused(realm: str, user: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        await add_user(MemoryStore(), realm, user, "pw")


class _FlakyStore(MemoryStore):
    broken = False

    async def scan(self, ns: str) -> dict[str, dict[str, object]]:
        if self.broken:
            raise StoreError("the store is down")
        return await super().scan(ns)


async def test_a_failed_refresh_keeps_the_previous_users() -> None:
    store = _FlakyStore()
    await add_user(store, REALM, "alice", "pw")
    server = await StoreCredentials.load(store, REALM)
    store.broken = True
    with pytest.raises(StoreError):
        await server.refresh()
    assert server.keys("alice", MD5, wallclock=NOW) == (_key("alice", "pw"),)


async def test_keep_fresh_refreshes_and_survives_outages(caplog: pytest.LogCaptureFixture) -> None:
    store = _FlakyStore()
    server = await StoreCredentials.load(store, REALM)
    task = asyncio.create_task(server.keep_fresh(0))
    try:
        await add_user(store, REALM, "alice", "pw")
        while server.refreshes < 3:
            await asyncio.sleep(0)
        assert server.keys("alice", MD5, wallclock=NOW) == (_key("alice", "pw"),)
        store.broken = True
        with caplog.at_level(logging.WARNING, logger="natkit.turn.aio.credentials"):
            for _ in range(5):
                await asyncio.sleep(0)
            store.broken = False
            before = server.refreshes
            while server.refreshes == before:
                await asyncio.sleep(0)
        assert caplog.text.count("cannot refresh") == 1  # once per outage
        assert "reachable again" in caplog.text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_refresh_without_changes_keeps_the_mirror(store_factory: StoreFactory) -> None:
    admin, server = await _two(store_factory)
    await add_user(admin, REALM, "alice", "pw")
    await add_secret(admin, REALM, "s")
    await server.refresh()
    users, rest = server.users, server.rest
    await server.refresh()
    assert server.users is users and server.rest is rest
    await add_user(admin, REALM, "bob", "pw")
    await server.refresh()
    assert server.users is not users and server.rest is rest


SERVER = Endpoint("192.0.2.1", 3478)
CLIENT = Endpoint("203.0.113.7", 50000)


def _binding_through(source: CredentialSource, username: str, password: str) -> bool:
    """A real STUN client with long-term credentials against a server whose
    authenticator asks ``source``: did the signed retry succeed?"""
    auth = LongTermAuthenticator(
        REALM,
        lambda user, alg: source.keys(user, alg, wallclock=NOW),
        NonceIssuer(b"nonce secret"),
        username_for_hash=source.username_for_hash,
    )
    server = StunServer(StunServerConfig(primary=SERVER, authenticator=auth))
    client = StunClient(StunClientConfig(rng=random.Random(7)))
    client.send_request(
        StunMessage.request(Method.BINDING, b""),
        SERVER,
        now=0.0,
        credentials=LongTermCredentials(username, password),
    )
    for _ in range(4):  # request, 401, signed retry, answer
        for dg in client.datagrams_to_send(now=0.0):
            server.receive_datagram(dg.data, CLIENT, local=SERVER, now=0.0)
        for dg in server.datagrams_to_send(now=0.0):
            client.receive_datagram(dg.data, SERVER, now=0.0)
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return any(isinstance(e, ResponseReceived) and e.is_success for e in events)


async def test_a_stun_client_authenticates_with_a_stored_user_and_a_rest_secret() -> None:
    store = MemoryStore()
    await add_user(store, REALM, "alice", "wonderland")
    await add_secret(store, REALM, "rest-secret")
    source = await StoreCredentials.load(store, REALM)
    assert _binding_through(source, "alice", "wonderland")
    assert not _binding_through(source, "alice", "wrong")
    username, password = rest_credentials("rest-secret", "bob", expiry=int(NOW) + 60)
    assert _binding_through(source, username, password)


async def test_rest_secrets_in_the_store_withdraw_username_anonymity(
    store_factory: StoreFactory,
) -> None:
    # REST users cannot be found by USERHASH: a server must not tell clients
    # to send it while the mirror holds a secret (review item 3).
    admin, server = await _two(store_factory)
    await add_user(admin, REALM, "alice", "pw")
    await server.refresh()
    assert server.resolves_every_userhash()
    stored = await add_secret(admin, REALM, "s3cret")
    await server.refresh()
    assert not server.resolves_every_userhash()
    assert server.quota_user("1700000000:dave") == "dave"
    await remove_secret(admin, REALM, stored.id)
    await server.refresh()
    assert server.resolves_every_userhash()


async def test_a_secret_id_is_random_not_derived_from_the_secret(
    store_factory: StoreFactory,
) -> None:
    # An unsalted hash of the secret in every listing let a weak secret be
    # guessed offline (review item 15): the id is drawn at random instead.
    store = await store_factory.open()
    first = await add_secret(store, REALM, "weak", label="a")
    assert first.id != secret_id("weak") and len(first.id) == 12
    again = await add_secret(store, REALM, "weak", label="b")  # adding again relabels
    assert again.id == first.id
    assert [(s.id, s.label) for s in await list_secrets(store, REALM)] == [(first.id, "b")]
    other = await add_secret(store, REALM, "other")
    assert other.id not in (first.id, secret_id("other"))
    assert await find_secret(store, REALM, "weak") == again
    assert await find_secret(store, REALM, first.id) == again
    assert await remove_secret(store, REALM, "weak") is True
    assert await find_secret(store, REALM, first.id) is None
    assert await remove_secret(store, REALM, other.id) is True
    assert await list_secrets(store, REALM) == []


async def test_secrets_stored_under_the_old_derived_id_still_work(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory.open()
    legacy = secret_id("old")
    await store.put(
        secrets_namespace(REALM), legacy, {"secret": "old", "label": None, "created": 1.0}
    )
    assert (await add_secret(store, REALM, "old", label="x")).id == legacy
    assert await remove_secret(store, REALM, legacy) is True
