"""Port-mapped ICE candidates in the simulated internet (ECC report §6.1,
issue 6): two agents behind symmetric NATs need a relay, unless one NAT
maps a port when asked (PCP, RFC 6887; NAT-PMP, RFC 6886): the agent's
gatherer asks for it, and the mapped address gives a direct path."""

from __future__ import annotations

import asyncio

import pytest

from natkit.addr import Endpoint
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.lab.ice_connect import (
    STUN_SERVER,
    TURN_IPS,
    exchange_data,
    ice_servers,
    start_relay,
    start_stun_server,
    stop_turn_server,
    wire_signalling,
)
from natkit.nat.box import NatBox
from natkit.nat.portmap.aio import PortMapServerRunner
from natkit.nat.portmap.server import PcpServer
from natkit.nat.presets import SYMMETRIC
from natkit.net.sim import Internet, Link, run_virtual
from natkit.rng import seeded_rng

GATEWAY_A = Endpoint("192.168.1.1", 5351)


async def call(
    methods: tuple[str, ...],
) -> tuple[CandidateType, CandidateType, int, bool, float, bool]:
    """Connect two agents behind symmetric NATs, NAT a offering PCP/NAT-PMP;
    the selected pair's types, the mappings a's gatherer holds, whether data
    flowed, the seconds to connect, and whether b's side of the pair is the
    address NAT a mapped."""
    loop = asyncio.get_running_loop()
    net = Internet(seed=4, default_link=Link(delay=0.005))
    stun = await start_stun_server(net.add_host("stun", STUN_SERVER.host).stack)
    relay = await start_relay(net.add_host("turn", TURN_IPS[0]).stack, TURN_IPS[0])
    boxes, hosts = [], []
    for n, public in enumerate(("198.51.100.1", "198.51.100.2"), start=1):
        box = NatBox(SYMMETRIC, [public], inside_networks=[f"192.168.{n}.0/24"], rng=seeded_rng(n))
        nat = net.add_middlebox(
            f"nat-{n}", box, [public], inside=f"192.168.{n}.0/24", gateway_ip=f"192.168.{n}.1"
        )
        boxes.append((box, nat))
        hosts.append(net.add_host(f"host-{n}", behind=nat))
    box_a, nat_a = boxes[0]
    assert nat_a.gateway_host is not None
    stun_servers, specs = ice_servers(TURN_IPS[:1], tls=False)
    agents = []
    for i, host in enumerate(hosts):
        gather = GatherConfig(
            stun_servers=stun_servers,
            turn_servers=specs,
            port_mapping=methods if i == 0 else (),
            port_mapping_gateway=GATEWAY_A,
            rng=seeded_rng(10 + i),
        )
        agents.append(
            AsyncIceAgent(
                host.stack,
                controlling=i == 0,
                config=IceConfig(rng=seeded_rng(20 + i)),
                gather_config=gather,
            )
        )
    a, b = agents
    server = PcpServer(box_a, now=loop.time())
    try:
        async with PortMapServerRunner(nat_a.gateway_host.stack, server, GATEWAY_A):
            wire_signalling(a, b, delay=0.02)
            started = loop.time()
            async with asyncio.timeout(20):
                await asyncio.gather(a.start(), b.start())
                await asyncio.gather(a.connect(), b.connect())
            elapsed = loop.time() - started
            await asyncio.sleep(1.5)  # a direct pair that succeeds late replaces a relay
            pair = a.selected_pair(1)
            assert pair is not None
            data_ok = await exchange_data(a, b)
            assert a.gatherer is not None
            mapped = {m.external for m in a.gatherer.mappings.values()}
            b_pair = b.selected_pair(1)
            assert b_pair is not None
            local, remote = pair
            return (
                local.type,
                remote.type,
                len(mapped),
                data_ok,
                elapsed,
                b_pair[1].address in mapped,
            )
    finally:
        for agent in agents:
            await agent.close(timeout=1.0)
        await stop_turn_server(relay)
        stun.close()
        await stun.wait_closed()


@pytest.mark.parametrize("methods", [("pcp",), ("natpmp",), ("pcp", "natpmp", "upnp")])
def test_a_port_mapped_candidate_turns_a_relayed_pair_direct(methods: tuple[str, ...]) -> None:
    local, remote, mappings, data_ok, elapsed, via_mapping = run_virtual(lambda: call(methods))
    assert mappings == 1 and data_ok and via_mapping
    assert CandidateType.RELAYED not in (local, remote), (local, remote)
    assert elapsed < 3.0


def test_without_port_mapping_the_same_nats_need_the_relay() -> None:
    local, remote, mappings, data_ok, _, _ = run_virtual(lambda: call(()))
    assert mappings == 0 and data_ok
    assert CandidateType.RELAYED in (local, remote)


def test_a_nat_that_maps_nothing_delays_gathering_by_the_port_mapping_timeouts_only() -> None:
    async def main() -> tuple[float, int, int]:
        from natkit.ice.aio.gatherer import AsyncGatherer

        loop = asyncio.get_running_loop()
        net = Internet(seed=5, default_link=Link(delay=0.005))
        box = NatBox(SYMMETRIC, ["198.51.100.1"], inside_networks=["192.168.1.0/24"])
        nat = net.add_middlebox(
            "nat", box, ["198.51.100.1"], inside="192.168.1.0/24", gateway_ip="192.168.1.1"
        )
        host = net.add_host("host", behind=nat)
        config = GatherConfig(
            port_mapping=("pcp", "natpmp"),
            port_mapping_gateway=GATEWAY_A,
            port_mapping_timeout=0.5,
            rng=seeded_rng(1),
        )
        async with AsyncGatherer(host.stack, config) as gatherer:
            started = loop.time()
            candidates = await gatherer.gather()
            return loop.time() - started, len(candidates), len(gatherer.mappings)

    elapsed, candidates, mappings = run_virtual(main)
    assert (candidates, mappings) == (1, 0)  # the host candidate alone
    assert 0.4 < elapsed <= 1.1  # held for the answer that never came, no longer
