"""Play from and record to WAV files: 16-bit PCM in, 8 kHz mono out.

Theory of operation
-------------------
:func:`read_wav` reads a RIFF/WAVE file with the standard library's
:mod:`wave` module, accepts 16-bit linear PCM only (also in a WAVE_FORMAT_EXTENSIBLE
header, which Python 3.11's ``wave`` cannot read: natkit walks the RIFF
chunks itself for that case), averages the channels
to mono and resamples to the telephone rate with :func:`resample`.
Anything else — not a WAV file, a truncated header, compressed formats,
8/24/32-bit samples, float, a non-PCM extensible sub-format — raises :class:`WavFormatError`.

:func:`resample` is a rational polyphase resampler: the rate ratio is
reduced to ``up/down``, and every output sample is the dot product of the
input with one phase of a Kaiser-windowed sinc low-pass (beta 8.6) that
spans ``zero_crossings`` periods of the lower rate on each side, with its
cutoff at 90 % of the lower Nyquist frequency. With the default 32 zero
crossings the pass band is flat to about 3.3 kHz at 8 kHz and content
above 4 kHz (which would alias) is attenuated by more than 60 dB. The
kernel is tabulated once per call at the up-sampled rate, where every tap
offset is an integer, and outputs are computed in chunks to bound memory.
A ratio whose reduced terms exceed 1024 is replaced by the nearest one
with terms that small, which bounds the table.

:func:`write_wav` records 8 kHz mono 16-bit PCM (or another rate if asked).
"""

from __future__ import annotations

import fractions
import io
import os
import struct
import wave
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from natkit.errors import NatkitError
from natkit.media.pcm import PcmArray, as_pcm, split_frames

__all__ = [
    "MAX_FILE_BYTES",
    "TELEPHONE_RATE",
    "WavFormatError",
    "read_wav",
    "read_wav_frames",
    "resample",
    "write_wav",
]

TELEPHONE_RATE: Final = 8000
_CHUNK_OUTPUTS: Final = 8192
_KAISER_BETA: Final = 8.6
_CUTOFF: Final = 0.9
_MAX_PHASES: Final = 1024
MAX_FILE_BYTES: Final = 256 << 20
"""The largest WAV file read by default: about 23 minutes of 48 kHz stereo."""
_MIN_RATE: Final = 1000
_MAX_RATE: Final = 384000
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
_KSDATAFORMAT_SUBTYPE_PCM: Final = bytes.fromhex("0100000000001000800000aa00389b71")

WavSource = str | os.PathLike[str] | BinaryIO


class WavFormatError(NatkitError, ValueError):
    """A file that is not a WAV file natkit can play (16-bit PCM)."""


def read_wav(
    source: WavSource, *, sample_rate: int = TELEPHONE_RATE, max_bytes: int = MAX_FILE_BYTES
) -> PcmArray:
    """Read a 16-bit PCM WAV file as mono samples at ``sample_rate``.

    Files larger than ``max_bytes`` are refused (WavFormatError) before
    they are read into memory.
    """
    content = _read_all(source, max_bytes)
    try:
        channels, rate, width, data = _read_with_wave(content)
    except WavFormatError:
        raise
    except (wave.Error, EOFError, ValueError, RuntimeError, struct.error, OverflowError) as exc:
        # wave (through its chunk reader) reports broken headers in all of these.
        if f"unknown format: {_WAVE_FORMAT_EXTENSIBLE}" not in str(exc):
            raise WavFormatError(f"not a readable WAV file: {exc}") from exc
        channels, rate, width, data = _read_extensible(content)
    if width != 2:
        raise WavFormatError(f"{8 * width}-bit WAV is not supported: 16-bit PCM only")
    if channels < 1:
        raise WavFormatError("WAV header declares no channels")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise WavFormatError(f"a sample rate of {rate} Hz is outside 1-384 kHz")
    usable = len(data) // (2 * channels) * (2 * channels)  # a truncated last frame
    samples = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, channels)
    mono = samples[:, 0] if channels == 1 else _mix_down(samples)
    return resample(mono, rate, sample_rate)


def _read_all(source: WavSource, max_bytes: int) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        with open(os.fspath(source), "rb") as file:
            content = file.read(max_bytes + 1)
    else:
        content = source.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise WavFormatError(f"WAV file larger than {max_bytes} bytes")
    return content


def _read_with_wave(content: bytes) -> tuple[int, int, int, bytes]:
    with wave.open(io.BytesIO(content), "rb") as reader:
        if reader.getcomptype() != "NONE":
            raise WavFormatError(f"compressed WAV ({reader.getcomptype()}) is not supported")
        channels, width, rate = reader.getnchannels(), reader.getsampwidth(), reader.getframerate()
        return channels, rate, width, reader.readframes(reader.getnframes())


def _read_extensible(content: bytes) -> tuple[int, int, int, bytes]:
    """WAVE_FORMAT_EXTENSIBLE with the PCM sub-format, which ``wave`` only
    reads from Python 3.12: walk the RIFF chunks, every length checked."""
    if len(content) < 12 or content[:4] != b"RIFF" or content[8:12] != b"WAVE":
        raise WavFormatError("not a readable WAV file: no RIFF/WAVE header")
    fmt: bytes | None = None
    data: bytes | None = None
    position = 12
    while position + 8 <= len(content) and data is None:
        chunk_id = content[position : position + 4]
        (size,) = struct.unpack_from("<I", content, position + 4)
        body = content[position + 8 : position + 8 + size]
        if chunk_id == b"fmt ":
            fmt = body
        elif chunk_id == b"data":
            data = body
        position += 8 + size + (size & 1)
    if fmt is None or data is None or len(fmt) < 40:
        raise WavFormatError("not a readable WAV file: missing or short fmt/data chunk")
    _, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if fmt[24:40] != _KSDATAFORMAT_SUBTYPE_PCM:
        raise WavFormatError("WAVE_FORMAT_EXTENSIBLE with a non-PCM sub-format is not supported")
    return channels, rate, bits // 8 if bits % 8 == 0 else 0, data


def read_wav_frames(
    source: WavSource,
    *,
    sample_rate: int = TELEPHONE_RATE,
    frame_samples: int = 160,
    max_bytes: int = MAX_FILE_BYTES,
) -> list[PcmArray]:
    """:func:`read_wav` cut into frames (20 ms at 8 kHz); the last is zero-padded."""
    pcm = read_wav(source, sample_rate=sample_rate, max_bytes=max_bytes)
    return split_frames(pcm, frame_samples)


def write_wav(
    destination: WavSource, samples: npt.ArrayLike, *, sample_rate: int = TELEPHONE_RATE
) -> None:
    """Write mono 16-bit PCM (a recording) as a WAV file."""
    pcm = as_pcm(samples)
    with wave.open(_open_arg(destination), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm.astype("<i2").tobytes())


def _open_arg(source: WavSource) -> str | BinaryIO:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else source


def _mix_down(samples: npt.NDArray[np.int16]) -> PcmArray:
    mean = samples.astype(np.int32).sum(axis=1) / samples.shape[1]
    mono: PcmArray = np.round(mean).astype(np.int16)
    return mono


def resample(
    samples: npt.ArrayLike, from_rate: int, to_rate: int, *, zero_crossings: int = 32
) -> PcmArray:
    """Resample 16-bit PCM from ``from_rate`` to ``to_rate`` (see module docs)."""
    pcm = as_pcm(samples)
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError("sample rates must be positive")
    if from_rate == to_rate or len(pcm) == 0:
        return pcm.copy()
    up, down = _rate_ratio(from_rate, to_rate)
    kernel, half = _lowpass_kernel(up, down, zero_crossings)
    x = pcm.astype(np.float64)
    out_len = -(-len(x) * up // down)
    taps = 2 * half // up + 2
    padded = np.concatenate([np.zeros(taps), x, np.zeros(taps)])
    out = np.empty(out_len)
    for first in range(0, out_len, _CHUNK_OUTPUTS):
        n = np.arange(first, min(first + _CHUNK_OUTPUTS, out_len), dtype=np.int64)
        t = n * down  # output instants on the up-sampled grid
        k0 = -((half - t) // up)  # first input whose offset t - k*up is <= half: ceil((t-half)/up)
        k = k0[:, None] + np.arange(taps, dtype=np.int64)[None, :]
        offset = t[:, None] - k * up
        valid = np.abs(offset) <= half
        weights = np.where(valid, kernel[np.clip(offset + half, 0, 2 * half)], 0.0)
        out[first : first + len(n)] = np.sum(weights * padded[k + taps], axis=1)
    resampled: PcmArray = np.clip(np.round(out), -32768, 32767).astype(np.int16)
    return resampled


def _rate_ratio(from_rate: int, to_rate: int) -> tuple[int, int]:
    """``to_rate / from_rate`` as ``up / down`` in lowest terms; when either
    term exceeds ``_MAX_PHASES`` (rates such as 8017 Hz), the nearest ratio
    with terms that small instead (a pitch error below 1e-6, inaudible),
    so the kernel table stays bounded."""
    ratio = fractions.Fraction(to_rate, from_rate)
    if max(ratio.numerator, ratio.denominator) > _MAX_PHASES:
        if ratio > 1:
            ratio = 1 / (1 / ratio).limit_denominator(_MAX_PHASES)
        else:
            ratio = ratio.limit_denominator(_MAX_PHASES)
    return ratio.numerator, ratio.denominator


def _lowpass_kernel(up: int, down: int, zero_crossings: int) -> tuple[npt.NDArray[np.float64], int]:
    """A Kaiser-windowed sinc tabulated at every integer offset of the
    up-sampled grid; scaled so that each polyphase branch has unit DC gain.

    On the up-sampled grid the lower of the two rates is ``1 / max(up,
    down)`` cycles per sample, so the kernel depends on the ratio alone.
    """
    grid_per_lower = max(up, down)
    half = zero_crossings * grid_per_lower
    offsets = np.arange(-half, half + 1, dtype=np.float64)
    cutoff = _CUTOFF * 0.5 / grid_per_lower  # cycles per grid sample
    kernel = np.sinc(2 * cutoff * offsets) * np.kaiser(2 * half + 1, _KAISER_BETA)
    kernel *= up / kernel.sum()
    return kernel, half
