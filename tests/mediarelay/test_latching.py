"""Latching (comedia, ECC report §6.4): the learning window, strict source,
and the one controlled re-latch (same SSRC after silence: a NAT rebinding)."""

from __future__ import annotations

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.mediarelay import (
    Component,
    LatchReason,
    LegSide,
    LegUpdate,
    MediaRelay,
    SourceConfirmed,
    SourceLatched,
)

from .helpers import (
    A_NAT,
    A_RTP,
    A_SDP,
    ATTACKER,
    B_NAT,
    B_RTP,
    B_SDP,
    SSRC_B,
    call,
    events,
    rtp,
    send,
)


def test_media_goes_to_the_sdp_address_until_the_endpoint_speaks() -> None:
    relay = call()
    assert send(relay, rtp(1), A_NAT, A_RTP, 0.1) == [(rtp(1), B_SDP, B_RTP)]


def test_the_first_packet_latches_the_leg_onto_its_real_source() -> None:
    relay = call()
    send(relay, rtp(1), A_NAT, A_RTP, 0.1)
    latched = [e for e in events(relay) if isinstance(e, SourceLatched)]
    assert latched == [
        SourceLatched(
            call_id="c1",
            leg=LegSide.A,
            component=Component.RTP,
            remote=A_NAT,
            previous=A_SDP,
            reason=LatchReason.LEARNED,
        )
    ]
    # B's media now goes to where A's packets came from, from A's relay port (RFC 4961).
    assert send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.2) == [(rtp(1, SSRC_B), A_NAT, A_RTP)]


def test_without_sdp_seed_media_waits_for_the_other_side_to_speak() -> None:
    relay = call(seed=False)
    assert send(relay, rtp(1), A_NAT, A_RTP, 0.1) == []
    assert relay.call_stats("c1").a_to_b.dropped_no_destination == 1
    assert send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.2) == [(rtp(1, SSRC_B), A_NAT, A_RTP)]
    assert send(relay, rtp(2), A_NAT, A_RTP, 0.3) == [(rtp(2), B_NAT, B_RTP)]


def test_within_the_learning_window_a_new_source_moves_the_latch() -> None:
    relay = call()
    send(relay, rtp(1), ATTACKER, A_RTP, 0.1)  # raced the real endpoint
    send(relay, rtp(2), A_NAT, A_RTP, 0.2)
    latched = [e.remote for e in events(relay) if isinstance(e, SourceLatched)]
    assert latched == [ATTACKER, A_NAT]
    assert send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.3)[0][1] == A_NAT


def test_the_window_closes_after_learning_packets_in_a_row() -> None:
    relay = call(learning_packets=3)
    for seq in (1, 2):
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 * seq)
    assert not any(isinstance(e, SourceConfirmed) for e in events(relay))
    send(relay, rtp(3), A_NAT, A_RTP, 0.3)
    assert [e for e in events(relay) if isinstance(e, SourceConfirmed)] == [
        SourceConfirmed(call_id="c1", leg=LegSide.A, component=Component.RTP, remote=A_NAT)
    ]


def test_after_the_window_a_foreign_source_is_dropped_and_counted() -> None:
    relay = call()
    for seq in range(1, 4):
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 * seq)
    send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.35)
    events(relay)
    # RTP bleed: a stranger spraying the relay port gets nothing and moves nothing.
    assert send(relay, rtp(99, 0xBADBAD), ATTACKER, A_RTP, 0.4) == []
    assert send(relay, rtp(2, SSRC_B), B_NAT, B_RTP, 0.5) == [(rtp(2, SSRC_B), A_NAT, A_RTP)]
    stats = relay.call_stats("c1").a_to_b
    assert stats.dropped_foreign == 1
    assert stats.packets == 3
    assert stats.source == A_NAT
    assert not any(isinstance(e, SourceLatched) for e in events(relay))


def test_the_window_closes_at_the_first_packet_after_learning_time() -> None:
    relay = call(learning_packets=100, learning_time=2.0)
    send(relay, rtp(1), A_NAT, A_RTP, 0.5)
    send(relay, rtp(2), A_NAT, A_RTP, 2.5)
    assert any(isinstance(e, SourceConfirmed) for e in events(relay))
    assert send(relay, rtp(3), ATTACKER, A_RTP, 2.6) == []


def test_nothing_before_the_deadline_then_the_first_packet_latches_and_locks() -> None:
    relay = call(learning_packets=100, learning_time=2.0)
    send(relay, rtp(1), A_NAT, A_RTP, 5.0)
    kinds = [type(e) for e in events(relay) if isinstance(e, SourceLatched | SourceConfirmed)]
    assert kinds == [SourceLatched, SourceConfirmed]
    assert send(relay, rtp(2), ATTACKER, A_RTP, 5.1) == []


def _locked(**overrides: object) -> MediaRelay:
    relay = call(**overrides)  # type: ignore[arg-type]
    for seq in range(1, 4):
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 * seq)
    events(relay)
    return relay


REBOUND = Endpoint("198.51.100.1", 61555)  # A's NAT after a rebinding


def test_same_ssrc_from_a_new_source_after_silence_relatches() -> None:
    relay = _locked(relatch_silence=1.0)
    assert send(relay, rtp(4), REBOUND, A_RTP, 1.5) == [(rtp(4), B_SDP, B_RTP)]
    (latched,) = [e for e in events(relay) if isinstance(e, SourceLatched)]
    assert (latched.remote, latched.previous, latched.reason) == (
        REBOUND,
        A_NAT,
        LatchReason.SSRC_HANDOVER,
    )
    assert send(relay, rtp(5), A_NAT, A_RTP, 1.6) == []  # the old mapping is foreign now


def test_same_ssrc_from_a_new_source_while_the_stream_is_live_is_dropped() -> None:
    relay = _locked(relatch_silence=1.0)
    assert send(relay, rtp(4), REBOUND, A_RTP, 0.5) == []
    assert relay.call_stats("c1").a_to_b.dropped_foreign == 1


def test_another_ssrc_after_silence_is_dropped() -> None:
    relay = _locked(relatch_silence=1.0)
    assert send(relay, rtp(4, 0xBADBAD), REBOUND, A_RTP, 5.0) == []


def test_relatching_can_be_switched_off() -> None:
    relay = _locked(relatch_same_ssrc=False)
    assert send(relay, rtp(4), REBOUND, A_RTP, 30.0) == []


def test_without_strict_source_the_latch_follows_every_new_source() -> None:
    relay = _locked(strict_source=False)
    assert send(relay, rtp(4, 0xBADBAD), ATTACKER, A_RTP, 0.4) == [(rtp(4, 0xBADBAD), B_SDP, B_RTP)]
    (latched,) = [e for e in events(relay) if isinstance(e, SourceLatched)]
    assert latched.reason is LatchReason.LOOSE


def test_a_reoffer_that_moves_the_endpoint_opens_its_learning_window_again() -> None:
    relay = _locked()
    moved = Endpoint("198.51.100.9", 7000)
    assert send(relay, rtp(4, 0x5EED), moved, A_RTP, 1.0) == []
    relay.update_call("c1", a=LegUpdate(remote_rtp=Endpoint("192.0.2.99", 4000)), now=2.0)
    assert send(relay, rtp(5, 0x5EED), moved, A_RTP, 2.1) == [(rtp(5, 0x5EED), B_SDP, B_RTP)]
    assert relay.call_stats("c1").a_to_b.source == moved


def test_a_reoffer_that_does_not_move_the_media_keeps_the_strict_latch() -> None:
    # A session refresh, hold or codec change repeats the same SDP address:
    # reopening the ports then would hand them to whoever sprays first (RTP
    # bleed). Nor does a leg the update does not mention reopen.
    relay = _locked()
    relay.update_call("c1", a=LegUpdate(remote_rtp=A_SDP), now=2.0)
    relay.update_call("c1", now=2.5)
    assert send(relay, rtp(9, 0xBADBAD), ATTACKER, A_RTP, 2.6) == []
    assert send(relay, rtp(4), A_NAT, A_RTP, 2.7) == [(rtp(4), B_SDP, B_RTP)]
    assert relay.call_stats("c1").a_to_b.source == A_NAT


def test_an_update_with_one_bad_leg_changes_neither() -> None:
    relay = _locked()
    v6 = Endpoint("2001:db8::1", 4000)
    try:
        relay.update_call(
            "c1", a=LegUpdate(remote_rtp=Endpoint("192.0.2.99", 4000)), b=LegUpdate(remote_rtp=v6),
            now=2.0,
        )  # fmt: skip
    except LocalProtocolError:
        pass
    else:
        raise AssertionError("an IPv6 address on an IPv4 leg must be refused")
    assert send(relay, rtp(9, 0xBADBAD), ATTACKER, A_RTP, 2.1) == []  # leg A still strict


def test_a_reoffer_with_a_new_sdp_address_reseeds_the_leg() -> None:
    relay = call()
    new_b = Endpoint("192.0.2.77", 6000)
    relay.update_call("c1", b=LegUpdate(remote_rtp=new_b), now=1.0)
    assert send(relay, rtp(1), A_NAT, A_RTP, 1.1) == [(rtp(1), new_b, B_RTP)]
