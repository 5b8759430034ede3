"""Matrix scenarios: real calls between two natkit user agents behind NATs
on the simulated internet (both registered at natkit's SIP server, each
playing its own tone and recording the other), two-way audio proven by
content (:func:`natkit.media.tone.check_recording`):

- ECC §6.2/§6.3, RFC 6314 §5.2.2.1: STUN-learned addresses with symmetric
  RTP (RFC 4961) give two-way audio through cone NATs and one-way audio
  through a symmetric NAT (its mapping toward the peer is not the one STUN saw);
- RFC 6314 §5.2.2.3: with ICE on both sides, two-way audio for the same pairs.

:func:`run_media_call` is the scenario interface: two NAT presets in, the
observed outcome and both recordings' checks out.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.lab.matrix import Scenario
from natkit.lab.sip_phone import REGISTRAR_IP, SIP_PORT, lab_registrar
from natkit.media.tone import RecordingCheck, check_recording
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.uri import SipUri
from natkit.stun.aio.server import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.ua.aio import MediaSource, UserAgent, UserAgentSettings

STUN_IP = "198.51.100.30"
STUN = Endpoint(STUN_IP, 3478)
TONE_A, TONE_B = 440.0, 1000.0
CALL_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class MediaOutcome:
    """``observed``: two-way, one-way (a hears b / b hears a), no audio, or failed."""

    observed: str
    a: RecordingCheck | None
    b: RecordingCheck | None


def verdict(a: RecordingCheck, b: RecordingCheck) -> str:
    if a.heard_far and b.heard_far:
        return "two-way"
    if a.heard_far:
        return "one-way (a hears b)"
    if b.heard_far:
        return "one-way (b hears a)"
    return "no audio"


def _behind(net: Internet, name: str, preset: str, index: int, seed: int) -> SimHost:
    public = f"203.0.113.{50 + index}"
    inside = f"192.168.{index}.0/24"
    box = NatBox(
        PRESETS[preset], [public], inside_networks=[inside], rng=seeded_rng(seed + 10 + index)
    )
    middlebox = net.add_middlebox(f"nat-{name}", box, [public], inside=inside)
    return net.add_host(name, behind=middlebox)


def _settings(host: SimHost, user: str, tone: float, *, ice: bool, seed: int) -> UserAgentSettings:
    gather = GatherConfig(stun_servers=(STUN,), rng=random.Random(seed + 10)) if ice else None
    return UserAgentSettings(
        ice=gather,
        ice_config=IceConfig(rng=random.Random(seed + 20)) if ice else None,
        aor=SipUri(scheme="sip", host="example.org", user=user),
        local_ip=host.ip,
        sip_port=SIP_PORT,
        proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
        register=True,
        stun_server=STUN,
        source=MediaSource(tone_hz=tone),
        rng=random.Random(seed),
    )


def run_media_call(
    nat_a: str, nat_b: str, *, ice: bool = False, seed: int = 0, seconds: float = CALL_SECONDS
) -> MediaOutcome:
    """Alice behind ``nat_a`` calls Bob behind ``nat_b`` for ``seconds``;
    each recording is checked for the other's tone (half the call at least)."""

    async def main() -> MediaOutcome:
        net = Internet(seed=seed, default_link=Link(delay=0.02))
        server_host = net.add_host("sip", [REGISTRAR_IP])
        stun_host = net.add_host("stun", [STUN_IP])
        host_a = _behind(net, "alice", nat_a, 1, seed)
        host_b = _behind(net, "bob", nat_b, 2, seed)
        async with (
            lab_registrar(server_host, seed=seed),
            StunServerRunner(stun_host.stack, StunServerConfig(primary=STUN), tcp=False),
        ):
            ua_a = UserAgent(
                host_a.stack, _settings(host_a, "alice", TONE_A, ice=ice, seed=seed + 1)
            )
            ua_b = UserAgent(host_b.stack, _settings(host_b, "bob", TONE_B, ice=ice, seed=seed + 2))
            async with ua_a, ua_b:
                call_a = await ua_a.call("sip:bob@example.org")
                call_b = await asyncio.wait_for(ua_b.incoming.get(), 10)
                await asyncio.wait_for(call_a.established.wait(), 10)
                await asyncio.wait_for(call_b.established.wait(), 10)
                await asyncio.sleep(seconds)
                await ua_a.hangup(call_a)
                await asyncio.wait_for(call_b.ended.wait(), 10)
                rec_a, rec_b = call_a.recording(), call_b.recording()
        half = seconds / 2
        a = check_recording(rec_a, far_hz=TONE_B, own_hz=TONE_A, min_duration=half)
        b = check_recording(rec_b, far_hz=TONE_A, own_hz=TONE_B, min_duration=half)
        return MediaOutcome(verdict(a, b), a, b)

    try:
        return run_virtual(main, time_limit=600.0)
    except TimeoutError:
        return MediaOutcome("failed", None, None)


STUN_CASES = (
    ("full-cone", "full-cone", "two-way"),
    ("port-restricted-cone", "restricted-cone", "two-way"),
    ("port-restricted-cone", "port-restricted-cone", "two-way"),
    ("symmetric", "full-cone", "one-way (b hears a)"),
)
ICE_CASES = (
    ("symmetric", "full-cone"),
    ("port-restricted-cone", "port-restricted-cone"),
    ("symmetric", "restricted-cone"),
)


def _call(nat_a: str, nat_b: str, expected: str, *, ice: bool) -> Scenario:
    def run(seed: int) -> str:
        return run_media_call(nat_a, nat_b, ice=ice, seed=seed).observed

    if ice:
        claim = "RFC 6314 §5.2.2.3: a call with ICE on both sides has two-way audio"
    else:
        claim = (
            "ECC §6.2, RFC 6314 §5.2.2.1: STUN-learned addresses give two-way audio "
            "through cone NATs, one-way through a symmetric NAT"
        )
    return Scenario(
        name=f"call/{'ice' if ice else 'stun'}/{nat_a}+{nat_b}",
        group="media",
        claim=claim,
        expected=expected,
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [_call(a, b, e, ice=False) for a, b, e in STUN_CASES] + [
        _call(a, b, "two-way", ice=True) for a, b in ICE_CASES
    ]


RELAY_SETTINGS: dict[str, dict[str, object]] = {
    "store": {"url": "memory:"},
    "stun": {"listen": [f"{REGISTRAR_IP}:3479"]},
    "turn": {"listen": [f"udp:{REGISTRAR_IP}:3478"], "user": ["matrix:pw"]},
    "admin": {"listen": f"{REGISTRAR_IP}:9640", "token": "matrix"},
    "sip": {
        "listen": [f"udp:{REGISTRAR_IP}:{SIP_PORT}"],
        "domain": ["example.org"],
        "no-auth": True,
    },
    "media-relay": {"ipv4": REGISTRAR_IP},
}


def run_relay_call(
    nat_a: str, nat_b: str, *, seed: int = 0, seconds: float = CALL_SECONDS
) -> MediaOutcome:
    """Two UAs without STUN or ICE (their SDP names private addresses) call
    through ``natkit serve``, whose media relay rewrites the SDP and latches
    onto each side's real source (ECC §6.4, connection-oriented media)."""
    from natkit.serve.runner import ServeRunner
    from natkit.serve.settings import build_serve_settings

    def settings(host: SimHost, user: str, tone: float, rng_seed: int) -> UserAgentSettings:
        return UserAgentSettings(
            aor=SipUri(scheme="sip", host="example.org", user=user),
            local_ip=host.ip,
            sip_port=SIP_PORT,
            proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
            register=True,
            source=MediaSource(tone_hz=tone),
            rng=random.Random(rng_seed),
        )

    async def main() -> MediaOutcome:
        net = Internet(seed=seed, default_link=Link(delay=0.02))
        server = net.add_host("natkit-serve", [REGISTRAR_IP])
        host_a = _behind(net, "alice", nat_a, 1, seed)
        host_b = _behind(net, "bob", nat_b, 2, seed)
        async with ServeRunner(server.stack, build_serve_settings(RELAY_SETTINGS)) as runner:
            ua_a = UserAgent(host_a.stack, settings(host_a, "alice", TONE_A, seed + 1))
            ua_b = UserAgent(host_b.stack, settings(host_b, "bob", TONE_B, seed + 2))
            async with ua_a, ua_b:
                call_a = await ua_a.call("sip:bob@example.org")
                call_b = await asyncio.wait_for(ua_b.incoming.get(), 10)
                await asyncio.wait_for(call_a.established.wait(), 10)
                await asyncio.wait_for(call_b.established.wait(), 10)
                await asyncio.sleep(seconds)
                await ua_a.hangup(call_a)
                await asyncio.wait_for(call_b.ended.wait(), 10)
                rec_a, rec_b = call_a.recording(), call_b.recording()
            calls = runner.status()["calls"]
            relayed = bool(calls) and calls[0]["path"] == "relay"
        half = seconds / 2
        a = check_recording(rec_a, far_hz=TONE_B, own_hz=TONE_A, min_duration=half)
        b = check_recording(rec_b, far_hz=TONE_A, own_hz=TONE_B, min_duration=half)
        observed = verdict(a, b)
        return MediaOutcome(f"{observed} via relay" if relayed else observed, a, b)

    try:
        return run_virtual(main, time_limit=600.0)
    except TimeoutError:
        return MediaOutcome("failed", None, None)


RELAY_CASES = (
    ("full-cone", "full-cone"),
    ("restricted-cone", "port-restricted-cone"),
    ("port-restricted-cone", "symmetric"),
    ("symmetric", "symmetric"),
)


def _relay_call(nat_a: str, nat_b: str) -> Scenario:
    def run(seed: int) -> str:
        return run_relay_call(nat_a, nat_b, seed=seed).observed

    return Scenario(
        name=f"call/relay/{nat_a}+{nat_b}",
        group="media",
        claim="ECC §6.4: a latching media relay (connection-oriented media) gives "
        "two-way audio through every NAT",
        expected="two-way via relay",
        run=run,
    )


def all_media_scenarios() -> list[Scenario]:
    """STUN, ICE and relayed calls."""
    return scenarios() + [_relay_call(a, b) for a, b in RELAY_CASES]
