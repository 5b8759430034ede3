"""Whatever arrives, receive_datagram never raises (STYLE: drop or answer 400)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent
from natkit.stun.constants import AttributeType, MessageClass, Method
from natkit.stun.credentials import short_term_key
from natkit.stun.message import Attribute, StunMessage, serialize_message
from tests.ice.test_agent_harness import as_remote, config, host, relay

LOCAL = host("192.0.2.1", 5000)
PEER = Endpoint("192.0.2.2", 6000)
ATTR_TYPES = [int(t) for t in AttributeType] + [0x0033, 0xC001]


def fresh_agent(controlling: bool, lite: bool) -> IceAgent:
    ag = IceAgent(config(40, lite=lite), controlling=controlling)
    ag.add_stream()
    ag.add_local_candidate(0, LOCAL)
    ag.set_remote_credentials(0, "peer", "peerpassword0123456789")
    ag.add_remote_candidate(0, as_remote(host("192.0.2.2", 6000)))
    return ag


def drive(ag: IceAgent, data: bytes) -> None:
    ag.receive_datagram(data, PEER, local=LOCAL.address, now=1.0)
    ag.handle_timer(now=1.0)
    ag.datagrams_to_send(now=1.0)
    while ag.next_event() is not None:
        pass
    ag.get_timer()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), controlling=st.booleans(), lite=st.booleans())
def test_random_bytes_never_raise(data: bytes, controlling: bool, lite: bool) -> None:
    drive(fresh_agent(controlling, lite), data)


attribute = st.tuples(st.sampled_from(ATTR_TYPES), st.binary(max_size=40))


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from([Method.BINDING, Method.ALLOCATE, 0x0FFF]),
    cls=st.sampled_from(list(MessageClass)),
    attrs=st.lists(attribute, max_size=8),
    sign=st.sampled_from(["local", "remote", "none", "wrong"]),
    good_username=st.booleans(),
    controlling=st.booleans(),
    lite=st.booleans(),
)
def test_random_stun_messages_never_raise(
    method: int,
    cls: MessageClass,
    attrs: list[tuple[int, bytes]],
    sign: str,
    good_username: bool,
    controlling: bool,
    lite: bool,
) -> None:
    ag = fresh_agent(controlling, lite)
    # Let the agent send a check so that responses can match a transaction.
    ag.handle_timer(now=0.0)
    sent = ag.datagrams_to_send(now=0.0)
    tid = sent[0].data[8:20] if sent else bytes(12)
    msg = StunMessage(method, cls, tid)
    if good_username:
        msg.attributes.append(
            Attribute(int(AttributeType.USERNAME), f"{ag.local_credentials(0).ufrag}:peer".encode())
        )
    msg.attributes.extend(Attribute(t, v) for t, v in attrs)
    key = {
        "local": short_term_key(ag.local_credentials(0).pwd),
        "remote": short_term_key("peerpassword0123456789"),
        "none": None,
        "wrong": b"x",
    }[sign]
    drive(ag, serialize_message(msg, key=key, fingerprint=True))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.6),
    a_controlling=st.booleans(),
    b_controlling=st.booleans(),
    aggressive=st.booleans(),
    components=st.integers(1, 2),
)
def test_lossy_network_always_ends_connected_or_failed(
    seed: int,
    loss: float,
    a_controlling: bool,
    b_controlling: bool,
    aggressive: bool,
    components: int,
) -> None:
    """Whatever is lost, the agents never raise or spin, an agent that is not
    done (connected or failed) still has a timer armed (no dead state), and
    with moderate loss each stream ends connected or failed (RFC 8445
    §8.1.2) within a few check timeouts."""
    import random

    from natkit.ice.events import ChecksCompleted, IceFailed
    from tests.ice.test_agent_harness import Net, config, exchange

    drop = random.Random(seed)
    net = Net(delay=0.02)
    net.blocked = lambda s, d: drop.random() < loss
    a = net.add(IceAgent(config(seed, aggressive_nomination=aggressive), controlling=a_controlling))
    b = net.add(IceAgent(config(seed + 1), controlling=b_controlling))
    a.add_stream(components)
    b.add_stream(components)
    comps = range(1, components + 1)
    a_cands = [host("192.0.2.1", 5000 + c, c) for c in comps]
    a_cands += [host("192.0.2.3", 5000 + c, c, pref=1000) for c in comps]
    a_cands += [relay("198.51.100.9", 7000 + c, c) for c in comps]
    exchange(net, a, b, a_cands, [host("192.0.2.2", 6000 + c, c) for c in comps])

    def done(agent: IceAgent) -> bool:
        return bool(net.of(agent, ChecksCompleted) or net.of(agent, IceFailed))

    net.run(120.0, lambda: done(a) and done(b))
    for agent in (a, b):
        assert done(agent) or agent.get_timer() is not None
    if loss <= 0.25:
        assert done(a)
        assert done(b) or net.of(a, IceFailed)  # a controlled peer may wait for a nomination


@settings(max_examples=150, deadline=None)
@given(
    attrs=st.lists(attribute, max_size=6),
    cls=st.sampled_from(list(MessageClass)),
    sign=st.sampled_from(["local", "remote", "none"]),
    which=st.integers(0, 50),
)
def test_random_messages_to_a_connected_agent_never_raise_or_break_it(
    attrs: list[tuple[int, bytes]], cls: MessageClass, sign: str, which: int
) -> None:
    from natkit.ice.events import ChecksCompleted, DataReceived
    from tests.ice.test_agent_harness import Net, exchange

    net = Net()
    a = net.add(IceAgent(config(41), controlling=True))
    b = net.add(IceAgent(config(42), controlling=False))
    a.add_stream()
    b.add_stream()
    b_host = host("192.0.2.2", 6000)
    exchange(net, a, b, [LOCAL, host("198.51.100.9", 7000)], [b_host])
    net.run(2.0)
    assert net.of(a, ChecksCompleted)
    tids = list(a._checks)  # in-flight consent checks: responses can match them
    tid = tids[which % len(tids)] if tids else bytes(12)
    msg = StunMessage(Method.BINDING, cls, tid)
    msg.attributes.extend(Attribute(t, v) for t, v in attrs)
    key = {
        "local": short_term_key(a.local_credentials(0).pwd),
        "remote": short_term_key(b.local_credentials(0).pwd),
        "none": None,
    }[sign]
    a.receive_datagram(
        serialize_message(msg, key=key, fingerprint=True),
        b_host.address,
        local=LOCAL.address,
        now=net.now,
    )
    net.run(1.0)
    assert a.send_data(0, 1, b"\x80still", now=net.now)
    net.run(0.1)
    assert net.of(b, DataReceived)[-1].data == b"\x80still"
