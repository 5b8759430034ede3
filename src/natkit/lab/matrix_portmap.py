"""Matrix scenarios: asking the NAT for a mapping (ECC report §6.1; PCP
RFC 6887, NAT-PMP RFC 6886). natkit's port-mapping client asks the NAT box's
own PCP/NAT-PMP service for a UDP mapping; behind a single NAT it is public
and a host on the internet reaches the inside host through it; behind NATs
in tandem (a carrier-grade NAT outside the home NAT) the mapped address is
the home NAT's outside, a shared address (RFC 6598), so the client reports
it as not public: the cascaded-NAT case is detected, and indeed nothing
from the internet gets in. (UPnP IGD runs against Debian's miniupnpd in the
namespace lab's tests; the simulated internet has no IGD.)"""

from __future__ import annotations

import asyncio

from natkit.addr import Endpoint
from natkit.errors import NatkitError
from natkit.lab.matrix import Scenario
from natkit.nat.box import NatBox
from natkit.nat.portmap.aio import PortMapServerRunner, map_port, unmap_port
from natkit.nat.portmap.server import PcpServer
from natkit.nat.presets import PORT_RESTRICTED_CONE, carrier_grade_tandem
from natkit.net.sim import Internet, Link, run_virtual
from natkit.packet import IpProto
from natkit.rng import seeded_rng

GATEWAY = Endpoint("192.168.1.1", 5351)
PEER = Endpoint("198.51.100.9", 4000)
HOME_PUBLIC = "203.0.113.50"
APP_PORT = 5000

CLAIM = "ECC §6.1: a mapping obtained from a single NAT; the cascaded-NAT case is detected"


async def map_and_reach(method: str, *, tandem: bool, seed: int = 0) -> str:
    """Ask the home NAT for a mapping of port 5000 by ``method``, then send
    to it from the internet: ``"public, reached"`` behind one NAT,
    ``"not public (cascaded), not reached"`` behind two; else what differed."""
    loop = asyncio.get_running_loop()
    net = Internet(seed=seed, default_link=Link(delay=0.01))
    outer = None
    public = HOME_PUBLIC
    if tandem:
        cgn, home = carrier_grade_tandem()
        outer = net.add_middlebox(
            cgn.name,
            cgn.build(rng=seeded_rng(seed + 2), trace=False),
            list(cgn.public_ips),
            inside=list(cgn.inside_networks),
        )
        public = home.public_ips[0]
    box = NatBox(
        PORT_RESTRICTED_CONE,
        [public],
        inside_networks=["192.168.1.0/24"],
        rng=seeded_rng(seed + 3),
        trace=False,
    )
    nat = net.add_middlebox(
        "nat", box, [public], inside="192.168.1.0/24", behind=outer, gateway_ip=GATEWAY.host
    )
    assert nat.gateway_host is not None
    inside = net.add_host("inside", behind=nat)
    outside = net.add_host("peer", [PEER.host])
    got: asyncio.Future[bytes] = loop.create_future()

    def on_app_datagram(data: bytes, remote: Endpoint) -> None:
        if not got.done():
            got.set_result(data)

    app = await inside.stack.open_udp(Endpoint("0.0.0.0", APP_PORT), on_app_datagram)
    peer = await outside.stack.open_udp(PEER, lambda d, r: None)
    try:
        async with PortMapServerRunner(
            nat.gateway_host.stack, PcpServer(box, now=loop.time()), GATEWAY
        ):
            try:
                mapping = await map_port(
                    inside.stack, GATEWAY, IpProto.UDP, APP_PORT, methods=(method,), timeout=5.0
                )
            except NatkitError as exc:
                return f"no mapping: {exc}"
            peer.send(b"hello through the mapping", mapping.external)
            try:
                async with asyncio.timeout(3.0):
                    reached = await got == b"hello through the mapping"
            except TimeoutError:
                reached = False
            await unmap_port(inside.stack, mapping)
    finally:
        app.close()
        peer.close()
    kind = "public" if mapping.public else "not public (cascaded)"
    return f"{kind}, {'reached' if reached else 'not reached'}"


def _case(method: str, *, tandem: bool) -> Scenario:
    def run(seed: int) -> str:
        return run_virtual(lambda: map_and_reach(method, tandem=tandem, seed=seed))

    where = "cascaded" if tandem else "single-nat"
    return Scenario(
        name=f"portmap/{method}-{where}",
        group="portmap",
        claim=CLAIM,
        expected="not public (cascaded), not reached" if tandem else "public, reached",
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [
        _case("pcp", tandem=False),
        _case("natpmp", tandem=False),
        _case("pcp", tandem=True),
        _case("natpmp", tandem=True),
    ]
