"""natkit turn-server, natkit turn sessions / kick: argument errors (exit 1,
one line, no traceback) and one real server in a subprocess on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.server_process import read_until, start_natkit
from tests.turn.aio._runner_client import PASSWORD, REALM, USER, HandClient
from typer.testing import CliRunner

from natkit.addr import Endpoint
from natkit.cli.main import app
from natkit.net.os_stack import OsStack
from natkit.stun.constants import Method
from natkit.stun.message import StunMessage
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol

runner = CliRunner()
BASE = ["turn-server", "--realm", REALM, "--user", f"{USER}:{PASSWORD}"]


@pytest.fixture(autouse=True)
def _no_default_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default store lives under $XDG_STATE_HOME: keep this machine's out."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("NATKIT_STORE", raising=False)


def test_without_store_the_server_reads_the_default_store_only_if_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from natkit.cli.turn_server import _default_store

    assert _default_store() is None
    added = runner.invoke(app, ["turn", "user", "add", "alice", "--password", "pw", "--realm", "r"])
    assert added.exit_code == 0, added.output
    db = tmp_path / "state" / "natkit" / "natkit.db"
    assert db.is_file()
    assert _default_store() == f"sqlite:{db}"
    monkeypatch.setenv("NATKIT_STORE", "memory:")
    assert _default_store() == "memory:"


def _free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fails(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_turn_server_is_listed_in_help() -> None:
    result = runner.invoke(app, ["--help"])
    assert "turn-server" in result.output
    result = runner.invoke(app, ["turn", "--help"])
    assert "sessions" in result.output and "kick" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["turn-server", "--user", "a:b"], "realm", id="no-realm"),
        pytest.param(["turn-server", "--realm", "r"], "no credentials", id="no-credentials"),
        pytest.param([*BASE, "--listen", "turn.example:3478"], "listen", id="host-name"),
        pytest.param([*BASE, "--listen", "tls:127.0.0.1:0"], "tls-cert", id="tls-no-cert"),
        pytest.param([*BASE, "--user", "bob"], "NAME:PASSWORD", id="bad-user"),
        pytest.param([*BASE, "--allow-peer", "bogus"], "allow-peer", id="bad-cidr"),
        pytest.param([*BASE, "--min-port", "9", "--max-port", "8"], "max-port", id="range"),
        pytest.param(
            [*BASE, "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
            "no such file",
            id="missing-pem",
        ),
        pytest.param([*BASE, "--config", "/nonexistent.toml"], "cannot read", id="no-config"),
    ],
)
def test_argument_errors_exit_1_with_a_message(args: list[str], message: str) -> None:
    _fails(args, message)


def test_an_admin_endpoint_off_loopback_without_a_token_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NATKIT_ADMIN_TOKEN", raising=False)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))  # were it not refused, the server would fail here, not run
        busy.listen()
        admin = f"0.0.0.0:{busy.getsockname()[1]}"
        result = runner.invoke(app, [*BASE, "--admin", admin, "--listen", "udp:127.0.0.1:0"])
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "--admin-token" in result.output
    assert "--admin-insecure" in result.output and "Traceback" not in result.output


def test_connection_limits_reach_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    import natkit.turn.aio.server
    from natkit.errors import NatkitError

    seen: dict[str, object] = {}

    def fake_runner(*args: object, **kw: object) -> None:
        seen.update(kw)
        raise NatkitError("stopped before listening")

    monkeypatch.setattr(natkit.turn.aio.server, "TurnServerRunner", fake_runner)
    args = ["--max-unauthenticated-per-ip", "3", "--unauthenticated-timeout", "4.5"]
    _fails([*BASE, "--listen", "udp:127.0.0.1:0", "--no-admin", *args], "stopped")
    assert (seen["max_unauthenticated_per_ip"], seen["unauthenticated_timeout"]) == (3, 4.5)


def test_a_listen_port_in_use_is_an_error(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        _fails([*BASE, "--listen", f"udp:127.0.0.1:{port}", "--no-admin"], "cannot bind")


def test_a_config_file_with_a_typo_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "natkit.toml"
    path.write_text('realm = "r"\nusers = ["a:b"]\n')
    _fails(["turn-server", "--config", str(path)], "unknown key 'users'")


def test_sessions_without_a_server_is_an_error() -> None:
    port = _free_port(socket.SOCK_STREAM)
    _fails(["turn", "sessions", "--admin", f"127.0.0.1:{port}"], "cannot reach")
    _fails(["turn", "kick", "1", "--admin", f"http://127.0.0.1:{port}"], "cannot reach")


async def _store_with_alice(path: Path) -> str:
    from natkit.store import open_store
    from natkit.turn.aio.credentials import add_user

    url = f"sqlite:{path}"
    store = await open_store(url)
    try:
        await add_user(store, REALM, USER, PASSWORD)
    finally:
        await store.close()
    return url


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[subprocess.Popen[bytes], Endpoint, str]]:
    """``natkit turn-server`` on loopback free ports, its user in a SQLite store,
    read until it says it listens."""
    port, admin = _free_port(), _free_port(socket.SOCK_STREAM)
    store = await _store_with_alice(tmp_path / "natkit.db")
    config = tmp_path / "natkit.toml"
    config.write_text(
        f'realm = "{REALM}"\nstore = "{store}"\n'
        'allow-peer = ["127.0.0.0/8"]\nmin-port = 63100\nmax-port = 63199\n'
    )
    proc = start_natkit(
        "turn-server",
        "--config",
        str(config),
        "--listen",
        f"udp:127.0.0.1:{port}",
        "--admin",
        f"127.0.0.1:{admin}",
    )
    try:
        assert proc.stderr is not None
        seen = read_until(proc, b"admin endpoint on", "turn-server")
        assert f"udp:127.0.0.1:{port}".encode() in seen
        yield proc, Endpoint("127.0.0.1", port), f"127.0.0.1:{admin}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_turn_server_allocates_lists_kicks_and_stops_on_sigterm(
    server: tuple[subprocess.Popen[bytes], Endpoint, str],
) -> None:
    proc, where, admin = server
    client = await HandClient.udp(OsStack(), where)
    try:
        relay = await client.allocate()
        assert relay.host == "127.0.0.1" and 63100 <= relay.port <= 63199
        listed = runner.invoke(app, ["turn", "sessions", "--admin", admin, "--json"])
        assert listed.exit_code == 0, listed.output
        (session,) = json.loads(listed.stdout)
        assert session["relays"] == [str(relay)] and session["username"] == USER
        table = runner.invoke(app, ["turn", "sessions", "--admin", admin])
        assert table.exit_code == 0 and USER in table.output
        kicked = runner.invoke(app, ["turn", "kick", str(session["id"]), "--admin", admin])
        assert kicked.exit_code == 0, kicked.output
        again = runner.invoke(app, ["turn", "kick", str(session["id"]), "--admin", admin])
        assert again.exit_code == 1 and "no allocation" in again.output
        empty = runner.invoke(app, ["turn", "sessions", "--admin", admin, "--json"])
        assert json.loads(empty.stdout) == []
    finally:
        client.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_workers_need_no_admin_and_no_user_quota() -> None:
    _fails([*BASE, "--listen", "udp:127.0.0.1:0", "--workers", "2"], "--no-admin")
    args = [*BASE, "--listen", "udp:127.0.0.1:0", "--no-admin", "--workers", "2"]
    _fails([*args, "--user-quota", "1"], "user-quota")


async def test_two_workers_share_the_udp_port_split_the_relay_ports_and_stop_together() -> None:
    port = _free_port()
    proc = start_natkit(
        *BASE,
        *("--listen", f"udp:127.0.0.1:{port}", "--no-admin", "--workers", "2"),
        *("--allow-peer", "127.0.0.0/8", "--min-port", "63200", "--max-port", "63299"),
    )
    try:
        assert proc.stderr is not None
        seen = read_until(proc, b"worker processes", "turn-server")
        assert b"ports 63200-63249" in seen  # worker 0's half
        (worker,) = _children(proc.pid)
        relays: list[Endpoint] = []
        for _ in range(24):  # new client ports: the kernel's hash spreads them
            client = await HandClient.udp(OsStack(), Endpoint("127.0.0.1", port))
            try:
                relays.append(await client.allocate())
                # The next request reaches the worker holding the allocation: another
                # one would have made a second allocation, not answered 437.
                again = StunMessage.request(Method.ALLOCATE, b"")
                again.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
                resp = await client.request(again)
                assert resp.error is not None and resp.error.code == 437
            finally:
                client.close()
        ports = [r.port for r in relays]
        assert all(63200 <= p <= 63299 for p in ports)
        assert any(p < 63250 for p in ports) and any(p >= 63250 for p in ports)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not _alive(worker)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_worker_that_exits_stops_the_server_with_status_1() -> None:
    port = _free_port()
    proc = start_natkit(
        *BASE,
        *("--listen", f"udp:127.0.0.1:{port}", "--no-admin", "--workers", "2"),
    )
    try:
        assert proc.stderr is not None
        read_until(proc, b"worker processes", "turn-server")
        (worker,) = _children(proc.pid)
        os.kill(worker, signal.SIGKILL)
        assert proc.wait(15) == 1
        assert b"exited; the server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
