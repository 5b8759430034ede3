"""SDP rewriting for a proxy that anchors media on a relay (ECC report §6.4).

A media relay that a UA cannot reach with ICE puts itself in the media path
by replacing, in the SDP the proxy forwards, one stream's transport address
with its own: the ``c=`` line, the ``m=`` port and the ``a=rtcp`` attribute
(RFC 3605 §2.1). The UA's ICE candidates then describe addresses that are no
longer the stream's, so they are removed unless the caller keeps them
(RFC 8839 §4.2.2 would otherwise see an ``ice-mismatch``).
"""

from __future__ import annotations

import dataclasses

from natkit.errors import LocalProtocolError
from natkit.sdp.attributes import Attribute, Rtcp
from natkit.sdp.model import ICE_ATTRIBUTE_NAMES, Connection, SessionDescription

__all__ = ["rewrite_connection"]

# Session-level ICE attributes apply to every stream (RFC 8839 §5.3-5.6).
_SESSION_ICE = frozenset({"ice-ufrag", "ice-pwd", "ice-lite", "ice-options", "ice-pacing"})


def rewrite_connection(
    desc: SessionDescription,
    media_index: int,
    address: str,
    rtp_port: int,
    rtcp_port: int | None = None,
    *,
    keep_ice: bool = False,
) -> SessionDescription:
    """A copy of ``desc`` whose stream ``media_index`` goes to ``address``.

    The stream gets a media-level ``c=`` for ``address`` (IPv4 or IPv6: the
    relay may bridge families), RTP port ``rtp_port`` and, when
    ``rtcp_port`` is given, ``a=rtcp:<port> IN IP4|IP6 <address>`` in place
    of any earlier ``a=rtcp``; without it ``a=rtcp`` is removed (RTCP then
    goes to ``rtp_port`` + 1, or to ``rtp_port`` under ``a=rtcp-mux``). A
    rejected stream (port 0) keeps port 0. Unless ``keep_ice``, ICE
    attributes are stripped from the stream and from the session level.
    ``o=`` is left alone: the description is still the UA's.

    Raises :class:`LocalProtocolError` for an index, address or port the
    description or the network cannot have.
    """
    if not 0 <= media_index < len(desc.media):
        raise LocalProtocolError(f"no media section {media_index} in {len(desc.media)}")
    try:
        connection = Connection.for_address(address)
    except ValueError:
        raise LocalProtocolError(f"not an IP address: {address!r}") from None
    for port in (rtp_port, rtcp_port):
        if port is not None and not 0 < port <= 0xFFFF:
            raise LocalProtocolError(f"port out of range: {port}")
    media = desc.media[media_index]
    strip = frozenset({"rtcp"}) | (frozenset() if keep_ice else ICE_ATTRIBUTE_NAMES)
    rtcp = None if rtcp_port is None else _rtcp_attribute(rtcp_port, connection)
    attributes: list[Attribute] = []
    for attr in media.attributes:
        lowered = attr.name.lower()
        if lowered == "rtcp" and rtcp is not None:
            attributes.append(rtcp)  # in the old one's place
            rtcp = None
        if lowered not in strip:
            attributes.append(attr)
    if rtcp is not None:
        attributes.append(rtcp)
    new_media = dataclasses.replace(
        media,
        port=0 if media.port == 0 else rtp_port,
        connections=(connection,),
        attributes=tuple(attributes),
    )
    rewritten = desc.with_media(media_index, new_media)
    if keep_ice:
        return rewritten
    return dataclasses.replace(rewritten, attributes=rewritten.without(_SESSION_ICE))


def _rtcp_attribute(port: int, connection: Connection) -> Attribute:
    rtcp = Rtcp(port=port, nettype="IN", addrtype=connection.addrtype, address=connection.address)
    return Attribute("rtcp", rtcp.format())
