"""natkit's sans-IO agent against aioice (PyPI), the ICE stack of aiortc,
over real loopback sockets, in both roles: checks, nomination and data.

A minimal asyncio driver (one UDP socket, one base) is written here: the
core's shape (receive_datagram / datagrams_to_send / get_timer /
handle_timer / next_event) is all it needs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioice import Candidate as AioCandidate
from aioice import Connection

from natkit.addr import Endpoint, Transport
from natkit.ice.agent import IceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import ChecksCompleted, DataReceived, IceEvent
from natkit.rng import seeded_rng

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

LOOPBACK = "127.0.0.1"


class Driver(asyncio.DatagramProtocol):
    """Runs one IceAgent on one UDP socket with the event loop's clock."""

    def __init__(self, agent: IceAgent) -> None:
        self.agent = agent
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self.base = Endpoint(LOOPBACK, 0)
        self.events: asyncio.Queue[IceEvent] = asyncio.Queue()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.base = Endpoint(*transport.get_extra_info("sockname")[:2])

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.agent.receive_datagram(
            data, Endpoint(addr[0], addr[1]), local=self.base, now=self.loop.time()
        )
        self.pump()

    def pump(self) -> None:
        now = self.loop.time()
        assert self.transport is not None
        for data, _local, remote in self.agent.datagrams_to_send(now=now):
            self.transport.sendto(data, (remote.host, remote.port))
        while (event := self.agent.next_event()) is not None:
            self.events.put_nowait(event)
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.agent.get_timer()
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.agent.handle_timer(now=self.loop.time())
        self.pump()

    async def wait_for(self, kind: type) -> Any:
        while True:
            event = await self.events.get()
            if isinstance(event, kind):
                return event

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()


def to_natkit(c: Any) -> Candidate:
    return Candidate(
        foundation=c.foundation,
        component=c.component,
        transport=Transport.UDP,
        priority=c.priority,
        address=Endpoint(c.host, c.port),
        type=CandidateType(c.type),
    )


def to_aioice(c: Candidate) -> Any:
    return AioCandidate(
        foundation=c.foundation,
        component=c.component,
        transport="udp",
        priority=c.priority,
        host=c.address.host,
        port=c.address.port,
        type=str(c.type),
    )


@pytest.mark.parametrize(
    "natkit_controlling", [True, False], ids=["natkit-controls", "aioice-controls"]
)
async def test_natkit_agent_connects_to_aioice_and_exchanges_data(
    natkit_controlling: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice gathers every interface but loopback; this test is loopback only.
    monkeypatch.setattr("aioice.ice.get_host_addresses", lambda **_: [LOOPBACK])
    loop = asyncio.get_running_loop()
    agent = IceAgent(IceConfig(rng=seeded_rng(70)), controlling=natkit_controlling)
    stream = agent.add_stream()
    transport, driver = await loop.create_datagram_endpoint(
        lambda: Driver(agent), local_addr=(LOOPBACK, 0)
    )
    peer = Connection(ice_controlling=not natkit_controlling, use_ipv6=False)
    try:
        await peer.gather_candidates()
        creds = agent.local_credentials(stream)
        peer.remote_username, peer.remote_password = creds.ufrag, creds.pwd
        agent.set_remote_credentials(stream, peer.local_username, peer.local_password)
        mine = Candidate.local(CandidateType.HOST, driver.base, base=driver.base)
        agent.add_local_candidate(stream, mine)
        agent.end_of_local_candidates(stream)
        for c in peer.local_candidates:
            agent.add_remote_candidate(stream, to_natkit(c))
        agent.end_of_remote_candidates(stream)
        await peer.add_remote_candidate(to_aioice(mine))
        await peer.add_remote_candidate(None)
        driver.pump()
        await asyncio.wait_for(asyncio.gather(peer.connect(), driver.wait_for(ChecksCompleted)), 10)
        await peer.send(b"\x80from aioice")
        got = await asyncio.wait_for(driver.wait_for(DataReceived), 5)
        assert got.data == b"\x80from aioice"
        assert agent.send_data(stream, 1, b"\x80from natkit", now=loop.time())
        driver.pump()
        assert await asyncio.wait_for(peer.recv(), 5) == b"\x80from natkit"
        selected = agent.selected_pair(stream, 1)
        assert selected is not None and selected[0].address == driver.base
    finally:
        await peer.close()
        driver.close()
        transport.close()
