"""INVITE-to-200 calls per second through a proxy: Kamailio and ``natkit
sip-server``, side by side.

Per run, on a fresh server: a user ``bob`` registers (no auth) from a free
UDP port, a sipp UAS (``bench/sipp/uas_answer_bench.xml``: 180, 200 with
SDP, then ACK, optional as a proxy may swap it with the BYE, and BYE/200)
binds that port, and a sipp UAC
(``uac_invite.xml``: INVITE with SDP, 200, ACK, BYE, 200, in-dialog requests
along the Record-Route set) calls ``bob@example.org`` through the proxy
``--calls`` times, offering ``--rate`` calls/s with at most ``--limit``
(``--natkit-limit`` for natkit) in flight. Both servers record-route, so the
ACK and BYE go through them too: five requests and five responses cross the
proxy per call. ``rate`` = successful calls / the UAC's wall time; a run
counts only with 0 failed calls on both sipps. Runs alternate K N K N ...
Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BenchError, emit, fail, free_udp_ports, machine, ratio, summary
from siplib import (
    HOST,
    SippUas,
    SipServer,
    describe,
    kamailio_server,
    natkit_server,
    register_from,
    run_sipp,
)

NAMES = ("kamailio", "natkit")
CALLEE = "bob"


def make_server(name: str, workdir: Path) -> SipServer:
    (port,) = free_udp_ports([HOST], 1)
    if name == "kamailio":
        return kamailio_server(port, workdir, auth=False)
    return natkit_server(port, workdir, auth=False)


def call_run(server: SipServer, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    limit = int(args.natkit_limit if server.name == "natkit" else args.limit)
    (uas_port,) = free_udp_ports([HOST], 1)
    status = register_from(server, CALLEE, uas_port)
    if status != 200:
        raise BenchError(f"{server.name}: REGISTER of the UAS answered {status}")
    timeout_s = args.timeout + args.calls / 300
    uas = SippUas(uas_port, workdir / "uas", timeout_s=timeout_s + 5)
    try:
        cpu0 = server.cpu_s()
        run = run_sipp(
            "uac_invite.xml",
            server,
            workdir / "uac",
            calls=args.calls,
            rate=args.rate,
            csv=None,
            auth=False,
            timeout_s=timeout_s,
            limit=limit,
            service=CALLEE,
        )
        cpu = server.cpu_s() - cpu0
        time.sleep(0.6)  # the UAS's last timewait (500 ms)
    finally:
        uas_stats = uas.stop()
    if run.successful == 0:
        raise BenchError(f"{server.name}: no call succeeded: {run.stderr}")
    uas_ok = int(uas_stats.get("SuccessfulCall(C)", "0") or 0)
    uas_failed = int(uas_stats.get("FailedCall(C)", "0") or 0)
    return {
        **describe(run),
        "limit": limit,
        "rate": round(run.successful / run.wall_s, 1),
        "uas_successful": uas_ok,
        "uas_failed": uas_failed,
        "uas_pid": uas.pid,
        "server_cpu_s": round(cpu, 3),
        "calls_per_server_cpu_s": round(run.successful / cpu, 1) if cpu else None,
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in NAMES if n != "natkit" or not args.without_natkit]
    before = machine()
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    pids: dict[str, list[int]] = {n: [] for n in names}
    argvs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="natkit-bench-sip-invite-") as tmp:
        workdir = Path(tmp)
        for round_index in range(args.rounds):
            for name in names:  # interleaved: A B A B ...
                where = workdir / f"{name}-{round_index}"
                server = make_server(name, where)
                try:
                    server.start()
                    pids[name].append(server.pid)
                    argvs[name] = server.argv
                    runs[name].append(call_run(server, where, args))
                finally:
                    server.stop()
                time.sleep(0.2)
    results: dict[str, Any] = {}
    for n in names:
        rs = runs[n]
        results[n] = {
            "command": argvs.get(n),
            "pids": pids[n],
            "rate": summary([r["rate"] for r in rs], 1),
            "calls_per_server_cpu_s": summary([r["calls_per_server_cpu_s"] or 0.0 for r in rs], 1),
            "failed": sum(r["failed"] for r in rs),
            "uas_failed": sum(r["uas_failed"] for r in rs),
            "retransmissions": sum(r["retransmissions"] for r in rs),
            "runs": rs,
        }
    ratios: dict[str, Any] = {}
    if "natkit" in results:
        ratios["natkit/kamailio_rate"] = ratio(
            results["natkit"]["rate"]["median"], results["kamailio"]["rate"]["median"]
        )
        ratios["natkit/kamailio_per_cpu_s"] = ratio(
            results["natkit"]["calls_per_server_cpu_s"]["median"],
            results["kamailio"]["calls_per_server_cpu_s"]["median"],
        )
    return {
        "benchmark": "sip_invite",
        "unit": "successful calls (INVITE/200/ACK/BYE/200 through the proxy) per second, sipp UDP",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "calls": args.calls,
            "rate": args.rate,
            "limit": args.limit,
            "natkit_limit": args.natkit_limit,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "median_rate": {n: results[n]["rate"]["median"] for n in names},
        "ratio": ratios,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--calls", type=int, default=3_000, help="calls per run")
    p.add_argument("--rate", type=int, default=1_000, help="calls/s sipp offers")
    p.add_argument("--limit", type=int, default=200, help="calls in flight at most")
    p.add_argument("--natkit-limit", type=int, default=30, help="natkit's calls in flight")
    p.add_argument("--without-natkit", action="store_true", help="Kamailio only")
    p.add_argument("--timeout", type=float, default=30.0, help="bound on each sipp run (s)")
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.calls, args.rate, args.timeout = 1, 100, 200, 10.0
    if not (1 <= args.rounds <= 20 and 1 <= args.calls <= 1_000_000 and args.rate >= 1):
        p.error("--rounds 1..20, --calls 1..1e6, --rate >= 1")
    if not (args.limit >= 1 and args.natkit_limit >= 1 and 0 < args.timeout <= 300):
        p.error("--limit >= 1, --natkit-limit >= 1, --timeout 0..300 s")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
