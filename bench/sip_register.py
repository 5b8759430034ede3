"""REGISTER per second (with and without digest auth) and memory per
registration: Kamailio and ``natkit sip-server``, side by side.

Load: sipp on UDP, one process, offering ``--rate`` new calls per second
with at most ``--limit`` in flight (``--natkit-limit`` for natkit: a
single-threaded Python server collapses into retransmissions when 2,000
calls queue up behind it, see bench/README.md), for ``--calls`` calls.
Without auth (``tests/interop/data/sipp/register_noauth.xml``) each call
registers a user never seen before (an injection CSV of unique users, a new
prefix per run), so every REGISTER creates a binding (RFC 3261 §10.3). With
auth (``bench/sipp/register_auth_bench.xml``) each call is REGISTER -> 401 ->
REGISTER with credentials (qop=auth) -> 200 for the digest user's own AoR
(sipp has one credential for all calls; natkit lets a user register only
its own AoR), each call with a new Call-ID replacing the AoR's binding.
Kamailio checks the credentials with ``pv_www_authenticate`` against one
static password; natkit against the bench user's HA1 in a SQLite store
(``natkit sip user add``), ``--md5-first``.

Per round, for each mode (noauth, auth) and each server in turn (A B A B
...), a fresh server process: ``rate`` = successful registrations / sipp's
wall time, with the failed count (a run counts only with 0 failed), sipp's
retransmissions, and registrations per server CPU-second (Kamailio's CPU is
the sum over its processes; steadier when sipp shares the two cores).

Memory: ``--memory-rounds`` times, a fresh server takes ``--hold``
(``--natkit-hold`` for natkit) unique registrations (no auth); Kamailio's
own shared-memory accounting (``kamcmd core.shmmem`` real_used), the
proportional set size and the RSS of the whole process tree are read before
and ``--settle`` seconds after (natkit keeps each completed server
transaction for Timer J, 32 s, RFC 3261 §17.2.2): ``(after - before) /
held`` bytes per registration.

Variants: ``--without-natkit`` leaves natkit out; ``--server NAME=COMMAND``
adds a server from a command template (``{host} {port} {domain} {user}
{password} {auth}``), e.g. ``--server "other=natkit sip-server --listen
udp:{host}:{port} --domain {domain} --store memory: --no-auth"``;
ratios against Kamailio are reported for each. Prints one JSON object;
``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BenchError, emit, fail, free_udp_ports, machine, ratio, summary
from siplib import (
    BENCH_SIPP_DIR,
    HOST,
    SipServer,
    command_server,
    describe,
    kamailio_server,
    natkit_server,
    run_sipp,
    users_csv,
)

MODES = {"noauth": "register_noauth.xml", "auth": str(BENCH_SIPP_DIR / "register_auth_bench.xml")}
BUILTIN = ("kamailio", "natkit")


def make_server(name: str, commands: dict[str, str], workdir: Path, *, auth: bool) -> SipServer:
    (port,) = free_udp_ports([HOST], 1)
    if name == "kamailio":
        return kamailio_server(port, workdir, auth=auth)
    if name == "natkit":
        return natkit_server(port, workdir, auth=auth)
    return command_server(name, commands[name], port, workdir, auth=auth)


def limit_for(server: SipServer, args: argparse.Namespace) -> int:
    return int(args.natkit_limit if server.name == "natkit" else args.limit)


def rate_run(
    server: SipServer, mode: str, workdir: Path, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    csv = users_csv(workdir / f"{prefix}.csv", prefix, args.calls)
    cpu0 = server.cpu_s()
    run = run_sipp(
        MODES[mode],
        server,
        workdir,
        calls=args.calls,
        rate=args.rate,
        csv=csv,
        auth=mode == "auth",
        timeout_s=args.timeout + args.calls / 500,  # natkit with digest: ~400/s
        limit=limit_for(server, args),
    )
    cpu = server.cpu_s() - cpu0
    csv.unlink()
    if run.successful == 0:
        raise BenchError(f"{server.name} {mode}: no registration succeeded: {run.stderr}")
    return {
        **describe(run),
        "limit": limit_for(server, args),
        "rate": round(run.successful / run.wall_s, 1),
        "server_cpu_s": round(cpu, 3),
        "registrations_per_server_cpu_s": round(run.successful / cpu, 1) if cpu else None,
    }


def memory_run(
    server: SipServer, workdir: Path, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    hold = args.natkit_hold if server.name == "natkit" else args.hold
    shm0, pss0, rss0 = server.shm_used(), server.pss_kb(), server.rss_kb()
    csv = users_csv(workdir / f"{prefix}.csv", prefix, hold)
    run = run_sipp(
        MODES["noauth"],
        server,
        workdir,
        calls=hold,
        rate=min(args.rate, 10_000),
        csv=csv,
        auth=False,
        timeout_s=args.timeout + hold / 500,
        limit=limit_for(server, args),
    )
    csv.unlink()
    if run.successful < hold:
        raise BenchError(f"{server.name}: only {run.successful} of {hold} registrations")
    rss_now = server.rss_kb()
    time.sleep(args.settle)
    shm1, pss1, rss1 = server.shm_used(), server.pss_kb(), server.rss_kb()
    result: dict[str, Any] = {
        **describe(run),
        "held": run.successful,
        "settle_s": args.settle,
        "pss_before_kb": pss0,
        "pss_holding_kb": pss1,
        "pss_bytes_per_registration": round((pss1 - pss0) * 1024 / run.successful, 1),
        "rss_before_kb": rss0,
        "rss_right_after_kb": rss_now,
        "rss_holding_kb": rss1,
        "rss_bytes_per_registration": round((rss1 - rss0) * 1024 / run.successful, 1),
    }
    if shm0 is not None and shm1 is not None:
        result["shm_bytes_per_registration"] = round((shm1 - shm0) / run.successful, 1)
    return result


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    commands = dict(args.commands)
    names = ["kamailio", *([] if args.without_natkit else ["natkit"]), *commands]
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        if mode not in MODES:
            raise BenchError(f"unknown mode {mode!r} (choose from {', '.join(MODES)})")
    before = machine()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {m: [] for m in modes} for n in names}
    mem: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    pids: dict[str, list[int]] = {n: [] for n in names}
    argvs: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="natkit-bench-sip-") as tmp:
        workdir = Path(tmp)
        serial = 0
        for round_index in range(args.rounds):
            for mode in modes:
                for name in names:  # interleaved: A B A B ...
                    serial += 1
                    where = workdir / f"{name}-{mode}-{round_index}"
                    server = make_server(name, commands, where, auth=mode == "auth")
                    try:
                        server.start()
                        pids[name].append(server.pid)
                        argvs[name] = server.argv
                        prefix = f"r{serial}u"
                        runs[name][mode].append(rate_run(server, mode, where, prefix, args))
                    finally:
                        server.stop()
                    time.sleep(0.2)
        for index in range(args.memory_rounds):
            for name in names:
                serial += 1
                where = workdir / f"{name}-memory-{index}"
                server = make_server(name, commands, where, auth=False)
                try:
                    server.start()
                    pids[name].append(server.pid)
                    mem[name].append(memory_run(server, where, f"m{serial}u", args))
                finally:
                    server.stop()

    results: dict[str, Any] = {}
    for n in names:
        per_mode: dict[str, Any] = {}
        for mode in modes:
            rs = runs[n][mode]
            per_mode[mode] = {
                "rate": summary([r["rate"] for r in rs], 1),
                "registrations_per_server_cpu_s": summary(
                    [r["registrations_per_server_cpu_s"] or 0.0 for r in rs], 1
                ),
                "failed": sum(r["failed"] for r in rs),
                "retransmissions": sum(r["retransmissions"] for r in rs),
                "runs": rs,
            }
        ms = mem[n]
        results[n] = {
            "command": argvs.get(n),
            "pids": pids[n],
            "modes": per_mode,
            "pss_bytes_per_registration": summary([m["pss_bytes_per_registration"] for m in ms], 1)
            if ms
            else None,
            "rss_bytes_per_registration": summary([m["rss_bytes_per_registration"] for m in ms], 1)
            if ms
            else None,
            "shm_bytes_per_registration": summary(
                [m["shm_bytes_per_registration"] for m in ms if "shm_bytes_per_registration" in m],
                1,
            )
            if ms and "shm_bytes_per_registration" in ms[0]
            else None,
            "memory_runs": ms,
        }
    ratios: dict[str, Any] = {}
    for n in names[1:]:
        for mode in modes:
            ratios[f"{n}/kamailio_{mode}_rate"] = ratio(
                results[n]["modes"][mode]["rate"]["median"],
                results["kamailio"]["modes"][mode]["rate"]["median"],
            )
    return {
        "benchmark": "sip_register",
        "unit": "successful REGISTER transactions (new bindings) per second, sipp over UDP",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "calls": args.calls,
            "rate": args.rate,
            "limit": args.limit,
            "natkit_limit": args.natkit_limit,
            "modes": modes,
            "hold": args.hold,
            "natkit_hold": args.natkit_hold,
            "settle_s": args.settle,
            "memory_rounds": args.memory_rounds,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "median_rate": {
            n: {m: results[n]["modes"][m]["rate"]["median"] for m in modes} for n in names
        },
        "ratio": ratios,
        "target": {"noauth_rate_at_least": 2000, "bytes_per_registration_at_most": 2048},
    }


def parse_server(text: str) -> tuple[str, str]:
    name, sep, command = text.partition("=")
    if not sep or not name or not command or name in BUILTIN:
        raise argparse.ArgumentTypeError("expected NAME=COMMAND (NAME not kamailio or natkit)")
    return name, command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--calls", type=int, default=60_000, help="registrations per run")
    p.add_argument("--rate", type=int, default=20_000, help="calls/s sipp offers")
    p.add_argument("--limit", type=int, default=2000, help="calls in flight at most")
    p.add_argument("--modes", default="noauth,auth", help="comma-separated: noauth,auth")
    p.add_argument("--natkit-limit", type=int, default=100, help="natkit's calls in flight")
    p.add_argument("--hold", type=int, default=100_000, help="registrations for memory")
    p.add_argument("--natkit-hold", type=int, default=100_000, help="natkit's, for memory")
    p.add_argument("--settle", type=float, default=35.0, help="wait before reading memory (s)")
    p.add_argument("--without-natkit", action="store_true", help="Kamailio (and --server) only")
    p.add_argument("--memory-rounds", type=int, default=3, help="memory rounds (default 3)")
    p.add_argument("--timeout", type=float, default=30.0, help="bound on each sipp run (s)")
    p.add_argument(
        "--server",
        dest="commands",
        action="append",
        type=parse_server,
        default=[],
        metavar="NAME=COMMAND",
        help="another server variant from a command template (see the module doc)",
    )
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.calls, args.rate = 1, 300, 1000
        args.hold, args.memory_rounds, args.timeout = 500, 1, 10.0
        args.natkit_hold, args.settle = 500, 0.0
    if not (1 <= args.rounds <= 20 and 1 <= args.calls <= 1_000_000 and args.rate >= 1):
        p.error("--rounds 1..20, --calls 1..1e6, --rate >= 1")
    if not (1 <= args.hold <= 500_000 and args.memory_rounds >= 0 and 0 < args.timeout <= 300):
        p.error("--hold 1..500000, --memory-rounds >= 0, --timeout 0..300 s")
    if not (1 <= args.natkit_hold <= 500_000 and args.natkit_limit >= 1 and args.settle >= 0):
        p.error("--natkit-hold 1..500000, --natkit-limit >= 1, --settle >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
