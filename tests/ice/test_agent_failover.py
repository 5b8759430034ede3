"""Hot-spare failover in the sans-IO agent (natkit.ice.consent): when the
selected pair goes silent and no spare answered its latest check either,
the agent reports FailoverExhausted once (RFC 8445 §9: restart ICE)."""

from __future__ import annotations

from natkit.ice.agent import IceAgent
from natkit.ice.events import ConsentLost, FailoverExhausted, SelectedPairChanged
from tests.ice.test_agent_harness import Net, config, exchange, host

A1 = host("192.0.2.1", 5000)
A2 = host("192.0.2.3", 5000, pref=100)
B1 = host("192.0.2.2", 6000)


def connected_pair(seed: int) -> tuple[Net, IceAgent, IceAgent]:
    net = Net()
    a = net.add(IceAgent(config(seed), controlling=True))
    b = net.add(IceAgent(config(seed + 100), controlling=False))
    a.add_stream()
    b.add_stream()
    exchange(net, a, b, [A1, A2], [B1])
    net.run(5.0)
    assert a.selected_pair(0, 1) is not None and b.selected_pair(0, 1) is not None
    return net, a, b


def test_every_path_silent_is_reported_once_long_before_consent_expires() -> None:
    net, a, b = connected_pair(61)
    cut = net.now
    net.blocked = lambda s, d: True
    net.run(10.0)
    for agent in (a, b):
        timed = net.timed(agent, FailoverExhausted)
        assert len(timed) == 1, timed
        at, event = timed[0]
        assert isinstance(event, FailoverExhausted)
        assert event.silent_since <= cut + 2 * net.delay  # answers in flight at the cut
        # failover_timeout (1.2 s) after the last answer, at the next timer.
        assert 1.2 <= at - event.silent_since <= 1.6, (at, event)
        assert not net.of(agent, ConsentLost)  # consent is still 20 s away


def test_a_surviving_spare_is_taken_and_nothing_reported() -> None:
    net, a, b = connected_pair(62)
    selected = a.selected_pair(0, 1)
    assert selected is not None
    dead = selected[0].address
    net.blocked = lambda s, d: dead in (s, d)
    net.run(5.0)
    for agent in (a, b):
        assert not net.of(agent, FailoverExhausted)
    assert [e.reason for e in net.of(a, SelectedPairChanged)] == ["failover"]
    moved = a.selected_pair(0, 1)
    assert moved is not None and moved[0].address != dead


def test_the_report_is_rearmed_once_a_path_answers_again() -> None:
    net, a, _b = connected_pair(63)
    net.blocked = lambda s, d: True
    net.run(3.0)
    assert len(net.of(a, FailoverExhausted)) == 1
    net.blocked = lambda s, d: False  # the network comes back
    net.run(3.0)
    assert len(net.of(a, FailoverExhausted)) == 1
    net.blocked = lambda s, d: True  # and fails again
    net.run(8.0)
    assert len(net.of(a, FailoverExhausted)) == 2
