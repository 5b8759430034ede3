"""Symmetric response (RFC 3581) and response routing (RFC 3261 §18.2)."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.rng import seeded_rng
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipRequest, make_response, parse_message
from natkit.sip.via_routing import (
    BRANCH_MAGIC_COOKIE,
    client_via,
    new_branch,
    response_target,
    stamp_received,
)

LOCAL = Endpoint("198.51.100.1", 5060)


def _request(via: str) -> SipRequest:
    data = (
        "OPTIONS sip:bob@example.org SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKlower\r\n"
        "To: <sip:bob@example.org>\r\n"
        "From: <sip:alice@example.org>;tag=a\r\n"
        "Call-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    assert isinstance(msg, SipRequest)
    return msg


def _source(remote: Endpoint, transport: SipTransport = SipTransport.UDP) -> Source:
    return Source(transport=transport, remote=remote, local=LOCAL, flow="f1")


@pytest.mark.parametrize(
    ("via", "remote", "received", "rport"),
    [
        pytest.param(
            "SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK1",
            Endpoint("192.0.2.5", 5060),
            None,
            None,
            id="same-host-untouched",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1",
            Endpoint("203.0.113.9", 40000),
            "203.0.113.9",
            None,
            id="nat-received",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK1;rport",
            Endpoint("203.0.113.9", 40000),
            "203.0.113.9",
            40000,
            id="rport-filled",
        ),
        pytest.param(
            "SIP/2.0/UDP 192.0.2.5:5060;rport;branch=z9hG4bK1",
            Endpoint("192.0.2.5", 5060),
            "192.0.2.5",
            5060,
            id="rport-adds-received-always",
        ),
        pytest.param(
            "SIP/2.0/UDP client.example.org;branch=z9hG4bK1",
            Endpoint("192.0.2.5", 5060),
            "192.0.2.5",
            None,
            id="host-name",
        ),
    ],
)
def test_stamp_received(
    via: str, remote: Endpoint, received: str | None, rport: int | None
) -> None:
    request = _request(via)
    stamp_received(request, _source(remote))
    top = request.top_via
    assert top.received == received
    assert top.rport == rport
    assert top.branch == "z9hG4bK1"
    assert len(request.vias) == 2
    assert request.vias[1].branch == "z9hG4bKlower"


def _response_to(
    via: str, remote: Endpoint, transport: SipTransport
) -> tuple[Target | None, Source]:
    source = _source(remote, transport)
    request = _request(via)
    stamp_received(request, source)
    return response_target(make_response(request, 200), source), source


@pytest.mark.parametrize(
    ("via", "transport", "expected"),
    [
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK1;rport",
            SipTransport.UDP,
            Target(SipTransport.UDP, Endpoint("203.0.113.9", 40000), "f1"),
            id="udp-rport-symmetric",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2:5062;branch=z9hG4bK1",
            SipTransport.UDP,
            Target(SipTransport.UDP, Endpoint("203.0.113.9", 5062)),
            id="udp-received-sent-by-port",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1",
            SipTransport.UDP,
            Target(SipTransport.UDP, Endpoint("203.0.113.9", 5060)),
            id="udp-default-port",
        ),
        pytest.param(
            "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1;maddr=239.1.1.1",
            SipTransport.UDP,
            Target(SipTransport.UDP, Endpoint("239.1.1.1", 5060)),
            id="udp-maddr",
        ),
        pytest.param(
            "SIP/2.0/TCP 10.0.0.2:5070;branch=z9hG4bK1",
            SipTransport.TCP,
            Target(SipTransport.TCP, Endpoint("203.0.113.9", 40000), "f1"),
            id="tcp-same-flow",
        ),
        pytest.param(
            "SIP/2.0/WSS abc.invalid;branch=z9hG4bK1",
            SipTransport.WSS,
            Target(SipTransport.WSS, Endpoint("203.0.113.9", 40000), "f1"),
            id="wss-same-flow",
        ),
    ],
)
def test_response_target(via: str, transport: SipTransport, expected: Target) -> None:
    target, _ = _response_to(via, Endpoint("203.0.113.9", 40000), transport)
    assert target == expected


def test_response_target_without_source_on_tls_uses_5061() -> None:
    request = _request("SIP/2.0/TLS 192.0.2.8;branch=z9hG4bK1")
    target = response_target(make_response(request, 200))
    assert target == Target(SipTransport.TLS, Endpoint("192.0.2.8", 5061))


@pytest.mark.parametrize(
    "via",
    [
        pytest.param("SIP/2.0/SCTP 192.0.2.8;branch=z9hG4bK1", id="unknown-transport"),
        pytest.param("SIP/2.0/UDP host.example.org;branch=z9hG4bK1", id="host-name"),
    ],
)
def test_response_target_unroutable(via: str) -> None:
    request = _request(via)
    assert response_target(make_response(request, 200)) is None


def test_client_via_asks_for_rport_with_a_fresh_branch() -> None:
    rng = seeded_rng(1)
    via = client_via(SipTransport.TCP, Endpoint("192.0.2.4", 5060), rng)
    assert str(via).startswith("SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bK")
    assert via.has_rport
    assert via.rport is None
    other = client_via(SipTransport.UDP, "ua.example.org", rng, port=5070)
    assert other.host == "ua.example.org"
    assert other.port == 5070
    assert other.branch != via.branch


def test_branches_are_seeded_and_carry_the_cookie() -> None:
    a, b = new_branch(seeded_rng(7)), new_branch(seeded_rng(7))
    assert a == b
    assert a.startswith(BRANCH_MAGIC_COOKIE)
    assert len(a) > len(BRANCH_MAGIC_COOKIE) + 16
