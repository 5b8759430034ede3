"""Test tones: generate a sine, and find it again in a recording.

This is how natkit proves two-way audio by content (DESIGN.md, the
traversal matrix): each side sends a distinct tone (say 440 Hz and
1000 Hz) and the other side's recording must contain it.

Theory of operation
-------------------
:func:`contains_tone` cuts the recording into 40 ms blocks, windows each
with a Hann window and takes its power spectrum (numpy FFT). A block
*carries* the tone when it is not silent (RMS above ``silence_dbfs``) and
at least ``min_fraction`` of its power lies within ``tolerance_hz`` of the
frequency (widened by the window's main lobe, two bins each side). The
recording contains the tone when the carrying blocks add up to
``min_duration``. Counting blocks rather than requiring a contiguous run
makes the check indifferent to where the tone starts (a time offset) and
to lost packets (silent frames), while G.711 quantisation noise (about
-38 dB) and a little added noise stay far below the threshold. A block
holding two tones at equal level carries both.

:func:`dominant_frequencies` averages block spectra over the whole
recording (Welch's method) and reports the strongest peaks, refined by
parabolic interpolation, which is what a report prints next to the
verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from natkit.media.pcm import PcmArray, as_pcm, split_frames

__all__ = [
    "RecordingCheck",
    "check_recording",
    "contains_tone",
    "dominant_frequencies",
    "is_silent",
    "level_dbfs",
    "sine_tone",
    "tone_duration",
    "tone_frames",
]

_FULL_SCALE: Final = 32768.0
_BLOCK_SECONDS: Final = 0.04
_WELCH_SAMPLES: Final = 1024


def sine_tone(
    frequency: float,
    *,
    duration: float,
    amplitude: float = 0.5,
    sample_rate: int = 8000,
    phase: float = 0.0,
) -> PcmArray:
    """A sine of ``frequency`` Hz for ``duration`` s; ``amplitude`` is a
    fraction of full scale (0.5 is -6 dBFS)."""
    if not 0 < frequency < sample_rate / 2:
        raise ValueError(f"{frequency} Hz is not below the Nyquist frequency {sample_rate / 2}")
    if not 0 <= amplitude <= 1:
        raise ValueError("amplitude is a fraction of full scale, 0 to 1")
    if duration < 0:
        raise ValueError("duration must not be negative")
    t = np.arange(round(duration * sample_rate)) / sample_rate
    wave = amplitude * 32767.0 * np.sin(2 * math.pi * frequency * t + phase)
    return np.round(wave).astype(np.int16)


def tone_frames(
    frequency: float,
    *,
    duration: float,
    amplitude: float = 0.5,
    sample_rate: int = 8000,
    frame_samples: int = 160,
) -> list[PcmArray]:
    """:func:`sine_tone` cut into frames (20 ms of 8 kHz audio by default)."""
    tone = sine_tone(frequency, duration=duration, amplitude=amplitude, sample_rate=sample_rate)
    return split_frames(tone, frame_samples)


def level_dbfs(samples: npt.ArrayLike) -> float:
    """RMS level in dB relative to full scale; -inf for digital silence."""
    pcm = as_pcm(samples).astype(np.float64)
    if pcm.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(pcm * pcm)))
    return 20 * math.log10(rms / _FULL_SCALE) if rms > 0 else -math.inf


def is_silent(samples: npt.ArrayLike, *, silence_dbfs: float = -50.0) -> bool:
    """True when the RMS level is below ``silence_dbfs``."""
    return level_dbfs(samples) < silence_dbfs


def _block_spectra(
    samples: npt.ArrayLike, block: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-block RMS (full-scale fraction) and Hann-windowed power spectra."""
    pcm = as_pcm(samples).astype(np.float64) / _FULL_SCALE
    count = len(pcm) // block
    blocks = pcm[: count * block].reshape(count, block)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1))
    spectra = np.abs(np.fft.rfft(blocks * np.hanning(block), axis=1)) ** 2
    spectra[:, 0] = 0.0  # DC offset is not a tone
    return rms, spectra


def tone_duration(
    samples: npt.ArrayLike,
    frequency: float,
    *,
    tolerance_hz: float = 20.0,
    sample_rate: int = 8000,
    min_fraction: float = 0.4,
    silence_dbfs: float = -50.0,
) -> float:
    """Seconds of 40 ms blocks that carry ``frequency`` (see module docs)."""
    block = round(_BLOCK_SECONDS * sample_rate)
    rms, spectra = _block_spectra(samples, block)
    if len(rms) == 0:
        return 0.0
    bin_hz = sample_rate / block
    freqs = np.arange(spectra.shape[1]) * bin_hz
    band = np.abs(freqs - frequency) <= tolerance_hz + 2 * bin_hz
    total = spectra.sum(axis=1)
    in_band = spectra[:, band].sum(axis=1)
    audible = rms > 10 ** (silence_dbfs / 20)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(total > 0, in_band / np.where(total > 0, total, 1.0), 0.0)
    carrying = audible & (fraction >= min_fraction)
    return float(np.count_nonzero(carrying)) * block / sample_rate


def contains_tone(
    samples: npt.ArrayLike,
    frequency: float,
    *,
    min_duration: float = 0.5,
    tolerance_hz: float = 20.0,
    sample_rate: int = 8000,
    min_fraction: float = 0.4,
    silence_dbfs: float = -50.0,
) -> bool:
    """True when at least ``min_duration`` seconds of the recording carry a
    tone within ``tolerance_hz`` of ``frequency`` (see module docs)."""
    carried = tone_duration(
        samples,
        frequency,
        tolerance_hz=tolerance_hz,
        sample_rate=sample_rate,
        min_fraction=min_fraction,
        silence_dbfs=silence_dbfs,
    )
    # Block counting quantises to 40 ms; allow for the partial block at each end.
    return carried + 1e-9 >= min_duration


def dominant_frequencies(
    samples: npt.ArrayLike,
    *,
    sample_rate: int = 8000,
    count: int = 3,
    min_relative_db: float = -20.0,
    silence_dbfs: float = -50.0,
) -> list[float]:
    """The strongest spectral peaks, strongest first, in Hz.

    At most ``count`` peaks, each within ``min_relative_db`` of the
    strongest; an empty list for a silent recording.
    """
    pcm = as_pcm(samples)
    if len(pcm) < 16 or is_silent(pcm, silence_dbfs=silence_dbfs):
        return []
    block = min(_WELCH_SAMPLES, len(pcm))
    hop = block // 2
    starts = range(0, len(pcm) - block + 1, hop)
    x = pcm.astype(np.float64) / _FULL_SCALE
    window = np.hanning(block)
    power = np.zeros(block // 2 + 1)
    for start in starts:
        power += np.abs(np.fft.rfft(x[start : start + block] * window)) ** 2
    power[0] = 0.0
    peak_power = float(power.max())
    if peak_power <= 0:
        return []
    floor = peak_power * 10 ** (min_relative_db / 10)
    inner = power[1:-1]
    is_peak = (inner > power[:-2]) & (inner >= power[2:]) & (inner >= floor)
    indices = np.nonzero(is_peak)[0] + 1
    ranked = sorted(indices.tolist(), key=lambda i: float(power[i]), reverse=True)[:count]
    bin_hz = sample_rate / block
    result = []
    for i in ranked:
        a, b, c = (math.log(max(float(power[j]), 1e-300)) for j in (i - 1, i, i + 1))
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator != 0 else 0.0
        result.append((i + offset) * bin_hz)
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingCheck:
    """What one side's recording proves about the call (two-way audio by content).

    ``heard_far`` is the verdict: the far side's tone is there for at least
    the required time. ``heard_own`` flags the near side's own tone (echo,
    or a relay looping media back); a recording holding only that, or only
    silence, means the far side's audio never arrived.
    """

    heard_far: bool
    heard_own: bool
    silent: bool
    far_seconds: float
    own_seconds: float
    level_dbfs: float
    dominant: tuple[float, ...]

    @property
    def ok(self) -> bool:
        return self.heard_far


def check_recording(
    samples: npt.ArrayLike,
    *,
    far_hz: float,
    own_hz: float,
    min_duration: float = 1.0,
    tolerance_hz: float = 20.0,
    sample_rate: int = 8000,
) -> RecordingCheck:
    """Check a recording for the far side's tone ``far_hz`` and note the
    near side's own ``own_hz`` (see :class:`RecordingCheck`)."""
    pcm = as_pcm(samples)
    far = tone_duration(pcm, far_hz, tolerance_hz=tolerance_hz, sample_rate=sample_rate)
    own = tone_duration(pcm, own_hz, tolerance_hz=tolerance_hz, sample_rate=sample_rate)
    return RecordingCheck(
        heard_far=far + 1e-9 >= min_duration,
        heard_own=own + 1e-9 >= min_duration,
        silent=is_silent(pcm),
        far_seconds=far,
        own_seconds=own,
        level_dbfs=level_dbfs(pcm),
        dominant=tuple(dominant_frequencies(pcm, sample_rate=sample_rate)),
    )
