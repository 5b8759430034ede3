"""AsyncTurnClient against natkit's TurnServerRunner over real loopback sockets
(the OS stack): the code the simulated-internet tests run, on real time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from ipaddress import ip_network

import pytest

from natkit.addr import Endpoint, Transport
from natkit.net.os_stack import OsStack
from natkit.turn.aio.client import AsyncTurnClient
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.client import TurnClientConfig
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

pytestmark = pytest.mark.timeout(30)

LO = "127.0.0.1"
USER, PASSWORD, REALM = "bob", "pw", "lo.example"


@pytest.fixture
async def runner() -> AsyncIterator[TurnServerRunner]:
    server = TurnServerRunner(
        OsStack(),
        TurnServerConfig(
            realm=REALM,
            relay_ips=(LO,),
            min_port=63000,
            max_port=63999,
            allowed_peers=(ip_network("127.0.0.0/8"),),
            rng=random.Random(4),
        ),
        StaticCredentials.from_passwords({USER: PASSWORD}, REALM),
        listen=[(Transport.UDP, Endpoint(LO, 0)), (Transport.TCP, Endpoint(LO, 0))],
    )
    await server.start()
    try:
        yield server
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_data_both_ways_through_natkit_server_on_loopback(
    runner: TurnServerRunner, transport: Transport
) -> None:
    got: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
    peer = await OsStack().open_udp(Endpoint(LO, 0), lambda d, a: got.put_nowait((d, a)))
    try:
        client = await AsyncTurnClient.connect(
            OsStack(),
            runner.endpoint(transport),
            transport=transport,
            credentials=(USER, PASSWORD),
            local=Endpoint(LO, 0),
            config=TurnClientConfig(rng=random.Random(9)),
        )
        async with client:
            alloc = await asyncio.wait_for(client.allocate(), 5)
            client.send_to(b"ping", peer.local_endpoint)  # permission + channel on demand
            assert await asyncio.wait_for(got.get(), 5) == (b"ping", alloc.relayed_endpoint)
            await asyncio.wait_for(client.bind_channel(peer.local_endpoint), 5)
            peer.send(b"pong", alloc.relayed_endpoint)
            assert await asyncio.wait_for(client.recv(), 5) == (b"pong", peer.local_endpoint)
            assert client.core.received_channel_data == 1
        assert runner.core.allocations() == []
    finally:
        peer.close()
        await peer.wait_closed()
