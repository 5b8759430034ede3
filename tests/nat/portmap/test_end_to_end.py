"""Clients and servers together in memory, over a fake box and the real
NatBox: grants, renewals, deletions, server restarts, PCP's fallback to
NAT-PMP, and the public verdict of a cascaded NAT."""

from __future__ import annotations

import random

import pytest

from natkit.addr import Endpoint
from natkit.nat.portmap.client import NatPmpClient, PcpClient, PcpClientConfig
from natkit.nat.portmap.events import (
    ExternalAddressReceived,
    FellBackToNatPmp,
    MappingDeleted,
    MappingFailed,
    MappingGranted,
    ServerStateLost,
)
from natkit.nat.portmap.mapping import PortMapMethod, is_public_address
from natkit.nat.portmap.natpmp import NatPmpResult
from natkit.nat.portmap.pcp import PcpResult
from natkit.nat.portmap.server import NatPmpServer, PcpServer, PcpServerConfig
from natkit.packet import IpProto

from .fakes import CLIENT_IP, GATEWAY, PUBLIC_IP, FakeBox, events_of, pump

INTERNAL = Endpoint(CLIENT_IP, 5000)


def pcp_client(**config: object) -> PcpClient:
    cfg = PcpClientConfig(rng=random.Random(1), **config)  # type: ignore[arg-type]
    return PcpClient(GATEWAY, local_ip=CLIENT_IP, config=cfg)


def advance(client: NatPmpClient | PcpClient, server: object, until: float) -> float:
    """Fire the client's timers up to ``until``, exchanging with ``server``."""
    now = 0.0
    while (deadline := client.get_timer()) is not None and deadline <= until:
        now = deadline
        client.handle_timer(now=now)
        pump(client, server, now=now)  # type: ignore[arg-type]
    return now


@pytest.mark.parametrize(
    ("make_client", "make_server", "method"),
    [
        pytest.param(
            lambda: NatPmpClient(GATEWAY, local_ip=CLIENT_IP),
            lambda box: NatPmpServer(box, now=0.0),
            PortMapMethod.NATPMP,
            id="natpmp",
        ),
        pytest.param(pcp_client, lambda box: PcpServer(box, now=0.0), PortMapMethod.PCP, id="pcp"),
        pytest.param(
            lambda: NatPmpClient(GATEWAY, local_ip=CLIENT_IP),
            lambda box: PcpServer(box, now=0.0),
            PortMapMethod.NATPMP,
            id="natpmp-to-pcp-server",
        ),
    ],
)
def test_map_renew_unmap(make_client, make_server, method: PortMapMethod) -> None:  # type: ignore[no-untyped-def]
    box = FakeBox()
    client = make_client()
    server = make_server(box)
    client.map(IpProto.UDP, 5000, now=0.0, external_port=6000, lifetime=600)
    pump(client, server, now=0.0)
    grant = MappingGranted(
        proto=IpProto.UDP,
        internal=INTERNAL,
        external=Endpoint(PUBLIC_IP, 6000),
        lifetime=600,
        method=method,
    )
    assert [e for e in events_of(client) if not isinstance(e, ExternalAddressReceived)] == [grant]
    assert box.mappings[(IpProto.UDP, INTERNAL)][0] == Endpoint(PUBLIC_IP, 6000)
    # Renewals keep the mapping alive past several lifetimes.
    advance(client, server, until=2000.0)
    renewals = events_of(client)
    assert len(renewals) >= 3
    assert all(isinstance(e, MappingGranted) and e.renewed for e in renewals)
    assert box.mappings[(IpProto.UDP, INTERNAL)][1] > 2000.0
    client.unmap(IpProto.UDP, 5000, now=2001.0)
    pump(client, server, now=2001.0)
    assert events_of(client) == [
        MappingDeleted(proto=IpProto.UDP, internal=INTERNAL, method=method)
    ]
    assert box.mappings == {}
    assert client.get_timer() is None


def test_pcp_falls_back_to_natpmp_only_server() -> None:
    box = FakeBox()
    client = pcp_client()
    server = NatPmpServer(box, now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0, lifetime=600)
    pump(client, server, now=0.0)
    events = events_of(client)
    assert events == [
        FellBackToNatPmp(server=GATEWAY),
        ExternalAddressReceived(address=PUBLIC_IP, epoch=0),
        MappingGranted(
            proto=IpProto.UDP,
            internal=INTERNAL,
            external=Endpoint(PUBLIC_IP, 40000),
            lifetime=600,
            method=PortMapMethod.NATPMP,
        ),
    ]
    client.unmap(IpProto.UDP, 5000, now=1.0)
    pump(client, server, now=1.0)
    assert isinstance(events_of(client)[0], MappingDeleted)
    assert box.mappings == {}


def test_pcp_server_without_natpmp_refuses_natpmp_client() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    server = PcpServer(FakeBox(), PcpServerConfig(natpmp=False), now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    pump(client, server, now=0.0)
    # PCP's answer is not NAT-PMP: the client just keeps retransmitting.
    assert events_of(client) == []
    assert client.get_timer() == 0.25


def test_server_reboot_is_detected_and_mappings_restored() -> None:
    box = FakeBox()
    client = pcp_client()
    server = PcpServer(box, now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.map(IpProto.UDP, 5001, now=0.0)
    pump(client, server, now=0.0)
    events_of(client)
    # The gateway reboots at t=100 and forgets everything.
    box.mappings.clear()
    server = PcpServer(box, now=100.0)
    client.map(IpProto.TCP, 7000, now=200.0)
    pump(client, server, now=200.0)
    events = events_of(client)
    assert ServerStateLost(epoch=100, method=PortMapMethod.PCP) in events
    assert {(p, i.port) for p, i in box.mappings} == {
        (IpProto.UDP, 5000),
        (IpProto.UDP, 5001),
        (IpProto.TCP, 7000),
    }


def test_refusal_travels_end_to_end() -> None:
    client = pcp_client()
    server = PcpServer(FakeBox(refuse=True), now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    pump(client, server, now=0.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.code == PcpResult.NO_RESOURCES


def test_natpmp_refusal_without_public_address() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    server = NatPmpServer(FakeBox(public=[]), now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    pump(client, server, now=0.0)
    codes = {getattr(e, "code", None) for e in events_of(client)}
    assert codes == {NatPmpResult.NETWORK_FAILURE}


@pytest.mark.parametrize(
    ("public_ip", "public"),
    [
        pytest.param("100.64.7.1", False, id="shared-cgn"),
        pytest.param("10.0.0.1", False, id="private"),
        pytest.param("192.168.100.1", False, id="private-192"),
        pytest.param("203.0.113.7", True, id="documentation-is-lab-internet"),
        pytest.param("100.128.77.1", True, id="global"),
    ],
)
def test_inner_nat_of_a_cascade_grants_a_mapping_that_is_not_public(
    public_ip: str, public: bool
) -> None:
    client = pcp_client()
    server = PcpServer(FakeBox(public=[public_ip]), now=0.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    pump(client, server, now=0.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingGranted) and event.external.host == public_ip
    assert is_public_address(event.external.host) is public


def test_with_the_real_nat_box() -> None:
    box_mod = pytest.importorskip("natkit.nat.box")
    presets = pytest.importorskip("natkit.nat.presets")
    from natkit.packet import Packet

    box = box_mod.NatBox(
        presets.PORT_RESTRICTED_CONE,
        ["203.0.113.50"],
        inside_networks=["192.168.1.0/24"],
        rng=random.Random(3),
    )
    for make in (pcp_client, lambda: NatPmpClient(GATEWAY, local_ip=CLIENT_IP)):
        client = make()
        server = PcpServer(box, now=0.0)
        client.map(IpProto.UDP, 5000, now=0.0, lifetime=600)
        pump(client, server, now=0.0)
        (event,) = [e for e in events_of(client) if isinstance(e, MappingGranted)]
        assert event.external.host == "203.0.113.50"
        # An outside host reaches the inside host through the mapping.
        outsider = Endpoint("198.51.100.9", 3478)
        box.receive_packet(
            Packet(IpProto.UDP, outsider, event.external, b"hello"),
            side=box_mod.Side.OUTSIDE,
            now=1.0,
        )
        (out,) = [p for _, p in box.packets_to_send(now=1.0)]
        assert out.dst == INTERNAL and out.payload == b"hello"
        client.unmap(IpProto.UDP, 5000, now=2.0)
        pump(client, server, now=2.0)
        assert isinstance(events_of(client)[-1], MappingDeleted)
        box.receive_packet(
            Packet(IpProto.UDP, outsider, event.external, b"again"),
            side=box_mod.Side.OUTSIDE,
            now=3.0,
        )
        assert [p for _, p in box.packets_to_send(now=3.0) if p.dst == INTERNAL] == []
