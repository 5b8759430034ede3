"""Review findings in the asyncio ICE driver, on the OS stack over loopback:
a component the stream does not have in a peer's description is dropped
(not raised), and closing the agent cancels its gathering task."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

from natkit.addr import Endpoint
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.aio.connection import IceConnection
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig, HostAddress
from natkit.ice.sdp import CandidateLine, IceDescription, serialize_candidate
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng

LOOPBACK = [HostAddress("lo", "127.0.0.1")]


def _connection(seed: int, *, controlling: bool) -> IceConnection:
    return IceConnection(
        OsStack(),
        controlling=controlling,
        config=IceConfig(ta=0.005, rng=seeded_rng(seed)),
        gather_config=GatherConfig(allow_loopback=True, ipv6=False, rng=seeded_rng(seed + 1)),
    )


def _with_component_two(description: IceDescription) -> IceDescription:
    """The description plus a candidate for RTCP (component 2), which a
    one-component stream does not have (RFC 8839 §5.1: rtcp-mux peers)."""
    first = description.candidates[0]
    extra = CandidateLine(
        foundation=first.foundation,
        component=2,
        transport=first.transport,
        priority=first.priority - 1,
        address=first.address,
        port=first.port + 1 if first.port < 65535 else first.port - 1,
        type=first.type,
    )
    return dataclasses.replace(description, candidates=(extra, *description.candidates))


async def test_a_component_the_stream_lacks_is_ignored_and_the_connection_works() -> None:
    a, b = _connection(1, controlling=True), _connection(3, controlling=False)
    try:
        await asyncio.gather(a.agent.start(LOOPBACK), b.agent.start(LOOPBACK))
        offer, answer = await a.gathered(), await b.gathered()
        b.apply_remote_description(_with_component_two(offer))  # must not raise
        a.apply_remote_description(_with_component_two(answer))
        line = _with_component_two(offer).candidates[0]
        assert not b.add_remote_candidate_line(serialize_candidate(line))
        async with asyncio.timeout(5):
            await asyncio.gather(a.connect(), b.connect())
        assert a.send(1, b"\x80after the bad line")
        async with asyncio.timeout(2):
            assert await b.recv() == (1, b"\x80after the bad line")
    finally:
        await a.close()
        await b.close()


def _silent_udp_port() -> tuple[socket.socket, int]:
    """A bound UDP socket that never answers: a STUN server that keeps
    gathering pending."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


async def test_close_cancels_the_gathering_task() -> None:
    silent, port = _silent_udp_port()
    try:
        agent = AsyncIceAgent(
            OsStack(),
            controlling=True,
            config=IceConfig(rng=seeded_rng(5)),
            gather_config=GatherConfig(
                allow_loopback=True,
                ipv6=False,
                stun_servers=(Endpoint("127.0.0.1", port),),
                rng=seeded_rng(6),
            ),
        )
        await agent.start(LOOPBACK)
        assert not agent.gatherer.completed  # the STUN server never answers
        await agent.close()
        others = [
            t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()
        ]
        assert others == []  # nothing of the agent's still runs after close()
    finally:
        silent.close()
