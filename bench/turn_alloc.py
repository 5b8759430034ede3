"""TURN allocations per second and memory per allocation: ``natkit turn-server``
against coturn, side by side, with the same client.

The client (bench/turnlib.py's messages, driven here on non-blocking sockets
with epoll) keeps ``--window`` allocations in flight. Each one is a new UDP
socket (a new 5-tuple) that does the whole long-term credential dance of
RFC 8656 §7.1 / RFC 8489 §9.2: Allocate -> 401 (REALM, NONCE), Allocate with
MESSAGE-INTEGRITY -> success, then Refresh LIFETIME 0 -> success (the
allocation is deleted), and closes. A request unanswered for 200 ms is sent
again, with the wait doubling each time (RFC 8489 §6.2.1), at most 5 times;
after that the allocation counts as failed.

Sources: each socket binds to the next address of a pool in 127.1.0.0/16
(all of 127.0.0.0/8 is local on Linux), as many different clients would.
natkit limits 401 answers per source IP (20/s, burst 40: its reflection
guard), which one source address would hit at once; coturn has no such
limit. The pool is large enough that no address is used more than a few
times per run.

Per round, for each server in turn (natkit, coturn, natkit, ...), one server
process each: ``rate``, allocation cycles completed per second over
``--duration`` (after ``--warmup``: by default 1.5 s, longer than natkit's
1 s relay port quarantine, so the rate is that of a server whose released
relay sockets are being reused, its steady state), with the server's CPU use and
allocations per server CPU-second (steadier when other work shares the
machine).

Then ``--memory-rounds`` times, for each server in turn, a fresh server
process (nothing left from earlier runs to reuse) runs 200 allocation cycles,
and its VmRSS (/proc/PID/status) is read before and while it holds
``--hold`` allocations at once (10,000 by default): ``(holding - before) /
hold`` is the memory per allocation (user-space memory of the process; the
kernel's socket buffers are not in RSS). Then all are deleted (Refresh 0):
``(after - before) / hold`` is what the process keeps (allocators rarely give
memory back to the system, so this is not a leak measure).

Relay ports: 10000-32767 (below the ephemeral range, so no client socket can
take one) on a relay address of each server's own, 127.0.0.1 for natkit and
127.0.0.2 for coturn, so 10,000 allocations fit in either.

``--server-cpus 1 --client-cpus 0`` gives every server (all its threads)
one core and the client the other: coturn's one relay thread then shares
its core with its listener and authentication threads, as natkit's one
process does with everything it runs. ``--natkit-python`` runs natkit's
server on another interpreter (bench/README.md, "Which Python").

Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import select
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchlib import (
    BenchError,
    Server,
    add_server_arguments,
    emit,
    fail,
    free_udp_ports,
    interpreter,
    machine,
    ratio,
    running_pinned,
    summary,
)
from turnlib import (
    ALLOCATE,
    ERROR,
    LIFETIME,
    NONCE,
    REALM_ATTR,
    REFRESH,
    REQUESTED_TRANSPORT,
    SUCCESS,
    UDP_TRANSPORT,
    XOR_RELAYED_ADDRESS,
    attr,
    auth_attrs,
    coturn_server,
    error_code,
    long_term_key,
    message,
    natkit_server,
    parse,
    raise_fd_limit,
    vm_rss_kb,
)

SERVERS = ("natkit", "coturn", "natkit-w2", "coturn-t2")
# natkit-w2: natkit turn-server --workers 2; coturn-t2: coturn with relay-threads=2
# (like with like: two processes against two relay threads). Rate rounds only:
# memory rounds are for the one-process configurations.
MEMORY_SERVERS = ("natkit", "coturn")
HOSTS = {
    "natkit": "127.0.0.1",
    "coturn": "127.0.0.2",
    "natkit-w2": "127.0.0.3",
    "coturn-t2": "127.0.0.4",
}
RELAY_PORTS = (10000, 32767)
SOURCE_POOL = ipaddress.ip_network("127.1.0.0/16")
RTO = 0.2  # seconds before a request is first sent again; doubles each time (RFC 8489 §6.2.1)
MEMORY_SHORTFALL = (
    0.005  # allocations a memory round may fail to make (e.g. a 437 on a reused port)
)
WARM_CYCLES = 200  # allocation cycles a fresh server runs before its memory is measured
MAX_TRIES = 5  # so a request is given up 0.2+0.4+0.8+1.6+3.2 = 6.2 s after it was first sent
REQ_FIRST = attr(REQUESTED_TRANSPORT, UDP_TRANSPORT)
REQ_AUTH = REQ_FIRST + attr(LIFETIME, struct.pack("!I", 600))
REFRESH_ZERO = attr(LIFETIME, struct.pack("!I", 0))

# States of one allocation cycle.
CHALLENGE, ALLOCATING, DELETING, HELD = range(4)
STATE_NAMES = ("allocate-401", "allocate", "refresh-0", "held")


def make_server(name: str, port: int, workdir: Path, python: str | None = None) -> Server:
    low, high = RELAY_PORTS
    host = HOSTS[name]
    parallel = 2 if name.endswith(("-w2", "-t2")) else 1
    if name.startswith("natkit"):
        server = natkit_server(
            port, workdir, min_port=low, max_port=high, host=host, workers=parallel, python=python
        )
    else:
        server = coturn_server(
            port, workdir, min_port=low, max_port=high, host=host, threads=parallel
        )
    server.name = name
    return server


class Sources:
    """Source addresses from :data:`SOURCE_POOL`, round robin."""

    def __init__(self) -> None:
        self._hosts = [str(h) for h in SOURCE_POOL.hosts()]
        self._next = 0

    def next(self) -> str:
        host = self._hosts[self._next]
        self._next = (self._next + 1) % len(self._hosts)
        return host


@dataclass
class Cycle:
    sock: socket.socket
    state: int
    tid: bytes
    data: bytes
    sent_at: float
    tries: int = 1
    rto: float = RTO
    nonce: bytes = b""
    realm: bytes = b""
    relay: bytes = b""
    key: bytes = b""


@dataclass
class Driver:
    """Allocation cycles on non-blocking sockets, multiplexed with epoll."""

    server: tuple[str, int]
    sources: Sources
    hold: bool = False  # stop at HELD (keep the allocation) instead of deleting it
    keys: dict[bytes, bytes] = field(default_factory=dict)
    cycles: dict[int, Cycle] = field(default_factory=dict)
    held: list[Cycle] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retransmits: int = 0
    retransmitted: dict[str, int] = field(default_factory=dict)  # per request kind

    def __post_init__(self) -> None:
        self.poller = select.epoll()

    def close(self) -> None:
        for cycle in list(self.cycles.values()):
            cycle.sock.close()
        self.cycles.clear()
        for cycle in self.held:
            cycle.sock.close()
        self.held.clear()
        self.poller.close()

    def _send(self, cycle: Cycle, data: bytes, now: float) -> None:
        cycle.data, cycle.sent_at, cycle.tries, cycle.rto = data, now, 1, RTO
        cycle.sock.send(data)

    def start(self, now: float) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.bind((self.sources.next(), 0))
            sock.connect(self.server)
        except OSError:
            sock.close()
            raise
        tid = secrets.token_bytes(12)
        cycle = Cycle(sock, CHALLENGE, tid, b"", now)
        self.cycles[sock.fileno()] = cycle
        self.poller.register(sock.fileno(), select.EPOLLIN)
        self._send(cycle, message(ALLOCATE, tid, REQ_FIRST), now)

    def start_delete(self, cycle: Cycle, now: float) -> None:
        cycle.state = DELETING
        cycle.tid = secrets.token_bytes(12)
        body = REFRESH_ZERO + auth_attrs(cycle.nonce, cycle.realm)
        self._send(cycle, message(REFRESH, cycle.tid, body, cycle.key), now)

    def _fail(self, cycle: Cycle, why: str) -> None:
        self.failed += 1
        self.errors[why] = self.errors.get(why, 0) + 1
        self._finish(cycle)

    def _finish(self, cycle: Cycle) -> None:
        del self.cycles[cycle.sock.fileno()]
        cycle.sock.close()  # also leaves the epoll set

    def _key(self, realm: bytes) -> bytes:
        key = self.keys.get(realm)
        if key is None:
            key = self.keys[realm] = long_term_key(realm=realm.decode())
        return key

    def receive(self, cycle: Cycle, data: bytes, now: float) -> None:
        if len(data) < 20 or data[8:20] != cycle.tid:
            return
        msg_type, _, attrs = parse(data)
        if cycle.state == CHALLENGE:
            if msg_type != ALLOCATE | ERROR or error_code(attrs) != 401:
                self._fail(cycle, f"allocate-1:{error_code(attrs)}")
                return
            cycle.realm, cycle.nonce = attrs[REALM_ATTR], attrs[NONCE]
            cycle.key = self._key(cycle.realm)
            cycle.state, cycle.tid = ALLOCATING, secrets.token_bytes(12)
            body = REQ_AUTH + auth_attrs(cycle.nonce, cycle.realm)
            self._send(cycle, message(ALLOCATE, cycle.tid, body, cycle.key), now)
        elif cycle.state == ALLOCATING:
            if msg_type != ALLOCATE | SUCCESS or XOR_RELAYED_ADDRESS not in attrs:
                self._fail(cycle, f"allocate-2:{error_code(attrs)}")
                return
            cycle.relay = attrs[XOR_RELAYED_ADDRESS]
            if self.hold:
                cycle.state = HELD
                self.completed += 1
                del self.cycles[cycle.sock.fileno()]
                self.poller.unregister(cycle.sock.fileno())
                self.held.append(cycle)
            else:
                self.start_delete(cycle, now)
        elif cycle.state == DELETING:
            if msg_type != REFRESH | SUCCESS:
                self._fail(cycle, f"refresh-0:{error_code(attrs)}")
                return
            self.completed += 1
            self._finish(cycle)

    def poll(self, timeout: float) -> None:
        now = time.monotonic()
        for fd, _ in self.poller.poll(timeout):
            cycle = self.cycles.get(fd)
            if cycle is None:
                continue
            while fd in self.cycles:
                try:
                    data = cycle.sock.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self.receive(cycle, data, now)

    def retransmit(self, now: float) -> None:
        for cycle in list(self.cycles.values()):
            if now - cycle.sent_at < cycle.rto:
                continue
            if cycle.tries >= MAX_TRIES:
                self._fail(cycle, f"timeout:{STATE_NAMES[cycle.state]}")
                continue
            cycle.tries += 1
            cycle.sent_at = now
            cycle.rto *= 2
            self.retransmits += 1
            name = STATE_NAMES[cycle.state]
            self.retransmitted[name] = self.retransmitted.get(name, 0) + 1
            with contextlib.suppress(OSError):
                cycle.sock.send(cycle.data)


def rate_run(server: Server, sources: Sources, args: argparse.Namespace) -> dict[str, Any]:
    """Allocation cycles with ``--window`` in flight for warmup + duration seconds."""
    driver = Driver((server.host, server.port), sources)
    proc = psutil.Process(server.pid)
    client = psutil.Process()
    try:
        t0 = time.monotonic()
        t_measure, t_stop = t0 + args.warmup, t0 + args.warmup + args.duration
        measured_from = None
        started = 0
        last_retx = t0
        cpu0 = ccpu0 = None
        while True:
            now = time.monotonic()
            if measured_from is None and now >= t_measure:
                measured_from = (driver.completed, driver.failed)
                workers = [proc, *proc.children(recursive=True)]  # natkit --workers forks
                cpu0, ccpu0 = _cpu(workers), client.cpu_times()
            if now >= t_stop or started >= args.max_allocations:
                break
            while len(driver.cycles) < args.window and started < args.max_allocations:
                driver.start(now)
                started += 1
            driver.poll(0.01)
            if now - last_retx >= RTO / 4:
                driver.retransmit(now)
                last_retx = now
        elapsed = time.monotonic() - t_measure
        if measured_from is None or cpu0 is None or ccpu0 is None:
            raise BenchError("--max-allocations ran out before the measured phase began")
        cpu1, ccpu1 = _cpu(workers), client.cpu_times()
        done = driver.completed - measured_from[0]
        server_cpu = cpu1 - cpu0
        client_cpu = (ccpu1.user - ccpu0.user) + (ccpu1.system - ccpu0.system)
        # let what is in flight finish (bounded), so failures are counted, not dropped
        drain_until = time.monotonic() + 8.0
        while driver.cycles and time.monotonic() < drain_until:
            driver.poll(0.01)
            driver.retransmit(time.monotonic())
        return {
            "completed": done,
            "rate": round(done / elapsed, 1),
            "elapsed_s": round(elapsed, 3),
            "failed": driver.failed,
            "errors": driver.errors,
            "retransmits": driver.retransmits,
            "retransmitted": driver.retransmitted,
            "unfinished": len(driver.cycles),
            "server_cpu_util": round(server_cpu / elapsed, 3),
            "client_cpu_util": round(client_cpu / elapsed, 3),
            "allocations_per_server_cpu_s": round(done / server_cpu, 1) if server_cpu else None,
            "server_affinity": sorted(proc.cpu_affinity()),
        }
    finally:
        driver.close()


def _cpu(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds of ``processes`` (a server and its worker processes)."""
    total = 0.0
    for p in processes:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def memory_run(server: Server, sources: Sources, args: argparse.Namespace) -> dict[str, Any]:
    """RSS before, while holding ``--hold`` allocations, and after deleting them."""
    before = vm_rss_kb(server.pid)
    driver = Driver((server.host, server.port), sources, hold=True)
    try:
        started = 0
        deadline = time.monotonic() + args.hold_timeout
        while len(driver.held) + driver.failed < args.hold and time.monotonic() < deadline:
            now = time.monotonic()
            while len(driver.cycles) < args.window and started < args.hold:
                driver.start(now)
                started += 1
            driver.poll(0.01)
            driver.retransmit(time.monotonic())
        held = len(driver.held)
        if held < args.hold * (1 - MEMORY_SHORTFALL):
            raise BenchError(
                f"{server.name}: only {held} of {args.hold} allocations were made ({driver.errors})"
            )
        holding = vm_rss_kb(server.pid)
        # delete them all (Refresh 0): the server must give the memory back to itself
        for cycle in driver.held:
            driver.cycles[cycle.sock.fileno()] = cycle
            driver.poller.register(cycle.sock.fileno(), select.EPOLLIN)
            driver.start_delete(cycle, time.monotonic())
        driver.held.clear()
        driver.completed = 0
        until = time.monotonic() + args.hold_timeout
        while driver.cycles and time.monotonic() < until:
            driver.poll(0.01)
            driver.retransmit(time.monotonic())
        deleted = driver.completed
        after = vm_rss_kb(server.pid)
    finally:
        driver.close()
    return {
        "held": held,
        "deleted": deleted,
        "failed": driver.failed,
        "errors": driver.errors,
        "rss_before_kb": before,
        "rss_holding_kb": holding,
        "rss_after_delete_kb": after,
        "bytes_per_allocation": round((holding - before) * 1024 / held, 1),
        "retained_bytes_per_allocation": round((after - before) * 1024 / held, 1),
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in SERVERS:
            raise BenchError(f"unknown server {n!r} (choose from {', '.join(SERVERS)})")
    fd_limit = raise_fd_limit(args.hold + args.window + 1024)
    if fd_limit < args.hold + args.window + 256:
        raise BenchError(f"RLIMIT_NOFILE is {fd_limit}: too low to hold {args.hold} allocations")
    before = machine()
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    mem: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    sources = Sources()
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        workdir = Path(tmp)
        ports = free_udp_ports(list(HOSTS.values()), len(names))
        servers = [
            make_server(n, p, workdir / n, args.natkit_python)
            for n, p in zip(names, ports, strict=True)
        ]
        if args.client_cpus:
            os.sched_setaffinity(0, args.client_cpus)
        with running_pinned(servers, args.server_cpus):
            for _ in range(args.rounds):
                for server in servers:  # interleaved: A B A B ...
                    runs[server.name].append(rate_run(server, sources, args))
                    time.sleep(0.2)
            pids = {s.name: s.pid for s in servers}
        commands = {s.name: s.argv for s in servers}
        memory_pids: dict[str, list[int]] = {n: [] for n in names}
        for index in range(args.memory_rounds):
            for name in names:  # a fresh server each time: nothing reused from earlier runs
                if name not in MEMORY_SERVERS:
                    continue
                (port,) = free_udp_ports([HOSTS[name]], 1)
                fresh = make_server(
                    name, port, workdir / f"{name}-memory-{index}", args.natkit_python
                )
                with running_pinned([fresh], args.server_cpus):
                    memory_pids[name].append(fresh.pid)
                    warm = argparse.Namespace(**{**vars(args), "max_allocations": WARM_CYCLES})
                    warm.warmup, warm.duration = 0.0, 30.0
                    rate_run(fresh, sources, warm)  # first allocations load code and caches
                    mem[name].append(memory_run(fresh, sources, args))

    results: dict[str, Any] = {}
    for n in names:
        rs, ms = runs[n], mem[n]
        results[n] = {
            "command": commands[n],
            "pid": pids[n],
            "rate": summary([r["rate"] for r in rs], 1),
            "server_cpu_util": summary([r["server_cpu_util"] for r in rs], 3),
            "client_cpu_util": summary([r["client_cpu_util"] for r in rs], 3),
            "allocations_per_server_cpu_s": summary(
                [r["allocations_per_server_cpu_s"] or 0.0 for r in rs], 1
            ),
            "failed": sum(r["failed"] for r in rs),
            "retransmits": sum(r["retransmits"] for r in rs),
            "bytes_per_allocation": summary([m["bytes_per_allocation"] for m in ms], 1)
            if ms
            else None,
            "retained_bytes_per_allocation": summary(
                [m["retained_bytes_per_allocation"] for m in ms], 1
            )
            if ms
            else None,
            "memory_pids": memory_pids[n],
            "runs": rs,
            "memory_runs": ms,
        }
    ratios: dict[str, Any] = {}
    if "natkit" in results and "coturn" in results:
        nk, ct = results["natkit"], results["coturn"]
        ratios["natkit/coturn_rate"] = ratio(nk["rate"]["median"], ct["rate"]["median"])
        ratios["natkit/coturn_per_cpu_s"] = ratio(
            nk["allocations_per_server_cpu_s"]["median"],
            ct["allocations_per_server_cpu_s"]["median"],
        )
        if nk["bytes_per_allocation"] and ct["bytes_per_allocation"]:
            ratios["natkit/coturn_bytes_per_allocation"] = ratio(
                nk["bytes_per_allocation"]["median"], ct["bytes_per_allocation"]["median"]
            )
    # Like with like: two natkit processes against coturn's two relay threads, and
    # against the one-thread coturn the target names.
    for a, b in (("natkit-w2", "coturn-t2"), ("natkit-w2", "coturn"), ("coturn-t2", "coturn")):
        if a in results and b in results:
            ra, rb = results[a], results[b]
            ratios[f"{a}/{b}_rate"] = ratio(ra["rate"]["median"], rb["rate"]["median"])
            ratios[f"{a}/{b}_per_cpu_s"] = ratio(
                ra["allocations_per_server_cpu_s"]["median"],
                rb["allocations_per_server_cpu_s"]["median"],
            )
    target = ratios.get("natkit/coturn_rate")
    return {
        "benchmark": "turn_alloc",
        "unit": "allocation cycles per second (Allocate 401, Allocate, Refresh 0)",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "window": args.window,
            "max_allocations": args.max_allocations,
            "hold": args.hold,
            "memory_rounds": args.memory_rounds,
            "relay_ports": list(RELAY_PORTS),
            "source_pool": str(SOURCE_POOL),
            "natkit_python": interpreter(args.natkit_python),
            "server_cpus": sorted(args.server_cpus),
            "client_cpus": sorted(args.client_cpus),
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "median_rate": {n: results[n]["rate"]["median"] for n in names},
        "ratio": ratios,
        "target": {
            "natkit/coturn_at_least": 1.0,
            "met": None if target is None else target >= 1.0,
            "one_core_per_server": len(args.server_cpus) == 1,
            # the same target for two processes against two relay threads
            "natkit-w2/coturn-t2_met": None
            if ratios.get("natkit-w2/coturn-t2_rate") is None
            else ratios["natkit-w2/coturn-t2_rate"] >= 1.0,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rate rounds (default 5)")
    p.add_argument("--duration", type=float, default=2.0, help="measured seconds per run")
    p.add_argument(
        "--warmup",
        type=float,
        default=1.5,
        help="unmeasured seconds before each run (1.5: past natkit's 1 s relay port quarantine)",
    )
    p.add_argument("--window", type=int, default=64, help="allocations in flight (default 64)")
    p.add_argument(
        "--max-allocations", type=int, default=1_000_000, help="cap per rate run (default 1e6)"
    )
    p.add_argument("--hold", type=int, default=10_000, help="allocations held for memory")
    p.add_argument("--memory-rounds", type=int, default=3, help="memory rounds (default 3)")
    p.add_argument("--hold-timeout", type=float, default=60.0, help="bound on each memory phase")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    add_server_arguments(p, "client")
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 0.3, 0.1
        args.window, args.hold, args.memory_rounds = 8, 200, 1
        args.max_allocations = min(args.max_allocations, 20_000)
    if not (1 <= args.rounds <= 50 and 0 < args.duration <= 60 and 0 <= args.warmup <= 10):
        p.error("--rounds 1..50, --duration 0..60 s, --warmup 0..10 s")
    if not (1 <= args.window <= 4096 and 1 <= args.hold <= 20_000 and args.memory_rounds >= 0):
        p.error("--window 1..4096, --hold 1..20000, --memory-rounds >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
