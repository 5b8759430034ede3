"""Bad input never raises out of the TURN server core and never stops it serving
(bounded Hypothesis runs: garbage, and single-byte mutations of valid messages)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natkit.addr import Transport
from natkit.stun.constants import Method
from natkit.turn import attributes as tat
from natkit.turn.channel import pack_channel_data
from natkit.turn.server import TurnServer

from .server_helpers import CLIENT, PEER, SERVER, Client, code_of, make_server, relayed

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _ready() -> tuple[Client, TurnServer, list[bytes]]:
    """A server with one allocation, a permission and a channel, plus valid
    messages of every kind to mutate."""
    server, driver = make_server()
    c = Client(driver)
    c.allocate(0.0)
    c.bind(0x4000, PEER)
    samples = [
        c.build(Method.ALLOCATE, [(tat.REQUESTED_TRANSPORT, 17)]),
        c.build(Method.REFRESH),
        c.build(Method.CHANNEL_BIND, [(tat.CHANNEL_NUMBER, 0x4001)]),
        c.build(Method.CONNECTION_BIND, [(tat.CONNECTION_ID, 1)]),
        pack_channel_data(0x4000, b"payload"),
    ]
    return c, server, samples


CLIENT_STATE = _ready()


def _still_serving(c: Client, server: TurnServer) -> None:
    assert server.stats.internal_errors == 0
    resp = c.refresh(now=1.0)
    assert code_of(resp) == 0


@FUZZ
@given(data=st.binary(max_size=200), transport=st.sampled_from(list(Transport)))
def test_garbage_from_clients(data: bytes, transport: Transport) -> None:
    _c, server, _ = CLIENT_STATE
    server.receive_datagram(data, CLIENT, local=SERVER, transport=transport, now=1.0)
    server.datagrams_to_send()
    assert (
        server.relay_client_packet(data, CLIENT, SERVER, 1.0, transport=Transport.UDP) is None
        or data[:1] == b"\x40"
    )
    assert server.stats.internal_errors == 0


@FUZZ
@given(index=st.integers(0, 4), position=st.integers(0, 400), value=st.integers(0, 255))
def test_mutated_valid_messages(index: int, position: int, value: int) -> None:
    _c, server, samples = CLIENT_STATE
    sample = bytearray(samples[index])
    sample[position % len(sample)] = value
    server.receive_datagram(bytes(sample), CLIENT, local=SERVER, now=1.0)
    server.datagrams_to_send()
    while server.next_event() is not None:
        pass
    assert server.stats.internal_errors == 0


@FUZZ
@given(index=st.integers(0, 4), cut=st.integers(0, 400))
def test_truncated_valid_messages(index: int, cut: int) -> None:
    _c, server, samples = CLIENT_STATE
    sample = samples[index]
    server.receive_datagram(sample[: cut % len(sample)], CLIENT, local=SERVER, now=1.0)
    server.datagrams_to_send()
    assert server.stats.internal_errors == 0


@FUZZ
@given(data=st.binary(max_size=300))
def test_garbage_from_peers(data: bytes) -> None:
    _c, server, _ = CLIENT_STATE
    relay = server.allocations()[0].relays[0]
    server.receive_peer_datagram(data, PEER, relay=relay, now=1.0)
    out = server.datagrams_to_send()
    assert len(out) == 1  # peer bytes are opaque: relayed on the channel as they are
    assert server.stats.internal_errors == 0


def test_fuzzed_server_still_serves() -> None:
    c, server, _ = CLIENT_STATE
    _still_serving(c, server)


def test_garbage_to_a_fresh_server_of_every_kind() -> None:
    server, driver = make_server()
    c = Client(driver)
    for data in (b"", b"\x00", b"\x00\x03\x00\x00" + bytes(16), bytes(20), b"\xff" * 40):
        server.receive_datagram(data, CLIENT, local=SERVER, now=0.0)
        server.receive_peer_datagram(data, PEER, relay=SERVER, now=0.0)
        assert server.relay_peer_packet(data, PEER, SERVER, 0.0) is None
    assert server.stats.internal_errors == 0
    assert code_of(c.allocate(0.0)) == 0
    assert relayed(c.allocate(0.0)) == []  # 437 for the second one


_ATTR_TYPES = st.one_of(
    st.sampled_from(
        [
            0x000C,
            0x000D,
            0x0012,
            0x0013,
            0x0017,
            0x0018,
            0x0019,
            0x001A,
            0x0022,
            0x002A,
            0x8000,
            0x0006,
            0x0014,
            0x0015,
            0x001D,
            0x8002,
            0x001E,
        ]
    ),
    st.integers(0, 0xFFFF),
)
_METHODS = st.sampled_from(
    [
        Method.ALLOCATE,
        Method.REFRESH,
        Method.CREATE_PERMISSION,
        Method.CHANNEL_BIND,
        Method.CONNECT,
        Method.CONNECTION_BIND,
        Method.SEND,
        0x0FFF,
    ]
)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(
    method=_METHODS,
    attrs=st.lists(st.tuples(_ATTR_TYPES, st.binary(max_size=24)), max_size=6),
    transport=st.sampled_from([Transport.UDP, Transport.TCP]),
    allocate_first=st.booleans(),
)
def test_signed_requests_with_arbitrary_attributes(
    method: int, attrs: list[tuple[int, bytes]], transport: Transport, allocate_first: bool
) -> None:
    """Authentic requests whose attribute values are garbage reach every
    decoder behind authentication: answered or dropped, never raised."""
    from natkit.stun import attributes as at
    from natkit.stun.attributes import PasswordAlgorithmParams
    from natkit.stun.constants import MessageClass
    from natkit.stun.message import Integrity, StunMessage, serialize_message

    server, driver = make_server()
    c = Client(driver, transport=transport)
    if allocate_first:
        c.allocate(0.0, protocol=6 if transport.is_stream else 17)
    else:
        c.request(Method.BINDING, now=0.0)
        c.request(Method.REFRESH, now=0.0)
    assert c.nonce is not None and c.offered is not None
    m = StunMessage(method, MessageClass.REQUEST, c.tid())
    for atype, value in attrs:
        m.add_raw(atype, value)
    m.add(at.USERNAME, c.username).add(at.REALM, c.realm).add(at.NONCE, c.nonce)
    m.add(at.PASSWORD_ALGORITHMS, c.offered)
    m.add(at.PASSWORD_ALGORITHM, PasswordAlgorithmParams(2))
    raw = serialize_message(m, key=c.key, integrity=Integrity.SHA256)
    server.receive_datagram(raw, CLIENT, local=SERVER, transport=transport, now=1.0)
    driver.pump(1.0)
    server.handle_timer(now=5000.0)
    driver.pump(5000.0)
    assert server.stats.internal_errors == 0
    assert all(v == 0 for k, v in server.table_sizes().items() if k != "timers")
