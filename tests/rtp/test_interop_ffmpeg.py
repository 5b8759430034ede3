"""Interop with FFmpeg through PyAV, on loopback.

* FFmpeg's RTP muxer sends G.711 RTP and an RTCP SR; natkit's codecs parse
  what FFmpeg packetised, and an RtpSession delivers every payload byte for
  byte as FFmpeg's encoder produced it.
* An RtpSession sends a 1 kHz tone to FFmpeg's RTP demuxer (opened from an
  SDP); what FFmpeg decodes has its spectral peak at 1 kHz. FFmpeg binds its
  port only once it runs, so natkit keeps sending frames until FFmpeg has
  decoded a second of audio (a readiness loop bounded by the tone's length,
  not a fixed wait).
"""

from __future__ import annotations

import random
import socket
import tempfile
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from natkit.addr import Endpoint
from natkit.rtp.events import RtcpReceived, RtpReceived
from natkit.rtp.packet import parse_rtp
from natkit.rtp.rtcp import SenderReport, parse_rtcp
from natkit.rtp.session import RtpSession, RtpSessionConfig

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


def _mulaw_tone(hz: float, seconds: float) -> bytes:
    encoder = av.CodecContext.create("pcm_mulaw", "w")
    encoder.sample_rate = 8000
    encoder.layout = "mono"
    encoder.format = "s16"
    t = np.arange(int(8000 * seconds)) / 8000
    tone = (np.sin(2 * np.pi * hz * t) * 10000).astype(np.int16).reshape(1, -1)
    out = bytearray()
    for start in range(0, tone.shape[1], 160):
        frame = av.AudioFrame.from_ndarray(
            tone[:, start : start + 160], format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        for packet in encoder.encode(frame):
            out += bytes(packet)
    return bytes(out)


def test_ffmpeg_decodes_the_tone_a_session_sends() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    decoded: list[np.ndarray] = []
    done = threading.Event()
    with tempfile.TemporaryDirectory() as tmp:
        sdp = Path(tmp) / "natkit.sdp"
        sdp.write_text(
            "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )

        def ffmpeg_receives() -> None:
            try:
                container = av.open(
                    str(sdp), format="sdp", timeout=5,
                    options={"protocol_whitelist": "file,udp,rtp", "reorder_queue_size": "0"},
                )  # fmt: skip
                samples = 0
                for frame in container.decode(audio=0):
                    decoded.append(frame.to_ndarray())
                    samples += frame.samples
                    if samples >= 8000:
                        break
                container.close()
            finally:
                done.set()

        receiver = threading.Thread(target=ffmpeg_receives)
        receiver.start()
        tone = _mulaw_tone(1000.0, 4.0)
        session = RtpSession(
            RtpSessionConfig(rng=random.Random(3)), local_rtp=Endpoint("127.0.0.1", 0),
            remote_rtp=Endpoint("127.0.0.1", port), now=0.0,
        )  # fmt: skip
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(len(tone) // 160):
                if done.wait(0.005):
                    break
                frame = tone[160 * i : 160 * (i + 1)]
                session.send_frame(frame, pt=0, timestamp_increment=160, now=0.02 * i)
                for d in session.datagrams_to_send(now=0.02 * i):
                    sender.sendto(d.data, (d.remote.host, d.remote.port))
        finally:
            sender.close()
            receiver.join(10)
    assert decoded, "FFmpeg decoded nothing"
    audio = np.concatenate(decoded, axis=1)[0].astype(float)
    assert len(audio) >= 8000
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.argmax(spectrum) * 8000 / len(audio) == pytest.approx(1000.0, abs=8000 / len(audio))
