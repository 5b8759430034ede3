"""The ICE agent back to back (RFC 8445): connect, roles, prflx, lite, trickle,
failure, restart, components and streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent
from natkit.ice.candidate import CandidateType
from natkit.ice.checklist import PairState
from natkit.ice.events import (
    CandidatePairSucceeded,
    ChecksCompleted,
    DataReceived,
    IceFailed,
    PairNominated,
    PeerReflexiveDiscovered,
    RoleSwitched,
    SelectedPairChanged,
)
from tests.ice.test_agent_harness import Net, as_remote, config, exchange, host

A1 = host("192.0.2.1", 5000)
B1 = host("192.0.2.2", 6000)


def pair_up(
    seed: int = 1, *, a_controlling: bool = True, b_controlling: bool = False, **kw: object
) -> tuple[Net, IceAgent, IceAgent]:
    net = Net()
    a = net.add(IceAgent(config(seed, **kw), controlling=a_controlling))
    b = net.add(IceAgent(config(seed + 100, **kw), controlling=b_controlling))
    a.add_stream()
    b.add_stream()
    return net, a, b


def completed(net: Net, *agents: IceAgent) -> bool:
    return all(net.of(x, ChecksCompleted) for x in agents)


def test_host_candidates_connect_and_carry_data_both_ways() -> None:
    net, a, b = pair_up()
    exchange(net, a, b, [A1], [B1])
    t = net.run(5.0, lambda: completed(net, a, b))
    assert t < 0.2
    (nom_a,) = net.of(a, PairNominated)
    (nom_b,) = net.of(b, PairNominated)
    assert (nom_a.local.address, nom_a.remote.address) == (A1.address, B1.address)
    assert (nom_b.local.address, nom_b.remote.address) == (B1.address, A1.address)
    assert a.send_data(0, 1, b"\x80hello", now=net.now)
    assert b.send_data(0, 1, b"\x80world", now=net.now)
    net.run(0.1)
    assert [e.data for e in net.of(b, DataReceived)] == [b"\x80hello"]
    assert [e.data for e in net.of(a, DataReceived)] == [b"\x80world"]
    assert a.selected_pair(0, 1) == (A1, as_remote(B1))


def test_send_data_before_selection_sends_nothing() -> None:
    _, a, _ = pair_up()
    assert not a.send_data(0, 1, b"x", now=0.0)
    assert a.datagrams_to_send(now=0.0) == []


def test_role_conflict_both_controlling_resolves_to_one_controller() -> None:
    net, a, b = pair_up(3, a_controlling=True, b_controlling=True)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    assert a.controlling != b.controlling
    loser = a if not a.controlling else b
    assert net.of(loser, RoleSwitched) == [RoleSwitched(controlling=False)]
    # The agent with the larger tie-breaker keeps the role (§7.3.1.1).
    assert (a.tie_breaker > b.tie_breaker) == a.controlling


def test_role_conflict_both_controlled_resolves_to_one_controller() -> None:
    net, a, b = pair_up(4, a_controlling=False, b_controlling=False)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    assert a.controlling != b.controlling
    winner = a if a.controlling else b
    assert net.of(winner, RoleSwitched) == [RoleSwitched(controlling=True)]
    assert (a.tie_breaker > b.tie_breaker) == a.controlling


def test_peer_reflexive_candidates_are_learned_through_a_nat() -> None:
    # A is behind a NAT and signals only its private host candidate.
    net, a, b = pair_up(5)
    private = host("10.0.0.5", 5000)
    public = Endpoint("203.0.113.5", 40000)
    net.add_nat(private.address, public)
    exchange(net, a, b, [private], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    local_prflx = [e for e in net.of(a, PeerReflexiveDiscovered) if e.local]
    remote_prflx = [e for e in net.of(b, PeerReflexiveDiscovered) if not e.local]
    assert [e.candidate.address for e in local_prflx] == [public]
    assert local_prflx[0].candidate.base == private.address
    assert [e.candidate.address for e in remote_prflx] == [public]
    (nom_a,) = net.of(a, PairNominated)
    assert nom_a.local.type is CandidateType.PEER_REFLEXIVE
    (nom_b,) = net.of(b, PairNominated)
    assert nom_b.remote.type is CandidateType.PEER_REFLEXIVE
    assert b.send_data(0, 1, b"\x80x", now=net.now)
    net.run(0.1)
    assert net.of(a, DataReceived)


def test_lite_agent_answers_and_full_agent_becomes_controlling() -> None:
    net = Net()
    full = net.add(IceAgent(config(6), controlling=False))
    lite = net.add(IceAgent(config(7, lite=True), controlling=True))
    full.add_stream()
    lite.add_stream()
    assert not lite.controlling
    full.set_remote_lite()
    assert full.controlling
    assert full.next_event() == RoleSwitched(controlling=True)
    exchange(net, full, lite, [A1], [B1])
    net.run(5.0, lambda: completed(net, full, lite))
    assert completed(net, full, lite)
    assert lite.checks_sent == 0
    assert lite.send_data(0, 1, b"\x80from-lite", now=net.now)
    net.run(0.1)
    assert [e.data for e in net.of(full, DataReceived)] == [b"\x80from-lite"]


def test_trickled_candidates_arriving_late_still_connect() -> None:
    net, a, b = pair_up(8)
    ca, cb = a.local_credentials(0), b.local_credentials(0)
    net.add(a, A1.address)
    net.add(b, B1.address)
    a.add_local_candidate(0, A1)
    b.add_local_candidate(0, B1)
    # Only A knows B's candidate and credentials at first: A's check reaches
    # B before B has A's credentials or candidates (RFC 8838 §11).
    a.set_remote_credentials(0, cb.ufrag, cb.pwd)
    a.add_remote_candidate(0, as_remote(B1))
    net.run(1.0)
    assert not completed(net, a, b)
    prflx = [e for e in net.of(b, PeerReflexiveDiscovered) if not e.local]
    assert [e.candidate.address for e in prflx] == [A1.address]
    b.set_remote_credentials(0, ca.ufrag, ca.pwd)
    b.add_remote_candidate(0, as_remote(A1))  # the same address: no new pair
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    assert len(b.pairs(0)) == 1


def test_nothing_works_fails_both_sides_after_the_check_timeouts() -> None:
    net, a, b = pair_up(9)
    net.blocked = lambda s, d: True
    exchange(net, a, b, [A1, host("192.0.2.3", 5001, pref=100)], [B1])
    net.run(60.0, lambda: bool(net.of(a, IceFailed) and net.of(b, IceFailed)))
    assert net.of(a, IceFailed) and net.of(b, IceFailed)
    assert 39.0 < net.now < 41.0  # RFC 8489 §6.2.1: 39.5 s with RTO 500 ms, Rc 7, Rm 16
    assert all(p.state is PairState.FAILED for p in a.pairs(0))
    assert a.checks_sent == 2 * 7


def test_no_failure_before_end_of_candidates() -> None:
    net, a, b = pair_up(10)
    net.blocked = lambda s, d: True
    exchange(net, a, b, [A1], [B1], eoc=False)
    net.run(60.0)
    assert not net.of(a, IceFailed)
    a.end_of_local_candidates(0)
    a.end_of_remote_candidates(0)
    assert net.of(a, IceFailed) == [] and a.next_event() == IceFailed(
        stream=0, reason="no valid pair for component 1"
    )


def test_aggressive_nomination_selects_on_first_success() -> None:
    net, a, b = pair_up(11, aggressive_nomination=True)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    # One check, carrying USE-CANDIDATE, did it all (RFC 5245 §8.1.1.2).
    assert a.checks_sent == 1


def test_two_components_each_get_a_selected_pair() -> None:
    net = Net()
    a = net.add(IceAgent(config(12), controlling=True))
    b = net.add(IceAgent(config(13), controlling=False))
    a.add_stream(components=2)
    b.add_stream(components=2)
    a_c = [host("192.0.2.1", 5000, 1), host("192.0.2.1", 5001, 2)]
    b_c = [host("192.0.2.2", 6000, 1), host("192.0.2.2", 6001, 2)]
    exchange(net, a, b, a_c, b_c)
    net.run(5.0, lambda: completed(net, a, b))
    noms = {e.component: (e.local.address, e.remote.address) for e in net.of(a, PairNominated)}
    assert noms == {
        1: (a_c[0].address, b_c[0].address),
        2: (a_c[1].address, b_c[1].address),
    }
    # Component 2 was frozen behind component 1's foundation, then unfrozen.
    assert b.send_data(0, 2, b"\x80rtcp", now=net.now)
    net.run(0.1)
    (got,) = net.of(a, DataReceived)
    assert (got.component, got.data) == (2, b"\x80rtcp")


def test_two_streams_unfreeze_by_foundation() -> None:
    net = Net()
    a = net.add(IceAgent(config(14), controlling=True))
    b = net.add(IceAgent(config(15), controlling=False))
    for agent in (a, b):
        agent.add_stream()
        agent.add_stream()
    a_c = [host("192.0.2.1", 5000), host("192.0.2.1", 5002)]
    b_c = [host("192.0.2.2", 6000), host("192.0.2.2", 6002)]
    for s in range(2):
        ca, cb = a.local_credentials(s), b.local_credentials(s)
        a.set_remote_credentials(s, cb.ufrag, cb.pwd)
        b.set_remote_credentials(s, ca.ufrag, ca.pwd)
        net.add(a, a_c[s].address)
        net.add(b, b_c[s].address)
        a.add_local_candidate(s, a_c[s])
        b.add_local_candidate(s, b_c[s])
        a.add_remote_candidate(s, as_remote(b_c[s]))
        b.add_remote_candidate(s, as_remote(a_c[s]))
    # Same foundations in both streams (host, same IPs): the second stream's
    # pair waits, Frozen, for the first one's result (§6.1.2.6).
    net.run(0.001)
    assert [p.state for p in a.pairs(0)] == [PairState.IN_PROGRESS]
    assert [p.state for p in a.pairs(1)] == [PairState.FROZEN]
    net.run(0.05, lambda: bool(net.of(a, CandidatePairSucceeded)))
    assert [p.state for p in a.pairs(1)] == [PairState.WAITING]  # §7.2.5.3.3
    net.run(5.0, lambda: len(net.of(a, ChecksCompleted)) == 2)
    assert {e.stream for e in net.of(a, ChecksCompleted)} == {0, 1}


def test_restart_keeps_the_old_pair_until_the_new_one_is_selected() -> None:
    net, a, b = pair_up(16)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    old_a = a.local_credentials(0)
    a.restart(now=net.now)
    new_a = a.local_credentials(0)
    assert new_a != old_a
    assert a.pairs(0) == []
    # Data still flows over the previous pair during the restart.
    assert a.send_data(0, 1, b"\x80during", now=net.now)
    # Offer/answer: B sees A's new credentials and restarts as well.
    b.set_remote_credentials(0, new_a.ufrag, new_a.pwd)
    new_b = b.local_credentials(0)
    a.set_remote_credentials(0, new_b.ufrag, new_b.pwd)
    a.add_remote_candidate(0, as_remote(B1))
    b.add_remote_candidate(0, as_remote(A1))
    net.run(5.0, lambda: len(net.of(a, PairNominated)) == 2 and len(net.of(b, PairNominated)) == 2)
    assert len(net.of(a, ChecksCompleted)) == 2
    assert b"\x80during" in [e.data for e in net.of(b, DataReceived)]
    assert a.send_data(0, 1, b"\x80after", now=net.now)
    net.run(0.1)
    assert b"\x80after" in [e.data for e in net.of(b, DataReceived)]


def test_selected_pair_changed_is_not_reported_on_a_plain_connect() -> None:
    net, a, b = pair_up(17)
    exchange(net, a, b, [A1], [B1])
    net.run(3.0)
    assert not net.of(a, SelectedPairChanged) and not net.of(b, SelectedPairChanged)


def test_aggressive_nomination_moves_to_a_better_pair_that_succeeds_later() -> None:
    net, a, b = pair_up(18, aggressive_nomination=True)
    best = host("192.0.2.1", 5000, pref=65535)
    worse = host("192.0.2.3", 5000, pref=100)
    net.blocked = lambda s, d: best.address in (s, d)
    exchange(net, a, b, [best, worse], [B1])
    net.run(0.3)
    assert a.selected_pair(0, 1)[0] == worse  # type: ignore[index]
    net.blocked = lambda s, d: False
    net.run(3.0)
    for agent in (a, b):
        (change,) = net.of(agent, SelectedPairChanged)
        assert change.reason == "nomination"
    assert a.selected_pair(0, 1)[0] == best  # type: ignore[index]
    assert b.selected_pair(0, 1)[1].address == best.address  # type: ignore[index]


def test_peer_initiated_restart_through_new_remote_credentials() -> None:
    net, a, b = pair_up(19)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    old_b = b.local_credentials(0)
    b.restart(now=net.now)
    new_b = b.local_credentials(0)
    # A gets B's new offer: new credentials restart A's side implicitly (§9.1.1).
    old_a = a.local_credentials(0)
    a.set_remote_credentials(0, new_b.ufrag, new_b.pwd)
    new_a = a.local_credentials(0)
    assert new_a != old_a and new_b != old_b
    b.set_remote_credentials(0, new_a.ufrag, new_a.pwd)
    a.add_remote_candidate(0, as_remote(B1))
    b.add_remote_candidate(0, as_remote(A1))
    net.run(5.0)
    assert len(net.of(a, ChecksCompleted)) == 2 and len(net.of(b, ChecksCompleted)) == 2
    assert not net.of(a, IceFailed) and not net.of(b, IceFailed)


def test_full_check_list_drops_its_lowest_priority_pair_for_a_better_one() -> None:
    _, a, _ = pair_up(20, max_pairs=2)
    a.add_local_candidate(0, A1)
    for i, pref in enumerate((100, 200, 65535)):
        a.add_remote_candidate(0, as_remote(host(f"192.0.2.{50 + i}", 6000, pref=pref)))
    remotes = sorted(p.remote.address.host for p in a.pairs(0))
    assert remotes == ["192.0.2.51", "192.0.2.52"]  # the pref-100 pair was dropped
    a.add_remote_candidate(0, as_remote(host("192.0.2.60", 6000, pref=1)))
    assert len(a.pairs(0)) == 2 and all(p.remote.address.host != "192.0.2.60" for p in a.pairs(0))


def test_restart_during_a_restart_keeps_data_on_the_first_pair() -> None:
    net, a, b = pair_up(21)
    exchange(net, a, b, [A1], [B1])
    net.run(5.0, lambda: completed(net, a, b))
    a.restart(now=net.now)
    a.restart(now=net.now)
    net.run(10.0)
    assert a.send_data(0, 1, b"\x80still", now=net.now)
    net.run(0.1)
    assert net.of(b, DataReceived)[-1].data == b"\x80still"
    assert not net.of(a, IceFailed)


def _request_from(agent: IceAgent) -> Callable[[bytes], bool]:
    """Matches the connectivity checks ``agent`` sends (its tie-breaker)."""
    marker = agent.tie_breaker.to_bytes(8, "big")

    def lose(data: bytes) -> bool:
        return data[0] < 4 and data[:2] == b"\x00\x01" and marker in data

    return lose


def test_controlled_agent_rechecks_until_a_failed_controlling_peer_recovers() -> None:
    # B controls, and every check B sends is lost for 35 s: B's first check
    # would time out (its last retransmission leaves at 31.5 s), while A
    # (controlled) has a valid pair at once. A's periodic re-check keeps
    # triggering new checks at B (§7.3.1.4), one of which gets through once
    # the loss ends, and B nominates.
    net, a, b = pair_up(22, a_controlling=False, b_controlling=True)
    net.lose = _request_from(b)
    exchange(net, a, b, [A1], [B1])
    net.run(35.0)
    assert net.of(a, CandidatePairSucceeded) and not net.of(a, ChecksCompleted)
    net.lose = lambda data: False
    net.run(10.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    assert not net.of(a, IceFailed)


def test_controlled_agent_gives_up_without_a_nomination() -> None:
    net, a, b = pair_up(23, a_controlling=False, b_controlling=True, nomination_timeout=20.0)
    net.lose = _request_from(b)
    exchange(net, a, b, [A1], [B1])
    net.run(60.0, lambda: bool(net.of(a, IceFailed)))
    ((t, failed),) = net.timed(a, IceFailed)
    assert isinstance(failed, IceFailed) and failed.reason == "no nomination"
    assert 20.0 <= t <= 21.0  # idle since the first round trip, plus nomination_timeout


def test_ipv6_host_candidates_connect_and_families_are_not_mixed() -> None:
    net, a, b = pair_up(24)
    a6, b6 = host("2001:db8::1", 5000), host("2001:db8::2", 6000)
    exchange(net, a, b, [A1, a6], [b6])
    net.run(5.0, lambda: completed(net, a, b))
    assert [(p.local_base, p.remote.address) for p in a.pairs(0)] == [(a6.address, b6.address)]
    assert a.selected_pair(0, 1) == (a6, as_remote(b6))


def test_local_candidate_trickled_late_gets_paired_and_used() -> None:
    net, a, b = pair_up(25)
    net.blocked = lambda s, d: A1.address in (s, d)  # the first candidate does not work
    late = host("192.0.2.7", 5000, pref=100)
    exchange(net, a, b, [A1], [B1], eoc=False)
    net.run(1.0)
    assert not completed(net, a, b)
    net.add(a, late.address)
    a.add_local_candidate(0, late)
    b.add_remote_candidate(0, as_remote(late))
    net.run(5.0, lambda: completed(net, a, b))
    assert a.selected_pair(0, 1) == (late, as_remote(B1))


def _connect_with_b_learning_a_as_prflx(seed: int) -> tuple[Net, IceAgent, IceAgent]:
    """B has A's credentials but not A's candidate: A's check makes A1 a
    peer-reflexive remote candidate of B (§7.3.1.3)."""
    net, a, b = pair_up(seed)
    ca, cb = a.local_credentials(0), b.local_credentials(0)
    net.add(a, A1.address)
    net.add(b, B1.address)
    a.add_local_candidate(0, A1)
    b.add_local_candidate(0, B1)
    a.set_remote_credentials(0, cb.ufrag, cb.pwd)
    b.set_remote_credentials(0, ca.ufrag, ca.pwd)
    a.add_remote_candidate(0, as_remote(B1))
    return net, a, b


def test_a_candidate_signalled_after_a_prflx_one_replaces_it_in_the_pair() -> None:
    """RFC 8838 §11.4: the late a=candidate for the peer-reflexive address
    gives the pair the signalled type, priority and foundation."""
    net, a, b = _connect_with_b_learning_a_as_prflx(21)
    net.run(0.02)  # A's first check has reached B
    (learned,) = b.remote_candidates(0)
    assert learned.type is CandidateType.PEER_REFLEXIVE
    (pair,) = b.pairs(0)
    prflx_priority = pair.priority
    signalled = as_remote(A1)
    b.add_remote_candidate(0, signalled)
    (pair,) = b.pairs(0)
    assert pair.remote == signalled
    assert pair.foundation == (B1.foundation, A1.foundation)
    assert pair.priority != prflx_priority
    assert b.remote_candidates(0) == [signalled]
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    assert b.selected_pair(0, 1) == (B1, signalled)
    (nom_b,) = net.of(b, PairNominated)
    assert nom_b.remote == signalled  # nominated after the upgrade


def test_a_candidate_signalled_after_selection_upgrades_the_selected_pair() -> None:
    net, a, b = _connect_with_b_learning_a_as_prflx(22)
    net.run(5.0, lambda: completed(net, a, b))
    assert completed(net, a, b)
    selected = b.selected_pair(0, 1)
    assert selected is not None and selected[1].type is CandidateType.PEER_REFLEXIVE
    signalled = as_remote(A1)
    b.add_remote_candidate(0, signalled)
    assert b.selected_pair(0, 1) == (B1, signalled)
    assert not net.of(b, SelectedPairChanged)  # the same 5-tuple: nothing moved
    # A second prflx signal for the address does not undo it.
    prflx_again = dataclasses.replace(signalled, type=CandidateType.PEER_REFLEXIVE, priority=1)
    b.add_remote_candidate(0, prflx_again)
    assert b.selected_pair(0, 1) == (B1, signalled)
    assert b.send_data(0, 1, b"\x80after", now=net.now)
    net.run(0.1)
    assert [e.data for e in net.of(a, DataReceived)] == [b"\x80after"]
