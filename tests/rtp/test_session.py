"""RtpSession with explicit time: two sessions over a fixed-delay link, or one
session fed crafted packets."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.rtp.events import (
    ByeReceived,
    RemoteLatched,
    RtcpReceived,
    RtpEvent,
    RtpReceived,
    SourceAdded,
    SourceTimedOut,
    SsrcChanged,
    StatisticsUpdated,
)
from natkit.rtp.interval import COMPENSATION
from natkit.rtp.packet import RtpPacket, parse_rtp, serialize_rtp
from natkit.rtp.rtcp import (
    Bye,
    ReceiverReport,
    RtcpPacket,
    SdesChunk,
    SdesItem,
    SdesItemType,
    SenderReport,
    SourceDescription,
    parse_rtcp,
    serialize_rtcp,
)
from natkit.rtp.session import RtpSession, RtpSessionConfig
from natkit.rtp.srtp import SrtpContext, SrtpSuite, generate_sdes_key

A_RTP = Endpoint("192.0.2.1", 40000)
B_RTP = Endpoint("198.51.100.2", 50000)
NAT = Endpoint("203.0.113.9", 61000)


def config(seed: int, **changes: object) -> RtpSessionConfig:
    return replace(RtpSessionConfig(rng=random.Random(seed)), **changes)  # type: ignore[arg-type]


def events(session: RtpSession) -> list[RtpEvent]:
    out = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


class Link:
    """Sessions joined by a network with a fixed one-way delay, run event by event.

    ``drop`` decides, per RTP sequence number, which of A's packets are lost.
    """

    def __init__(self, a: RtpSession, b: RtpSession, *, delay: float = 0.05) -> None:
        self.sessions = {a.local_rtp: a, a.local_rtcp: a, b.local_rtp: b, b.local_rtcp: b}
        self.delay = delay
        self.queue: list[tuple[float, int, Endpoint, Endpoint, bytes]] = []
        self.sent: list[tuple[float, Endpoint, Endpoint, bytes]] = []  # (time, local, remote, data)
        self.events: dict[int, list[tuple[float, RtpEvent]]] = {id(a): [], id(b): []}
        self.drop: Callable[[bytes], bool] = lambda data: False
        self._n = 0

    def _flush(self, session: RtpSession, now: float) -> None:
        for d in session.datagrams_to_send(now=now):
            assert d.local is not None
            self.sent.append((now, d.local, d.remote, d.data))
            if self.drop(d.data):
                continue
            self._n += 1
            heapq.heappush(self.queue, (now + self.delay, self._n, d.remote, d.local, d.data))
        for event in events(session):
            self.events[id(session)].append((now, event))

    def run(
        self,
        until: float,
        *,
        now: float = 0.0,
        senders: tuple[RtpSession, ...] = (),
        send_until: float = float("inf"),
    ) -> float:
        next_frame = now
        while True:
            timers = [t for s in set(self.sessions.values()) if (t := s.get_timer()) is not None]
            candidates = [*timers, until]
            if self.queue:
                candidates.append(self.queue[0][0])
            if senders and next_frame < send_until:
                candidates.append(next_frame)
            now = max(now, min(candidates))
            if now >= until:
                return until
            while self.queue and self.queue[0][0] <= now:
                _, _, dst, src, data = heapq.heappop(self.queue)
                target = self.sessions.get(dst)
                if target is not None:
                    target.receive_datagram(data, src, now=now, local=dst)
                    self._flush(target, now)
            if senders and next_frame <= now < send_until:
                for s in senders:
                    s.send_frame(b"\xff" * 160, pt=0, timestamp_increment=160, now=now)
                    self._flush(s, now)
                next_frame += 0.02
            for s in set(self.sessions.values()):
                timer = s.get_timer()
                if timer is not None and timer <= now:
                    s.handle_timer(now=now)
                    self._flush(s, now)

    def of(self, session: RtpSession, kind: type) -> list[tuple[float, RtpEvent]]:
        return [(t, e) for t, e in self.events[id(session)] if isinstance(e, kind)]

    def rtcp_sent_by(self, session: RtpSession) -> list[tuple[float, list[RtcpPacket]]]:
        return [
            (t, parse_rtcp(data))
            for t, local, _, data in self.sent
            if local == session.local_rtcp and 192 <= data[1] <= 223
        ]


def pair(**changes: object) -> tuple[RtpSession, RtpSession, Link]:
    a = RtpSession(config(1, **changes), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    b = RtpSession(config(2, **changes), local_rtp=B_RTP, remote_rtp=A_RTP, now=0.0)
    return a, b, Link(a, b)


def rtp_from(ssrc: int, seq: int, ts: int, payload: bytes = b"\x00" * 160) -> bytes:
    return serialize_rtp(
        RtpPacket(payload_type=0, sequence_number=seq & 0xFFFF, timestamp=ts, ssrc=ssrc,
                  payload=payload)
    )  # fmt: skip


# -- sending ------------------------------------------------------------------------------


def test_ssrc_sequence_and_timestamp_come_from_the_rng() -> None:
    one = RtpSession(config(5), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    same = RtpSession(config(5), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    other = RtpSession(config(6), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    first = one.send_frame(b"a", pt=0, now=0.0)
    assert first == same.send_frame(b"a", pt=0, now=0.0)
    assert (first.ssrc, first.sequence_number, first.timestamp) != (
        other.send_frame(b"a", pt=0, now=0.0).ssrc,
        other.sequence_number - 1,
        0,
    )
    assert one.ssrc != other.ssrc


def test_send_frame_stamps_sequence_and_timestamp_and_sends_from_the_rtp_port() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    p1 = session.send_frame(b"one", pt=0, timestamp_increment=160, marker=True, now=0.0)
    p2 = session.send_frame(b"two", pt=0, timestamp_increment=160, now=0.02)
    p3 = session.send_frame(b"six", pt=8, media_timestamp=960, now=0.12)
    assert p2.sequence_number == (p1.sequence_number + 1) & 0xFFFF
    assert p2.timestamp == (p1.timestamp + 160) & 0xFFFFFFFF
    assert p3.timestamp == (p1.timestamp + 960) & 0xFFFFFFFF
    sent = session.datagrams_to_send(now=0.12)
    assert [(d.local, d.remote) for d in sent] == [(A_RTP, B_RTP)] * 3
    assert parse_rtp(sent[0].data) == p1
    assert p1.marker and not p2.marker


def test_without_a_remote_nothing_is_sent() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, now=0.0)
    session.send_frame(b"x", pt=0, now=0.0)
    assert session.datagrams_to_send(now=0.0) == []
    assert session.statistics.packets_sent == 0


def test_rtcp_goes_to_the_next_port_without_mux_and_to_the_rtp_port_with_it() -> None:
    plain = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    assert (plain.local_rtcp, plain.remote_rtcp) == (A_RTP.with_port(40001), B_RTP.with_port(50001))
    muxed = RtpSession(config(1, rtcp_mux=True), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    assert (muxed.local_rtcp, muxed.remote_rtcp) == (A_RTP, B_RTP)
    explicit = RtpSession(
        config(1), local_rtp=A_RTP, local_rtcp=A_RTP.with_port(7), remote_rtp=B_RTP,
        remote_rtcp=B_RTP.with_port(9), now=0.0,
    )  # fmt: skip
    assert (explicit.local_rtcp, explicit.remote_rtcp) == (A_RTP.with_port(7), B_RTP.with_port(9))


def test_every_datagram_leaves_from_the_port_it_belongs_to() -> None:
    a, b, link = pair()
    link.run(20.0, senders=(a, b))
    assert {(local, remote) for _, local, remote, _ in link.sent} == {
        (A_RTP, B_RTP),
        (A_RTP.with_port(40001), B_RTP.with_port(50001)),
        (B_RTP, A_RTP),
        (B_RTP.with_port(50001), A_RTP.with_port(40001)),
    }


def test_send_after_close_is_refused() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    session.close(now=1.0)
    with pytest.raises(LocalProtocolError):
        session.send_frame(b"x", pt=0, now=1.0)


# -- receiving ----------------------------------------------------------------------------


def test_media_arrives_in_order_and_the_source_is_added_once() -> None:
    a, b, link = pair()
    link.run(1.1, senders=(a,), send_until=0.99)
    received = [e for _, e in link.of(b, RtpReceived)]
    assert len(received) == 50
    assert [e.packet.payload for e in received] == [b"\xff" * 160] * 50  # type: ignore[union-attr]
    assert [e for _, e in link.of(b, SourceAdded)] == [SourceAdded(ssrc=a.ssrc, source=A_RTP)]
    stats = b.statistics
    assert (stats.packets_received, stats.bytes_received, stats.packets_lost) == (50, 8000, 0)
    assert a.statistics.packets_sent == 50 and a.statistics.bytes_sent == 8000


def test_loss_is_reported_back_to_the_sender() -> None:
    a, b, link = pair()
    # Lose every 10th RTP packet of A's.
    link.drop = lambda data: data[1] < 128 and parse_rtp(data).sequence_number % 10 == 0
    link.run(30.0, senders=(a,), send_until=29.0)
    assert 0.09 <= b.statistics.fraction_lost <= 0.11
    assert b.statistics.packets_lost == pytest.approx(145, abs=1)
    assert a.statistics.remote_fraction_lost == pytest.approx(0.1, abs=0.01)
    assert a.statistics.remote_packets_lost is not None and a.statistics.remote_packets_lost > 0


def test_reordered_and_duplicated_packets_at_the_session() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for i, seq in enumerate([10, 11, 13, 12, 12, 14]):
        session.receive_datagram(rtp_from(99, seq, seq * 160), B_RTP, now=i * 0.02)
    seqs = [e.packet.sequence_number for e in events(session) if isinstance(e, RtpReceived)]
    assert seqs == [10, 11, 13, 12, 14]
    stats = session.statistics
    assert (stats.packets_received, stats.packets_lost, stats.duplicates) == (5, 0, 1)


def test_sequence_wraparound_at_65535_keeps_counting() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    seqs = [65533, 65534, 65535, 0, 1, 3]
    for i, seq in enumerate(seqs):
        session.receive_datagram(rtp_from(99, seq, i * 160), B_RTP, now=i * 0.02)
    delivered = [e for e in events(session) if isinstance(e, RtpReceived)]
    assert [e.extended_sequence for e in delivered] == [65533, 65534, 65535, 65536, 65537, 65539]
    assert session.statistics.packets_lost == 1
    assert session.sources[99].report_block(now=1.0).highest_sequence == 0x00010003


def test_jitter_statistic_in_milliseconds() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for i in range(33):
        late = 0.005 if i % 2 else 0.0
        session.receive_datagram(rtp_from(99, i, 160 * i), B_RTP, now=0.02 * i + late)
    expected_units = 40 * (1 - (15 / 16) ** 32)
    assert session.statistics.jitter_ms == pytest.approx(expected_units / 8)


def test_malformed_and_foreign_datagrams_are_dropped_and_counted() -> None:
    session = RtpSession(config(1, rtcp_mux=True), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for data in [
        b"",
        b"\x00\x01\x00\x00" + bytes(16),
        b"\x80\x00\x00",
        b"\x80\xc9\x00\x05",
        b"\x16\xfe",
    ]:
        session.receive_datagram(data, B_RTP, now=0.0)
    assert session.malformed_count == 5
    assert events(session) == []


def test_source_table_is_bounded() -> None:
    session = RtpSession(config(1, max_sources=4), local_rtp=A_RTP, now=0.0)
    for ssrc in range(100):
        session.receive_datagram(rtp_from(ssrc, 1, 0), B_RTP, now=0.0)
    assert len(session.sources) == 4


def test_without_mux_the_local_port_decides_rtp_or_rtcp() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    # RTP payload type 72 with the marker looks like an SR on a muxed port.
    for seq in (1, 2):
        data = serialize_rtp(
            RtpPacket(payload_type=72, marker=True, sequence_number=seq, timestamp=0, ssrc=5)
        )
        session.receive_datagram(data, B_RTP, now=0.0, local=A_RTP)
    assert any(isinstance(e, RtpReceived) for e in events(session))


# -- RTCP ---------------------------------------------------------------------------------


def test_first_report_comes_within_the_halved_initial_interval() -> None:
    low, high = 2.5 * 0.5 / COMPENSATION, 2.5 * 1.5 / COMPENSATION
    for seed in range(20):
        session = RtpSession(config(seed), local_rtp=A_RTP, remote_rtp=B_RTP, now=100.0)
        timer = session.get_timer()
        assert timer is not None and low <= timer - 100.0 <= high


def test_reports_come_every_two_to_six_seconds_sr_while_sending_then_rr() -> None:
    a, b, link = pair()
    link.run(60.0, senders=(a,), send_until=20.0)
    reports = link.rtcp_sent_by(a)
    times = [t for t, _ in reports]
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(times)]
    assert all(5 * 0.5 / COMPENSATION - 1e-9 <= g <= 5 * 1.5 / COMPENSATION + 1e-9 for g in gaps)
    kinds = [type(packets[0]) for _, packets in reports]
    last_rtp = max(t for t, local, _, _ in link.sent if local == A_RTP)
    # §6.4: SR while sending and while RTP went out since the report before last.
    assert all(k is SenderReport for t, k in zip(times, kinds, strict=True) if t < last_rtp)
    after = [k for t, k in zip(times, kinds, strict=True) if t > last_rtp]
    assert after[:2] == [SenderReport, SenderReport]
    assert set(after[2:]) == {ReceiverReport}
    # B only receives: RR with a block about A, and an SDES CNAME in every compound.
    for _, packets in link.rtcp_sent_by(b):
        assert isinstance(packets[0], ReceiverReport)
        assert isinstance(packets[1], SourceDescription)
        assert packets[1].chunks[0].get(SdesItemType.CNAME) == b.cname
    blocks = [
        p[0].reports
        for t, p in link.rtcp_sent_by(b)
        if t < 20.0 and isinstance(p[0], ReceiverReport)
    ]
    assert len(blocks) >= 3
    assert all(len(r) == 1 and r[0].ssrc == a.ssrc for r in blocks)


def test_sender_report_counts_and_timestamp() -> None:
    a, _b, link = pair()
    link.run(10.0, senders=(a,), send_until=10.0)
    t, packets = link.rtcp_sent_by(a)[0]
    sr = packets[0]
    assert isinstance(sr, SenderReport)
    sent_before = [d for when, local, _, d in link.sent if local == A_RTP and when <= t]
    assert sr.packet_count == len(sent_before)
    assert sr.octet_count == 160 * len(sent_before)
    last = parse_rtp(sent_before[-1])
    last_time = max(when for when, local, _, _ in link.sent if local == A_RTP and when <= t)
    assert sr.rtp_timestamp == (last.timestamp + round((t - last_time) * 8000)) & 0xFFFFFFFF


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    a, _b, link = pair()
    link.delay = 0.05
    link.run(30.0, senders=(a,), send_until=30.0)
    assert a.statistics.rtt_ms == pytest.approx(100.0, abs=0.1)
    updates = link.of(a, StatisticsUpdated)
    assert updates and updates[-1][1].statistics.rtt_ms == pytest.approx(100.0, abs=0.1)  # type: ignore[union-attr]


def test_round_trip_time_with_a_wallclock() -> None:
    clock = [1_700_000_000.0]
    a = RtpSession(
        config(1, wallclock=lambda: clock[0]), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0
    )
    a.send_frame(b"x", pt=0, now=0.0)
    a.datagrams_to_send(now=0.0)
    sr = next_report(a)[0]
    assert isinstance(sr, SenderReport)
    assert sr.ntp_timestamp >> 32 == 1_700_000_000 + 2_208_988_800
    # The peer held the SR for 0.25 s; it reaches us 0.4 s after we sent it.
    clock[0] += 0.4
    block = replace_block(a.ssrc, sr.ntp_timestamp, dlsr=int(0.25 * 65536))
    a.receive_datagram(serialize_rtcp([block]), B_RTP.with_port(50001), now=0.4)
    assert a.statistics.rtt_ms == pytest.approx(150.0, abs=0.1)


def next_report(session: RtpSession) -> list[RtcpPacket]:
    """Run the session's timer until it sends a report (reconsideration may defer it)."""
    for _ in range(10):
        timer = session.get_timer()
        assert timer is not None
        session.handle_timer(now=timer)
        sent = session.datagrams_to_send(now=timer)
        if sent:
            return parse_rtcp(sent[-1].data)
    raise AssertionError("no report")


def replace_block(ssrc: int, ntp: int, *, dlsr: int) -> ReceiverReport:
    from natkit.rtp.rtcp import ReportBlock, ntp_middle32

    return ReceiverReport(
        ssrc=77,
        reports=(ReportBlock(ssrc=ssrc, last_sr=ntp_middle32(ntp), delay_since_last_sr=dlsr),),
    )


def test_reduced_minimum_shortens_the_interval() -> None:
    a, _b, link = pair(session_bandwidth=1_000_000.0, reduced_minimum=True)
    link.run(10.0, senders=(a,), send_until=10.0)
    assert len(link.rtcp_sent_by(a)) > 10  # 0.36 s minimum instead of 5 s


def test_reduced_size_rtcp_is_accepted() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    sdes = SourceDescription((SdesChunk(5, (SdesItem(SdesItemType.CNAME, b"peer"),)),))
    session.receive_datagram(serialize_rtcp([sdes]), B_RTP.with_port(50001), now=1.0)
    assert [type(e) for e in events(session)] == [SourceAdded, RtcpReceived]
    assert session.sources[5].cname == "peer"


def test_reduced_size_rtcp_can_be_refused() -> None:
    session = RtpSession(config(1, accept_reduced_size=False), local_rtp=A_RTP, now=0.0)
    bye = serialize_rtcp([Bye((5,))])
    session.receive_datagram(bye, B_RTP, now=1.0, local=session.local_rtcp)
    assert session.malformed_count == 1


# -- BYE, timeouts, collisions, latching ---------------------------------------------------


def test_close_sends_bye_and_the_peer_reports_it() -> None:
    a, b, link = pair()
    link.run(3.0, senders=(a,), send_until=3.0)
    a.close(now=3.0, reason="hanging up")
    link._flush(a, 3.0)
    assert a.get_timer() is None and a.closed
    _, last = link.rtcp_sent_by(a)[-1]
    assert isinstance(last[0], SenderReport) and last[-1] == Bye((a.ssrc,), "hanging up")
    link.run(3.2, now=3.0)
    assert [e for _, e in link.of(b, ByeReceived)] == [
        ByeReceived(ssrc=a.ssrc, reason="hanging up", source=A_RTP.with_port(40001))
    ]
    assert a.ssrc not in b.sources
    a.receive_datagram(rtp_from(5, 1, 0), B_RTP, now=4.0)  # a closed session ignores input
    assert a.datagrams_to_send(now=4.0) == [] and events(a) == []


def test_silent_source_times_out_after_five_intervals() -> None:
    a, b, link = pair()
    link.run(2.0, senders=(a,), send_until=2.0)
    del link.sessions[a.local_rtp], link.sessions[a.local_rtcp]  # A vanishes without BYE
    link.run(40.0, now=2.0)
    [(when, event)] = link.of(b, SourceTimedOut)
    assert event == SourceTimedOut(ssrc=a.ssrc)
    assert 2.0 + 25.0 < when < 2.0 + 25.0 + 6.2  # M x Td = 5 x 5 s, checked at report times
    assert a.ssrc not in b.sources


def test_ssrc_collision_sends_bye_and_picks_a_new_ssrc() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    twin = RtpSession(config(1), local_rtp=B_RTP, remote_rtp=A_RTP, now=0.0)  # same seed
    old = a.ssrc
    assert twin.ssrc == old
    for i in range(3):
        twin.send_frame(b"x" * 10, pt=0, timestamp_increment=160, now=i * 0.02)
    for d in twin.datagrams_to_send(now=0.04):
        a.receive_datagram(d.data, d.local or B_RTP, now=0.05)
    got = events(a)
    [changed] = [e for e in got if isinstance(e, SsrcChanged)]
    assert changed.old_ssrc == old and changed.new_ssrc == a.ssrc != old
    assert changed.conflicting_source == B_RTP
    bye = parse_rtcp(a.datagrams_to_send(now=0.05)[0].data)
    assert bye[-1] == Bye((old,), "SSRC collision")
    assert len([e for e in got if isinstance(e, RtpReceived)]) == 3  # now the peer's source
    assert a.send_frame(b"y", pt=0, now=0.1).ssrc == a.ssrc
    a.datagrams_to_send(now=0.1)
    sr = next_report(a)[0]
    assert isinstance(sr, SenderReport)
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (a.ssrc, 1, 1)  # counts restart (§6.4.1)


def test_own_packets_looped_back_are_not_a_collision() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    a.send_frame(b"x", pt=0, now=0.0)
    [looped] = a.datagrams_to_send(now=0.0)
    a.receive_datagram(looped.data, A_RTP, now=0.01)
    assert events(a) == [] and a.sources == {}


def test_collision_from_a_known_conflicting_address_is_ignored() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    first = a.ssrc
    a.receive_datagram(rtp_from(first, 1, 0), NAT, now=0.0)
    second = a.ssrc
    a.receive_datagram(rtp_from(second, 1, 0), NAT, now=0.1)  # e.g. our new SSRC looped back
    assert a.ssrc == second != first
    assert len([e for e in events(a) if isinstance(e, SsrcChanged)]) == 1


def test_rtcp_with_our_ssrc_is_a_collision_too() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    old = a.ssrc
    a.receive_datagram(serialize_rtcp([ReceiverReport(ssrc=old)]), NAT, now=0.0)
    assert a.ssrc != old
    assert any(isinstance(e, SsrcChanged) for e in events(a))


def test_latching_follows_the_source_of_media() -> None:
    latching = config(1, latch=True, rtcp_mux=True)
    session = RtpSession(latching, local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for seq in (1, 2):
        session.receive_datagram(rtp_from(5, seq, 0), NAT, now=0.0)
    assert (session.remote_rtp, session.remote_rtcp) == (NAT, NAT)
    assert RemoteLatched(remote_rtp=NAT, remote_rtcp=NAT) in events(session)
    session.send_frame(b"x", pt=0, now=0.1)
    assert session.datagrams_to_send(now=0.1)[0].remote == NAT


def test_latching_comedia_without_a_remote_and_rtcp_latches_separately() -> None:
    session = RtpSession(config(1, latch=True), local_rtp=A_RTP, now=0.0)
    for seq in (1, 2):
        session.receive_datagram(rtp_from(5, seq, 0), NAT, now=0.0, local=A_RTP)
    assert (session.remote_rtp, session.remote_rtcp) == (NAT, NAT.with_port(61001))
    rtcp_source = NAT.with_port(61007)
    rr = serialize_rtcp([ReceiverReport(ssrc=5)])
    session.receive_datagram(rr, rtcp_source, now=0.1, local=session.local_rtcp)
    assert session.remote_rtcp == rtcp_source


def test_without_latch_the_remote_stays_put() -> None:
    session = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for seq in (1, 2):
        session.receive_datagram(rtp_from(5, seq, 0), NAT, now=0.0)
    assert session.remote_rtp == B_RTP
    assert not any(isinstance(e, RemoteLatched) for e in events(session))


# -- SRTP ---------------------------------------------------------------------------------


def srtp_pair() -> tuple[RtpSession, RtpSession, Link]:
    key_a = generate_sdes_key(rng=random.Random(10))
    key_b = generate_sdes_key(rng=random.Random(11))
    suite = SrtpSuite.AES_CM_128_HMAC_SHA1_80

    def ctx(key: str) -> SrtpContext:
        return SrtpContext.from_sdes(suite, key)

    a = RtpSession(
        config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0,
        srtp_send=ctx(key_a), srtp_receive=ctx(key_b),
    )  # fmt: skip
    b = RtpSession(
        config(2), local_rtp=B_RTP, remote_rtp=A_RTP, now=0.0,
        srtp_send=ctx(key_b), srtp_receive=ctx(key_a),
    )  # fmt: skip
    return a, b, Link(a, b)


def test_srtp_media_and_rtcp_are_encrypted_on_the_wire_and_work_end_to_end() -> None:
    a, b, link = srtp_pair()
    link.run(20.0, senders=(a, b), send_until=20.0)
    assert all(b"\xff" * 16 not in data for _, _, _, data in link.sent)
    assert all(
        parse_rtp(d).payload != b"\xff" * 160 for _, local, _, d in link.sent if local == A_RTP
    )
    assert b.cname.encode() not in b"".join(d for *_, d in link.sent)  # SRTCP encrypts SDES
    assert len(link.of(b, RtpReceived)) == len(link.of(a, RtpReceived)) > 900
    assert a.statistics.rtt_ms == pytest.approx(100.0, abs=0.1)
    assert a.malformed_count == b.malformed_count == 0


def test_srtp_session_drops_plain_and_replayed_packets() -> None:
    a, b, _ = srtp_pair()
    b.receive_datagram(rtp_from(5, 1, 0), A_RTP, now=0.0, local=B_RTP)
    a.send_frame(b"x" * 20, pt=0, now=0.0)
    [protected] = a.datagrams_to_send(now=0.0)
    b.receive_datagram(protected.data, A_RTP, now=0.01, local=B_RTP)
    b.receive_datagram(protected.data, A_RTP, now=0.02, local=B_RTP)
    assert b.malformed_count == 2


# -- odds and ends the peer can cause ---------------------------------------------------------


def rtcp_to(session: RtpSession, packets: list[RtcpPacket], source: Endpoint, now: float) -> None:
    session.receive_datagram(serialize_rtcp(packets), source, now=now, local=session.local_rtcp)


def test_rtcp_details_that_change_nothing() -> None:
    from natkit.rtp.rtcp import App, ReportBlock, ntp_middle32, ntp_timestamp

    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    ours = SdesChunk(a.ssrc, (SdesItem(SdesItemType.CNAME, b"impostor"),))
    future_lsr = ntp_middle32(ntp_timestamp(1000.0 + 2_208_988_800))  # an SR we never sent
    packets: list[RtcpPacket] = [
        ReceiverReport(
            ssrc=5,
            reports=(
                ReportBlock(ssrc=12345),  # about someone else
                ReportBlock(ssrc=a.ssrc, fraction_lost=64, last_sr=future_lsr),
            ),
        ),
        SourceDescription((ours,)),
        App(subtype=1, ssrc=5, name=b"TEST"),
        Bye((999,)),  # never heard of
    ]
    rtcp_to(a, packets, B_RTP.with_port(50001), 1.0)
    got = events(a)
    assert [type(e) for e in got] == [SourceAdded, RtcpReceived, StatisticsUpdated]
    stats = a.statistics
    assert stats.rtt_ms is None  # the negative round trip was ignored
    assert stats.remote_fraction_lost == 0.25
    assert set(a.sources) == {5}


def test_repeated_rtcp_collision_from_a_conflicting_address_is_ignored() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    rtcp_to(a, [ReceiverReport(ssrc=a.ssrc)], NAT, 0.0)
    second = a.ssrc
    rtcp_to(a, [ReceiverReport(ssrc=second)], NAT, 0.1)
    assert a.ssrc == second
    assert second not in a.sources


def test_conflicting_addresses_are_remembered_up_to_a_bound() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    for port in range(1, 80):
        rtcp_to(a, [ReceiverReport(ssrc=a.ssrc)], NAT.with_port(port), port * 0.01)
    changes = [e for e in events(a) if isinstance(e, SsrcChanged)]
    assert len(changes) == 79
    first = changes[0].new_ssrc
    rtcp_to(a, [ReceiverReport(ssrc=a.ssrc)], NAT.with_port(1), 1.0)  # forgotten: collides again
    assert a.ssrc != changes[-1].new_ssrc != first


def test_rtcp_sources_beyond_the_table_bound_are_not_added() -> None:
    a = RtpSession(config(1, max_sources=2), local_rtp=A_RTP, now=0.0)
    rtcp_to(a, [ReceiverReport(ssrc=s) for s in (1, 2, 3)], B_RTP, 0.0)
    assert set(a.sources) == {1, 2}


def test_timer_and_close_are_idempotent() -> None:
    a = RtpSession(config(1), local_rtp=A_RTP, remote_rtp=B_RTP, now=0.0)
    a.handle_timer(now=0.1)  # early: nothing due
    assert a.datagrams_to_send(now=0.1) == []
    a.close(now=1.0)
    a.close(now=2.0)
    a.handle_timer(now=10.0)
    assert len(a.datagrams_to_send(now=10.0)) == 1
