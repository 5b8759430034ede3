"""TURN peers on loopback for the interop tests: coturn's ``turnutils_peer``
(a UDP echo peer), ``natkit turn-server`` as a subprocess, and coturn's
``turnutils_uclient`` load client with its final report parsed.

``turnutils_uclient`` (coturn 4.6) allocates, installs permissions and
channels (or uses Send indications with ``-s``), waits 1-6 s (a random start
per client), sends ``-n`` messages per client every ``-z`` ms to the peer
(``-e``/``-r``) and counts the echoes. With ``-T`` it makes RFC 6062 TCP
allocations and the clients are each other's peers (``-T`` implies ``-t -y
-c``), so no ``turnutils_peer`` is involved. It ends with a report::

    start_mclient: tot_send_msgs=100, tot_recv_msgs=100
    Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)
    Average round trip delay 0.000000 ms; min = 0 ms, max = 0 ms

Its exit status says nothing (0 even when nothing was relayed), so the
report is what the tests judge. A run where nothing arrives waits 10 s more
before reporting.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from natkit.addr import Endpoint

from .conftest import (
    LOOPBACK,
    ManagedProcess,
    free_ports,
    natkit_command,
    require_program,
    start_process,
    wait_for_stun,
)

USER, PASSWORD, REALM = "test", "test", "example.org"
RELAY_PORTS = (61000, 61999)
"""natkit's relay range: above the Linux ephemeral range (32768-60999), so
relay sockets never collide with the clients' own ephemeral ports."""

UCLIENT_TIMEOUT = 40.0
"""Seconds a ``turnutils_uclient`` run may take: start-up 1-6 s, a few hundred
ms of sending, and 10 s of waiting for echoes that will not come."""

ECHO_TRIES = 100
ECHO_TRY_TIMEOUT = 0.05


@dataclass(frozen=True)
class UclientReport:
    """The final report of one ``turnutils_uclient`` run."""

    sent: int
    received: int
    lost: int
    send_dropped: int
    rtt_avg_ms: float
    rtt_max_ms: int
    output: str

    @property
    def ok(self) -> bool:
        return self.sent > 0 and self.received == self.sent and self.lost == 0


_TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_LOST = re.compile(r"Total lost packets (\d+) \([^)]*\), total send dropped (\d+)")
_RTT = re.compile(r"Average round trip delay ([\d.]+) ms; min = \d+ ms, max = (\d+) ms")


def parse_uclient_report(output: str) -> UclientReport | None:
    """The report at the end of ``output``, or None if the client never got there."""
    totals, lost, rtt = _TOTALS.findall(output), _LOST.findall(output), _RTT.findall(output)
    if not (totals and lost and rtt):
        return None
    return UclientReport(
        sent=int(totals[-1][0]),
        received=int(totals[-1][1]),
        lost=int(lost[-1][0]),
        send_dropped=int(lost[-1][1]),
        rtt_avg_ms=float(rtt[-1][0]),
        rtt_max_ms=int(rtt[-1][1]),
        output=output,
    )


def uclient_argv(
    server: Endpoint,
    *flags: str,
    peer: Endpoint | None,
    messages: int = 50,
    clients: int = 2,
    length: int = 170,
    interval_ms: int = 1,
) -> list[str]:
    """``turnutils_uclient -u test -w test [-e PEER -r PORT] -n N -m M -l L -c -z Z
    FLAGS -p PORT HOST``."""
    uclient = require_program("turnutils_uclient", "coturn")
    argv = [uclient, "-u", USER, "-w", PASSWORD]
    if peer is not None:
        argv += ["-e", peer.host, "-r", str(peer.port)]
    argv += ["-n", str(messages), "-m", str(clients), "-l", str(length), "-c"]
    argv += ["-z", str(interval_ms), *flags, "-p", str(server.port), server.host]
    return argv


def run_uclients(
    runs: Mapping[str, Sequence[str]], workdir: Path, *, timeout: float = UCLIENT_TIMEOUT
) -> dict[str, tuple[UclientReport | None, str]]:
    """Run several ``turnutils_uclient`` commands at once (each takes seconds of
    mostly waiting); returns each one's report (None if it never reported)
    and its whole output. Every process is killed by PID if it overruns."""
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    results: dict[str, tuple[UclientReport | None, str]] = {}
    try:
        for name, argv in runs.items():
            out = workdir / f"uclient-{name}.out"
            with out.open("wb") as sink:
                procs[name] = (
                    subprocess.Popen(
                        list(argv), stdin=subprocess.DEVNULL, stdout=sink, stderr=sink
                    ),
                    out,
                )
        deadline = time.monotonic() + timeout
        for name, (proc, out) in procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            text = out.read_text(errors="replace")
            results[name] = (parse_uclient_report(text), text)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return results


# -- turnutils_peer ------------------------------------------------------------------


def wait_for_echo(peer: Endpoint, process: ManagedProcess) -> None:
    """Bounded: :data:`ECHO_TRIES` datagrams, each awaited for :data:`ECHO_TRY_TIMEOUT` s."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.settimeout(ECHO_TRY_TIMEOUT)
        for attempt in range(ECHO_TRIES):
            if process.popen.poll() is not None:
                pytest.fail(f"turnutils_peer exited early:\n{process.log()}", pytrace=False)
            probe = b"natkit-echo-%d" % attempt
            sock.sendto(probe, (peer.host, peer.port))
            try:
                data, _ = sock.recvfrom(2048)
            except (TimeoutError, ConnectionRefusedError):
                continue
            if data == probe:
                return
    pytest.fail(f"turnutils_peer on {peer} never echoed\n{process.log()}", pytrace=False)


def start_turnutils_peer(workdir: Path) -> tuple[Endpoint, ManagedProcess]:
    """``turnutils_peer -L 127.0.0.1 -p PORT``, once it echoes."""
    program = require_program("turnutils_peer", "coturn")
    (port,) = free_ports(1, hosts=(LOOPBACK,))
    proc = start_process("turnutils_peer", [program, "-L", LOOPBACK, "-p", str(port)], workdir)
    peer = Endpoint(LOOPBACK, port)
    try:
        wait_for_echo(peer, proc)
    except BaseException:
        proc.stop()
        raise
    return peer, proc


# -- natkit turn-server --------------------------------------------------------------


@dataclass(frozen=True)
class TurnPeer:
    """A TURN server process listening on UDP, TCP and TLS."""

    udp: Endpoint
    tcp: Endpoint
    tls: Endpoint
    process: ManagedProcess


def natkit_turn_argv(
    udp: Endpoint,
    tcp: Endpoint,
    tls: Endpoint,
    cert: Path,
    key: Path,
    *extra: str,
    verbose: bool = False,
) -> list[str]:
    """``natkit [-vv] turn-server --listen udp:.. tcp:.. tls:.. ... EXTRA``."""
    return [
        *natkit_command(),
        *(["-vv"] if verbose else []),
        "turn-server",
        "--listen",
        f"udp:{udp}",
        "--listen",
        f"tcp:{tcp}",
        "--listen",
        f"tls:{tls}",
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
        "--realm",
        REALM,
        "--user",
        f"{USER}:{PASSWORD}",
        "--allow-peer",
        "127.0.0.0/8",
        "--min-port",
        str(RELAY_PORTS[0]),
        "--max-port",
        str(RELAY_PORTS[1]),
        "--no-admin",
        *extra,
    ]


def wait_for_tcp(endpoint: Endpoint, process: ManagedProcess) -> None:
    for _ in range(ECHO_TRIES):
        if process.popen.poll() is not None:
            break
        try:
            with socket.create_connection(endpoint, timeout=ECHO_TRY_TIMEOUT):
                return
        except OSError:
            time.sleep(ECHO_TRY_TIMEOUT)
    pytest.fail(f"{process.name} never listened on TCP {endpoint}\n{process.log()}")


def start_natkit_turn(
    workdir: Path, cert: Path, key: Path, *extra: str, verbose: bool = False
) -> TurnPeer:
    """``natkit turn-server`` on three free loopback ports, once UDP answers STUN
    and both stream ports accept connections (``verbose``: debug logging)."""
    udp_port, tcp_port, tls_port = free_ports(3, hosts=(LOOPBACK,))
    udp, tcp, tls = (Endpoint(LOOPBACK, p) for p in (udp_port, tcp_port, tls_port))
    argv = natkit_turn_argv(udp, tcp, tls, cert, key, *extra, verbose=verbose)
    proc = start_process("natkit-turn-server", argv, workdir)
    try:
        wait_for_stun([udp], proc)
        wait_for_tcp(tcp, proc)
        wait_for_tcp(tls, proc)
    except BaseException:
        proc.stop()
        raise
    return TurnPeer(udp, tcp, tls, proc)


# -- coturn (to check the harness itself: the same cases against coturn) -------------

COTURN_TURN_CONFIG = """\
listening-ip={ip}
relay-ip={ip}
listening-port={port}
tls-listening-port={tls_port}
min-port={min_port}
max-port={max_port}
lt-cred-mech
user={user}:{password}
realm={realm}
allow-loopback-peers
cert={cert}
pkey={key}
no-dtls
no-cli
pidfile={dir}/turnserver.pid
userdb={dir}/turndb
log-file=stdout
simple-log
"""


def start_coturn_turn(workdir: Path, cert: Path, key: Path) -> TurnPeer:
    """coturn's turnserver with the same user, realm and loopback peers allowed."""
    turnserver = require_program("turnserver", "coturn")
    port, tls_port = free_ports(2, hosts=(LOOPBACK,))
    config = workdir / "turnserver.conf"
    config.write_text(
        COTURN_TURN_CONFIG.format(
            ip=LOOPBACK,
            port=port,
            tls_port=tls_port,
            min_port=RELAY_PORTS[1] + 1,
            max_port=RELAY_PORTS[1] + 1000,
            user=USER,
            password=PASSWORD,
            realm=REALM,
            cert=cert,
            key=key,
            dir=workdir,
        )
    )
    proc = start_process("turnserver", [turnserver, "-c", str(config)], workdir)
    peer = TurnPeer(
        Endpoint(LOOPBACK, port), Endpoint(LOOPBACK, port), Endpoint(LOOPBACK, tls_port), proc
    )
    try:
        wait_for_stun([peer.udp], proc)
        wait_for_tcp(peer.tls, proc)
    except BaseException:
        proc.stop()
        raise
    return peer
