"""The HTTP admin endpoint (natkit.net.admin) on loopback, with a fake app:
routes, methods, the token, and the defences against browsers and junk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.nat.portmap.http import HttpExchange, HttpRequest, HttpResponse
from natkit.net.admin import AdminServer
from natkit.net.os_stack import OsStack


class FakeApp:
    def __init__(self) -> None:
        self.sessions_list: list[dict[str, Any]] = [{"id": 7, "username": "alice"}]
        self.kicked: list[int] = []
        self.ok = True

    def metrics(self) -> tuple[bytes, str]:
        return b"# HELP x y\nx 1\n", "text/plain; version=0.0.4"

    def sessions(self) -> list[dict[str, Any]]:
        return self.sessions_list

    def kick(self, session_id: int) -> bool:
        if any(s["id"] == session_id for s in self.sessions_list):
            self.kicked.append(session_id)
            return True
        return False

    def healthy(self) -> bool:
        return self.ok


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminServer, FakeApp]]:
    app = FakeApp()
    async with AdminServer(OsStack(), Endpoint("127.0.0.1", 0), app) as server:
        yield server, app


@pytest.fixture
async def guarded() -> AsyncIterator[AdminServer]:
    async with AdminServer(OsStack(), Endpoint("127.0.0.1", 0), FakeApp(), token="s3cret") as s:
        yield s


async def raw(server: AdminServer, data: bytes) -> bytes:
    conn = await OsStack().connect_stream(server.local_endpoint)
    got = bytearray()
    done = asyncio.Event()

    def on_data(chunk: bytes) -> None:
        got.extend(chunk)
        if not chunk:
            done.set()

    conn.set_handler(on_data)
    conn.write(data)
    await asyncio.wait_for(done.wait(), 5)
    return bytes(got)


async def http(
    server: AdminServer, method: str, path: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    exchange = HttpExchange(
        HttpRequest(method=method, url=f"http://{server.local_endpoint}{path}", headers=headers)
    )
    exchange.receive_data(await raw(server, exchange.data_to_send()))
    assert exchange.response is not None
    return exchange.response


async def test_healthz(admin: tuple[AdminServer, FakeApp]) -> None:
    server, app = admin
    assert (await http(server, "GET", "/healthz")).status == 200
    app.ok = False
    assert (await http(server, "GET", "/healthz")).status == 503


async def test_metrics_come_with_their_content_type(admin: tuple[AdminServer, FakeApp]) -> None:
    resp = await http(admin[0], "GET", "/metrics")
    assert (resp.status, resp.body) == (200, b"# HELP x y\nx 1\n")
    assert resp.header("content-type") == "text/plain; version=0.0.4"
    assert resp.header("connection") == "close"


async def test_sessions_are_json(admin: tuple[AdminServer, FakeApp]) -> None:
    resp = await http(admin[0], "GET", "/sessions?verbose=1")
    assert resp.header("content-type") == "application/json"
    assert json.loads(resp.body) == [{"id": 7, "username": "alice"}]


async def test_kick_known_and_unknown_sessions(admin: tuple[AdminServer, FakeApp]) -> None:
    server, app = admin
    assert (await http(server, "POST", "/sessions/7/kick")).status == 200
    assert app.kicked == [7]
    assert (await http(server, "POST", "/sessions/8/kick")).status == 404
    assert (await http(server, "POST", "/sessions/x/kick")).status == 404


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/sessions/7/kick", 405, id="kick-needs-post"),
        pytest.param("POST", "/metrics", 405, id="metrics-get-only"),
        pytest.param("DELETE", "/sessions", 405, id="sessions-get-only"),
        pytest.param("GET", "/", 404, id="root"),
        pytest.param("GET", "/../../etc/passwd", 404, id="traversal"),
    ],
)
async def test_wrong_methods_and_paths(
    admin: tuple[AdminServer, FakeApp], method: str, path: str, status: int
) -> None:
    assert (await http(admin[0], method, path)).status == status


async def test_a_browser_form_cannot_kick(admin: tuple[AdminServer, FakeApp]) -> None:
    server, app = admin
    resp = await http(server, "POST", "/sessions/7/kick", (("Origin", "http://evil.example"),))
    assert resp.status == 403
    assert app.kicked == []


async def test_a_rebound_host_name_is_refused(admin: tuple[AdminServer, FakeApp]) -> None:
    request = b"GET /sessions HTTP/1.1\r\nHost: evil.example\r\n\r\n"
    assert (await raw(admin[0], request)).startswith(b"HTTP/1.1 421 ")
    ok = b"GET /sessions HTTP/1.1\r\nHost: localhost:9641\r\n\r\n"
    assert (await raw(admin[0], ok)).startswith(b"HTTP/1.1 200 ")


async def test_the_token_guards_everything_but_healthz(guarded: AdminServer) -> None:
    assert (await http(guarded, "GET", "/healthz")).status == 200
    denied = await http(guarded, "GET", "/sessions")
    assert denied.status == 401 and denied.header("www-authenticate") == "Bearer"
    wrong = await http(guarded, "GET", "/metrics", (("Authorization", "Bearer nope"),))
    assert wrong.status == 401
    right = await http(guarded, "GET", "/metrics", (("Authorization", "Bearer s3cret"),))
    assert right.status == 200


async def test_garbage_gets_400_and_the_server_keeps_serving(
    admin: tuple[AdminServer, FakeApp],
) -> None:
    assert (await raw(admin[0], b"\x16\x03\x01\x00\x05hello\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await http(admin[0], "GET", "/healthz")).status == 200


async def test_an_oversized_head_is_refused(admin: tuple[AdminServer, FakeApp]) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 40000  # and no end
    assert (await raw(admin[0], request)).startswith(b"HTTP/1.1 431")


async def test_connections_over_the_limit_are_aborted() -> None:
    async with AdminServer(
        OsStack(), Endpoint("127.0.0.1", 0), FakeApp(), max_connections=1
    ) as server:
        idle = await OsStack().connect_stream(server.local_endpoint)
        idle.set_handler(lambda data: None)
        while not server._exchanges:  # until the server has accepted it
            await asyncio.sleep(0)
        assert (await raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")) == b""
        idle.close()


async def test_a_silent_connection_is_dropped_after_the_timeout() -> None:
    async with AdminServer(OsStack(), Endpoint("127.0.0.1", 0), FakeApp(), timeout=0.05) as server:
        assert await raw(server, b"GET /hea") == b""
