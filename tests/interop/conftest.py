"""Shared fixtures for interop tests: third-party peers on loopback.

Every peer runs for real on 127.0.0.1 / 127.0.0.2 (all of 127.0.0.0/8 is
local on Linux, so the second address needs no setup), on ports found free
for UDP and TCP on both addresses. Processes are started with
:class:`subprocess.Popen`, kept by PID, polled with STUN Binding requests
until every socket answers (a bounded number of tries, never a fixed
sleep), and stopped by PID in fixture teardown: SIGTERM, then SIGKILL after
a bounded wait. Configurations and logs live in ``tmp_path``.

A missing program is a skip on a developer's machine (with the Debian
package to install) and a failure in CI (``CI=true``), where interop must be
proven.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError, TransportError
from natkit.net.os_stack import OsDatagramEndpoint, OsStack
from natkit.net.stack import DatagramHandler, IcmpHandler, Responder
from natkit.stun import attributes as at
from natkit.stun.aio import StunServerRunner
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.server import StunServerConfig

LOOPBACK = "127.0.0.1"
LOOPBACK_2 = "127.0.0.2"
HOSTS = (LOOPBACK, LOOPBACK_2)

STOP_TIMEOUT = 5.0
"""Seconds a process gets to exit after SIGTERM (and again after SIGKILL)."""

READY_TRIES = 200
READY_TRY_TIMEOUT = 0.05
"""Readiness polling: at most 200 rounds of Binding requests, each waiting up
to 50 ms for answers, so a peer that never answers fails within ~10 s."""

# /usr/sbin holds stund and is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


# -- missing peers -------------------------------------------------------------------


def _missing(message: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI must prove interop)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_program(name: str, package: str) -> str:
    """The path of ``name``; skip (fail in CI) naming the Debian package if absent."""
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        _missing(f"{name} is not installed: apt-get install {package} (scripts/setup.sh does)")
    return path


def require_module(name: str, package: str) -> Any:
    """Import ``name``; skip (fail in CI) naming the PyPI package if absent."""
    try:
        return __import__(name)
    except ImportError:
        _missing(f"Python module {name} is missing: pip install {package} (or .[test])")


def natkit_command() -> list[str]:
    """The installed ``natkit`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("natkit")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "natkit.cli.main"]


# -- ports ---------------------------------------------------------------------------


def _bindable(host: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 2, hosts: Sequence[str] = HOSTS) -> list[int]:
    """``count`` distinct ports free for UDP and TCP on every one of ``hosts``."""
    ports: list[int] = []
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if port in ports:
            continue
        if all(
            _bindable(host, port, kind)
            for host in hosts
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free ports on {hosts}")


# -- processes -----------------------------------------------------------------------


@dataclass
class ManagedProcess:
    """A third-party (or natkit CLI) process we started; stdout+stderr go to ``log_path``."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log_file: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM by PID, SIGKILL if it lingers; returns the exit status."""
        try:
            if self.popen.poll() is None:
                self.popen.terminate()
                try:
                    self.popen.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.popen.kill()
                    self.popen.wait(STOP_TIMEOUT)
            return self.popen.returncode
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None


def start_process(name: str, argv: Sequence[str], workdir: Path) -> ManagedProcess:
    """Start ``argv`` in ``workdir`` with its output captured in ``workdir/NAME.out``."""
    log_path = workdir / f"{name}.out"
    log_file = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            list(argv), cwd=workdir, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
    except BaseException:
        log_file.close()
        raise
    return ManagedProcess(name, popen, log_path, log_file)


def run_program(argv: Sequence[str], *, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run a client to completion; it is killed (by PID) if it overruns ``timeout``."""
    return subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class ProgramResult:
    returncode: int
    stdout: str
    stderr: str


async def run_program_async(argv: Sequence[str], *, timeout: float = 20.0) -> ProgramResult:
    """Like :func:`run_program`, while this event loop keeps serving (in-process servers)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return ProgramResult(
        proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
    )


# -- STUN readiness ------------------------------------------------------------------


def binding_request(transaction_id: bytes) -> bytes:
    return serialize_message(StunMessage.request(Method.BINDING, transaction_id))


def wait_for_stun(
    endpoints: Sequence[Endpoint], process: ManagedProcess | None = None
) -> dict[Endpoint, StunMessage]:
    """Send Binding requests to every endpoint until each has answered once.

    Bounded: :data:`READY_TRIES` rounds of at most :data:`READY_TRY_TIMEOUT`
    seconds. Fails at once, with the process's log, if ``process`` exits.
    Returns each endpoint's first success response.
    """
    answers: dict[Endpoint, StunMessage] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(READY_TRY_TIMEOUT)
        for attempt in range(READY_TRIES):
            pending = [ep for ep in endpoints if ep not in answers]
            if not pending:
                return answers
            if process is not None and process.popen.poll() is not None:
                pytest.fail(
                    f"{process.name} (pid {process.pid}) exited with {process.popen.returncode}"
                    f" before answering STUN on {pending}:\n{process.log()}",
                    pytrace=False,
                )
            expected: dict[bytes, Endpoint] = {}
            for index, ep in enumerate(pending):
                tid = struct.pack("!4sII", b"nkrd", attempt, index)
                expected[tid] = ep
                sock.sendto(binding_request(tid), (ep.host, ep.port))
            for _ in range(2 * len(pending)):
                try:
                    data, _addr = sock.recvfrom(4096)
                except (TimeoutError, ConnectionRefusedError):
                    break
                try:
                    msg = parse_message(data)
                except MalformedMessageError:
                    continue
                ep_answered = expected.get(msg.transaction_id)
                if ep_answered is not None and msg.message_class == MessageClass.SUCCESS:
                    answers.setdefault(ep_answered, msg)
                if all(ep in answers for ep in pending):
                    break
    missing = [ep for ep in endpoints if ep not in answers]
    if missing:
        log = process.log() if process is not None else ""
        pytest.fail(f"no STUN answer from {missing} after {READY_TRIES} tries\n{log}")
    return answers


# -- peers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StunPeer:
    """A STUN server with a primary and an alternate transport address."""

    primary: Endpoint
    alternate: Endpoint
    process: ManagedProcess | None = None

    @property
    def endpoints(self) -> list[Endpoint]:
        """The four IP x port combinations an RFC 3489 / 5780 server listens on."""
        p, a = self.primary, self.alternate
        return [p, Endpoint(p.host, a.port), Endpoint(a.host, p.port), a]


def start_stund(workdir: Path, port: int, alt_port: int) -> StunPeer:
    """Debian's stund in the foreground (no ``-b``), answering on all four sockets."""
    stund = require_program("stund", "stun-server")
    argv = [stund, "-h", LOOPBACK, "-a", LOOPBACK_2, "-p", str(port), "-o", str(alt_port)]
    proc = start_process("stund", argv, workdir)
    peer = StunPeer(Endpoint(LOOPBACK, port), Endpoint(LOOPBACK_2, alt_port), proc)
    try:
        wait_for_stun(peer.endpoints, proc)
    except BaseException:
        proc.stop()
        raise
    return peer


@pytest.fixture
def stund(tmp_path: Path) -> Iterator[StunPeer]:
    port, alt_port = free_ports(2)
    peer = start_stund(tmp_path, port, alt_port)
    assert peer.process is not None
    try:
        yield peer
    finally:
        peer.process.stop()


COTURN_CONFIG = """\
# natkit interop: coturn as an RFC 5780 STUN server on loopback only.
# Two listening IPs of one family turn NAT behaviour discovery on in
# coturn 4.6 (it has only "no-rfc5780"; a bare "rfc5780" line is rejected as
# "Bad configuration format").
listening-ip={ip1}
listening-ip={ip2}
listening-port={port}
alt-listening-port={alt_port}
stun-only
no-auth
no-tls
no-dtls
no-cli
pidfile={dir}/turnserver.pid
log-file={dir}/turnserver.log
simple-log
userdb={dir}/turndb
"""


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[StunPeer]:
    """coturn's turnserver with RFC 5780 on 127.0.0.1 and 127.0.0.2."""
    turnserver = require_program("turnserver", "coturn")
    port, alt_port = free_ports(2)
    config = tmp_path / "turnserver.conf"
    config.write_text(
        COTURN_CONFIG.format(
            ip1=LOOPBACK, ip2=LOOPBACK_2, port=port, alt_port=alt_port, dir=tmp_path
        )
    )
    proc = start_process("turnserver", [turnserver, "-c", str(config)], tmp_path)
    peer = StunPeer(Endpoint(LOOPBACK, port), Endpoint(LOOPBACK_2, alt_port), proc)
    try:
        answers = wait_for_stun(peer.endpoints, proc)
        other = answers[peer.primary].get(at.OTHER_ADDRESS)
        if other != peer.alternate:
            pytest.fail(
                f"coturn's OTHER-ADDRESS is {other}, not {peer.alternate}: RFC 5780 is off"
                f"\n{proc.log()}"
            )
        yield peer
    finally:
        proc.stop()


@pytest.fixture
def natkit_server_process(tmp_path: Path) -> Iterator[StunPeer]:
    """``natkit stun-server --listen 127.0.0.1:P --alternate 127.0.0.2:P2`` as a subprocess."""
    port, alt_port = free_ports(2)
    argv = [
        *natkit_command(),
        "stun-server",
        "--listen",
        f"{LOOPBACK}:{port}",
        "--alternate",
        f"{LOOPBACK_2}:{alt_port}",
    ]
    proc = start_process("natkit-stun-server", argv, tmp_path)
    peer = StunPeer(Endpoint(LOOPBACK, port), Endpoint(LOOPBACK_2, alt_port), proc)
    try:
        wait_for_stun(peer.endpoints, proc)
        yield peer
    finally:
        status = proc.stop()
    # The command handles SIGTERM (cli/main.py): stopping it must be a clean exit.
    assert status == 0, f"natkit stun-server exited with {status}:\n{proc.log()}"


class TappedStack(OsStack):
    """The OS stack, recording where every datagram a server receives came from.

    Only an observer: the datagrams still travel over real loopback sockets.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[Endpoint] = []

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> OsDatagramEndpoint:
        def tap(data: bytes, remote: Endpoint) -> None:
            self.sources.append(remote)
            on_datagram(data, remote)

        def tap_responder(data: bytes, remote: Endpoint) -> bytes | None:
            self.sources.append(remote)
            reply = responder(data, remote) if responder is not None else None
            if reply is not None:
                return reply
            self.sources.pop()  # the handler records it
            return None

        return await super().open_udp(local, tap, responder=tap_responder, on_icmp=on_icmp)


@dataclass
class InProcessServer:
    runner: StunServerRunner
    stack: TappedStack
    peer: StunPeer

    @property
    def sources(self) -> list[Endpoint]:
        return self.stack.sources


async def start_in_process_server(
    config_for: Callable[[Endpoint, Endpoint], StunServerConfig], *, attempts: int = 5
) -> InProcessServer:
    """Start a :class:`StunServerRunner` (UDP only) on fresh free ports.

    ``config_for(primary, alternate)`` builds the :class:`StunServerConfig`.
    """
    last: Exception | None = None
    for _ in range(attempts):
        port, alt_port = free_ports(2)
        primary, alternate = Endpoint(LOOPBACK, port), Endpoint(LOOPBACK_2, alt_port)
        stack = TappedStack()
        runner = StunServerRunner(stack, config_for(primary, alternate), tcp=False)
        try:
            await runner.start()
        except TransportError as exc:  # a port taken between the probe and the bind
            last = exc
            continue
        return InProcessServer(runner, stack, StunPeer(primary, alternate))
    raise RuntimeError(f"could not start an in-process STUN server: {last}")


@pytest.fixture
async def natkit_server() -> AsyncIterator[InProcessServer]:
    """natkit's RFC 5780 server in this process (127.0.0.1:P and 127.0.0.2:P2)."""
    server = await start_in_process_server(
        lambda primary, alternate: StunServerConfig(
            primary=primary, alternate=alternate, rfc5780=True
        )
    )
    try:
        yield server
    finally:
        server.runner.close()
        await server.runner.wait_closed()
