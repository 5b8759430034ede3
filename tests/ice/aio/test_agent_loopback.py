"""AsyncIceAgent on the OS stack, loopback only: two agents with host
candidates on 127.0.0.1 connect and exchange data on each component."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig, HostAddress
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng

LOOPBACK = [HostAddress("lo", "127.0.0.1")]


def agent(seed: int, *, controlling: bool, components: int = 1) -> AsyncIceAgent:
    return AsyncIceAgent(
        OsStack(),
        controlling=controlling,
        components=components,
        config=IceConfig(rng=seeded_rng(seed)),
        gather_config=GatherConfig(allow_loopback=True, rng=seeded_rng(seed + 1)),
    )


def wire(a: AsyncIceAgent, b: AsyncIceAgent) -> None:
    """Signalling by direct calls: trickled candidates and end-of-candidates."""

    def to(peer: AsyncIceAgent) -> Callable[[Candidate | None], None]:
        def on_candidate(candidate: Candidate | None) -> None:
            if candidate is None:
                peer.end_of_remote_candidates()
            else:
                peer.add_remote_candidate(candidate)

        return on_candidate

    a.on_candidate, b.on_candidate = to(b), to(a)
    a.set_remote_credentials(*b.local_credentials)
    b.set_remote_credentials(*a.local_credentials)


async def test_two_agents_connect_on_loopback_with_rtp_and_rtcp() -> None:
    a, b = agent(1, controlling=True, components=2), agent(2, controlling=False, components=2)
    wire(a, b)
    try:
        async with asyncio.timeout(10):
            await asyncio.gather(a.start(LOOPBACK), b.start(LOOPBACK))
            await asyncio.gather(a.connect(), b.connect())
        for component in (1, 2):
            pair = a.selected_pair(component)
            assert pair is not None
            assert pair[0].type is CandidateType.HOST and pair[0].address.host == "127.0.0.1"
            assert pair[0].component == component
        assert a.send(1, b"\x80rtp from a") and a.send(2, b"\x81rtcp from a")
        assert b.send(1, b"\x80rtp from b")
        async with asyncio.timeout(5):
            got_b = {await b.recv(), await b.recv()}
            got_a = await a.recv()
        assert got_b == {(1, b"\x80rtp from a"), (2, b"\x81rtcp from a")}
        assert got_a == (1, b"\x80rtp from b")
        assert a.checks_sent > 0 and b.checks_sent > 0
    finally:
        await a.close()
        await b.close()
