"""natkit serve's runner on the OS stack, on loopback with ephemeral ports:
every server starts, answers, shows up in /metrics, /status.json and the
status page, and everything closes (ports free again) in bounded time."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.errors import TransportError
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng
from natkit.serve.runner import ServeRunner
from natkit.serve.settings import ServeSettings, build_serve_settings
from natkit.sip.message import SipResponse, parse_message
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, serialize_message
from natkit.stun.message import parse_message as parse_stun

EPHEMERAL: dict[str, dict[str, Any]] = {
    "stun": {"listen": ["127.0.0.1:0"]},
    "turn": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], "user": ["alice:pw"]},
    "sip": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"], "no-auth": True},
    "media-relay": {"min-port": 41000, "max-port": 41999},
    "admin": {"listen": "127.0.0.1:0"},
}


def _settings(tmp_path: Path, **extra: dict[str, Any]) -> ServeSettings:
    file = {"": {"data-dir": str(tmp_path / "data")}, **EPHEMERAL}
    return build_serve_settings(file, extra)


async def _http(ep: Endpoint, path: str, token: str | None = None) -> tuple[int, str, bytes]:
    reader, writer = await asyncio.open_connection(ep.host, ep.port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    types = [h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("content-type")]
    ctype = types[0] if types else ""
    return int(lines[0].split()[1]), ctype, body


async def _udp_exchange(target: Endpoint, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, payload: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(payload)

    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
    try:
        transport.sendto(data, (target.host, target.port))
        return await asyncio.wait_for(got, 10)
    finally:
        transport.close()


def _register(local_port: int) -> bytes:
    return (
        "REGISTER sip:localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bKserve1;rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@localhost>;tag=t1\r\n"
        "To: <sip:alice@localhost>\r\nCall-ID: serve-reg\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:alice@127.0.0.1:{local_port}>\r\nExpires: 600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_every_server_starts_answers_and_closes(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    runner = ServeRunner(OsStack(), settings, registration_refresh=0.05)
    async with asyncio.timeout(30):
        await runner.start()
        try:
            services = {listener.service for listener in runner.listeners()}
            assert services == {"stun", "turn", "sip", "media relay", "admin"}
            assert (tmp_path / "data" / "natkit.db").is_file()  # SQLite in the data dir
            binding = StunMessage(
                method=Method.BINDING,
                message_class=MessageClass.REQUEST,
                transaction_id=seeded_rng(1).randbytes(12),
            )
            for service in ("stun", "turn"):
                answer = parse_stun(await _udp_exchange(runner.endpoint(service, "udp"),
                                                        serialize_message(binding)))  # fmt: skip
                assert answer.message_class is MessageClass.SUCCESS
            sip = runner.endpoint("sip", "udp")
            ok = parse_message(await _udp_exchange(sip, _register(40999)))
            assert isinstance(ok, SipResponse) and ok.status == 200
            assert runner.sip_view is not None
            await runner.sip_view.refresh()
            admin = runner.endpoint("admin", "tcp")
            assert (await _http(admin, "/healthz"))[0] == 200
            status, ctype, body = await _http(admin, "/metrics")
            text = body.decode()
            assert status == 200 and ctype.startswith("text/plain")
            for name in (
                "natkit_serve_uptime_seconds",
                "natkit_stun_requests_total 1.0",
                "natkit_turn_allocations 0.0",
                'natkit_sip_requests_total{method="REGISTER"} 1.0',
                "natkit_sip_registrations 1.0",
                "natkit_media_relay_calls 0.0",
            ):
                assert name in text, name
            status, ctype, body = await _http(admin, "/status.json")
            doc = json.loads(body)
            assert status == 200 and ctype == "application/json"
            assert doc["counts"]["registrations"] == 1
            assert doc["registrations"][0]["aor"] == "sip:alice@localhost"
            assert doc["uptime_s"] >= 0 and doc["calls"] == []
            assert {x["service"] for x in doc["listening"]} == services
            status, ctype, page = await _http(admin, "/")
            assert status == 200 and ctype.startswith("text/html")
            assert b"sip:alice@localhost" in page and b"TURN allocations" in page
            status, _, body = await _http(admin, "/sessions")
            kinds = [s["kind"] for s in json.loads(body)]
            assert kinds == ["registration"]
        finally:
            await runner.close()
    # everything is closed: the ports can be bound again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((sip.host, sip.port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not a listener
        sock.bind((admin.host, admin.port))
        sock.listen()


async def test_the_admin_token_guards_status_and_metrics(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        admin={"token": "sekrit"},
        stun={"enabled": False},
        turn={"enabled": False},
        media_relay={"enabled": False},
    )
    async with asyncio.timeout(30), ServeRunner(OsStack(), settings) as runner:
        admin = runner.endpoint("admin", "tcp")
        assert (await _http(admin, "/healthz"))[0] == 200
        for path in ("/", "/status.json", "/metrics", "/sessions"):
            assert (await _http(admin, path))[0] == 401, path
            assert (await _http(admin, path, "sekrit"))[0] == 200, path
        assert {x.service for x in runner.listeners()} == {"sip", "admin"}


async def test_a_port_in_use_fails_start_and_closes_what_started(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        settings = _settings(tmp_path, sip={"listen": [f"udp:127.0.0.1:{port}"]})
        runner = ServeRunner(OsStack(), settings)
        with pytest.raises((TransportError, OSError)):
            async with asyncio.timeout(30):
                await runner.start()
        assert runner.turn is None and runner.stun == [] and runner.store is None
