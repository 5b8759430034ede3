"""AsyncGatherer on the OS stack, on loopback only: host candidates on 127.0.0.1
(allowed explicitly), a server-reflexive one from natkit's STUN server on
loopback (equal to the host address, so pruned), a relayed one from natkit's
TURN server on loopback, and a port range."""

from __future__ import annotations

import random

from natkit.addr import Endpoint, Transport
from natkit.ice.aio.gatherer import AsyncGatherer
from natkit.ice.candidate import CandidateType
from natkit.ice.gather_config import GatherConfig, HostAddress, TurnServerSpec
from natkit.net.os_stack import OsStack
from natkit.stun.aio.server import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.stun.transaction import LongTermCredentials
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

LOOPBACK = [HostAddress("lo", "127.0.0.1")]


async def test_gathers_on_loopback_with_stun_and_turn() -> None:
    stack = OsStack()
    stun = StunServerRunner(stack, StunServerConfig(primary=Endpoint("127.0.0.1", 0)), tcp=False)
    await stun.start()
    turn_config = TurnServerConfig(
        realm="loop.test",
        relay_ips=("127.0.0.1",),
        rng=random.Random(1),
    )
    turn = TurnServerRunner(
        stack,
        turn_config,
        StaticCredentials.from_passwords({"u": "p"}, "loop.test"),
        listen=[(Transport.UDP, Endpoint("127.0.0.1", 0))],
    )
    await turn.start()
    try:
        ((_, turn_ep),) = turn.endpoints
        config = GatherConfig(
            stun_servers=(stun.endpoints[0],),
            turn_servers=(
                TurnServerSpec(address=turn_ep, credentials=LongTermCredentials("u", "p")),
            ),
            allow_loopback=True,
            server_timeout=2.0,
        )
        async with AsyncGatherer(stack, config) as g:
            await g.open(LOOPBACK)
            cands = await g.gather()
            types = [c.type for c in cands]
            assert types == [CandidateType.HOST, CandidateType.RELAYED]
            host = cands[0]
            assert host.address in g.sockets and host.address.host == "127.0.0.1"
            assert g.failures == []
            assert len(turn.core.allocations()) == 1
        assert turn.core.allocations() == []  # close() released it (RFC 8656 §8)
    finally:
        stun.close()
        turn.close()
        await turn.wait_closed()


async def test_port_range_on_the_os_stack() -> None:
    probe = await OsStack().open_udp(Endpoint("127.0.0.1", 0), lambda d, r: None)
    free = probe.local_endpoint.port
    probe.close()
    await probe.wait_closed()
    config = GatherConfig(allow_loopback=True, port_range=(free, free))
    async with AsyncGatherer(OsStack(), config) as g:
        bases = await g.open(LOOPBACK)
        assert [b.address for b in bases] == [Endpoint("127.0.0.1", free)]
        cands = await g.gather()
        assert cands[0].address == Endpoint("127.0.0.1", free)
