"""AsyncGatherer on the simulated internet, under the virtual clock: a host
behind a NAT gathers host, server-reflexive and relayed candidates from
natkit's STUN server and natkit's TURN server (UDP, TCP, TLS) on the lab
internet; a dead server costs only its own deadline."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from natkit.addr import Endpoint, Transport
from natkit.errors import TransportError
from natkit.ice.aio.gatherer import AsyncGatherer
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.gather_config import GatherConfig, TurnServerSpec
from natkit.lab.topology import NAT_PUBLIC_IP, attach_nat
from natkit.lab.turn import TURN_IP, lab_credentials, start_turn_server
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.stun.aio.server import StunServerRunner
from natkit.stun.server import StunServerConfig

T = TypeVar("T")
HOST, SRFLX, RELAY = (
    CandidateType.HOST,
    CandidateType.SERVER_REFLEXIVE,
    CandidateType.RELAYED,
)
STUN = Endpoint("203.0.113.1", 3478)
DEAD = Endpoint("203.0.113.99", 3478)
TURN_UDP = Endpoint(TURN_IP, 3478)
TURN_TLS = Endpoint(TURN_IP, 443)
_, CREDS = lab_credentials()


def simulate(
    body: Callable[[SimHost, Internet], Awaitable[T]],
    *,
    preset: str = "port-restricted-cone",
    tls: ssl.SSLContext | None = None,
) -> T:
    async def main() -> T:
        net = Internet(seed=1, default_link=Link(delay=0.02))
        stun_host = net.add_host("stun", STUN.host)
        turn_host = net.add_host("turn", TURN_IP)
        nat = attach_nat(net, PRESETS[preset], seed=1)
        client = net.add_host("client", behind=nat)
        stun = StunServerRunner(stun_host.stack, StunServerConfig(primary=STUN), tcp=False)
        await stun.start()
        turn = await start_turn_server(turn_host.stack, tls=tls, seed=4)
        try:
            return await body(client, net)
        finally:
            stun.close()
            turn.close()
            await turn.wait_closed()

    return run_virtual(main, time_limit=600.0)


def by_type(cands: tuple[Candidate, ...] | list[Candidate]) -> dict[CandidateType, Candidate]:
    return {c.type: c for c in cands}


def test_host_srflx_and_relay_behind_a_nat() -> None:
    async def body(client: SimHost, net: Internet) -> None:
        config = GatherConfig(
            stun_servers=(STUN,),
            turn_servers=(TurnServerSpec(address=TURN_UDP, credentials=CREDS),),
            rng=seeded_rng(3),
        )
        trickled: list[Candidate] = []
        async with AsyncGatherer(client.stack, config, on_candidate=trickled.append) as g:
            await g.open()
            g.start()
            streamed = [c async for c in g]
            assert streamed == trickled
            kinds = by_type(g.candidates)
            assert set(kinds) == {HOST, SRFLX, RELAY}
            host, srflx, relay = kinds[HOST], kinds[SRFLX], kinds[RELAY]
            assert host.address.host == client.ips[0]
            assert srflx.address.host == NAT_PUBLIC_IP and srflx.related == host.address
            assert relay.address.host == TURN_IP and relay.related == srflx.address
            assert list(g.sockets) == [host.address]  # the agent reuses it
            assert g.failures == []
            assert len(g.core.allocations) == 1  # type: ignore[union-attr]

    simulate(body)


def test_dead_stun_server_costs_only_its_own_deadline() -> None:
    async def body(client: SimHost, net: Internet) -> None:
        loop = asyncio.get_running_loop()
        config = GatherConfig(stun_servers=(DEAD, STUN), server_timeout=2.0, rng=seeded_rng(3))
        async with AsyncGatherer(client.stack, config) as g:
            t0 = loop.time()
            arrivals: list[tuple[float, CandidateType]] = []
            await g.open()
            g.start()
            async for cand in g:
                arrivals.append((loop.time() - t0, cand.type))
            done = loop.time() - t0
        assert [k for _, k in arrivals] == [HOST, SRFLX]
        assert arrivals[1][0] < 0.5  # the live server did not wait for the dead one
        assert done == pytest.approx(2.0, abs=0.01)
        assert [(f.server, f.timed_out) for f in g.failures] == [(DEAD, True)]

    simulate(body)


@pytest.mark.parametrize(
    ("transport", "server"),
    [
        pytest.param(Transport.TCP, TURN_UDP, id="tcp"),
        pytest.param(Transport.TLS, TURN_TLS, id="tls"),
    ],
)
def test_relay_over_turn_streams(
    transport: Transport,
    server: Endpoint,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    async def body(client: SimHost, net: Internet) -> None:
        spec = TurnServerSpec(
            address=server,
            credentials=CREDS,
            transport=transport,
            server_hostname="localhost",
        )
        config = GatherConfig(turn_servers=(spec,), rng=seeded_rng(3))
        async with AsyncGatherer(client.stack, config, tls=tls_client_context) as g:
            cands = await g.gather()
            assert [c.type for c in cands] == [HOST, RELAY]
            assert cands[1].address.host == TURN_IP
            (alloc,) = g.core.allocations  # type: ignore[union-attr]
            assert alloc.connection_id in g.streams
            ((taken, conn),) = g.take_allocations()
            assert taken == alloc and conn is not None and not g.streams
        assert not conn.closed  # the agent's now, not closed with the gatherer
        conn.abort()

    simulate(body, tls=tls_server_context)


def test_udp_blocked_falls_back_to_the_tcp_relay_only() -> None:
    async def body(client: SimHost, net: Internet) -> None:
        config = GatherConfig(
            stun_servers=(STUN,),
            turn_servers=(
                TurnServerSpec(address=TURN_UDP, credentials=CREDS),
                TurnServerSpec(address=TURN_UDP, credentials=CREDS, transport=Transport.TCP),
            ),
            server_timeout=2.0,
            rng=seeded_rng(3),
        )
        async with AsyncGatherer(client.stack, config) as g:
            cands = await g.gather()
        assert [c.type for c in cands] == [HOST, RELAY]
        assert {f.transport for f in g.failures} == {Transport.UDP}
        assert len(g.failures) == 2  # STUN and TURN over UDP timed out

    simulate(body, preset="udp-blocked")


def test_port_range_is_honoured_and_exhaustion_is_an_error() -> None:
    async def body(client: SimHost, net: Internet) -> None:
        config = GatherConfig(port_range=(40000, 40001), components=2, rng=seeded_rng(3))
        async with AsyncGatherer(client.stack, config) as g:
            bases = await g.open()
            assert sorted(b.address.port for b in bases) == [40000, 40001]
            assert [b.component for b in bases] == [1, 2]
            async with AsyncGatherer(client.stack, config) as other:
                with pytest.raises(TransportError):
                    await other.open()

    simulate(body)


def test_dual_stack_public_host_orders_ipv6_first() -> None:
    async def main() -> None:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        host = net.add_host("h", ["203.0.113.50", "2001:db8::50"])
        async with AsyncGatherer(host.stack, GatherConfig(rng=seeded_rng(1))) as g:
            cands = await g.gather()
        assert [c.address.host for c in cands] == ["2001:db8::50", "203.0.113.50"]

    run_virtual(main, time_limit=60.0)
