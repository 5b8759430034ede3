"""What a datagram on a shared media port is (RFC 7983 §7, RFC 5761 §4).

One UDP port may carry STUN (ICE checks, consent), DTLS, ZRTP, TURN
ChannelData and RTP and RTCP together. RFC 7983 §7 (updating RFC 5764
§5.1.2) tells them apart by the first byte:

====================  ===========
first byte            protocol
====================  ===========
0-3                   STUN
16-19                 ZRTP
20-63                 DTLS
64-79                 TURN ChannelData
128-191               RTP or RTCP
====================  ===========

With rtcp-mux, RTP and RTCP are told apart by the second byte (RFC 5761
§4): RTCP packet types 192-223 collide with RTP payload types 64-95 *with
the marker bit set*, which is why RFC 5761 forbids those payload types on a
muxed session; everything in 192-223 is RTCP, anything else RTP (an RTP
packet of payload type 64-95 without the marker stays RTP).
"""

from __future__ import annotations

import enum

__all__ = ["DatagramKind", "classify_datagram", "is_rtcp"]


class DatagramKind(enum.Enum):
    STUN = "stun"
    ZRTP = "zrtp"
    DTLS = "dtls"
    TURN_CHANNEL = "turn-channel"
    RTP = "rtp"
    RTCP = "rtcp"
    UNKNOWN = "unknown"


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: a version-2 packet whose second octet is 192-223 is RTCP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def classify_datagram(data: bytes) -> DatagramKind:
    """Name the protocol of a datagram received on a shared port.

    Only the first two bytes are looked at; the protocol's own parser still
    validates the rest. Empty data and the unassigned ranges are ``UNKNOWN``.
    """
    if not data:
        return DatagramKind.UNKNOWN
    first = data[0]
    if first <= 3:
        return DatagramKind.STUN
    if 16 <= first <= 19:
        return DatagramKind.ZRTP
    if 20 <= first <= 63:
        return DatagramKind.DTLS
    if 64 <= first <= 79:
        return DatagramKind.TURN_CHANNEL
    if 128 <= first <= 191:
        if len(data) < 2:
            return DatagramKind.UNKNOWN
        return DatagramKind.RTCP if is_rtcp(data) else DatagramKind.RTP
    return DatagramKind.UNKNOWN
