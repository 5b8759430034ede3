"""The asyncio front on the OS stack, on loopback: map_port and unmap_port
against natkit's own NAT-PMP and PCP servers (over a fake box) and a small
fake IGD; the server runner; default gateway discovery."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.portmap.aio import (
    PortMappingError,
    PortMapServerRunner,
    default_gateway,
    http_exchange,
    map_port,
    search_igd,
    ssdp_destinations_for,
    unmap_port,
)
from natkit.nat.portmap.client import PcpClientConfig
from natkit.nat.portmap.http import HttpRequest
from natkit.nat.portmap.mapping import PortMapMethod, PortMapping
from natkit.nat.portmap.server import NatPmpServer, PcpServer
from natkit.nat.portmap.ssdp import SSDP_MULTICAST, SsdpSearchConfig
from natkit.net.os_stack import OsStack
from natkit.net.stack import StreamConnection
from natkit.packet import IpProto

from .fake_igd import FakeIgd
from .fakes import PUBLIC_IP, FakeBox

LOOPBACK = Endpoint("127.0.0.1", 0)
FAST_SSDP = SsdpSearchConfig(mx=1, sends=1, window=0.15)


@pytest.fixture
def stack() -> OsStack:
    return OsStack()


async def serve(stack: OsStack, core: NatPmpServer | PcpServer) -> PortMapServerRunner:
    runner = PortMapServerRunner(stack, core, LOOPBACK)
    await runner.start()
    return runner


@pytest.fixture
async def igd(stack: OsStack) -> AsyncIterator[FakeIgd]:
    fake = FakeIgd(stack)
    await fake.start()
    try:
        yield fake
    finally:
        fake.close()


async def test_map_port_by_pcp(stack: OsStack) -> None:
    box = FakeBox()
    async with PortMapServerRunner(stack, PcpServer(box, now=0.0), LOOPBACK) as runner:
        mapping = await map_port(
            stack, runner.local_endpoint, IpProto.UDP, 5000, lifetime=600, external_port=6000
        )
        assert mapping.method == PortMapMethod.PCP
        assert mapping.external == Endpoint(PUBLIC_IP, 6000)
        assert mapping.internal == Endpoint("127.0.0.1", 5000)
        assert mapping.lifetime == 600 and mapping.public
        assert mapping.gateway == runner.local_endpoint and mapping.nonce is not None
        assert box.mappings[(IpProto.UDP, Endpoint("127.0.0.1", 5000))][0] == mapping.external
        await unmap_port(stack, mapping)
        assert box.mappings == {}


async def test_map_port_by_natpmp(stack: OsStack) -> None:
    box = FakeBox()
    runner = await serve(stack, NatPmpServer(box, now=0.0))
    try:
        mapping = await map_port(
            stack, runner.local_endpoint, IpProto.TCP, 5000, methods=["natpmp"]
        )
        assert mapping.method == PortMapMethod.NATPMP
        assert mapping.external == Endpoint(PUBLIC_IP, 40000) and mapping.public
        await unmap_port(stack, mapping)
        assert box.mappings == {}
    finally:
        runner.close()
        await runner.wait_closed()


async def test_pcp_falls_back_to_natpmp_within_one_attempt(stack: OsStack) -> None:
    box = FakeBox()
    async with PortMapServerRunner(stack, NatPmpServer(box, now=0.0), LOOPBACK) as runner:
        mapping = await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000)
    assert mapping.method == PortMapMethod.NATPMP


@pytest.mark.parametrize("public_ip", ["100.64.0.9", "10.0.0.1"], ids=["shared", "private"])
async def test_cascaded_nat_mapping_is_reported_not_public(stack: OsStack, public_ip: str) -> None:
    box = FakeBox(public=[public_ip])
    async with PortMapServerRunner(stack, PcpServer(box, now=0.0), LOOPBACK) as runner:
        mapping = await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000)
    assert mapping.external.host == public_ip and not mapping.public


async def test_every_method_failing_raises_with_reasons(stack: OsStack) -> None:
    box = FakeBox(refuse=True)
    async with PortMapServerRunner(stack, PcpServer(box, now=0.0), LOOPBACK) as runner:
        with pytest.raises(PortMappingError) as info:
            await map_port(
                stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp", "natpmp"]
            )
    assert info.value.attempts == (
        (PortMapMethod.PCP, "PCP NO_RESOURCES"),
        (PortMapMethod.NATPMP, "NAT-PMP OUT_OF_RESOURCES"),
    )


async def test_unanswered_method_times_out_and_the_next_is_tried(
    stack: OsStack, igd: FakeIgd
) -> None:
    silent = await stack.open_udp(LOOPBACK, lambda d, r: None)
    try:
        mapping = await map_port(
            stack,
            silent.local_endpoint,
            IpProto.UDP,
            5000,
            methods=["pcp", "natpmp", "upnp"],
            timeout=0.3,
            pcp_config=PcpClientConfig(irt=0.05, rng=random.Random(1)),
            ssdp_destinations=[igd.ssdp_endpoint],
            ssdp_config=FAST_SSDP,
        )
    finally:
        silent.close()
    assert mapping.method == PortMapMethod.UPNP


async def test_map_port_by_upnp_igd1_with_conflict(stack: OsStack, igd: FakeIgd) -> None:
    igd.taken.add(5000)
    mapping = await map_port(
        stack,
        None,
        IpProto.UDP,
        5000,
        methods=["upnp"],
        lifetime=600,
        ssdp_destinations=[igd.ssdp_endpoint],
        ssdp_config=FAST_SSDP,
    )
    assert mapping.method == PortMapMethod.UPNP
    assert mapping.external == Endpoint("203.0.113.7", 5001) and mapping.public
    assert mapping.service_type == "urn:schemas-upnp-org:service:WANIPConnection:1"
    assert igd.mappings == {("UDP", 5001): ("127.0.0.1", 5000, 600)}
    assert igd.calls == ["GET", "GetExternalIPAddress", "AddPortMapping", "AddPortMapping"]
    await unmap_port(stack, mapping)
    assert igd.mappings == {}


async def test_map_port_by_upnp_igd2(stack: OsStack, igd: FakeIgd) -> None:
    igd.version = 2
    igd.external_ip = "100.64.3.3"
    mapping = await map_port(
        stack,
        None,
        IpProto.TCP,
        5000,
        methods=["upnp"],
        ssdp_destinations=[igd.ssdp_endpoint],
        ssdp_config=FAST_SSDP,
    )
    assert igd.calls[-1] == "AddAnyPortMapping"
    assert mapping.external == Endpoint("100.64.3.3", 5000) and not mapping.public


async def test_upnp_refusal_is_reported(stack: OsStack, igd: FakeIgd) -> None:
    igd.refuse = 501
    with pytest.raises(PortMappingError) as info:
        await map_port(
            stack,
            None,
            IpProto.UDP,
            5000,
            methods=["upnp"],
            ssdp_destinations=[igd.ssdp_endpoint],
            ssdp_config=FAST_SSDP,
        )
    ((method, reason),) = info.value.attempts
    assert method == PortMapMethod.UPNP
    assert reason == "AddPortMapping: Action Failed (UPnP error 501)"


async def test_upnp_deleting_twice_counts_as_done(stack: OsStack, igd: FakeIgd) -> None:
    mapping = await map_port(
        stack,
        None,
        IpProto.UDP,
        5000,
        methods=["upnp"],
        ssdp_destinations=[igd.ssdp_endpoint],
        ssdp_config=FAST_SSDP,
    )
    await unmap_port(stack, mapping)
    await unmap_port(stack, mapping)  # 714 NoSuchEntryInArray: gone either way


async def test_no_igd_answering(stack: OsStack) -> None:
    silent = await stack.open_udp(LOOPBACK, lambda d, r: None)
    try:
        with pytest.raises(PortMappingError, match="no Internet Gateway Device answered"):
            await map_port(
                stack,
                None,
                IpProto.UDP,
                5000,
                methods=["upnp"],
                ssdp_destinations=[silent.local_endpoint],
                ssdp_config=FAST_SSDP,
            )
    finally:
        silent.close()


async def test_search_igd_collects_every_answer(stack: OsStack, igd: FakeIgd) -> None:
    found = await search_igd(stack, [igd.ssdp_endpoint], FAST_SSDP)
    assert {d.response.st for d in found} == {
        "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    }


async def test_unmap_refused_raises(stack: OsStack) -> None:
    box = FakeBox()
    async with PortMapServerRunner(stack, PcpServer(box, now=0.0), LOOPBACK) as runner:
        mapping = await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000)
        foreign = dataclasses.replace(mapping, nonce=b"x" * 12)
        with pytest.raises(PortMappingError, match="NOT_AUTHORIZED"):
            await unmap_port(stack, foreign)


async def test_runner_reports_its_endpoint_only_once_started(stack: OsStack) -> None:
    runner = PortMapServerRunner(stack, NatPmpServer(FakeBox(), now=0.0), LOOPBACK)
    with pytest.raises(Exception, match="not started"):
        _ = runner.local_endpoint
    runner.close()
    await runner.wait_closed()


def test_default_gateway_from_the_route_table(tmp_path: Path) -> None:
    table = tmp_path / "route"
    table.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n"
    )
    assert default_gateway(table) == "192.168.1.1"
    table.write_text("Iface\tDestination\tGateway\neth0\t0001A8C0\t00000000\n")
    assert default_gateway(table) is None
    assert default_gateway(tmp_path / "missing") is None
    table.write_text("Iface\tDestination\tGateway\neth0\t00000000\tZZ\n")
    assert default_gateway(table) is None


async def map_by_upnp(stack: OsStack, igd: FakeIgd, **kwargs: object) -> object:
    return await map_port(
        stack,
        None,
        IpProto.UDP,
        5000,
        methods=["upnp"],
        ssdp_destinations=[igd.ssdp_endpoint],
        ssdp_config=FAST_SSDP,
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param({"description_status": 404}, "HTTP 404", id="description-404"),
        pytest.param(
            {"description": b"<root><device/></root>"},
            "no WAN connection service",
            id="no-wan-service",
        ),
        pytest.param({"description": b"<root>"}, "bad XML", id="bad-description"),
        pytest.param({"soap_garbage": True}, "no GetExternalIPAddressResponse", id="bad-soap"),
    ],
)
async def test_upnp_device_problems_are_reported(
    stack: OsStack, igd: FakeIgd, setup: dict[str, object], reason: str
) -> None:
    for name, value in setup.items():
        setattr(igd, name, value)
    with pytest.raises(PortMappingError, match=reason):
        await map_by_upnp(stack, igd)


async def test_upnp_silent_http_server_times_out(stack: OsStack, igd: FakeIgd) -> None:
    igd.hang = True
    with pytest.raises(PortMappingError, match=r"no gateway mapped within 0\.3 s"):
        await map_by_upnp(stack, igd, timeout=0.3)


async def test_http_exchange_reports_a_bad_response(stack: OsStack) -> None:
    def on_connection(conn: StreamConnection) -> None:
        conn.set_handler(lambda data: None)
        conn.write(b"NOT HTTP AT ALL\r\n\r\n")

    listener = await stack.listen_stream(LOOPBACK, on_connection)
    try:
        url = f"http://127.0.0.1:{listener.local_endpoint.port}/"
        with pytest.raises(MalformedMessageError):
            await http_exchange(stack, HttpRequest(method="GET", url=url))
    finally:
        listener.close()


async def test_upnp_unmap_failures(stack: OsStack, igd: FakeIgd) -> None:
    mapping = await map_by_upnp(stack, igd)
    assert isinstance(mapping, PortMapping)
    igd.refuse_delete = 606
    with pytest.raises(PortMappingError, match="deletion refused"):
        await unmap_port(stack, mapping)
    igd.close()
    with pytest.raises(PortMappingError, match="deletion failed"):
        await unmap_port(stack, mapping)
    with pytest.raises(PortMappingError, match="without its control URL"):
        await unmap_port(stack, dataclasses.replace(mapping, control_url=None))


async def test_unanswered_unmap_raises(stack: OsStack) -> None:
    silent = await stack.open_udp(LOOPBACK, lambda d, r: None)
    mapping = PortMapping(
        proto=IpProto.UDP,
        internal=Endpoint("127.0.0.1", 5000),
        external=Endpoint(PUBLIC_IP, 40000),
        lifetime=60,
        method=PortMapMethod.NATPMP,
        gateway=silent.local_endpoint,
        public=True,
    )
    try:
        with pytest.raises(PortMappingError, match="deletion unanswered"):
            await unmap_port(stack, mapping, timeout=0.2)
    finally:
        silent.close()


async def test_pcp_alone_does_not_fall_back(stack: OsStack) -> None:
    async with PortMapServerRunner(stack, NatPmpServer(FakeBox(), now=0.0), LOOPBACK) as runner:
        with pytest.raises(PortMappingError, match="speaks only NAT-PMP"):
            await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp"])


async def test_natpmp_is_not_tried_twice_after_a_fallback(stack: OsStack) -> None:
    server = NatPmpServer(FakeBox(refuse=True), now=0.0)
    async with PortMapServerRunner(stack, server, LOOPBACK) as runner:
        with pytest.raises(PortMappingError) as info:
            await map_port(
                stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp", "natpmp"]
            )
    assert [m for m, _ in info.value.attempts] == [PortMapMethod.PCP]


async def test_without_a_gateway_only_upnp_can_work(
    stack: OsStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from natkit.nat.portmap import aio

    monkeypatch.setattr(aio, "default_gateway", lambda: None)
    with pytest.raises(PortMappingError) as info:
        await map_port(stack, None, IpProto.UDP, 5000, methods=["pcp", "natpmp"])
    assert info.value.attempts == (
        (PortMapMethod.PCP, "no gateway known"),
        (PortMapMethod.NATPMP, "no gateway known"),
    )


def test_ssdp_destinations() -> None:
    gateway = Endpoint("192.168.1.1", 5351)
    assert ssdp_destinations_for(gateway, None) == [SSDP_MULTICAST, Endpoint("192.168.1.1", 1900)]
    assert ssdp_destinations_for(None, None) == [SSDP_MULTICAST]
    assert ssdp_destinations_for(gateway, [gateway]) == [gateway]


async def test_pcp_renewal_needs_the_previous_mapping(stack: OsStack) -> None:
    box = FakeBox()
    async with PortMapServerRunner(stack, PcpServer(box, now=0.0), LOOPBACK) as runner:
        first = await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp"])
        renewed = await map_port(
            stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp"], previous=first
        )
        assert renewed.external == first.external and renewed.nonce == first.nonce
        # A fresh request is another nonce: the server keeps the mapping its owner's.
        with pytest.raises(PortMappingError, match="NOT_AUTHORIZED"):
            await map_port(stack, runner.local_endpoint, IpProto.UDP, 5000, methods=["pcp"])
