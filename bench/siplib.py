"""SIP servers and the sipp load tool for natkit's SIP benchmarks.

The benchmarks load Kamailio and ``natkit sip-server`` with the same sipp
scenarios (the interop tests' ``tests/interop/data/sipp/``, and
``bench/sipp/`` for digest), and start Kamailio with the interop
configuration (``tests/interop/data/kamailio/registrar.cfg``), natkit with
``--store memory:`` (no auth) or a fresh SQLite store holding the bench user
(digest: a memory store cannot be shared with ``natkit sip user add``). A server is
ready once it answers an OPTIONS request over UDP with 200; it is stopped by
its PID (SIGTERM, then SIGKILL), and with it every child it forked.
"""

from __future__ import annotations

import secrets
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchlib import BenchError, Server, require_binary

REPO = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = REPO / "tests" / "interop" / "data" / "kamailio" / "registrar.cfg"
SIPP_DIR = REPO / "tests" / "interop" / "data" / "sipp"
BENCH_SIPP_DIR = REPO / "bench" / "sipp"
NATKIT = REPO / ".venv" / "bin" / "natkit"
HOST = "127.0.0.1"
DOMAIN = "example.org"
AUTH_USER, PASSWORD = "bench", "secret"


def options_status(host: str, port: int, timeout: float = 0.2) -> int | None:
    """Status code of the answer to one OPTIONS over UDP (None: no answer)."""
    call_id = secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:bench@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{host}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(request.encode(), (host, port))
            reply = sock.recv(65535).decode(errors="replace")
        except OSError:
            return None
    if call_id not in reply or not reply.startswith("SIP/2.0 "):
        return None
    return int(reply.split(" ", 2)[1])


class SipServer(Server):
    """A SIP server child process; ``start()`` returns once it answers OPTIONS."""

    probe = "OPTIONS"

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path) -> None:
        super().__init__(name, argv, HOST, port, workdir)
        self.ctl: Path | None = None

    def is_ready(self) -> bool:
        return options_status(self.host, self.port) == 200

    def processes(self) -> list[psutil.Process]:
        """The server and its children (Kamailio forks its workers)."""
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def pss_kb(self) -> int:
        """Proportional set size of the whole process tree, in kB (shared pages counted once)."""
        return sum(p.memory_full_info().pss for p in self.processes()) // 1024

    def rss_kb(self) -> int:
        """Resident set size of the whole process tree, in kB."""
        return sum(p.memory_info().rss for p in self.processes()) // 1024

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def kamcmd(self, *command: str) -> str:
        if self.ctl is None:
            raise BenchError(f"{self.name} has no kamcmd socket")
        kamcmd = require_binary("kamcmd", "Debian package kamailio")
        proc = subprocess.run(
            [kamcmd, "-s", f"unix:{self.ctl}", *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"kamcmd {' '.join(command)}: {proc.stderr or proc.stdout}")
        return proc.stdout

    def shm_used(self) -> int | None:
        """Kamailio's shared memory in use (``core.shmmem`` real_used), None for others."""
        if self.ctl is None:
            return None
        for line in self.kamcmd("core.shmmem").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "real_used":
                return int(value)
        return None


def kamailio_server(
    port: int, workdir: Path, *, auth: bool, shm_mb: int = 1024, workers: int = 2
) -> SipServer:
    """Kamailio as registrar on UDP, optionally with digest auth (one static password)."""
    kamailio = require_binary("kamailio", "Debian package kamailio")
    workdir.mkdir(parents=True, exist_ok=True)
    ctl = workdir / "kamailio_ctl"
    argv = [kamailio, "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", str(shm_mb)]
    argv += ["-Y", str(workdir), "-P", str(workdir / "kamailio.pid"), f"--alias={DOMAIN}"]
    argv += ["-l", f"udp:{HOST}:{port}", "-A", f'CTL_SOCK="unix:{ctl}"']
    argv += ["-A", f"WORKERS={workers}"]
    if auth:
        argv += ["-A", "WITH_AUTH_STATIC", "-A", f'AUTH_PASSWORD="{PASSWORD}"']
    server = SipServer("kamailio", argv, port, workdir)
    server.ctl = ctl
    return server


def command_server(name: str, template: str, port: int, workdir: Path, *, auth: bool) -> SipServer:
    """A server from a command template with ``{host}``, ``{port}``, ``{domain}``,
    ``{user}``, ``{password}`` and ``{auth}`` (``auth`` or ``noauth``), e.g.
    ``natkit sip-server --listen udp:{host}:{port} --domain {domain}``."""
    argv = [
        part.format(
            host=HOST,
            port=port,
            domain=DOMAIN,
            user=AUTH_USER,
            password=PASSWORD,
            auth="auth" if auth else "noauth",
        )
        for part in shlex.split(template)
    ]
    return SipServer(name, argv, port, workdir)


def natkit_server(port: int, workdir: Path, *, auth: bool) -> SipServer:
    """``natkit sip-server`` on UDP. No auth: ``--store memory:``. Digest: a
    fresh SQLite store with the bench user (``natkit sip user add``),
    ``--md5-first`` (sipp answers only the first challenge) and the listening
    address as a served domain too (sipp's Request-URI, see
    bench/sipp/register_auth_bench.xml)."""
    natkit = str(NATKIT) if NATKIT.exists() else require_binary("natkit", "pip install -e .")
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [natkit, "sip-server", "--listen", f"udp:{HOST}:{port}", "--domain", DOMAIN]
    if not auth:
        return SipServer("natkit", [*argv, "--store", "memory:", "--no-auth"], port, workdir)
    store = f"sqlite:{workdir / 'natkit.db'}"
    add = [natkit, "sip", "user", "add", AUTH_USER, "-r", DOMAIN, "-p", PASSWORD]
    proc = subprocess.run(
        [*add, "--store", store],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"natkit sip user add: {proc.stderr or proc.stdout}")
    argv += ["--domain", HOST, "--realm", DOMAIN, "--md5-first", "--store", store]
    return SipServer("natkit", argv, port, workdir)


@dataclass(frozen=True)
class SippRun:
    returncode: int
    successful: int
    failed: int
    retransmissions: int
    wall_s: float
    stats: dict[str, str]
    stderr: str


def users_csv(path: Path, prefix: str, count: int) -> Path:
    """An injection file of ``count`` unique users ``PREFIX000001`` ..."""
    with path.open("w") as f:
        f.write("SEQUENTIAL\n")
        for n in range(count):
            f.write(f"{prefix}{n:07d}\n")
    return path


def read_stats(path: Path) -> dict[str, str]:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return {}
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def _count(stats: dict[str, str], key: str) -> int:
    value = stats.get(key, "")
    return int(value) if value.isdigit() else 0


def run_sipp(
    scenario: str,
    server: SipServer,
    workdir: Path,
    *,
    calls: int,
    rate: int,
    csv: Path | None,
    auth: bool,
    timeout_s: float,
    limit: int = 2000,
    service: str | None = None,
) -> SippRun:
    """One bounded sipp run (``-m``, ``-timeout``, ``-nostdin``) against ``server``;
    ``scenario`` is a file name in ``SIPP_DIR`` or a path; ``service`` is
    the user part of an INVITE's Request-URI (``-s``)."""
    sipp = require_binary("sipp", "Debian package sip-tester")
    workdir.mkdir(parents=True, exist_ok=True)
    stat = workdir / f"{Path(scenario).name}.{secrets.token_hex(3)}.csv"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        local_port = probe.getsockname()[1]
    argv = [sipp, f"{server.host}:{server.port}", "-sf", str(SIPP_DIR / scenario)]  # a path stays
    argv += ["-i", HOST, "-p", str(local_port), "-t", "u1", "-set", "domain", DOMAIN]
    argv += ["-m", str(calls), "-r", str(rate), "-rp", "1000", "-l", str(limit)]
    argv += ["-timeout", f"{timeout_s:g}s", "-timeout_error", "-nostdin"]
    if csv is not None:
        argv += ["-inf", str(csv)]
    if service is not None:
        argv += ["-s", service]
    argv += ["-trace_stat", "-stf", str(stat), "-fd", "1", "-buff_size", "4194304"]
    if auth:
        argv += ["-au", AUTH_USER, "-ap", PASSWORD]
    t0 = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s + 15,
        check=False,
    )
    wall = time.monotonic() - t0
    stats = read_stats(stat)
    return SippRun(
        proc.returncode,
        _count(stats, "SuccessfulCall(C)"),
        _count(stats, "FailedCall(C)"),
        _count(stats, "Retransmissions(C)"),
        wall,
        stats,
        proc.stderr[-2000:],
    )


def register_from(server: SipServer, user: str, local_port: int) -> int:
    """One REGISTER without auth for ``user`` sent from ``127.0.0.1:local_port``
    (Contact: that address); its final status. Both servers reach a UDP
    binding there, so the sipp UAS that later binds this port gets the calls."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, local_port))
        sock.settimeout(2.0)
        text = (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\nCall-ID: {secrets.token_hex(8)}\r\n"
            f"CSeq: 1 REGISTER\r\nContact: <sip:{user}@{HOST}:{local_port}>\r\n"
            "Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(text.encode(), (server.host, server.port))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                reply = sock.recv(65535).decode(errors="replace")
            except OSError as exc:
                raise BenchError(f"{server.name}: no answer to the REGISTER: {exc}") from exc
            status = int(reply.split(" ", 2)[1])
            if status >= 200:
                return status
    raise BenchError(f"{server.name}: no final answer to the REGISTER")


def _udp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


class SippUas:
    """A sipp UAS (``bench/sipp/uas_answer_bench.xml``) on ``127.0.0.1:port``,
    bounded by ``timeout_s`` and stopped by PID."""

    def __init__(self, port: int, workdir: Path, *, timeout_s: float) -> None:
        sipp = require_binary("sipp", "Debian package sip-tester")
        workdir.mkdir(parents=True, exist_ok=True)
        self.stat = workdir / f"uas.{secrets.token_hex(3)}.csv"
        scenario = BENCH_SIPP_DIR / "uas_answer_bench.xml"
        self.argv = [sipp, "-sf", str(scenario), "-i", HOST, "-p", str(port), "-t", "u1"]
        # no -m: calls made of stray messages would count towards it
        self.argv += ["-timeout", f"{timeout_s:g}s", "-nostdin"]
        self.argv += ["-trace_stat", "-stf", str(self.stat), "-fd", "1"]
        self.argv += ["-buff_size", "4194304"]
        self._log = (workdir / "uas.log").open("wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=workdir,
        )  # fmt: skip
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10.0
        while _udp_port_free(port):  # bound once we cannot bind it
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"sipp UAS did not bind {HOST}:{port}")
            time.sleep(0.05)

    def stop(self) -> dict[str, str]:
        """SIGTERM by PID (SIGKILL if it lingers); its last statistics line."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return read_stats(self.stat)


def describe(run: SippRun) -> dict[str, Any]:
    return {
        "returncode": run.returncode,
        "successful": run.successful,
        "failed": run.failed,
        "retransmissions": run.retransmissions,
        "wall_s": round(run.wall_s, 3),
    }
