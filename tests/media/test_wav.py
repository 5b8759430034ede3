"""WAV play/record files and the polyphase resampler."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import NatkitError
from natkit.media.tone import contains_tone, dominant_frequencies, level_dbfs, sine_tone
from natkit.media.wav import (
    WavFormatError,
    read_wav,
    read_wav_frames,
    resample,
    write_wav,
)


def make_wav(path: Path, pcm: np.ndarray, *, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return path


def test_recording_round_trips_at_8_khz(tmp_path: Path) -> None:
    tone = sine_tone(440, duration=0.5)
    write_wav(tmp_path / "rec.wav", tone)
    with wave.open(str(tmp_path / "rec.wav"), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
    assert np.array_equal(read_wav(tmp_path / "rec.wav"), tone)


def test_file_objects_work_too() -> None:
    buffer = io.BytesIO()
    write_wav(buffer, sine_tone(440, duration=0.1))
    buffer.seek(0)
    assert len(read_wav(buffer)) == 800


def test_stereo_44k1_is_mixed_to_mono_and_resampled(tmp_path: Path) -> None:
    left = sine_tone(1000, duration=1.0, sample_rate=44100, amplitude=0.4)
    right = sine_tone(1000, duration=1.0, sample_rate=44100, amplitude=0.2)
    stereo = np.stack([left, right], axis=1)
    pcm = read_wav(make_wav(tmp_path / "s.wav", stereo, rate=44100, channels=2))
    assert len(pcm) == 8000
    assert dominant_frequencies(pcm)[0] == pytest.approx(1000, abs=1)
    expected = level_dbfs(left) + 20 * np.log10(0.75)  # (0.4 + 0.2) / 2 = 0.75 * 0.4
    assert level_dbfs(pcm[200:-200]) == pytest.approx(expected, abs=0.1)


def test_opposite_channels_cancel_in_the_mix(tmp_path: Path) -> None:
    tone = sine_tone(500, duration=0.2)
    stereo = np.stack([tone, -tone], axis=1)
    pcm = read_wav(make_wav(tmp_path / "c.wav", stereo, rate=8000, channels=2))
    assert np.abs(pcm).max() <= 1


def test_frames_are_20_ms_with_the_last_padded(tmp_path: Path) -> None:
    tone = sine_tone(440, duration=0.05, sample_rate=16000)
    path = make_wav(tmp_path / "f.wav", tone, rate=16000)
    frames = read_wav_frames(path)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert not frames[-1][80:].any()


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 44100, 48000])
def test_resampling_keeps_a_pass_band_tone(rate: int) -> None:
    tone = sine_tone(1000, duration=1.0, sample_rate=rate)
    out = resample(tone, rate, 8000)
    assert len(out) == 8000
    assert level_dbfs(out[200:-200]) == pytest.approx(level_dbfs(tone), abs=0.1)
    assert contains_tone(out, 1000, min_duration=0.9)


@pytest.mark.parametrize(("rate", "freq"), [(44100, 6000), (48000, 5000), (16000, 4500)])
def test_resampling_removes_what_would_alias(rate: int, freq: int) -> None:
    tone = sine_tone(freq, duration=1.0, sample_rate=rate)
    out = resample(tone, rate, 8000)
    assert level_dbfs(out[200:-200]) < level_dbfs(tone) - 60


def test_upsampling_works_as_well() -> None:
    out = resample(sine_tone(1000, duration=0.5), 8000, 48000)
    assert len(out) == 24000
    assert dominant_frequencies(out, sample_rate=48000)[0] == pytest.approx(1000, abs=2)


def test_awkward_rates_use_a_close_ratio() -> None:
    tone = sine_tone(1000, duration=1.0, sample_rate=8017)
    out = resample(tone, 8017, 8000)
    assert abs(len(out) - 8000) <= 1
    assert dominant_frequencies(out)[0] == pytest.approx(1000, abs=1)
    up = resample(sine_tone(1000, duration=0.2), 8000, 44111)
    assert abs(len(up) - 8822) <= 2


def test_sample_rates_outside_1_to_384_khz_are_rejected(tmp_path: Path) -> None:
    path = make_wav(tmp_path / "r.wav", np.zeros(100, np.int16), rate=500)
    with pytest.raises(WavFormatError, match="sample rate"):
        read_wav(path)


def test_same_rate_and_empty_input_are_copies() -> None:
    tone = sine_tone(440, duration=0.1)
    assert np.array_equal(resample(tone, 8000, 8000), tone)
    assert len(resample(np.zeros(0, dtype=np.int16), 44100, 8000)) == 0
    with pytest.raises(ValueError):
        resample(tone, 0, 8000)


def test_full_scale_input_does_not_wrap() -> None:
    square = np.where(np.arange(4410) % 100 < 50, 32767, -32768).astype(np.int16)
    out = resample(square, 44100, 8000)
    assert out.dtype == np.int16 and out.max() <= 32767 and out.min() >= -32768


def test_not_a_wav_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"hello, this is not audio")
    with pytest.raises(WavFormatError, match="not a readable WAV"):
        read_wav(tmp_path / "x.wav")


def test_empty_and_truncated_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "empty.wav")
    good = make_wav(tmp_path / "g.wav", sine_tone(440, duration=0.1), rate=8000).read_bytes()
    (tmp_path / "t.wav").write_bytes(good[:30])
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "t.wav")


def test_truncated_data_keeps_the_whole_frames(tmp_path: Path) -> None:
    good = make_wav(tmp_path / "g.wav", sine_tone(440, duration=0.1), rate=8000).read_bytes()
    (tmp_path / "t.wav").write_bytes(good[:-101])
    assert len(read_wav(tmp_path / "t.wav")) == 800 - 51


@pytest.mark.parametrize("width", [1, 3, 4])
def test_other_sample_widths_are_unsupported(tmp_path: Path, width: int) -> None:
    silence = np.zeros(100 * width, dtype=np.uint8)
    path = make_wav(tmp_path / "w.wav", silence, rate=8000, width=width)
    with pytest.raises(WavFormatError, match="16-bit PCM only"):
        read_wav(path)


def test_extensible_or_float_formats_are_unsupported(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)  # WAVE_FORMAT_IEEE_FLOAT
    data = b"\x00" * 16
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    riff += struct.pack("<I", len(data)) + data
    (tmp_path / "float.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "float.wav")


PCM_GUID = bytes.fromhex("0100000000001000800000aa00389b71")
FLOAT_GUID = bytes.fromhex("0300000000001000800000aa00389b71")


def extensible_wav(pcm: np.ndarray, *, rate: int, channels: int, guid: bytes = PCM_GUID) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE file (what many tools write for >2 channels)."""
    fmt = struct.pack(
        "<HHIIHHHHI", 0xFFFE, channels, rate, rate * 2 * channels, 2 * channels, 16, 22, 16, 0
    )
    fmt += guid
    data = pcm.astype("<i2").tobytes()
    junk = b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk, padded
    riff = b"WAVE" + junk + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    riff += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(riff)) + riff


def test_extensible_pcm_is_read(tmp_path: Path) -> None:
    tone = sine_tone(1000, duration=0.5, sample_rate=16000)
    quad = np.stack([tone, tone, tone, tone], axis=1)
    (tmp_path / "x.wav").write_bytes(extensible_wav(quad, rate=16000, channels=4))
    pcm = read_wav(tmp_path / "x.wav")
    assert len(pcm) == 4000
    assert dominant_frequencies(pcm)[0] == pytest.approx(1000, abs=1)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(
            extensible_wav(np.zeros(8, np.int16), rate=8000, channels=1, guid=FLOAT_GUID),
            id="float-subformat",
        ),
        pytest.param(
            extensible_wav(np.zeros(8, np.int16), rate=8000, channels=1)[:60], id="truncated"
        ),
    ],
)
def test_unsupported_or_broken_extensible_files_are_clear_errors(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "x.wav").write_bytes(content)
    with pytest.raises(WavFormatError):
        read_wav(tmp_path / "x.wav")


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    path = make_wav(tmp_path / "big.wav", sine_tone(440, duration=0.1), rate=8000)
    size = path.stat().st_size
    assert len(read_wav(path, max_bytes=size)) == 800
    with pytest.raises(WavFormatError, match="larger than"):
        read_wav_frames(path, max_bytes=size - 1)


def test_the_error_is_a_natkit_error_and_a_value_error() -> None:
    assert issubclass(WavFormatError, NatkitError) and issubclass(WavFormatError, ValueError)


def test_missing_file_is_the_usual_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "absent.wav")


GOOD_WAV = extensible_wav(np.arange(-50, 50, dtype=np.int16), rate=8000, channels=1)


def plain_wav() -> bytes:
    buffer = io.BytesIO()
    write_wav(buffer, sine_tone(440, duration=0.01))
    return buffer.getvalue()


@given(st.binary(max_size=200))
@settings(derandomize=True, database=None, max_examples=300)
def test_random_bytes_are_a_wav_format_error(data: bytes) -> None:
    with pytest.raises(WavFormatError):
        read_wav(io.BytesIO(data))


@given(
    st.sampled_from([plain_wav(), GOOD_WAV]),
    st.integers(0, 200),
    st.binary(min_size=1, max_size=4),
    st.integers(0, 200),
)
@settings(derandomize=True, database=None, max_examples=400)
def test_mutated_and_truncated_wavs_read_or_raise_wav_format_error(
    original: bytes, at: int, patch: bytes, cut: int
) -> None:
    data = bytearray(original)
    position = at % len(data)
    data[position : position + len(patch)] = patch
    data = data[: len(data) - cut]
    try:
        pcm = read_wav(io.BytesIO(bytes(data)))
    except WavFormatError:
        return
    assert pcm.dtype == np.int16
