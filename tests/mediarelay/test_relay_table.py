"""The relay table: RTCP paths (separate ports, a=rtcp, rtcp-mux), IPv4/IPv6
bridging, statistics from sequence numbers, idle timeout, bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.mediarelay import (
    CallCreated,
    CallDeleted,
    CallTimedOut,
    DeleteReason,
    LegEndpoints,
    LegSetup,
    MediaRelay,
    MediaRelayConfig,
    PortAllocator,
)

from .helpers import (
    A_NAT,
    A_RTCP,
    A_RTP,
    A_SDP,
    ATTACKER,
    B_NAT,
    B_RTCP,
    B_RTP,
    B_SDP,
    RELAY6,
    SSRC_B,
    call,
    config,
    events,
    rtcp,
    rtp,
    send,
)

A_NAT_RTCP = A_NAT.with_port(A_NAT.port + 1)
B_NAT_RTCP = B_NAT.with_port(B_NAT.port + 1)


def test_create_call_reports_each_legs_endpoints() -> None:
    relay = call(mux_b=True)
    (created,) = [e for e in events(relay) if isinstance(e, CallCreated)]
    assert created.a == LegEndpoints(rtp=A_RTP, rtcp=A_RTCP)
    assert created.b == LegEndpoints(rtp=B_RTP, rtcp=None)
    assert created.b.rtcp_mux and not created.a.rtcp_mux


def test_rtcp_goes_from_the_other_legs_rtcp_port_to_its_rtcp_address() -> None:
    relay = call()
    # Seeded at the SDP's RTP port + 1 (RFC 3605: no a=rtcp) until B's RTCP arrives.
    assert send(relay, rtcp(), A_NAT_RTCP, A_RTCP, 0.1) == [
        (rtcp(), B_SDP.with_port(B_SDP.port + 1), B_RTCP)
    ]
    send(relay, rtcp(SSRC_B), B_NAT_RTCP, B_RTCP, 0.2)
    assert send(relay, rtcp(), A_NAT_RTCP, A_RTCP, 0.3) == [(rtcp(), B_NAT_RTCP, B_RTCP)]
    assert relay.call_stats("c1").a_to_b.rtcp_packets == 2


def test_an_a_rtcp_attribute_seeds_the_rtcp_address() -> None:
    relay = MediaRelay(config())
    announced = Endpoint("192.168.2.20", 5999)
    relay.create_call(
        "c1",
        a=LegSetup(rtp_local=A_RTP, rtcp_local=A_RTCP),
        b=LegSetup(rtp_local=B_RTP, rtcp_local=B_RTCP, remote_rtp=B_SDP, remote_rtcp=announced),
        now=0.0,
    )
    assert send(relay, rtcp(), A_NAT_RTCP, A_RTCP, 0.1) == [(rtcp(), announced, B_RTCP)]


def test_a_mux_leg_sends_rtcp_to_the_separate_rtcp_port_of_the_other_leg() -> None:
    relay = call(mux_a=True)
    send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.1)
    send(relay, rtcp(SSRC_B), B_NAT_RTCP, B_RTCP, 0.1)
    # From A's single port: RTP to B's RTP address, RTCP (PT 201) to B's RTCP one.
    assert send(relay, rtp(1), A_NAT, A_RTP, 0.2) == [(rtp(1), B_NAT, B_RTP)]
    assert send(relay, rtcp(), A_NAT, A_RTP, 0.3) == [(rtcp(), B_NAT_RTCP, B_RTCP)]
    # From B's two ports, both reach A's mux address through A's one port.
    assert send(relay, rtp(2, SSRC_B), B_NAT, B_RTP, 0.4) == [(rtp(2, SSRC_B), A_NAT, A_RTP)]
    assert send(relay, rtcp(SSRC_B), B_NAT_RTCP, B_RTCP, 0.5) == [(rtcp(SSRC_B), A_NAT, A_RTP)]


def test_mux_on_both_legs_uses_one_port_each() -> None:
    relay = call(mux_a=True, mux_b=True)
    send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.1)
    assert send(relay, rtcp(), A_NAT, A_RTP, 0.2) == [(rtcp(), B_NAT, B_RTP)]
    assert relay.port_at(A_RTCP) is None


@pytest.mark.parametrize(
    ("data", "local"),
    [
        pytest.param(b"", A_RTP, id="empty"),
        pytest.param(b"\x80\x00\x00", A_RTP, id="three-bytes"),
        pytest.param(rtp(1)[:11], A_RTP, id="rtp-short-of-its-header"),
        pytest.param(b"\x40" + rtp(1)[1:], A_RTP, id="version-1"),
        pytest.param(b"\x00" * 40, A_RTP, id="version-0-zrtp-like"),
        pytest.param(rtcp(), A_RTP, id="rtcp-on-a-non-mux-rtp-port"),
        pytest.param(rtp(1), A_RTCP, id="rtp-on-the-rtcp-port"),
        pytest.param(b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12), A_RTP, id="stun"),
    ],
)
def test_malformed_packets_are_dropped_and_never_latch(data: bytes, local: Endpoint) -> None:
    relay = call()
    assert send(relay, data, ATTACKER, local, 0.1) == []
    assert relay.call_stats("c1").a_to_b.dropped_malformed == 1
    assert relay.call_stats("c1").a_to_b.source is None
    assert send(relay, rtp(1), A_NAT, A_RTP, 0.2) == [(rtp(1), B_SDP, B_RTP)]


def test_legs_of_different_families_are_bridged() -> None:
    relay = MediaRelay(config())
    b_rtp, b_rtcp = Endpoint(RELAY6, 30002), Endpoint(RELAY6, 30003)
    b6 = Endpoint("2001:db8:2::20", 5000)
    relay.create_call(
        "c1",
        a=LegSetup(rtp_local=A_RTP, rtcp_local=A_RTCP, remote_rtp=A_SDP),
        b=LegSetup(rtp_local=b_rtp, rtcp_local=b_rtcp, remote_rtp=b6),
        now=0.0,
    )
    assert send(relay, rtp(1), A_NAT, A_RTP, 0.1) == [(rtp(1), b6, b_rtp)]
    assert send(relay, rtp(1, SSRC_B), b6, b_rtp, 0.2) == [(rtp(1, SSRC_B), A_NAT, A_RTP)]


def test_an_sdp_address_of_the_wrong_family_is_refused() -> None:
    relay = MediaRelay(config())
    with pytest.raises(LocalProtocolError, match="family"):
        relay.create_call(
            "c1",
            a=LegSetup(rtp_local=A_RTP, rtcp_local=A_RTCP, remote_rtp=Endpoint("2001:db8::1", 9)),
            b=LegSetup(rtp_local=B_RTP, rtcp_local=B_RTCP),
            now=0.0,
        )
    assert relay.call_count == 0


def test_statistics_count_each_direction_and_loss_from_sequence_gaps() -> None:
    relay = call()
    for i, seq in enumerate([10, 11, 13, 14, 17]):  # 12, 15, 16 lost
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 + i * 0.02)
    send(relay, rtp(1, SSRC_B), B_NAT, B_RTP, 0.5)
    stats = relay.call_stats("c1")
    assert stats.a_to_b.packets == stats.a_to_b.forwarded == 5
    assert stats.a_to_b.bytes == 5 * 172
    assert (stats.a_to_b.rtp_expected, stats.a_to_b.rtp_lost) == (8, 3)
    assert stats.a_to_b.last_seen == pytest.approx(0.18)
    assert stats.a_to_b.ssrc == 0x11111111
    assert (stats.b_to_a.packets, stats.b_to_a.rtp_lost) == (1, 0)


def test_sequence_numbers_wrap_and_late_packets_do_not_count_as_loss() -> None:
    relay = call()
    for i, seq in enumerate([65533, 65535, 65534, 0, 1]):  # reordered, wraps
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 + i * 0.02)
    stats = relay.call_stats("c1").a_to_b
    assert (stats.rtp_expected, stats.rtp_lost) == (5, 0)


def test_a_new_ssrc_restarts_sequence_tracking_and_keeps_the_totals() -> None:
    relay = call(learning_packets=1, strict_source=False)
    for i, seq in enumerate([1, 2, 4]):
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 * i)
    for i, seq in enumerate([500, 501]):
        send(relay, rtp(seq, 0x33333333), A_NAT, A_RTP, 1 + 0.1 * i)
    stats = relay.call_stats("c1").a_to_b
    assert (stats.rtp_expected, stats.rtp_lost, stats.ssrc) == (6, 1, 0x33333333)


def test_an_idle_call_times_out_and_is_deleted() -> None:
    relay = call(idle_timeout=60.0)
    events(relay)
    assert relay.get_timer() == 60.0
    send(relay, rtp(1), A_NAT, A_RTP, 30.0)
    events(relay)
    relay.handle_timer(now=60.0)
    assert events(relay) == [] and relay.call_count == 1
    assert relay.get_timer() == 90.0
    relay.handle_timer(now=90.0)
    timed_out, deleted = events(relay)
    assert isinstance(timed_out, CallTimedOut) and timed_out.idle_for == 60.0
    assert timed_out.stats.a_to_b.packets == 1
    assert isinstance(deleted, CallDeleted) and deleted.reason is DeleteReason.TIMED_OUT
    assert set(deleted.local_endpoints) == {A_RTP, A_RTCP, B_RTP, B_RTCP}
    assert relay.call_count == 0 and relay.port_at(A_RTP) is None
    assert relay.get_timer() is None


def test_foreign_packets_do_not_keep_a_dead_call_alive() -> None:
    relay = call(idle_timeout=10.0)
    for seq in range(1, 4):
        send(relay, rtp(seq), A_NAT, A_RTP, 0.1 * seq)
    for t in range(1, 11):
        send(relay, rtp(t, 0xBAD), ATTACKER, A_RTP, float(t))
    relay.handle_timer(now=10.3)
    assert relay.call_count == 0


def test_a_reoffer_counts_as_activity() -> None:
    relay = call(idle_timeout=10.0)
    relay.update_call("c1", now=8.0)
    relay.handle_timer(now=10.0)
    assert relay.call_count == 1
    relay.handle_timer(now=18.0)
    assert relay.call_count == 0


def test_delete_call_reports_the_ports_to_close_and_final_stats() -> None:
    relay = call()
    send(relay, rtp(1), A_NAT, A_RTP, 0.1)
    events(relay)
    stats = relay.delete_call("c1", now=1.0)
    assert stats.a_to_b.packets == 1
    (deleted,) = events(relay)
    assert isinstance(deleted, CallDeleted) and deleted.reason is DeleteReason.DELETED
    assert send(relay, rtp(2), A_NAT, A_RTP, 1.1) == []
    assert relay.unknown_port_drops == 1
    with pytest.raises(LocalProtocolError):
        relay.delete_call("c1", now=1.2)


def test_call_ids_and_endpoints_must_be_new() -> None:
    relay = call()
    with pytest.raises(LocalProtocolError, match="exists"):
        call(relay)
    with pytest.raises(LocalProtocolError, match="unused"):
        relay.create_call(
            "c2",
            a=LegSetup(rtp_local=A_RTP),
            b=LegSetup(rtp_local=Endpoint("203.0.113.5", 31000)),
            now=0.0,
        )


def test_the_call_table_is_bounded() -> None:
    relay = MediaRelay(config(max_calls=1))
    call(relay)
    with pytest.raises(LocalProtocolError, match="full"):
        relay.create_call(
            "c2",
            a=LegSetup(rtp_local=Endpoint("203.0.113.5", 31000)),
            b=LegSetup(rtp_local=Endpoint("203.0.113.5", 31002)),
            now=0.0,
        )


def test_shutdown_deletes_every_call() -> None:
    relay = call()
    events(relay)
    relay.shutdown(now=1.0)
    (deleted,) = events(relay)
    assert isinstance(deleted, CallDeleted) and deleted.reason is DeleteReason.SHUTDOWN


def test_the_port_allocator_hands_out_even_pairs_inside_the_range() -> None:
    ports = PortAllocator(MediaRelayConfig(port_min=40001, port_max=40010, rng=random.Random(3)))
    taken = [ports.take() for _ in range(ports.available)]
    assert sorted(taken) == [40002, 40004, 40006, 40008]
    with pytest.raises(LocalProtocolError, match="exhausted"):
        ports.take()
    ports.release(40004)
    ports.release(40004)
    ports.release(12345)
    assert ports.take() == 40004 and ports.available == 0


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"port_min": 5000, "port_max": 5000}, id="empty-range"),
        pytest.param({"learning_packets": 0}, id="no-learning-packets"),
        pytest.param({"idle_timeout": 0}, id="no-idle-timeout"),
    ],
)
def test_bad_configs_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MediaRelayConfig(**overrides)  # type: ignore[arg-type]


_SOURCES = st.sampled_from([A_NAT, A_NAT_RTCP, B_NAT, B_NAT_RTCP, ATTACKER, A_SDP, B_SDP])
_LOCALS = st.sampled_from([A_RTP, A_RTCP, B_RTP, B_RTCP, Endpoint("203.0.113.5", 1)])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.binary(max_size=64),
                st.builds(lambda s, q: rtp(q, s), st.integers(0, 3), st.integers(0, 70000)),
                st.builds(rtcp, st.integers(0, 3), st.integers(0, 255)),
            ),
            _SOURCES,
            _LOCALS,
        ),
        max_size=40,
    ),
    st.booleans(),
)
def test_any_sequence_of_datagrams_never_raises(
    packets: list[tuple[bytes, Endpoint, Endpoint]], mux: bool
) -> None:
    relay = call(mux_a=mux, learning_packets=2)
    now = 0.0
    for data, source, local in packets:
        now += 0.3
        relay.receive_datagram(data, source, local=local, now=now)
        for dg in relay.datagrams_to_send(now=now):
            assert dg.local in (A_RTP, A_RTCP, B_RTP, B_RTCP)
            assert dg.data == data
        relay.handle_timer(now=now)
    stats = relay.call_stats("c1")
    assert stats.a_to_b.forwarded <= stats.a_to_b.packets
