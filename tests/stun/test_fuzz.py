"""Property tests: codec round trips, and mutated input never raising anything
but MalformedMessageError (parse) or anything at all (server, client, framer).

Deterministic: ``derandomize=True`` and no example database, so CI replays
exactly the same examples every run.
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint, Transport
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.attributes import ChangeRequest, ErrorCodeValue, PasswordAlgorithmParams
from natkit.stun.auth import LongTermAuthenticator, ShortTermAuthenticator, StaticUsers
from natkit.stun.constants import AttributeType, MessageClass, Method, SecurityFeature
from natkit.stun.credentials import NonceIssuer
from natkit.stun.framing import StreamFramer
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

FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None)

PRIMARY = Endpoint("192.0.2.1", 3478)
ALTERNATE = Endpoint("192.0.2.2", 3479)
CLIENT = Endpoint("203.0.113.7", 50000)
KEY = b"fuzz key"
REALM = "example.org"
USERS = {"alice": "wonderland"}
INTEGRITY_TYPES = frozenset(
    {
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.FINGERPRINT,
    }
)
ALL_SPECS: list[at.AttrSpec[Any]] = [v for v in vars(at).values() if isinstance(v, at.AttrSpec)]

# -- strategies -----------------------------------------------------------------------

tids = st.binary(min_size=12, max_size=12)
methods = st.integers(0, 0xFFF)
classes = st.sampled_from(list(MessageClass))
raw_attributes = st.lists(
    st.tuples(
        st.integers(0, 0xFFFF).filter(lambda t: t not in INTEGRITY_TYPES),
        st.binary(max_size=40),
    ),
    max_size=8,
)
endpoints = st.builds(
    lambda ip, port: Endpoint(str(ip), port),
    st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)),
    st.integers(0, 0xFFFF),
)
typed_values = st.one_of(
    st.tuples(st.sampled_from([at.XOR_MAPPED_ADDRESS, at.XOR_PEER_ADDRESS]), endpoints),
    st.tuples(st.sampled_from([at.MAPPED_ADDRESS, at.OTHER_ADDRESS]), endpoints),
    st.tuples(st.just(at.USERNAME), st.text(max_size=100)),
    st.tuples(st.sampled_from([at.REALM, at.NONCE, at.SOFTWARE]), st.text(max_size=200)),
    st.tuples(
        st.just(at.ERROR_CODE),
        st.builds(ErrorCodeValue, st.integers(300, 699), st.text(max_size=300)),
    ),
    st.tuples(st.just(at.UNKNOWN_ATTRIBUTES), st.tuples(st.integers(0, 0xFFFF))),
    st.tuples(st.just(at.CHANGE_REQUEST), st.builds(ChangeRequest, st.booleans(), st.booleans())),
    st.tuples(st.just(at.RESPONSE_PORT), st.integers(0, 0xFFFF)),
    st.tuples(
        st.just(at.PASSWORD_ALGORITHMS),
        st.lists(
            st.builds(PasswordAlgorithmParams, st.integers(0, 0xFFFF), st.binary(max_size=9)),
            max_size=4,
        ).map(tuple),
    ),
    st.tuples(st.just(at.USERHASH), st.binary(min_size=32, max_size=32)),
    st.tuples(st.sampled_from([at.PRIORITY, at.LIFETIME]), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(at.ICE_CONTROLLING), st.integers(0, 2**64 - 1)),
)


# -- round trips ----------------------------------------------------------------------


@FUZZ
@given(
    method=methods,
    cls=classes,
    tid=tids,
    attrs=raw_attributes,
    integrity=st.sampled_from([None, *Integrity]),
    fingerprint=st.booleans(),
    padding=st.integers(0, 255),
)
def test_generated_message_round_trips(
    method: int,
    cls: MessageClass,
    tid: bytes,
    attrs: list[tuple[int, bytes]],
    integrity: Integrity | None,
    fingerprint: bool,
    padding: int,
) -> None:
    msg = StunMessage(method, cls, tid)
    for atype, value in attrs:
        msg.add_raw(atype, value)
    data = serialize_message(
        msg,
        key=KEY if integrity else None,
        integrity=integrity or Integrity.SHA1,
        fingerprint=fingerprint,
        padding=padding,
    )
    parsed = parse_message(data)
    assert (parsed.method, parsed.message_class, parsed.transaction_id) == (method, cls, tid)
    body = [a for a in parsed.attributes if a.type not in INTEGRITY_TYPES]
    assert body == msg.attributes
    assert verify_integrity(parsed, KEY) is (integrity is not None)
    assert parsed.has_fingerprint is fingerprint
    # Integrity attributes already present are written as they are: the bytes come back.
    assert serialize_message(parsed, padding=padding) == data


@FUZZ
@given(tid=tids, values=st.lists(typed_values, min_size=1, max_size=6))
def test_typed_attributes_round_trip_through_messages(
    tid: bytes, values: list[tuple[at.AttrSpec[Any], Any]]
) -> None:
    msg = StunMessage.request(Method.BINDING, tid)
    for spec, value in values:
        msg.add(spec, value)
    parsed = parse_message(serialize_message(msg, fingerprint=True))
    for spec, value in values:
        assert value in parsed.get_all(spec)


@FUZZ
@given(tid=st.binary(min_size=16, max_size=16), attrs=raw_attributes)
def test_classic_message_round_trips(tid: bytes, attrs: list[tuple[int, bytes]]) -> None:
    if tid[:4] == b"\x21\x12\xa4\x42":
        tid = b"\x00" + tid[1:]
    msg = StunMessage.request(Method.BINDING, tid)
    for atype, value in attrs:
        msg.add_raw(atype, value)
    parsed = parse_message(serialize_message(msg), allow_classic=True)
    assert parsed.classic
    assert parsed.transaction_id == tid
    assert parsed.attributes == msg.attributes


# -- seeds for mutation ------------------------------------------------------------------

_VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "stun_rfc5769_vectors.json").read_text()
)["vectors"]
CLIENT_TID = bytes.fromhex("00112233445566778899aabb")


def _long_term_authenticator() -> LongTermAuthenticator:
    users = StaticUsers(USERS, REALM)
    issuer = NonceIssuer(
        b"secret", features=SecurityFeature.PASSWORD_ALGORITHMS | SecurityFeature.USERNAME_ANONYMITY
    )
    return LongTermAuthenticator(
        REALM, users.key, issuer, username_for_hash=users.username_for_hash
    )


def _servers() -> list[StunServer]:
    return [
        StunServer(StunServerConfig(primary=PRIMARY)),
        StunServer(
            StunServerConfig(
                primary=PRIMARY,
                alternate=ALTERNATE,
                rfc5780=True,
                authenticator=_long_term_authenticator(),
            )
        ),
        StunServer(
            StunServerConfig(
                primary=PRIMARY,
                alternate=ALTERNATE,
                rfc5780=True,
                authenticator=ShortTermAuthenticator(USERS.get),
            )
        ),
    ]


def _seed_messages() -> list[bytes]:
    """Valid requests and the responses real cores give to them."""
    seeds = [bytes.fromhex(v["hex"]) for v in _VECTORS]
    req = StunMessage.request(Method.BINDING, CLIENT_TID)
    seeds.append(serialize_message(req, fingerprint=True))
    seeds.append(
        serialize_message(
            StunMessage.request(Method.BINDING, CLIENT_TID)
            .add(at.CHANGE_REQUEST, ChangeRequest(True, True))
            .add(at.RESPONSE_PORT, 4000)
            .add(at.PADDING, bytes(7))
            .add(at.USERNAME, "alice"),
            key=b"wonderland",
            integrity=Integrity.BOTH,
        )
    )
    seeds.append(serialize_message(StunMessage.request(Method.BINDING, bytes(range(16)))))
    # A whole long-term exchange, so mutations reach the authenticator and client paths.
    client = StunClient(StunClientConfig(rng=random.Random(5)))
    server = _servers()[1]
    client.send_request(
        StunMessage.request(Method.BINDING, CLIENT_TID),
        PRIMARY,
        now=0.0,
        credentials=LongTermCredentials("alice", "wonderland"),
    )
    for _ in range(3):
        for dg in client.datagrams_to_send(now=0.0):
            seeds.append(dg.data)
            server.receive_datagram(dg.data, CLIENT, local=PRIMARY, now=0.0)
        for dg in server.datagrams_to_send(now=0.0):
            seeds.append(dg.data)
            client.receive_datagram(dg.data, PRIMARY, now=0.0)
    return seeds


SEEDS = _seed_messages()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "flip", "set", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
    if len(data) >= 20 and draw(st.booleans()):
        # Make the header consistent again, so the attribute walk is what gets tested.
        data += bytes(-len(data) % 4)
        data[2:4] = (len(data) - 20).to_bytes(2, "big")
    return bytes(data)


@st.composite
def restructured(draw: st.DrawFn) -> bytes:
    """A seed with attribute values replaced or added, re-serialized so that it
    passes the header checks and reaches the attribute decoders and the cores."""
    msg = parse_message(draw(st.sampled_from(SEEDS)), allow_classic=True)
    attrs = [a for a in msg.attributes if a.type not in INTEGRITY_TYPES]
    for _ in range(draw(st.integers(1, 3))):
        value = draw(st.binary(max_size=40))
        replace: bool = draw(st.booleans())
        if attrs and replace:
            i = draw(st.integers(0, len(attrs) - 1))
            attrs[i] = attrs[i]._replace(value=value)
        else:
            atype = draw(
                st.sampled_from([int(t) for t in AttributeType if t not in INTEGRITY_TYPES])
            )
            attrs.insert(draw(st.integers(0, len(attrs))), Attribute(atype, value))
    method = draw(st.sampled_from([msg.method, Method.BINDING, Method.ALLOCATE]))
    cls = draw(st.sampled_from([msg.message_class, *MessageClass]))
    out = StunMessage(method, cls, msg.transaction_id, attrs)
    return serialize_message(
        out,
        key=draw(st.sampled_from([None, b"wonderland", KEY])),
        integrity=draw(st.sampled_from(list(Integrity))),
        fingerprint=not msg.classic and draw(st.booleans()),
    )


hostile = st.one_of(mutated(), restructured())


# -- mutation: parse -----------------------------------------------------------------------


@FUZZ
@given(data=hostile, allow_classic=st.booleans())
def test_parse_of_mutated_message_raises_only_malformed(data: bytes, allow_classic: bool) -> None:
    try:
        msg = parse_message(data, allow_classic=allow_classic)
    except MalformedMessageError:
        return
    repr(msg)
    verify_integrity(msg, KEY)
    for spec in ALL_SPECS:
        with contextlib.suppress(MalformedMessageError):
            msg.get_all(spec)


# -- mutation: the cores ---------------------------------------------------------------------


@FUZZ
@given(
    data=hostile,
    which=st.integers(0, 2),
    local=st.sampled_from([PRIMARY, ALTERNATE, Endpoint("192.0.2.1", 3479)]),
    transport=st.sampled_from([Transport.UDP, Transport.TCP]),
)
def test_server_never_raises_and_only_answers_the_source_ip(
    data: bytes, which: int, local: Endpoint, transport: Transport
) -> None:
    server = _servers()[which]
    server.receive_datagram(data, CLIENT, local=local, now=1.0, transport=transport)
    for dg in server.datagrams_to_send(now=1.0):
        assert dg.remote.host == CLIENT.host
        resp = parse_message(dg.data, allow_classic=True)
        assert resp.message_class in (MessageClass.SUCCESS, MessageClass.ERROR)


@FUZZ
@given(data=st.lists(hostile, min_size=1, max_size=3), short_term=st.booleans())
def test_client_never_raises_on_mutated_responses(data: list[bytes], short_term: bool) -> None:
    client = StunClient(StunClientConfig(rng=random.Random(5)))
    creds = (
        ShortTermCredentials("alice", "wonderland")
        if short_term
        else LongTermCredentials("alice", "wonderland")
    )
    client.send_request(
        StunMessage.request(Method.BINDING, CLIENT_TID), PRIMARY, now=0.0, credentials=creds
    )
    for i, chunk in enumerate(data):
        client.receive_datagram(chunk, PRIMARY, now=0.1 * (i + 1))
        client.datagrams_to_send(now=0.1 * (i + 1))
    while client.next_event() is not None:
        pass
    assert client.pending <= 1


@FUZZ
@given(data=st.lists(hostile, max_size=3), channel_data=st.booleans(), cut=st.integers(1, 7))
def test_framer_raises_only_malformed(data: list[bytes], channel_data: bool, cut: int) -> None:
    framer = StreamFramer(channel_data=channel_data)
    stream = b"".join(data)
    try:
        for i in range(0, len(stream), cut):
            for message in framer.feed(stream[i : i + cut]):
                assert len(message) >= 4
    except MalformedMessageError:
        pass
