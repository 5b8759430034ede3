"""The 401 challenge from a template (``_ServerAuth._challenge_bytes``) is,
byte for byte, what the general path builds: the authenticator's challenge
(REALM, the client's nonce, PASSWORD-ALGORITHMS when announced), SOFTWARE,
and FINGERPRINT when the request had one (RFC 8489 §9.2.4, §14.7)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.stun.auth import Rejected
from natkit.stun.constants import AttributeType, ErrorCode, MessageClass, Method, PasswordAlgorithm
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.turn.credentials import CombinedCredentials, RestCredentials, StaticCredentials
from tests.turn.server_helpers import REALM, SERVER, make_server

METHODS = [
    Method.ALLOCATE,
    Method.REFRESH,
    Method.CREATE_PERMISSION,
    Method.CHANNEL_BIND,
    Method.CONNECT,
]
CLIENTS = st.one_of(
    st.builds(
        lambda a, b, port: Endpoint(f"198.51.{a}.{b}", port),
        st.integers(0, 255),
        st.integers(1, 254),
        st.integers(1024, 65535),
    ),
    st.builds(
        lambda h, port: Endpoint(f"2001:db8::{h:x}", port), st.integers(1, 0xFFFF), st.just(5)
    ),
)


def general_answer(server: object, request: StunMessage, client: Endpoint, now: float) -> bytes:
    """What _handle_request sent before the template: check(), then _send()."""
    verdict = server._auth.check(request, client, now=now)  # type: ignore[attr-defined]
    assert isinstance(verdict, Rejected)
    resp = verdict.response
    software = server._software  # type: ignore[attr-defined]
    if software is not None:
        resp.add_raw(AttributeType.SOFTWARE, software)
    return serialize_message(resp, fingerprint=request.has_fingerprint)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(METHODS),
    tid=st.binary(min_size=12, max_size=12),
    client=CLIENTS,
    fingerprint=st.booleans(),
    software=st.sampled_from([None, "natkit", "späť 1.0"]),
    algorithms=st.sampled_from(
        [(PasswordAlgorithm.SHA256, PasswordAlgorithm.MD5), (PasswordAlgorithm.MD5,)]
    ),
    rest=st.booleans(),
    now=st.floats(0, 1e6),
    extra=st.booleans(),
)
def test_the_template_challenge_is_the_general_paths_bytes(
    method: int,
    tid: bytes,
    client: Endpoint,
    fingerprint: bool,
    software: str | None,
    algorithms: tuple[PasswordAlgorithm, ...],
    rest: bool,
    now: float,
    extra: bool,
) -> None:
    users = StaticCredentials.from_passwords({"alice": "a"}, REALM)
    # A REST secret: USERHASH cannot be resolved for every user, so the nonce
    # announces no anonymity (another nonce prefix).
    credentials = CombinedCredentials([users, RestCredentials(["s"], REALM)]) if rest else users
    server, _ = make_server(credentials, software=software, algorithms=algorithms)
    request = StunMessage(method, MessageClass.REQUEST, tid)
    if extra:  # attributes the challenge must not echo
        request.add_raw(AttributeType.LIFETIME, bytes(4))
        request.add_raw(0x7F31, b"unknown, comprehension-required")
    data = serialize_message(request, fingerprint=fingerprint)
    expected = general_answer(server, parse_message(data), client, now)
    server.receive_datagram(data, client, local=SERVER, now=now)
    (sent,) = server.datagrams_to_send()
    assert sent.data == expected
    answer = parse_message(sent.data)  # and it parses: FINGERPRINT checked
    assert answer.has_fingerprint is fingerprint and answer.transaction_id == tid
    assert answer.error is not None and answer.error.code == ErrorCode.UNAUTHENTICATED


def test_the_challenge_keeps_to_the_per_source_limit() -> None:
    server, _ = make_server(unauthenticated_rate=1.0, unauthenticated_burst=2.0)
    client = Endpoint("198.51.100.9", 4000)
    answered = 0
    for i in range(5):
        req = StunMessage(Method.ALLOCATE, MessageClass.REQUEST, i.to_bytes(12, "big"))
        server.receive_datagram(serialize_message(req), client, local=SERVER, now=10.0)
        for dg in server.datagrams_to_send():
            assert parse_message(dg.data).error.code == ErrorCode.UNAUTHENTICATED  # type: ignore[union-attr]
            answered += 1
    assert answered == 2 and server.stats.rate_limited == 3
