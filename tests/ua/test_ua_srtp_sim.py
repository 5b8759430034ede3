"""SRTP with SDES keys between two natkit UAs on the simulated internet
(RFC 4568, RFC 3711; issue 7): with SRTP on both sides each recording holds
the other's tone while the packets on the wire are neither plain RTP nor
G.711 of the tone; best effort against a peer without SRTP falls back to
plain RTP; SRTP required against a peer without it is refused (488)."""

from __future__ import annotations

import asyncio
import random

import pytest

from natkit.addr import Endpoint
from natkit.lab.sip_phone import REGISTRAR_IP, SIP_PORT, lab_registrar
from natkit.media.g711 import PCMU
from natkit.media.tone import contains_tone
from natkit.net.sim import Internet, Link, run_virtual
from natkit.packet import IpProto, Packet
from natkit.sdp.offer_answer import SrtpPolicy
from natkit.sip.uri import SipUri
from natkit.ua.aio import MediaSource, UserAgent, UserAgentSettings

TONE_A, TONE_B = 440.0, 1000.0
IP_A, IP_B = "198.51.100.41", "198.51.100.42"


def _settings(ip: str, user: str, tone: float, srtp: SrtpPolicy, seed: int) -> UserAgentSettings:
    return UserAgentSettings(
        aor=SipUri(scheme="sip", host="example.org", user=user),
        local_ip=ip,
        sip_port=SIP_PORT,
        proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
        register=True,
        source=MediaSource(tone_hz=tone),
        srtp=srtp,
        rng=random.Random(seed),
    )


async def _call(
    srtp_a: SrtpPolicy, srtp_b: SrtpPolicy
) -> tuple[bool, bool, list[bytes], list[str], str | None]:
    """Alice calls Bob for 2 s; (a hears b, b hears a, media payloads seen on
    the wire, Alice's progress lines, how Alice's call ended)."""
    net = Internet(seed=3, default_link=Link(delay=0.02))
    server = net.add_host("sip", [REGISTRAR_IP])
    host_a, host_b = net.add_host("a", [IP_A]), net.add_host("b", [IP_B])
    wire: list[bytes] = []

    def tap(now: float, origin: str, packet: Packet) -> None:
        if packet.proto is IpProto.UDP and SIP_PORT not in (packet.src.port, packet.dst.port):
            wire.append(packet.payload)

    net.taps.append(tap)
    history: list[str] = []
    async with lab_registrar(server):
        ua_a = UserAgent(host_a.stack, _settings(IP_A, "alice", TONE_A, srtp_a, 1))
        ua_b = UserAgent(host_b.stack, _settings(IP_B, "bob", TONE_B, srtp_b, 2))
        async with ua_a, ua_b:
            call_a = await ua_a.call("sip:bob@example.org")
            try:
                await asyncio.wait_for(call_a.established.wait(), 5)
            except TimeoutError:
                await asyncio.wait_for(call_a.ended.wait(), 5)
                history = list(call_a.history)
                return False, False, wire, history, call_a.end.reason if call_a.end else None
            call_b = await asyncio.wait_for(ua_b.incoming.get(), 5)
            await asyncio.wait_for(call_b.established.wait(), 5)
            await asyncio.sleep(2.0)
            await ua_a.hangup(call_a)
            await asyncio.wait_for(call_b.ended.wait(), 5)
            history = list(call_a.history)
            a_hears = contains_tone(call_a.recording(), TONE_B, min_duration=1.0)
            b_hears = contains_tone(call_b.recording(), TONE_A, min_duration=1.0)
    return a_hears, b_hears, wire, history, None


def _plain_rtp(payload: bytes) -> bool:
    return len(payload) >= 12 and payload[0] >> 6 == 2 and payload[1] & 0x7F == 0


def _tone_in_clear(wire: list[bytes]) -> bool:
    """Whether some datagram's last 160 bytes decode (as G.711 µ-law) to a tone."""
    import numpy as np

    frames = [p[-170:-10] for p in wire if len(p) >= 172]  # SRTP: 10-byte tag at the end
    plain = [p[12:172] for p in wire if _plain_rtp(p) and len(p) == 172]
    for chunk in (frames, plain):
        if chunk:
            samples = np.concatenate([PCMU.decode(c) for c in chunk[:100]])
            if contains_tone(samples, TONE_A, min_duration=0.5) or contains_tone(
                samples, TONE_B, min_duration=0.5
            ):
                return True
    return False


def test_srtp_on_both_sides_carries_two_way_audio_that_the_wire_does_not_show() -> None:
    a_hears, b_hears, wire, history, _ = run_virtual(
        lambda: _call(SrtpPolicy.REQUIRED, SrtpPolicy.OPTIONAL)
    )
    assert a_hears and b_hears
    assert any("SRTP AES_CM_128_HMAC_SHA1_80" in line for line in history), history
    media = [p for p in wire if len(p) >= 12 and p[0] >> 6 == 2]
    assert len(media) > 100
    # SRTP keeps the RTP header readable and encrypts the payload (RFC 3711
    # §3.1): 160 bytes of G.711 plus the 10-byte authentication tag.
    assert all(len(p) == 182 for p in media if 200 > len(p) > 170)
    assert not _tone_in_clear(media)


def test_without_srtp_the_same_check_sees_the_tone_on_the_wire() -> None:
    # The check above can fail: on plain RTP the tones are in the clear.
    a_hears, b_hears, wire, history, _ = run_virtual(
        lambda: _call(SrtpPolicy.OPTIONAL, SrtpPolicy.NONE)
    )
    assert a_hears and b_hears
    assert not any("SRTP" in line for line in history)
    assert _tone_in_clear([p for p in wire if _plain_rtp(p)])


def test_srtp_required_against_a_peer_without_it_is_refused() -> None:
    a_hears, b_hears, _, history, ended = run_virtual(
        lambda: _call(SrtpPolicy.REQUIRED, SrtpPolicy.NONE)
    )
    assert not (a_hears or b_hears)
    assert ended is not None and "488" in ended, (ended, history)


@pytest.mark.parametrize(
    ("a", "b", "secure"),
    [
        (SrtpPolicy.OPTIONAL, SrtpPolicy.OPTIONAL, True),
        (SrtpPolicy.NONE, SrtpPolicy.OPTIONAL, False),
        # A best-effort offer (RTP/AVP with keys) meets the requirement.
        (SrtpPolicy.OPTIONAL, SrtpPolicy.REQUIRED, True),
        (SrtpPolicy.NONE, SrtpPolicy.REQUIRED, None),  # no keys offered: 488
    ],
)
def test_the_policy_matrix(a: SrtpPolicy, b: SrtpPolicy, secure: bool | None) -> None:
    a_hears, b_hears, _, history, ended = run_virtual(lambda: _call(a, b))
    if secure is None:
        assert ended is not None and "488" in ended
        return
    assert a_hears and b_hears
    assert any("SRTP" in line for line in history) == secure
