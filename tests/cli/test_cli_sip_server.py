"""natkit sip-server and natkit sip user: flags, errors (one line, exit 1) and
one real server in a subprocess on loopback answering REGISTER with digest."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from natkit.addr import Endpoint
from natkit.cli.main import app
from natkit.cli.sip_server import parse_sip_listen, server_secret
from natkit.rng import seeded_rng
from natkit.sip.digest import DigestClient
from natkit.sip.flow import SipTransport
from natkit.sip.message import SipRequest, SipResponse, parse_message, serialize_message
from natkit.store import open_store

runner = CliRunner()
REALM = "example.org"
SIP_SERVER = [sys.executable, "-m", "natkit.cli.main", "sip-server"]
REGISTER = ["sip", "register", "sip:alice@example.org", "--once"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "127.0.0.1",
            [
                (SipTransport.UDP, Endpoint("127.0.0.1", 5060)),
                (SipTransport.TCP, Endpoint("127.0.0.1", 5060)),
            ],
            id="bare",
        ),
        pytest.param("tls:[::1]", [(SipTransport.TLS, Endpoint("::1", 5061))], id="tls-v6"),
        pytest.param("wss:0.0.0.0:8443", [(SipTransport.WSS, Endpoint("0.0.0.0", 8443))], id="wss"),
        pytest.param("ws:192.0.2.1", [(SipTransport.WS, Endpoint("192.0.2.1", 80))], id="ws"),
    ],
)
def test_listen_flags(text: str, expected: list[tuple[SipTransport, Endpoint]]) -> None:
    assert parse_sip_listen(text) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--listen", "udp:nonsense"], "--listen", id="bad-listen"),
        pytest.param(["--listen", "udp:127.0.0.1:0"], "--domain", id="no-domain"),
        pytest.param(["--edge-only"], "--registrar", id="edge-without-registrar"),
        pytest.param(
            ["--edge-only", "--registrar", "sip:registrar.example.org"], "IP address", id="named"
        ),
        pytest.param(["--listen", "tls:127.0.0.1:0", "-d", "x.org"], "--tls-cert", id="tls"),
        pytest.param(["-d", "x.org", "--secret", "zz"], "hex", id="bad-secret"),
        pytest.param(
            ["-d", "x.org", "--alias-peer", "edge.example"], "IP address", id="named-alias-peer"
        ),
    ],
)
def test_bad_flags_exit_1_with_one_line(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["sip-server", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_sip_users_are_added_listed_and_removed(tmp_path: Path) -> None:
    store = f"sqlite:{tmp_path / 'natkit.db'}"
    env = {"NATKIT_STORE": store}
    added = runner.invoke(app, ["sip", "user", "add", "alice", "-r", REALM, "-p", "pw"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["sip", "user", "list", "-r", REALM, "--json"], env=env)
    assert listed.exit_code == 0 and '"alice"' in listed.stdout
    removed = runner.invoke(app, ["sip", "user", "remove", "alice", "-r", REALM], env=env)
    assert removed.exit_code == 0
    again = runner.invoke(app, ["sip", "user", "remove", "alice", "-r", REALM], env=env)
    assert again.exit_code == 1 and "no user" in again.output


async def test_server_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'natkit.db'}"
    store = await open_store(url)
    try:
        first = await server_secret(store)
        assert len(first) == 32 and await server_secret(store) == first
    finally:
        await store.close()
    store = await open_store(url)
    try:
        assert await server_secret(store) == first  # survives a restart
    finally:
        await store.close()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _register(port: int, local: int, cseq: int, extra: str = "") -> SipRequest:
    text = (
        "REGISTER sip:example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKcli{cseq};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:alice@example.org>;tag=t1\r\n"
        "To: <sip:alice@example.org>\r\nCall-ID: cli-reg\r\n"
        f"CSeq: {cseq} REGISTER\r\nContact: <sip:alice@127.0.0.1:{local}>\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, SipRequest)
    return request


def _store_with_alice(tmp_path: Path) -> str:
    store = f"sqlite:{tmp_path / 'natkit.db'}"
    added = runner.invoke(
        app, ["sip", "user", "add", "alice", "-r", REALM, "-p", "pw", "--store", store]
    )
    assert added.exit_code == 0
    return store


def _start_sip_server(*args: str) -> subprocess.Popen[bytes]:
    """``natkit sip-server ARGS`` in a subprocess, read until it says it listens."""
    proc = subprocess.Popen(
        [*SIP_SERVER, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered: select() must see what readline() has not consumed
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + 20
    while b"listening on" not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], max(0, deadline - time.monotonic()))
        line = proc.stderr.readline() if ready else b""
        if not line:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"sip-server did not start: {seen.decode()}")
        seen += line
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    code = proc.wait(10)
    if proc.stderr is not None:
        proc.stderr.close()
    return code


def test_sip_server_registers_with_digest_and_stops_on_sigterm(tmp_path: Path) -> None:
    store = _store_with_alice(tmp_path)
    port = _free_udp_port()
    proc = _start_sip_server(
        "--listen", f"udp:127.0.0.1:{port}", "--domain", REALM, "--store", store
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        local = sock.getsockname()[1]
        request = _register(port, local, 1)
        sock.sendto(serialize_message(request), ("127.0.0.1", port))
        challenge = parse_message(sock.recv(65535))
        assert isinstance(challenge, SipResponse) and challenge.status == 401
        retry = DigestClient("alice", "pw", rng=seeded_rng(1)).authorize(
            _register(port, local, 2), challenge
        )
        assert retry is not None
        sock.sendto(serialize_message(retry), ("127.0.0.1", port))
        ok = parse_message(sock.recv(65535))
        assert isinstance(ok, SipResponse) and ok.status == 200
        assert ok.contacts != "*" and len(ok.contacts) == 1
    finally:
        sock.close()
        code = _stop(proc)
    assert code == 0


def test_sip_register_once_against_a_real_server(tmp_path: Path) -> None:
    store = _store_with_alice(tmp_path)
    port = _free_udp_port()
    proc = _start_sip_server("--listen", f"127.0.0.1:{port}", "--domain", REALM, "--store", store)
    try:
        registrar = f"sip:127.0.0.1:{port}"
        for transport in ("udp", "tcp"):
            result = runner.invoke(
                app,
                [*REGISTER, "-p", "pw", "--json", "--registrar", registrar, "-t", transport],
            )
            assert result.exit_code == 0, result.output
            events = [line for line in result.stdout.splitlines() if line.startswith("{")]
            assert any('"RegistrationSucceeded"' in e and '"outbound": true' in e for e in events)
        wrong = runner.invoke(
            app,
            [*REGISTER, "-p", "nope", "--registrar", f"sip:127.0.0.1:{port}", "--timeout", "5"],
        )
        assert wrong.exit_code == 1
    finally:
        _stop(proc)
