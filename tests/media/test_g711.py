"""G.711 against a scalar transcription of the ITU-T reference algorithm
(G.191 STL ``g711.c``) over every input, and against audioop as an
independent oracle where the interpreter still has it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from natkit.media.g711 import (
    FRAME_SAMPLES,
    PCMA,
    PCMU,
    G711Codec,
    G711Law,
    decode_alaw,
    decode_ulaw,
    encode_alaw,
    encode_ulaw,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # removed in Python 3.13
            return None
    return audioop


AUDIOOP = _audioop()


def ref_ulaw_compress(x: int, *, ones_complement: bool = True) -> int:
    """One sample, as the reference does it (optionally with audioop's fold)."""
    magnitude = x >> 2
    if x < 0:
        magnitude = ((~x) >> 2) if ones_complement else -magnitude
    absno = min(magnitude + 33, 0x1FFF)
    segno = 1
    i = absno >> 6
    while i:
        segno += 1
        i >>= 1
    code = ((8 - segno) << 4) | (15 - ((absno >> segno) & 0xF))
    return code | 0x80 if x >= 0 else code


def ref_alaw_compress(x: int) -> int:
    ix = ((~x) >> 4) if x < 0 else (x >> 4)
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    inverted = ~code
    exponent = (inverted >> 4) & 0x7
    mantissa = inverted & 0xF
    step = 4 << (exponent + 1)
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0xF
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x8
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


@pytest.mark.parametrize(
    ("encode", "reference"),
    [
        pytest.param(encode_ulaw, ref_ulaw_compress, id="ulaw"),
        pytest.param(encode_alaw, ref_alaw_compress, id="alaw"),
    ],
)
def test_encoder_matches_reference_for_every_16_bit_input(
    encode: Callable[[np.ndarray], bytes], reference: Callable[[int], int]
) -> None:
    expected = bytes(reference(int(x)) for x in ALL_SAMPLES)
    assert encode(ALL_SAMPLES) == expected


@pytest.mark.parametrize(
    ("decode", "reference"),
    [
        pytest.param(decode_ulaw, ref_ulaw_expand, id="ulaw"),
        pytest.param(decode_alaw, ref_alaw_expand, id="alaw"),
    ],
)
def test_decoder_matches_reference_for_every_code(
    decode: Callable[[bytes], np.ndarray], reference: Callable[[int], int]
) -> None:
    assert decode(ALL_CODES).tolist() == [reference(c) for c in ALL_CODES]


def test_known_values() -> None:
    assert encode_ulaw(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xff\x7f\x80\x00"
    assert encode_alaw(np.array([0, -1, 32767, -32768], dtype=np.int16)) == b"\xd5\x55\xaa\x2a"
    assert decode_ulaw(b"\xff\x7f\x80\x00").tolist() == [0, 0, 32124, -32124]
    assert decode_alaw(b"\xd5\x55\xaa\x2a").tolist() == [8, -8, 32256, -32256]


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_decode_then_encode_is_identity_on_codes(codec: G711Codec) -> None:
    # µ-law has two zeros (0x7F, 0xFF) that decode to 0; 0 encodes as 0xFF.
    reencoded = codec.encode(codec.decode(ALL_CODES))
    differing = [c for c, r in zip(ALL_CODES, reencoded, strict=True) if c != r]
    assert differing == ([0x7F] if codec is PCMU else [])


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_quantisation_error_is_within_half_a_step(codec: G711Codec) -> None:
    decoded = codec.decode(codec.encode(ALL_SAMPLES)).astype(np.int32)
    error = np.abs(decoded - ALL_SAMPLES.astype(np.int32))
    # The largest segment step is 1024 (µ-law) / 1024 (A-law) on a 16-bit scale.
    small = np.abs(ALL_SAMPLES.astype(np.int32)) < 1000
    assert error[small].max() <= 64
    assert error[np.abs(ALL_SAMPLES.astype(np.int32)) < 30000].max() <= 1024


@pytest.mark.skipif(AUDIOOP is None, reason="audioop was removed in Python 3.13")
def test_audioop_agrees_on_alaw_and_on_all_decoding() -> None:
    assert AUDIOOP is not None
    assert encode_alaw(ALL_SAMPLES) == AUDIOOP.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    for decode, expand in ((decode_ulaw, AUDIOOP.ulaw2lin), (decode_alaw, AUDIOOP.alaw2lin)):
        assert decode(ALL_CODES).tobytes() == expand(ALL_CODES, 2)


@pytest.mark.skipif(AUDIOOP is None, reason="audioop was removed in Python 3.13")
def test_audioop_ulaw_differs_from_the_itu_reference_only_in_folding_negatives() -> None:
    """audioop folds negative samples with the two's complement ``-(x >> 2)``
    where the ITU reference uses the one's complement ``~x >> 2``: the two
    agree on every non-negative input, and audioop equals the reference with
    that single change on every input."""
    assert AUDIOOP is not None
    theirs = AUDIOOP.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    ours = encode_ulaw(ALL_SAMPLES)
    assert theirs == bytes(ref_ulaw_compress(int(x), ones_complement=False) for x in ALL_SAMPLES)
    differing = [int(x) for x, a, b in zip(ALL_SAMPLES, ours, theirs, strict=True) if a != b]
    assert differing and all(x < 0 for x in differing)
    assert len(differing) == 127 * 4  # 4 samples at each of 127 negative decision levels


def test_codec_descriptions_follow_rfc_3551_table_4() -> None:
    assert (PCMU.name, PCMU.payload_type, PCMU.clock_rate, PCMU.channels) == ("PCMU", 0, 8000, 1)
    assert (PCMA.name, PCMA.payload_type, PCMA.clock_rate, PCMA.channels) == ("PCMA", 8, 8000, 1)
    assert PCMU.law is G711Law.MU_LAW and PCMA.law is G711Law.A_LAW
    assert PCMU.frame_samples == FRAME_SAMPLES == 160
    assert PCMU.frame_duration == pytest.approx(0.020)


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_silence_payload_decodes_to_zeros(codec: G711Codec) -> None:
    payload = codec.silence_payload()
    assert len(payload) == 160
    assert np.abs(codec.decode(payload)).max() <= 8
    assert codec.encode(np.zeros(160, dtype=np.int16)) == payload


def test_encode_accepts_int_lists_that_fit_and_rejects_others() -> None:
    assert encode_ulaw([0, 1000, -1000]) == encode_ulaw(np.array([0, 1000, -1000], np.int16))
    assert encode_ulaw([]) == b""
    with pytest.raises(ValueError, match="16 bits"):
        encode_ulaw([40000])
    with pytest.raises(ValueError, match="integers"):
        encode_alaw([0.5])
