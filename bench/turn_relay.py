"""TURN relaying through ChannelData: ``natkit turn-server`` against coturn.

Both servers run as their own processes on 127.0.0.1 (UDP, long-term
credentials, loopback peers allowed, relay ports above the ephemeral range)
and are loaded the same way. Python does the control plane with the
minimal client in bench/turnlib.py: ``--clients`` allocations, each with a
permission and a channel bound to one peer socket. The data plane is
bench/turnrelay.c (compiled with ``cc``): it sends 120-byte payloads as
ChannelData at an offered rate kept by busy-polling, echoes them at the
peer, and times each round trip client -> relay -> peer -> relay -> client,
so every datagram crosses the server twice.

Per round, for each server in turn (interleaved: natkit, coturn, natkit, ...):

* a ladder of offered rates (``--rates``, datagrams per second sent by the
  clients): loss, delivered echoes per second and the server's CPU at each;
  the highest rate with loss at most ``--max-loss`` is the round's
  ``max_lossless_rate`` (the highest, not the first to fail: on a shared
  machine one preempted step should not end a round);
* a latency run at ``--latency-rate``: round-trip median and p99, and the
  same run straight from a client socket to the peer (no server), so the
  server's *added* latency is relayed minus direct.

Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchlib import (
    BenchError,
    Server,
    add_server_arguments,
    compile_c,
    emit,
    fail,
    free_udp_ports,
    interpreter,
    machine,
    ratio,
    running_pinned,
    summary,
)
from turnlib import HOST, Allocation, allocate, coturn_server, natkit_server, set_buffers

SERVERS = ("natkit", "coturn")
PORT_RANGES = {"natkit": (61000, 62999), "coturn": (63000, 64999)}
FIRST_CHANNEL = 0x4000
CONTENDED_BELOW = 0.9  # the generator busy-polls; less CPU than this means it was preempted
SETTLE_S = 0.2  # pause between runs, so a server's backlog from one cannot spill into the next


def make_server(
    name: str, port: int, workdir: Path, coturn_threads: int, python: str | None = None
) -> Server:
    low, high = PORT_RANGES[name]
    if name == "natkit":
        return natkit_server(port, workdir, min_port=low, max_port=high, python=python)
    return coturn_server(port, workdir, min_port=low, max_port=high, threads=coturn_threads)


class Load:
    """The sockets of one server's load: allocations bound to a shared peer socket."""

    def __init__(self, server: Server, clients: int) -> None:
        self.server = server
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_buffers(self.peer, 8 << 20)
        self.peer.bind((HOST, 0))
        self.allocations: list[Allocation] = []
        self.direct = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.direct.bind((HOST, 0))
        self.direct.connect(self.peer.getsockname())
        try:
            for _ in range(clients):
                self.allocations.append(allocate((server.host, server.port)))
            self.refresh()
        except BaseException:
            self.close()
            raise

    def refresh(self) -> None:
        """(Re)bind each channel, which refreshes its permission too (RFC 8656 §12)."""
        peer = self.peer.getsockname()
        for index, alloc in enumerate(self.allocations):
            alloc.permit_and_bind(peer, FIRST_CHANNEL + index)

    def specs(self, direct: bool) -> list[str]:
        if direct:
            return [f"{self.direct.fileno()}:0"]
        return [f"{a.sock.fileno()}:{FIRST_CHANNEL + i}" for i, a in enumerate(self.allocations)]

    def fds(self) -> list[int]:
        return [
            self.peer.fileno(),
            self.direct.fileno(),
            *(a.sock.fileno() for a in self.allocations),
        ]

    def close(self) -> None:
        for alloc in self.allocations:
            alloc.release()
        self.peer.close()
        self.direct.close()


def udp_rcvbuf_errors() -> int:
    """The host's UDP RcvbufErrors counter (/proc/net/snmp): datagrams dropped at full sockets."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
    head, values = [ln for ln in lines if ln and ln[0] == "Udp:"][:2]
    return int(values[head.index("RcvbufErrors")])


def run_once(
    exe: Path, load: Load, rate: float, duration: float, args: argparse.Namespace, *, direct: bool
) -> dict[str, Any]:
    """One bounded turnrelay run, with the server's CPU time over it."""
    proc = psutil.Process(load.server.pid)
    cpu0 = proc.cpu_times()
    drops0 = udp_rcvbuf_errors()
    cmd = [
        str(exe),
        str(args.payload),
        str(rate),
        str(int(duration * 1000)),
        str(int(args.warmup * 1000)),
        str(args.drain_ms),
        str(secrets.randbits(31)),
        str(load.peer.fileno()),
        *load.specs(direct),
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=duration + args.warmup + args.drain_ms / 1000 + 30,
        check=False,
        pass_fds=load.fds(),
        preexec_fn=(lambda: os.sched_setaffinity(0, args.generator_cpus))
        if args.generator_cpus
        else None,
    )
    cpu1 = proc.cpu_times()
    drops = udp_rcvbuf_errors() - drops0
    if out.returncode != 0:
        raise BenchError(f"turnrelay failed against {load.server.name}: {out.stderr.strip()}")
    run: dict[str, Any] = json.loads(out.stdout)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    run["rcvbuf_errors"] = drops
    run["server_cpu_s"] = round(cpu, 4)
    run["server_cpu_util"] = round(cpu / run["elapsed_s"], 3) if run["elapsed_s"] else None
    # every echo crossed the server twice; contention-proof: work done per CPU-second used
    run["echoes_per_server_cpu_s"] = round(run["received"] / cpu, 1) if cpu > 0 else None
    run["generator_cpu_util"] = round(run["generator_cpu_s"] / run["elapsed_s"], 3)
    time.sleep(SETTLE_S)
    return run


def max_lossless(ladder: list[dict[str, Any]], max_loss: float) -> float:
    """The highest offered rate that lost at most ``max_loss`` (0.0 if none did)."""
    passed = [
        step["offered_rate"]
        for step in ladder
        if step["loss"] <= max_loss and not step["invalid"] and not step["duplicates"]
    ]
    return max(passed, default=0.0)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in SERVERS:
            raise BenchError(f"unknown server {n!r} (choose from {', '.join(SERVERS)})")
    before = machine()
    rounds: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        workdir = Path(tmp)
        exe = compile_c("turnrelay.c", workdir)
        ports = free_udp_ports([HOST], len(names))
        servers = [
            make_server(n, p, workdir / n, args.coturn_threads, args.natkit_python)
            for n, p in zip(names, ports, strict=True)
        ]
        with running_pinned(servers, args.server_cpus):
            loads: list[Load] = []
            try:
                for server in servers:
                    loads.append(Load(server, args.clients))
                for _ in range(args.rounds):
                    for load in loads:  # interleaved: A B A B ...
                        load.refresh()
                        ladder = [
                            run_once(exe, load, r, args.duration, args, direct=False)
                            for r in args.rates
                        ]
                        relayed = run_once(
                            exe, load, args.latency_rate, args.latency_duration, args, direct=False
                        )
                        direct = run_once(
                            exe, load, args.latency_rate, args.latency_duration, args, direct=True
                        )
                        rounds[load.server.name].append(
                            {"ladder": ladder, "latency": relayed, "direct": direct}
                        )
            finally:
                for load in loads:
                    load.close()
            pids = {s.name: s.pid for s in servers}
            rss = {
                s.name: round(psutil.Process(s.pid).memory_info().rss / 2**20, 1) for s in servers
            }
        commands = {s.name: s.argv for s in servers}

    results: dict[str, Any] = {}
    for n in names:
        rs = rounds[n]
        offered: dict[str, Any] = {}
        for i, rate in enumerate(args.rates):
            steps = [r["ladder"][i] for r in rs]
            offered[str(int(rate))] = {
                "loss": summary([s["loss"] for s in steps], 6),
                "delivered_rate": summary([s["delivered_rate"] for s in steps], 1),
                "rtt_p50_us": summary([s["rtt_us"]["p50"] for s in steps], 1),
                "server_cpu_util": summary([s["server_cpu_util"] or 0.0 for s in steps], 3),
                "echoes_per_server_cpu_s": summary(
                    [s["echoes_per_server_cpu_s"] or 0.0 for s in steps], 1
                ),
            }
        lat = [r["latency"] for r in rs]
        dirs = [r["direct"] for r in rs]
        results[n] = {
            "command": commands[n],
            "pid": pids[n],
            "rss_mb": rss[n],
            "offered": offered,
            "max_lossless_rate": summary([max_lossless(r["ladder"], args.max_loss) for r in rs], 1),
            "max_delivered_rate": summary(
                [max(s["delivered_rate"] for s in r["ladder"]) for r in rs], 1
            ),
            "latency": {
                "rate": args.latency_rate,
                "loss": summary([x["loss"] for x in lat], 6),
                "rtt_p50_us": summary([x["rtt_us"]["p50"] for x in lat], 1),
                "rtt_p99_us": summary([x["rtt_us"]["p99"] for x in lat], 1),
                "direct_rtt_p50_us": summary([x["rtt_us"]["p50"] for x in dirs], 1),
                "direct_rtt_p99_us": summary([x["rtt_us"]["p99"] for x in dirs], 1),
                "added_p50_us": summary(
                    [
                        a["rtt_us"]["p50"] - d["rtt_us"]["p50"]
                        for a, d in zip(lat, dirs, strict=True)
                    ],
                    1,
                ),
                "added_p99_us": summary(
                    [
                        a["rtt_us"]["p99"] - d["rtt_us"]["p99"]
                        for a, d in zip(lat, dirs, strict=True)
                    ],
                    1,
                ),
            },
            "contended_runs": sum(
                s["generator_cpu_util"] < CONTENDED_BELOW
                for r in rs
                for s in [*r["ladder"], r["latency"]]
            ),
            "rcvbuf_errors": sum(s["rcvbuf_errors"] for r in rs for s in r["ladder"]),
            "errors": {
                k: sum(s[k] for r in rs for s in [*r["ladder"], r["latency"]])
                for k in ("invalid", "duplicates", "send_errors", "echo_errors")
            },
            "rounds": rs,
        }
    ratios: dict[str, Any] = {}
    if "natkit" in results and "coturn" in results:
        nk, ct = results["natkit"], results["coturn"]
        ratios["natkit/coturn_max_lossless"] = ratio(
            nk["max_lossless_rate"]["median"], ct["max_lossless_rate"]["median"]
        )
        ratios["natkit/coturn_max_delivered"] = ratio(
            nk["max_delivered_rate"]["median"], ct["max_delivered_rate"]["median"]
        )
        ref = str(int(args.reference_rate))
        if ref in nk["offered"] and ref in ct["offered"]:
            ratios[f"natkit/coturn_per_cpu_s_at_{ref}"] = ratio(
                nk["offered"][ref]["echoes_per_server_cpu_s"]["median"],
                ct["offered"][ref]["echoes_per_server_cpu_s"]["median"],
            )
        ratios["natkit/coturn_added_p50"] = ratio(
            nk["latency"]["added_p50_us"]["median"], ct["latency"]["added_p50_us"]["median"]
        )
    target = ratios.get("natkit/coturn_max_lossless")
    return {
        "benchmark": "turn_relay",
        "unit": "echoed ChannelData datagrams per second (each crosses the server twice)",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "rates": args.rates,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "drain_ms": args.drain_ms,
            "clients": args.clients,
            "payload": args.payload,
            "max_loss": args.max_loss,
            "reference_rate": args.reference_rate,
            "latency_rate": args.latency_rate,
            "latency_duration_s": args.latency_duration,
            "coturn_relay_threads": args.coturn_threads,
            "server_cpus": sorted(args.server_cpus),
            "generator_cpus": sorted(args.generator_cpus),
            "natkit_python": interpreter(args.natkit_python),
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "median_max_lossless_rate": {n: results[n]["max_lossless_rate"]["median"] for n in names},
        "ratio": ratios,
        "target": {
            "natkit/coturn_at_least": 0.5,
            "met": None if target is None else target >= 0.5,
        },
    }


def parse_rates(text: str) -> list[float]:
    rates = sorted(float(x) for x in text.split(",") if x)
    if not rates or rates[0] <= 0 or rates[-1] > 1_000_000:
        raise argparse.ArgumentTypeError("rates must be in (0, 1e6]")
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--rates",
        type=parse_rates,
        default=parse_rates(
            "5000,10000,20000,30000,40000,50000,60000,70000,80000,90000,100000,110000,120000"
        ),
        help="offered datagrams/s, comma-separated",
    )
    p.add_argument("--duration", type=float, default=1.0, help="measured seconds per rate")
    p.add_argument(
        "--reference-rate",
        type=float,
        default=20000.0,
        help="ladder rate whose echoes per server CPU-second are compared (default 20000)",
    )
    p.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds before each run")
    p.add_argument("--drain-ms", type=int, default=200, help="wait for late echoes (ms)")
    p.add_argument("--clients", type=int, default=10, help="allocations (default 10)")
    p.add_argument("--payload", type=int, default=120, help="payload bytes (default 120)")
    p.add_argument("--max-loss", type=float, default=0.001, help="loss still called lossless")
    p.add_argument("--latency-rate", type=float, default=2000.0, help="rate of the latency run")
    p.add_argument("--latency-duration", type=float, default=2.0, help="seconds of it")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    p.add_argument("--coturn-threads", type=int, default=1, help="coturn relay-threads")
    add_server_arguments(p, "generator")
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.drain_ms = 1, 0.2, 0.05, 100
        args.rates, args.clients, args.reference_rate = [2000.0], 2, 2000.0
        args.latency_rate, args.latency_duration = 1000.0, 0.2
    if not (1 <= args.rounds <= 50 and 0 < args.duration <= 30 and 0 <= args.warmup <= 5):
        p.error("--rounds 1..50, --duration 0..30 s, --warmup 0..5 s")
    if not (1 <= args.clients <= 200 and 24 <= args.payload <= 1400):
        p.error("--clients 1..200, --payload 24..1400")
    if not (0 < args.latency_duration <= 30 and 0 <= args.drain_ms <= 5000):
        p.error("--latency-duration 0..30 s, --drain-ms 0..5000")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
