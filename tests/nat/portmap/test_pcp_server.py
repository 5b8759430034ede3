"""PcpServer (RFC 6887) against a fake box: MAP, ANNOUNCE, the checks of
§8.3 and §11.3 with their result codes, and NAT-PMP on the same port."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.nat.portmap import natpmp, pcp
from natkit.nat.portmap.pcp import MapData, PcpOpcode, PcpOption, PcpRequest, PcpResult
from natkit.nat.portmap.server import PcpServer, PcpServerConfig
from natkit.packet import IpProto

from .fakes import CLIENT, CLIENT_IP, PUBLIC_IP, FakeBox, ask

NONCE = b"N" * 12


def map_req(
    port: int = 5000,
    *,
    lifetime: int = 7200,
    nonce: bytes = NONCE,
    protocol: int = 17,
    suggested_port: int = 0,
    suggested_ip: str = "0.0.0.0",
    client_ip: str = CLIENT_IP,
    options: tuple[PcpOption, ...] = (),
    opcode: int = PcpOpcode.MAP,
) -> bytes:
    return pcp.serialize_request(
        PcpRequest(
            opcode=opcode,
            lifetime=lifetime,
            client_ip=client_ip,
            data=MapData(
                nonce=nonce,
                protocol=protocol,
                internal_port=port,
                external_port=suggested_port,
                external_ip=suggested_ip,
            ),
            options=options,
        )
    )


def one(
    server: PcpServer, data: bytes, now: float = 10.0, src: Endpoint = CLIENT
) -> pcp.PcpResponse:
    (answer,) = ask(server, data, now=now, src=src)
    return pcp.parse_response(answer)


def test_map_success() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    response = one(server, map_req(suggested_port=6000))
    assert response == pcp.PcpResponse(
        opcode=PcpOpcode.MAP,
        result=PcpResult.SUCCESS,
        lifetime=7200,
        epoch=10,
        data=MapData(
            nonce=NONCE,
            protocol=17,
            internal_port=5000,
            external_port=6000,
            external_ip=PUBLIC_IP,
        ),
    )
    assert box.calls == [("add", IpProto.UDP, Endpoint(CLIENT_IP, 5000), 6000, 7200)]


@pytest.mark.parametrize(
    ("asked", "granted"),
    [pytest.param(30, 120, id="raised-to-minimum"), pytest.param(10**6, 86400, id="capped")],
)
def test_lifetime_is_clamped(asked: int, granted: int) -> None:
    server = PcpServer(FakeBox(), now=0.0)
    assert one(server, map_req(lifetime=asked)).lifetime == granted


def test_address_mismatch_when_a_nat_sits_between() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    response = one(server, map_req(client_ip="10.0.0.5"))
    assert response.result == PcpResult.ADDRESS_MISMATCH
    assert response.lifetime == 1800  # a long-lifetime error (§7.4)
    assert isinstance(response.data, MapData) and response.data.nonce == NONCE


def test_other_nonce_may_not_touch_a_mapping() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    one(server, map_req())
    assert one(server, map_req(nonce=b"X" * 12)).result == PcpResult.NOT_AUTHORIZED
    assert one(server, map_req(nonce=b"X" * 12, lifetime=0)).result == PcpResult.NOT_AUTHORIZED
    assert len(box.mappings) == 1


def test_same_nonce_renews_on_the_same_port() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    first = one(server, map_req(), now=1.0)
    again = one(server, map_req(suggested_port=9999), now=2.0)
    assert isinstance(first.data, MapData) and isinstance(again.data, MapData)
    assert again.data.external_port == first.data.external_port


def test_delete_with_the_nonce() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    one(server, map_req())
    response = one(server, map_req(lifetime=0))
    assert response.result == PcpResult.SUCCESS and response.lifetime == 0
    assert box.mappings == {}


def test_delete_all_removes_only_this_nonces_mappings() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    one(server, map_req(5000))
    one(server, map_req(5001, protocol=6))
    one(server, map_req(5002, nonce=b"O" * 12))
    assert one(server, map_req(0, lifetime=0, protocol=0)).result == PcpResult.SUCCESS
    assert list(box.mappings) == [(IpProto.UDP, Endpoint(CLIENT_IP, 5002))]


def test_delete_all_of_an_unknown_protocol() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    assert one(server, map_req(0, lifetime=0, protocol=1)).result == PcpResult.UNSUPP_PROTOCOL


@pytest.mark.parametrize(
    ("request_bytes", "result"),
    [
        pytest.param(map_req(protocol=1), PcpResult.UNSUPP_PROTOCOL, id="icmp"),
        pytest.param(map_req(protocol=0), PcpResult.UNSUPP_PROTOCOL, id="all-protocols"),
        pytest.param(map_req(port=0), PcpResult.MALFORMED_REQUEST, id="internal-port-0"),
        pytest.param(
            map_req(options=(pcp.third_party("192.168.1.20"),)),
            PcpResult.UNSUPP_OPTION,
            id="third-party",
        ),
        pytest.param(
            map_req(options=(pcp.prefer_failure(), pcp.prefer_failure())),
            PcpResult.MALFORMED_OPTION,
            id="prefer-failure-twice",
        ),
        pytest.param(b"\x02\x02" + map_req()[2:24] + bytes(56), PcpResult.UNSUPP_OPCODE, id="peer"),
        pytest.param(map_req()[:24] + b"\xde\xad\xbe\xef", PcpResult.MALFORMED_REQUEST, id="short"),
        pytest.param(map_req()[:-2], PcpResult.MALFORMED_REQUEST, id="not-multiple-of-4"),
        pytest.param(b"\x01" + map_req()[1:], PcpResult.UNSUPP_VERSION, id="version-1"),
    ],
)
def test_errors(request_bytes: bytes, result: PcpResult) -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    response = one(server, request_bytes)
    assert response.result == result
    assert response.opcode == request_bytes[1]
    assert box.mappings == {}


def test_malformed_request_is_answered_with_a_copy() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    data = map_req()[:30]
    response = one(server, data)
    assert response.result == PcpResult.MALFORMED_REQUEST
    assert response.data == data[24:28]


def test_optional_unknown_option_is_ignored() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    response = one(server, map_req(options=(PcpOption(200, b"hi"),)))
    assert response.result == PcpResult.SUCCESS and response.options == ()


def test_prefer_failure_refuses_another_port() -> None:
    box = FakeBox(taken={6000}, strict=True)
    server = PcpServer(box, now=0.0)
    response = one(server, map_req(suggested_port=6000, options=(pcp.prefer_failure(),)))
    assert response.result == PcpResult.CANNOT_PROVIDE_EXTERNAL
    assert response.lifetime == 30  # a short-lifetime error
    assert box.mappings == {}


def test_prefer_failure_refuses_another_address() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    response = one(server, map_req(suggested_ip="198.51.100.99", options=(pcp.prefer_failure(),)))
    assert response.result == PcpResult.CANNOT_PROVIDE_EXTERNAL


def test_prefer_failure_when_box_gives_another_port() -> None:
    box = FakeBox(taken={6000})
    server = PcpServer(box, now=0.0)
    response = one(server, map_req(suggested_port=6000, options=(pcp.prefer_failure(),)))
    assert response.result == PcpResult.CANNOT_PROVIDE_EXTERNAL
    assert box.mappings == {}  # the mapping on another port was taken back


def test_prefer_failure_granted_is_echoed() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    response = one(server, map_req(suggested_port=6000, options=(pcp.prefer_failure(),)))
    assert response.result == PcpResult.SUCCESS
    assert response.options == (pcp.prefer_failure(),)
    assert isinstance(response.data, MapData) and response.data.external_port == 6000


def test_suggested_address_without_prefer_failure_is_a_hint() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    response = one(server, map_req(suggested_ip="198.51.100.99"))
    assert isinstance(response.data, MapData) and response.data.external_ip == PUBLIC_IP


@pytest.mark.parametrize(
    ("box", "result"),
    [
        pytest.param(FakeBox(refuse=True), PcpResult.NO_RESOURCES, id="refused"),
        pytest.param(FakeBox(public=[]), PcpResult.NETWORK_FAILURE, id="no-public-address"),
    ],
)
def test_box_failures(box: FakeBox, result: PcpResult) -> None:
    assert one(PcpServer(box, now=0.0), map_req()).result == result


def test_renewal_refused_by_the_box_forgets_the_grant() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    one(server, map_req())
    box.refuse = True
    assert one(server, map_req()).result == PcpResult.NO_RESOURCES
    box.refuse = False
    assert one(server, map_req(nonce=b"Z" * 12)).result == PcpResult.SUCCESS


def test_quota_is_user_ex_quota() -> None:
    server = PcpServer(FakeBox(), PcpServerConfig(max_mappings_per_client=1), now=0.0)
    one(server, map_req(5000))
    assert one(server, map_req(5001)).result == PcpResult.USER_EX_QUOTA


def test_announce() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    request = pcp.serialize_request(
        PcpRequest(opcode=PcpOpcode.ANNOUNCE, lifetime=0, client_ip=CLIENT_IP)
    )
    assert one(server, request, now=77.0) == pcp.PcpResponse(
        opcode=PcpOpcode.ANNOUNCE, result=PcpResult.SUCCESS, lifetime=0, epoch=77
    )


def test_announce_with_mandatory_option_is_refused() -> None:
    server = PcpServer(FakeBox(), now=0.0)
    request = pcp.serialize_request(
        PcpRequest(
            opcode=PcpOpcode.ANNOUNCE,
            lifetime=0,
            client_ip=CLIENT_IP,
            options=(pcp.prefer_failure(),),
        )
    )
    assert one(server, request).result == PcpResult.UNSUPP_OPTION


def test_natpmp_on_the_same_port_shares_mappings() -> None:
    box = FakeBox()
    server = PcpServer(box, now=0.0)
    one(server, map_req(5000))
    # A NAT-PMP deletion of the PCP-made mapping works: it is the same host.
    (answer,) = ask(
        server,
        natpmp.serialize_request(
            natpmp.MapRequest(
                proto=IpProto.UDP, internal_port=5000, suggested_external_port=0, lifetime=0
            )
        ),
        now=10.0,
    )
    assert natpmp.parse_response(answer).result == natpmp.NatPmpResult.SUCCESS
    assert box.mappings == {}


def test_without_natpmp_version_0_gets_pcp_unsupp_version() -> None:
    server = PcpServer(FakeBox(), PcpServerConfig(natpmp=False), now=0.0)
    response = one(server, b"\x00\x00")
    assert response.result == PcpResult.UNSUPP_VERSION
    assert response.opcode == 0


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x02", id="one-octet"),
        pytest.param(b"\x02\x81" + bytes(58), id="a-response"),
    ],
)
def test_what_is_not_a_request_is_dropped(data: bytes) -> None:
    server = PcpServer(FakeBox(), now=0.0)
    assert ask(server, data, now=1.0) == []
    assert server.get_timer() is None
    server.handle_timer(now=1.0)
    server.next_event()  # a server reports nothing
