"""16-bit PCM helpers shared by the media modules: frames of a fixed size."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["PcmArray", "as_pcm", "join_frames", "split_frames"]

PcmArray = npt.NDArray[np.int16]
"""Mono 16-bit linear PCM, one sample per element."""


def as_pcm(samples: npt.ArrayLike) -> PcmArray:
    """``samples`` as a 1-D int16 array; integers must fit in 16 bits."""
    array = np.asarray(samples)
    if array.dtype == np.int16:
        return array.reshape(-1)
    if array.size == 0:
        return np.zeros(0, dtype=np.int16)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"PCM samples must be integers, not {array.dtype}")
    if array.min() < -32768 or array.max() > 32767:
        raise ValueError("PCM samples must fit in 16 bits")
    return array.astype(np.int16).reshape(-1)


def split_frames(samples: npt.ArrayLike, frame_samples: int = 160) -> list[PcmArray]:
    """Cut PCM into frames of ``frame_samples``; the last is padded with zeros."""
    if frame_samples <= 0:
        raise ValueError("frame_samples must be positive")
    pcm = as_pcm(samples)
    count = -(-len(pcm) // frame_samples)
    padded = np.zeros(count * frame_samples, dtype=np.int16)
    padded[: len(pcm)] = pcm
    return list(padded.reshape(count, frame_samples)) if count else []


def join_frames(frames: Iterable[npt.ArrayLike]) -> PcmArray:
    """Concatenate frames back into one PCM array."""
    parts = [as_pcm(frame) for frame in frames]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
