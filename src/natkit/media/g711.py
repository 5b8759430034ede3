"""G.711 µ-law and A-law companding of 16-bit PCM (ITU-T G.711; RFC 3551 §4.5.14).

Theory of operation
-------------------
G.711 maps a linear sample to an 8-bit code through a segmented logarithmic
law. The ITU reference algorithm (ITU-T G.191 Software Tools Library,
``g711.c``) reads 16-bit left-justified samples: µ-law uses the 14 most
significant bits, A-law the 13 most significant bits, and negative samples
are folded with the *one's* complement (``~x``) so the two halves of the
law are mirror images around -0.5.

Both directions are table look-ups built once, vectorised with numpy:

* encoding indexes a 65536-entry table by the sample's bit pattern (the
  int16 array is viewed as uint16), so a frame costs one ``take``;
* decoding indexes a 256-entry table by the code byte.

The tables are computed with the reference algorithm's own arithmetic
(segment = bit length of the folded magnitude), so every one of the 65536
inputs and 256 codes matches the reference bit for bit.

:class:`G711Codec` ties a law to its RTP profile entry (RFC 3551 Table 4:
PCMU is static payload type 0, PCMA 8, both 8000 Hz mono), with the usual
20 ms packetisation of 160 samples.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from natkit.media.pcm import PcmArray, as_pcm

__all__ = [
    "FRAME_SAMPLES",
    "PCMA",
    "PCMU",
    "SAMPLE_RATE",
    "G711Codec",
    "G711Law",
    "decode_alaw",
    "decode_ulaw",
    "encode_alaw",
    "encode_ulaw",
]

SAMPLE_RATE: Final = 8000
"""G.711's sampling rate and RTP clock rate (RFC 3551 §4.5.14)."""
FRAME_SAMPLES: Final = 160
"""Samples in one 20 ms packet, the default packetisation (RFC 3551 §4.5)."""


def _all_int16() -> npt.NDArray[np.int32]:
    """Every 16-bit sample, ordered by its unsigned bit pattern 0..65535."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _bit_length(values: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """``int.bit_length`` element-wise for values in 0..65535."""
    lengths = np.zeros(values.shape, dtype=np.int32)
    remaining = values.copy()
    while np.any(remaining):
        nonzero = remaining != 0
        lengths[nonzero] += 1
        remaining >>= 1
    return lengths


def _build_ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.711 Table 2a via the reference algorithm: 14-bit sample, magnitude + 33 bias."""
    x = _all_int16()
    folded = np.where(x < 0, ~x, x)  # one's complement for negative samples
    biased = np.minimum((folded >> 2) + 33, 0x1FFF)
    segment = _bit_length(biased >> 6) + 1  # 1..8
    high = 8 - segment
    low = 15 - ((biased >> segment) & 0x0F)
    code = (high << 4) | low
    code = np.where(x >= 0, code | 0x80, code)
    table: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return table


def _build_alaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.711 Table 1a via the reference algorithm: 13-bit sample, even bits toggled."""
    x = _all_int16()
    magnitude = np.where(x < 0, ~x, x) >> 4  # 0..2047
    exponent = np.maximum(_bit_length(magnitude) - 4, 0)  # 0 for magnitude <= 15
    shifted = magnitude >> np.maximum(exponent - 1, 0)
    code = np.where(exponent > 0, (shifted - 16) + (exponent << 4), magnitude)
    code = np.where(x >= 0, code | 0x80, code)
    table: npt.NDArray[np.uint8] = (code ^ 0x55).astype(np.uint8)
    return table


def _build_ulaw_decode_table() -> PcmArray:
    codes = np.arange(256, dtype=np.int32)
    sign = np.where(codes < 0x80, -1, 1)
    inverted = ~codes
    exponent = (inverted >> 4) & 0x07
    mantissa = inverted & 0x0F
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * mantissa + step // 2 - 4 * 33
    table: PcmArray = (sign * magnitude).astype(np.int16)
    return table


def _build_alaw_decode_table() -> PcmArray:
    codes = np.arange(256, dtype=np.int32)
    toggled = (codes ^ 0x55) & 0x7F
    exponent = toggled >> 4
    mantissa = toggled & 0x0F
    mantissa = np.where(exponent > 0, mantissa + 16, mantissa)
    mantissa = (mantissa << 4) + 0x08
    mantissa = np.where(exponent > 1, mantissa << np.maximum(exponent - 1, 0), mantissa)
    table: PcmArray = np.where(codes > 127, mantissa, -mantissa).astype(np.int16)
    return table


_ULAW_ENCODE: Final = _build_ulaw_encode_table()
_ALAW_ENCODE: Final = _build_alaw_encode_table()
_ULAW_DECODE: Final = _build_ulaw_decode_table()
_ALAW_DECODE: Final = _build_alaw_decode_table()
for _table in (_ULAW_ENCODE, _ALAW_ENCODE, _ULAW_DECODE, _ALAW_DECODE):
    _table.flags.writeable = False


def encode_ulaw(samples: npt.ArrayLike) -> bytes:
    """Encode 16-bit PCM to µ-law codes (G.711 §3, Table 2a), one byte per sample."""
    pcm = as_pcm(samples)
    return _ULAW_ENCODE[pcm.view(np.uint16)].tobytes()


def encode_alaw(samples: npt.ArrayLike) -> bytes:
    """Encode 16-bit PCM to A-law codes (G.711 §2, Table 1a), one byte per sample."""
    pcm = as_pcm(samples)
    return _ALAW_ENCODE[pcm.view(np.uint16)].tobytes()


def decode_ulaw(payload: bytes) -> PcmArray:
    """Decode µ-law codes to 16-bit PCM (G.711 Table 2a decoder output values)."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def decode_alaw(payload: bytes) -> PcmArray:
    """Decode A-law codes to 16-bit PCM (G.711 Table 1a decoder output values)."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


class G711Law(enum.Enum):
    """The two companding laws of G.711."""

    MU_LAW = "mu-law"
    A_LAW = "a-law"


@dataclass(frozen=True, slots=True, kw_only=True)
class G711Codec:
    """A G.711 RTP payload format (RFC 3551 §4.5.14, Table 4).

    ``silence`` is the code of a zero sample (µ-law 0xFF, A-law 0xD5): a
    frame of it is what a receiver plays for a missing packet.
    """

    name: str
    law: G711Law
    payload_type: int
    clock_rate: int = SAMPLE_RATE
    channels: int = 1
    frame_samples: int = FRAME_SAMPLES

    @property
    def frame_duration(self) -> float:
        """Seconds of audio in one frame (0.02 for 160 samples)."""
        return self.frame_samples / self.clock_rate

    @property
    def silence(self) -> int:
        return 0xFF if self.law is G711Law.MU_LAW else 0xD5

    def silence_payload(self, samples: int | None = None) -> bytes:
        """A payload of ``samples`` (default one frame) zero samples."""
        return bytes([self.silence]) * (self.frame_samples if samples is None else samples)

    def encode(self, samples: npt.ArrayLike) -> bytes:
        """16-bit PCM to this law's codes."""
        return encode_ulaw(samples) if self.law is G711Law.MU_LAW else encode_alaw(samples)

    def decode(self, payload: bytes) -> PcmArray:
        """This law's codes to 16-bit PCM; any byte string is a valid payload."""
        return decode_ulaw(payload) if self.law is G711Law.MU_LAW else decode_alaw(payload)


PCMU: Final = G711Codec(name="PCMU", law=G711Law.MU_LAW, payload_type=0)
"""G.711 µ-law, RTP/AVP static payload type 0."""
PCMA: Final = G711Codec(name="PCMA", law=G711Law.A_LAW, payload_type=8)
"""G.711 A-law, RTP/AVP static payload type 8."""
