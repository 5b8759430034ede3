"""PCM framing helpers."""

from __future__ import annotations

import numpy as np
import pytest

from natkit.media.pcm import as_pcm, join_frames, split_frames


def test_split_pads_the_last_frame_with_zeros() -> None:
    frames = split_frames(np.arange(400, dtype=np.int16), 160)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert frames[2][79] == 399 and not frames[2][80:].any()


def test_split_and_join_round_trip_whole_frames() -> None:
    pcm = np.arange(-160, 160, dtype=np.int16)
    assert np.array_equal(join_frames(split_frames(pcm)), pcm)


def test_empty_input() -> None:
    assert split_frames([]) == []
    assert join_frames([]).dtype == np.int16 and len(join_frames([])) == 0


def test_bad_frame_size_and_samples_are_rejected() -> None:
    with pytest.raises(ValueError):
        split_frames([1, 2, 3], 0)
    with pytest.raises(ValueError, match="16 bits"):
        as_pcm([70000])
