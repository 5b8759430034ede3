"""Third-party SIP peers on loopback: Kamailio, sipp and baresip.

Theory of operation. Every peer is a child process started with
:func:`start_process` (conftest.py), kept by PID and stopped by PID in a
``finally``: SIGTERM, then SIGKILL after a bounded wait. Configurations,
logs, sipp statistics and baresip's config directory live in a temporary
work directory, never /etc.

- Kamailio (``data/kamailio/registrar.cfg``) runs in the foreground
  (``-DD -E``) as registrar (usrloc in memory, registrar) and stateful
  proxy; digest authentication either with auth_db over a db_text
  ``subscriber`` table written to the work directory, or with one static
  password (``pv_www_authenticate``). It is ready once a SIP OPTIONS over UDP
  is answered 200 (bounded tries). ``kamcmd`` reaches it over a unix socket
  in the work directory (``ul.dump``, ``core.shmmem``).
- sipp runs scenarios from ``data/sipp/`` bounded by ``-m`` (calls),
  ``-timeout`` (seconds) and ``-nostdin``; results come from its exit code
  and its ``-trace_stat`` file (last row: cumulative counts).
- baresip runs headless (``-f DIR -t LIFETIME``) with modules g711, ausine,
  ctrl_tcp; :class:`BaresipControl` speaks ctrl_tcp's netstring-framed JSON
  (commands with a token, responses and events on one TCP connection).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conftest import LOOPBACK, ManagedProcess, free_ports, require_program, start_process

DATA = Path(__file__).resolve().parent / "data"
KAMAILIO_CFG = DATA / "kamailio" / "registrar.cfg"
SIPP_DIR = DATA / "sipp"
DOMAIN = "example.org"

READY_TIMEOUT = 10.0
"""Seconds a peer gets to answer its first request."""

SUBSCRIBER_VERSION = 7
"""auth_db's expected version of the subscriber table (Kamailio 5.6)."""


# -- SIP probing -------------------------------------------------------------------


def options_request(host: str, port: int, *, local_port: int) -> tuple[bytes, str]:
    """An OPTIONS to the server itself (no user part), with a fresh Call-ID."""
    call_id = secrets.token_hex(8)
    text = (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local_port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return text.encode(), call_id


def sip_ping(host: str, port: int, timeout: float = 0.2) -> int | None:
    """Status code of the answer to one OPTIONS over UDP, or None if none came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(timeout)
        data, call_id = options_request(host, port, local_port=sock.getsockname()[1])
        try:
            sock.sendto(data, (host, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                reply = sock.recv(65535).decode(errors="replace")
                if call_id in reply and reply.startswith("SIP/2.0 "):
                    return int(reply.split(" ", 2)[1])
        except OSError:
            return None
    return None


def wait_for_sip(host: str, port: int, process: ManagedProcess) -> None:
    """OPTIONS until the server answers 200; raises with its log if it never does."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} (pid {process.pid}) exited with {process.popen.returncode}:\n"
                f"{process.log()[-4000:]}"
            )
        if sip_ping(host, port) == 200:
            return
    raise RuntimeError(f"{process.name} did not answer OPTIONS within {READY_TIMEOUT} s")


# -- Kamailio ----------------------------------------------------------------------


@dataclass
class KamailioPeer:
    """A running Kamailio: where it listens, its process and its kamcmd socket."""

    host: str
    port: int
    process: ManagedProcess
    ctl_socket: Path
    workdir: Path

    def kamcmd(self, *command: str, timeout: float = 10.0) -> str:
        kamcmd = require_program("kamcmd", "kamailio")
        proc = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl_socket}", *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"kamcmd {' '.join(command)}: {proc.stderr or proc.stdout}")
        return proc.stdout

    def registered_aors(self) -> list[str]:
        """The AoRs in usrloc's location table (``ul.dump brief``)."""
        return [
            line.split(":", 1)[1].strip()
            for line in self.kamcmd("ul.dump", "brief").splitlines()
            if line.strip().startswith("AoR:")
        ]

    def contacts(self, aor: str) -> str:
        """``ul.lookup location AOR`` as kamcmd prints it (empty if none)."""
        try:
            return self.kamcmd("ul.lookup", "location", aor)
        except RuntimeError:
            return ""

    def shm_used(self) -> int:
        """Bytes of shared memory in use (``core.shmmem``: real_used)."""
        for line in self.kamcmd("core.shmmem").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "real_used":
                return int(value)
        raise RuntimeError("core.shmmem printed no real_used")

    def stop(self) -> int | None:
        return self.process.stop()


def write_subscribers(directory: Path, users: Mapping[str, str], domain: str = DOMAIN) -> str:
    """db_text ``subscriber`` and ``version`` tables; returns the db_url."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "version").write_text(
        f"table_name(string) table_version(int)\nsubscriber:{SUBSCRIBER_VERSION}\n"
    )
    rows = [
        "id(int,auto) username(string) domain(string) password(string) "
        "ha1(string,null) ha1b(string,null)"
    ]
    rows += [f"{i}:{user}:{domain}:{pw}::" for i, (user, pw) in enumerate(users.items(), 1)]
    (directory / "subscriber").write_text("\n".join(rows) + "\n")
    return f"text://{directory}"


def kamailio_argv(
    workdir: Path,
    port: int,
    *,
    auth: str | None = None,
    users: Mapping[str, str] | None = None,
    password: str = "secret",
    forward_uri: str | None = None,
    transports: Sequence[str] = ("udp", "tcp"),
    shm_mb: int = 256,
    workers: int = 2,
    host: str = LOOPBACK,
) -> tuple[list[str], Path]:
    """Command line for Kamailio on ``host:port`` and its kamcmd socket path.

    ``auth``: None (no authentication), ``"db"`` (auth_db over db_text with
    ``users``) or ``"static"`` (every user has ``password``).
    """
    kamailio = require_program("kamailio", "kamailio")
    workdir.mkdir(parents=True, exist_ok=True)
    ctl = workdir / "kamailio_ctl"
    argv = [kamailio, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", str(shm_mb)]
    argv += ["-Y", str(workdir), "-P", str(workdir / "kamailio.pid"), f"--alias={DOMAIN}"]
    for transport in transports:
        argv += ["-l", f"{transport}:{host}:{port}"]
    argv += ["-A", f'CTL_SOCK="unix:{ctl}"', "-A", f"WORKERS={workers}"]
    if auth == "db":
        db_url = write_subscribers(workdir / "db", users or {})
        argv += ["-A", "WITH_AUTH_DB", "-A", f'DBURL="{db_url}"']
    elif auth == "static":
        argv += ["-A", "WITH_AUTH_STATIC", "-A", f'AUTH_PASSWORD="{password}"']
    elif auth is not None:
        raise ValueError(f"auth must be None, 'db' or 'static', not {auth!r}")
    if forward_uri is not None:
        argv += ["-A", f'FORWARD_URI="{forward_uri}"']
    return argv, ctl


def start_kamailio(workdir: Path, port: int | None = None, **options: Any) -> KamailioPeer:
    """Start Kamailio (see :func:`kamailio_argv`) and wait until it answers OPTIONS.

    Without ``port``, a free one; if another process takes it between the probe
    and Kamailio's bind, Kamailio exits and a new port is tried (3 attempts).
    """
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_ports(1, hosts=(LOOPBACK,))[0]
        argv, ctl = kamailio_argv(workdir, chosen, **options)
        proc = start_process("kamailio", argv, workdir)
        try:
            wait_for_sip(LOOPBACK, chosen, proc)
        except RuntimeError:
            proc.stop()
            if attempt + 1 == attempts or proc.popen.returncode in (None, 0, -15):
                raise
            continue
        except BaseException:
            proc.stop()
            raise
        return KamailioPeer(LOOPBACK, chosen, proc, ctl, workdir)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def kamailio(workdir: Path, port: int | None = None, **options: Any) -> Iterator[KamailioPeer]:
    peer = start_kamailio(workdir, port, **options)
    try:
        yield peer
    finally:
        peer.stop()


# -- sipp --------------------------------------------------------------------------


@dataclass(frozen=True)
class SippResult:
    """One sipp run: its exit code and the last row of its statistics file."""

    returncode: int
    stats: Mapping[str, str]
    stdout: str
    stderr: str

    def count(self, column: str) -> int:
        value = self.stats.get(column, "")
        return int(value) if value.isdigit() else 0

    @property
    def successful(self) -> int:
        return self.count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self.count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self.count("TotalCallCreated")

    @property
    def elapsed_s(self) -> float:
        """Whole seconds sipp ran, from ``ElapsedTime(C)`` (``HH:MM:SS``)."""
        parts = self.stats.get("ElapsedTime(C)", "").split(":")
        if len(parts) < 3 or not all(p.isdigit() for p in parts):
            return 0.0
        h, m, s = (int(p) for p in parts[:3])
        return float(h * 3600 + m * 60 + s)

    @property
    def ok(self) -> bool:
        """sipp exits 0 when every call succeeded (1: some failed; 99: none ran)."""
        return self.returncode == 0 and self.failed == 0 and self.successful > 0


def read_stat_file(path: Path) -> dict[str, str]:
    """The last row of a sipp ``-trace_stat`` file (semicolon-separated, header first)."""
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    header, last = lines[0].split(";"), lines[-1].split(";")
    return dict(zip(header, last, strict=False))


def write_users_csv(path: Path, users: Sequence[str]) -> Path:
    """A sipp injection file, one ``user`` (field0) line per call, in order."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{u}\n" for u in users))
    return path


def sipp_argv(
    scenario: str,
    workdir: Path,
    *,
    target: str | None = None,
    calls: int = 1,
    rate: float = 10.0,
    timeout_s: float = 10.0,
    transport: str = "u1",
    users_csv: Path | None = None,
    credentials: tuple[str, str] | None = None,
    service: str = "service",
    local_port: int | None = None,
    limit: int | None = None,
    extra: Sequence[str] = (),
    name: str = "sipp",
) -> tuple[list[str], Path]:
    """Command line for one bounded sipp run and the path of its statistics file."""
    sipp = require_program("sipp", "sip-tester")
    stat = workdir / f"{name}_stat.csv"
    argv = [sipp]
    if target is not None:
        argv.append(target)
    argv += ["-sf", str(SIPP_DIR / scenario), "-i", LOOPBACK, "-t", transport]
    argv += ["-m", str(calls), "-r", str(rate), "-timeout", f"{timeout_s:g}s", "-nostdin"]
    argv += ["-trace_stat", "-stf", str(stat), "-fd", "1", "-buff_size", "4194304"]
    argv += ["-s", service, "-timeout_error"]
    if "[$domain]" in (SIPP_DIR / scenario).read_text():  # sipp rejects unused -set variables
        argv += ["-set", "domain", DOMAIN]
    argv += ["-max_socket", "1024", "-recv_timeout", f"{int(timeout_s * 1000)}"]
    if local_port is None:  # sipp's default 5060 would collide between parallel runs
        (local_port,) = free_ports(1, hosts=(LOOPBACK,))
    argv += ["-p", str(local_port)]
    if limit is not None:
        argv += ["-l", str(limit)]
    if users_csv is not None:
        argv += ["-inf", str(users_csv)]
    if credentials is not None:  # digest username and password ([authentication])
        argv += ["-au", credentials[0], "-ap", credentials[1]]
    argv += list(extra)
    return argv, stat


def run_sipp(scenario: str, workdir: Path, **options: Any) -> SippResult:
    """Run sipp to completion (killed by PID if it overruns its own timeout by 10 s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    argv, stat = sipp_argv(scenario, workdir, **options)
    timeout_s = float(options.get("timeout_s", 10.0))
    proc = subprocess.run(
        argv,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s + 10.0,
        check=False,
    )
    return SippResult(proc.returncode, read_stat_file(stat), proc.stdout, proc.stderr)


@dataclass
class SippUas:
    """A sipp UAS in the background on ``port``."""

    port: int
    process: ManagedProcess
    stat_file: Path

    def stop(self) -> SippResult:
        status = self.process.stop()
        return SippResult(status or 0, read_stat_file(self.stat_file), self.process.log(), "")

    def wait(self, timeout: float) -> SippResult:
        """Wait for it to finish its ``-m`` calls (stopped by PID if it overruns)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.popen.wait(timeout)
        return self.stop()


def start_sipp_uas(workdir: Path, *, calls: int, timeout_s: float = 10.0) -> SippUas:
    """sipp answering INVITEs (``uas_answer.xml``) on a free port of 127.0.0.1."""
    workdir.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1, hosts=(LOOPBACK,))
    argv, stat = sipp_argv(
        "uas_answer.xml", workdir, calls=calls, timeout_s=timeout_s, local_port=port, name="uas"
    )
    proc = start_process("sipp-uas", argv, workdir)
    # sipp binds before it reads anything; a bounded wait until its port is taken
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline and proc.popen.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return SippUas(port, proc, stat)
        time.sleep(0.02)
    proc.stop()
    raise RuntimeError(f"sipp UAS did not bind {port}:\n{proc.log()}")


# -- baresip -----------------------------------------------------------------------


BARESIP_CONFIG = """\
# natkit interop: baresip headless on loopback
poll_method epoll
sip_listen {host}:{sip_port}
net_interface {host}
audio_player aufile,{dir}/play.wav
audio_source ausine,440
audio_alert aufile,{dir}/alert.wav
ausrc_srate 48000
ausrc_channels 2
auplay_srate 8000
auplay_channels 1
rtp_ports 20000-29999
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module sndfile.so
module ctrl_tcp.so
# uuid: an instance id (+sip.instance), which sipnat=outbound needs
module_tmp uuid.so
module_app account.so
module_app menu.so
ctrl_tcp_listen {host}:{ctrl_port}
sndfile_path {dir}
"""


def account_line(
    user: str,
    registrar: str,
    *,
    transport: str = "udp",
    password: str | None = None,
    regint: int = 600,
    outbound: str | None = None,
) -> str:
    """One baresip accounts line (PEERS.md), optionally with a password and Outbound."""
    params = f";regint={regint};answermode=auto;audio_codecs=PCMU/8000/1"
    if password is not None:
        params += f";auth_pass={password}"
    if outbound is not None:
        params += f';outbound="{outbound}";sipnat=outbound'
    return f"<sip:{user}@{registrar};transport={transport}>{params}"


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


@dataclass
class BaresipControl:
    """ctrl_tcp client: netstring-framed JSON commands, responses and events."""

    sock: socket.socket
    buffer: bytes = b""
    events: list[dict[str, Any]] = field(default_factory=list)
    _token: int = 0

    def _read_one(self, deadline: float) -> dict[str, Any] | None:
        while True:
            head, colon, rest = self.buffer.partition(b":")
            if colon and head.isdigit() and len(rest) > int(head):
                size = int(head)
                payload, self.buffer = rest[:size], rest[size + 1 :]
                loaded: dict[str, Any] = json.loads(payload)
                return loaded
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        """Send a command and return its response (events seen meanwhile are kept)."""
        self._token += 1
        token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(netstring(body))
        deadline = time.monotonic() + timeout
        while (message := self._read_one(deadline)) is not None:
            if message.get("response") and message.get("token") == token:
                return message
            if message.get("event"):
                self.events.append(message)
        raise TimeoutError(f"baresip did not answer {command!r} within {timeout} s")

    def wait_event(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The first event of ``kind`` (e.g. REGISTER_OK, CALL_ESTABLISHED), seen or to come."""
        for index, event in enumerate(self.events):
            if event.get("type") == kind:
                return self.events.pop(index)
        deadline = time.monotonic() + timeout
        while (message := self._read_one(deadline)) is not None:
            if message.get("event"):
                if message.get("type") == kind:
                    return message
                self.events.append(message)
        seen = [e.get("type") for e in self.events]
        raise TimeoutError(f"no {kind} event from baresip within {timeout} s (saw {seen})")

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


@dataclass
class BaresipPeer:
    sip_port: int
    process: ManagedProcess
    control: BaresipControl
    config_dir: Path

    def stop(self) -> int | None:
        try:
            self.control.close()
        finally:
            status = self.process.stop()
        return status


def start_baresip(workdir: Path, accounts: Sequence[str], *, lifetime_s: int = 60) -> BaresipPeer:
    """baresip headless with ``accounts``; returns once ctrl_tcp accepts a connection."""
    baresip = require_program("baresip", "baresip-core")
    config_dir = workdir / "baresip"
    config_dir.mkdir(parents=True, exist_ok=True)
    # baresip binds SIP/UDP+TCP on sip_port and TLS on sip_port+1 (PEERS.md)
    sip_port, _tls_port, ctrl_port = _port_run(3)
    (config_dir / "config").write_text(
        BARESIP_CONFIG.format(host=LOOPBACK, sip_port=sip_port, ctrl_port=ctrl_port, dir=config_dir)
    )
    (config_dir / "accounts").write_text("".join(f"{line}\n" for line in accounts))
    (config_dir / "contacts").write_text("")
    argv = [baresip, "-4", "-f", str(config_dir), "-t", str(lifetime_s)]
    proc = start_process("baresip", argv, workdir)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"baresip exited with {proc.popen.returncode}:\n{proc.log()}")
            try:
                sock = socket.create_connection((LOOPBACK, ctrl_port), timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"baresip ctrl_tcp never listened:\n{proc.log()}") from None
                time.sleep(0.05)
    except BaseException:
        proc.stop()
        raise
    return BaresipPeer(sip_port, proc, BaresipControl(sock), config_dir)


def _port_run(count: int) -> tuple[int, ...]:
    """``count`` consecutive ports free for UDP and TCP on 127.0.0.1."""
    for _ in range(100):
        (base,) = free_ports(1, hosts=(LOOPBACK,))
        if base + count > 65535:
            continue
        ports = tuple(range(base, base + count))
        with contextlib.ExitStack() as stack:
            try:
                for port in ports:
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((LOOPBACK, port))
            except OSError:
                continue
        return ports
    raise RuntimeError(f"no {count} consecutive free ports on {LOOPBACK}")
