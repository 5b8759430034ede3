"""NatPmpClient (RFC 6886) on explicit time: retransmission, renewal,
expiry, epoch checks, deletion; the server side is played by hand."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.nat.portmap import natpmp
from natkit.nat.portmap.client import NatPmpClient, NatPmpClientConfig
from natkit.nat.portmap.events import (
    ExternalAddressFailed,
    ExternalAddressReceived,
    MappingDeleted,
    MappingExpired,
    MappingFailed,
    MappingGranted,
    ServerStateLost,
)
from natkit.nat.portmap.mapping import PortMapMethod
from natkit.nat.portmap.natpmp import NatPmpResult
from natkit.packet import IpProto

from .fakes import CLIENT_IP, GATEWAY, PUBLIC_IP, events_of

INTERNAL = Endpoint(CLIENT_IP, 5000)


def address_response(epoch: int = 100, address: str = PUBLIC_IP, result: int = 0) -> bytes:
    return natpmp.serialize_response(
        natpmp.ExternalAddressResponse(result=result, epoch=epoch, address=address)
    )


def map_response(
    *, port: int = 40000, lifetime: int = 7200, epoch: int = 100, result: int = 0
) -> bytes:
    return natpmp.serialize_response(
        natpmp.MapResponse(
            proto=IpProto.UDP,
            result=result,
            epoch=epoch,
            internal_port=5000,
            external_port=port,
            lifetime=lifetime,
        )
    )


def sent(client: NatPmpClient, now: float) -> list[natpmp.NatPmpRequest]:
    out = client.datagrams_to_send(now=now)
    assert all(remote == GATEWAY for _, remote, _ in out)
    return [natpmp.parse_request(data) for data, _, _ in out]


def run_timers(client: NatPmpClient, until: float) -> list[tuple[float, int]]:
    """Fire every timer up to ``until``; (time, datagrams sent) for each."""
    log = []
    while (deadline := client.get_timer()) is not None and deadline <= until:
        client.handle_timer(now=deadline)
        log.append((deadline, len(client.datagrams_to_send(now=deadline))))
    return log


def granted_client(*, lifetime: int = 7200) -> NatPmpClient:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.receive_datagram(address_response(), GATEWAY, now=0.0)
    client.receive_datagram(map_response(lifetime=lifetime), GATEWAY, now=0.0)
    events_of(client)
    return client


def test_map_sends_the_map_request_and_asks_for_the_address() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0, external_port=6000)
    assert sent(client, 0.0) == [
        natpmp.MapRequest(
            proto=IpProto.UDP, internal_port=5000, suggested_external_port=6000, lifetime=7200
        ),
        natpmp.ExternalAddressRequest(),
    ]


def test_retransmission_schedule_is_250ms_doubling_nine_times() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    assert len(client.datagrams_to_send(now=0.0)) == 2
    log = run_timers(client, until=1000.0)
    resends = [t for t, n in log if n]
    assert resends == [0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 31.75, 63.75]
    assert log[-1] == (127.75, 0)
    assert all(n == 2 for _, n in log[:-1])  # map and address request together
    events = events_of(client)
    assert ExternalAddressFailed(code=None, reason="no response from the server") in events
    assert (
        MappingFailed(
            proto=IpProto.UDP,
            internal=INTERNAL,
            code=None,
            method=PortMapMethod.NATPMP,
            reason="no response from the server",
        )
        in events
    )
    assert client.get_timer() is None


def test_schedule_scales_through_config() -> None:
    config = NatPmpClientConfig(initial_interval=0.01, max_tries=3)
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP, config=config)
    client.request_external_address(now=0.0)
    client.datagrams_to_send(now=0.0)
    assert run_timers(client, until=10.0) == [(0.01, 1), (0.03, 1), (0.07, 0)]


def test_grant_is_reported_once_address_and_port_are_known() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.receive_datagram(map_response(), GATEWAY, now=0.1)
    assert events_of(client) == []
    client.receive_datagram(address_response(), GATEWAY, now=0.2)
    assert events_of(client) == [
        ExternalAddressReceived(address=PUBLIC_IP, epoch=100),
        MappingGranted(
            proto=IpProto.UDP,
            internal=INTERNAL,
            external=Endpoint(PUBLIC_IP, 40000),
            lifetime=7200,
            method=PortMapMethod.NATPMP,
        ),
    ]
    assert client.external_for(IpProto.UDP, 5000) == Endpoint(PUBLIC_IP, 40000)
    assert client.external_address == PUBLIC_IP


def test_answered_requests_are_not_retransmitted() -> None:
    client = granted_client()
    assert client.get_timer() == 3600.0  # only the renewal is left


def test_renewal_starts_halfway_and_repeats_the_granted_port() -> None:
    client = granted_client(lifetime=100)
    assert client.get_timer() == 50.0
    client.handle_timer(now=50.0)
    assert sent(client, 50.0) == [
        natpmp.MapRequest(
            proto=IpProto.UDP, internal_port=5000, suggested_external_port=40000, lifetime=7200
        )
    ]
    client.receive_datagram(map_response(lifetime=100, epoch=150), GATEWAY, now=50.0)
    assert events_of(client) == [
        MappingGranted(
            proto=IpProto.UDP,
            internal=INTERNAL,
            external=Endpoint(PUBLIC_IP, 40000),
            lifetime=100,
            method=PortMapMethod.NATPMP,
            renewed=True,
        )
    ]
    assert client.get_timer() == 100.0


def test_unanswered_renewal_keeps_trying_until_expiry() -> None:
    client = granted_client(lifetime=300)
    log = run_timers(client, until=1000.0)
    # 150: renewal; nine sends over 127.75 s; a new round at 277.75; expiry at 300.
    assert log[0] == (150.0, 1)
    assert (277.75, 1) in log
    assert log[-1] == (300.0, 0)
    assert events_of(client) == [
        MappingExpired(proto=IpProto.UDP, internal=INTERNAL, method=PortMapMethod.NATPMP)
    ]
    assert client.get_timer() is None
    assert client.external_for(IpProto.UDP, 5000) is None


def test_refusal_is_reported_with_its_result_code() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(
        map_response(result=NatPmpResult.OUT_OF_RESOURCES, port=0, lifetime=0), GATEWAY, now=0.0
    )
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed)
    assert event.code == NatPmpResult.OUT_OF_RESOURCES
    assert event.reason == "NAT-PMP OUT_OF_RESOURCES"


def test_zero_lifetime_grant_counts_as_refusal() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(map_response(lifetime=0), GATEWAY, now=0.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.code == NatPmpResult.SUCCESS


def test_short_error_answers_every_request_of_its_opcode() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.map(IpProto.UDP, 5001, now=0.0)
    client.map(IpProto.TCP, 5000, now=0.0)
    short = natpmp.NatPmpErrorResponse(opcode=1, result=NatPmpResult.UNSUPPORTED_OPCODE, epoch=1)
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.0)
    failed = [e for e in events_of(client) if isinstance(e, MappingFailed)]
    assert sorted(e.internal.port for e in failed) == [5000, 5001]
    assert all(e.proto == IpProto.UDP for e in failed)
    assert client.get_timer() is not None  # TCP and the address request still retransmit


def test_short_error_for_the_address_request() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.request_external_address(now=0.0)
    short = natpmp.NatPmpErrorResponse(opcode=0, result=NatPmpResult.NOT_AUTHORIZED, epoch=1)
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.0)
    assert events_of(client) == [
        ExternalAddressFailed(code=NatPmpResult.NOT_AUTHORIZED, reason="NAT-PMP NOT_AUTHORIZED")
    ]
    client.receive_datagram(natpmp.serialize_response(short), GATEWAY, now=0.0)
    assert events_of(client) == []


def test_address_failure_fails_mappings_waiting_for_it() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(map_response(), GATEWAY, now=0.0)
    client.receive_datagram(
        address_response(result=NatPmpResult.NETWORK_FAILURE, address="0.0.0.0"),
        GATEWAY,
        now=0.0,
    )
    events = events_of(client)
    assert isinstance(events[0], ExternalAddressFailed)
    assert isinstance(events[1], MappingFailed)
    assert events[1].code == NatPmpResult.NETWORK_FAILURE
    assert events[1].reason == "external address: NAT-PMP NETWORK_FAILURE"


def test_unsolicited_address_change_updates_granted_mappings() -> None:
    client = granted_client()
    client.receive_datagram(address_response(epoch=110, address="198.51.100.1"), GATEWAY, now=10.0)
    events = events_of(client)
    assert events[0] == ExternalAddressReceived(address="198.51.100.1", epoch=110)
    assert isinstance(events[1], MappingGranted)
    assert events[1].external == Endpoint("198.51.100.1", 40000) and events[1].renewed
    # The same announcement again says nothing new.
    client.receive_datagram(address_response(epoch=111, address="198.51.100.1"), GATEWAY, now=11.0)
    assert events_of(client) == []


def test_unsolicited_failed_address_is_ignored() -> None:
    client = granted_client()
    client.receive_datagram(address_response(result=3, address="0.0.0.0"), GATEWAY, now=1.0)
    assert events_of(client) == []


def test_datagrams_from_elsewhere_are_ignored() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(map_response(), Endpoint("192.168.1.66", 5351), now=0.0)
    client.receive_datagram(map_response(), GATEWAY.with_port(5350), now=0.0)
    client.receive_datagram(b"\x00\x80garbage", GATEWAY, now=0.0)
    assert events_of(client) == []


def test_late_duplicate_response_is_ignored() -> None:
    client = granted_client()
    client.receive_datagram(map_response(), GATEWAY, now=1.0)
    assert events_of(client) == []


def test_epoch_going_back_means_the_gateway_rebooted() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.map(IpProto.UDP, 5001, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.receive_datagram(address_response(epoch=1000), GATEWAY, now=0.0)
    for port in (5000, 5001):
        response = natpmp.MapResponse(
            proto=IpProto.UDP,
            result=0,
            epoch=1000,
            internal_port=port,
            external_port=port + 35000,
            lifetime=7200,
        )
        client.receive_datagram(natpmp.serialize_response(response), GATEWAY, now=0.0)
    events_of(client)
    # 100 s later the epoch says 20 s: lost state (§3.6), renew everything.
    client.receive_datagram(address_response(epoch=20), GATEWAY, now=100.0)
    assert events_of(client) == [ServerStateLost(epoch=20, method=PortMapMethod.NATPMP)]
    renewals = sent(client, 100.0)
    assert sorted(r.internal_port for r in renewals if isinstance(r, natpmp.MapRequest)) == [
        5000,
        5001,
    ]


def test_epoch_within_tolerance_is_not_a_reboot() -> None:
    client = granted_client()
    # 100 s of our time, 86 s of the server's: 7/8 x 100 - 2 = 85.5.
    client.receive_datagram(address_response(epoch=186), GATEWAY, now=100.0)
    assert events_of(client) == []


def test_unmap_sends_lifetime_zero_and_reports_deletion() -> None:
    client = granted_client()
    client.unmap(IpProto.UDP, 5000, now=5.0)
    assert sent(client, 5.0) == [
        natpmp.MapRequest(
            proto=IpProto.UDP, internal_port=5000, suggested_external_port=0, lifetime=0
        )
    ]
    client.receive_datagram(map_response(port=0, lifetime=0, epoch=105), GATEWAY, now=5.0)
    assert events_of(client) == [
        MappingDeleted(proto=IpProto.UDP, internal=INTERNAL, method=PortMapMethod.NATPMP)
    ]
    assert client.get_timer() is None


def test_unanswered_deletion_fails() -> None:
    client = granted_client()
    client.unmap(IpProto.UDP, 5000, now=0.0)
    run_timers(client, until=10_000.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.code is None


@pytest.mark.parametrize(
    ("proto", "port", "lifetime"),
    [
        pytest.param(IpProto.ICMP, 5000, 60, id="icmp"),
        pytest.param(IpProto.UDP, 0, 60, id="port-0"),
        pytest.param(IpProto.UDP, 70000, 60, id="port-too-big"),
        pytest.param(IpProto.UDP, 5000, 0, id="lifetime-0"),
    ],
)
def test_bad_commands_raise_local_protocol_error(proto: IpProto, port: int, lifetime: int) -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    with pytest.raises(LocalProtocolError):
        client.map(proto, port, now=0.0, lifetime=lifetime)


def test_unknown_result_code_is_reported_by_number() -> None:
    client = NatPmpClient(GATEWAY, local_ip=CLIENT_IP)
    client.map(IpProto.UDP, 5000, now=0.0)
    client.receive_datagram(map_response(result=42, port=0, lifetime=0), GATEWAY, now=0.0)
    (event,) = events_of(client)
    assert isinstance(event, MappingFailed) and event.reason == "NAT-PMP result 42"
