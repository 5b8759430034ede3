"""A real redis-server for tests, as a pytest plugin.

``redis_server`` (session scope) starts Debian's ``redis-server`` on a free
loopback port with persistence off (``--save '' --appendonly no``) and its
working directory in a temporary directory, keeps it by PID, waits for it
to answer ``PING`` (a bounded number of tries, paced by waiting on the
process itself, never a fixed sleep), and stops it by PID at the end of the
session. ``redis_url`` (function scope) empties database 0 and gives its URL.

A missing redis-server skips on a developer's machine and fails in CI
(``CI=true``), like the interop peers. Use it from a conftest with
``from tests.redis_fixture import redis_server_fixture, redis_url_fixture``
(the functions are named ``*_fixture`` so that importing them does not
shadow the fixture names that tests take as arguments)
(or ``pytest_plugins = ["tests.redis_fixture"]`` in the root conftest).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.interop.conftest import (
    LOOPBACK,
    ManagedProcess,
    free_ports,
    require_program,
    start_process,
)

READY_TRIES = 500
READY_PACE = 0.01
"""Readiness: at most 500 PINGs, each after waiting up to 10 ms for the
process to exit (it fails at once if it does), so ~5 s at worst."""


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    process: ManagedProcess

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def command(self, *words: str) -> bytes:
        """Send one inline command, return the first reply line (e.g. ``b"+PONG"``)."""
        with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
            sock.sendall(" ".join(words).encode() + b"\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.strip()


def _ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(workdir: object) -> RedisServer:
    """Start redis-server in ``workdir`` and wait until it answers PING."""
    from pathlib import Path

    path = Path(str(workdir))
    binary = require_program("redis-server", "redis-server")
    (port,) = free_ports(1, hosts=(LOOPBACK,))
    argv = [
        binary,
        "--port", str(port),
        "--bind", LOOPBACK,
        "--save", "",
        "--appendonly", "no",
        "--dir", str(path),
        "--protected-mode", "yes",
    ]  # fmt: skip
    proc = start_process("redis-server", argv, path)
    try:
        for _ in range(READY_TRIES):
            if _ping(LOOPBACK, port):
                return RedisServer(LOOPBACK, port, proc)
            try:
                proc.popen.wait(READY_PACE)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(
                f"redis-server exited with {proc.popen.returncode}:\n{proc.log()}", pytrace=False
            )
        pytest.fail(f"redis-server never answered PING on port {port}:\n{proc.log()}")
    except BaseException:
        proc.stop()
        raise


_shared: list[RedisServer] = []
_users = 0


@pytest.fixture(scope="session", name="redis_server")
def redis_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server per session, however many modules import this fixture
    (each import is its own session fixture; they share the process by count)."""
    global _users
    if not _shared:
        _shared.append(start_redis_server(tmp_path_factory.mktemp("redis")))
    _users += 1
    try:
        yield _shared[0]
    finally:
        _users -= 1
        if _users == 0:
            _shared.pop().process.stop()


@pytest.fixture(name="redis_url")
def redis_url_fixture(redis_server: RedisServer) -> str:
    """Database 0 of the session's redis-server, emptied for this test."""
    reply = redis_server.command("FLUSHDB")
    assert reply == b"+OK", reply
    return redis_server.url(0)
