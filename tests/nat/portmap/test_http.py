"""HttpExchange over h11: request bytes, response framing, bounds, errors."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.portmap.http import HttpExchange, HttpRequest, HttpResponse, split_http_url

from .upnp_samples import http_response

URL = "http://192.168.1.1:5000/ctl/IPConn"


def response_of(exchange: HttpExchange) -> HttpResponse | None:
    return exchange.response


def test_post_request_bytes() -> None:
    exchange = HttpExchange(
        HttpRequest(method="POST", url=URL, headers=(("SOAPAction", '"x#y"'),), body=b"<x/>")
    )
    data = exchange.data_to_send()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /ctl/IPConn HTTP/1.1"
    assert set(lines[1:]) == {
        b"Host: 192.168.1.1:5000",
        b"Connection: close",
        b'SOAPAction: "x#y"',
        b"Content-Length: 4",
    }
    assert body == b"<x/>"
    assert exchange.data_to_send() == b""
    assert exchange.server == Endpoint("192.168.1.1", 5000)


def test_get_request_has_no_content_length() -> None:
    data = HttpExchange(HttpRequest(method="GET", url="http://10.0.0.1/d.xml?a=1")).data_to_send()
    assert data.startswith(b"GET /d.xml?a=1 HTTP/1.1\r\n")
    assert b"Content-Length" not in data and b"Host: 10.0.0.1:80" in data


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_response_fed_byte_at_a_time(chunked: bool) -> None:
    exchange = HttpExchange(HttpRequest(method="GET", url=URL))
    wire = http_response(200, "OK", b"<root/>", chunked=chunked)
    for i in range(len(wire) - 1):
        exchange.receive_data(wire[i : i + 1])
    assert response_of(exchange) is None
    exchange.receive_data(wire[-1:])
    response = response_of(exchange)
    assert response is not None
    assert response.status == 200 and response.reason == "OK" and response.body == b"<root/>"
    assert response.header("CONTENT-TYPE") == 'text/xml; charset="utf-8"'
    assert response.header("x-missing") is None
    exchange.receive_data(b"more")  # ignored once complete


def test_response_delimited_by_close() -> None:
    exchange = HttpExchange(HttpRequest(method="GET", url=URL))
    exchange.receive_data(b"HTTP/1.0 200 OK\r\n\r\n<root/>")
    assert response_of(exchange) is None
    exchange.receive_data(b"")
    response = response_of(exchange)
    assert response is not None and response.body == b"<root/>"


def test_informational_response_is_skipped() -> None:
    exchange = HttpExchange(HttpRequest(method="POST", url=URL, body=b"x"))
    exchange.receive_data(b"HTTP/1.1 100 Continue\r\n\r\n" + http_response(200, "OK", b"y"))
    assert exchange.response is not None and exchange.response.body == b"y"


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"garbage\r\n\r\n", id="not-http"),
        pytest.param(http_response(200, "OK", b"x" * 100), id="body-too-large"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 20000, id="head-too-large"),
    ],
)
def test_bad_responses_raise_malformed(wire: bytes) -> None:
    exchange = HttpExchange(HttpRequest(method="GET", url=URL), max_body=50)
    with pytest.raises(MalformedMessageError):
        exchange.receive_data(wire)


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"HTTP/1.1 200 OK\r\n", id="head-only"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", id="short-body"),
    ],
)
def test_close_mid_response_raises_malformed(wire: bytes) -> None:
    exchange = HttpExchange(HttpRequest(method="GET", url=URL))
    with pytest.raises(MalformedMessageError):
        exchange.receive_data(wire)
        exchange.receive_data(b"")


@pytest.mark.parametrize(
    ("url", "server", "target"),
    [
        ("http://192.168.1.1/", Endpoint("192.168.1.1", 80), "/"),
        ("http://192.168.1.1", Endpoint("192.168.1.1", 80), "/"),
        ("http://[fe80::1]:49000/x", Endpoint("fe80::1", 49000), "/x"),
    ],
)
def test_split_http_url(url: str, server: Endpoint, target: str) -> None:
    assert split_http_url(url) == (server, target)


@pytest.mark.parametrize(
    "url", ["https://192.168.1.1/", "http://router.lan/", "http://1.2.3.4:99999/", "ftp://x/"]
)
def test_split_http_url_refuses(url: str) -> None:
    with pytest.raises(MalformedMessageError):
        split_http_url(url)


def test_bad_method_cannot_be_sent() -> None:
    with pytest.raises(MalformedMessageError):
        HttpExchange(HttpRequest(method="BAD METHOD", url=URL))
