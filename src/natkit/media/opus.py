"""Opus (RFC 6716) for RTP (RFC 7587), through PyAV's libopus — optional.

Theory of operation
-------------------
natkit does not implement Opus itself: it drives libopus inside the FFmpeg
that PyAV (the ``av`` package) bundles in its wheels — the same route
aiortc takes. Without ``av`` (or with an FFmpeg built without libopus)
:func:`opus_available` is False and constructing a codec raises
:class:`OpusUnavailableError`; nothing else in natkit needs it.

The PCM side is natkit's usual 16-bit mono at ``sample_rate`` (8 kHz by
default; libopus encodes 8, 12, 16, 24 and 48 kHz input natively). The RTP
side always counts 48 kHz (RFC 7587 §4.1): a 20 ms packet advances the RTP
timestamp by 960 whatever the PCM rate. One call of
:meth:`OpusEncoder.encode` takes exactly one frame and returns the packet
libopus produced for it. :class:`OpusDecoder` decodes at 48 kHz (FFmpeg's
libopus decoder always does) and converts to ``sample_rate`` with a
stateful libswresample converter, so successive frames join without
seams; the first frames come out a little short while the converter
fills. A payload libopus rejects, or an empty one (which FFmpeg would take
as end of stream), raises :class:`~natkit.errors.MalformedMessageError`
with ``error_code=None`` (drop).

Packet-loss concealment is left to the jitter buffer: a concealed frame
of an Opus stream should be played as zeros, not decoded.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from natkit.errors import MalformedMessageError, NatkitError
from natkit.media.pcm import PcmArray, as_pcm

try:
    import av  # type: ignore[import-not-found, unused-ignore]
    import av.error  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # the optional dependency is missing
    _HAVE_AV = False
else:
    _HAVE_AV = True

__all__ = [
    "OPUS_CLOCK_RATE",
    "OpusConfig",
    "OpusDecoder",
    "OpusEncoder",
    "OpusUnavailableError",
    "opus_available",
]

OPUS_CLOCK_RATE: Final = 48000
"""The RTP clock rate of Opus, whatever the audio bandwidth (RFC 7587 §4.1)."""
_OPUS_INPUT_RATES: Final = (8000, 12000, 16000, 24000, 48000)
_FRAME_DURATIONS_MS: Final = (10, 20, 40, 60)


class OpusUnavailableError(NatkitError, ImportError):
    """PyAV is not installed, or its FFmpeg has no libopus."""


def opus_available() -> bool:
    """True when PyAV is importable and its FFmpeg has a libopus encoder and decoder."""
    if not _HAVE_AV:
        return False
    try:
        av.codec.Codec("libopus", "w")
        av.codec.Codec("libopus", "r")
    except (ValueError, av.error.FFmpegError):
        return False
    return True


def _require_opus() -> None:
    if not opus_available():
        raise OpusUnavailableError(
            "Opus needs PyAV with libopus: pip install av (natkit's optional Opus support)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OpusConfig:
    """Encoder settings: the PCM rate, a 20 ms frame (RFC 7587 §4.2 allows
    10-60 ms), a bit rate suited to speech and libopus's VoIP mode."""

    sample_rate: int = 8000
    frame_ms: int = 20
    bitrate: int = 24000
    application: str = "voip"

    @property
    def frame_samples(self) -> int:
        """PCM samples in one frame at ``sample_rate``."""
        return self.sample_rate * self.frame_ms // 1000

    @property
    def rtp_timestamp_step(self) -> int:
        """How far one frame advances the 48 kHz RTP timestamp (960 for 20 ms)."""
        return OPUS_CLOCK_RATE * self.frame_ms // 1000


class OpusEncoder:
    """16-bit mono PCM frames in, Opus packets (RTP payloads) out."""

    def __init__(self, config: OpusConfig | None = None) -> None:
        _require_opus()
        self.config = cfg = config or OpusConfig()
        if cfg.sample_rate not in _OPUS_INPUT_RATES:
            raise ValueError(f"Opus encodes {_OPUS_INPUT_RATES} Hz input, not {cfg.sample_rate}")
        if cfg.frame_ms not in _FRAME_DURATIONS_MS:
            raise ValueError(f"Opus frames for RTP are {_FRAME_DURATIONS_MS} ms")
        context = av.CodecContext.create("libopus", "w")
        context.sample_rate = cfg.sample_rate
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = cfg.bitrate
        context.time_base = fractions.Fraction(1, cfg.sample_rate)
        context.options = {"application": cfg.application, "frame_duration": str(cfg.frame_ms)}
        context.open()
        self._context = context
        self._pts = 0

    def encode(self, frame: npt.ArrayLike) -> bytes:
        """Encode exactly one frame (``config.frame_samples`` samples)."""
        pcm = as_pcm(frame)
        if len(pcm) != self.config.frame_samples:
            raise ValueError(
                f"an Opus frame is {self.config.frame_samples} samples, not {len(pcm)}"
            )
        audio = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        audio.sample_rate = self.config.sample_rate
        audio.pts = self._pts
        self._pts += len(pcm)
        packets = self._context.encode(audio)
        return b"".join(bytes(packet) for packet in packets[:1])


class OpusDecoder:
    """Opus packets in, 16-bit mono PCM at ``sample_rate`` out."""

    def __init__(self, sample_rate: int = 8000) -> None:
        _require_opus()
        self.sample_rate = sample_rate
        context = av.CodecContext.create("libopus", "r")
        context.sample_rate = OPUS_CLOCK_RATE
        context.layout = "mono"
        context.format = "s16"
        context.open()
        self._context = context
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)

    def decode(self, payload: bytes) -> PcmArray:
        """Decode one packet; raises MalformedMessageError (drop) when libopus cannot."""
        if not payload:
            raise MalformedMessageError("empty Opus payload", error_code=None)
        try:
            frames = self._context.decode(av.Packet(payload))
            converted = [out for frame in frames for out in self._resampler.resample(frame)]
        except av.error.FFmpegError as exc:
            raise MalformedMessageError(
                f"undecodable Opus payload: {exc}", error_code=None
            ) from exc
        parts: list[npt.NDArray[np.int16]] = [
            np.asarray(frame.to_ndarray(), dtype=np.int16).reshape(-1) for frame in converted
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
