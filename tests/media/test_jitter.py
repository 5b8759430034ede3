"""Adaptive jitter buffer: explicit time, one behaviour per test."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.media.g711 import PCMA
from natkit.media.jitter import (
    Concealment,
    FrameKind,
    JitterBuffer,
    JitterBufferConfig,
    PlayoutFrame,
)

FRAME = 0.02
SAMPLES = 160


def payload(n: int) -> bytes:
    return n.to_bytes(4, "big") * 40


def run(
    buffer: JitterBuffer,
    arrivals: list[tuple[float, int, int]],
    *,
    pops: int,
    first_pop: float = 0.005,
) -> list[PlayoutFrame | None]:
    """Interleave pushes (arrival time, seq, timestamp) and a pop every 20 ms."""
    events: list[tuple[float, int, tuple[int, int] | None]] = [
        (t, 0, (seq, ts)) for t, seq, ts in arrivals
    ]
    events += [(first_pop + k * FRAME, 1, None) for k in range(pops)]
    out: list[PlayoutFrame | None] = []
    for now, _, packet in sorted(events, key=lambda e: (e[0], e[1])):
        if packet is None:
            out.append(buffer.pop(now=now))
        else:
            seq, ts = packet
            buffer.push(seq, ts, payload(seq), now=now)
    return out


def steady(n: int, *, seq0: int = 0, ts0: int = 0, t0: float = 0.0) -> list[tuple[float, int, int]]:
    return [(t0 + k * FRAME, (seq0 + k) % 65536, (ts0 + k * SAMPLES) % 2**32) for k in range(n)]


def played(frames: list[PlayoutFrame | None]) -> list[int]:
    return [f.sequence for f in frames if f is not None and f.sequence is not None]


def test_nothing_to_play_before_the_first_packet() -> None:
    assert JitterBuffer().pop(now=0.0) is None


def test_first_frame_waits_for_the_initial_delay() -> None:
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.06))
    buffer.push(0, 0, payload(0), now=1.0)
    assert buffer.pop(now=1.05) is None
    frame = buffer.pop(now=1.06)
    assert frame is not None and frame.kind is FrameKind.MEDIA and frame.payload == payload(0)


def test_in_order_stream_plays_in_order_without_concealment() -> None:
    buffer = JitterBuffer()
    frames = run(buffer, steady(100), pops=100)
    sequences = played(frames)
    stats = buffer.stats()
    assert sequences == sorted(set(sequences)) and sequences[0] == 0
    # the 60 ms start-up delay shrinks towards the 20 ms target by skipping a frame
    assert stats.skipped == 1 and len(sequences) + stats.skipped == sequences[-1] + 1
    assert stats.concealed == stats.late == stats.duplicates == stats.resets == 0
    assert stats.received == 100


def test_reordered_packets_play_in_timestamp_order() -> None:
    arrivals = steady(50)
    arrivals[10], arrivals[11] = (
        (arrivals[11][0], *arrivals[10][1:]),
        (
            arrivals[10][0],
            *arrivals[11][1:],
        ),
    )
    arrivals[20] = (arrivals[20][0] + 0.03, *arrivals[20][1:])  # overtaken by 21
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=50)
    assert played(frames) == sorted(played(frames))
    assert {10, 11, 20} <= set(played(frames))
    assert buffer.stats().late == 0


def test_duplicates_are_counted_and_played_once() -> None:
    arrivals = steady(30)
    arrivals += [(t + 0.001, seq, ts) for t, seq, ts in arrivals[5:8]]
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=30)
    assert played(frames).count(6) == 1
    assert buffer.stats().duplicates == 3


def test_a_lost_packet_is_concealed_with_silence_by_default() -> None:
    arrivals = [a for a in steady(30) if a[1] != 12]
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=30)
    media = [f for f in frames if f is not None]
    index = next(i for i, f in enumerate(media) if f.sequence == 11)
    gap = media[index + 1]
    assert gap.kind is FrameKind.SILENCE and gap.payload == b"\xff" * 160
    assert gap.timestamp == 12 * SAMPLES and gap.concealed
    assert media[index + 2].sequence == 13


def test_repeat_last_conceals_with_the_previous_payload_a_few_times_then_silence() -> None:
    config = JitterBufferConfig(concealment=Concealment.REPEAT_LAST, max_repeats=2)
    arrivals = [a for a in steady(40) if not 10 <= a[1] < 15]
    buffer = JitterBuffer(config)
    frames = [f for f in run(buffer, arrivals, pops=40) if f is not None]
    index = next(i for i, f in enumerate(frames) if f.sequence == 9)
    kinds = [f.kind for f in frames[index + 1 : index + 6]]
    assert kinds == [FrameKind.REPEAT] * 2 + [FrameKind.SILENCE] * 3
    assert frames[index + 1].payload == payload(9)
    assert frames[index + 6].sequence == 15


def test_a_alaw_buffer_conceals_with_alaw_silence() -> None:
    config = JitterBufferConfig(silence_payload=PCMA.silence_payload())
    buffer = JitterBuffer(config)
    frames = run(buffer, [a for a in steady(10) if a[1] != 4], pops=10)
    assert any(f is not None and f.payload == b"\xd5" * 160 for f in frames)


def test_a_packet_after_its_slot_is_late_and_the_delay_grows() -> None:
    arrivals = steady(40)
    arrivals[20] = (arrivals[20][0] + 0.2, *arrivals[20][1:])
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=40)
    stats = buffer.stats()
    assert 20 not in played(frames)
    assert stats.late == 1 and stats.inserted >= 1


def test_sequence_and_timestamp_wraparound_play_through() -> None:
    arrivals = steady(40, seq0=65530, ts0=2**32 - 5 * SAMPLES)
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=40)
    sequences = played(frames)
    expected = [(65530 + k) % 65536 for k in range(40)]
    assert sequences == expected[: len(sequences)] and len(sequences) >= 35
    assert buffer.stats().resets == 0
    assert [f.timestamp for f in frames if f is not None][6] == 1 * SAMPLES


def test_a_new_ssrc_resets_the_buffer() -> None:
    buffer = JitterBuffer()
    for k in range(10):
        buffer.push(k, k * SAMPLES, payload(k), now=k * FRAME, ssrc=1)
        buffer.pop(now=k * FRAME + 0.005)
    buffer.push(5000, 777, payload(99), now=0.2, ssrc=2)
    assert buffer.stats().resets == 1 and buffer.stats().buffered == 1
    assert buffer.pop(now=0.205) is None  # re-buffering the new source
    frame = buffer.pop(now=0.26)
    assert frame is not None and frame.sequence == 5000 and frame.timestamp == 777


def test_a_sequence_number_jump_resets_the_buffer() -> None:
    buffer = JitterBuffer()
    run(buffer, steady(10), pops=10)
    buffer.push(20000, 10 * SAMPLES, payload(1), now=0.2)
    assert buffer.stats().resets == 1


def test_a_timestamp_jump_resets_the_buffer() -> None:
    buffer = JitterBuffer()
    run(buffer, steady(10), pops=10)
    buffer.push(10, 10 * SAMPLES + 8000 * 60, payload(10), now=0.2)
    assert buffer.stats().resets == 1


def test_silence_suppression_gap_is_not_a_jump() -> None:
    arrivals = steady(10) + steady(10, seq0=10, ts0=10 * SAMPLES + 8000 * 2, t0=2.2)
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=125)
    assert buffer.stats().resets == 0
    assert played(frames) == list(range(20))


def test_duplicate_reset_on_old_misordered_packet_is_not_a_restart() -> None:
    buffer = JitterBuffer()
    run(buffer, steady(200), pops=200)
    buffer.push(150, 150 * SAMPLES, payload(150), now=4.0)
    stats = buffer.stats()
    assert stats.resets == 0 and stats.duplicates + stats.late >= 1


def test_target_delay_follows_jitter_within_bounds() -> None:
    rng = random.Random(7)
    config = JitterBufferConfig(min_delay=0.02, max_delay=0.3)
    calm, jittery, wild = JitterBuffer(config), JitterBuffer(config), JitterBuffer(config)
    run(calm, steady(300), pops=300)
    run(jittery, [(t + rng.uniform(0, 0.06), s, ts) for t, s, ts in steady(300)], pops=300)
    run(wild, [(t + rng.uniform(0, 2.0), s, ts) for t, s, ts in steady(300)], pops=300)
    assert calm.stats().target_delay == pytest.approx(0.02)
    assert 0.04 < jittery.stats().target_delay < 0.3
    assert wild.stats().target_delay == pytest.approx(0.3)


def test_jittery_stream_settles_with_few_late_packets() -> None:
    rng = random.Random(11)
    arrivals = [(t + rng.uniform(0, 0.06), s, ts) for t, s, ts in steady(500)]
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=520)
    stats = buffer.stats()
    assert stats.late <= 25
    assert len(played(frames)) >= 470
    assert played(frames) == sorted(played(frames))
    assert stats.jitter > 0.005


def test_excess_delay_shrinks_towards_the_target() -> None:
    buffer = JitterBuffer(JitterBufferConfig(initial_delay=0.2, min_delay=0.02))
    frames = run(buffer, steady(400), pops=400)
    stats = buffer.stats()
    assert stats.skipped >= 6
    assert stats.playout_delay < 0.07
    assert played(frames) == sorted(played(frames))


def test_overflow_drops_packets_beyond_capacity() -> None:
    buffer = JitterBuffer(JitterBufferConfig(capacity=5))
    for k in range(8):
        buffer.push(k, k * SAMPLES, payload(k), now=0.0)
    assert buffer.stats().overflowed == 3 and buffer.stats().buffered == 5


def test_early_reordered_packet_before_playout_moves_the_start() -> None:
    buffer = JitterBuffer()
    buffer.push(5, 5 * SAMPLES, payload(5), now=0.0)
    buffer.push(4, 4 * SAMPLES, payload(4), now=0.001)
    frame = buffer.pop(now=0.05)
    assert frame is not None and frame.sequence == 4


def test_explicit_reset_keeps_counters() -> None:
    buffer = JitterBuffer()
    run(buffer, steady(10), pops=10)
    buffer.reset()
    stats = buffer.stats()
    assert stats.resets == 1 and stats.buffered == 0 and stats.received == 10
    assert buffer.pop(now=1.0) is None


@given(
    st.lists(
        st.tuples(
            st.integers(0, 65535),
            st.integers(0, 2**32 - 1),
            st.floats(0, 0.5),
            st.booleans(),
        ),
        max_size=60,
    )
)
@settings(derandomize=True, database=None, max_examples=200)
def test_random_traffic_never_raises_and_keeps_counts_consistent(
    ops: list[tuple[int, int, float, bool]],
) -> None:
    buffer = JitterBuffer()
    now = 0.0
    media = 0
    last: tuple[int, int] | None = None  # (resets, timestamp) of the last media frame
    for seq, ts, delta, is_pop in ops:
        now += delta
        if is_pop:
            frame = buffer.pop(now=now)
            if frame is not None and not frame.concealed:
                media += 1
                resets = buffer.stats().resets
                if last is not None and last[0] == resets:
                    # within one run, playout never goes back in time (mod 2**32)
                    assert 0 < (frame.timestamp - last[1]) % 2**32 < 2**31
                last = (resets, frame.timestamp)
        else:
            buffer.push(seq, ts, b"x", now=now)
    stats = buffer.stats()
    assert stats.played == media
    assert stats.played + stats.buffered <= stats.received
    assert stats.buffered <= buffer.config.capacity


def test_a_delay_step_costs_a_few_late_packets_then_plays_on() -> None:
    arrivals = [(t + (0.1 if seq >= 100 else 0.0), seq, ts) for t, seq, ts in steady(300)]
    buffer = JitterBuffer()
    frames = run(buffer, arrivals, pops=320)
    stats = buffer.stats()
    assert 1 <= stats.late <= 8
    assert stats.inserted >= stats.late
    assert set(range(150, 300)) <= set(played(frames))
