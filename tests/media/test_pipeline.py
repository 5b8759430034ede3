"""The media path end to end, as the traversal matrix uses it: a tone is
encoded, crosses a jittery, lossy, reordering network, goes through the
jitter buffer and the decoder into a recording, which must contain the
sender's tone and not the receiver's own."""

from __future__ import annotations

import random

import numpy as np
import pytest

from natkit.media.g711 import PCMA, PCMU, G711Codec
from natkit.media.jitter import JitterBuffer, JitterBufferConfig
from natkit.media.tone import contains_tone, tone_frames

Packet = tuple[int, int, bytes]  # sequence number, timestamp, payload


def call_leg(
    codec: G711Codec, frequency: int, *, loss: float, jitter: float, seed: int
) -> np.ndarray:
    rng = random.Random(seed)
    frames = tone_frames(frequency, duration=3.0)
    timeline: list[tuple[float, Packet | None]] = []
    for k, frame in enumerate(frames):
        if rng.random() < loss:
            continue
        sent = 0.1 + k * 0.02
        timeline.append((sent + 0.03 + rng.uniform(0, jitter), (k, k * 160, codec.encode(frame))))
    buffer = JitterBuffer(JitterBufferConfig(silence_payload=codec.silence_payload()))
    timeline += [(0.1 + k * 0.02 + 0.007, None) for k in range(len(frames) + 30)]
    recording = []
    for now, packet in sorted(timeline, key=lambda e: e[0]):
        if packet is None:
            played = buffer.pop(now=now)
            recording.append(codec.decode(played.payload) if played else np.zeros(160, np.int16))
        else:
            seq, ts, payload = packet
            buffer.push(seq, ts, payload, now=now, ssrc=0x1234)
    return np.concatenate(recording)


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
@pytest.mark.parametrize(("sent", "own"), [(440, 1000), (1000, 440)])
def test_recording_contains_the_far_tone_and_not_the_own(
    codec: G711Codec, sent: int, own: int
) -> None:
    recording = call_leg(codec, sent, loss=0.05, jitter=0.04, seed=sent)
    assert contains_tone(recording, sent, min_duration=2.0)
    assert not contains_tone(recording, own, min_duration=0.1)


def test_one_way_audio_leaves_a_silent_recording() -> None:
    recording = call_leg(PCMU, 440, loss=1.0, jitter=0.0, seed=1)
    assert not contains_tone(recording, 440, min_duration=0.1)
