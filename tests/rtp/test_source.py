"""Per-source reception state: RFC 3550 A.1 sequence tracking, A.3 loss, A.8 jitter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.rtp.packet import RtpPacket
from natkit.rtp.source import ReceivedSource, SequenceVerdict

A = SequenceVerdict.ACCEPTED


def packet(seq: int, ts: int = 0) -> RtpPacket:
    return RtpPacket(
        payload_type=0, sequence_number=seq & 0xFFFF, timestamp=ts & 0xFFFFFFFF, ssrc=7,
        payload=b"x" * 160,
    )  # fmt: skip


def feed(source: ReceivedSource, seqs: list[int], *, start: float = 0.0) -> list[SequenceVerdict]:
    verdicts = []
    for i, seq in enumerate(seqs):
        verdict, _ = source.update(packet(seq, seq * 160), now=start + i * 0.02)
        verdicts.append(verdict)
    return verdicts


def test_first_packet_is_held_in_probation_and_released_on_validation() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    first, second = packet(100), packet(101)
    assert source.update(first, now=0.0) == (SequenceVerdict.PROBATION, [])
    assert source.update(second, now=0.02) == (A, [first, second])
    assert source.validated
    assert (source.received, source.expected, source.lost) == (2, 2, 0)


def test_probation_restarts_on_a_gap() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    assert feed(source, [10, 20]) == [SequenceVerdict.PROBATION] * 2
    verdict, deliver = source.update(packet(21), now=0.1)
    assert verdict is A
    assert [p.sequence_number for p in deliver] == [20, 21]
    assert source.expected == 2


def test_min_sequential_three_holds_two_packets() -> None:
    source = ReceivedSource(7, clock_rate=8000, min_sequential=3)
    assert feed(source, [5, 6]) == [SequenceVerdict.PROBATION] * 2
    _, deliver = source.update(packet(7), now=0.1)
    assert [p.sequence_number for p in deliver] == [5, 6, 7]
    assert source.received == 3


def test_loss_is_expected_minus_received_and_fraction_per_interval() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    feed(source, [1, 2, 3, 5, 6, 8, 9, 10])  # 4 and 7 lost
    block = source.report_block(now=1.0)
    assert block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10
    assert block.highest_sequence == 10
    feed(source, [11, 12, 13], start=2.0)
    block = source.report_block(now=3.0)
    assert block.cumulative_lost == 2
    assert block.fraction_lost == 0


def test_reordered_packet_is_accepted_and_not_lost() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    assert feed(source, [1, 2, 3, 5, 4, 6]) == [SequenceVerdict.PROBATION, A, A, A, A, A]
    assert source.lost == 0
    assert source.extended_max == 6


def test_duplicates_are_dropped_and_not_counted() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    verdicts = feed(source, [1, 2, 3, 3, 2, 4])
    assert verdicts[3:5] == [SequenceVerdict.DUPLICATE] * 2
    assert source.duplicates == 2
    assert (source.received, source.lost) == (4, 0)


def test_sequence_wraparound_counts_a_cycle() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    assert set(feed(source, [65533, 65534, 65535, 0, 1, 2])[1:]) == {A}
    assert source.cycles == 1 << 16
    assert source.extended_max == (1 << 16) + 2
    block = source.report_block(now=1.0)
    assert block.highest_sequence == 0x00010002
    assert block.cumulative_lost == 0


def test_late_packet_across_the_wrap_is_not_a_new_cycle() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    feed(source, [65534, 65535, 1, 0, 2])
    assert source.cycles == 1 << 16
    assert source.lost == 0
    assert source.extended_sequence(65535) == 65535
    assert source.extended_sequence(0) == 1 << 16


def test_wild_jump_is_dropped_unless_the_next_packet_confirms_a_restart() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    feed(source, [100, 101, 102])
    assert source.update(packet(40000), now=1.0)[0] is SequenceVerdict.BAD_SEQUENCE
    assert source.update(packet(103), now=1.02)[0] is A
    assert source.update(packet(50000), now=1.04)[0] is SequenceVerdict.BAD_SEQUENCE
    assert source.update(packet(50001), now=1.06)[0] is A  # A.1: the sender restarted
    assert (source.base_seq, source.received) == (50001, 1)


def test_a_sender_restart_does_not_spike_the_jitter() -> None:
    # A restarted sender picks a new sequence number and a new random timestamp
    # base (RFC 3550 §5.1): the transit difference across the restart is not jitter.
    source = ReceivedSource(7, clock_rate=8000)
    for i in range(10):
        source.update(packet(100 + i, 160 * i), now=0.02 * i)
    for i in range(10):
        source.update(packet(50000 + i, 0x7654321 + 160 * i), now=1.0 + 0.02 * i)
    assert source.base_seq == 50001
    assert source.jitter == pytest.approx(0.0, abs=1e-6)


def test_very_late_packet_beyond_max_misorder_is_dropped() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    feed(source, list(range(1, 300)))
    assert source.update(packet(50), now=10.0)[0] is SequenceVerdict.BAD_SEQUENCE


def test_jitter_of_constant_delay_is_zero() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    for i in range(50):
        source.update(packet(i, 1000 + 160 * i), now=5.0 + 0.02 * i)
    assert source.jitter == pytest.approx(0.0, abs=1e-6)


def test_jitter_of_alternating_five_ms_delay_follows_a8() -> None:
    # Every other packet 5 ms late: each transit difference is 40 timestamp units at 8 kHz,
    # so after n differences J = 40 * (1 - (15/16)^n).
    source = ReceivedSource(7, clock_rate=8000)
    for i in range(33):
        late = 0.005 if i % 2 else 0.0
        source.update(packet(i, 160 * i), now=0.02 * i + late)
    assert source.jitter == pytest.approx(40 * (1 - (15 / 16) ** 32))
    assert source.report_block(now=1.0).jitter == int(40 * (1 - (15 / 16) ** 32))


def test_jitter_ignores_the_32_bit_timestamp_wrap() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    for i in range(10):
        source.update(packet(i, 0xFFFFFF00 + 160 * i), now=0.02 * i)
    assert source.jitter == pytest.approx(0.0, abs=1e-6)


def test_report_block_carries_lsr_and_dlsr() -> None:
    source = ReceivedSource(7, clock_rate=8000)
    feed(source, [1, 2])
    source.last_sr_ntp = 0x12345678
    source.last_sr_arrival = 10.0
    block = source.report_block(now=11.5)
    assert (block.last_sr, block.delay_since_last_sr) == (0x12345678, int(1.5 * 65536))


@settings(max_examples=80, derandomize=True, database=None, deadline=None)
@given(
    start=st.integers(0, 0xFFFF),
    count=st.integers(2, 400),
    data=st.data(),
)
def test_lossy_reordered_duplicated_streams_deliver_each_packet_once(
    start: int, count: int, data: st.DataObject
) -> None:
    """Across the 16-bit wrap, with loss, local reordering (< MAX_MISORDER) and
    duplicates: nothing is delivered twice, every distinct packet arriving after
    the source validated is delivered, and A.3 counts what was delivered."""
    order = list(range(count))
    for _ in range(data.draw(st.integers(0, count // 4))):  # local swaps
        i = data.draw(st.integers(0, count - 1))
        j = min(count - 1, i + data.draw(st.integers(1, 20)))
        order[i], order[j] = order[j], order[i]
    kept = [n for n in order if data.draw(st.integers(0, 9)) > 0 or n < 2]  # 10 % loss
    arrivals: list[int] = []
    for n in kept:
        arrivals.append(n)
        if data.draw(st.integers(0, 19)) == 0:
            arrivals.append(n)  # 5 % duplicated
    source = ReceivedSource(7, clock_rate=8000)
    delivered: list[tuple[int, int]] = []  # (extended sequence, packet number n)
    validated_at: int | None = None
    for i, n in enumerate(arrivals):
        verdict, out = source.update(packet(start + n, 160 * n), now=0.02 * i)
        if verdict is SequenceVerdict.ACCEPTED and validated_at is None:
            validated_at = i
        delivered.extend(
            (source.extended_sequence(p.sequence_number), p.timestamp // 160) for p in out
        )
    numbers = [n for _, n in delivered]
    assert len(numbers) == len(set(numbers))
    assert source.received == len(delivered)
    # Extended numbers count exactly as the sender numbered, across the wrap.
    assert len({ext - n for ext, n in delivered}) <= 1
    assert all(ext >= 0 for ext, _ in delivered)
    if validated_at is not None:
        assert set(arrivals[validated_at + 1 :]) <= set(numbers)
        assert source.lost == source.expected - source.received
