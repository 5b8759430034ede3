"""Opus through PyAV's libopus (``av`` is a dependency, so these always run)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from natkit.errors import MalformedMessageError
from natkit.media.opus import (
    OPUS_CLOCK_RATE,
    OpusConfig,
    OpusDecoder,
    OpusEncoder,
    opus_available,
)
from natkit.media.pcm import split_frames
from natkit.media.tone import contains_tone, dominant_frequencies, sine_tone


def round_trip(tone: np.ndarray, config: OpusConfig) -> tuple[list[bytes], np.ndarray]:
    encoder, decoder = OpusEncoder(config), OpusDecoder(config.sample_rate)
    packets = [encoder.encode(frame) for frame in split_frames(tone, config.frame_samples)]
    decoded = np.concatenate([decoder.decode(packet) for packet in packets])
    return packets, decoded


def test_libopus_is_available_in_this_environment() -> None:
    assert opus_available()


@pytest.mark.parametrize("frequency", [440, 1000])
def test_a_tone_survives_encoding_and_decoding_at_8_khz(frequency: int) -> None:
    packets, decoded = round_trip(sine_tone(frequency, duration=1.0), OpusConfig())
    assert len(packets) == 50 and all(0 < len(p) < 200 for p in packets)
    assert abs(len(decoded) - 8000) <= 160
    assert contains_tone(decoded, frequency, min_duration=0.8)
    assert dominant_frequencies(decoded)[0] == pytest.approx(frequency, abs=3)


def test_wideband_input_at_48_khz() -> None:
    config = OpusConfig(sample_rate=48000, bitrate=32000)
    _, decoded = round_trip(sine_tone(1000, duration=0.5, sample_rate=48000), config)
    assert dominant_frequencies(decoded, sample_rate=48000)[0] == pytest.approx(1000, abs=3)


def test_rtp_timestamps_count_48_khz_whatever_the_pcm_rate() -> None:
    assert OPUS_CLOCK_RATE == 48000
    assert OpusConfig().rtp_timestamp_step == 960
    assert OpusConfig(frame_ms=10).rtp_timestamp_step == 480
    assert OpusConfig().frame_samples == 160


def test_the_encoder_wants_exactly_one_frame() -> None:
    with pytest.raises(ValueError, match="160 samples"):
        OpusEncoder().encode(np.zeros(100, dtype=np.int16))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(OpusConfig(sample_rate=44100), id="rate"),
        pytest.param(OpusConfig(frame_ms=25), id="frame"),
    ],
)
def test_unsupported_settings_are_rejected(config: OpusConfig) -> None:
    with pytest.raises(ValueError):
        OpusEncoder(config)


def test_empty_payload_is_malformed_and_the_decoder_survives() -> None:
    decoder = OpusDecoder()
    with pytest.raises(MalformedMessageError):
        decoder.decode(b"")
    packet = OpusEncoder().encode(sine_tone(440, duration=0.02))
    assert decoder.decode(packet).dtype == np.int16


def test_random_payloads_decode_or_raise_malformed_only() -> None:
    rng = random.Random(5)
    decoder = OpusDecoder()
    outcomes = {"decoded": 0, "malformed": 0}
    for _ in range(300):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 80)))
        try:
            decoder.decode(payload)
        except MalformedMessageError as exc:
            assert exc.error_code is None
            outcomes["malformed"] += 1
        else:
            outcomes["decoded"] += 1
    assert outcomes["decoded"] and outcomes["malformed"]
    _, decoded = round_trip(sine_tone(1000, duration=0.5), OpusConfig())
    assert contains_tone(decoded, 1000, min_duration=0.3)
