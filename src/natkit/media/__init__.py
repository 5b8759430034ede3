"""Media: G.711 codecs, RFC 4733 DTMF, a jitter buffer, WAV files and tone
analysis (the content check behind the traversal matrix's two-way audio).

Everything here is sans-IO except :mod:`natkit.media.wav`, which reads and
writes files. Opus (:mod:`natkit.media.opus`) needs the optional PyAV.
"""
