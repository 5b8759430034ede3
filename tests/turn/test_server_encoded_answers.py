"""The Allocate and Refresh successes are written from encoded attributes
(``encode_message``), not through a StunMessage: byte for byte what
``serialize_message`` makes of the same attributes, with the client's key,
its integrity (SHA-1 or SHA-256), SOFTWARE and FINGERPRINT when the request
had one (RFC 8489 §14.5-14.7, RFC 8656 §7.2, §8)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.stun import attributes as at
from natkit.stun.constants import AttributeType, MessageClass, Method, PasswordAlgorithm
from natkit.stun.message import Integrity, StunMessage, serialize_message
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol
from tests.turn.server_helpers import Client, make_server

ORDER = [
    AttributeType.XOR_RELAYED_ADDRESS,
    AttributeType.LIFETIME,
    AttributeType.RESERVATION_TOKEN,
    AttributeType.XOR_MAPPED_ADDRESS,
    AttributeType.SOFTWARE,
]
_TRAILER = {AttributeType.MESSAGE_INTEGRITY, AttributeType.MESSAGE_INTEGRITY_SHA256}


def general_bytes(resp: StunMessage, key: bytes, integrity: Integrity, fingerprint: bool) -> bytes:
    """What serialize_message writes for the answer's own attributes."""
    rebuilt = StunMessage(resp.method, resp.message_class, resp.transaction_id)
    for a in resp.attributes:
        if a.type not in _TRAILER and a.type != AttributeType.FINGERPRINT:
            rebuilt.add_raw(a.type, a.value)
    return serialize_message(rebuilt, key=key, integrity=integrity, fingerprint=fingerprint)


@settings(max_examples=60, deadline=None)
@given(
    client=st.one_of(
        st.builds(
            lambda b, p: Endpoint(f"198.51.100.{b}", p), st.integers(1, 254), st.integers(1, 65535)
        ),
        st.builds(lambda h: Endpoint(f"2001:db8::{h:x}", 5), st.integers(1, 0xFFFF)),
    ),
    sha256=st.booleans(),
    fingerprint=st.booleans(),
    software=st.sampled_from([None, "natkit", "späť 1.0"]),
    extra=st.sampled_from(["none", "even-port-r", "dual"]),
    lifetime=st.sampled_from([None, 700, 5000]),
)
def test_the_encoded_successes_are_the_general_paths_bytes(
    client: Endpoint,
    sha256: bool,
    fingerprint: bool,
    software: str | None,
    extra: str,
    lifetime: int | None,
) -> None:
    _, driver = make_server(software=software)
    c = Client(
        driver,
        client=client,
        algorithm=PasswordAlgorithm.SHA256 if sha256 else None,
        integrity=Integrity.SHA256 if sha256 else Integrity.SHA1,
    )
    attrs: list[tuple[Any, Any]] = [(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)]
    if extra == "even-port-r":
        attrs.append((tat.EVEN_PORT, True))
    elif extra == "dual":
        attrs.append((tat.ADDITIONAL_ADDRESS_FAMILY, 0x02))
    c.learn(c.responses(c.send_raw(c.build(Method.ALLOCATE, attrs, sign=False), 0.0))[-1])
    answers = c.responses(c.send_raw(c.build(Method.ALLOCATE, attrs, fingerprint=fingerprint), 1.0))
    first = [] if lifetime is None else [(at.LIFETIME, lifetime)]
    for now, refresh in ((2.0, first), (3.0, [(at.LIFETIME, 0)])):  # ... then delete it
        data = c.build(Method.REFRESH, refresh, fingerprint=fingerprint)
        answers += c.responses(c.send_raw(data, now))
    assert len(answers) == 3
    types = [a.type for a in answers[0].attributes if a.type in ORDER]
    assert types == sorted(types, key=ORDER.index)  # RFC 8656 §7.2's order, as before
    assert types.count(AttributeType.XOR_RELAYED_ADDRESS) == (2 if extra == "dual" else 1)
    assert (AttributeType.RESERVATION_TOKEN in types) == (extra == "even-port-r")
    for answer in answers:
        assert answer.message_class == MessageClass.SUCCESS, answer
        assert answer.has_fingerprint == fingerprint
        assert (
            (answer.get(at.SOFTWARE) == software) if software else answer.get(at.SOFTWARE) is None
        )
        assert answer.raw == general_bytes(answer, c.key, c.integrity, fingerprint)
