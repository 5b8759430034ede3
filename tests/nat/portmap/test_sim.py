"""map_port on the simulated internet, under virtual time: the NAT box's
own PCP/NAT-PMP service grants a mapping that an outside host can use, and
behind NATs in tandem the mapping is reported as not public (ECC §6.1)."""

from __future__ import annotations

import asyncio

import pytest

from natkit.addr import Endpoint
from natkit.nat.box import NatBox
from natkit.nat.portmap.aio import PortMapServerRunner, map_port, unmap_port
from natkit.nat.portmap.mapping import PortMapMethod, PortMapping
from natkit.nat.portmap.server import PcpServer
from natkit.nat.presets import PORT_RESTRICTED_CONE, carrier_grade_tandem
from natkit.net.sim import Internet, Link, run_virtual
from natkit.packet import IpProto
from natkit.rng import seeded_rng

GATEWAY = Endpoint("192.168.1.1", 5351)
PEER = Endpoint("198.51.100.9", 4000)


async def scenario(
    *, tandem: bool, methods: tuple[str, ...]
) -> tuple[PortMapping, tuple[bytes, Endpoint], bool]:
    loop = asyncio.get_running_loop()
    net = Internet(seed=1, default_link=Link(delay=0.01))
    outer = None
    public = "203.0.113.50"
    if tandem:
        cgn, home = carrier_grade_tandem()
        outer = net.add_middlebox(
            cgn.name,
            cgn.build(rng=seeded_rng(2), trace=False),
            list(cgn.public_ips),
            inside=list(cgn.inside_networks),
        )
        public = home.public_ips[0]
    box = NatBox(
        PORT_RESTRICTED_CONE,
        [public],
        inside_networks=["192.168.1.0/24"],
        rng=seeded_rng(3),
        trace=False,
    )
    nat = net.add_middlebox(
        "nat", box, [public], inside="192.168.1.0/24", behind=outer, gateway_ip=GATEWAY.host
    )
    assert nat.gateway_host is not None
    inside = net.add_host("inside", behind=nat)
    outside = net.add_host("peer", [PEER.host])
    got: asyncio.Future[tuple[bytes, Endpoint]] = loop.create_future()

    def on_app_datagram(data: bytes, remote: Endpoint) -> None:
        if not got.done():
            got.set_result((data, remote))

    app = await inside.stack.open_udp(Endpoint("0.0.0.0", 5000), on_app_datagram)
    peer = await outside.stack.open_udp(PEER, lambda d, r: None)
    server = PcpServer(box, now=loop.time())
    async with PortMapServerRunner(nat.gateway_host.stack, server, GATEWAY):
        mapping = await map_port(inside.stack, GATEWAY, IpProto.UDP, 5000, methods=methods)
        peer.send(b"hello", mapping.external)
        try:
            async with asyncio.timeout(5.0):
                received = await got
            reached = True
        except TimeoutError:
            received, reached = (b"", PEER), False
        await unmap_port(inside.stack, mapping)
    app.close()
    peer.close()
    return mapping, received, reached


@pytest.mark.parametrize(
    ("methods", "method"),
    [
        pytest.param(("pcp",), PortMapMethod.PCP, id="pcp"),
        pytest.param(("natpmp",), PortMapMethod.NATPMP, id="natpmp"),
    ],
)
def test_outside_host_reaches_the_inside_host_through_the_mapping(
    methods: tuple[str, ...], method: PortMapMethod
) -> None:
    mapping, (data, src), reached = run_virtual(scenario(tandem=False, methods=methods))
    assert mapping.method == method
    assert mapping.external.host == "203.0.113.50" and mapping.public
    assert mapping.internal.port == 5000
    assert reached and (data, src) == (b"hello", PEER)


def test_behind_nats_in_tandem_the_mapping_is_not_public() -> None:
    mapping, _, reached = run_virtual(scenario(tandem=True, methods=("pcp",)))
    assert mapping.external.host == "100.64.0.2"
    assert not mapping.public
    # The carrier-grade NAT outside knows nothing of it: the peer cannot get in.
    assert not reached
