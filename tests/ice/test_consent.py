"""Consent freshness (RFC 7675), keepalives (RFC 8445 §11) and hot-spare failover."""

from __future__ import annotations

import itertools

import pytest

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent
from natkit.ice.candidate import CandidateType
from natkit.ice.events import (
    ChecksCompleted,
    ConsentLost,
    DataReceived,
    IceFailed,
    SelectedPairChanged,
)
from natkit.stun.constants import MessageClass
from natkit.stun.message import parse_message
from tests.ice.test_agent_harness import Net, config, exchange, host, relay

A_HOST = host("192.0.2.1", 5000)
A_RELAY = relay("198.51.100.9", 7000)
B_HOST = host("192.0.2.2", 6000)
HOSTS = {A_HOST.address.host, B_HOST.address.host}


def connected(seed: int, **kw: object) -> tuple[Net, IceAgent, IceAgent]:
    net = Net()
    a = net.add(IceAgent(config(seed, **kw), controlling=True))
    b = net.add(IceAgent(config(seed + 1, **kw), controlling=False))
    a.add_stream()
    b.add_stream()
    exchange(net, a, b, [A_HOST, A_RELAY], [B_HOST])
    net.run(5.0, lambda: bool(net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)))
    assert net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)
    return net, a, b


def test_consent_lost_30_s_after_the_path_goes_silent() -> None:
    net, a, _b = connected(20, hot_spares=False)
    net.run(10.0)
    cut = net.now
    net.blocked = lambda s, d: True
    net.run(40.0, lambda: bool(net.of(a, ConsentLost)))
    ((t, lost),) = net.timed(a, ConsentLost)
    assert isinstance(lost, ConsentLost)
    # The last response came at most one randomized interval (6 s) before the cut.
    assert cut + 30.0 - 6.0 <= t <= cut + 30.0 + 1e-6
    assert (lost.local.address, lost.remote.address) == (A_HOST.address, B_HOST.address)
    assert net.of(a, IceFailed)[-1].reason == "consent lost"
    assert not a.send_data(0, 1, b"\x80x", now=net.now)
    assert not net.of(a, SelectedPairChanged)


def test_consent_checks_every_5_s_randomized() -> None:
    net, a, _ = connected(21, hot_spares=False)
    start = net.now
    requests: list[float] = []
    original = a.datagrams_to_send

    def spy(*, now: float) -> list:  # type: ignore[type-arg]
        out = original(now=now)
        for data, local, remote in out:
            on_pair = local == A_HOST.address and remote == B_HOST.address
            if on_pair and parse_message(data).message_class is MessageClass.REQUEST:
                requests.append(now)
        return out

    a.datagrams_to_send = spy  # type: ignore[method-assign]
    net.run(60.0)
    gaps = [y - x for x, y in itertools.pairwise(requests)]
    assert requests[0] - start <= 6.0
    assert gaps and all(4.0 - 1e-9 <= g <= 6.0 + 1e-9 for g in gaps)
    assert net.of(a, ConsentLost) == []


def test_consent_with_hot_spares_and_no_spare_still_expires_at_30_s() -> None:
    net = Net()
    a = net.add(IceAgent(config(22), controlling=True))
    b = net.add(IceAgent(config(23), controlling=False))
    a.add_stream()
    b.add_stream()
    exchange(net, a, b, [A_HOST], [B_HOST])
    net.run(5.0)
    cut = net.now
    net.blocked = lambda s, d: True
    net.run(40.0, lambda: bool(net.of(a, ConsentLost) and net.of(b, ConsentLost)))
    for agent in (a, b):
        ((t, _),) = net.timed(agent, ConsentLost)
        assert cut + 29.0 <= t <= cut + 30.0 + 1e-6
        assert not net.of(agent, SelectedPairChanged)


def test_hot_spare_takes_over_within_2_s_when_the_direct_path_is_cut() -> None:
    net, a, b = connected(24)
    assert a.selected_pair(0, 1) is not None
    local, _ = a.selected_pair(0, 1)  # type: ignore[misc]
    assert local.type is CandidateType.HOST
    net.run(3.0)  # the relayed pair became a checked spare
    cut = net.now
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    net.run(5.0, lambda: bool(net.of(a, SelectedPairChanged) and net.of(b, SelectedPairChanged)))
    for agent in (a, b):
        ((t, change),) = net.timed(agent, SelectedPairChanged)
        assert isinstance(change, SelectedPairChanged)
        assert t - cut <= 2.0, f"switched {t - cut:.2f} s after the cut"
        assert change.reason in ("failover", "nomination")
    a_change = net.of(a, SelectedPairChanged)[0]
    assert a_change.local.type is CandidateType.RELAYED
    assert net.of(b, SelectedPairChanged)[0].remote.address == A_RELAY.address
    # Media resumes both ways over the relay, with no offer/answer.
    assert a.send_data(0, 1, b"\x80a", now=net.now)
    assert b.send_data(0, 1, b"\x80b", now=net.now)
    net.run(0.1)
    assert net.of(b, DataReceived)[-1].data == b"\x80a"
    assert net.of(a, DataReceived)[-1].data == b"\x80b"
    net.run(40.0)  # and it stays there: no consent loss, no flapping
    assert not net.of(a, ConsentLost) and not net.of(b, ConsentLost)
    assert len(net.of(a, SelectedPairChanged)) == 1
    assert len(net.of(b, SelectedPairChanged)) == 1


def test_a_dead_spare_is_not_switched_to() -> None:
    net, a, b = connected(25)
    net.run(3.0)
    relay_dead = A_RELAY.address
    net.blocked = lambda s, d: relay_dead in (s, d)
    net.run(3.0)
    net.blocked = lambda s, d: True
    net.run(5.0)
    assert not net.of(a, SelectedPairChanged)
    assert not net.of(b, SelectedPairChanged)


def test_keepalive_indication_when_nothing_else_is_sent() -> None:
    # A lite agent sends no consent checks: §11 keepalives keep its path open.
    net = Net()
    full = net.add(IceAgent(config(26), controlling=True))
    lite = net.add(IceAgent(config(27, lite=True), controlling=False))
    full.add_stream()
    lite.add_stream()
    full.set_remote_lite()
    exchange(net, full, lite, [A_HOST], [B_HOST])
    net.run(2.0)
    sent: list[tuple[float, MessageClass]] = []
    original = lite.datagrams_to_send

    def spy(*, now: float) -> list:  # type: ignore[type-arg]
        out = original(now=now)
        for data, _, _ in out:
            msg = parse_message(data)
            if msg.message_class is MessageClass.INDICATION:
                sent.append((now, msg.message_class))
        return out

    lite.datagrams_to_send = spy  # type: ignore[method-assign]
    net.run(40.0)
    assert 2 <= len(sent) <= 3  # every Tr = 15 s
    assert not net.of(full, ConsentLost)


def test_endpoint_helper_is_hashable_for_blocking_rules() -> None:
    assert Endpoint("192.0.2.1", 1) in {Endpoint("192.0.2.1", 1)}


def test_relay_down_switches_to_the_other_turn_server_within_2_s() -> None:
    # ECC §6.4: a relay disappears mid-call; the allocation on a second TURN
    # server is the hot spare. No direct path at all.
    relay1 = relay("198.51.100.9", 7000, server="198.51.100.50", pref=65535)
    relay2 = relay("203.0.113.9", 7000, server="203.0.113.50", pref=30000)
    net = Net()
    a = net.add(IceAgent(config(28), controlling=True))
    b = net.add(IceAgent(config(29), controlling=False))
    a.add_stream()
    b.add_stream()
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    exchange(net, a, b, [A_HOST, relay1, relay2], [B_HOST])
    net.run(5.0)
    sel = a.selected_pair(0, 1)
    assert sel is not None and sel[0].address == relay1.address
    cut = net.now
    dead = relay1.address
    net.blocked = lambda s, d: (s.host in HOSTS and d.host in HOSTS) or dead in (s, d)
    net.run(5.0)
    for agent in (a, b):
        ((t, change),) = net.timed(agent, SelectedPairChanged)
        assert isinstance(change, SelectedPairChanged)
        assert t - cut <= 2.0
    assert a.selected_pair(0, 1)[0].address == relay2.address  # type: ignore[index]
    assert b.selected_pair(0, 1)[1].address == relay2.address  # type: ignore[index]
    assert a.send_data(0, 1, b"\x80a", now=net.now)
    net.run(0.1)
    assert net.of(b, DataReceived)[-1].data == b"\x80a"


def test_controlled_agent_follows_the_controlling_agents_renomination() -> None:
    # Only the controlling side notices: B->A traffic on the direct path is
    # lost, so A's consent checks time out; B keeps hearing A's checks and
    # answering (its answers are lost), and moves when A re-nominates.
    net, a, b = connected(30)
    net.run(3.0)
    cut = net.now
    a_ip, b_ip = A_HOST.address.host, B_HOST.address.host
    net.blocked = lambda s, d: s.host == b_ip and d.host == a_ip
    net.run(5.0)
    ((ta_, _),) = net.timed(a, SelectedPairChanged)
    changes_b = net.timed(b, SelectedPairChanged)
    assert changes_b and changes_b[-1][0] - cut <= 2.0
    assert ta_ - cut <= 2.0
    assert b.selected_pair(0, 1)[1].address == A_RELAY.address  # type: ignore[index]


@pytest.mark.parametrize("seed", range(100, 112))
def test_failover_then_total_loss_runs_to_consent_expiry_for_many_seeds(seed: int) -> None:
    # Long virtual runs across every timer (consent, failover, keepalive,
    # retransmissions) with different random draws: nothing spins, and the
    # end state is the same.
    net, a, b = connected(seed)
    net.run(2.0)
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    net.run(5.0)
    assert len(net.of(a, SelectedPairChanged)) == 1
    net.blocked = lambda s, d: True
    net.run(40.0)
    for agent in (a, b):
        assert len(net.of(agent, ConsentLost)) == 1
        assert net.of(agent, IceFailed)[-1].reason == "consent lost"
        assert agent.get_timer() is None or agent.get_timer() > net.now  # type: ignore[operator]


def test_hot_spare_failover_with_a_lite_peer() -> None:
    # The full agent checks and re-nominates; the lite agent follows the
    # latest nomination (it sends no checks of its own).
    net = Net()
    full = net.add(IceAgent(config(31), controlling=True))
    lite = net.add(IceAgent(config(32, lite=True), controlling=False))
    full.add_stream()
    lite.add_stream()
    full.set_remote_lite()
    exchange(net, full, lite, [A_HOST, A_RELAY], [B_HOST])
    net.run(3.0)
    assert full.selected_pair(0, 1)[0].type is CandidateType.HOST  # type: ignore[index]
    cut = net.now
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    net.run(5.0)
    for agent in (full, lite):
        ((t, _),) = net.timed(agent, SelectedPairChanged)
        assert t - cut <= 2.0
    assert lite.selected_pair(0, 1)[1].address == A_RELAY.address  # type: ignore[index]
    assert lite.send_data(0, 1, b"\x80lite", now=net.now)
    net.run(0.1)
    assert net.of(full, DataReceived)[-1].data == b"\x80lite"


def test_each_component_fails_over_on_its_own() -> None:
    net = Net()
    a = net.add(IceAgent(config(33), controlling=True))
    b = net.add(IceAgent(config(34), controlling=False))
    a.add_stream(components=2)
    b.add_stream(components=2)
    a_c = [host("192.0.2.1", 5000, 1), host("192.0.2.1", 5001, 2)]
    a_c += [relay("198.51.100.9", 7000, 1), relay("198.51.100.9", 7001, 2)]
    b_c = [host("192.0.2.2", 6000, 1), host("192.0.2.2", 6001, 2)]
    exchange(net, a, b, a_c, b_c)
    net.run(4.0)
    assert all(a.selected_pair(0, c)[0].type is CandidateType.HOST for c in (1, 2))  # type: ignore[index]
    cut = net.now
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    net.run(5.0)
    for agent in (a, b):
        changes = net.timed(agent, SelectedPairChanged)
        assert sorted(e.component for e in net.of(agent, SelectedPairChanged)) == [1, 2]
        assert all(t - cut <= 2.0 for t, _ in changes)
    assert a.send_data(0, 2, b"\x80rtcp", now=net.now)
    net.run(0.1)
    got = net.of(b, DataReceived)[-1]
    assert (got.component, got.data) == (2, b"\x80rtcp")


def test_relayed_selection_is_upgraded_when_the_direct_pair_succeeds_later() -> None:
    net = Net()
    a = net.add(IceAgent(config(35), controlling=True))
    b = net.add(IceAgent(config(36), controlling=False))
    a.add_stream()
    b.add_stream()
    net.blocked = lambda s, d: s.host in HOSTS and d.host in HOSTS
    exchange(net, a, b, [A_HOST, A_RELAY], [B_HOST])
    net.run(1.0)
    assert a.selected_pair(0, 1)[0].type is CandidateType.RELAYED  # type: ignore[index]
    net.blocked = lambda s, d: False  # the direct path opens (a retransmission gets through)
    net.run(5.0)
    for agent in (a, b):
        (change,) = net.of(agent, SelectedPairChanged)
        assert change.reason == ("upgrade" if agent is a else "nomination")
    assert a.selected_pair(0, 1)[0] == A_HOST  # type: ignore[index]
    assert b.selected_pair(0, 1)[1].address == A_HOST.address  # type: ignore[index]
