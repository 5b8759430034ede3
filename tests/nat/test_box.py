"""The NAT behaviour core: RFC 4787 (UDP) and RFC 5382 (TCP) behaviour as data.

Every test drives a :class:`NatBox` only through its public shape
(``receive_packet`` / ``packets_to_send`` / ``get_timer`` / ``handle_timer`` /
``next_event`` and the port-mapping calls), with explicit ``now`` values and
seeded generators.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.nat.box import (
    MappingInfo,
    NatBehavior,
    NatBox,
    Pooling,
    PortAssignment,
    Refresh,
    Side,
)
from natkit.nat.events import (
    Direction,
    DropReason,
    MappingCreated,
    MappingExpired,
    MappingRemoved,
    NatEvent,
    PacketDropped,
    PacketHairpinned,
    PacketTranslated,
)
from natkit.nat.types import Filtering, Mapping
from natkit.packet import IcmpError, IpProto, Packet, TcpFlags, encode_ipv4

PUBLIC = "203.0.113.5"
PUBLIC2 = "203.0.113.6"
LAN = "192.168.1.0/24"
HOST = Endpoint("192.168.1.2", 5000)
HOST2 = Endpoint("192.168.1.3", 5000)
REMOTE = Endpoint("198.51.100.1", 3478)
REMOTE_OTHER_PORT = Endpoint("198.51.100.1", 3479)
REMOTE_OTHER_IP = Endpoint("198.51.100.2", 3478)

EIM, ADM, APDM = (
    Mapping.ENDPOINT_INDEPENDENT,
    Mapping.ADDRESS_DEPENDENT,
    Mapping.ADDRESS_AND_PORT_DEPENDENT,
)
EIF, ADF, APDF = (
    Filtering.ENDPOINT_INDEPENDENT,
    Filtering.ADDRESS_DEPENDENT,
    Filtering.ADDRESS_AND_PORT_DEPENDENT,
)
SYN, ACK, FIN, RST = TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.RST
NONE = TcpFlags(0)

FIREWALL = NatBehavior(translate=False, filtering=APDF)


def make_box(
    behavior: NatBehavior | None = None,
    *,
    public_ips: tuple[str, ...] = (PUBLIC,),
    seed: int = 0,
    trace: bool = True,
    **changes: Any,
) -> NatBox:
    base = behavior if behavior is not None else NatBehavior()
    return NatBox(
        dataclasses.replace(base, **changes),
        public_ips,
        inside_networks=[LAN],
        rng=random.Random(seed),
        trace=trace,
    )


def udp(src: Endpoint, dst: Endpoint, payload: bytes = b"x") -> Packet:
    return Packet(IpProto.UDP, src, dst, payload)


def tcp(src: Endpoint, dst: Endpoint, flags: TcpFlags = NONE) -> Packet:
    return Packet(IpProto.TCP, src, dst, b"", flags)


def deliver(box: NatBox, packet: Packet, side: Side, now: float = 0.0) -> list[tuple[Side, Packet]]:
    box.receive_packet(packet, side=side, now=now)
    return box.packets_to_send(now=now)


def out(box: NatBox, packet: Packet, now: float = 0.0) -> list[tuple[Side, Packet]]:
    return deliver(box, packet, Side.INSIDE, now)


def inn(box: NatBox, packet: Packet, now: float = 0.0) -> list[tuple[Side, Packet]]:
    return deliver(box, packet, Side.OUTSIDE, now)


def external(box: NatBox, src: Endpoint, dst: Endpoint, now: float = 0.0) -> Endpoint:
    """The source an outbound UDP packet from ``src`` to ``dst`` leaves with."""
    [(side, sent)] = out(box, udp(src, dst), now)
    assert side is Side.OUTSIDE
    return sent.src


def events(box: NatBox) -> list[NatEvent]:
    found = []
    while (event := box.next_event()) is not None:
        found.append(event)
    return found


def drops(box: NatBox) -> list[DropReason]:
    return [e.reason for e in events(box) if isinstance(e, PacketDropped)]


def reaches(box: NatBox, remote: Endpoint, mapped: Endpoint, now: float = 0.0) -> bool:
    sent = inn(box, udp(remote, mapped), now)
    return [s for s, _ in sent] == [Side.INSIDE]


# -- mapping (RFC 4787 §4.1) --------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "same_for_other_port", "same_for_other_ip"),
    [
        pytest.param(EIM, True, True, id="endpoint-independent"),
        pytest.param(ADM, True, False, id="address-dependent"),
        pytest.param(APDM, False, False, id="address-and-port-dependent"),
    ],
)
def test_mapping_behavior_decides_when_the_external_endpoint_is_reused(
    mapping: Mapping, same_for_other_port: bool, same_for_other_ip: bool
) -> None:
    box = make_box(mapping=mapping, filtering=EIF)
    first = external(box, HOST, REMOTE)
    assert external(box, HOST, REMOTE) == first
    assert (external(box, HOST, REMOTE_OTHER_PORT) == first) is same_for_other_port
    assert (external(box, HOST, REMOTE_OTHER_IP) == first) is same_for_other_ip


def test_outbound_translation_rewrites_only_the_source() -> None:
    box = make_box()
    packet = Packet(IpProto.UDP, HOST, REMOTE, b"payload", ttl=17)
    [(side, sent)] = out(box, packet)
    assert side is Side.OUTSIDE
    assert sent == packet._replace(src=Endpoint(PUBLIC, HOST.port))


def test_inbound_translation_rewrites_only_the_destination() -> None:
    box = make_box()
    mapped = external(box, HOST, REMOTE)
    reply = Packet(IpProto.UDP, REMOTE, mapped, b"answer", ttl=50)
    assert inn(box, reply) == [(Side.INSIDE, reply._replace(dst=HOST))]


def test_mapping_created_event_names_both_ends() -> None:
    box = make_box()
    mapped = external(box, HOST, REMOTE, now=3.0)
    assert events(box)[0] == MappingCreated(
        proto=IpProto.UDP,
        internal=HOST,
        external=mapped,
        remote=REMOTE,
        explicit=False,
        expires=123.0,
    )


# -- filtering (RFC 4787 §5): every mapping x filtering x remote ---------------------

_REMOTES = {
    "same-endpoint": REMOTE,
    "same-ip-other-port": REMOTE_OTHER_PORT,
    "other-ip": REMOTE_OTHER_IP,
}
_REACHABLE = {
    EIF: {"same-endpoint": True, "same-ip-other-port": True, "other-ip": True},
    ADF: {"same-endpoint": True, "same-ip-other-port": True, "other-ip": False},
    APDF: {"same-endpoint": True, "same-ip-other-port": False, "other-ip": False},
}


@pytest.mark.parametrize(
    ("mapping", "filtering", "remote", "reachable"),
    [
        pytest.param(m, f, _REMOTES[r], ok, id=f"{m}-mapping/{f}-filtering/{r}")
        for m in (EIM, ADM, APDM)
        for f in (EIF, ADF, APDF)
        for r, ok in _REACHABLE[f].items()
    ],
)
def test_filtering_decides_which_remote_reaches_a_mapping(
    mapping: Mapping, filtering: Filtering, remote: Endpoint, reachable: bool
) -> None:
    box = make_box(mapping=mapping, filtering=filtering)
    mapped = external(box, HOST, REMOTE)
    events(box)
    assert reaches(box, remote, mapped) is reachable
    assert drops(box) == ([] if reachable else [DropReason.FILTERED])


def test_filter_opens_for_every_remote_the_mapping_sent_to() -> None:
    box = make_box(filtering=APDF)
    mapped = external(box, HOST, REMOTE)
    assert not reaches(box, REMOTE_OTHER_IP, mapped)
    assert external(box, HOST, REMOTE_OTHER_IP) == mapped
    assert reaches(box, REMOTE_OTHER_IP, mapped)
    assert reaches(box, REMOTE, mapped)


def test_inbound_to_an_unmapped_port_is_dropped_as_no_mapping() -> None:
    box = make_box(filtering=EIF)
    external(box, HOST, REMOTE)
    events(box)
    assert not reaches(box, REMOTE, Endpoint(PUBLIC, 4999))
    assert drops(box) == [DropReason.NO_MAPPING]


# -- port assignment and pooling (RFC 4787 §4.1, §4.2.1) ----------------------------


def test_preserving_keeps_the_internal_port_when_free() -> None:
    box = make_box(port_assignment=PortAssignment.PRESERVING)
    assert external(box, HOST, REMOTE) == Endpoint(PUBLIC, HOST.port)


def test_preserving_falls_back_to_sequential_on_collision() -> None:
    box = make_box(port_assignment=PortAssignment.PRESERVING, port_range=(20000, 20009))
    host = Endpoint("192.168.1.2", 20000)
    assert external(box, host, REMOTE) == Endpoint(PUBLIC, 20000)
    clash = [Endpoint(f"192.168.1.{i}", 20000) for i in (3, 4)]
    assert [external(box, h, REMOTE).port for h in clash] == [20001, 20002]


def test_preserving_does_not_preserve_ports_outside_the_range() -> None:
    box = make_box(port_assignment=PortAssignment.PRESERVING, port_range=(20000, 20009))
    assert external(box, HOST, REMOTE) == Endpoint(PUBLIC, 20000)


def test_sequential_assigns_consecutive_ports_and_wraps() -> None:
    box = make_box(
        mapping=APDM, port_assignment=PortAssignment.SEQUENTIAL, port_range=(20000, 20002)
    )
    remotes = [Endpoint("198.51.100.1", p) for p in (1, 2, 3)]
    assert [external(box, HOST, r).port for r in remotes] == [20000, 20001, 20002]
    # The first mapping expires; the counter wraps round to the freed port.
    assert external(box, HOST, remotes[1], now=100.0).port == 20001
    assert external(box, HOST, remotes[2], now=100.0).port == 20002
    assert external(box, HOST, Endpoint("198.51.100.1", 4), now=130.0).port == 20000


def test_random_ports_lie_in_the_range_and_never_collide() -> None:
    box = make_box(mapping=APDM, port_assignment=PortAssignment.RANDOM, port_range=(40000, 40099))
    ports = [external(box, HOST, Endpoint("198.51.100.1", p)).port for p in range(1, 101)]
    assert len(set(ports)) == 100
    assert all(40000 <= p <= 40099 for p in ports)
    assert ports != sorted(ports)


def test_random_ports_depend_only_on_the_seed() -> None:
    def ports(seed: int) -> list[int]:
        box = make_box(mapping=APDM, port_assignment=PortAssignment.RANDOM, seed=seed)
        return [external(box, HOST, Endpoint("198.51.100.1", p)).port for p in range(1, 20)]

    assert ports(7) == ports(7)
    assert ports(7) != ports(8)


@pytest.mark.parametrize(
    "assignment",
    [pytest.param(a, id=str(a)) for a in PortAssignment],
)
def test_exhausted_port_range_drops_new_mappings(assignment: PortAssignment) -> None:
    box = make_box(mapping=APDM, port_assignment=assignment, port_range=(20000, 20002))
    remotes = [Endpoint("198.51.100.1", p) for p in range(1, 5)]
    ports = {external(box, HOST, r).port for r in remotes[:3]}
    assert ports == {20000, 20001, 20002}
    events(box)
    assert out(box, udp(HOST, remotes[3])) == []
    assert drops(box) == [DropReason.PORTS_EXHAUSTED]


def test_a_port_is_free_again_once_its_mapping_timed_out_even_before_the_timer() -> None:
    box = make_box(port_assignment=PortAssignment.PRESERVING)
    assert external(box, HOST, REMOTE, now=0.0) == Endpoint(PUBLIC, 5000)
    assert external(box, HOST2, REMOTE, now=119.0) == Endpoint(PUBLIC, 1024)
    assert external(box, HOST2.with_port(5001), REMOTE, now=120.0) == Endpoint(PUBLIC, 5001)
    events(box)
    assert external(box, Endpoint("192.168.1.4", 5000), REMOTE, now=120.0) == Endpoint(PUBLIC, 5000)
    assert [type(e) for e in events(box)] == [MappingExpired, MappingCreated, PacketTranslated]


@pytest.mark.parametrize(
    "assignment",
    [pytest.param(a, id=str(a)) for a in (PortAssignment.SEQUENTIAL, PortAssignment.RANDOM)],
)
def test_a_full_port_range_frees_timed_out_mappings_first(assignment: PortAssignment) -> None:
    box = make_box(mapping=APDM, port_assignment=assignment, port_range=(20000, 20001))
    remotes = [Endpoint("198.51.100.1", p) for p in range(1, 4)]
    assert {external(box, HOST, r, now=0.0).port for r in remotes[:2]} == {20000, 20001}
    assert external(box, HOST, remotes[2], now=120.0).port in {20000, 20001}
    assert [type(e) for e in events(box)].count(MappingExpired) == 2


def test_paired_pooling_keeps_each_host_on_one_public_address() -> None:
    box = make_box(mapping=APDM, pooling=Pooling.PAIRED, public_ips=(PUBLIC, PUBLIC2))
    remotes = [Endpoint("198.51.100.1", p) for p in range(1, 9)]
    first = {external(box, HOST, r).host for r in remotes}
    second = {external(box, HOST2, r).host for r in remotes}
    assert first == {PUBLIC}
    assert second == {PUBLIC2}


def test_arbitrary_pooling_spreads_one_host_over_public_addresses() -> None:
    box = make_box(mapping=APDM, pooling=Pooling.ARBITRARY, public_ips=(PUBLIC, PUBLIC2))
    remotes = [Endpoint("198.51.100.1", p) for p in range(1, 17)]
    assert {external(box, HOST, r).host for r in remotes} == {PUBLIC, PUBLIC2}


def test_arbitrary_pooling_preserves_a_port_on_another_address() -> None:
    box = make_box(pooling=Pooling.ARBITRARY, public_ips=(PUBLIC, PUBLIC2))
    first = external(box, HOST, REMOTE)
    second = external(box, HOST2, REMOTE)
    assert first.port == second.port == 5000
    assert {first.host, second.host} == {PUBLIC, PUBLIC2}


def test_paired_pooling_falls_back_to_another_port_not_another_address() -> None:
    box = make_box(pooling=Pooling.PAIRED, public_ips=(PUBLIC, PUBLIC2), port_range=(5000, 5009))
    hosts = [Endpoint("192.168.1.2", 5000), Endpoint("192.168.1.3", 5000)]
    first = external(box, hosts[0], REMOTE)
    # Paired: the next host gets the other address, with its own port.
    assert external(box, hosts[1], REMOTE) == Endpoint(PUBLIC2, 5000)
    # Another socket of the first host clashes on its paired address.
    assert external(box, Endpoint("192.168.1.2", 5001), REMOTE) == Endpoint(first.host, 5001)
    assert external(box, Endpoint("192.168.1.2", 5000), REMOTE_OTHER_IP) == first


def test_udp_and_tcp_have_separate_port_spaces() -> None:
    box = make_box()
    assert external(box, HOST, REMOTE) == Endpoint(PUBLIC, 5000)
    [(_, sent)] = out(box, tcp(HOST, REMOTE, SYN))
    assert sent.src == Endpoint(PUBLIC, 5000)


# -- lifetime and refresh (RFC 4787 §4.3) -------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "at", "alive"),
    [
        pytest.param(120.0, 119.999, True, id="default-just-before"),
        pytest.param(120.0, 120.0, False, id="default-exactly-at"),
        pytest.param(30.0, 29.999, True, id="30s-just-before"),
        pytest.param(30.0, 30.0, False, id="30s-exactly-at"),
    ],
)
def test_udp_mapping_dies_exactly_at_its_timeout(timeout: float, at: float, alive: bool) -> None:
    box = make_box(udp_mapping_timeout=timeout, filtering=EIF)
    mapped = external(box, HOST, REMOTE)
    events(box)
    assert reaches(box, REMOTE, mapped, now=at) is alive
    assert drops(box) == ([] if alive else [DropReason.EXPIRED])


def test_timer_reports_and_handles_expiry() -> None:
    box = make_box(udp_mapping_timeout=30.0)
    mapped = external(box, HOST, REMOTE, now=1.0)
    events(box)
    assert box.get_timer() == 31.0
    box.handle_timer(now=30.9)
    assert events(box) == []
    box.handle_timer(now=31.0)
    assert events(box) == [
        MappingExpired(proto=IpProto.UDP, internal=HOST, external=mapped, explicit=False)
    ]
    assert box.get_timer() is None
    assert box.mappings(now=31.0) == []


def test_outbound_refresh_moves_the_timer() -> None:
    box = make_box(udp_mapping_timeout=30.0)
    external(box, HOST, REMOTE, now=0.0)
    external(box, HOST, REMOTE, now=20.0)
    assert box.get_timer() == 50.0
    box.handle_timer(now=30.0)  # an early wake-up only reschedules
    assert box.get_timer() == 50.0
    assert [type(e) for e in events(box)] == [MappingCreated, PacketTranslated, PacketTranslated]


def test_an_expired_mapping_is_replaced_by_a_new_one() -> None:
    box = make_box(mapping=APDM, port_assignment=PortAssignment.SEQUENTIAL)
    first = external(box, HOST, REMOTE, now=0.0)
    events(box)
    second = external(box, HOST, REMOTE, now=120.0)
    assert second != first
    kinds = [type(e) for e in events(box)]
    assert kinds == [MappingExpired, MappingCreated, PacketTranslated]


@pytest.mark.parametrize(
    ("refresh", "alive_at_150"),
    [
        pytest.param(Refresh.OUTBOUND, False, id="outbound-only"),
        pytest.param(Refresh.BOTH, True, id="both-directions"),
    ],
)
def test_inbound_packets_refresh_only_with_refresh_both(
    refresh: Refresh, alive_at_150: bool
) -> None:
    box = make_box(refresh=refresh, filtering=APDF)
    mapped = external(box, HOST, REMOTE, now=0.0)
    assert reaches(box, REMOTE, mapped, now=100.0)
    assert reaches(box, REMOTE, mapped, now=150.0) is alive_at_150


def test_filtered_inbound_packets_never_refresh() -> None:
    box = make_box(refresh=Refresh.BOTH, filtering=APDF)
    mapped = external(box, HOST, REMOTE, now=0.0)
    assert not reaches(box, REMOTE_OTHER_IP, mapped, now=100.0)
    assert not reaches(box, REMOTE, mapped, now=120.0)


# -- hairpinning (RFC 4787 §6) -------------------------------------------------------


def test_hairpin_delivers_with_the_senders_external_source() -> None:
    box = make_box(hairpinning=True, filtering=EIF)
    mapped1 = external(box, HOST, REMOTE)
    mapped2 = external(box, HOST2, REMOTE)
    events(box)
    packet = udp(HOST, mapped2, b"hello")
    sent = out(box, packet)
    after = Packet(IpProto.UDP, mapped1, HOST2, b"hello")
    assert sent == [(Side.INSIDE, after)]
    assert events(box) == [PacketHairpinned(before=packet, after=after)]


@pytest.mark.parametrize(
    ("filtering", "target_sent_first", "delivered"),
    [
        pytest.param(EIF, False, True, id="eif-unsolicited"),
        pytest.param(APDF, False, False, id="apdf-unsolicited"),
        pytest.param(APDF, True, True, id="apdf-after-target-sent-to-sender"),
        pytest.param(ADF, True, True, id="adf-after-target-sent-to-sender"),
    ],
)
def test_hairpin_obeys_the_targets_filter(
    filtering: Filtering, target_sent_first: bool, delivered: bool
) -> None:
    box = make_box(hairpinning=True, filtering=filtering)
    mapped1 = external(box, HOST, REMOTE)
    mapped2 = external(box, HOST2, REMOTE)
    if target_sent_first:
        out(box, udp(HOST2, mapped1))  # filtered at HOST's mapping, opens HOST2's
    events(box)
    sent = out(box, udp(HOST, mapped2))
    assert (sent == [(Side.INSIDE, udp(mapped1, HOST2))]) is delivered
    if not delivered:
        assert drops(box) == [DropReason.FILTERED]


def test_hairpin_disabled_drops_before_making_a_mapping() -> None:
    box = make_box(hairpinning=False, filtering=EIF)
    mapped2 = external(box, HOST2, REMOTE)
    events(box)
    assert out(box, udp(HOST, mapped2)) == []
    assert events(box) == [
        PacketDropped(
            side=Side.INSIDE, packet=udp(HOST, mapped2), reason=DropReason.HAIRPIN_DISABLED
        )
    ]


def test_hairpin_to_an_unmapped_port_is_no_mapping() -> None:
    box = make_box(hairpinning=True, filtering=EIF)
    assert out(box, udp(HOST, Endpoint(PUBLIC, 7777))) == []
    assert drops(box) == [DropReason.NO_MAPPING]


def test_hairpin_with_address_dependent_mapping_uses_the_mapping_toward_the_nat() -> None:
    box = make_box(hairpinning=True, mapping=APDM, filtering=EIF)
    mapped2 = external(box, HOST2, REMOTE)
    to_remote = external(box, HOST, REMOTE)
    [(_, sent)] = out(box, udp(HOST, mapped2))
    assert sent.src.host == PUBLIC
    assert sent.src != to_remote  # a new mapping, keyed by the hairpin destination
    assert sent.dst == HOST2


def test_hairpin_works_for_tcp() -> None:
    box = make_box(hairpinning=True, filtering=EIF)
    [(_, syn)] = out(box, tcp(HOST2, REMOTE, SYN))
    mapped2 = syn.src
    [(_, syn)] = out(box, tcp(HOST2, REMOTE, SYN))  # retransmission: same mapping
    assert syn.src == mapped2
    sent = out(box, tcp(HOST, mapped2, SYN))
    assert [(s, p.dst, p.flags) for s, p in sent] == [(Side.INSIDE, HOST2, SYN)]


def test_hairpin_needs_the_senders_mapping_first() -> None:
    box = make_box(hairpinning=True, filtering=EIF)
    [(_, syn)] = out(box, tcp(HOST2, REMOTE, SYN))
    assert out(box, tcp(HOST, syn.src, ACK)) == []
    assert drops(box) == [DropReason.NO_MAPPING]


# -- TCP (RFC 5382) ------------------------------------------------------------------


def _tcp_box(**changes: Any) -> NatBox:
    return make_box(**changes)


def _open_connection(box: NatBox, now: float = 0.0) -> Endpoint:
    [(_, syn)] = out(box, tcp(HOST, REMOTE, SYN), now)
    assert [s for s, _ in inn(box, tcp(REMOTE, syn.src, SYN | ACK), now)] == [Side.INSIDE]
    assert [s for s, _ in out(box, tcp(HOST, REMOTE, ACK), now)] == [Side.OUTSIDE]
    return syn.src


def test_tcp_mapping_starts_transitory_at_the_syn() -> None:
    box = _tcp_box()
    out(box, tcp(HOST, REMOTE, SYN), now=10.0)
    assert box.get_timer() == 10.0 + 240.0


def test_tcp_mapping_is_established_after_syns_both_ways() -> None:
    box = _tcp_box()
    _open_connection(box, now=10.0)
    assert box.get_timer() == 10.0 + 7440.0


@pytest.mark.parametrize(
    ("closing", "timer"),
    [
        pytest.param([("out", FIN | ACK)], 100.0 + 7440.0, id="fin-one-way-stays-established"),
        pytest.param([("out", FIN | ACK), ("in", FIN | ACK)], 100.0 + 240.0, id="fin-both-ways"),
        pytest.param([("in", RST)], 100.0 + 240.0, id="rst-inbound"),
        pytest.param([("out", RST)], 100.0 + 240.0, id="rst-outbound"),
    ],
)
def test_tcp_close_makes_the_mapping_transitory(
    closing: list[tuple[str, TcpFlags]], timer: float
) -> None:
    box = _tcp_box()
    mapped = _open_connection(box, now=0.0)
    for direction, flags in closing:
        if direction == "out":
            assert out(box, tcp(HOST, REMOTE, flags), now=100.0)
        else:
            assert inn(box, tcp(REMOTE, mapped, flags), now=100.0)
    assert box.get_timer() == timer


@pytest.mark.parametrize(
    ("established", "at", "alive"),
    [
        pytest.param(True, 7439.0, True, id="established-just-before"),
        pytest.param(True, 7440.0, False, id="established-exactly-at"),
        pytest.param(False, 239.0, True, id="transitory-just-before"),
        pytest.param(False, 240.0, False, id="transitory-exactly-at"),
    ],
)
def test_tcp_idle_timeouts(established: bool, at: float, alive: bool) -> None:
    box = _tcp_box()
    if established:
        mapped = _open_connection(box)
        probe = tcp(REMOTE, mapped, ACK)
    else:
        [(_, syn)] = out(box, tcp(HOST, REMOTE, SYN))
        probe = tcp(REMOTE, syn.src, SYN | ACK)
    events(box)
    assert bool(inn(box, probe, now=at)) is alive
    assert drops(box) == ([] if alive else [DropReason.EXPIRED])


def test_tcp_needs_a_syn_to_create_a_mapping() -> None:
    box = _tcp_box()
    assert out(box, tcp(HOST, REMOTE, ACK)) == []
    assert drops(box) == [DropReason.NO_MAPPING]


def test_inbound_syn_to_no_mapping_is_dropped_silently_by_default() -> None:
    box = _tcp_box()
    assert inn(box, tcp(REMOTE, Endpoint(PUBLIC, 5000), SYN)) == []
    assert drops(box) == [DropReason.NO_MAPPING]
    assert box.get_timer() is None


def test_inbound_syn_through_an_endpoint_independent_filter_opens_a_connection() -> None:
    box = _tcp_box(filtering=EIF)
    mapped = _open_connection(box)
    events(box)
    assert inn(box, tcp(REMOTE_OTHER_IP, mapped, ACK)) == []
    assert drops(box) == [DropReason.NO_CONNECTION]
    assert inn(box, tcp(REMOTE_OTHER_IP, mapped, SYN)) == [
        (Side.INSIDE, tcp(REMOTE_OTHER_IP, HOST, SYN))
    ]
    assert inn(box, tcp(REMOTE_OTHER_IP, mapped, ACK)) == [
        (Side.INSIDE, tcp(REMOTE_OTHER_IP, HOST, ACK))
    ]


def test_tcp_filtering_follows_the_filtering_setting() -> None:
    box = _tcp_box(filtering=APDF)
    mapped = _open_connection(box)
    events(box)
    assert inn(box, tcp(REMOTE_OTHER_PORT, mapped, SYN)) == []
    assert drops(box) == [DropReason.FILTERED]


def test_outbound_tcp_without_a_connection_through_a_live_mapping_is_dropped() -> None:
    box = _tcp_box()
    _open_connection(box)
    events(box)
    assert out(box, tcp(HOST, REMOTE_OTHER_IP, ACK)) == []
    assert drops(box) == [DropReason.NO_CONNECTION]


def test_a_new_syn_reopens_a_closed_connection() -> None:
    box = _tcp_box()
    mapped = _open_connection(box)
    inn(box, tcp(REMOTE, mapped, RST), now=10.0)
    assert box.get_timer() == 250.0
    _open_connection(box, now=20.0)
    assert box.get_timer() == 20.0 + 7440.0


def test_a_tcp_mapping_lives_as_long_as_its_longest_connection() -> None:
    box = _tcp_box(filtering=EIF)
    mapped = _open_connection(box, now=0.0)
    # A second connection through the same endpoint-independent mapping.
    out(box, tcp(HOST, REMOTE_OTHER_IP, SYN), now=50.0)
    inn(box, tcp(REMOTE_OTHER_IP, mapped, SYN | ACK), now=50.0)
    # The first closes; the second keeps the mapping established.
    inn(box, tcp(REMOTE, mapped, RST), now=60.0)
    assert box.get_timer() == 50.0 + 7440.0
    events(box)
    assert inn(box, tcp(REMOTE, mapped, ACK), now=300.0) == []
    assert drops(box) == [DropReason.NO_CONNECTION]
    assert inn(box, tcp(REMOTE_OTHER_IP, mapped, ACK), now=300.0)


def test_closing_the_only_connection_brings_the_mapping_timer_forward() -> None:
    box = _tcp_box()
    mapped = _open_connection(box, now=0.0)
    assert box.get_timer() == 7440.0
    inn(box, tcp(REMOTE, mapped, RST), now=100.0)
    assert box.get_timer() == 340.0
    box.handle_timer(now=340.0)
    assert [type(e) for e in events(box)][-1] is MappingExpired
    assert box.get_timer() is None


def test_tcp_refresh_outbound_only_ignores_plain_inbound_packets() -> None:
    box = _tcp_box(refresh=Refresh.OUTBOUND)
    mapped = _open_connection(box, now=0.0)
    inn(box, tcp(REMOTE, mapped, ACK), now=1000.0)
    assert box.get_timer() == 7440.0
    box = _tcp_box(refresh=Refresh.BOTH)
    mapped = _open_connection(box, now=0.0)
    inn(box, tcp(REMOTE, mapped, ACK), now=1000.0)
    assert box.get_timer() == 1000.0 + 7440.0


# -- firewalls and policies ----------------------------------------------------------


def test_firewall_forwards_without_translating() -> None:
    box = make_box(FIREWALL)
    host = Endpoint("192.168.1.2", 40000)
    packet = udp(host, REMOTE)
    assert out(box, packet) == [(Side.OUTSIDE, packet)]
    reply = udp(REMOTE, host)
    assert inn(box, reply) == [(Side.INSIDE, reply)]
    created = [e for e in events(box) if isinstance(e, MappingCreated)]
    assert [(e.internal, e.external) for e in created] == [(host, host)]


@pytest.mark.parametrize(
    ("remote", "reason"),
    [
        pytest.param(REMOTE_OTHER_PORT, DropReason.FILTERED, id="other-port-filtered"),
        pytest.param(REMOTE_OTHER_IP, DropReason.FILTERED, id="other-ip-filtered"),
    ],
)
def test_symmetric_udp_firewall_filters_by_address_and_port(
    remote: Endpoint, reason: DropReason
) -> None:
    box = make_box(FIREWALL)
    out(box, udp(HOST, REMOTE))
    events(box)
    assert inn(box, udp(remote, HOST)) == []
    assert drops(box) == [reason]


def test_firewall_drops_unsolicited_inbound() -> None:
    box = make_box(FIREWALL)
    assert inn(box, udp(REMOTE, HOST)) == []
    assert drops(box) == [DropReason.NO_MAPPING]


def test_firewall_ignores_the_mapping_setting() -> None:
    box = make_box(FIREWALL, mapping=APDM)
    assert external(box, HOST, REMOTE) == HOST
    assert external(box, HOST, REMOTE_OTHER_IP) == HOST
    assert len(box.mappings(now=0.0)) == 1


def test_open_internet_passes_everything_and_keeps_no_state() -> None:
    box = make_box(NatBehavior(translate=False, filtering=None))
    assert out(box, udp(HOST, REMOTE)) == [(Side.OUTSIDE, udp(HOST, REMOTE))]
    assert inn(box, udp(REMOTE_OTHER_IP, HOST2)) == [(Side.INSIDE, udp(REMOTE_OTHER_IP, HOST2))]
    assert inn(box, tcp(REMOTE, HOST2, SYN)) == [(Side.INSIDE, tcp(REMOTE, HOST2, SYN))]
    assert box.mappings(now=0.0) == []
    assert box.get_timer() is None


@pytest.mark.parametrize(
    ("side", "packet", "passes"),
    [
        pytest.param(Side.INSIDE, udp(HOST, REMOTE), False, id="udp-out"),
        pytest.param(Side.OUTSIDE, udp(REMOTE, HOST), False, id="udp-in"),
        pytest.param(Side.INSIDE, tcp(HOST, REMOTE, SYN), True, id="tcp-out"),
    ],
)
def test_udp_blocked_blocks_udp_both_ways(side: Side, packet: Packet, passes: bool) -> None:
    box = make_box(FIREWALL, udp_blocked=True)
    assert bool(deliver(box, packet, side)) is passes
    assert drops(box) == ([] if passes else [DropReason.BLOCKED])


def test_udp_blocked_nat_blocks_udp_too() -> None:
    box = make_box(udp_blocked=True)
    assert out(box, udp(HOST, REMOTE)) == []
    assert inn(box, udp(REMOTE, Endpoint(PUBLIC, 5000))) == []
    assert drops(box) == [DropReason.BLOCKED, DropReason.BLOCKED]


WEB = frozenset({(IpProto.TCP, 80), (IpProto.TCP, 443)})


@pytest.mark.parametrize(
    ("packet", "passes"),
    [
        pytest.param(tcp(HOST, Endpoint("198.51.100.1", 443), SYN), True, id="tcp-443"),
        pytest.param(tcp(HOST, Endpoint("198.51.100.1", 80), SYN), True, id="tcp-80"),
        pytest.param(tcp(HOST, Endpoint("198.51.100.1", 22), SYN), False, id="tcp-22"),
        pytest.param(udp(HOST, Endpoint("198.51.100.1", 443)), False, id="udp-443"),
        pytest.param(udp(HOST, Endpoint("198.51.100.1", 53)), False, id="udp-53"),
    ],
)
def test_allow_list_passes_only_listed_outbound_traffic(packet: Packet, passes: bool) -> None:
    box = make_box(FIREWALL, allowed_outbound=WEB)
    assert bool(out(box, packet)) is passes
    assert drops(box) == ([] if passes else [DropReason.BLOCKED])


def test_allow_listed_connection_gets_its_replies() -> None:
    box = make_box(FIREWALL, allowed_outbound=WEB)
    server = Endpoint("198.51.100.1", 443)
    out(box, tcp(HOST, server, SYN))
    assert inn(box, tcp(server, HOST, SYN | ACK)) == [(Side.INSIDE, tcp(server, HOST, SYN | ACK))]


# -- ICMP ----------------------------------------------------------------------------


def _icmp_of(packet: Packet, source: str) -> Packet:
    return Packet(
        IpProto.ICMP,
        Endpoint(source, 0),
        Endpoint(packet.src.host, 0),
        encode_ipv4(packet)[:28],
        icmp=IcmpError.PORT_UNREACHABLE,
    )


@pytest.mark.parametrize(
    ("icmp", "prepare", "reason"),
    [
        pytest.param(True, False, DropReason.NO_MAPPING, id="on-no-mapping"),
        pytest.param(True, True, DropReason.FILTERED, id="on-filtered"),
        pytest.param(False, False, DropReason.NO_MAPPING, id="off-no-mapping"),
        pytest.param(False, True, DropReason.FILTERED, id="off-filtered"),
    ],
)
def test_icmp_port_unreachable_for_refused_udp(
    icmp: bool, prepare: bool, reason: DropReason
) -> None:
    box = make_box(icmp_on_closed=icmp)
    if prepare:
        external(box, HOST, REMOTE)
        events(box)
    probe = udp(REMOTE_OTHER_IP, Endpoint(PUBLIC, 5000))
    sent = inn(box, probe)
    assert sent == ([(Side.OUTSIDE, _icmp_of(probe, PUBLIC))] if icmp else [])
    assert drops(box) == [reason]


def test_icmp_quotes_the_ip_header_and_the_ports() -> None:
    box = make_box(icmp_on_closed=True)
    probe = udp(REMOTE, Endpoint(PUBLIC, 5000))
    [(_, error)] = inn(box, probe)
    assert len(error.payload) == 28
    assert error.payload[12:20] == bytes([198, 51, 100, 1, 203, 0, 113, 5])
    assert error.payload[20:24] == (3478).to_bytes(2, "big") + (5000).to_bytes(2, "big")


def test_icmp_for_an_expired_mapping() -> None:
    box = make_box(icmp_on_closed=True, filtering=EIF)
    mapped = external(box, HOST, REMOTE)
    probe = udp(REMOTE, mapped)
    assert inn(box, probe, now=120.0) == [(Side.OUTSIDE, _icmp_of(probe, PUBLIC))]


def test_icmp_for_a_refused_hairpin_goes_back_inside() -> None:
    box = make_box(icmp_on_closed=True, hairpinning=True)
    probe = udp(HOST, Endpoint(PUBLIC, 7777))
    assert out(box, probe) == [(Side.INSIDE, _icmp_of(probe, PUBLIC))]


def test_unsolicited_syn_gets_its_icmp_only_after_the_hold() -> None:
    box = make_box(icmp_on_closed=True)
    syn = tcp(REMOTE, Endpoint(PUBLIC, 5000), SYN)
    assert inn(box, syn, now=10.0) == []
    inn(box, syn, now=12.0)  # a retransmission does not restart the hold
    assert box.get_timer() == 16.0
    box.handle_timer(now=15.9)
    assert box.packets_to_send(now=15.9) == []
    box.handle_timer(now=16.0)
    assert box.packets_to_send(now=16.0) == [(Side.OUTSIDE, _icmp_of(syn, PUBLIC))]
    assert box.get_timer() is None


def test_unsolicited_syn_answered_by_an_outbound_syn_is_dropped_silently() -> None:
    """RFC 5382 REQ-4: a simultaneous open through an address-and-port-
    dependent filter must not be killed by the NAT's ICMP."""
    box = make_box(icmp_on_closed=True, filtering=APDF)
    [(_, first)] = out(box, tcp(HOST, REMOTE, SYN), now=0.0)
    mapped = first.src
    inn(box, tcp(REMOTE_OTHER_IP, mapped, SYN), now=1.0)  # filtered, held
    assert box.get_timer() == 7.0
    assert out(box, tcp(HOST, REMOTE_OTHER_IP, SYN), now=2.0)
    assert box.get_timer() == 242.0
    box.handle_timer(now=7.0)
    assert box.packets_to_send(now=7.0) == []


def test_timer_is_the_earlier_of_expiry_and_held_syn() -> None:
    box = make_box(icmp_on_closed=True, udp_mapping_timeout=5.0)
    external(box, HOST, REMOTE, now=0.0)
    inn(box, tcp(REMOTE, Endpoint(PUBLIC, 6000), SYN), now=0.0)
    assert box.get_timer() == 5.0
    box.handle_timer(now=5.0)
    assert box.get_timer() == 6.0


# -- port mappings (NAT-PMP / PCP) -----------------------------------------------------


def test_port_mapping_is_reachable_from_anyone() -> None:
    box = make_box(mapping=APDM, filtering=APDF)
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert granted == Endpoint(PUBLIC, HOST.port)
    for remote in (REMOTE, REMOTE_OTHER_PORT, REMOTE_OTHER_IP):
        assert inn(box, udp(remote, granted)) == [(Side.INSIDE, udp(remote, HOST))]
    assert events(box)[0] == MappingCreated(
        proto=IpProto.UDP, internal=HOST, external=granted, remote=None, explicit=True, expires=60.0
    )


def test_outbound_traffic_uses_the_port_mapping() -> None:
    box = make_box(mapping=APDM, port_assignment=PortAssignment.RANDOM)
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert external(box, HOST, REMOTE) == granted
    assert external(box, HOST, REMOTE_OTHER_IP) == granted


@pytest.mark.parametrize(
    ("at", "alive"),
    [pytest.param(59.999, True, id="just-before"), pytest.param(60.0, False, id="exactly-at")],
)
def test_port_mapping_expires_after_its_lifetime_whatever_the_traffic(
    at: float, alive: bool
) -> None:
    box = make_box()
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert granted is not None
    external(box, HOST, REMOTE, now=50.0)
    assert reaches(box, REMOTE_OTHER_IP, granted, now=at) is alive


def test_port_mapping_expiry_is_reported_by_the_timer() -> None:
    box = make_box()
    granted = box.add_port_mapping(IpProto.TCP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert granted is not None
    assert box.get_timer() == 60.0
    events(box)
    box.handle_timer(now=60.0)
    assert events(box) == [
        MappingExpired(proto=IpProto.TCP, internal=HOST, external=granted, explicit=True)
    ]


def test_port_mapping_renewal_keeps_the_endpoint_and_sets_the_lifetime() -> None:
    box = make_box()
    first = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    again = box.add_port_mapping(IpProto.UDP, HOST, external_port=7000, lifetime=100.0, now=30.0)
    assert again == first
    assert box.get_timer() == 130.0
    box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=10.0, now=40.0)
    assert box.get_timer() == 50.0


def test_port_mapping_after_expiry_is_a_new_one() -> None:
    box = make_box()
    box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=10.0, now=0.0)
    events(box)
    again = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=10.0, now=10.0)
    assert again == Endpoint(PUBLIC, HOST.port)
    assert [type(e) for e in events(box)] == [MappingExpired, MappingCreated]


def test_outbound_traffic_after_a_port_mapping_expired_gets_a_dynamic_mapping() -> None:
    box = make_box(filtering=APDF)
    box.add_port_mapping(IpProto.UDP, HOST, external_port=7000, lifetime=10.0, now=0.0)
    events(box)
    assert external(box, HOST, REMOTE, now=10.0) == Endpoint(PUBLIC, HOST.port)
    assert [type(e) for e in events(box)] == [MappingExpired, MappingCreated, PacketTranslated]
    assert not reaches(box, REMOTE_OTHER_IP, Endpoint(PUBLIC, HOST.port), now=11.0)


def test_port_mapping_grants_a_suggested_free_port() -> None:
    box = make_box()
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=7000, lifetime=60.0, now=0.0)
    assert granted == Endpoint(PUBLIC, 7000)


def test_port_mapping_assigns_another_port_when_the_suggestion_is_taken() -> None:
    box = make_box(port_range=(20000, 20009))
    taken = box.add_port_mapping(IpProto.UDP, HOST, external_port=20005, lifetime=60.0, now=0.0)
    other = box.add_port_mapping(IpProto.UDP, HOST2, external_port=20005, lifetime=60.0, now=0.0)
    assert taken == Endpoint(PUBLIC, 20005)
    assert other == Endpoint(PUBLIC, 20000)


def test_port_mapping_takes_over_a_live_dynamic_mapping() -> None:
    box = make_box(filtering=APDF, port_assignment=PortAssignment.RANDOM)
    mapped = external(box, HOST, REMOTE)
    events(box)
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=600.0, now=1.0)
    assert granted == mapped
    assert reaches(box, REMOTE_OTHER_IP, mapped, now=2.0)
    assert reaches(box, REMOTE_OTHER_IP, mapped, now=500.0)
    assert [e for e in events(box) if isinstance(e, MappingCreated)] == [
        MappingCreated(
            proto=IpProto.UDP,
            internal=HOST,
            external=mapped,
            remote=None,
            explicit=True,
            expires=601.0,
        )
    ]


def test_port_mapping_does_not_take_over_an_expired_dynamic_mapping() -> None:
    box = make_box(port_assignment=PortAssignment.SEQUENTIAL)
    external(box, HOST, REMOTE, now=0.0)
    events(box)
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=120.0)
    assert granted is not None
    assert [type(e) for e in events(box)] == [MappingExpired, MappingCreated]


def test_remove_port_mapping() -> None:
    box = make_box()
    granted = box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert granted is not None
    events(box)
    assert box.remove_port_mapping(IpProto.UDP, HOST, now=1.0) is True
    assert events(box) == [MappingRemoved(proto=IpProto.UDP, internal=HOST, external=granted)]
    assert not reaches(box, REMOTE, granted, now=2.0)
    assert box.remove_port_mapping(IpProto.UDP, HOST, now=2.0) is False
    assert box.get_timer() is None


@pytest.mark.parametrize(
    ("proto", "now", "removed"),
    [
        pytest.param(IpProto.TCP, 1.0, False, id="other-protocol"),
        pytest.param(IpProto.ICMP, 1.0, False, id="icmp"),
        pytest.param(IpProto.UDP, 60.0, False, id="already-expired"),
    ],
)
def test_remove_port_mapping_that_is_not_there(proto: IpProto, now: float, removed: bool) -> None:
    box = make_box()
    box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0)
    assert box.remove_port_mapping(proto, HOST, now=now) is removed


def test_tcp_port_mapping_accepts_inbound_connections_from_anyone() -> None:
    box = make_box(mapping=APDM, filtering=APDF)
    granted = box.add_port_mapping(IpProto.TCP, HOST, external_port=8080, lifetime=60.0, now=0.0)
    assert granted == Endpoint(PUBLIC, 8080)
    assert inn(box, tcp(REMOTE, granted, SYN)) == [(Side.INSIDE, tcp(REMOTE, HOST, SYN))]
    assert out(box, tcp(HOST, REMOTE, SYN | ACK)) == [
        (Side.OUTSIDE, tcp(granted, REMOTE, SYN | ACK))
    ]
    assert inn(box, tcp(REMOTE, granted, ACK), now=30.0)
    assert box.get_timer() == 60.0  # connections do not extend an explicit mapping


@pytest.mark.parametrize(
    ("behavior", "proto", "internal", "port", "lifetime"),
    [
        pytest.param(NatBehavior(), IpProto.ICMP, HOST, None, 60.0, id="icmp"),
        pytest.param(NatBehavior(), IpProto.UDP, HOST, None, 0.0, id="zero-lifetime"),
        pytest.param(NatBehavior(), IpProto.UDP, REMOTE, None, 60.0, id="not-inside"),
        pytest.param(NatBehavior(), IpProto.UDP, Endpoint(PUBLIC, 5), None, 60.0, id="ours"),
        pytest.param(NatBehavior(), IpProto.UDP, HOST.with_port(0), None, 60.0, id="port-0"),
        pytest.param(NatBehavior(), IpProto.UDP, HOST, 70000, 60.0, id="bad-suggestion"),
        pytest.param(
            NatBehavior(udp_blocked=True), IpProto.UDP, HOST, None, 60.0, id="udp-blocked"
        ),
    ],
)
def test_impossible_port_mappings_are_refused(
    behavior: NatBehavior, proto: IpProto, internal: Endpoint, port: int | None, lifetime: float
) -> None:
    box = make_box(behavior)
    assert (
        box.add_port_mapping(proto, internal, external_port=port, lifetime=lifetime, now=0.0)
        is None
    )
    assert events(box) == []


def test_port_mapping_fails_when_ports_are_exhausted() -> None:
    box = make_box(port_range=(20000, 20000))
    assert box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=9.0, now=0.0)
    assert (
        box.add_port_mapping(IpProto.UDP, HOST2, external_port=None, lifetime=9.0, now=0.0) is None
    )


def test_firewall_port_mapping_is_a_pinhole() -> None:
    box = make_box(FIREWALL)
    assert box.add_port_mapping(IpProto.UDP, HOST, external_port=9, lifetime=60.0, now=0.0) == HOST
    assert inn(box, udp(REMOTE, HOST)) == [(Side.INSIDE, udp(REMOTE, HOST))]


def test_open_internet_port_mapping_needs_no_state() -> None:
    box = make_box(NatBehavior(translate=False, filtering=None))
    assert (
        box.add_port_mapping(IpProto.UDP, HOST, external_port=None, lifetime=60.0, now=0.0) == HOST
    )
    assert box.mappings(now=0.0) == []


def test_public_ips_and_mappings_snapshot() -> None:
    box = make_box(public_ips=(PUBLIC, PUBLIC2))
    assert box.public_ips == (PUBLIC, PUBLIC2)
    mapped = external(box, HOST, REMOTE, now=0.0)
    granted = box.add_port_mapping(IpProto.TCP, HOST2, external_port=None, lifetime=9.0, now=0.0)
    assert granted is not None
    assert box.mappings(now=1.0) == [
        MappingInfo(
            proto=IpProto.UDP, internal=HOST, external=mapped, expires=120.0, explicit=False
        ),
        MappingInfo(
            proto=IpProto.TCP, internal=HOST2, external=granted, expires=9.0, explicit=True
        ),
    ]
    assert len(box.mappings(now=9.0)) == 1


# -- malformed and foreign packets ---------------------------------------------------

V6 = Endpoint("2001:db8::1", 3478)


@pytest.mark.parametrize(
    ("side", "packet", "reason"),
    [
        pytest.param(
            Side.OUTSIDE,
            udp(REMOTE, Endpoint("203.0.113.99", 5000)),
            DropReason.FOREIGN_DESTINATION,
            id="outside-to-an-address-not-ours",
        ),
        pytest.param(
            Side.OUTSIDE,
            udp(REMOTE, HOST),
            DropReason.FOREIGN_DESTINATION,
            id="outside-to-an-inside-address",
        ),
        pytest.param(
            Side.OUTSIDE,
            udp(HOST2, Endpoint(PUBLIC, 5000)),
            DropReason.FOREIGN_SOURCE,
            id="outside-from-an-inside-address",
        ),
        pytest.param(
            Side.OUTSIDE,
            udp(Endpoint(PUBLIC, 1), Endpoint(PUBLIC, 5000)),
            DropReason.FOREIGN_SOURCE,
            id="outside-from-our-own-address",
        ),
        pytest.param(
            Side.INSIDE,
            udp(Endpoint("10.9.9.9", 5000), REMOTE),
            DropReason.FOREIGN_SOURCE,
            id="inside-from-outside-the-inside-networks",
        ),
        pytest.param(
            Side.INSIDE,
            udp(HOST, HOST2),
            DropReason.FOREIGN_DESTINATION,
            id="inside-to-an-inside-address",
        ),
        pytest.param(Side.INSIDE, udp(V6, REMOTE), DropReason.UNSUPPORTED, id="inside-ipv6-source"),
        pytest.param(
            Side.INSIDE, udp(HOST, V6), DropReason.UNSUPPORTED, id="inside-ipv6-destination"
        ),
        pytest.param(
            Side.OUTSIDE,
            udp(V6, Endpoint(PUBLIC, 5000)),
            DropReason.UNSUPPORTED,
            id="outside-ipv6-source",
        ),
        pytest.param(
            Side.OUTSIDE, udp(REMOTE, V6), DropReason.UNSUPPORTED, id="outside-ipv6-destination"
        ),
        pytest.param(
            Side.INSIDE,
            udp(Endpoint("not-an-ip", 1), REMOTE),
            DropReason.UNSUPPORTED,
            id="garbage-host",
        ),
        pytest.param(
            Side.INSIDE,
            Packet(
                IpProto.ICMP,
                HOST.with_port(0),
                REMOTE.with_port(0),
                icmp=IcmpError.PORT_UNREACHABLE,
            ),
            DropReason.UNSUPPORTED,
            id="inside-icmp",
        ),
        pytest.param(
            Side.OUTSIDE,
            Packet(
                IpProto.ICMP,
                REMOTE.with_port(0),
                Endpoint(PUBLIC, 0),
                icmp=IcmpError.PORT_UNREACHABLE,
            ),
            DropReason.UNSUPPORTED,
            id="outside-icmp",
        ),
        pytest.param(
            Side.INSIDE, udp(HOST.with_port(0), REMOTE), DropReason.MALFORMED, id="source-port-0"
        ),
        pytest.param(
            Side.INSIDE,
            udp(HOST.with_port(70000), REMOTE),
            DropReason.MALFORMED,
            id="source-port-too-big",
        ),
    ],
)
def test_foreign_and_malformed_packets_are_dropped_with_a_reason(
    side: Side, packet: Packet, reason: DropReason
) -> None:
    box = make_box(icmp_on_closed=True, hairpinning=True)
    sent = deliver(box, packet, side)
    assert sent == []
    assert events(box) == [PacketDropped(side=side, packet=packet, reason=reason)]


def test_a_firewall_does_not_forward_to_its_own_address() -> None:
    box = make_box(FIREWALL, public_ips=(PUBLIC,))
    assert out(box, udp(HOST, Endpoint(PUBLIC, 5000))) == []
    assert inn(box, udp(REMOTE, Endpoint(PUBLIC, 5000))) == []
    assert drops(box) == [DropReason.FOREIGN_DESTINATION, DropReason.FOREIGN_DESTINATION]


def test_icmp_that_cannot_quote_its_packet_is_not_sent() -> None:
    box = make_box(icmp_on_closed=True)
    packet = Packet(IpProto.UDP, REMOTE, Endpoint(PUBLIC, 70000))
    assert inn(box, packet) == []
    assert drops(box) == [DropReason.NO_MAPPING]


def test_many_distinct_addresses_do_not_confuse_the_address_cache() -> None:
    box = make_box(filtering=EIF, trace=False)
    mapped = external(box, HOST, REMOTE)
    for i in range(70000):
        box.receive_packet(
            udp(Endpoint(f"198.18.{i >> 8 & 0xFF}.{i & 0xFF}", 1 + (i >> 16)), mapped),
            side=Side.OUTSIDE,
            now=1.0,
        )
    assert len(box.packets_to_send(now=1.0)) == 70000
    assert reaches(box, REMOTE, mapped, now=2.0)
    assert external(box, HOST, REMOTE, now=2.0) == mapped


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"filtering": None}, "translate=False", id="no-filter-with-translation"),
        pytest.param({"udp_mapping_timeout": 0.0}, "udp_mapping_timeout", id="zero-udp-timeout"),
        pytest.param({"tcp_established_timeout": -1.0}, "tcp_established", id="negative-tcp"),
        pytest.param({"tcp_transitory_timeout": 0.0}, "tcp_transitory", id="zero-transitory"),
        pytest.param({"tcp_syn_hold": -1.0}, "tcp_syn_hold", id="negative-hold"),
        pytest.param({"port_range": (0, 10)}, "port_range", id="port-0"),
        pytest.param({"port_range": (20, 10)}, "port_range", id="reversed-range"),
        pytest.param({"port_range": (1, 65536)}, "port_range", id="range-too-high"),
    ],
)
def test_invalid_behaviors_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NatBehavior(**changes)


@pytest.mark.parametrize(
    ("behavior", "public_ips", "networks", "message"),
    [
        pytest.param(NatBehavior(), [], [LAN], "at least one public", id="no-public-address"),
        pytest.param(NatBehavior(), ["192.168.1.1"], [LAN], "inside network", id="public-inside"),
        pytest.param(NatBehavior(), ["2001:db8::1"], [LAN], "IPv4", id="ipv6-public"),
        pytest.param(NatBehavior(), [PUBLIC, PUBLIC], [LAN], "duplicate", id="duplicate"),
        pytest.param(NatBehavior(), [PUBLIC], [], "inside network", id="no-inside-network"),
        pytest.param(
            NatBehavior(), ["nonsense"], [LAN], "does not appear", id="bad-public-address"
        ),
        pytest.param(NatBehavior(), [PUBLIC], ["192.168.1.1/24"], "host bits", id="host-bits-set"),
    ],
)
def test_invalid_boxes_are_rejected(
    behavior: NatBehavior, public_ips: list[str], networks: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        NatBox(behavior, public_ips, inside_networks=networks, rng=random.Random(0))


def test_a_firewall_needs_no_public_address() -> None:
    box = NatBox(FIREWALL, [], inside_networks=[LAN], rng=random.Random(0))
    assert box.public_ips == ()
    assert out(box, udp(HOST, REMOTE)) == [(Side.OUTSIDE, udp(HOST, REMOTE))]


def test_default_rng_is_used_when_none_is_given() -> None:
    box = NatBox(
        NatBehavior(mapping=APDM, port_assignment=PortAssignment.RANDOM),
        [PUBLIC],
        inside_networks=[LAN],
    )
    assert 1024 <= external(box, HOST, REMOTE).port <= 65535


# -- events, determinism, throughput -------------------------------------------------


def test_trace_reports_each_translation() -> None:
    box = make_box(filtering=EIF)
    packet = udp(HOST, REMOTE)
    [(_, sent)] = out(box, packet)
    reply = udp(REMOTE, sent.src)
    [(_, back)] = inn(box, reply)
    assert events(box)[1:] == [
        PacketTranslated(direction=Direction.OUTBOUND, before=packet, after=sent),
        PacketTranslated(direction=Direction.INBOUND, before=reply, after=back),
    ]


def test_without_trace_only_mappings_and_drops_are_reported() -> None:
    box = make_box(trace=False, hairpinning=True, filtering=EIF)
    mapped = external(box, HOST, REMOTE)
    inn(box, udp(REMOTE, mapped))
    out(box, udp(HOST2, mapped))
    inn(box, udp(REMOTE, Endpoint(PUBLIC, 1)))
    kinds = [type(e) for e in events(box)]
    assert kinds == [MappingCreated, MappingCreated, PacketDropped]


def _scenario(seed: int) -> tuple[list[tuple[Side, Packet]], list[NatEvent]]:
    box = make_box(
        mapping=APDM,
        port_assignment=PortAssignment.RANDOM,
        pooling=Pooling.ARBITRARY,
        public_ips=(PUBLIC, PUBLIC2),
        seed=seed,
        hairpinning=True,
    )
    rng = random.Random(seed + 1000)
    sent: list[tuple[Side, Packet]] = []
    now = 0.0
    for _ in range(500):
        now += rng.random() * 2
        host = Endpoint(f"192.168.1.{rng.randint(2, 5)}", rng.randint(5000, 5003))
        remote = Endpoint(f"198.51.100.{rng.randint(1, 3)}", rng.randint(1, 3))
        sent += out(box, udp(host, remote), now)
        if sent:
            sent += inn(box, udp(remote, sent[-1][1].src), now)
        timer = box.get_timer()
        if timer is not None and timer <= now:
            box.handle_timer(now=now)
    return sent, events(box)


def test_a_run_replays_exactly_from_its_seed() -> None:
    assert _scenario(3) == _scenario(3)
    assert _scenario(3)[0] != _scenario(4)[0]


def test_throughput_sanity_100k_packets() -> None:
    box = make_box(trace=False, filtering=APDF, udp_mapping_timeout=30.0)
    hosts = [Endpoint(f"192.168.1.{i}", 5000 + i) for i in range(2, 66)]
    packets = 0
    forwarded = 0
    now = 0.0
    mapped: dict[Endpoint, Endpoint] = {}
    for i in range(50000):
        now += 0.001
        host = hosts[i % len(hosts)]
        box.receive_packet(udp(host, REMOTE), side=Side.INSIDE, now=now)
        if host in mapped:
            box.receive_packet(udp(REMOTE, mapped[host]), side=Side.OUTSIDE, now=now)
            packets += 1
        packets += 1
        for side, packet in box.packets_to_send(now=now):
            forwarded += 1
            if side is Side.OUTSIDE:
                mapped[host] = packet.src
        timer = box.get_timer()
        if timer is not None and timer <= now:
            box.handle_timer(now=now)
    assert forwarded == packets >= 99900
    assert [type(e) for e in events(box)] == [MappingCreated] * len(hosts)


# -- reboot ---------------------------------------------------------------------------


def test_reboot_forgets_every_mapping_and_reports_each() -> None:
    box = make_box(filtering=EIF, port_assignment=PortAssignment.SEQUENTIAL)
    mapped = external(box, HOST, REMOTE)
    out(box, tcp(HOST2, REMOTE, SYN))
    box.add_port_mapping(
        IpProto.UDP, Endpoint("192.168.1.9", 7000), external_port=7000, lifetime=60, now=0.0
    )
    events(box)
    assert box.reboot(now=1.0) == 3
    removed = [e for e in events(box) if isinstance(e, MappingRemoved)]
    assert len(removed) == 3
    assert box.mappings(now=1.0) == []
    assert box.get_timer() is None
    assert not reaches(box, REMOTE, mapped, now=1.0)
    assert drops(box) == [DropReason.NO_MAPPING]


def test_after_a_reboot_established_tcp_is_dropped_and_new_mappings_start_afresh() -> None:
    box = make_box(mapping=APDM, port_assignment=PortAssignment.SEQUENTIAL)
    first = external(box, HOST, REMOTE)
    [(_, syn)] = out(box, tcp(HOST, REMOTE, SYN))
    inn(box, tcp(REMOTE, syn.src, SYN | ACK))
    events(box)
    box.reboot(now=1.0)
    events(box)
    assert out(box, tcp(HOST, REMOTE, ACK), now=1.0) == []
    assert drops(box) == [DropReason.NO_MAPPING]
    assert external(box, HOST, REMOTE, now=1.0) == first  # the port counter restarted


def test_reboot_counts_only_live_mappings() -> None:
    box = make_box(udp_mapping_timeout=30.0)
    external(box, HOST, REMOTE)
    assert box.reboot(now=31.0) == 0
    assert box.reboot(now=31.0) == 0
