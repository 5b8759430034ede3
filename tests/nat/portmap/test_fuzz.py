"""Hypothesis: codecs round-trip, parsers raise nothing but
MalformedMessageError on garbage, and no core crashes on any datagram.

Deterministic (``derandomize=True``, no example database), as tests/stun's
fuzzing is, so CI replays exactly what ran here."""

from __future__ import annotations

import contextlib
import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.portmap import igd, natpmp, pcp, ssdp
from natkit.nat.portmap.client import NatPmpClient, PcpClient, PcpClientConfig
from natkit.nat.portmap.http import HttpExchange, HttpRequest, HttpResponse
from natkit.nat.portmap.server import NatPmpServer, PcpServer
from natkit.packet import IpProto

from .fakes import CLIENT_IP, GATEWAY, FakeBox

FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None)
MORE = settings(FUZZ, max_examples=300)

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
protos = st.sampled_from([IpProto.UDP, IpProto.TCP])
ipv4 = st.ip_addresses(v=4).map(str)


def _not_mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # IPv4-mapped IPv6 addresses decode as IPv4 (by design): no IPv6 round trip.
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None


ips = st.one_of(ipv4, st.ip_addresses(v=6).filter(_not_mapped).map(str))
nonces = st.binary(min_size=12, max_size=12)
sources = st.builds(Endpoint, st.sampled_from([CLIENT_IP, "192.168.1.11", "10.1.2.3", "::1"]), u16)

natpmp_requests = st.one_of(
    st.just(natpmp.ExternalAddressRequest()),
    st.builds(
        natpmp.MapRequest,
        proto=protos,
        internal_port=u16,
        suggested_external_port=u16,
        lifetime=u32,
    ),
)
natpmp_results = st.integers(0, 0xFFFF).map(natpmp.result_code)
natpmp_responses = st.one_of(
    st.builds(natpmp.ExternalAddressResponse, result=natpmp_results, epoch=u32, address=ipv4),
    st.builds(
        natpmp.MapResponse,
        proto=protos,
        result=natpmp_results,
        epoch=u32,
        internal_port=u16,
        external_port=u16,
        lifetime=u32,
    ),
    st.builds(
        natpmp.NatPmpErrorResponse,
        opcode=st.integers(0, 127),
        result=natpmp_results.filter(lambda r: r != 0),
        epoch=u32,
    ),
)

map_data = st.builds(
    pcp.MapData,
    nonce=nonces,
    protocol=st.integers(0, 255),
    internal_port=u16,
    external_port=u16,
    external_ip=ips,
)
peer_data = st.builds(
    pcp.PeerData,
    nonce=nonces,
    protocol=st.integers(0, 255),
    internal_port=u16,
    external_port=u16,
    external_ip=ips,
    remote_peer_port=u16,
    remote_peer_ip=ips,
)
options = st.lists(
    st.one_of(
        st.just(pcp.prefer_failure()),
        ips.map(pcp.third_party),
        st.builds(pcp.filter_option, st.integers(0, 128), u16, ips),
        st.builds(pcp.PcpOption, st.integers(4, 255), st.binary(max_size=40)),
    ),
    max_size=4,
).map(tuple)


@st.composite
def pcp_requests(draw: st.DrawFn) -> pcp.PcpRequest:
    opcode = draw(st.sampled_from([0, 1, 2, 3, 100]))
    data: pcp.OpcodeData
    if opcode == pcp.PcpOpcode.MAP:
        data = draw(map_data)
    elif opcode == pcp.PcpOpcode.PEER:
        data = draw(peer_data)
    elif opcode == pcp.PcpOpcode.ANNOUNCE:
        data = b""
    else:
        data = draw(st.binary(max_size=40).map(lambda b: b[: len(b) & ~3]))
    opts = draw(options) if opcode in (0, 1, 2) else ()
    return pcp.PcpRequest(
        opcode=opcode, lifetime=draw(u32), client_ip=draw(ips), data=data, options=opts
    )


@FUZZ
@given(natpmp_requests)
def test_natpmp_requests_round_trip(msg: natpmp.NatPmpRequest) -> None:
    assert natpmp.parse_request(natpmp.serialize_request(msg)) == msg


@FUZZ
@given(natpmp_responses)
def test_natpmp_responses_round_trip(msg: natpmp.NatPmpResponse) -> None:
    assert natpmp.parse_response(natpmp.serialize_response(msg)) == msg


@FUZZ
@given(pcp_requests())
def test_pcp_requests_round_trip(msg: pcp.PcpRequest) -> None:
    assert pcp.parse_request(pcp.serialize_request(msg)) == msg


@FUZZ
@given(pcp_requests(), st.integers(0, 255).map(pcp.result_code), u32)
def test_pcp_responses_round_trip(req: pcp.PcpRequest, result: int, epoch: int) -> None:
    msg = pcp.PcpResponse(
        opcode=req.opcode,
        result=result,
        lifetime=req.lifetime,
        epoch=epoch,
        data=req.data,
        options=req.options,
    )
    if result != pcp.PcpResult.SUCCESS and isinstance(req.data, bytes) and req.opcode in (1, 2):
        return  # a raw copy under a known opcode is not what a server sends with options
    assert pcp.parse_response(pcp.serialize_response(msg)) == msg


def _only_malformed(parse: object, data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        parse(data)  # type: ignore[operator]


@MORE
@given(st.binary(max_size=1200))
def test_binary_parsers_raise_only_malformed(data: bytes) -> None:
    for parse in (
        natpmp.parse_request,
        natpmp.parse_response,
        pcp.parse_request,
        pcp.parse_response,
        ssdp.parse_ssdp_response,
        igd.parse_xml,
    ):
        _only_malformed(parse, data)


@FUZZ
@given(st.binary(max_size=60), st.sampled_from([b"\x00", b"\x02", b"\x00\x80", b"\x02\x81"]))
def test_parsers_on_plausible_prefixes(data: bytes, prefix: bytes) -> None:
    for parse in (natpmp.parse_response, pcp.parse_response, pcp.parse_request):
        _only_malformed(parse, prefix + data)


xml_text = (
    st.lists(
        st.sampled_from(
            [*"<>/=\"' abcsuU:!?-&;x\n", "Body", "Fault", "errorCode", "s:", "<!DOCTYPE"]
        ),
        max_size=80,
    )
    .map("".join)
    .map(str.encode)
)


@FUZZ
@given(xml_text, st.sampled_from([200, 500]))
def test_xml_consumers_raise_only_malformed(data: bytes, status: int) -> None:
    _only_malformed(lambda d: igd.parse_description(d, "http://192.168.1.1/d.xml"), data)
    response = HttpResponse(status=status, reason="x", headers=(), body=data)
    _only_malformed(lambda _d: igd.parse_soap_response(response, "AddPortMapping"), data)


@FUZZ
@given(st.lists(st.binary(max_size=80), max_size=5))
def test_http_exchange_raises_only_malformed(chunks: list[bytes]) -> None:
    exchange = HttpExchange(HttpRequest(method="GET", url="http://192.168.1.1/"))
    try:
        for chunk in [*chunks, b""]:
            exchange.receive_data(chunk)
    except MalformedMessageError:
        pass


def _valid_requests() -> list[bytes]:
    return [
        b"\x00\x00",
        natpmp.serialize_request(
            natpmp.MapRequest(
                proto=IpProto.UDP, internal_port=5000, suggested_external_port=0, lifetime=60
            )
        ),
        pcp.serialize_request(
            pcp.PcpRequest(
                opcode=1,
                lifetime=60,
                client_ip=CLIENT_IP,
                data=pcp.MapData(
                    nonce=b"n" * 12,
                    protocol=17,
                    internal_port=5000,
                    external_port=0,
                    external_ip="0.0.0.0",
                ),
                options=(pcp.prefer_failure(),),
            )
        ),
    ]


mutated = st.tuples(
    st.sampled_from(_valid_requests()),
    st.lists(st.tuples(st.integers(0, 99), st.integers(0, 255)), max_size=6),
    st.integers(0, 120),
).map(
    lambda t: bytes(
        (t[0] + bytes(40))[: t[2]][i] if i not in dict(t[1]) else dict(t[1])[i]
        for i in range(len((t[0] + bytes(40))[: t[2]]))
    )
)


@MORE
@given(st.lists(st.tuples(st.one_of(st.binary(max_size=120), mutated), sources), max_size=8))
def test_servers_never_crash_and_answer_well_formed(
    datagrams: list[tuple[bytes, Endpoint]],
) -> None:
    box = FakeBox(capacity=5)
    servers: list[NatPmpServer | PcpServer] = [NatPmpServer(box, now=0.0), PcpServer(box, now=0.0)]
    for i, (data, src) in enumerate(datagrams):
        for server in servers:
            server.receive_datagram(data, src, now=float(i))
            for answer, dest, _ in server.datagrams_to_send(now=float(i)):
                assert dest == src
                parse = natpmp.parse_response if answer[0] == 0 else pcp.parse_response
                parse(answer)  # every answer is a well-formed response


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120), mutated), max_size=8))
def test_clients_never_crash_on_what_the_gateway_sends(datagrams: list[bytes]) -> None:
    clients: list[NatPmpClient | PcpClient] = [
        NatPmpClient(GATEWAY, local_ip=CLIENT_IP),
        PcpClient(GATEWAY, local_ip=CLIENT_IP, config=PcpClientConfig(rng=random.Random(0))),
    ]
    for client in clients:
        client.map(IpProto.UDP, 5000, now=0.0)
        for i, data in enumerate(datagrams):
            client.receive_datagram(data, GATEWAY, now=float(i))
            client.datagrams_to_send(now=float(i))
            while client.next_event() is not None:
                pass
        deadline = client.get_timer()
        if deadline is not None:
            client.handle_timer(now=deadline)
