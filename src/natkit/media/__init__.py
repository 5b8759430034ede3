"""Media: codecs, DTMF, a jitter buffer, WAV files and tone analysis.

* :mod:`natkit.media.g711` - G.711 µ-law/A-law (PCMU, PCMA), numpy table look-ups
* :mod:`natkit.media.dtmf` - RFC 4733 telephone events: payload, sender, receiver
* :mod:`natkit.media.jitter` - adaptive jitter buffer with concealment and statistics
* :mod:`natkit.media.wav` - play from / record to WAV, polyphase resampling to 8 kHz
* :mod:`natkit.media.tone` - test tones and their detection (two-way audio by content)
* :mod:`natkit.media.opus` - Opus through the optional PyAV (``av``)

Everything here is sans-IO except :mod:`~natkit.media.wav`, which reads and
writes files. See docs/conformance/media.md.
"""

from natkit.media.g711 import PCMA, PCMU, G711Codec
from natkit.media.jitter import JitterBuffer, JitterBufferConfig, PlayoutFrame
from natkit.media.tone import contains_tone, dominant_frequencies, sine_tone

__all__ = [
    "PCMA",
    "PCMU",
    "G711Codec",
    "JitterBuffer",
    "JitterBufferConfig",
    "PlayoutFrame",
    "contains_tone",
    "dominant_frequencies",
    "sine_tone",
]
