"""Authentication in the TURN server (RFC 8489 §9.2, RFC 8656 §5, TURN REST API)."""

from __future__ import annotations

from typing import Any

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.constants import Method, PasswordAlgorithm
from natkit.stun.message import Integrity, parse_message
from natkit.turn import attributes as tat
from natkit.turn.credentials import CombinedCredentials, RestCredentials, StaticCredentials
from natkit.turn.events import AuthenticationFailed

from .server_helpers import CLIENT, REALM, USERS, Client, code_of, make_server


def _failures(c: Client) -> list[AuthenticationFailed]:
    return [e for e in c.driver.events if isinstance(e, AuthenticationFailed)]


def test_rfc5766_client_with_md5_message_integrity_only() -> None:
    _, driver = make_server()
    c = Client(driver, algorithm=None)
    resp = c.allocate(0.0)
    assert code_of(resp) == 0
    assert resp.integrity_offset >= 0 and resp.integrity_sha256_offset < 0
    assert c.verified(resp)


def test_sha256_key_with_message_integrity_sha1_attribute() -> None:
    _, driver = make_server()
    c = Client(driver, integrity=Integrity.SHA1)
    resp = c.allocate(0.0)
    assert code_of(resp) == 0 and resp.integrity_offset >= 0 and c.verified(resp)


def test_md5_via_password_algorithm() -> None:
    _, driver = make_server()
    c = Client(driver, algorithm=PasswordAlgorithm.MD5)
    assert code_of(c.allocate(0.0)) == 0


def test_sha256_only_server_refuses_rfc5766_clients() -> None:
    _, driver = make_server(algorithms=(PasswordAlgorithm.SHA256,))
    c = Client(driver, algorithm=None)
    assert code_of(c.allocate(0.0)) == 400


def test_userhash_identifies_the_user() -> None:
    _, driver = make_server()
    c = Client(driver, use_userhash=True)
    resp = c.allocate(0.0)
    assert code_of(resp) == 0
    assert c.server.allocations()[0].username == "alice"


def test_wrong_password_is_401_and_reported() -> None:
    _, driver = make_server()
    c = Client(driver, password="wrong")
    assert code_of(c.allocate(0.0)) == 401
    (failure,) = _failures(c)
    assert failure.username == "alice" and failure.code == 401 and failure.client == CLIENT
    assert c.server.stats.auth_failures == 1


def test_unknown_user_is_401() -> None:
    _, driver = make_server()
    assert code_of(Client(driver, username="eve").allocate(0.0)) == 401


def test_first_unauthenticated_request_is_not_a_failure() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    assert _failures(c) == []
    assert c.server.stats.auth_failures == 0


def test_wrong_realm_is_401() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    c.realm = "other.realm"
    assert code_of(c.refresh(now=1.0)) == 401


def test_integrity_without_nonce_is_400() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    c.nonce = ""
    from natkit.stun.constants import MessageClass
    from natkit.stun.message import StunMessage, serialize_message

    m = StunMessage(Method.REFRESH, MessageClass.REQUEST, c.tid())
    m.add(at.USERNAME, "alice").add(at.REALM, REALM)
    raw = serialize_message(m, key=c.key)
    assert code_of(parse_message(c.send_raw(raw, 1.0)[0].data)) == 400


def test_stale_nonce_is_438_then_the_client_retries() -> None:
    _, driver = make_server(nonce_lifetime=60.0)
    c = Client(driver)
    c.allocate(0.0)
    old = c.nonce
    raw = c.build(Method.REFRESH)
    stale = parse_message(c.send_raw(raw, 120.0)[0].data)
    assert code_of(stale) == 438
    assert stale.get(at.NONCE) != old
    assert _failures(c) == []
    assert code_of(c.refresh(now=121.0)) == 0  # the helper retries after 438


def test_bid_down_of_password_algorithms_is_400() -> None:
    _, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    assert c.offered is not None
    c.offered = c.offered[::-1]
    assert code_of(c.refresh(now=1.0)) == 400


def _rest_server(**overrides: Any) -> tuple[Client, RestCredentials]:
    rest = RestCredentials(["old-secret", "new-secret"], REALM)
    _, driver = make_server(credentials=rest, **overrides)
    return Client(driver), rest


def test_rest_credentials_under_either_secret() -> None:
    from natkit.turn.credentials import rest_credentials

    rest = RestCredentials(["old-secret", "new-secret"], REALM)
    _, driver = make_server(credentials=rest, wallclock=lambda: 1_700_000_000.0)
    for i, secret in enumerate(("old-secret", "new-secret")):
        user, password = rest_credentials(secret, "alice", expiry=1_700_000_600)
        c = Client(driver, client=Endpoint(CLIENT.host, 100 + i), username=user, password=password)
        resp = c.allocate(0.0)
        assert code_of(resp) == 0 and c.verified(resp)


def test_rest_credentials_of_an_unknown_secret_are_401() -> None:
    from natkit.turn.credentials import rest_credentials

    rest = RestCredentials(["new-secret"], REALM)
    _, driver = make_server(credentials=rest, wallclock=lambda: 1_700_000_000.0)
    user, password = rest_credentials("retired", "alice", expiry=1_700_000_600)
    assert code_of(Client(driver, username=user, password=password).allocate(0.0)) == 401


def test_expired_rest_username_is_401() -> None:
    from natkit.turn.credentials import rest_credentials

    rest = RestCredentials(["new-secret"], REALM)
    _, driver = make_server(credentials=rest, wallclock=lambda: 1_700_000_000.0)
    user, password = rest_credentials("new-secret", "alice", expiry=1_699_999_999)
    c = Client(driver, username=user, password=password)
    assert code_of(c.allocate(0.0)) == 401
    assert len(_failures(c)) == 1


def test_rest_without_a_wallclock_fails_closed() -> None:
    from natkit.turn.credentials import rest_credentials

    rest = RestCredentials(["new-secret"], REALM)
    _, driver = make_server(credentials=rest)
    user, password = rest_credentials("new-secret", "alice", expiry=4_000_000_000)
    assert code_of(Client(driver, username=user, password=password).allocate(0.0)) == 401


def test_static_and_rest_users_together() -> None:
    from natkit.turn.credentials import rest_credentials

    creds = CombinedCredentials(
        [StaticCredentials.from_passwords(USERS, REALM), RestCredentials(["s"], REALM)]
    )
    _, driver = make_server(credentials=creds, wallclock=lambda: 100.0)
    user, password = rest_credentials("s", "x", expiry=200)
    assert code_of(Client(driver).allocate(0.0)) == 0
    rest_client = Client(driver, client=Endpoint(CLIENT.host, 9), username=user, password=password)
    assert code_of(rest_client.allocate(0.0)) == 0


def test_unauthenticated_answers_are_rate_limited_per_source_ip() -> None:
    _, driver = make_server(unauthenticated_rate=1.0, unauthenticated_burst=2.0)
    c = Client(driver)
    raw = c.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)], sign=False)
    assert len(c.send_raw(raw, 0.0)) == 1
    assert len(c.send_raw(raw, 0.0)) == 1
    assert c.send_raw(raw, 0.0) == []
    assert c.server.stats.rate_limited == 1
    other = Client(driver, client=Endpoint("198.51.100.77", 1))
    assert len(other.send_raw(raw, 0.0)) == 1
    assert len(c.send_raw(raw, 1.0)) == 1  # refilled


def test_signed_answers_are_not_rate_limited() -> None:
    _, driver = make_server(unauthenticated_rate=1.0, unauthenticated_burst=1.0)
    c = Client(driver)
    assert code_of(c.allocate(0.0)) == 0  # one 401, then signed
    for i in range(5):
        assert code_of(c.refresh(now=0.1 * i)) == 0
