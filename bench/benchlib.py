"""Shared pieces of natkit's side-by-side benchmarks.

Servers run as child processes on loopback, each stopped by its own PID; a
server counts as ready once it answers a STUN Binding request (no fixed
sleeps). Results are plain dicts printed as one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BENCH_DIR = Path(__file__).resolve().parent


class BenchError(Exception):
    """A benchmark cannot run (a missing tool, a server that never answered)."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear error on stderr and exit (benchmarks never raise tracebacks at users)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


# /usr/sbin holds stund and is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def compile_c(source: str, outdir: Path) -> Path:
    """Compile ``bench/<source>`` (a load tool) with ``cc -O2`` into ``outdir``."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError(
            f"no C compiler: bench/{source} needs `cc` (Debian: apt-get install gcc libc6-dev)"
        )
    exe = outdir / Path(source).stem
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(exe), str(BENCH_DIR / source)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"compiling {source} failed: {proc.stderr.strip()}")
    return exe


def require_binary(name: str, hint: str) -> str:
    path = shutil.which(name, path=_SEARCH_PATH)
    if path is None:
        raise BenchError(f"{name} not found on PATH ({hint})")
    return path


def free_udp_ports(hosts: Sequence[str], count: int) -> list[int]:
    """``count`` distinct UDP ports that are free on every one of ``hosts`` right now."""
    ports: list[int] = []
    for _ in range(200):
        if len(ports) == count:
            return ports
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if port in ports:
            continue
        try:
            for host in hosts:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.bind((host, port))
        except OSError:
            continue
        ports.append(port)
    raise BenchError("could not find free UDP ports")


def binding_request(tid: bytes | None = None) -> tuple[bytes, bytes]:
    tid = tid or secrets.token_bytes(12)
    return b"\x00\x01\x00\x00" + MAGIC_COOKIE + tid, tid


def stun_answers(host: str, port: int, timeout: float = 0.2) -> bool:
    """One RFC 5389 Binding request; True if a success response with our id came back."""
    request, tid = binding_request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(request, (host, port))
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == tid


class Server:
    """One server child process; ``start()`` returns once it answers STUN."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        host: str,
        port: int,
        workdir: Path,
        *,
        also_ready: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.name = name
        self.argv = argv
        self.host = host
        self.port = port
        self.workdir = workdir
        self.also_ready = list(also_ready)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError(f"{self.name} is not running")
        return self.proc.pid

    def start(self, ready_timeout: float = 15.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = (self.workdir / f"{self.name}.log").open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                tail = self.log_tail()
                self.stop()
                raise BenchError(f"{self.name} exited with {code}: {tail}")
            if self.is_ready():
                return
        self.stop()
        raise BenchError(f"{self.name} did not answer {self.probe} within {ready_timeout} s")

    probe = "STUN"
    """What :meth:`is_ready` asks (for the error message)."""

    def is_ready(self) -> bool:
        """The server answers its protocol (STUN Binding on every address it serves)."""
        return all(stun_answers(h, p) for h, p in [(self.host, self.port), *self.also_ready])

    def log_tail(self, lines: int = 5) -> str:
        if self._log is not None:
            self._log.flush()
        path = self.workdir / f"{self.name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers; always reaps the child."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[Sequence[Server]]:
    """Start every server; stop every one of them on the way out, whatever happens."""
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextlib.contextmanager
def running_pinned(servers: Sequence[Server], cpus: set[int]) -> Iterator[Sequence[Server]]:
    """Start ``servers`` on ``cpus`` (every thread they make inherits it), then unpin ourselves."""
    everything = os.sched_getaffinity(0)
    try:
        if cpus:
            os.sched_setaffinity(0, cpus)
        with running(servers):
            os.sched_setaffinity(0, everything)
            yield servers
    finally:
        os.sched_setaffinity(0, everything)


def parse_cpus(text: str) -> set[int]:
    """``"0,1"`` -> {0, 1} (a --server-cpus style option)."""
    return {int(x) for x in text.split(",") if x}


def add_server_arguments(p: argparse.ArgumentParser, load: str) -> None:
    """``--natkit-python``, ``--server-cpus`` and ``--LOAD-cpus`` (the TURN
    benchmarks: which interpreter runs natkit, and where servers and load run)."""
    p.add_argument(
        "--natkit-python",
        help="interpreter that runs natkit's server, with natkit installed (default: this one)",
    )
    p.add_argument(
        "--server-cpus",
        type=parse_cpus,
        default=set(),
        help="pin the servers (every thread) to these CPUs, e.g. 1 (default: no pinning)",
    )
    p.add_argument(
        f"--{load}-cpus",
        type=parse_cpus,
        default=set(),
        help=f"pin the {load} to these CPUs, e.g. 0 (default: no pinning)",
    )


def summary(values: Sequence[float], digits: int = 6) -> dict[str, Any]:
    """Per-run values plus their median, min and max (never a single timing)."""
    return {
        "runs": [round(v, digits) for v in values],
        "median": round(statistics.median(values), digits) if values else None,
        "min": round(min(values), digits) if values else None,
        "max": round(max(values), digits) if values else None,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
    }


def interpreter(python: str | None) -> dict[str, Any]:
    """What runs natkit's server: the interpreter's path and version, and
    whether it runs on a shared libpython (a pyenv default build does, with
    no PGO/LTO; Debian's /usr/bin/python3.11 has the interpreter linked in,
    and the same code took 15-29% less time on it;
    bench/README.md, "Which Python"). Linux: read from /proc/self/maps."""
    exe = python or sys.executable
    probe = (
        "import json, sys; maps = open('/proc/self/maps').read();"
        " print(json.dumps({'version': sys.version.split()[0],"
        " 'shared_libpython': 'libpython' in maps}))"
    )
    out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, check=True)
    return {"executable": exe, **json.loads(out.stdout)}


def emit(result: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    sys.stdout.flush()
