"""Review fixes in the TURN core: USERHASH announcement, REST username
parsing, per-user quotas of REST users, per-allocation caps, Binding rate
limit, peer policy gaps and RFC 6062 limits."""

from __future__ import annotations

import logging

import pytest

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.constants import SecurityFeature
from natkit.stun.credentials import nonce_features
from natkit.turn import attributes as tat
from natkit.turn.credentials import (
    CombinedCredentials,
    CredentialSource,
    RestCredentials,
    StaticCredentials,
    rest_credentials,
)

from .server_helpers import ALLOCATE, REALM, USERS, Client, code_of, make_server

WALL = 1_700_000_000.0


def _wall() -> float:
    return WALL


def _challenge(source: CredentialSource) -> str:
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    nonce = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert nonce is not None
    return nonce


class _Switchable(CredentialSource):
    """A source whose users become unresolvable by hash at runtime."""

    def __init__(self) -> None:
        self.inner = StaticCredentials.from_passwords(USERS, REALM)
        self.rest = False

    def keys(self, username, algorithm, *, wallclock):  # type: ignore[no-untyped-def]
        return self.inner.keys(username, algorithm, wallclock=wallclock)

    def username_for_hash(self, digest: bytes) -> str | None:
        return self.inner.username_for_hash(digest)

    def resolves_every_userhash(self) -> bool:
        return not self.rest


# -- item 3: USERNAME-ANONYMITY -------------------------------------------------------


def test_sources_say_whether_every_userhash_resolves() -> None:
    static = StaticCredentials.from_passwords(USERS, REALM)
    rest = RestCredentials(["s"], REALM)
    assert static.resolves_every_userhash()
    assert not rest.resolves_every_userhash()
    assert not CombinedCredentials((static, rest)).resolves_every_userhash()
    assert CombinedCredentials((static,)).resolves_every_userhash()


def test_anonymity_is_announced_per_challenge_not_at_construction() -> None:
    source = _Switchable()
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    first = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert first is not None
    assert nonce_features(first) & SecurityFeature.USERNAME_ANONYMITY
    source.rest = True  # e.g. a store refresh brought a REST secret
    raw = c.build(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    second = c.responses(c.send_raw(raw, 0.0))[-1].get(at.NONCE)
    assert second is not None
    assert not nonce_features(second) & SecurityFeature.USERNAME_ANONYMITY


def test_a_nonce_issued_before_the_switch_still_authenticates() -> None:
    source = _Switchable()
    _server, driver = make_server(source, wallclock=_wall)
    c = Client(driver)
    c.learn(c.responses(c.send_raw(c.build(ALLOCATE, sign=False), 0.0))[-1])
    source.rest = True
    assert code_of(c.allocate(1.0)) == 0


def test_rest_secrets_mean_no_anonymity_and_rest_users_allocate() -> None:
    source = CombinedCredentials(
        (StaticCredentials.from_passwords(USERS, REALM), RestCredentials(["s3cret"], REALM))
    )
    assert not nonce_features(_challenge(source)) & SecurityFeature.USERNAME_ANONYMITY


# -- item 4: REST usernames with non-ASCII digits ---------------------------------------


@pytest.mark.parametrize("head", ["\u00b2", "\u0661\u0662", "\uff11", "12x", "", "9" * 13])
def test_rest_expiry_takes_ascii_digits_only(head: str) -> None:
    assert RestCredentials(["s"], REALM).expiry_of(f"{head}:x") is None


def test_unicode_digit_rest_username_is_401_not_an_internal_error() -> None:
    server, driver = make_server(RestCredentials(["s3cret"], REALM), wallclock=_wall)
    c = Client(driver, username="\u00b2:x", password="p")
    assert code_of(c.request(ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], now=0.0)) == 401
    assert server.stats.internal_errors == 0


def test_internal_errors_log_one_traceback_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _driver = make_server()

    def broken(*args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(server, "_receive_stun", broken)
    with caplog.at_level(logging.ERROR, logger="natkit.turn.server"):
        for i in range(100):
            server.receive_datagram(
                b"\x00" * 20,
                Endpoint("203.0.113.1", 1),
                local=Endpoint("192.0.2.1", 3478),
                now=float(i) / 10,
            )
        assert len(caplog.records) == 1
        server.receive_datagram(
            b"\x00" * 20, Endpoint("203.0.113.1", 1), local=Endpoint("192.0.2.1", 3478), now=61.0
        )
    assert server.stats.internal_errors == 101
    assert len(caplog.records) == 2
    assert "99 more" in caplog.records[1].getMessage()


# -- item 5: per-user quota for REST usernames ---------------------------------------


def test_rest_users_share_their_quota_across_fresh_credentials() -> None:
    server, driver = make_server(
        RestCredentials(["s3cret"], REALM), wallclock=_wall, max_allocations_per_user=1
    )
    codes = []
    for i in range(3):
        username, password = rest_credentials("s3cret", "dave", expiry=int(WALL) + 3600 + i)
        c = Client(
            driver, username=username, password=password, client=Endpoint("198.51.100.5", 40000 + i)
        )
        codes.append(code_of(c.allocate(0.0)))
    assert codes == [0, 486, 486]
    other, pw = rest_credentials("s3cret", "erin", expiry=int(WALL) + 3600)
    c = Client(driver, username=other, password=pw, client=Endpoint("198.51.100.6", 40000))
    assert code_of(c.allocate(0.0)) == 0
    assert server.table_sizes()["users"] == 2


def test_a_deleted_rest_allocation_gives_its_quota_back() -> None:
    server, driver = make_server(
        RestCredentials(["s3cret"], REALM), wallclock=_wall, max_allocations_per_user=1
    )
    first, pw1 = rest_credentials("s3cret", "dave", expiry=int(WALL) + 3600)
    a = Client(driver, username=first, password=pw1)
    assert code_of(a.allocate(0.0)) == 0
    assert code_of(a.refresh(0, now=1.0)) == 0
    second, pw2 = rest_credentials("s3cret", "dave", expiry=int(WALL) + 7200)
    b = Client(driver, username=second, password=pw2, client=Endpoint("198.51.100.5", 40001))
    assert code_of(b.allocate(2.0)) == 0
    assert server.table_sizes()["users"] == 1


def test_quota_user_strips_the_rest_timestamp_only() -> None:
    rest = RestCredentials(["s"], REALM)
    assert rest.quota_user("1700000000:dave") == "dave"
    assert rest.quota_user("1700000000") == "1700000000"
    assert rest.quota_user("alice") == "alice"
    combined = CombinedCredentials((StaticCredentials({}, REALM), rest))
    assert combined.quota_user("1700000000:dave") == "dave"
    assert StaticCredentials({}, REALM).quota_user("1:x") == "1:x"
