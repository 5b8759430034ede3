# ruff: noqa: E501
"""SDP bodies as real peers send them, for the codec and offer/answer tests.

Each is reconstructed from the peer's own SDP writer (addresses replaced by
documentation ranges, keys and fingerprints by fresh values of the right
size): baresip 1.x/2.x, Chrome's WebRTC offer, Linphone, Asterisk (PJSIP
and chan_sip hold), sipp's built-in uac scenario, a Polycom VVX, a Cisco IOS
gateway (with its RFC 2543 hold), and the examples of RFC 8866 §5, RFC 4566
§5 and RFC 4568 §8.
"""

from __future__ import annotations


def crlf(text: str) -> bytes:
    """The body with CRLF line ends, as SIP carries it."""
    return "".join(line + "\r\n" for line in text.strip("\n").split("\n")).encode()


BARESIP = crlf("""
v=0
o=- 1453016563 2880434412 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
a=tool:baresip 2.9.0
m=audio 10000 RTP/AVP 96 9 0 8 101
b=AS:125
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:1870462193 cname:c8a4a0a4-0ea2-4a2f-9bd2-07d2b8c5b2a1
a=ptime:20
""")

BARESIP_SRTP_ICE = crlf("""
v=0
o=- 2087461293 3201924820 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
a=tool:baresip 2.9.0
a=ice-lite
m=audio 10002 RTP/SAVP 0 8 101
b=AS:80
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=ice-ufrag:jB7e
a=ice-pwd:q8tSj2Lf7qKp0cYwPz9aZ1Rr
a=candidate:1 1 UDP 2113932031 192.0.2.10 10002 typ host
a=candidate:1 2 UDP 2113932030 192.0.2.10 10003 typ host
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj
a=ptime:20
""")

CHROME = crlf("""
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic: WMS 2f5d3c4e-7a0b-4c1d-9e8f-112233445566
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:x8Kq
a=ice-pwd:Lm3n4o5p6q7r8s9t0u1v2w3x
a=ice-options:trickle
a=fingerprint:sha-256 7B:8D:4E:2A:5C:9F:11:03:6A:D2:E8:47:B1:0C:93:5F:2E:7A:84:C6:1D:39:F0:58:A2:6B:C4:0E:97:13:D5:8F
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:2f5d3c4e-7a0b-4c1d-9e8f-112233445566 8c1f4a2b-3d5e-4f60-8a7b-9c0d1e2f3a4b
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:YxZ1aB2cD3eF4gH5
a=ssrc:3735928559 msid:2f5d3c4e-7a0b-4c1d-9e8f-112233445566 8c1f4a2b-3d5e-4f60-8a7b-9c0d1e2f3a4b
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:x8Kq
a=ice-pwd:Lm3n4o5p6q7r8s9t0u1v2w3x
a=ice-options:trickle
a=fingerprint:sha-256 7B:8D:4E:2A:5C:9F:11:03:6A:D2:E8:47:B1:0C:93:5F:2E:7A:84:C6:1D:39:F0:58:A2:6B:C4:0E:97:13:D5:8F
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendrecv
a=msid:2f5d3c4e-7a0b-4c1d-9e8f-112233445566 0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:106 H264/90000
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:127 H264/90000
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:125 rtx/90000
a=fmtp:125 apt=127
a=rtpmap:39 H264/90000
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:112 H264/90000
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f
a=rtpmap:113 rtx/90000
a=fmtp:113 apt=112
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
a=ssrc-group:FID 2863311530 1431655765
a=ssrc:2863311530 cname:YxZ1aB2cD3eF4gH5
a=ssrc:2863311530 msid:2f5d3c4e-7a0b-4c1d-9e8f-112233445566 0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a
a=ssrc:1431655765 cname:YxZ1aB2cD3eF4gH5
a=ssrc:1431655765 msid:2f5d3c4e-7a0b-4c1d-9e8f-112233445566 0d9e8f7a-6b5c-4d3e-2f1a-0b9c8d7e6f5a
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:x8Kq
a=ice-pwd:Lm3n4o5p6q7r8s9t0u1v2w3x
a=ice-options:trickle
a=fingerprint:sha-256 7B:8D:4E:2A:5C:9F:11:03:6A:D2:E8:47:B1:0C:93:5F:2E:7A:84:C6:1D:39:F0:58:A2:6B:C4:0E:97:13:D5:8F
a=setup:actpass
a=mid:2
a=sctp-port:5000
a=max-message-size:262144
""")

LINPHONE = crlf("""
v=0
o=alice 3003 2052 IN IP4 192.0.2.12
s=Talk
c=IN IP4 192.0.2.12
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 SILK/16000
a=rtpmap:98 speex/16000
a=fmtp:98 vbr=on
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 ccm fir
""")

ASTERISK = crlf("""
v=0
o=- 1234567890 1234567892 IN IP4 203.0.113.10
s=Asterisk
c=IN IP4 203.0.113.10
t=0 0
m=audio 10442 RTP/AVP 0 8 3 111 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:3 GSM/8000
a=rtpmap:111 G726-32/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=maxptime:150
a=sendrecv
""")

ASTERISK_HOLD = crlf("""
v=0
o=root 1821058411 1821058413 IN IP4 203.0.113.10
s=Asterisk PBX 13.38.3
c=IN IP4 203.0.113.10
t=0 0
m=audio 10442 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendonly
""")

SIPP_UAC = crlf("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

# sipp's scenarios are written with bare LF; sipp adds no CR to the body.
SIPP_UAC_PCAP = (
    b"v=0\n"
    b"o=user1 53655765 2353687637 IN IP4 127.0.0.1\n"
    b"s=-\n"
    b"c=IN IP4 127.0.0.1\n"
    b"t=0 0\n"
    b"m=audio 6000 RTP/AVP 8 101\n"
    b"a=rtpmap:8 PCMA/8000\n"
    b"a=rtpmap:101 telephone-event/8000\n"
    b"a=fmtp:101 0-11,16\n"
)

POLYCOM = crlf("""
v=0
o=- 1170285286 1170285286 IN IP4 198.51.100.20
s=Polycom IP Phone
c=IN IP4 198.51.100.20
t=0 0
a=sendrecv
m=audio 2222 RTP/AVP 9 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
""")

POLYCOM_HOLD = crlf("""
v=0
o=- 1170285286 1170285287 IN IP4 198.51.100.20
s=Polycom IP Phone
c=IN IP4 198.51.100.20
t=0 0
a=sendonly
m=audio 2222 RTP/AVP 9 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
""")

CISCO = crlf("""
v=0
o=CiscoSystemsSIP-GW-UserAgent 8373 1433 IN IP4 198.51.100.1
s=SIP Call
c=IN IP4 198.51.100.1
t=0 0
m=audio 16384 RTP/AVP 0 101 19
c=IN IP4 198.51.100.1
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:19 CN/8000
a=ptime:20
""")

CISCO_HOLD = crlf("""
v=0
o=CiscoSystemsSIP-GW-UserAgent 8373 1434 IN IP4 198.51.100.1
s=SIP Call
c=IN IP4 0.0.0.0
t=0 0
m=audio 16384 RTP/AVP 0 101 19
c=IN IP4 0.0.0.0
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=rtpmap:19 CN/8000
a=ptime:20
""")

RFC8866_EXAMPLE = crlf("""
v=0
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
s=Call to John Smith
i=SDP Offer #1
u=http://www.jdoe.example.com/home.html
e=Jane Doe <jane@jdoe.example.com>
p=+1 617 555-6011
c=IN IP4 198.51.100.1
t=0 0
m=audio 49170 RTP/AVP 0
m=audio 49180 RTP/AVP 0
m=video 51372 RTP/AVP 99
c=IN IP6 2001:db8::2
a=rtpmap:99 h263-1998/90000
""")

RFC4566_EXAMPLE = crlf("""
v=0
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5
s=SDP Seminar
i=A Seminar on the session description protocol
u=http://www.example.com/seminars/sdp.pdf
e=j.doe@example.com (Jane Doe)
c=IN IP4 224.2.17.12/127
t=2873397496 2873404696
a=recvonly
m=audio 49170 RTP/AVP 0
m=video 51372 RTP/AVP 99
a=rtpmap:99 h263-1998/90000
""")

RFC4568_EXAMPLE = crlf("""
v=0
o=sam 2890844526 2890842807 IN IP4 10.47.16.5
s=SRTP Discussion
i=A discussion of Secure RTP
u=http://www.example.com/seminars/srtp.pdf
e=marge@example.com (Marge Simpson)
c=IN IP4 168.2.17.12
t=2873397496 2873404696
m=audio 49170 RTP/SAVP 0
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4 FEC_ORDER=FEC_SRTP
""")

REAL_BODIES = {
    "baresip": BARESIP,
    "baresip-srtp-ice": BARESIP_SRTP_ICE,
    "chrome": CHROME,
    "linphone": LINPHONE,
    "asterisk": ASTERISK,
    "asterisk-hold": ASTERISK_HOLD,
    "sipp-uac": SIPP_UAC,
    "sipp-uac-pcap": SIPP_UAC_PCAP,
    "polycom": POLYCOM,
    "polycom-hold": POLYCOM_HOLD,
    "cisco": CISCO,
    "cisco-hold": CISCO_HOLD,
    "rfc8866": RFC8866_EXAMPLE,
    "rfc4566": RFC4566_EXAMPLE,
    "rfc4568": RFC4568_EXAMPLE,
}
