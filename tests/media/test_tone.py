"""Tone generation and detection: the content check behind two-way audio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from natkit.media.g711 import PCMA, PCMU, G711Codec
from natkit.media.pcm import join_frames
from natkit.media.tone import (
    check_recording,
    contains_tone,
    dominant_frequencies,
    is_silent,
    level_dbfs,
    sine_tone,
    tone_duration,
    tone_frames,
)

RNG_SEED = 20261202


def through_g711(samples: np.ndarray, codec: G711Codec = PCMU) -> np.ndarray:
    return codec.decode(codec.encode(samples))


def lose_frames(samples: np.ndarray, fraction: float, seed: int = RNG_SEED) -> np.ndarray:
    """Zero a random ``fraction`` of the 20 ms frames (packet loss, concealed as silence)."""
    frames = samples[: len(samples) // 160 * 160].reshape(-1, 160).copy()
    rng = np.random.default_rng(seed)
    lost = rng.permutation(len(frames))[: round(fraction * len(frames))]
    frames[lost] = 0
    return frames.reshape(-1)


def add_noise(samples: np.ndarray, rms: float, seed: int = RNG_SEED) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, rms, len(samples))
    return np.clip(samples + noise, -32768, 32767).astype(np.int16)


def test_sine_tone_has_the_requested_length_level_and_frequency() -> None:
    tone = sine_tone(1000, duration=0.5, amplitude=0.5)
    assert tone.dtype == np.int16 and len(tone) == 4000
    assert level_dbfs(tone) == pytest.approx(20 * math.log10(0.5 / math.sqrt(2)), abs=0.05)
    assert dominant_frequencies(tone)[0] == pytest.approx(1000, abs=1)


def test_tone_frames_are_20_ms_frames() -> None:
    frames = tone_frames(440, duration=0.1)
    assert len(frames) == 5 and all(len(f) == 160 for f in frames)
    assert np.array_equal(join_frames(frames), sine_tone(440, duration=0.1))


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"frequency": 4000}, id="nyquist"),
        pytest.param({"frequency": 0}, id="zero-frequency"),
        pytest.param({"amplitude": 1.5}, id="amplitude"),
        pytest.param({"duration": -1}, id="duration"),
    ],
)
def test_impossible_tones_are_rejected(kwargs: dict[str, float]) -> None:
    params = {"frequency": 440.0, "duration": 1.0, "amplitude": 0.5} | kwargs
    with pytest.raises(ValueError):
        sine_tone(params["frequency"], duration=params["duration"], amplitude=params["amplitude"])


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
@pytest.mark.parametrize(("sent", "other"), [(440, 1000), (1000, 440)])
def test_tone_through_g711_is_detected_and_the_other_is_not(
    codec: G711Codec, sent: int, other: int
) -> None:
    recording = through_g711(sine_tone(sent, duration=2.0), codec)
    assert contains_tone(recording, sent, min_duration=1.5)
    assert not contains_tone(recording, other, min_duration=0.1)


def test_silence_contains_no_tone() -> None:
    silence = through_g711(np.zeros(16000, dtype=np.int16))
    assert is_silent(silence)
    assert not contains_tone(silence, 440, min_duration=0.1)
    assert dominant_frequencies(silence) == []


def test_twenty_percent_frame_loss_still_detected() -> None:
    recording = lose_frames(through_g711(sine_tone(1000, duration=3.0)), 0.2)
    assert contains_tone(recording, 1000, min_duration=2.0)
    assert not contains_tone(recording, 440, min_duration=0.1)


def test_noise_time_offset_and_loss_together_still_detected() -> None:
    tone = through_g711(sine_tone(440, duration=2.0, amplitude=0.3))
    recording = np.concatenate([np.zeros(1237, dtype=np.int16), tone, np.zeros(3000, np.int16)])
    recording = add_noise(lose_frames(recording, 0.1), rms=200)
    assert contains_tone(recording, 440, min_duration=1.5)
    assert not contains_tone(recording, 1000, min_duration=0.1)
    assert dominant_frequencies(recording)[0] == pytest.approx(440, abs=2)


def test_too_short_a_tone_is_not_enough() -> None:
    recording = np.concatenate(
        [np.zeros(8000, np.int16), sine_tone(440, duration=0.3), np.zeros(8000, np.int16)]
    )
    assert 0.2 <= tone_duration(recording, 440) <= 0.32
    assert not contains_tone(recording, 440, min_duration=0.5)
    assert contains_tone(recording, 440, min_duration=0.2)


def test_broadband_noise_is_no_tone() -> None:
    noise = add_noise(np.zeros(16000, dtype=np.int16), rms=3000)
    assert not is_silent(noise)
    assert not contains_tone(noise, 440, min_duration=0.1)
    assert not contains_tone(noise, 1000, min_duration=0.1)


def test_a_very_quiet_tone_counts_as_silence() -> None:
    whisper = sine_tone(440, duration=1.0, amplitude=0.001)
    assert not contains_tone(whisper, 440, min_duration=0.1)
    assert contains_tone(whisper, 440, min_duration=0.5, silence_dbfs=-80)


def test_a_mix_contains_both_tones() -> None:
    mix = sine_tone(440, duration=1.0, amplitude=0.3) + sine_tone(1000, duration=1.0, amplitude=0.3)
    assert contains_tone(mix, 440, min_duration=0.8)
    assert contains_tone(mix, 1000, min_duration=0.8)
    assert sorted(round(f) for f in dominant_frequencies(mix, count=2)) == [440, 1000]


def test_tolerance_accepts_a_slightly_detuned_tone() -> None:
    recording = sine_tone(1015, duration=1.0)
    assert contains_tone(recording, 1000, min_duration=0.5, tolerance_hz=20)
    assert not contains_tone(recording, 900, min_duration=0.1, tolerance_hz=20)


def test_dominant_frequencies_rank_by_strength() -> None:
    mix = sine_tone(600, duration=1.0, amplitude=0.4) + sine_tone(1800, duration=1.0, amplitude=0.1)
    strongest, second = dominant_frequencies(mix, count=2)
    assert strongest == pytest.approx(600, abs=1) and second == pytest.approx(1800, abs=1)
    assert dominant_frequencies(mix, count=2, min_relative_db=-6) == [strongest]


def test_short_and_empty_recordings() -> None:
    assert dominant_frequencies(np.zeros(0, dtype=np.int16)) == []
    assert tone_duration(np.zeros(10, dtype=np.int16), 440) == 0.0
    assert level_dbfs([]) == -math.inf
    assert not contains_tone(sine_tone(440, duration=0.02), 440, min_duration=0.04)


def test_check_recording_passes_when_the_far_tone_arrived() -> None:
    recording = lose_frames(through_g711(sine_tone(1000, duration=3.0)), 0.1)
    check = check_recording(recording, far_hz=1000, own_hz=440, min_duration=2.0)
    assert check.ok and check.heard_far and not check.heard_own and not check.silent
    assert 2.0 <= check.far_seconds <= 3.0 and check.own_seconds == 0.0
    assert check.dominant[0] == pytest.approx(1000, abs=2)


def test_check_recording_fails_on_silence_and_on_only_the_own_tone() -> None:
    silent = check_recording(np.zeros(24000, np.int16), far_hz=1000, own_hz=440)
    assert not silent.ok and silent.silent and silent.dominant == ()
    echo = check_recording(sine_tone(440, duration=3.0), far_hz=1000, own_hz=440)
    assert not echo.ok and echo.heard_own and not echo.silent


def test_check_recording_with_echo_of_the_own_tone_still_passes() -> None:
    mix = sine_tone(1000, duration=2.0, amplitude=0.4) + sine_tone(440, duration=2.0, amplitude=0.2)
    check = check_recording(mix, far_hz=1000, own_hz=440)
    assert check.ok and check.level_dbfs < 0
