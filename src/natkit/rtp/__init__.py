"""RTP and RTCP (RFC 3550), symmetric RTP (RFC 4961), SRTP (RFC 3711/4568): sans-IO.

* :mod:`natkit.rtp.packet` - the RTP codec (RFC 3550 §5.1, RFC 8285 extensions)
  and the relay's fast header peek
* :mod:`natkit.rtp.rtcp` - compound RTCP: SR, RR, SDES, BYE, APP (§6, §A.2, RFC 5506)
* :mod:`natkit.rtp.demux` - what a datagram on a shared port is (RFC 7983, RFC 5761)
* :mod:`natkit.rtp.source` - per-source reception state (Appendix A.1, A.3, A.8)
* :mod:`natkit.rtp.interval` - the RTCP report interval (§6.2-6.3, A.7)
* :mod:`natkit.rtp.session` - :class:`RtpSession`, one media stream
* :mod:`natkit.rtp.srtp` - SRTP/SRTCP with SDES keys through libsrtp
* :mod:`natkit.rtp.aio` - :class:`~natkit.rtp.aio.AsyncRtpSession`, the asyncio driver
"""

from natkit.rtp.demux import DatagramKind, classify_datagram
from natkit.rtp.packet import RtpPacket, parse_rtp, peek_rtp_header, serialize_rtp
from natkit.rtp.rtcp import parse_rtcp, serialize_rtcp
from natkit.rtp.session import RtpSession, RtpSessionConfig

__all__ = [
    "DatagramKind",
    "RtpPacket",
    "RtpSession",
    "RtpSessionConfig",
    "classify_datagram",
    "parse_rtcp",
    "parse_rtp",
    "peek_rtp_header",
    "serialize_rtcp",
    "serialize_rtp",
]
