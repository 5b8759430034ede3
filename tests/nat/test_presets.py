"""Named NAT presets: the founding documents' names, RFC 4787 terms, and
what each one does to real packets."""

from __future__ import annotations

import random

import pytest

from natkit.addr import AddressClass, Endpoint, address_class
from natkit.nat.box import NatBehavior, NatBox, PortAssignment, Side
from natkit.nat.events import DropReason, PacketDropped
from natkit.nat.presets import (
    CARRIER_GRADE,
    PRESETS,
    carrier_grade_tandem,
    classic_nat_type,
    preset,
)
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.packet import IpProto, Packet, TcpFlags

PUBLIC = "203.0.113.5"
LAN = "192.168.1.0/24"
HOST = Endpoint("192.168.1.2", 5000)
HOST2 = Endpoint("192.168.1.3", 5000)
SERVER = Endpoint("198.51.100.1", 3478)
SERVER_OTHER_PORT = Endpoint("198.51.100.1", 3479)
SERVER_OTHER_IP = Endpoint("198.51.100.2", 3478)

EIM, APDM = Mapping.ENDPOINT_INDEPENDENT, Mapping.ADDRESS_AND_PORT_DEPENDENT
EIF, ADF, APDF = (
    Filtering.ENDPOINT_INDEPENDENT,
    Filtering.ADDRESS_DEPENDENT,
    Filtering.ADDRESS_AND_PORT_DEPENDENT,
)


def box_for(name: str, seed: int = 0) -> NatBox:
    return NatBox(preset(name), [PUBLIC], inside_networks=[LAN], rng=random.Random(seed))


def send(box: NatBox, packet: Packet, side: Side, now: float = 0.0) -> list[tuple[Side, Packet]]:
    box.receive_packet(packet, side=side, now=now)
    return box.packets_to_send(now=now)


def udp(src: Endpoint, dst: Endpoint) -> Packet:
    return Packet(IpProto.UDP, src, dst, b"x")


def tcp(src: Endpoint, dst: Endpoint, flags: TcpFlags) -> Packet:
    return Packet(IpProto.TCP, src, dst, b"", flags)


def mapped_source(box: NatBox, src: Endpoint, dst: Endpoint) -> Endpoint | None:
    sent = send(box, udp(src, dst), Side.INSIDE)
    return sent[0][1].src if sent else None


def test_presets_carry_the_names_the_founding_documents_use() -> None:
    assert list(PRESETS) == [
        "open",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
        "symmetric-udp-firewall",
        "udp-blocked",
        "web-only",
        "linux-masquerade",
        "carrier-grade",
    ]
    assert all(isinstance(b, NatBehavior) for b in PRESETS.values())


def test_unknown_preset_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown NAT preset 'cone'") as info:
        preset("cone")
    for name in PRESETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "translate", "mapping", "filtering"),
    [
        pytest.param("open", False, None, None, id="open"),
        pytest.param("full-cone", True, EIM, EIF, id="full-cone"),
        pytest.param("restricted-cone", True, EIM, ADF, id="restricted-cone"),
        pytest.param("port-restricted-cone", True, EIM, APDF, id="port-restricted-cone"),
        pytest.param("symmetric", True, APDM, APDF, id="symmetric"),
        pytest.param("symmetric-udp-firewall", False, None, APDF, id="symmetric-udp-firewall"),
        pytest.param("linux-masquerade", True, EIM, APDF, id="linux-masquerade"),
        pytest.param("carrier-grade", True, EIM, APDF, id="carrier-grade"),
    ],
)
def test_presets_in_rfc_4787_terms(
    name: str, translate: bool, mapping: Mapping | None, filtering: Filtering | None
) -> None:
    behavior = preset(name)
    assert behavior.translate is translate
    if translate:
        assert behavior.mapping is mapping
    assert behavior.filtering is filtering


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("open", NatType.OPEN_INTERNET, id="open"),
        pytest.param("full-cone", NatType.FULL_CONE, id="full-cone"),
        pytest.param("restricted-cone", NatType.RESTRICTED_CONE, id="restricted-cone"),
        pytest.param(
            "port-restricted-cone", NatType.PORT_RESTRICTED_CONE, id="port-restricted-cone"
        ),
        pytest.param("symmetric", NatType.SYMMETRIC, id="symmetric"),
        pytest.param(
            "symmetric-udp-firewall", NatType.SYMMETRIC_UDP_FIREWALL, id="symmetric-udp-firewall"
        ),
        pytest.param("udp-blocked", NatType.UDP_BLOCKED, id="udp-blocked"),
        pytest.param("web-only", NatType.UDP_BLOCKED, id="web-only"),
        pytest.param("linux-masquerade", NatType.PORT_RESTRICTED_CONE, id="linux-masquerade"),
        pytest.param("carrier-grade", NatType.PORT_RESTRICTED_CONE, id="carrier-grade"),
    ],
)
def test_classic_nat_type_of_each_preset(name: str, expected: NatType) -> None:
    assert classic_nat_type(preset(name)) is expected


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        pytest.param(
            NatBehavior(translate=False, filtering=EIF), NatType.OPEN_INTERNET, id="eif-firewall"
        ),
        pytest.param(
            NatBehavior(allowed_outbound=frozenset({(IpProto.TCP, 443)})),
            NatType.UDP_BLOCKED,
            id="tcp-only-allow-list",
        ),
        pytest.param(
            NatBehavior(allowed_outbound=frozenset({(IpProto.UDP, 3478)}), filtering=EIF),
            NatType.FULL_CONE,
            id="udp-allow-list",
        ),
        pytest.param(
            NatBehavior(mapping=Mapping.ADDRESS_DEPENDENT), NatType.SYMMETRIC, id="adm-is-symmetric"
        ),
    ],
)
def test_classic_nat_type_of_other_behaviors(behavior: NatBehavior, expected: NatType) -> None:
    assert classic_nat_type(behavior) is expected


# -- what the presets do to packets ----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "from_other_port", "from_other_ip"),
    [
        pytest.param("full-cone", True, True, id="full-cone"),
        pytest.param("restricted-cone", True, False, id="restricted-cone"),
        pytest.param("port-restricted-cone", False, False, id="port-restricted-cone"),
        pytest.param("symmetric", False, False, id="symmetric"),
        pytest.param("linux-masquerade", False, False, id="linux-masquerade"),
    ],
)
def test_cone_presets_filter_as_named(
    name: str, from_other_port: bool, from_other_ip: bool
) -> None:
    box = box_for(name)
    mapped = mapped_source(box, HOST, SERVER)
    assert mapped is not None

    def reaches(remote: Endpoint) -> bool:
        return [side for side, _ in send(box, udp(remote, mapped), Side.OUTSIDE)] == [Side.INSIDE]

    assert reaches(SERVER)
    assert reaches(SERVER_OTHER_PORT) is from_other_port
    assert reaches(SERVER_OTHER_IP) is from_other_ip


def test_symmetric_preset_maps_each_destination_to_a_new_random_port() -> None:
    box = box_for("symmetric")
    ports = {mapped_source(box, HOST, Endpoint("198.51.100.1", p)) for p in range(1, 6)}
    assert len(ports) == 5
    assert Endpoint(PUBLIC, HOST.port) not in ports


def test_linux_masquerade_preserves_ports_and_does_not_hairpin() -> None:
    box = box_for("linux-masquerade")
    assert mapped_source(box, HOST, SERVER) == Endpoint(PUBLIC, HOST.port)
    assert mapped_source(box, HOST, SERVER_OTHER_IP) == Endpoint(PUBLIC, HOST.port)
    assert send(box, udp(HOST2, Endpoint(PUBLIC, HOST.port)), Side.INSIDE) == []
    assert box.behavior.udp_mapping_timeout == 30.0


@pytest.mark.parametrize(
    ("name", "side", "packet", "passes"),
    [
        pytest.param("open", Side.OUTSIDE, udp(SERVER, HOST), True, id="open-unsolicited-in"),
        pytest.param(
            "symmetric-udp-firewall", Side.OUTSIDE, udp(SERVER, HOST), False, id="fw-unsolicited"
        ),
        pytest.param(
            "symmetric-udp-firewall", Side.INSIDE, udp(HOST, SERVER), True, id="fw-out-untranslated"
        ),
        pytest.param("udp-blocked", Side.INSIDE, udp(HOST, SERVER), False, id="udp-blocked-udp"),
        pytest.param(
            "udp-blocked", Side.INSIDE, tcp(HOST, SERVER, TcpFlags.SYN), True, id="udp-blocked-tcp"
        ),
        pytest.param(
            "web-only",
            Side.INSIDE,
            tcp(HOST, Endpoint("198.51.100.1", 443), TcpFlags.SYN),
            True,
            id="web-only-443",
        ),
        pytest.param(
            "web-only",
            Side.INSIDE,
            tcp(HOST, Endpoint("198.51.100.1", 80), TcpFlags.SYN),
            True,
            id="web-only-80",
        ),
        pytest.param(
            "web-only",
            Side.INSIDE,
            tcp(HOST, Endpoint("198.51.100.1", 5060), TcpFlags.SYN),
            False,
            id="web-only-5060",
        ),
        pytest.param(
            "web-only", Side.INSIDE, udp(HOST, Endpoint("198.51.100.1", 443)), False, id="web-udp"
        ),
    ],
)
def test_firewall_presets(name: str, side: Side, packet: Packet, passes: bool) -> None:
    box = box_for(name)
    sent = send(box, packet, side)
    assert sent == (
        [(Side.OUTSIDE if side is Side.INSIDE else Side.INSIDE, packet)] if passes else []
    )


def test_web_only_reports_blocked_udp() -> None:
    box = box_for("web-only")
    send(box, udp(HOST, SERVER), Side.INSIDE)
    assert box.next_event() == PacketDropped(
        side=Side.INSIDE, packet=udp(HOST, SERVER), reason=DropReason.BLOCKED
    )


# -- NATs in tandem ------------------------------------------------------------------


def test_carrier_grade_nat_follows_rfc_6888() -> None:
    assert CARRIER_GRADE.mapping is EIM
    assert CARRIER_GRADE.hairpinning is True
    assert CARRIER_GRADE.port_assignment is PortAssignment.RANDOM


def test_tandem_layers_sit_where_the_rfcs_put_them() -> None:
    cgn, home = carrier_grade_tandem()
    assert cgn.inside_networks == ("100.64.0.0/10",)
    assert all(address_class(ip) is AddressClass.DOCUMENTATION for ip in cgn.public_ips)
    assert address_class(home.public_ips[0]) is AddressClass.SHARED
    assert home.behavior == preset("port-restricted-cone")
    assert carrier_grade_tandem(preset("symmetric"))[1].behavior == preset("symmetric")


def test_a_packet_crosses_both_nats_of_a_tandem_and_its_reply_comes_back() -> None:
    cgn_layer, home_layer = carrier_grade_tandem("full-cone")
    cgn = cgn_layer.build(rng=random.Random(1))
    home = home_layer.build(rng=random.Random(2), trace=False)
    assert (cgn.name, home.name) == ("cgn", "home")
    [(_, mid)] = send(home, udp(HOST, SERVER), Side.INSIDE)
    assert mid.src == Endpoint("100.64.0.2", HOST.port)
    [(_, public)] = send(cgn, mid, Side.INSIDE)
    assert public.src.host in cgn_layer.public_ips
    [(_, back)] = send(cgn, udp(SERVER, public.src), Side.OUTSIDE)
    [(side, delivered)] = send(home, back, Side.OUTSIDE)
    assert (side, delivered) == (Side.INSIDE, udp(SERVER, HOST))


def test_a_port_mapping_from_the_home_nat_is_not_public_in_a_tandem() -> None:
    """ECC report §6.1: the inner NAT grants an address the outer one hides."""
    _, home_layer = carrier_grade_tandem()
    home = home_layer.build(rng=random.Random(0))
    granted = home.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=3600.0, now=0.0)
    assert granted is not None
    assert address_class(granted.host) is AddressClass.SHARED
