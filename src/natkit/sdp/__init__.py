"""SDP: the session description codec and the offer/answer model.

- :mod:`natkit.sdp.codec`: :func:`parse_sdp` / :func:`serialize_sdp` (RFC 8866,
  tolerant of RFC 4566 peers), limits in :class:`SdpConfig`;
- :mod:`natkit.sdp.model`: the immutable :class:`SessionDescription`;
- :mod:`natkit.sdp.attributes`: typed ``rtpmap``, ``fmtp``, direction,
  ``rtcp`` (RFC 3605), ``crypto`` (RFC 4568), ``setup``/``connection``
  (RFC 4145);
- :mod:`natkit.sdp.offer_answer`: :func:`build_offer`, :func:`answer`,
  :func:`negotiated_media` (RFC 3264);
- :mod:`natkit.sdp.rewrite`: :func:`rewrite_connection` for a media relay.

ICE attributes (RFC 8839) stay raw attributes here; their grammar lives in
:mod:`natkit.ice`.
"""

from __future__ import annotations

from natkit.sdp.attributes import (
    Attribute,
    ConnectionMode,
    Crypto,
    CryptoKey,
    Direction,
    Fmtp,
    Rtcp,
    RtpMap,
    Setup,
)
from natkit.sdp.codec import SdpConfig, UnknownLines, parse_sdp, serialize_sdp
from natkit.sdp.model import (
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    Timing,
)
from natkit.sdp.offer_answer import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    LocalCapabilities,
    MediaCapabilities,
    NegotiatedCodec,
    NegotiatedStream,
    PayloadNumbering,
    SrtpKeys,
    SrtpPolicy,
    answer,
    build_offer,
    has_accepted_media,
    negotiated_media,
)
from natkit.sdp.rewrite import rewrite_connection

__all__ = [
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "ConnectionMode",
    "Crypto",
    "CryptoKey",
    "Direction",
    "Fmtp",
    "LocalCapabilities",
    "MediaCapabilities",
    "MediaDescription",
    "NegotiatedCodec",
    "NegotiatedStream",
    "Origin",
    "PayloadNumbering",
    "Rtcp",
    "RtpMap",
    "SdpConfig",
    "SessionDescription",
    "Setup",
    "SrtpKeys",
    "SrtpPolicy",
    "Timing",
    "UnknownLines",
    "answer",
    "build_offer",
    "has_accepted_media",
    "negotiated_media",
    "parse_sdp",
    "rewrite_connection",
    "serialize_sdp",
]
