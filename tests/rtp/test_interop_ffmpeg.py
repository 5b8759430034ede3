"""Interop: FFmpeg's RTP muxer (through PyAV) sends G.711 RTP and an RTCP SR on
loopback; natkit's codecs parse what FFmpeg packetised, and an RtpSession
delivers every payload byte for byte as FFmpeg's encoder produced it."""

from __future__ import annotations

import random
import socket

import numpy as np
import pytest

from natkit.addr import Endpoint
from natkit.rtp.events import RtcpReceived, RtpReceived
from natkit.rtp.packet import parse_rtp
from natkit.rtp.rtcp import SenderReport, parse_rtcp
from natkit.rtp.session import RtpSession, RtpSessionConfig

av = pytest.importorskip("av")

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    """Two loopback sockets on adjacent ports (FFmpeg sends RTCP to port + 1)."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtcp.bind(("127.0.0.1", rtp.getsockname()[1] + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise RuntimeError("no adjacent pair of free UDP ports")


def _drain(sock: socket.socket) -> list[bytes]:
    sock.setblocking(False)
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


def _ffmpeg_sends_a_tone(port: int) -> list[bytes]:
    """One second of a 440 Hz tone, µ-law, muxed as RTP to ``port``; returns the
    encoder's packets (the payloads RTP must carry)."""
    container = av.open(f"rtp://127.0.0.1:{port}", "w", format="rtp")
    stream = container.add_stream("pcm_mulaw", rate=8000)
    stream.layout = "mono"
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 10000).astype(np.int16).reshape(1, -1)
    encoded: list[bytes] = []
    for start in range(0, 8000, 160):
        frame = av.AudioFrame.from_ndarray(
            tone[:, start : start + 160], format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        frame.pts = start
        for packet in stream.encode(frame):
            encoded.append(bytes(packet))
            container.mux(packet)
    for packet in stream.encode(None):
        encoded.append(bytes(packet))
        container.mux(packet)
    container.close()
    return encoded


def test_ffmpeg_rtp_and_rtcp_parse_and_play_through_a_session() -> None:
    rtp_sock, rtcp_sock = _udp_pair()
    try:
        port = rtp_sock.getsockname()[1]
        encoded = _ffmpeg_sends_a_tone(port)
        rtp_datagrams = _drain(rtp_sock)
        rtcp_datagrams = _drain(rtcp_sock)
    finally:
        rtp_sock.close()
        rtcp_sock.close()
    assert b"".join(parse_rtp(d).payload for d in rtp_datagrams) == b"".join(encoded)
    packets = [parse_rtp(d) for d in rtp_datagrams]
    assert {p.payload_type for p in packets} == {0}
    assert [(p.sequence_number - packets[0].sequence_number) & 0xFFFF for p in packets] == list(
        range(len(packets))
    )
    assert rtcp_datagrams, "FFmpeg sends an SR before its first RTP packet"
    sr = parse_rtcp(rtcp_datagrams[0])[0]
    assert isinstance(sr, SenderReport) and sr.ssrc == packets[0].ssrc

    local = Endpoint("127.0.0.1", port)
    ffmpeg = Endpoint("127.0.0.1", 9)  # where FFmpeg sent from does not matter here
    session = RtpSession(RtpSessionConfig(rng=random.Random(1)), local_rtp=local, now=0.0)
    for i, data in enumerate(rtcp_datagrams):
        session.receive_datagram(data, ffmpeg, now=0.001 * i, local=session.local_rtcp)
    for i, data in enumerate(rtp_datagrams):
        session.receive_datagram(data, ffmpeg, now=0.01 + 0.02 * i, local=local)
    got = []
    while (event := session.next_event()) is not None:
        got.append(event)
    received = [e.packet.payload for e in got if isinstance(e, RtpReceived)]
    assert b"".join(received) == b"".join(encoded)
    assert any(isinstance(e, RtcpReceived) for e in got)
    assert session.statistics.packets_lost == 0
    assert session.sources[sr.ssrc].last_sr_ntp != 0
