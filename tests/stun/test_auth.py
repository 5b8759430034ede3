"""Authentication end to end, sans-IO: StunClient against StunServer in memory
(RFC 8489 §9.1 short-term, §9.2 long-term credentials)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.attributes import PasswordAlgorithmParams
from natkit.stun.auth import (
    Authenticated,
    LongTermAuthenticator,
    Rejected,
    ShortTermAuthenticator,
    StaticUsers,
)
from natkit.stun.constants import (
    AttributeType,
    MessageClass,
    Method,
    PasswordAlgorithm,
    SecurityFeature,
)
from natkit.stun.credentials import (
    NonceIssuer,
    long_term_key,
    nonce_features,
    short_term_key,
    userhash,
)
from natkit.stun.events import (
    ResponseReceived,
    StunEvent,
    TransactionFailed,
    TransactionTimedOut,
)
from natkit.stun.message import (
    Attribute,
    Integrity,
    StunMessage,
    parse_message,
    serialize_message,
    verify_integrity,
)
from natkit.stun.server import StunServer, StunServerConfig
from natkit.stun.transaction import (
    LongTermCredentials,
    ShortTermCredentials,
    StunClient,
    StunClientConfig,
)

SERVER = Endpoint("192.0.2.1", 3478)
CLIENT = Endpoint("203.0.113.7", 50000)
REALM = "example.org"
SECRET = b"nonce secret for tests"
PASSWORDS = {"alice": "wonderland", "bob": "builder"}
ALICE = LongTermCredentials("alice", "wonderland")
F = SecurityFeature
SHA256_KEY = long_term_key("alice", REALM, "wonderland", PasswordAlgorithm.SHA256)
MD5_KEY = long_term_key("alice", REALM, "wonderland", PasswordAlgorithm.MD5)
BOTH_ALGORITHMS = (
    PasswordAlgorithmParams(PasswordAlgorithm.SHA256),
    PasswordAlgorithmParams(PasswordAlgorithm.MD5),
)

Tamper = Callable[[bytes], bytes]


def _authenticator(
    *, features: F = F.PASSWORD_ALGORITHMS, lifetime: float = 600.0
) -> LongTermAuthenticator:
    users = StaticUsers(PASSWORDS, REALM)
    return LongTermAuthenticator(
        REALM,
        users.key,
        NonceIssuer(SECRET, lifetime=lifetime, features=features),
        username_for_hash=users.username_for_hash,
    )


def _server(authenticator: LongTermAuthenticator | ShortTermAuthenticator) -> StunServer:
    return StunServer(StunServerConfig(primary=SERVER, authenticator=authenticator))


def _client() -> StunClient:
    return StunClient(StunClientConfig(rng=random.Random(3)))


def _binding() -> StunMessage:
    return StunMessage.request(Method.BINDING, b"")


def _exchange(
    client: StunClient,
    server: StunServer,
    *,
    now: float,
    hop: float = 0.0,
    tamper: Tamper | None = None,
) -> list[StunMessage]:
    """Carry datagrams both ways until both sides are quiet; each hop takes
    ``hop`` seconds. Returns every message carried, in order."""
    carried: list[StunMessage] = []
    while out := client.datagrams_to_send(now=now):
        for dg in out:
            carried.append(parse_message(dg.data))
            now += hop
            server.receive_datagram(dg.data, CLIENT, local=dg.remote, now=now)
        for dg in server.datagrams_to_send(now=now):
            assert dg.remote == CLIENT
            data = tamper(dg.data) if tamper else dg.data
            carried.append(parse_message(data))
            now += hop
            client.receive_datagram(data, dg.local or SERVER, now=now)
    return carried


def _events(client: StunClient) -> list[StunEvent]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def _only_response(client: StunClient) -> ResponseReceived:
    [event] = _events(client)
    assert isinstance(event, ResponseReceived)
    return event


def _code(msg: StunMessage) -> int | None:
    err = msg.error
    return None if err is None else err.code


def _rewrite(data: bytes, attr_type: int, value: bytes | None) -> bytes:
    """Replace (moved to the end) or, with ``None``, remove an attribute of an unsigned message."""
    msg = parse_message(data)
    attrs = [a for a in msg.attributes if a.type != attr_type]
    if value is not None:
        attrs.append(Attribute(attr_type, value))
    return serialize_message(StunMessage(msg.method, msg.message_class, msg.transaction_id, attrs))


def _when_class(cls: MessageClass, tamper: Tamper) -> Tamper:
    return lambda data: tamper(data) if parse_message(data).message_class == cls else data


def _corrupt_mac(data: bytes) -> bytes:
    """Flip a bit in the last integrity MAC of a signed message."""
    msg = parse_message(data)
    off = max(msg.integrity_offset, msg.integrity_sha256_offset)
    out = bytearray(data)
    out[off + 4] ^= 0x01
    return bytes(out)


def _bid_down_to_md5(data: bytes) -> bytes:
    """Strip SHA-256 from a 401's PASSWORD-ALGORITHMS, as an attacker on the path would."""
    if _code(parse_message(data)) != 401:
        return data
    md5_only = at.PASSWORD_ALGORITHMS.encode((PasswordAlgorithmParams(PasswordAlgorithm.MD5),), b"")
    return _rewrite(data, AttributeType.PASSWORD_ALGORITHMS, md5_only)


def _long_term_flow(
    authenticator: LongTermAuthenticator | None = None, credentials: LongTermCredentials = ALICE
) -> tuple[StunClient, StunServer, bytes, list[StunMessage]]:
    client, server = _client(), _server(authenticator or _authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=credentials)
    return client, server, tid, _exchange(client, server, now=0.0)


# -- long-term credentials: the challenge and the signed retry -------------------------


def test_first_long_term_request_is_unsigned() -> None:
    _, _, _, carried = _long_term_flow()
    first = carried[0]
    assert first.message_class == MessageClass.REQUEST
    assert first.integrity_offset == first.integrity_sha256_offset == -1
    for attr in (AttributeType.USERNAME, AttributeType.REALM, AttributeType.NONCE):
        assert not first.has(attr)


def test_challenge_is_401_with_realm_nonce_and_password_algorithms() -> None:
    _, _, _, carried = _long_term_flow()
    challenge = carried[1]
    assert _code(challenge) == 401
    assert challenge.get(at.REALM) == REALM
    nonce = challenge.get(at.NONCE)
    assert nonce is not None
    assert nonce_features(nonce) == F.PASSWORD_ALGORITHMS
    assert challenge.get(at.PASSWORD_ALGORITHMS) == BOTH_ALGORITHMS
    assert challenge.integrity_offset == challenge.integrity_sha256_offset == -1


def test_signed_retry_chooses_sha256_and_echoes_the_offer() -> None:
    _, _, tid, carried = _long_term_flow()
    retry = carried[2]
    assert retry.transaction_id != tid
    assert retry.get(at.USERNAME) == "alice"
    assert retry.get(at.REALM) == REALM
    assert retry.get(at.NONCE) == carried[1].get(at.NONCE)
    assert retry.get(at.PASSWORD_ALGORITHMS) == BOTH_ALGORITHMS
    assert retry.get(at.PASSWORD_ALGORITHM) == PasswordAlgorithmParams(PasswordAlgorithm.SHA256)
    assert retry.integrity_sha256_offset >= 0
    assert retry.integrity_offset == -1
    assert verify_integrity(retry, SHA256_KEY)


def test_signed_retry_succeeds_with_a_signed_response() -> None:
    client, _, tid, carried = _long_term_flow()
    assert len(carried) == 4
    response = carried[3]
    assert response.message_class == MessageClass.SUCCESS
    assert response.integrity_sha256_offset >= 0
    assert verify_integrity(response, SHA256_KEY)
    event = _only_response(client)
    assert event.transaction_id == tid
    assert event.is_success
    assert event.response.get(at.XOR_MAPPED_ADDRESS) == CLIENT
    assert client.pending == 0


def test_later_requests_are_signed_at_once() -> None:
    client, server, _, _ = _long_term_flow()
    _events(client)
    client.send_request(_binding(), SERVER, now=10.0, credentials=ALICE)
    carried = _exchange(client, server, now=10.0)
    assert len(carried) == 2
    assert carried[0].integrity_sha256_offset >= 0
    assert _only_response(client).is_success


def test_cached_key_is_not_used_for_other_credentials() -> None:
    client, server, _, _ = _long_term_flow()
    _events(client)
    client.send_request(
        _binding(), SERVER, now=10.0, credentials=LongTermCredentials("bob", "builder")
    )
    carried = _exchange(client, server, now=10.0)
    assert carried[0].integrity_sha256_offset == -1
    assert _code(carried[1]) == 401
    assert carried[2].get(at.USERNAME) == "bob"
    assert _only_response(client).is_success


def test_stale_nonce_gets_438_and_the_retry_succeeds() -> None:
    client, server, _, _ = _long_term_flow(_authenticator(lifetime=600.0))
    _events(client)
    tid = client.send_request(_binding(), SERVER, now=1000.0, credentials=ALICE)
    carried = _exchange(client, server, now=1000.0)
    assert [m.message_class for m in carried] == [
        MessageClass.REQUEST,
        MessageClass.ERROR,
        MessageClass.REQUEST,
        MessageClass.SUCCESS,
    ]
    assert carried[0].integrity_sha256_offset >= 0
    assert _code(carried[1]) == 438
    assert carried[1].get(at.NONCE) != carried[0].get(at.NONCE)
    assert carried[2].get(at.NONCE) == carried[1].get(at.NONCE)
    event = _only_response(client)
    assert event.transaction_id == tid
    assert event.is_success


def test_wrong_password_is_reported_as_401() -> None:
    client, _, tid, carried = _long_term_flow(credentials=LongTermCredentials("alice", "nope"))
    assert [_code(m) for m in carried] == [None, 401, None, 401]
    event = _only_response(client)
    assert event.transaction_id == tid
    assert _code(event.response) == 401
    assert client.pending == 0


def test_wrong_password_retries_are_bounded_even_with_fresh_nonces() -> None:
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(
        _binding(), SERVER, now=0.0, credentials=LongTermCredentials("alice", "nope")
    )
    carried = _exchange(client, server, now=0.0, hop=1.0)  # every challenge a new nonce
    requests = [m for m in carried if m.message_class == MessageClass.REQUEST]
    assert len(requests) == 4  # the unsigned one and three signed retries
    assert len({m.get(at.NONCE) for m in requests[1:]}) == 3
    event = _only_response(client)
    assert event.transaction_id == tid
    assert _code(event.response) == 401
    assert client.get_timer() is None


def test_unknown_user_is_reported_as_401() -> None:
    client, _, _, _ = _long_term_flow(credentials=LongTermCredentials("mallory", "x"))
    assert _code(_only_response(client).response) == 401


def test_bid_down_of_password_algorithms_is_refused_with_400() -> None:
    client, server = _client(), _server(_authenticator())
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    carried = _exchange(client, server, now=0.0, tamper=_bid_down_to_md5)
    retry = carried[2]
    assert retry.get(at.PASSWORD_ALGORITHM) == PasswordAlgorithmParams(PasswordAlgorithm.MD5)
    assert _code(carried[3]) == 400


def test_unsigned_400_to_a_signed_request_is_treated_as_lost() -> None:
    """RFC 8489 §9.2.5: such a 400 is discarded; retransmissions continue."""
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    _exchange(client, server, now=0.0, tamper=_bid_down_to_md5)
    assert _events(client) == []
    assert client.pending == 1
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
        _exchange(client, server, now=deadline, tamper=_bid_down_to_md5)
    assert _events(client) == [TransactionTimedOut(transaction_id=tid, server=SERVER)]


def test_userhash_replaces_username_when_the_nonce_announces_anonymity() -> None:
    auth = _authenticator(features=F.PASSWORD_ALGORITHMS | F.USERNAME_ANONYMITY)
    client, _, _, carried = _long_term_flow(auth)
    nonce = carried[1].get(at.NONCE)
    assert nonce is not None
    assert nonce_features(nonce) & F.USERNAME_ANONYMITY
    retry = carried[2]
    assert retry.get(at.USERHASH) == userhash("alice", REALM)
    assert retry.get(at.USERNAME) is None
    assert _only_response(client).is_success


def test_md5_when_the_nonce_does_not_announce_password_algorithms() -> None:
    client, _, _, carried = _long_term_flow(_authenticator(features=F(0)))
    challenge, retry, response = carried[1:]
    assert challenge.get(at.PASSWORD_ALGORITHMS) is None
    assert retry.get(at.PASSWORD_ALGORITHMS) is None
    assert retry.get(at.PASSWORD_ALGORITHM) is None
    assert retry.integrity_offset >= 0
    assert retry.integrity_sha256_offset == -1
    assert verify_integrity(retry, MD5_KEY)
    assert verify_integrity(response, MD5_KEY)
    assert _only_response(client).is_success


def test_response_with_wrong_integrity_is_ignored_as_if_lost() -> None:
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    carried = _exchange(
        client, server, now=0.0, tamper=_when_class(MessageClass.SUCCESS, _corrupt_mac)
    )
    assert carried[-1].message_class == MessageClass.SUCCESS
    assert _events(client) == []
    assert client.pending == 1
    deadline = client.get_timer()
    assert deadline == 0.5
    client.handle_timer(now=deadline)
    _exchange(client, server, now=deadline)
    event = _only_response(client)
    assert event.transaction_id == tid
    assert event.is_success


def test_unsigned_success_to_a_signed_request_is_ignored() -> None:
    client, server = _client(), _server(_authenticator())
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)

    def strip(data: bytes) -> bytes:
        msg = parse_message(data)
        attrs = [a for a in msg.attributes if a.type != AttributeType.MESSAGE_INTEGRITY_SHA256]
        return serialize_message(
            StunMessage(msg.method, msg.message_class, msg.transaction_id, attrs)
        )

    _exchange(client, server, now=0.0, tamper=_when_class(MessageClass.SUCCESS, strip))
    assert _events(client) == []
    assert client.pending == 1


def test_no_supported_password_algorithm_fails_the_transaction() -> None:
    exotic = at.PASSWORD_ALGORITHMS.encode((PasswordAlgorithmParams(0x7777),), b"")
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    tamper = _when_class(
        MessageClass.ERROR, lambda d: _rewrite(d, AttributeType.PASSWORD_ALGORITHMS, exotic)
    )
    carried = _exchange(client, server, now=0.0, tamper=tamper)
    assert len(carried) == 2
    [event] = _events(client)
    assert isinstance(event, TransactionFailed)
    assert event.transaction_id == tid
    assert client.pending == 0


@pytest.mark.parametrize(
    "missing",
    [
        pytest.param(AttributeType.REALM, id="no-realm"),
        pytest.param(AttributeType.NONCE, id="no-nonce"),
    ],
)
def test_challenge_without_realm_or_nonce_is_reported(missing: AttributeType) -> None:
    client, server = _client(), _server(_authenticator())
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    carried = _exchange(
        client,
        server,
        now=0.0,
        tamper=_when_class(MessageClass.ERROR, lambda d: _rewrite(d, missing, None)),
    )
    assert len(carried) == 2
    assert _code(_only_response(client).response) == 401


@pytest.mark.parametrize(
    ("attr_type", "value"),
    [
        pytest.param(AttributeType.NONCE, b"\xff\xfe", id="nonce-not-utf8"),
        pytest.param(AttributeType.REALM, b"\xff\xfe", id="realm-not-utf8"),
        pytest.param(AttributeType.PASSWORD_ALGORITHMS, b"\x00\x02\x00", id="algorithms-cut"),
    ],
)
def test_malformed_challenge_is_treated_as_lost(attr_type: AttributeType, value: bytes) -> None:
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    tamper = _when_class(MessageClass.ERROR, lambda d: _rewrite(d, attr_type, value))
    _exchange(client, server, now=0.0, tamper=tamper)
    assert _events(client) == []
    assert client.pending == 1
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
        client.datagrams_to_send(now=deadline)
    assert _events(client) == [TransactionTimedOut(transaction_id=tid, server=SERVER)]


def test_realm_the_password_profile_disallows_fails_the_transaction() -> None:
    client, server = _client(), _server(_authenticator())
    tid = client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    tamper = _when_class(
        MessageClass.ERROR, lambda d: _rewrite(d, AttributeType.REALM, b"bad\trealm")
    )
    carried = _exchange(client, server, now=0.0, tamper=tamper)
    assert len(carried) == 2
    [event] = _events(client)
    assert isinstance(event, TransactionFailed)
    assert event.transaction_id == tid
    assert client.pending == 0


def test_ipv6_xor_address_is_reencoded_for_the_signed_retry() -> None:
    peer = Endpoint("2001:db8::42", 6000)
    client = _client()
    client.send_request(
        _binding().add(at.XOR_PEER_ADDRESS, peer), SERVER, now=0.0, credentials=ALICE
    )
    [dg] = client.datagrams_to_send(now=0.0)
    first = parse_message(dg.data)
    challenge = first.error_response(401).add(at.REALM, REALM).add(at.NONCE, "plain-nonce")
    client.receive_datagram(serialize_message(challenge), SERVER, now=0.1)
    [dg] = client.datagrams_to_send(now=0.1)
    retry = parse_message(dg.data)
    assert retry.transaction_id != first.transaction_id
    assert retry.get(at.XOR_PEER_ADDRESS) == peer


# -- the long-term authenticator alone ---------------------------------------------------


def _nonce(auth: LongTermAuthenticator, now: float = 0.0) -> str:
    rejected = auth.check(_binding_with_tid(), CLIENT, now=now)
    assert isinstance(rejected, Rejected)
    nonce = rejected.response.get(at.NONCE)
    assert nonce is not None
    return nonce


def _binding_with_tid() -> StunMessage:
    return StunMessage.request(Method.BINDING, bytes(range(12)))


def _signed(
    *attrs: tuple[at.AttrSpec[object], object],
    key: bytes = SHA256_KEY,
    integrity: Integrity = Integrity.SHA256,
) -> StunMessage:
    msg = _binding_with_tid()
    for spec, value in attrs:
        msg.add(spec, value)
    return parse_message(serialize_message(msg, key=key, integrity=integrity))


def _verdict_code(auth: LongTermAuthenticator, request: StunMessage) -> int | None:
    verdict = auth.check(request, CLIENT, now=1.0)
    if isinstance(verdict, Authenticated):
        return None
    return _code(verdict.response)


def _full(issued: str, **overrides: object) -> list[tuple[at.AttrSpec[object], object]]:
    values: dict[str, object] = {
        "username": "alice",
        "realm": REALM,
        "nonce": issued,
        "algorithms": BOTH_ALGORITHMS,
        "algorithm": PasswordAlgorithmParams(PasswordAlgorithm.SHA256),
    }
    values.update(overrides)
    specs = {
        "username": at.USERNAME,
        "realm": at.REALM,
        "nonce": at.NONCE,
        "algorithms": at.PASSWORD_ALGORITHMS,
        "algorithm": at.PASSWORD_ALGORITHM,
    }
    return [(specs[k], v) for k, v in values.items() if v is not None]  # type: ignore[misc]


def test_authenticator_accepts_a_correct_sha256_request() -> None:
    auth = _authenticator()
    verdict = auth.check(_signed(*_full(_nonce(auth))), CLIENT, now=1.0)
    assert verdict == Authenticated("alice", SHA256_KEY, Integrity.SHA256)


def test_authenticator_treats_a_request_without_algorithms_as_md5() -> None:
    auth = _authenticator()
    request = _signed(
        *_full(_nonce(auth), algorithms=None, algorithm=None),
        key=MD5_KEY,
        integrity=Integrity.SHA1,
    )
    verdict = auth.check(request, CLIENT, now=1.0)
    assert verdict == Authenticated("alice", MD5_KEY, Integrity.SHA1)


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        pytest.param({"username": None}, 400, id="no-username-or-userhash"),
        pytest.param({"realm": None}, 400, id="no-realm"),
        pytest.param({"nonce": None}, 400, id="no-nonce"),
        pytest.param({"realm": "other.org"}, 401, id="wrong-realm"),
        pytest.param({"nonce": "obMatJos2gAAAforged"}, 401, id="forged-nonce"),
        pytest.param({"username": "mallory"}, 401, id="unknown-user"),
        pytest.param({"algorithms": None}, 400, id="algorithm-without-algorithms"),
        pytest.param({"algorithm": None}, 400, id="algorithms-without-algorithm"),
        pytest.param(
            {"algorithms": (PasswordAlgorithmParams(PasswordAlgorithm.SHA256),)},
            400,
            id="algorithms-differ-from-offer",
        ),
        pytest.param(
            {"algorithm": PasswordAlgorithmParams(0x7777)}, 400, id="algorithm-not-offered"
        ),
    ],
)
def test_authenticator_rejects(overrides: dict[str, object], code: int) -> None:
    auth = _authenticator()
    assert _verdict_code(auth, _signed(*_full(_nonce(auth), **overrides))) == code


def test_authenticator_rejects_wrong_key_with_401_and_a_fresh_challenge() -> None:
    auth = _authenticator()
    verdict = auth.check(_signed(*_full(_nonce(auth)), key=b"wrong"), CLIENT, now=1.0)
    assert isinstance(verdict, Rejected)
    assert _code(verdict.response) == 401
    assert verdict.response.get(at.REALM) == REALM
    assert verdict.response.get(at.NONCE) is not None


def test_authenticator_rejects_nonce_of_another_client() -> None:
    auth = _authenticator()
    request = _signed(*_full(_nonce(auth)))
    verdict = auth.check(request, Endpoint("203.0.113.8", 50000), now=1.0)
    assert isinstance(verdict, Rejected)
    assert _code(verdict.response) == 401


def test_authenticator_answers_stale_nonce_with_438() -> None:
    auth = _authenticator(lifetime=10.0)
    verdict = auth.check(_signed(*_full(_nonce(auth))), CLIENT, now=100.0)
    assert isinstance(verdict, Rejected)
    assert _code(verdict.response) == 438
    assert verdict.response.get(at.NONCE) is not None


def test_algorithms_with_a_nonce_that_did_not_announce_them_is_400() -> None:
    auth = _authenticator(features=F(0))
    assert _verdict_code(auth, _signed(*_full(_nonce(auth)))) == 400


def test_authenticator_resolves_userhash() -> None:
    auth = _authenticator(features=F.PASSWORD_ALGORITHMS | F.USERNAME_ANONYMITY)
    attrs = [*_full(_nonce(auth), username=None), (at.USERHASH, userhash("alice", REALM))]
    verdict = auth.check(_signed(*attrs), CLIENT, now=1.0)  # type: ignore[arg-type]
    assert isinstance(verdict, Authenticated)
    assert verdict.username == "alice"


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(True, id="unknown-hash"),
        pytest.param(False, id="no-hash-lookup"),
    ],
)
def test_unresolvable_userhash_is_401(lookup: bool) -> None:
    users = StaticUsers(PASSWORDS, REALM)
    auth = LongTermAuthenticator(
        REALM,
        users.key,
        NonceIssuer(SECRET),
        username_for_hash=users.username_for_hash if lookup else None,
    )
    digest = userhash("mallory", REALM) if lookup else userhash("alice", REALM)
    attrs = [*_full(_nonce(auth), username=None), (at.USERHASH, digest)]
    assert _verdict_code(auth, _signed(*attrs)) == 401  # type: ignore[arg-type]


def test_static_users_hold_keys_for_every_algorithm() -> None:
    users = StaticUsers(PASSWORDS, REALM)
    assert users.key("alice", PasswordAlgorithm.SHA256) == SHA256_KEY
    assert users.key("alice", PasswordAlgorithm.MD5) == MD5_KEY
    assert users.key("mallory", PasswordAlgorithm.MD5) is None
    assert users.username_for_hash(userhash("bob", REALM)) == "bob"


# -- short-term credentials ------------------------------------------------------------


def _short_term_server() -> StunServer:
    return _server(ShortTermAuthenticator(PASSWORDS.get))


def test_short_term_request_and_response_are_signed() -> None:
    client, server = _client(), _short_term_server()
    tid = client.send_request(
        _binding(), SERVER, now=0.0, credentials=ShortTermCredentials("bob", "builder")
    )
    request, response = _exchange(client, server, now=0.0)
    assert request.get(at.USERNAME) == "bob"
    assert verify_integrity(request, short_term_key("builder"))
    assert verify_integrity(response, short_term_key("builder"))
    event = _only_response(client)
    assert event.transaction_id == tid
    assert event.is_success


def test_short_term_wrong_password_401_is_unsigned_and_treated_as_lost() -> None:
    client, server = _client(), _short_term_server()
    client.send_request(
        _binding(), SERVER, now=0.0, credentials=ShortTermCredentials("bob", "wrong")
    )
    _, response = _exchange(client, server, now=0.0)
    assert _code(response) == 401
    assert _events(client) == []
    assert client.pending == 1


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        pytest.param(_binding_with_tid(), 400, id="unsigned"),
        pytest.param(
            parse_message(serialize_message(_binding_with_tid(), key=b"builder")),
            400,
            id="no-username",
        ),
        pytest.param(
            parse_message(
                serialize_message(_binding_with_tid().add(at.USERNAME, "nobody"), key=b"x")
            ),
            401,
            id="unknown-user",
        ),
        pytest.param(
            parse_message(
                serialize_message(_binding_with_tid().add(at.USERNAME, "bob"), key=b"wrong")
            ),
            401,
            id="wrong-key",
        ),
    ],
)
def test_short_term_authenticator_rejects(request_: StunMessage, code: int) -> None:
    verdict = ShortTermAuthenticator(PASSWORDS.get).check(request_, CLIENT, now=0.0)
    assert isinstance(verdict, Rejected)
    assert _code(verdict.response) == code


def test_short_term_authenticator_answers_sha256_with_sha256() -> None:
    request = parse_message(
        serialize_message(
            _binding_with_tid().add(at.USERNAME, "bob"),
            key=b"builder",
            integrity=Integrity.SHA256,
        )
    )
    verdict = ShortTermAuthenticator(PASSWORDS.get).check(request, CLIENT, now=0.0)
    assert verdict == Authenticated("bob", b"builder", Integrity.SHA256)


def test_long_term_client_needs_no_challenge_from_an_open_server() -> None:
    client = _client()
    server = StunServer(StunServerConfig(primary=SERVER))
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    request, response = _exchange(client, server, now=0.0)
    assert request.integrity_offset == request.integrity_sha256_offset == -1
    assert response.message_class == MessageClass.SUCCESS
    assert _only_response(client).is_success


def test_signed_exchange_carries_fingerprints() -> None:
    client = StunClient(StunClientConfig(rng=random.Random(3), fingerprint=True))
    server = _server(_authenticator())
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)
    carried = _exchange(client, server, now=0.0)
    requests_and_success = [carried[0], carried[2], carried[3]]
    assert all(m.has_fingerprint for m in requests_and_success)
    assert verify_integrity(carried[3], SHA256_KEY)
    assert _only_response(client).is_success


def test_unknown_attribute_in_an_authenticated_request_gets_a_signed_420() -> None:
    """RFC 8489 §6.3.1: authentication first, then 420 - signed, so the client
    accepts it instead of discarding it and timing out."""
    client, server = _client(), _server(_authenticator())
    request = _binding().add_raw(0x7F01, bytes(4))
    client.send_request(request, SERVER, now=0.0, credentials=ALICE)
    carried = _exchange(client, server, now=0.0)
    event = _only_response(client)
    assert _code(event.response) == 420
    assert event.response.get(at.UNKNOWN_ATTRIBUTES) == (0x7F01,)
    assert carried[-1].integrity_sha256_offset >= 0  # the 420 is signed


def test_unknown_attribute_from_an_unauthenticated_client_gets_the_challenge_first() -> None:
    server = _server(_authenticator())
    request = serialize_message(
        StunMessage.request(Method.BINDING, bytes(12)).add_raw(0x7F01, bytes(4))
    )
    server.receive_datagram(request, CLIENT, local=SERVER, now=0.0)
    [answer] = server.datagrams_to_send(now=0.0)
    assert _code(parse_message(answer.data)) == 401


@pytest.mark.parametrize("reliable", [False, True], ids=["udp", "stream"])
def test_a_response_failing_integrity_is_lost_over_udp_and_fails_over_streams(
    reliable: bool,
) -> None:
    client = StunClient(StunClientConfig(rng=random.Random(3), reliable=reliable))
    server = _server(_authenticator())
    client.send_request(_binding(), SERVER, now=0.0, credentials=ALICE)

    def corrupt_success(data: bytes) -> bytes:
        msg = parse_message(data)
        if msg.message_class != MessageClass.SUCCESS:
            return data
        return data[:-1] + bytes([data[-1] ^ 1])  # breaks MESSAGE-INTEGRITY-SHA256

    _exchange(client, server, now=0.0, tamper=corrupt_success)
    events = _events(client)
    if reliable:
        [event] = events
        assert isinstance(event, TransactionFailed)
        assert "integrity" in event.reason
    else:
        assert events == []
        assert client.pending == 1  # still waiting, as if the answer were lost


def test_a_sha256_only_server_refuses_legacy_md5_clients() -> None:
    users = StaticUsers(PASSWORDS, REALM)
    auth = LongTermAuthenticator(
        REALM, users.key, NonceIssuer(SECRET), algorithms=(PasswordAlgorithm.SHA256,)
    )
    server = _server(auth)
    challenge = serialize_message(StunMessage.request(Method.BINDING, bytes(12)))
    server.receive_datagram(challenge, CLIENT, local=SERVER, now=0.0)
    nonce = parse_message(server.datagrams_to_send(now=0.0)[0].data).get(at.NONCE)
    assert nonce is not None
    legacy = StunMessage.request(Method.BINDING, bytes(range(12)))
    legacy.add(at.USERNAME, "alice").add(at.REALM, REALM).add(at.NONCE, nonce)
    server.receive_datagram(serialize_message(legacy, key=MD5_KEY), CLIENT, local=SERVER, now=0.0)
    assert _code(parse_message(server.datagrams_to_send(now=0.0)[0].data)) == 400
