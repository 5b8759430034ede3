"""natkit serve on the simulated internet: the whole process (ServeRunner) on
one public host; phones behind symmetric NATs register at its SIP element and
call each other. Without ICE in their SDP the call is anchored on the media
relay and RTP with distinct payloads arrives both ways; with ICE the SDP goes
through untouched and the relay is not used. The status document and the
metrics show the path chosen; BYE deletes the relay call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP
from natkit.nat.box import NatBox
from natkit.nat.presets import SYMMETRIC
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.serve.runner import ServeRunner
from natkit.serve.settings import build_serve_settings
from tests.serve.sdp_phone import SdpPhone, sdp_body

SETTINGS: dict[str, dict[str, Any]] = {
    "store": {"url": "memory:"},
    "stun": {"listen": [f"{REGISTRAR_IP}:3479"]},
    "turn": {"listen": [f"udp:{REGISTRAR_IP}:3478"], "user": ["alice:pw"]},
    "sip": {"listen": [f"udp:{REGISTRAR_IP}:5060"], "domain": [DOMAIN], "no-auth": True},
    "media-relay": {"ipv4": REGISTRAR_IP},
    "admin": {"listen": f"{REGISTRAR_IP}:9640", "token": "t"},
}


def _behind_symmetric(net: Internet, name: str, index: int) -> SimHost:
    public = f"203.0.113.{50 + index}"
    inside = f"192.168.{index}.0/24"
    box = NatBox(SYMMETRIC, [public], inside_networks=[inside], rng=seeded_rng(10 + index),
                 trace=False)  # fmt: skip
    return net.add_host(name, behind=net.add_middlebox(f"nat-{name}", box, [public], inside=inside))


@dataclass
class Outcome:
    alice_got: list[bytes]
    bob_got: list[bytes]
    offer_as_sent: bytes
    offer_as_received: bytes | None
    relay_calls_during: int
    relay_calls_after: int
    status: dict[str, Any]
    metrics: str
    bye_status: int | None


def run_call(*, ice: bool, alice_public: bool = False) -> Outcome:
    async def main() -> Outcome:
        net = Internet(seed=11, default_link=Link(delay=0.01))
        server = net.add_host("natkit", [REGISTRAR_IP])
        a = (
            net.add_host("alice", ["198.51.100.71"])
            if alice_public
            else _behind_symmetric(net, "alice", 1)
        )
        b = _behind_symmetric(net, "bob", 2)
        settings = build_serve_settings(SETTINGS)
        async with ServeRunner(server.stack, settings, registration_refresh=0.5) as runner:
            alice, bob = SdpPhone(a, "alice", ice=ice), SdpPhone(b, "bob", ice=ice)
            await alice.start()
            await bob.start()
            for phone in (alice, bob):
                registered = await phone.register()
                assert registered is not None and registered.status == 200
            ok = await alice.invite(f"sip:bob@{DOMAIN}", "call-1")
            assert ok is not None and ok.status == 200, ok
            during = runner.relay.call_count if runner.relay else -1
            await asyncio.gather(alice.send_rtp(40), bob.send_rtp(40))
            await asyncio.sleep(0.5)
            status = runner.status()
            metrics = runner.metrics()[0].decode()
            bye = await alice.bye(ok, "call-1")
            await asyncio.sleep(0.1)
            after = runner.relay.call_count if runner.relay else -1
            alice.close()
            bob.close()
            return Outcome(
                alice_got=alice.received,
                bob_got=bob.received,
                offer_as_sent=sdp_body(a.ip, 4000, ice=ice),
                offer_as_received=bob.remote_sdp,
                relay_calls_during=during,
                relay_calls_after=after,
                status=status,
                metrics=metrics,
                bye_status=bye.status if bye is not None else None,
            )

    return run_virtual(main)


def _from(payloads: list[bytes], who: str) -> list[bytes]:
    return [p for p in payloads if p.startswith(who.encode() + b":")]


def test_symmetric_nats_without_ice_talk_through_the_relay() -> None:
    out = run_call(ice=False)
    assert out.relay_calls_during == 1
    # both ways, each side only the other's packets (the first few go before the latch)
    assert len(_from(out.bob_got, "alice")) >= 30 and not _from(out.bob_got, "bob")
    assert len(_from(out.alice_got, "bob")) >= 30 and not _from(out.alice_got, "alice")
    assert out.offer_as_received is not None and REGISTRAR_IP.encode() in out.offer_as_received
    call = out.status["calls"][0]
    assert call["path"] == "relay" and call["relayed"] and call["packets"] >= 60
    assert 'natkit_media_relay_call_paths_total{path="relay"} 1.0' in out.metrics
    assert "natkit_media_relay_calls 1.0" in out.metrics
    assert out.bye_status == 200 and out.relay_calls_after == 0


def test_a_public_caller_calling_a_nated_callee_without_ice_is_relayed() -> None:
    # The caller's SDP is true (public host), but the callee registered from
    # behind a symmetric NAT with a private Contact: its SDP will name an
    # address nobody reaches, so the auto policy relays on the callee's binding.
    out = run_call(ice=False, alice_public=True)
    assert out.relay_calls_during == 1
    assert len(_from(out.bob_got, "alice")) >= 30
    assert len(_from(out.alice_got, "bob")) >= 30
    call = out.status["calls"][0]
    assert call["path"] == "relay" and "callee NATed" in call["reason"], call


def test_with_ice_in_the_sdp_the_relay_is_not_used() -> None:
    out = run_call(ice=True)
    assert out.relay_calls_during == 0 and out.offer_as_received == out.offer_as_sent
    # no ICE agent runs in these phones: their private addresses reach nothing
    assert out.alice_got == [] and out.bob_got == []
    call = out.status["calls"][0]
    assert call["path"] == "direct-ice" and not call["relayed"]
    assert 'natkit_media_relay_call_paths_total{path="direct-ice"} 1.0' in out.metrics


@pytest.mark.parametrize(
    ("relay", "heard"),
    [pytest.param(True, True, id="with-relay"), pytest.param(False, False, id="without-relay")],
)
def test_natkit_user_agents_behind_symmetric_nats_hear_each_other_through_serve(
    relay: bool, heard: bool
) -> None:
    """Two natkit UAs without STUN or ICE (their SDP names private addresses)
    behind symmetric NATs, registered at natkit serve: with the media relay
    each plays a tone and the other's recording contains it (two-way audio
    proven by content); without it, neither hears anything."""
    import random

    from natkit.addr import Endpoint
    from natkit.lab.sip_phone import SIP_PORT
    from natkit.media.tone import contains_tone
    from natkit.sip.uri import SipUri
    from natkit.ua.aio import MediaSource, UserAgent, UserAgentSettings

    def settings(host: SimHost, user: str, tone: float, seed: int) -> UserAgentSettings:
        return UserAgentSettings(
            aor=SipUri(scheme="sip", host=DOMAIN, user=user),
            local_ip=host.ip,
            sip_port=SIP_PORT,
            proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
            register=True,
            source=MediaSource(tone_hz=tone),
            rng=random.Random(seed),
        )

    async def main() -> tuple[bool, bool, str]:
        net = Internet(seed=7, default_link=Link(delay=0.02))
        server = net.add_host("natkit", [REGISTRAR_IP])
        a = _behind_symmetric(net, "a", 1)
        b = _behind_symmetric(net, "b", 2)
        overrides = {} if relay else {"media-relay": {"enabled": False}}
        settings_ = build_serve_settings(SETTINGS, overrides)
        async with ServeRunner(server.stack, settings_) as runner:
            ua_a = UserAgent(a.stack, settings(a, "alice", 440.0, 1))
            ua_b = UserAgent(b.stack, settings(b, "bob", 1000.0, 2))
            async with ua_a, ua_b:
                call_a = await ua_a.call(f"sip:bob@{DOMAIN}")
                call_b = await asyncio.wait_for(ua_b.incoming.get(), 10)
                await asyncio.wait_for(call_a.established.wait(), 10)
                await asyncio.wait_for(call_b.established.wait(), 10)
                await asyncio.sleep(3.0)
                await ua_a.hangup(call_a)
                await asyncio.wait_for(call_b.ended.wait(), 10)
                rec_a, rec_b = call_a.recording(), call_b.recording()
            calls = runner.status()["calls"]
            path = calls[0]["path"] if calls else "no relay"
        return (
            contains_tone(rec_a, 1000.0, min_duration=1.5),
            contains_tone(rec_b, 440.0, min_duration=1.5),
            path,
        )

    a_hears_b, b_hears_a, path = run_virtual(main)
    assert path == ("relay" if relay else "no relay")
    assert (a_hears_b, b_hears_a) == (heard, heard)


def test_turn_allocations_with_configured_and_stored_users_show_in_status() -> None:
    """TURN in natkit serve: a user from [turn] and one added to the shared
    store (as ``natkit turn user add`` does) both allocate; the status
    document, /sessions and the metrics list the allocations."""
    from natkit.addr import Endpoint
    from natkit.turn.aio.client import AsyncTurnClient
    from natkit.turn.aio.credentials import add_user
    from natkit.turn.client_config import TurnClientConfig

    async def main() -> tuple[dict[str, Any], list[dict[str, Any]], str]:
        net = Internet(seed=5)
        server = net.add_host("natkit", [REGISTRAR_IP])
        client_host = net.add_host("client", ["198.51.100.70"])
        async with ServeRunner(server.stack, build_serve_settings(SETTINGS)) as runner:
            assert runner.store is not None
            await add_user(runner.store, "natkit", "carol", "pw2")
            await asyncio.sleep(6)  # the TURN server re-reads the store every 5 s
            clients = []
            for i, creds in enumerate((("alice", "pw"), ("carol", "pw2"))):
                client = await AsyncTurnClient.connect(
                    client_host.stack,
                    Endpoint(REGISTRAR_IP, 3478),
                    credentials=creds,
                    local=Endpoint("198.51.100.70", 6000 + i),
                    config=TurnClientConfig(rng=seeded_rng(i)),
                )
                await client.allocate()
                clients.append(client)
            status, sessions = runner.status(), runner.sessions()
            metrics = runner.metrics()[0].decode()
            for client in clients:
                await client.close()
        return status, sessions, metrics

    status, sessions, metrics = run_virtual(main)
    assert status["counts"]["allocations"] == 2
    assert sorted(a["username"] for a in status["allocations"]) == ["alice", "carol"]
    assert [s["kind"] for s in sessions] == ["allocation", "allocation"]
    assert "natkit_turn_allocations 2.0" in metrics


@contextlib.asynccontextmanager
async def _registered_phones(
    *, bob_invite_status: int
) -> AsyncIterator[tuple[ServeRunner, SdpPhone, SdpPhone]]:
    """natkit serve with alice and bob, each behind its own symmetric NAT,
    registered; bob answers INVITEs with ``bob_invite_status``. The phones
    are closed on leaving, before the server."""
    net = Internet(seed=11, default_link=Link(delay=0.01))
    server = net.add_host("natkit", [REGISTRAR_IP])
    a = _behind_symmetric(net, "alice", 1)
    b = _behind_symmetric(net, "bob", 2)
    async with ServeRunner(server.stack, build_serve_settings(SETTINGS)) as runner:
        alice, bob = SdpPhone(a, "alice"), SdpPhone(b, "bob", invite_status=bob_invite_status)
        await alice.start()
        await bob.start()
        for phone in (alice, bob):
            await phone.register()
        yield runner, alice, bob
        alice.close()
        bob.close()


def test_a_busy_callee_ends_the_relay_call() -> None:
    async def main() -> tuple[int | None, int, int, dict[str, Any]]:
        async with _registered_phones(bob_invite_status=486) as (runner, alice, _bob):
            assert runner.relay is not None
            busy = await alice.invite(f"sip:bob@{DOMAIN}", "call-busy")
            await asyncio.sleep(0.1)
            created = runner.media.paths_chosen.get("relay", 0) if runner.media else 0
            left = runner.relay.call_count
            status = runner.status()
        return busy.status if busy else None, created, left, status

    busy, created, left, status = run_virtual(main)
    assert busy == 486 and created == 1 and left == 0
    assert status["calls"][0]["state"] == "ended"


def test_a_cancelled_call_deletes_its_relay_call() -> None:
    async def main() -> tuple[int, int, list[int]]:
        async with _registered_phones(bob_invite_status=180) as (runner, alice, _bob):
            assert runner.relay is not None
            await alice.invite(f"sip:bob@{DOMAIN}", "call-cancel", wait=False)
            ringing = await asyncio.wait_for(alice.responses.get(), 10)
            while ringing.status != 180:
                ringing = await asyncio.wait_for(alice.responses.get(), 10)
            during = runner.relay.call_count
            await alice.cancel()
            finals = []
            for _ in range(2):  # 200 for the CANCEL, 487 for the INVITE
                finals.append((await asyncio.wait_for(alice.responses.get(), 10)).status)
            await asyncio.sleep(0.1)
            after = runner.relay.call_count
        return during, after, sorted(finals)

    during, after, finals = run_virtual(main)
    assert during == 1 and after == 0 and finals == [200, 487]
