"""IceConnection in the simulated internet: offer/answer with the RFC 8839
attributes as text (full gathering, then trickle lines), and path changes
reported when the relay in use dies."""

from __future__ import annotations

import asyncio

from natkit.ice.aio.connection import IceConnection, PathEvent
from natkit.ice.candidate import CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import SelectedPairChanged
from natkit.ice.sdp import parse_ice_description, serialize_ice_description
from natkit.lab.ice_connect import TURN_IPS, ConnectLab
from natkit.net.sim import run_virtual
from natkit.rng import seeded_rng


async def connections(lab: ConnectLab) -> tuple[IceConnection, IceConnection]:
    """Two connections on the lab's hosts with the lab's servers."""
    conns = tuple(
        IceConnection(
            agent.stack,
            controlling=i == 0,
            gather_config=agent.gatherer.config,
            config=IceConfig(rng=seeded_rng(70 + i)),
        )
        for i, agent in enumerate(lab.agents)
    )
    return conns[0], conns[1]


def test_offer_and_answer_as_sdp_text_connect_a_relayed_pair() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "port-restricted-cone")
        a, b = await connections(lab)
        try:
            await asyncio.gather(a.start(), b.start())
            offer = serialize_ice_description(await a.gathered())
            answer = serialize_ice_description(await b.gathered())
            assert "a=end-of-candidates" in offer and "a=ice-options:trickle" in offer
            assert any(" typ relay" in line for line in offer)
            b.apply_remote_description(parse_ice_description(offer))
            a.apply_remote_description(parse_ice_description(answer))
            async with asyncio.timeout(10):
                await asyncio.gather(a.connect(), b.connect())
            pair = a.agent.selected_pair(1)
            assert pair is not None
            assert CandidateType.RELAYED in (pair[0].type, pair[1].type)
            assert a.send(1, b"\x80hello")
            async with asyncio.timeout(2):
                assert await b.recv() == (1, b"\x80hello")
        finally:
            await a.close()
            await b.close()
            await lab.close()

    run_virtual(main)


def test_trickled_lines_connect_and_bad_lines_are_dropped() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("open", "full-cone")
        a, b = await connections(lab)
        try:
            a.apply_remote_description(
                parse_ice_description(serialize_ice_description(b.local_description()))
            )
            b.apply_remote_description(
                parse_ice_description(serialize_ice_description(a.local_description()))
            )
            await asyncio.gather(a.start(), b.start())
            for src, dst in ((a, b), (b, a)):
                for line in serialize_ice_description(src.local_description()):
                    if line.startswith("a=candidate"):
                        assert dst.add_remote_candidate_line(line)
            assert not a.add_remote_candidate_line("candidate:garbage")
            assert not a.add_remote_candidate_line(
                "candidate:1 1 UDP 2122260223 4a5b6c.local 5000 typ host"
            )
            async with asyncio.timeout(10):
                await asyncio.gather(a.connect(), b.connect())
        finally:
            await a.close()
            await b.close()
            await lab.close()

    run_virtual(main)


def test_path_changes_report_the_failover_when_the_relay_dies() -> None:
    async def main() -> None:
        lab = await ConnectLab.build("symmetric", "symmetric", turn_servers=2, split_turn=True)
        a, b = await connections(lab)
        seen: list[PathEvent] = []

        async def follow() -> None:
            async for event in a.path_changes():
                seen.append(event)

        follower = asyncio.create_task(follow())
        try:
            await asyncio.gather(a.start(), b.start())
            offer = serialize_ice_description(await a.gathered())
            answer = serialize_ice_description(await b.gathered())
            b.apply_remote_description(parse_ice_description(offer))
            a.apply_remote_description(parse_ice_description(answer))
            async with asyncio.timeout(10):
                await asyncio.gather(a.connect(), b.connect())
            await asyncio.sleep(2.0)
            pair = a.agent.selected_pair(1)
            assert pair is not None
            used = {c.address.host for c in pair if c.type is CandidateType.RELAYED}
            for ip, runner in zip(TURN_IPS, lab.turn_servers, strict=True):
                if ip in used:
                    runner.close()
            for _ in range(150):  # 3 s of 20 ms media across the failover
                a.send(1, b"\x80")
                await asyncio.sleep(0.02)
            assert any(
                isinstance(e, SelectedPairChanged) and e.reason == "failover" for e in seen
            ), seen
        finally:
            await a.close()
            await b.close()
            await follower
            await lab.close()

    run_virtual(main)
