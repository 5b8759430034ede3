"""Check lists on their own (RFC 8445 §6.1.2, §6.1.4.2, §7.2.5.3.3)."""

from __future__ import annotations

from dataclasses import replace

from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.checklist import CandidatePair, CheckListSet, PairState, compute_pair_priority
from natkit.ice.consent import (
    choose_spares,
    failure_domains,
    has_fresh_spare,
    path_key,
    pick_failover,
)
from tests.ice.test_agent_harness import as_remote, host, relay


def make_pair(stream: int, local: Candidate, remote: Candidate) -> CandidatePair:
    return CandidatePair(
        stream=stream,
        local=local,
        remote=as_remote(remote),
        priority=compute_pair_priority(local, remote, True),
        generation=0,
    )


def test_initial_unfreeze_one_pair_per_foundation_lowest_component_first() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    rtp = make_pair(0, host("192.0.2.1", 1, 1), host("192.0.2.2", 1, 1))
    rtcp = make_pair(0, host("192.0.2.1", 2, 2), host("192.0.2.2", 2, 2))
    other = make_pair(0, host("192.0.2.9", 3, 1), host("192.0.2.2", 1, 1))
    for pair in (rtcp, rtp, other):
        lists.add_pair(pair, unfreeze=False)
    lists.initial_unfreeze(0)
    assert (rtp.state, rtcp.state, other.state) == (
        PairState.WAITING,
        PairState.FROZEN,
        PairState.WAITING,
    )
    assert lists.waiting_or_in_progress == 2


def test_success_unfreezes_its_foundation_in_every_list() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    lists.add_list(1)
    first = make_pair(0, host("192.0.2.1", 1), host("192.0.2.2", 1))
    second = make_pair(1, host("192.0.2.1", 5), host("192.0.2.2", 5))
    lists.add_pair(first, unfreeze=False)
    lists.add_pair(second, unfreeze=False)
    assert lists.next_check({0, 1}) is first
    lists.set_state(first, PairState.IN_PROGRESS)
    assert lists.next_check({0, 1}) is None  # second's foundation is busy
    assert [second.state] == [PairState.FROZEN]
    lists.set_state(first, PairState.SUCCEEDED)
    lists.unfreeze_foundation(first.foundation)
    assert second.state is PairState.WAITING
    assert lists.next_check({0, 1}) is second


def test_failed_foundation_lets_the_frozen_pair_run() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    a = make_pair(0, host("192.0.2.1", 1), host("192.0.2.2", 1))
    b = make_pair(0, host("192.0.2.1", 1), host("192.0.2.2", 2))
    lists.add_pair(a, unfreeze=False)
    lists.add_pair(b, unfreeze=False)
    picked = lists.next_check({0})
    assert picked is not None
    lists.set_state(picked, PairState.IN_PROGRESS)
    lists.set_state(picked, PairState.FAILED)
    other = b if picked is a else a
    assert lists.next_check({0}) is other  # §6.1.4.2 unfreezing of idle foundations


def test_triggered_checks_go_first_and_highest_priority_next() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    hi = make_pair(0, host("192.0.2.1", 1, pref=65535), host("192.0.2.2", 1))
    lo = make_pair(0, host("192.0.2.3", 1, pref=1), host("192.0.2.4", 1))
    lists.add_pair(lo, unfreeze=True)
    lists.add_pair(hi, unfreeze=True)
    lists.lists[0].running = True
    lists.enqueue_triggered(lo)
    assert lists.next_check({0}) is lo
    assert lists.next_check({0}) is hi
    assert lists.next_check(set()) is None


def test_reprioritize_on_role_switch_swaps_g_and_d() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    local, remote = host("192.0.2.1", 1, pref=10), host("192.0.2.2", 1, pref=20)
    pair = make_pair(0, local, remote)
    lists.add_pair(pair, unfreeze=True)
    before = pair.priority
    lists.reprioritize(False)
    assert pair.priority == compute_pair_priority(local, remote, False) != before


def test_spares_are_the_best_valid_pair_of_each_other_path() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    b = host("192.0.2.2", 1)
    direct = make_pair(0, host("192.0.2.1", 1), b)
    direct2 = make_pair(0, host("192.0.2.1", 2, pref=5), b)
    relay1 = make_pair(0, relay("198.51.100.1", 1), b)
    relay2 = make_pair(0, relay("198.51.100.2", 1), b)
    for p in (direct, direct2, relay1, relay2):
        lists.add_pair(p, unfreeze=False)
        lists.set_state(p, PairState.SUCCEEDED)
        p.valid_priority = p.priority
    assert path_key(direct) == path_key(direct2)
    spares = choose_spares([direct, direct2, relay1, relay2], direct)
    # Every other path, and the best alternative on the selected pair's own
    # path (a rebooted symmetric NAT's new mapping would be one).
    assert set(map(id, spares)) == {id(relay1), id(relay2), id(direct2)}
    relay1.last_response, relay2.last_response = 10.0, 8.0
    assert pick_failover(spares, now=10.5, timeout=1.2) is relay1
    assert pick_failover(spares, now=20.0, timeout=1.2) is None


def _valid(*pairs: CandidatePair) -> None:
    lists = CheckListSet()
    lists.add_list(0)
    for p in pairs:
        lists.add_pair(p, unfreeze=False)
        lists.set_state(p, PairState.SUCCEEDED)
        p.valid_priority = p.priority


def test_with_shared_turn_servers_spares_avoid_the_selected_pairs_server() -> None:
    # Both agents allocated on both servers T1 and T2: relays on one server,
    # ours or the peer's, fail together.
    t1, t2 = "198.51.100.1", "198.51.100.2"
    selected = make_pair(0, relay(t1, 5000), relay(t1, 6000))
    same_local = make_pair(0, relay(t1, 5000), relay(t2, 6000))
    same_remote = make_pair(0, relay(t2, 5000), relay(t1, 6000))
    disjoint = make_pair(0, relay(t2, 5000, pref=100), relay(t2, 6000))
    _valid(selected, same_local, same_remote, disjoint)
    assert path_key(selected) == (f"turn {t1}", f"turn {t1}")
    assert failure_domains(disjoint) == {f"turn {t2}"}
    spares = choose_spares([selected, same_local, same_remote, disjoint], selected)
    assert spares[0] is disjoint  # first despite its lower priority
    # T1 dies at 10.0: everything through it answered last just before.
    selected.last_response = 9.9
    same_local.last_response = same_remote.last_response = 9.95
    disjoint.last_response = 10.9
    for p in spares:
        p.rtt = 0.02
    assert pick_failover(spares, now=11.1, timeout=1.2, fresh=0.36, failed=selected) is disjoint
    # A stale spare is still taken when nothing fresher is left.
    assert pick_failover([same_local], now=11.1, timeout=1.2, fresh=0.36, failed=selected) is (
        same_local
    )


def test_a_fresh_spare_beats_a_better_stale_one() -> None:
    b = host("192.0.2.2", 1)
    selected = make_pair(0, host("192.0.2.1", 1), b)
    stale = make_pair(0, relay("198.51.100.1", 1), b)
    fresh = make_pair(0, relay("198.51.100.2", 1, pref=10), b)
    _valid(selected, stale, fresh)
    stale.last_response, fresh.last_response = 9.0, 9.8
    assert pick_failover([stale, fresh], now=10.0, timeout=1.2, fresh=0.36) is fresh
    assert pick_failover([stale, fresh], now=10.0, timeout=1.2) is stale  # no freshness asked


def test_a_spare_is_fresh_only_if_it_answered_its_latest_check() -> None:
    b = host("192.0.2.2", 1)
    spare = make_pair(0, relay("198.51.100.1", 1), b)
    _valid(spare)
    spare.rtt = 0.05
    assert not has_fresh_spare([spare], now=10.0, fresh=0.36)  # never answered
    spare.last_response = 9.6
    assert has_fresh_spare([spare], now=10.0, fresh=0.36)  # 0.4 <= 0.36 + 2 rtt
    assert not has_fresh_spare([spare], now=10.1, fresh=0.36)
    spare.last_response, spare.consent_lost = 10.0, True
    assert not has_fresh_spare([spare], now=10.0, fresh=0.36)  # not usable


def test_spares_come_from_the_selected_pairs_component_only() -> None:
    lists = CheckListSet()
    lists.add_list(0)
    rtp = make_pair(0, host("192.0.2.1", 1, 1), host("192.0.2.2", 1, 1))
    rtcp_relay = make_pair(0, relay("198.51.100.1", 2, 2), host("192.0.2.2", 2, 2))
    for p in (rtp, rtcp_relay):
        lists.add_pair(p, unfreeze=False)
        lists.set_state(p, PairState.SUCCEEDED)
    assert choose_spares([rtp, rtcp_relay], rtp) == []


def test_replacing_a_prflx_remote_moves_the_pair_to_the_signalled_foundation() -> None:
    """RFC 8838 §11.4: the signalled candidate's foundation and priority;
    the per-foundation counters follow (a new pair of the new foundation is
    no longer unfrozen on its own, one of the old foundation is)."""
    lists = CheckListSet()
    lists.add_list(0)
    local = host("192.0.2.1", 1)
    signalled = as_remote(host("192.0.2.2", 2, pref=100))
    prflx = replace(signalled, type=CandidateType.PEER_REFLEXIVE, foundation="p1", priority=7)
    pair = make_pair(0, local, prflx)
    lists.add_pair(pair, unfreeze=False)
    lists.initial_unfreeze(0)
    assert pair.state is PairState.WAITING
    lists.replace_remote(pair, signalled, True)
    assert pair.remote is signalled
    assert pair.foundation == (local.foundation, signalled.foundation)
    assert pair.priority == compute_pair_priority(local, signalled, True)
    # Another base on the same IP has the same local foundation.
    same_new = make_pair(0, host("192.0.2.1", 3), signalled)
    same_old = make_pair(0, host("192.0.2.1", 3), prflx)
    assert same_new.foundation == pair.foundation
    assert not lists.should_unfreeze_new_pair(same_new)
    assert lists.should_unfreeze_new_pair(same_old)
    assert lists.next_check({0}) is pair
