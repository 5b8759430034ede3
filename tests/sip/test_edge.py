"""The RFC 5626 §5 edge proxy core: Path and flow tokens, routing over flows, 430/403."""

from __future__ import annotations

from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.sip.edge import EdgeProxy, EdgeProxyConfig
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.flow_token import FlowTokenSigner
from natkit.sip.forwarding import stateless_branch
from natkit.sip.message import SipMessage, SipRequest, SipResponse, parse_message
from natkit.sip.uri import SipUri

TORTURE = Path(__file__).parent.parent / "data" / "sip_torture"
SIGNER = FlowTokenSigner([b"k" * 32])
EDGE_IP = "192.0.2.10"
UPSTREAM = Target(SipTransport.UDP, Endpoint("192.0.2.20", 5060))
UA_TCP = Source(SipTransport.TCP, Endpoint("203.0.113.5", 40001), Endpoint(EDGE_IP, 5060), "c7")
UA_UDP = Source(SipTransport.UDP, Endpoint("203.0.113.6", 4444), Endpoint(EDGE_IP, 5060), "u9")
FROM_UPSTREAM = Source(SipTransport.UDP, UPSTREAM.remote, Endpoint(EDGE_IP, 5060), "u1")


def make_edge(flow_timer: int | None = 120) -> EdgeProxy:
    edge = EdgeProxy(
        EdgeProxyConfig(
            host=EDGE_IP,
            ports={SipTransport.UDP: 5060, SipTransport.TCP: 5060},
            upstream=UPSTREAM,
            signer=SIGNER,
            flow_timer=flow_timer,
        )
    )
    edge.flow_opened(UA_TCP)
    return edge


def msg(text: str) -> SipMessage:
    return parse_message(text.replace("\n", "\r\n").encode())


def register(*, outbound: bool = True, vias: int = 1) -> SipRequest:
    extra_via = "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKfirst\n" * (vias - 1)
    contact = (
        '<sip:alice@10.0.0.5:5060;transport=tcp;ob>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>"'
        if outbound
        else "<sip:alice@10.0.0.5:5060;transport=tcp>"
    )
    supported = "Supported: outbound, path\n" if outbound else ""
    request = msg(
        "REGISTER sip:example.org SIP/2.0\n"
        "Via: SIP/2.0/TCP 10.0.0.5:5060;branch=z9hG4bKreg1;rport\n"
        f"{extra_via}"
        "Max-Forwards: 70\n"
        "From: <sip:alice@example.org>;tag=a1\n"
        "To: <sip:alice@example.org>\n"
        "Call-ID: reg-1\n"
        "CSeq: 1 REGISTER\n"
        f"{supported}"
        f"Contact: {contact}\n"
        "Content-Length: 0\n\n"
    )
    assert isinstance(request, SipRequest)
    return request


def invite(*, route: str | None, to_tag: str | None = None, contact: str = "") -> SipRequest:
    route_line = f"Route: {route}\n" if route else ""
    tag = f";tag={to_tag}" if to_tag else ""
    contact_line = f"Contact: {contact}\n" if contact else ""
    request = msg(
        "INVITE sip:alice@10.0.0.5:5060;transport=tcp SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKinv1\n"
        f"{route_line}"
        "Max-Forwards: 69\n"
        "From: <sip:bob@example.org>;tag=b1\n"
        f"To: <sip:alice@example.org>{tag}\n"
        "Call-ID: call-1\n"
        "CSeq: 1 INVITE\n"
        f"{contact_line}"
        "Content-Length: 0\n\n"
    )
    assert isinstance(request, SipRequest)
    return request


def only(edge: EdgeProxy) -> tuple[SipMessage, Target]:
    out = edge.messages_to_send()
    assert len(out) == 1, out
    return out[0]


def registered_path(edge: EdgeProxy, source: Source = UA_TCP, *, outbound: bool = True) -> str:
    edge.receive_message(register(outbound=outbound), source, now=0.0)
    forwarded, _ = only(edge)
    assert isinstance(forwarded, SipRequest)
    path = forwarded.headers.get("Path")
    assert path is not None
    return path


# -- REGISTER: RFC 5626 §5.1, RFC 3327 §5.2 -------------------------------------


def test_register_goes_upstream_with_a_path_naming_its_flow() -> None:
    edge = make_edge()
    edge.receive_message(register(), UA_TCP, now=0.0)
    forwarded, target = only(edge)
    assert target == UPSTREAM
    assert isinstance(forwarded, SipRequest)
    (path,) = forwarded.name_addrs("Path")
    assert isinstance(path.uri, SipUri)
    assert path.uri.host == EDGE_IP and path.uri.lr and path.uri.has_param("ob")
    assert path.uri.user is not None
    assert SIGNER.decode(path.uri.user) == UA_TCP
    assert forwarded.max_forwards == 69
    top = forwarded.top_via
    assert top.host == EDGE_IP and top.transport == "UDP"
    assert top.branch is not None and top.branch.startswith("z9hG4bK")
    assert len(forwarded.vias) == 2


@pytest.mark.parametrize(
    ("outbound", "vias", "ob"),
    [
        pytest.param(True, 1, True, id="outbound-first-hop"),
        pytest.param(False, 1, False, id="no-outbound"),
        pytest.param(True, 2, False, id="outbound-not-first-hop"),
    ],
)
def test_path_carries_ob_only_for_outbound_at_the_first_hop(
    outbound: bool, vias: int, ob: bool
) -> None:
    edge = make_edge()
    edge.receive_message(register(outbound=outbound, vias=vias), UA_TCP, now=0.0)
    forwarded, _ = only(edge)
    assert isinstance(forwarded, SipRequest)
    (path,) = forwarded.name_addrs("Path")
    assert isinstance(path.uri, SipUri)
    assert path.uri.has_param("ob") is ob


def test_register_response_returns_over_the_flow_with_flow_timer() -> None:
    edge = make_edge(flow_timer=90)
    edge.receive_message(register(), UA_TCP, now=0.0)
    forwarded, _ = only(edge)
    vias = forwarded.headers.get_all("Via")
    response = msg(
        "SIP/2.0 200 OK\n"
        + "".join(f"Via: {v}\n" for v in vias)
        + "From: <sip:alice@example.org>;tag=a1\n"
        "To: <sip:alice@example.org>;tag=r1\n"
        "Call-ID: reg-1\n"
        "CSeq: 1 REGISTER\n"
        "Require: outbound\n"
        "Content-Length: 0\n\n"
    )
    edge.receive_message(response, FROM_UPSTREAM, now=0.0)
    out, target = only(edge)
    assert target == Target(SipTransport.TCP, UA_TCP.remote, UA_TCP.flow)
    assert isinstance(out, SipResponse)
    assert len(out.vias) == 1 and out.top_via.branch == "z9hG4bKreg1"
    assert out.headers.get("Flow-Timer") == "90"


# -- incoming requests: RFC 5626 §5.3.1 -----------------------------------------


def test_incoming_request_follows_the_token_and_is_record_routed_with_ob() -> None:
    edge = make_edge()
    path = registered_path(edge)
    edge.receive_message(invite(route=path), FROM_UPSTREAM, now=1.0)
    forwarded, target = only(edge)
    assert target == Target(SipTransport.TCP, UA_TCP.remote, UA_TCP.flow)
    assert isinstance(forwarded, SipRequest)
    assert "Route" not in forwarded.headers
    assert forwarded.headers.get("Record-Route") == path
    assert forwarded.top_via.host == EDGE_IP and forwarded.top_via.transport == "TCP"


def test_mid_dialog_incoming_request_is_not_record_routed() -> None:
    edge = make_edge()
    path = registered_path(edge)
    edge.receive_message(invite(route=path, to_tag="t1"), FROM_UPSTREAM, now=1.0)
    forwarded, _ = only(edge)
    assert "Record-Route" not in forwarded.headers


def test_request_for_a_closed_flow_is_answered_430() -> None:
    edge = make_edge()
    path = registered_path(edge)
    edge.flow_closed(UA_TCP.flow)
    edge.receive_message(invite(route=path), FROM_UPSTREAM, now=1.0)
    response, target = only(edge)
    assert isinstance(response, SipResponse)
    assert response.status == 430 and response.reason == "Flow Failed"
    assert target.remote == UPSTREAM.remote
    assert edge.stats.rejected == {430: 1}


def test_udp_flows_are_always_taken_to_be_alive() -> None:
    edge = make_edge()
    path = registered_path(edge, UA_UDP)
    edge.receive_message(invite(route=path), FROM_UPSTREAM, now=1.0)
    _, target = only(edge)
    assert target == Target(SipTransport.UDP, UA_UDP.remote, UA_UDP.flow)


def test_forged_flow_token_is_answered_403() -> None:
    edge = make_edge()
    path = registered_path(edge)
    forged = path.replace("sip:", "sip:x", 1)
    edge.receive_message(invite(route=forged), FROM_UPSTREAM, now=1.0)
    response, _ = only(edge)
    assert isinstance(response, SipResponse) and response.status == 403


def test_token_from_another_cluster_secret_is_answered_403() -> None:
    other = FlowTokenSigner([b"z" * 32]).encode(UA_TCP)
    edge = make_edge()
    edge.receive_message(invite(route=f"<sip:{other}@{EDGE_IP};lr>"), FROM_UPSTREAM, now=1.0)
    response, _ = only(edge)
    assert isinstance(response, SipResponse) and response.status == 403


def test_request_from_upstream_without_a_token_is_not_relayed() -> None:
    edge = make_edge()
    edge.receive_message(invite(route=None), FROM_UPSTREAM, now=1.0)
    response, _ = only(edge)
    assert isinstance(response, SipResponse) and response.status == 404


# -- outgoing requests: RFC 5626 §5.3.2 -----------------------------------------


def test_outgoing_dialog_forming_request_is_record_routed_with_the_ua_flow() -> None:
    edge = make_edge()
    request = invite(route=None, contact="<sip:alice@10.0.0.5;transport=tcp;ob>")
    edge.receive_message(request, UA_TCP, now=1.0)
    forwarded, target = only(edge)
    assert target == UPSTREAM
    (record_route,) = forwarded.name_addrs("Record-Route")
    assert isinstance(record_route.uri, SipUri)
    assert record_route.uri.user is not None
    assert SIGNER.decode(record_route.uri.user) == UA_TCP
    assert record_route.uri.has_param("ob") and record_route.uri.transport == "tcp"


def test_request_on_the_tokens_own_flow_is_outgoing() -> None:
    edge = make_edge()
    path = registered_path(edge)
    edge.receive_message(invite(route=path, to_tag="t1"), UA_TCP, now=1.0)
    forwarded, target = only(edge)
    assert target == UPSTREAM
    assert "Route" not in forwarded.headers


# -- safety ---------------------------------------------------------------------


def test_max_forwards_zero_is_answered_483() -> None:
    edge = make_edge()
    request = register()
    request.headers.set("Max-Forwards", "0")
    edge.receive_message(request, UA_TCP, now=0.0)
    response, target = only(edge)
    assert isinstance(response, SipResponse) and response.status == 483
    assert target == Target(SipTransport.TCP, UA_TCP.remote, UA_TCP.flow)
    assert response.to.tag is not None


def test_ack_is_never_answered() -> None:
    edge = make_edge()
    request = msg(
        "ACK sip:alice@example.org SIP/2.0\n"
        "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKack\n"
        "Max-Forwards: 0\n"
        "From: <sip:bob@example.org>;tag=b\n"
        "To: <sip:alice@example.org>;tag=a\n"
        "Call-ID: c\nCSeq: 1 ACK\nContent-Length: 0\n\n"
    )
    edge.receive_message(request, UA_UDP, now=0.0)
    assert edge.messages_to_send() == []


def test_response_without_the_edges_via_is_dropped() -> None:
    edge = make_edge()
    response = msg(
        "SIP/2.0 200 OK\n"
        "Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bKx\n"
        "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKy\n"
        "From: <sip:a@example.org>;tag=1\nTo: <sip:a@example.org>\n"
        "Call-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    edge.receive_message(response, FROM_UPSTREAM, now=0.0)
    assert edge.messages_to_send() == []
    assert edge.stats.dropped == 1


def test_response_with_a_forged_flow_param_is_dropped() -> None:
    edge = make_edge()
    response = msg(
        "SIP/2.0 200 OK\n"
        f"Via: SIP/2.0/UDP {EDGE_IP}:5060;branch=z9hG4bKx;nkf=AAAA\n"
        "Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKy\n"
        "From: <sip:a@example.org>;tag=1\nTo: <sip:a@example.org>\n"
        "Call-ID: c\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    edge.receive_message(response, FROM_UPSTREAM, now=0.0)
    assert edge.messages_to_send() == []


def test_retransmission_and_cancel_get_the_invites_branch() -> None:
    request = invite(route=None)
    cancel = request.copy()
    cancel.method = "CANCEL"
    cancel.headers.set("CSeq", "1 CANCEL")
    assert stateless_branch(request) == stateless_branch(request.copy())
    assert stateless_branch(request) == stateless_branch(cancel)


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        EdgeProxyConfig(host=EDGE_IP, ports={}, upstream=UPSTREAM, signer=SIGNER)


@pytest.mark.parametrize("name", sorted(p.name for p in TORTURE.glob("*.dat")))
def test_torture_messages_never_break_the_edge(name: str) -> None:
    try:
        message = parse_message((TORTURE / name).read_bytes())
    except MalformedMessageError:
        return
    edge = make_edge()
    for source in (UA_TCP, UA_UDP, FROM_UPSTREAM):
        edge.receive_message(message, source, now=0.0)
        for out, _ in edge.messages_to_send():
            if isinstance(out, SipResponse):
                assert 400 <= out.status < 700


@pytest.mark.parametrize(
    ("transport", "scheme", "param"),
    [
        pytest.param(SipTransport.UDP, "sip", None, id="udp"),
        pytest.param(SipTransport.TCP, "sip", "tcp", id="tcp"),
        pytest.param(SipTransport.TLS, "sips", "tcp", id="tls-as-sips"),
        pytest.param(SipTransport.WS, "sip", "ws", id="ws"),
        pytest.param(SipTransport.WSS, "sips", "ws", id="wss-as-sips"),
    ],
)
def test_path_uri_names_the_transport_as_rfc_5630_and_7118_say(
    transport: SipTransport, scheme: str, param: str | None
) -> None:
    edge = make_edge()
    source = Source(transport, Endpoint("203.0.113.8", 50000), Endpoint(EDGE_IP, 5060), "f")
    edge.flow_opened(source)
    edge.receive_message(register(), source, now=0.0)
    forwarded, _ = only(edge)
    (path,) = forwarded.name_addrs("Path")
    assert isinstance(path.uri, SipUri)
    assert path.uri.scheme == scheme and path.uri.transport == param


def test_other_members_of_the_upstream_cluster_are_routed_by_token() -> None:
    peer = Endpoint("192.0.2.21", 5060)
    edge = EdgeProxy(
        EdgeProxyConfig(
            host=EDGE_IP,
            ports={SipTransport.UDP: 5060},
            upstream=UPSTREAM,
            signer=SIGNER,
            upstream_peers=frozenset({peer}),
        )
    )
    from_peer = Source(SipTransport.UDP, peer, Endpoint(EDGE_IP, 5060), "p")
    edge.receive_message(invite(route=None), from_peer, now=0.0)
    response, _ = only(edge)
    assert isinstance(response, SipResponse) and response.status == 404


@pytest.mark.parametrize(
    ("upstream_transport", "alias"),
    [
        pytest.param(SipTransport.TCP, True, id="tcp"),
        pytest.param(SipTransport.UDP, False, id="udp"),
    ],
)
def test_connection_reuse_puts_alias_in_the_upstream_via(
    upstream_transport: SipTransport, alias: bool
) -> None:
    # RFC 5923 §5: only over connection-oriented transports.
    upstream = Target(upstream_transport, UPSTREAM.remote)
    edge = EdgeProxy(
        EdgeProxyConfig(
            host=EDGE_IP,
            ports={SipTransport.UDP: 5060, SipTransport.TCP: 5060},
            upstream=upstream,
            signer=SIGNER,
            connection_reuse=True,
        )
    )
    edge.flow_opened(UA_TCP)
    edge.receive_message(register(), UA_TCP, now=0.0)
    forwarded, target = only(edge)
    assert target == upstream and isinstance(forwarded, SipRequest)
    assert forwarded.top_via.has_param("alias") is alias
