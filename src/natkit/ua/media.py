"""Choosing a call's media path (ECC report §6.2/§6.3, RFC 6314 §5.2.2), sans-IO.

Theory of operation
-------------------
A UA behind a NAT has three ways to get its RTP through, best first:

1. **ICE** (RFC 8445, RFC 6314 §5.2.2 "ICE"): when the peer's description
   carries ``a=ice-ufrag``/``a=ice-pwd`` (RFC 8839 §5.4) and this UA runs an
   ICE agent, media goes over the pair ICE selects.
2. **STUN + symmetric RTP** (ECC §6.2/§6.3, RFC 4961): the UA asked a STUN
   server from its RTP socket what address the NAT gave that socket and
   puts the server-reflexive address in ``c=``/``m=``; it sends from the port
   it receives on. This works through endpoint-independent mappings (cone
   NATs) and fails one way through a symmetric NAT, whose mapping toward
   the peer differs from the one toward the STUN server (RFC 4787 §4.1).
3. **As the SDP says**: plain RTP to the address in the peer's SDP, with our
   local address in ours. Right when nothing is NATed, or when a server-side
   media relay rewrote both descriptions (ECC §6.4; natkit's
   :mod:`natkit.mediarelay` latches onto where our packets come from).

:func:`choose_media_path` decides, :func:`advertised_address` says what goes
in our ``c=``/``m=``, and :func:`local_capabilities` builds the
:class:`~natkit.sdp.LocalCapabilities` for the offer or answer.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.ice.candidate import Candidate
from natkit.ice.sdp import IceDescription, parse_ice_description, serialize_candidate
from natkit.rng import Rng
from natkit.sdp.attributes import Attribute
from natkit.sdp.model import SessionDescription
from natkit.sdp.offer_answer import (
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    Codec,
    LocalCapabilities,
    MediaCapabilities,
    NegotiatedStream,
    SrtpPolicy,
)

__all__ = [
    "DEFAULT_CODECS",
    "MediaPath",
    "MediaPlan",
    "advertised_address",
    "first_audio",
    "ice_attributes",
    "remote_ice",
    "with_media_attributes",
    "choose_media_path",
    "local_capabilities",
    "offers_ice",
]

DEFAULT_CODECS: tuple[Codec, ...] = (PCMU, PCMA, TELEPHONE_EVENT)
"""G.711 µ-law, A-law and RFC 4733 events, in that preference."""

_ICE_ATTRIBUTES = ("ice-ufrag", "ice-pwd")


class MediaPath(enum.StrEnum):
    """How a call's RTP travels (what ``natkit call`` shows)."""

    ICE = "ice"
    STUN = "stun+symmetric-rtp"
    SDP = "sdp"

    @property
    def description(self) -> str:
        return {
            MediaPath.ICE: "ICE: over the candidate pair the agents selected (RFC 8445)",
            MediaPath.STUN: "STUN-learned address in SDP, symmetric RTP (ECC §6.2/6.3)",
            MediaPath.SDP: "plain RTP to the address in the peer's SDP (direct or a relay's)",
        }[self]


def offers_ice(desc: SessionDescription) -> bool:
    """True when ``desc`` carries ICE credentials (RFC 8839 §5.4), at session
    level or in any accepted m-line."""
    names = {a.name.lower() for a in desc.attributes}
    for media in desc.media:
        if media.port != 0:
            names.update(a.name.lower() for a in media.attributes)
    return all(name in names for name in _ICE_ATTRIBUTES)


def choose_media_path(
    remote: SessionDescription | None,
    *,
    ice_capable: bool,
    server_reflexive: Endpoint | None,
) -> MediaPath:
    """ICE when both can (the peer offered it and we run an agent), else the
    STUN-learned address when we have one, else what the SDP says (RFC 6314
    §5.2.2's order; ECC §6.2-6.4)."""
    if ice_capable and remote is not None and offers_ice(remote):
        return MediaPath.ICE
    if server_reflexive is not None:
        return MediaPath.STUN
    return MediaPath.SDP


def advertised_address(local: Endpoint, server_reflexive: Endpoint | None) -> Endpoint:
    """What goes in our ``c=``/``m=``: the server-reflexive address when STUN
    learned one (ECC §6.2), else the socket's own address."""
    return server_reflexive if server_reflexive is not None else local


def local_capabilities(
    address: Endpoint,
    *,
    rng: Rng,
    codecs: tuple[Codec, ...] = DEFAULT_CODECS,
    rtcp_mux: bool = True,
    username: str = "natkit",
    srtp: SrtpPolicy = SrtpPolicy.NONE,
) -> LocalCapabilities:
    """One audio stream on ``address`` (RFC 3264 §5): ``c=`` and ``m=``
    name it; ``a=rtcp-mux`` (RFC 5761) keeps RTCP on the same port, which is
    the only port a STUN query learned a mapping for. ``srtp``: SDES-keyed
    SRTP (RFC 4568) off, offered best-effort (RTP/AVP with ``a=crypto``) or
    required (RTP/SAVP; an offer without a usable ``a=crypto`` is refused)."""
    stream = MediaCapabilities(port=address.port, codecs=codecs, rtcp_mux=rtcp_mux, srtp=srtp)
    return LocalCapabilities(address=address.host, media=(stream,), username=username, rng=rng)


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPlan:
    """The media of a call as chosen: the path, our socket, what we
    advertised, and where RTP (and RTCP) go."""

    path: MediaPath
    local: Endpoint
    advertised: Endpoint
    remote_rtp: Endpoint | None
    remote_rtcp: Endpoint | None
    rtcp_mux: bool

    @classmethod
    def of(
        cls,
        path: MediaPath,
        local: Endpoint,
        advertised: Endpoint,
        stream: NegotiatedStream | None,
    ) -> MediaPlan:
        """The plan for the first accepted audio ``stream`` of an exchange."""
        return cls(
            path=path,
            local=local,
            advertised=advertised,
            remote_rtp=None if stream is None else stream.remote_rtp,
            remote_rtcp=None if stream is None else stream.remote_rtcp,
            rtcp_mux=False if stream is None else stream.rtcp_mux,
        )

    def describe(self) -> str:
        where = "nowhere" if self.remote_rtp is None else str(self.remote_rtp)
        return (
            f"{self.path.value}: local {self.local}, advertised {self.advertised}, "
            f"sending to {where}"
        )


def first_audio(streams: tuple[NegotiatedStream, ...]) -> NegotiatedStream | None:
    """The first accepted audio stream with a G.711 codec, or None."""
    for stream in streams:
        if stream.accepted and stream.media.lower() == "audio" and stream.codec is not None:
            return stream
    return None


def ice_attributes(ufrag: str, pwd: str, candidates: Sequence[Candidate]) -> tuple[Attribute, ...]:
    """The media-level ICE lines of RFC 8839 §5.1, §5.4: ``a=ice-ufrag``,
    ``a=ice-pwd`` and one ``a=candidate`` per candidate."""
    lines = [Attribute("ice-ufrag", ufrag), Attribute("ice-pwd", pwd)]
    for candidate in candidates:
        name, _, value = serialize_candidate(candidate, prefix=False).partition(":")
        lines.append(Attribute(name, value))
    return tuple(lines)


def with_media_attributes(
    desc: SessionDescription, attributes: Sequence[Attribute]
) -> SessionDescription:
    """``desc`` with ``attributes`` added to its first accepted audio m-line
    (the one stream natkit's UA runs), replacing same-named ICE lines."""
    if not attributes:
        return desc
    names = {a.name.lower() for a in attributes}
    media = list(desc.media)
    for index, section in enumerate(media):
        if section.port != 0 and section.media.lower() == "audio":
            kept = tuple(a for a in section.attributes if a.name.lower() not in names)
            media[index] = dataclasses.replace(section, attributes=kept + tuple(attributes))
            break
    return dataclasses.replace(desc, media=tuple(media))


def remote_ice(desc: SessionDescription) -> IceDescription | None:
    """The peer's ICE attributes for its first accepted audio stream (session
    level inherited, RFC 8839 §5.3-5.4), or None when it offers no ICE."""
    if not offers_ice(desc):
        return None
    session = parse_ice_description(a.format() for a in desc.attributes)
    for section in desc.media:
        if section.port != 0 and section.media.lower() == "audio":
            ice = parse_ice_description((a.format() for a in section.attributes), session=session)
            return ice if ice.ufrag is not None and ice.pwd is not None else None
    return None
