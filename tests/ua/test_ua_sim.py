"""Two natkit UAs on the simulated internet: both register at natkit's SIP
server (Outbound), call each other behind NATs, each plays its own tone and
records the other; two-way audio is proven by content (contains_tone)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import numpy as np
import pytest

from natkit.addr import Endpoint
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.lab.sip_phone import REGISTRAR_IP, SIP_PORT, lab_registrar
from natkit.media.tone import contains_tone
from natkit.nat.box import NatBehavior, NatBox
from natkit.nat.presets import FULL_CONE, PORT_RESTRICTED_CONE, RESTRICTED_CONE, SYMMETRIC
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.rtp.packet import RtpPacket, serialize_rtp
from natkit.sip.uri import SipUri
from natkit.stun.aio.server import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.ua.aio import MediaSource, UserAgent, UserAgentSettings
from natkit.ua.events import CallRole
from natkit.ua.media import MediaPath

STUN_IP = "198.51.100.30"
STUN = Endpoint(STUN_IP, 3478)
TONE_A, TONE_B = 440.0, 1000.0


@dataclass
class Outcome:
    path_a: MediaPath | None
    path_b: MediaPath | None
    a_hears_b: bool
    b_hears_a: bool
    a_hears_own: bool
    ended_a: str | None
    ended_b: str | None
    dropped_b: int = 0
    history_a: tuple[str, ...] = ()


def _behind(net: Internet, name: str, nat: NatBehavior | None, index: int) -> SimHost:
    if nat is None:
        return net.add_host(name, [f"198.51.100.{40 + index}"])
    public = f"203.0.113.{50 + index}"
    inside = f"192.168.{index}.0/24"
    box = NatBox(nat, [public], inside_networks=[inside], rng=seeded_rng(10 + index), trace=False)
    middlebox = net.add_middlebox(f"nat-{name}", box, [public], inside=inside)
    return net.add_host(name, behind=middlebox)


def _settings(
    host: SimHost, user: str, tone: float, *, stun: bool, seed: int, ice: bool = False
) -> UserAgentSettings:
    gather = GatherConfig(stun_servers=(STUN,), rng=random.Random(seed + 10)) if ice else None
    return UserAgentSettings(
        ice=gather,
        ice_config=IceConfig(rng=random.Random(seed + 20)) if ice else None,
        aor=SipUri(scheme="sip", host="example.org", user=user),
        local_ip=host.ip,
        sip_port=SIP_PORT,
        proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
        register=True,
        stun_server=STUN if stun else None,
        source=MediaSource(tone_hz=tone),
        rng=random.Random(seed),
    )


def run_call(
    nat_a: NatBehavior | None,
    nat_b: NatBehavior | None,
    *,
    stun: bool = True,
    seconds: float = 3.0,
    intruder: bool = False,
    ice: tuple[bool, bool] = (False, False),
) -> Outcome:
    async def main() -> Outcome:
        net = Internet(seed=7, default_link=Link(delay=0.02))
        server_host = net.add_host("sip", [REGISTRAR_IP])
        stun_host = net.add_host("stun", [STUN_IP])
        host_a = _behind(net, "a", nat_a, 1)
        host_b = _behind(net, "b", nat_b, 2)
        evil = net.add_host("evil", ["198.51.100.66"])
        async with lab_registrar(server_host), StunServerRunner(
            stun_host.stack, StunServerConfig(primary=STUN), tcp=False
        ):  # fmt: skip
            ua_a = UserAgent(
                host_a.stack, _settings(host_a, "alice", TONE_A, stun=stun, seed=1, ice=ice[0])
            )
            ua_b = UserAgent(
                host_b.stack, _settings(host_b, "bob", TONE_B, stun=stun, seed=2, ice=ice[1])
            )
            async with ua_a, ua_b:
                call_a = await ua_a.call("sip:bob@example.org")
                call_b = await asyncio.wait_for(ua_b.incoming.get(), 10)
                assert call_b.role is CallRole.CALLEE
                await asyncio.wait_for(call_a.established.wait(), 10)
                await asyncio.wait_for(call_b.established.wait(), 10)
                if intruder:
                    await _attack(evil, call_b)
                await asyncio.sleep(seconds)
                await ua_a.hangup(call_a)
                await asyncio.wait_for(call_b.ended.wait(), 10)
                await asyncio.wait_for(call_a.ended.wait(), 10)
                rec_a, rec_b = call_a.recording(), call_b.recording()
                dropped = call_b.media.dropped if call_b.media is not None else 0
        return Outcome(
            path_a=call_a.path,
            path_b=call_b.path,
            a_hears_b=contains_tone(rec_a, TONE_B, min_duration=seconds / 2),
            b_hears_a=contains_tone(rec_b, TONE_A, min_duration=seconds / 2),
            a_hears_own=contains_tone(rec_a, TONE_A, min_duration=0.2),
            ended_a=call_a.end.reason if call_a.end else None,
            ended_b=call_b.end.reason if call_b.end else None,
            dropped_b=dropped,
            history_a=tuple(call_a.history),
        )

    return run_virtual(main)


async def _attack(evil: SimHost, call_b: object) -> None:
    """RTP with a foreign SSRC and plain garbage at B's advertised RTP address."""
    from natkit.ua.aio import Call

    assert isinstance(call_b, Call) and call_b.media is not None
    target = call_b.media.advertised
    sock = await evil.stack.open_udp(Endpoint(evil.ip, 9000), lambda d, r: None)
    rng = np.random.default_rng(5)
    for k in range(100):
        packet = RtpPacket(
            payload_type=0, sequence_number=k, timestamp=k * 160, ssrc=0xBAD, payload=b"\x00" * 160
        )
        sock.send(serialize_rtp(packet), target)
        sock.send(bytes(rng.integers(0, 256, 40, dtype=np.uint8)), target)
        sock.send(b"\x81\xc9\x00\x01garbage-rtcp", target)
        await asyncio.sleep(0.01)
    sock.close()


MATRIX = [
    pytest.param(FULL_CONE, FULL_CONE, True, True, id="full-cone/full-cone"),
    pytest.param(PORT_RESTRICTED_CONE, RESTRICTED_CONE, True, True, id="port-restr/restr"),
    pytest.param(PORT_RESTRICTED_CONE, PORT_RESTRICTED_CONE, True, True, id="port-restricted x2"),
    pytest.param(None, PORT_RESTRICTED_CONE, True, True, id="public/port-restricted"),
    # the negative case: the symmetric NAT's mapping toward B is not the one STUN saw
    pytest.param(SYMMETRIC, FULL_CONE, False, True, id="symmetric/full-cone-one-way"),
]


@pytest.mark.parametrize(("nat_a", "nat_b", "a_hears", "b_hears"), MATRIX)
def test_stun_and_symmetric_rtp_across_nats(
    nat_a: NatBehavior | None, nat_b: NatBehavior, a_hears: bool, b_hears: bool
) -> None:
    outcome = run_call(nat_a, nat_b)
    assert outcome.path_a is MediaPath.STUN and outcome.path_b is MediaPath.STUN
    assert (outcome.a_hears_b, outcome.b_hears_a) == (a_hears, b_hears)
    assert not outcome.a_hears_own
    assert outcome.ended_b is not None and outcome.ended_a is not None


def test_without_stun_private_addresses_give_no_audio_through_nats() -> None:
    outcome = run_call(PORT_RESTRICTED_CONE, PORT_RESTRICTED_CONE, stun=False)
    assert outcome.path_a is MediaPath.SDP
    assert not outcome.a_hears_b and not outcome.b_hears_a


def test_public_hosts_talk_with_the_sdp_as_given() -> None:
    outcome = run_call(None, None, stun=False)
    assert outcome.path_a is MediaPath.SDP
    assert outcome.a_hears_b and outcome.b_hears_a
    assert any("established" in line for line in outcome.history_a)


def test_garbage_and_foreign_rtp_are_dropped_and_the_call_goes_on() -> None:
    outcome = run_call(FULL_CONE, FULL_CONE, intruder=True)
    assert outcome.a_hears_b and outcome.b_hears_a
    assert outcome.dropped_b >= 200
    assert outcome.ended_b == "the other side hung up"


ICE_MATRIX = [
    pytest.param(SYMMETRIC, FULL_CONE, id="symmetric/full-cone"),
    pytest.param(PORT_RESTRICTED_CONE, PORT_RESTRICTED_CONE, id="port-restricted x2"),
    pytest.param(SYMMETRIC, RESTRICTED_CONE, id="symmetric/restricted"),
]


@pytest.mark.parametrize(("nat_a", "nat_b"), ICE_MATRIX)
def test_ice_gives_two_way_audio_and_an_updated_offer(
    nat_a: NatBehavior, nat_b: NatBehavior
) -> None:
    outcome = run_call(nat_a, nat_b, ice=(True, True))
    assert outcome.path_a is MediaPath.ICE and outcome.path_b is MediaPath.ICE
    assert outcome.a_hears_b and outcome.b_hears_a
    assert any("INVITE moved media" in line for line in outcome.history_a)


def test_an_ice_offer_to_a_ua_without_ice_falls_back_to_stun() -> None:
    outcome = run_call(FULL_CONE, FULL_CONE, ice=(True, False))
    assert outcome.path_a is MediaPath.STUN and outcome.path_b is MediaPath.STUN
    assert outcome.a_hears_b and outcome.b_hears_a
