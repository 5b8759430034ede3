"""PcpClient (RFC 6887) on explicit time: §8.1.1 retransmission, nonce
matching, renewal, epoch checks, ANNOUNCE and the fall back to NAT-PMP."""

from __future__ import annotations

import itertools
import random

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.nat.portmap import natpmp, pcp
from natkit.nat.portmap.client import PcpClient, PcpClientConfig
from natkit.nat.portmap.events import (
    FellBackToNatPmp,
    MappingDeleted,
    MappingExpired,
    MappingFailed,
    MappingGranted,
    ServerStateLost,
)
from natkit.nat.portmap.mapping import PortMapMethod
from natkit.nat.portmap.pcp import MapData, PcpOpcode, PcpResult
from natkit.packet import IpProto

from .fakes import CLIENT_IP, GATEWAY, PUBLIC_IP, events_of

INTERNAL = Endpoint(CLIENT_IP, 5000)


def make(**config: object) -> PcpClient:
    return PcpClient(
        GATEWAY,
        local_ip=CLIENT_IP,
        config=PcpClientConfig(rng=random.Random(7), **config),  # type: ignore[arg-type]
    )


def sent_requests(client: PcpClient, now: float) -> list[pcp.PcpRequest]:
    return [pcp.parse_request(d) for d, _, _ in client.datagrams_to_send(now=now)]


def answer(
    request: pcp.PcpRequest,
    *,
    result: int = PcpResult.SUCCESS,
    lifetime: int | None = None,
    epoch: int = 1000,
    port: int = 40000,
    ip: str = PUBLIC_IP,
) -> bytes:
    assert isinstance(request.data, MapData)
    return pcp.serialize_response(
        pcp.PcpResponse(
            opcode=PcpOpcode.MAP,
            result=result,
            lifetime=request.lifetime if lifetime is None else lifetime,
            epoch=epoch,
            data=MapData(
                nonce=request.data.nonce,
                protocol=request.data.protocol,
                internal_port=request.data.internal_port,
                external_port=port,
                external_ip=ip,
            ),
        )
    )


def granted(client: PcpClient, *, lifetime: int = 7200) -> pcp.PcpRequest:
    client.map(IpProto.UDP, 5000, now=0.0, lifetime=lifetime)
    (request,) = sent_requests(client, 0.0)
    client.receive_datagram(answer(request), GATEWAY, now=0.0)
    events_of(client)
    return request


def test_map_request_fields() -> None:
    client = make()
    client.map(IpProto.TCP, 5000, now=0.0, external_port=6000, external_ip="203.0.113.9")
    (request,) = sent_requests(client, 0.0)
    assert request.opcode == PcpOpcode.MAP and request.lifetime == 7200
    assert request.client_ip == CLIENT_IP
    assert isinstance(request.data, MapData)
    assert request.data.protocol == IpProto.TCP and request.data.internal_port == 5000
    assert request.data.external_port == 6000 and request.data.external_ip == "203.0.113.9"
    assert len(request.data.nonce) == 12 and request.options == ()
    assert client.nonce_for(IpProto.TCP, 5000) == request.data.nonce


def test_prefer_failure_is_sent_when_asked() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0, external_port=6000, prefer_failure=True)
    (request,) = sent_requests(client, 0.0)
    assert request.options == (pcp.prefer_failure(),)


def test_retransmission_follows_irt_doubling_with_jitter_up_to_mrt() -> None:
    client = make(irt=3.0, mrt=20.0, mrc=7)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.datagrams_to_send(now=0.0)
    times = [0.0]
    while (deadline := client.get_timer()) is not None and deadline < 1000:
        client.handle_timer(now=deadline)
        if client.datagrams_to_send(now=deadline):
            times.append(deadline)
        else:
            break
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 7  # MRC sends
    assert 2.7 <= gaps[0] <= 3.3
    for prev, gap in itertools.pairwise(gaps):
        assert 0.9 * min(2 * prev, 20.0) <= gap <= 1.1 * min(2 * prev, 20.0) + 1e-9
    assert max(gaps) <= 22.0
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.code is None


def test_mrd_ends_the_exchange_in_mid_wait() -> None:
    client = make(irt=3.0, mrd=10.0)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.datagrams_to_send(now=0.0)
    deadlines = []
    while (deadline := client.get_timer()) is not None:
        deadlines.append(deadline)
        client.handle_timer(now=deadline)
        client.datagrams_to_send(now=deadline)
    assert deadlines[-1] == 10.0
    assert isinstance(events_of(client)[0], MappingFailed)


def test_default_client_never_gives_up() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    for _ in range(40):
        deadline = client.get_timer()
        assert deadline is not None
        client.handle_timer(now=deadline)
    assert events_of(client) == []
    # ... and RT stays capped at MRT = 1024 s, +10 %.
    before = client.get_timer()
    assert before is not None
    client.handle_timer(now=before)
    after = client.get_timer()
    assert after is not None and after - before <= 1024 * 1.1


def test_grant_reports_the_assigned_endpoint() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    client.receive_datagram(answer(request, lifetime=3000), GATEWAY, now=0.5)
    assert events_of(client) == [
        MappingGranted(
            proto=IpProto.UDP,
            internal=INTERNAL,
            external=Endpoint(PUBLIC_IP, 40000),
            lifetime=3000,
            method=PortMapMethod.PCP,
        )
    ]
    assert client.external_for(IpProto.UDP, 5000) == Endpoint(PUBLIC_IP, 40000)


def test_response_with_another_nonce_is_ignored() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    assert isinstance(request.data, MapData)
    forged = pcp.PcpRequest(
        opcode=PcpOpcode.MAP,
        lifetime=100,
        client_ip=CLIENT_IP,
        data=MapData(
            nonce=b"x" * 12, protocol=17, internal_port=5000, external_port=0, external_ip="::"
        ),
    )
    client.receive_datagram(answer(forged), GATEWAY, now=0.0)
    client.receive_datagram(answer(request), Endpoint("192.168.1.66", 5351), now=0.0)
    assert events_of(client) == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x02\x81" + bytes(10), id="short"),
        pytest.param(bytes.fromhex("0080 0000 00000001 01020304"), id="natpmp-success"),
        pytest.param(b"\x00\x81\x00", id="natpmp-garbage"),
    ],
)
def test_garbage_is_ignored(data: bytes) -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(data, GATEWAY, now=0.0)
    assert events_of(client) == [] and client.natpmp is None


def test_response_for_another_protocol_is_ignored() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    response = pcp.PcpResponse(
        opcode=PcpOpcode.MAP,
        result=0,
        lifetime=10,
        epoch=1,
        data=MapData(
            nonce=b"x" * 12, protocol=1, internal_port=5000, external_port=1, external_ip="::"
        ),
    )
    client.receive_datagram(pcp.serialize_response(response), GATEWAY, now=0.0)
    assert events_of(client) == []


def test_error_result_fails_the_mapping() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    client.receive_datagram(
        answer(request, result=PcpResult.ADDRESS_MISMATCH, lifetime=1800), GATEWAY, now=0.0
    )
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed)
    assert event.code == PcpResult.ADDRESS_MISMATCH and event.reason == "PCP ADDRESS_MISMATCH"
    assert client.get_timer() is None


def test_unknown_error_result_is_reported_by_number() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    client.receive_datagram(answer(request, result=99), GATEWAY, now=0.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.reason == "PCP result 99"


def test_zero_port_success_is_a_failure() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    client.receive_datagram(answer(request, port=0), GATEWAY, now=0.0)
    assert isinstance(events_of(client)[0], MappingFailed)


def test_renewal_between_half_and_five_eighths_keeps_nonce_and_asks_for_the_same() -> None:
    client = make()
    first = granted(client, lifetime=1000)
    deadline = client.get_timer()
    assert deadline is not None and 500.0 <= deadline <= 625.0
    client.handle_timer(now=deadline)
    (renewal,) = sent_requests(client, deadline)
    assert isinstance(renewal.data, MapData) and isinstance(first.data, MapData)
    assert renewal.data.nonce == first.data.nonce
    assert renewal.data.external_port == 40000 and renewal.data.external_ip == PUBLIC_IP
    client.receive_datagram(answer(renewal, epoch=1000 + int(deadline)), GATEWAY, now=deadline)
    (event,) = events_of(client)
    assert isinstance(event, MappingGranted) and event.renewed


def test_unanswered_renewal_ends_in_expiry() -> None:
    client = make(irt=1.0)
    granted(client, lifetime=100)
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
        client.datagrams_to_send(now=deadline)
    assert deadline is None
    assert events_of(client) == [
        MappingExpired(proto=IpProto.UDP, internal=INTERNAL, method=PortMapMethod.PCP)
    ]


def test_renewal_given_up_by_mrc_is_retried_until_expiry() -> None:
    client = make(irt=1.0, mrc=2)
    granted(client, lifetime=200)
    sends = 0
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
        sends += len(client.datagrams_to_send(now=deadline))
    assert sends > 2
    assert isinstance(events_of(client)[-1], MappingExpired)


@pytest.mark.parametrize(
    ("elapsed", "epoch", "lost"),
    [
        pytest.param(100.0, 1100, False, id="in-step"),
        pytest.param(100.0, 1094, False, id="within-slack"),
        pytest.param(100.0, 1090, True, id="just-outside-slack"),
        pytest.param(100.0, 998, True, id="went-back"),
        pytest.param(100.0, 1050, True, id="server-slow"),
        pytest.param(100.0, 1200, True, id="server-fast"),
    ],
)
def test_epoch_check(elapsed: float, epoch: int, lost: bool) -> None:
    client = make()
    granted(client)
    client.map(IpProto.UDP, 5001, now=elapsed)
    (request,) = sent_requests(client, elapsed)
    client.receive_datagram(answer(request, epoch=epoch, port=40001), GATEWAY, now=elapsed)
    events = events_of(client)
    assert (ServerStateLost(epoch=epoch, method=PortMapMethod.PCP) in events) is lost
    renewals = sent_requests(client, elapsed)
    assert len(renewals) == (1 if lost else 0)


def test_announce_makes_the_client_renew() -> None:
    client = make()
    granted(client)
    announce = pcp.PcpResponse(opcode=PcpOpcode.ANNOUNCE, result=0, lifetime=0, epoch=0)
    client.receive_datagram(pcp.serialize_response(announce), GATEWAY, now=50.0)
    assert events_of(client) == [ServerStateLost(epoch=0, method=PortMapMethod.PCP)]
    assert len(sent_requests(client, 50.0)) == 1


def test_failed_announce_is_ignored() -> None:
    client = make()
    granted(client)
    announce = pcp.PcpResponse(opcode=PcpOpcode.ANNOUNCE, result=7, lifetime=30, epoch=0)
    client.receive_datagram(pcp.serialize_response(announce), GATEWAY, now=50.0)
    assert events_of(client) == []


def test_unmap_uses_the_nonce_and_reports_deletion() -> None:
    client = make()
    first = granted(client)
    client.unmap(IpProto.UDP, 5000, now=10.0)
    (request,) = sent_requests(client, 10.0)
    assert request.lifetime == 0
    assert isinstance(request.data, MapData) and isinstance(first.data, MapData)
    assert request.data.nonce == first.data.nonce
    assert request.data.external_port == 0 and request.data.external_ip == "0.0.0.0"
    client.receive_datagram(answer(request, epoch=1010), GATEWAY, now=10.0)
    assert events_of(client) == [
        MappingDeleted(proto=IpProto.UDP, internal=INTERNAL, method=PortMapMethod.PCP)
    ]


def test_adopted_mapping_is_deleted_with_its_nonce() -> None:
    client = make()
    client.adopt(IpProto.UDP, 5000, b"A" * 12, Endpoint(PUBLIC_IP, 40000))
    assert client.external_for(IpProto.UDP, 5000) == Endpoint(PUBLIC_IP, 40000)
    client.unmap(IpProto.UDP, 5000, now=0.0)
    (request,) = sent_requests(client, 0.0)
    assert isinstance(request.data, MapData) and request.data.nonce == b"A" * 12
    with pytest.raises(LocalProtocolError):
        client.adopt(IpProto.UDP, 5000, b"short")


def test_natpmp_only_server_triggers_fallback() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0, external_port=6000, lifetime=600)
    client.unmap(IpProto.TCP, 7000, now=0.0)
    client.datagrams_to_send(now=0.0)
    short = natpmp.NatPmpErrorResponse(
        opcode=1, result=natpmp.NatPmpResult.UNSUPPORTED_VERSION, epoch=3
    )
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.1)
    assert events_of(client) == [FellBackToNatPmp(server=GATEWAY)]
    assert client.natpmp is not None
    requests = [natpmp.parse_request(d) for d, _, _ in client.datagrams_to_send(now=0.1)]
    assert (
        natpmp.MapRequest(
            proto=IpProto.UDP, internal_port=5000, suggested_external_port=6000, lifetime=600
        )
        in requests
    )
    assert (
        natpmp.MapRequest(
            proto=IpProto.TCP, internal_port=7000, suggested_external_port=0, lifetime=0
        )
        in requests
    )
    assert natpmp.ExternalAddressRequest() in requests
    # From now on everything goes to the NAT-PMP client.
    client.map(IpProto.UDP, 5001, now=0.2)
    client.unmap(IpProto.UDP, 5001, now=0.2)
    assert client.get_timer() == client.natpmp.get_timer()
    assert client.external_for(IpProto.UDP, 5000) is None


def test_fallback_can_be_refused() -> None:
    client = make(natpmp_fallback=False)
    client.map(IpProto.UDP, 5000, now=0.0)
    short = natpmp.NatPmpErrorResponse(
        opcode=1, result=natpmp.NatPmpResult.UNSUPPORTED_VERSION, epoch=3
    )
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.1)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.code == PcpResult.UNSUPP_VERSION
    assert client.natpmp is None


def test_unsupported_version_without_pending_request_is_ignored() -> None:
    client = make()
    short = natpmp.NatPmpErrorResponse(
        opcode=1, result=natpmp.NatPmpResult.UNSUPPORTED_VERSION, epoch=3
    )
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.1)
    assert client.natpmp is None and events_of(client) == []


@pytest.mark.parametrize("lifetime", [0, 2**32])
def test_bad_lifetime_raises(lifetime: int) -> None:
    with pytest.raises(LocalProtocolError):
        make().map(IpProto.UDP, 5000, now=0.0, lifetime=lifetime)


def test_error_response_with_truncated_copy_is_ignored() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    response = pcp.PcpResponse(
        opcode=PcpOpcode.MAP, result=PcpResult.MALFORMED_REQUEST, lifetime=1800, epoch=1, data=b""
    )
    client.receive_datagram(pcp.serialize_response(response), GATEWAY, now=0.0)
    assert events_of(client) == []


def test_timers_run_on_the_natpmp_client_after_fallback() -> None:
    client = make()
    client.map(IpProto.UDP, 5000, now=0.0)
    short = natpmp.NatPmpErrorResponse(
        opcode=1, result=natpmp.NatPmpResult.UNSUPPORTED_VERSION, epoch=3
    )
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.0)
    client.datagrams_to_send(now=0.0)
    assert client.get_timer() == 0.25  # NAT-PMP's schedule now
    client.handle_timer(now=0.25)
    assert len(client.datagrams_to_send(now=0.25)) == 2
