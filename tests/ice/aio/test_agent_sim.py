"""AsyncIceAgent in the simulated internet (virtual time, no sleeps): trickle
to the application, relaying through TURN (permissions for public peers
only, ChannelData once bound), several components over relays, failure when
nothing connects, and allocations released on close."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.ice.aio.agent import AsyncIceAgent, IceConnectionFailed
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import ChecksCompleted, PairNominated
from natkit.ice.gather_config import GatherConfig
from natkit.lab.ice_connect import (
    ConnectLab,
    ice_servers,
    start_relay,
    start_stun_server,
    wire_signalling,
)
from natkit.nat.box import NatBox
from natkit.nat.presets import UDP_BLOCKED
from natkit.net.sim import Internet, Link, run_virtual
from natkit.rng import seeded_rng


def test_local_candidates_trickle_to_the_application_and_end() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("port-restricted-cone", "open")
        seen: list[Candidate | None] = []
        try:
            wire_signalling(lab.a, lab.b, delay=0.05)
            forward = lab.a.on_candidate
            assert forward is not None

            def tap(candidate: Candidate | None) -> None:
                seen.append(candidate)
                forward(candidate)

            lab.a.on_candidate = tap
            iterated: list[Candidate] = []

            async def iterate() -> None:
                async for candidate in lab.a.local_candidates():
                    iterated.append(candidate)

            reader = asyncio.create_task(iterate())
            await asyncio.gather(lab.a.start(), lab.b.start())
            await asyncio.gather(lab.a.connect(), lab.b.connect())
            async with asyncio.timeout(10):
                await reader  # ends at end-of-candidates
            assert seen[-1] is None and seen.count(None) == 1
            assert iterated == seen[:-1]
            types = [c.type for c in iterated]
            assert types[0] is CandidateType.HOST  # at once, before any server answered
            assert {CandidateType.SERVER_REFLEXIVE, CandidateType.RELAYED} <= set(types)
            assert all(c.base is not None for c in iterated)
        finally:
            await lab.close()

    run_virtual(main)


def test_starting_twice_is_refused() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("open", "open")
        try:
            await lab.a.start()
            with pytest.raises(LocalProtocolError):
                await lab.a.start()
        finally:
            await lab.close()

    run_virtual(main)


def test_nothing_is_sent_before_a_pair_is_selected() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("open", "open")
        try:
            assert not lab.a.send(1, b"\x80too early")
            result = await lab.connect()
            assert result.connected and lab.a.send(1, b"\x80now")
        finally:
            await lab.close()

    run_virtual(main)


def test_relayed_media_uses_channel_data_and_only_public_peers_get_permissions() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "symmetric")
        try:
            result = await lab.connect()
            assert result.connected and result.path == "relay", result.to_json()
            for _ in range(20):
                lab.a.send(1, b"\x80media")
                lab.b.send(1, b"\x80media")
                await asyncio.sleep(0.02)
            relays = [r for agent in lab.agents for r in agent.relays.values()]
            assert relays
            assert sum(r.client.sent_channel_data for r in relays) >= 20
            for relay in relays:
                assert relay.permitted  # the peer's srflx/relay addresses
                assert not any(ip.startswith("192.168.") for ip in relay.permitted)
        finally:
            await lab.close()

    run_virtual(main)


def test_rtp_and_rtcp_components_connect_through_relays() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "port-restricted-cone")
        # Rebuild both agents with two components on the same hosts and servers.
        stacks = [agent.stack for agent in lab.agents]
        gathers = [agent.gatherer.config for agent in lab.agents]
        lab.agents = [
            AsyncIceAgent(
                stack,
                controlling=i == 0,
                components=2,
                config=IceConfig(rng=seeded_rng(40 + i)),
                gather_config=gather,
            )
            for i, (stack, gather) in enumerate(zip(stacks, gathers, strict=True))
        ]
        try:
            result = await lab.connect(data=False)
            assert result.connected, result.to_json()
            for component in (1, 2):
                pair = lab.a.selected_pair(component)
                assert pair is not None and pair[0].component == component
                assert CandidateType.RELAYED in (pair[0].type, pair[1].type)
            nominated = {e.component for e in lab.a.events if isinstance(e, PairNominated)}
            assert nominated == {1, 2}
            assert sum(isinstance(e, ChecksCompleted) for e in lab.a.events) == 1
            lab.a.send(2, b"\x81rtcp")
            async with asyncio.timeout(2):
                assert await lab.b.recv() == (2, b"\x81rtcp")
        finally:
            await lab.close()

    run_virtual(main)


def test_connect_raises_when_no_path_exists() -> None:
    """Both sides behind UDP-blocking firewalls and no TURN server: with both
    end-of-candidates in, ICE fails (RFC 8445 §8.1.2) and connect() says so."""

    async def main() -> None:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        stun = net.add_host("stun", "203.0.113.1")
        runner = await start_stun_server(stun.stack)
        agents = []
        for n, inside in ((1, "192.0.2.0/25"), (2, "192.0.2.128/25")):
            box = NatBox(UDP_BLOCKED, [], inside_networks=[inside], rng=seeded_rng(n))
            fw = net.add_middlebox(f"fw{n}", box, [], inside=inside, routed=True)
            host = net.add_host(f"h{n}", behind=fw)
            stun_servers, _ = ice_servers(())
            agents.append(
                AsyncIceAgent(
                    host.stack,
                    controlling=n == 1,
                    config=IceConfig(rng=seeded_rng(n), rc=2, rm=2),
                    gather_config=GatherConfig(stun_servers=stun_servers, server_timeout=1.0),
                )
            )
        a, b = agents
        wire_signalling(a, b, delay=0.01)
        try:
            await asyncio.gather(a.start(), b.start())
            with pytest.raises(IceConnectionFailed, match="no valid pair"):
                async with asyncio.timeout(60):
                    await a.connect()
            assert not a.connected and a.selected_pair(1) is None
        finally:
            await a.close()
            await b.close()
            runner.close()
            await runner.wait_closed()

    run_virtual(main)


def test_close_releases_every_turn_allocation() -> None:
    async def main() -> None:
        net = Internet(seed=2, default_link=Link(delay=0.01))
        turn_host = net.add_host("turn", "203.0.113.10")
        turn = await start_relay(turn_host.stack, "203.0.113.10")
        host = net.add_host("client", "203.0.113.50")
        _, specs = ice_servers(("203.0.113.10",), tls=False)
        agent = AsyncIceAgent(
            host.stack,
            controlling=True,
            config=IceConfig(rng=seeded_rng(3)),
            gather_config=GatherConfig(turn_servers=specs, rng=seeded_rng(4)),
        )
        try:
            await agent.start()
            async with asyncio.timeout(10):
                async for _ in agent.local_candidates():
                    pass
            assert len(agent.relays) == 2  # over UDP and over TCP
            assert len(turn.core.allocations()) == 2
            await agent.close()
            assert all(r.client.state.ended for r in agent.relays.values())
            assert turn.core.allocations() == []
        finally:
            await agent.close()
            turn.close()
            await turn.wait_closed()

    run_virtual(main)


def test_one_server_as_stun_and_turn_server_relays_after_gathering() -> None:
    """The usual coturn set-up: the TURN server is the STUN server too. Once
    its allocation is the agent's, the gatherer must pass that server's
    datagrams on (it took them for stray STUN answers and dropped them)."""

    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "symmetric")
        turn = Endpoint("203.0.113.10", 3478)
        for agent in lab.agents:
            agent.gatherer.config = dataclasses.replace(agent.gatherer.config, stun_servers=(turn,))
        try:
            result = await lab.connect(timeout=10)
            assert result.connected and result.path == "relay", result.to_json()
            assert result.data_ok
        finally:
            await lab.close()

    run_virtual(main)


def test_close_returns_when_the_turn_server_died_long_ago() -> None:
    """The release of an allocation on a dead server goes unanswered; the
    client's keepalive deadline passed meanwhile. close() must still return
    (a void deadline once re-armed the relay's timer at the same instant for
    ever: a busy loop, and in virtual time a hang)."""

    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "symmetric")
        try:
            result = await lab.connect()
            assert result.connected and result.path == "relay"
            for runner in lab.turn_servers:
                runner.close()
            await asyncio.sleep(12.0)  # past the 10 s TURN keepalive
            async with asyncio.timeout(5.0):
                await lab.a.close(timeout=1.0)
                await lab.b.close(timeout=1.0)
        finally:
            await lab.close()

    run_virtual(main)
