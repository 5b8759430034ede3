"""STUN Binding requests/s: ``natkit stun-server`` against coturn, side by side.

Every server runs as its own process on 127.0.0.1 and is loaded by the same
C generator (bench/stunload.c, compiled with ``cc`` into a temporary
directory): one UDP socket, a bounded window of outstanding requests, a
fixed duration after a warm-up, every answer validated (Binding success,
our transaction id, XOR-MAPPED-ADDRESS equal to the generator's address).
Runs are interleaved (natkit, natkit-asyncio, coturn, natkit, ...), and the
server's CPU time over each run is read with psutil; a server near 1.0 CPU
utilisation is the bottleneck, not the generator.

Variants:

* ``natkit``: ``python -m natkit.cli.main stun-server --no-tcp`` (uvloop).
* ``natkit-asyncio``: the same command with uvloop hidden, so
  ``natkit.net.loop.run`` falls back to asyncio's default loop.
* ``coturn``: ``turnserver`` with ``stun-only`` and one relay thread (the
  generator's single 5-tuple lands on one UDP thread anyway).

Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

from benchlib import (
    BenchError,
    Server,
    compile_c,
    emit,
    fail,
    free_udp_ports,
    machine,
    ratio,
    require_binary,
    running,
    summary,
)

HOST = "127.0.0.1"
LOSS_TIMEOUT_MS = 50  # silence after which the generator writes off what is outstanding
CONTENDED_BELOW = 0.9  # the generator busy-polls; less CPU than this means it was preempted
VARIANTS = ("natkit", "natkit-asyncio", "coturn")
# Runs natkit's own CLI entry point with ``import uvloop`` made to fail.
_ASYNCIO_SHIM = (
    "import sys; sys.modules['uvloop'] = None; "
    "from natkit.cli.main import main; sys.argv[0] = 'natkit'; main()"
)


def make_server(variant: str, port: int, workdir: Path, coturn_threads: int) -> Server:
    natkit_args = ["stun-server", "--listen", f"{HOST}:{port}", "--no-tcp"]
    if variant == "natkit":
        argv = [sys.executable, "-m", "natkit.cli.main", *natkit_args]
    elif variant == "natkit-asyncio":
        argv = [sys.executable, "-c", _ASYNCIO_SHIM, *natkit_args]
    elif variant == "coturn":
        turnserver = require_binary("turnserver", "Debian package coturn")
        conf = workdir / "turnserver.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        # A config of our own (never /etc/turnserver.conf), with every file in workdir.
        conf.write_text(
            "\n".join(
                [
                    f"listening-ip={HOST}",
                    f"listening-port={port}",
                    "stun-only",
                    "no-tcp",
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    f"relay-threads={coturn_threads}",
                    f"pidfile={workdir / 'turnserver.pid'}",
                    f"userdb={workdir / 'turndb'}",
                    "log-file=stdout",
                    "simple-log",
                    "",
                ]
            )
        )
        argv = [turnserver, "-c", str(conf)]
    else:
        raise BenchError(f"unknown variant {variant!r}")
    return Server(variant, argv, HOST, port, workdir)


def load_run(exe: Path, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """One bounded generator run against ``server``, with the server's CPU time."""
    proc = psutil.Process(server.pid)
    cpu0 = proc.cpu_times()
    cmd = [
        str(exe),
        server.host,
        str(server.port),
        str(int(args.duration * 1000)),
        str(int(args.warmup * 1000)),
        str(args.window),
        str(args.max_requests),
        str(LOSS_TIMEOUT_MS),
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=args.duration + args.warmup + 30,
        check=False,
    )
    cpu1 = proc.cpu_times()
    if out.returncode != 0:
        raise BenchError(f"stunload failed against {server.name}: {out.stderr.strip()}")
    run: dict[str, Any] = json.loads(out.stdout)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    run["server_cpu_s"] = round(cpu, 4)
    run["server_cpu_util"] = round(cpu / run["elapsed_s"], 3) if run["elapsed_s"] else None
    run["answers_per_server_cpu_s"] = round(run["answered"] / cpu, 1) if cpu > 0 else None
    gen_util = run["generator_cpu_s"] / run["elapsed_s"] if run["elapsed_s"] else 0.0
    run["generator_cpu_util"] = round(gen_util, 3)
    run["contended"] = gen_util < CONTENDED_BELOW
    return run


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise BenchError(f"unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    before = machine()
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        workdir = Path(tmp)
        exe = compile_c("stunload.c", workdir)
        ports = free_udp_ports([HOST], len(variants))
        servers = [
            make_server(v, p, workdir / v, args.coturn_threads)
            for v, p in zip(variants, ports, strict=True)
        ]
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        with running(servers):
            for _ in range(args.rounds):
                for server in servers:  # interleaved: A B C A B C ...
                    runs[server.name].append(load_run(exe, server, args))
            rss = {
                s.name: round(psutil.Process(s.pid).memory_info().rss / 2**20, 1) for s in servers
            }
            pids = {s.name: s.pid for s in servers}
        commands = {s.name: s.argv for s in servers}

    results: dict[str, Any] = {}
    for v in variants:
        rs = runs[v]
        results[v] = {
            "command": commands[v],
            "pid": pids[v],
            "rate": summary([r["rate"] for r in rs], 1),
            "server_cpu_util": summary([r["server_cpu_util"] or 0.0 for r in rs], 3),
            "answers_per_server_cpu_s": summary(
                [r["answers_per_server_cpu_s"] or 0.0 for r in rs], 1
            ),
            "generator_cpu_util": summary([r["generator_cpu_util"] for r in rs], 3),
            "contended_runs": sum(r["contended"] for r in rs),
            "errors": {k: sum(r[k] for r in rs) for k in ("invalid", "stale", "lost")},
            "rss_mb": rss[v],
            "runs": rs,
        }
    med = {v: results[v]["rate"]["median"] for v in variants}
    eff = {v: results[v]["answers_per_server_cpu_s"]["median"] for v in variants}
    ratios: dict[str, Any] = {}
    if "coturn" in med:
        for v in ("natkit", "natkit-asyncio"):
            if v in med:
                ratios[f"{v}/coturn"] = ratio(med[v], med["coturn"])
                ratios[f"{v}/coturn_per_round"] = [
                    ratio(a["rate"], b["rate"])
                    for a, b in zip(runs[v], runs["coturn"], strict=True)
                ]
                ratios[f"{v}/coturn_per_cpu_s"] = ratio(eff[v], eff["coturn"])
    if "natkit" in med and "natkit-asyncio" in med:
        ratios["natkit-asyncio/natkit"] = ratio(med["natkit-asyncio"], med["natkit"])
        ratios["natkit-asyncio/natkit_per_cpu_s"] = ratio(eff["natkit-asyncio"], eff["natkit"])
    target = ratios.get("natkit/coturn")
    return {
        "benchmark": "stun_server",
        "unit": "STUN Binding responses per second (validated)",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "window": args.window,
            "max_requests": args.max_requests,
            "coturn_relay_threads": args.coturn_threads,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "median_rate": med,
        "median_answers_per_server_cpu_s": eff,
        "ratio": ratios,
        "target": {
            "natkit/coturn_at_least": 0.8,
            "met": None if target is None else target >= 0.8,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    p.add_argument("--window", type=int, default=64, help="outstanding requests (default 64)")
    p.add_argument(
        "--max-requests", type=int, default=20_000_000, help="request cap per run (default 2e7)"
    )
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--coturn-threads", type=int, default=1, help="coturn relay-threads")
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 0.3, 0.1
        args.max_requests = min(args.max_requests, 500_000)
    if not (1 <= args.rounds <= 100 and 0 < args.duration <= 120 and 0 <= args.warmup <= 10):
        p.error("--rounds 1..100, --duration 0..120 s, --warmup 0..10 s")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
