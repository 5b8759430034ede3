"""SSDP M-SEARCH and its responses (UDA 1.1 §1.3), and the search core on
explicit time."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.portmap import ssdp
from natkit.nat.portmap.ssdp import (
    DeviceFound,
    SearchFinished,
    SsdpResponse,
    SsdpSearch,
    SsdpSearchConfig,
)

from .upnp_samples import SSDP_RESPONSE

ROUTER = Endpoint("192.168.1.1", 1900)


def test_msearch_layout() -> None:
    assert ssdp.build_msearch(
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1", mx=2, user_agent=None
    ) == (
        b"M-SEARCH * HTTP/1.1\r\n"
        b"HOST: 239.255.255.250:1900\r\n"
        b'MAN: "ssdp:discover"\r\n'
        b"MX: 2\r\n"
        b"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n"
        b"\r\n"
    )


def test_msearch_with_user_agent() -> None:
    assert b"USER-AGENT: natkit UPnP/1.1\r\n" in ssdp.build_msearch(
        "ssdp:all", user_agent="natkit UPnP/1.1"
    )


@pytest.mark.parametrize(
    ("st", "mx"),
    [("ssdp:all", 0), ("ssdp:all", 6), ("a\r\nEVIL: 1", 2), ("", 2)],
)
def test_msearch_refuses_bad_arguments(st: str, mx: int) -> None:
    with pytest.raises(ValueError):
        ssdp.build_msearch(st, mx=mx)


def test_parse_response() -> None:
    assert ssdp.parse_ssdp_response(SSDP_RESPONSE) == SsdpResponse(
        location="http://192.168.1.1:5000/rootDesc.xml",
        st="urn:schemas-upnp-org:device:InternetGatewayDevice:1",
        usn="uuid:3c1f0a2e-0000-4000-8000-00163e000001::"
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
        server="Debian/12 UPnP/1.1 GatewayOS/2.3",
        max_age=120,
    )


def test_header_names_are_case_insensitive() -> None:
    data = b"HTTP/1.1 200 OK\r\nlocation: http://10.0.0.1/d.xml\r\nst: x\r\n\r\n"
    response = ssdp.parse_ssdp_response(data)
    assert response.location == "http://10.0.0.1/d.xml" and response.max_age is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"NOTIFY * HTTP/1.1\r\nLOCATION: http://x/\r\nST: x\r\n\r\n", id="notify"),
        pytest.param(b"HTTP/1.1 404 Not Found\r\n\r\n", id="not-200"),
        pytest.param(b"HTTP/1.1 200 OK\r\nST: x\r\n\r\n", id="no-location"),
        pytest.param(b"HTTP/1.1 200 OK\r\nLOCATION: http://x/\r\n\r\n", id="no-st"),
        pytest.param(b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", id="folded-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n", id="no-colon"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(SSDP_RESPONSE + b"X" * 9000, id="too-large"),
        pytest.param(b"HTTP/1.1 200 OK\r\n" + b"A: b\r\n" * 65 + b"\r\n", id="too-many-headers"),
    ],
)
def test_bad_responses_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        ssdp.parse_ssdp_response(data)
    assert info.value.error_code is None


@pytest.mark.parametrize(
    ("location", "ok"),
    [
        ("http://192.168.1.1:5000/rootDesc.xml", True),
        ("http://192.168.1.2:5000/rootDesc.xml", False),
        ("https://192.168.1.1/rootDesc.xml", False),
        ("http://router.lan/rootDesc.xml", False),
        ("http://[::1/", False),
    ],
)
def test_location_must_name_the_sender(location: str, ok: bool) -> None:
    assert ssdp.location_matches(location, ROUTER) is ok


def search(**config: object) -> SsdpSearch:
    return SsdpSearch(
        [ssdp.SSDP_MULTICAST, ROUTER],
        SsdpSearchConfig(**config),  # type: ignore[arg-type]
    )


def test_search_sends_each_target_to_each_destination_then_waits() -> None:
    core = search(mx=2, sends=2, interval=1.0)
    core.start(now=0.0)
    first = core.datagrams_to_send(now=0.0)
    assert [(remote, data.split(b"\r\n")[4]) for data, remote, _ in first] == [
        (ssdp.SSDP_MULTICAST, b"ST: " + ssdp.IGD_SEARCH_TARGETS[0].encode()),
        (ROUTER, b"ST: " + ssdp.IGD_SEARCH_TARGETS[0].encode()),
        (ssdp.SSDP_MULTICAST, b"ST: " + ssdp.IGD_SEARCH_TARGETS[1].encode()),
        (ROUTER, b"ST: " + ssdp.IGD_SEARCH_TARGETS[1].encode()),
    ]
    assert b"HOST: 192.168.1.1:1900" in first[1][0]
    assert core.get_timer() == 1.0
    core.handle_timer(now=1.0)
    assert len(core.datagrams_to_send(now=1.0)) == 4
    assert core.get_timer() == 4.0  # MX + 1 after the last send
    core.handle_timer(now=4.0)
    assert core.next_event() == SearchFinished(found=0)
    assert core.get_timer() is None and core.finished
    core.handle_timer(now=5.0)
    core.start(now=5.0)
    assert core.datagrams_to_send(now=5.0) == []


def test_each_device_is_reported_once() -> None:
    core = search()
    core.start(now=0.0)
    core.receive_datagram(SSDP_RESPONSE, ROUTER, now=0.1)
    core.receive_datagram(SSDP_RESPONSE, ROUTER, now=0.2)
    event = core.next_event()
    assert isinstance(event, DeviceFound) and event.source == ROUTER
    assert core.next_event() is None


def test_responses_naming_another_host_or_malformed_are_ignored() -> None:
    core = search()
    core.start(now=0.0)
    core.receive_datagram(SSDP_RESPONSE, Endpoint("192.168.1.66", 1900), now=0.1)
    core.receive_datagram(b"garbage", ROUTER, now=0.1)
    assert core.next_event() is None


def test_responses_before_start_or_after_the_end_are_ignored() -> None:
    core = search(sends=1, mx=1)
    core.receive_datagram(SSDP_RESPONSE, ROUTER, now=0.0)
    core.start(now=0.0)
    core.handle_timer(now=2.0)
    assert core.next_event() == SearchFinished(found=0)
    core.receive_datagram(SSDP_RESPONSE, ROUTER, now=2.1)
    assert core.next_event() is None


def test_device_count_is_bounded() -> None:
    core = search(max_devices=2)
    core.start(now=0.0)
    for i in range(5):
        data = SSDP_RESPONSE.replace(b"rootDesc", f"d{i}".encode())
        core.receive_datagram(data, ROUTER, now=0.1)
    found = []
    while (event := core.next_event()) is not None:
        found.append(event)
    assert len(found) == 2


def test_response_without_final_blank_line_is_accepted() -> None:
    data = b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.0.1/d.xml\r\nST: x\r\n"
    assert ssdp.parse_ssdp_response(data).st == "x"
