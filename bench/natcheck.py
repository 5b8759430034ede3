"""Wall time of one classic (RFC 3489) NAT type detection: natkit against pystun3.

Both clients run in this process against the same server on loopback, in
alternation (natkit, pystun3, natkit on a fresh loop, natkit, ...), and both
must give the same answer: natkit's ``open-internet`` is pystun3's ``Open
Internet`` (there is no NAT on loopback).

* natkit: ``await natcheck(OsStack(), server, NatCheckConfig(classic=True,
  behavior=False))`` on uvloop, sockets opened and closed included.
  ``natkit_s`` runs it on a loop that has run before (a long-lived
  application); ``natkit_fresh_loop_s`` creates a new uvloop loop for each
  call and counts its set-up and close (a one-shot synchronous caller).
* pystun3: ``stun.get_ip_info(source_ip='127.0.0.1', source_port=0,
  stun_host='127.0.0.1', stun_port=P)`` (blocking, one socket).

Servers (each its own process, two addresses 127.0.0.1 and 127.0.0.2):

* ``stund``: Debian's RFC 3489 server, in the foreground.
* ``natkit``: ``natkit stun-server --alternate`` (RFC 5780, answers RFC 3489
  requests too).
* ``natkit-firewalled`` (only with ``--firewall``): natkit's server that
  drops every request carrying a CHANGE-REQUEST, which is what a client
  behind a symmetric UDP firewall sees (Test II never answered). Both
  clients must say ``symmetric-udp-firewall``; this is where waiting for
  unanswered tests, not loopback round trips, decides the time.

``--lab`` measures the same under real network conditions, in the namespace
lab (root): for each ``--presets`` NAT (default open, full-cone,
port-restricted-cone, symmetric), a lab with natkit's STUN server on
203.0.113.10:3478 / 203.0.113.11:3479 (``natkit stun-server --alternate``,
see natkit.net.netns.scenario), natkit's TUN NAT with ``--delay`` one way on
each side (20 ms: a 40 ms round trip through the NAT) and a client behind
it. One process in the client's namespace runs ``--lab-runs`` trials of each
client, alternating which goes first, timing only the detection call (the
interpreter, imports and event loop are ready before): natkit's classic
natcheck on a warm uvloop loop and pystun3's ``get_ip_info``. Before each
trial it moves the namespace's ephemeral ports to a window no earlier trial
used (pystun3 gets its own fixed ports), so every trial meets fresh NAT
mappings. Both must report the emulated type on every trial (pystun3's words
mapped to natkit's), otherwise the script exits 1. Without root it prints
``{"skipped": reason}`` and exits 0.

Prints one JSON object; ``--smoke`` is a seconds-long run for CI (with
``--lab``: one trial behind the full-cone NAT).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    BenchError,
    Server,
    emit,
    fail,
    free_udp_ports,
    machine,
    ratio,
    require_binary,
    running,
    summary,
)

PRIMARY = "127.0.0.1"
ALTERNATE = "127.0.0.2"
SERVERS = ("stund", "natkit", "natkit-firewalled")
DEFAULT_SERVERS = ("stund", "natkit")
OPEN = {"natkit": "open-internet", "pystun3": "Open Internet"}
FIREWALL = {"natkit": "symmetric-udp-firewall", "pystun3": "Symmetric UDP Firewall"}
EXPECTED = {"stund": OPEN, "natkit": OPEN, "natkit-firewalled": FIREWALL}
TRIAL_TIMEOUT = 30.0  # seconds; pystun3 waits 4 x 2 s for an unanswered test


def make_server(name: str, workdir: Path) -> Server:
    port, alt_port = free_udp_ports([PRIMARY, ALTERNATE], 2)
    natkit_server = [
        "stun-server",
        "--listen",
        f"{PRIMARY}:{port}",
        "--alternate",
        f"{ALTERNATE}:{alt_port}",
        "--no-tcp",
    ]
    if name == "stund":
        stund = require_binary("stund", "Debian package stun-server")
        argv = [stund, "-h", PRIMARY, "-a", ALTERNATE, "-p", str(port), "-o", str(alt_port)]
    elif name == "natkit":
        argv = [sys.executable, "-m", "natkit.cli.main", *natkit_server]
    elif name == "natkit-firewalled":
        argv = [sys.executable, __file__, "--serve-firewalled", str(port), str(alt_port)]
    else:
        raise BenchError(f"unknown server {name!r} (choose from {', '.join(SERVERS)})")
    return Server(name, argv, PRIMARY, port, workdir / name, also_ready=[(ALTERNATE, alt_port)])


async def serve_firewalled(port: int, alt_port: int) -> None:
    """natkit's RFC 5780 server, minus every answer a symmetric UDP firewall
    would drop: those to requests with CHANGE-REQUEST. Runs until SIGTERM."""
    import signal

    from natkit import __version__
    from natkit.addr import Endpoint
    from natkit.errors import MalformedMessageError
    from natkit.net.os_stack import OsStack
    from natkit.stun import attributes as at
    from natkit.stun.aio import StunServerRunner
    from natkit.stun.message import parse_message
    from natkit.stun.server import StunServerConfig

    config = StunServerConfig(
        primary=Endpoint(PRIMARY, port),
        alternate=Endpoint(ALTERNATE, alt_port),
        rfc5780=True,
        # As `natkit stun-server` does. pystun3 skips attributes without their
        # padding, so a SOFTWARE whose length is not a multiple of 4 breaks it.
        software=f"natkit {__version__}",
    )
    runner = StunServerRunner(OsStack(), config, tcp=False)
    core = runner.core
    receive = core.receive_datagram

    def filtered(data: bytes, addr: Endpoint, **kwargs: Any) -> None:
        try:
            change = parse_message(data, allow_classic=True).get(at.CHANGE_REQUEST)
        except MalformedMessageError:
            change = None
        if change is not None and (change.change_ip or change.change_port):
            return
        receive(data, addr, **kwargs)

    core.receive_datagram = filtered  # type: ignore[method-assign]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with runner:
        await stop.wait()


def _natcheck_coroutine(port: int, host: str = PRIMARY) -> Any:
    from natkit.addr import Endpoint
    from natkit.nat.aio import natcheck
    from natkit.nat.natcheck import NatCheckConfig
    from natkit.net.os_stack import OsStack

    config = NatCheckConfig(classic=True, behavior=False)

    async def once() -> tuple[float, str | None]:
        t0 = time.perf_counter()
        async with asyncio.timeout(TRIAL_TIMEOUT):
            result = await natcheck(OsStack(), Endpoint(host, port), config)
        return time.perf_counter() - t0, result.classic.value if result.classic else None

    return once()


def natkit_warm_trial(runner: asyncio.Runner, port: int) -> tuple[float, str | None]:
    """natcheck on a loop that has already run (a long-lived application)."""
    elapsed, verdict = runner.run(_natcheck_coroutine(port))
    return float(elapsed), verdict


def natkit_fresh_trial(port: int) -> tuple[float, str | None]:
    """natcheck on a new uvloop loop, creating and closing the loop included."""
    from natkit.net.loop import run

    t0 = time.perf_counter()
    _, verdict = run(_natcheck_coroutine(port))
    return time.perf_counter() - t0, verdict


def pystun3_trial(port: int) -> tuple[float, str]:
    import stun

    t0 = time.perf_counter()
    try:
        nat_type, _, _ = stun.get_ip_info(
            source_ip=PRIMARY, source_port=0, stun_host=PRIMARY, stun_port=port
        )
    except Exception as exc:  # pystun3 raises on answers it cannot parse
        return time.perf_counter() - t0, f"error: {exc!r}"
    return time.perf_counter() - t0, str(nat_type)


def measure(server: Server, runs: int, *, warm_up: bool) -> dict[str, Any]:
    from natkit.net.loop import loop_factory

    times: dict[str, list[float]] = {"natkit": [], "pystun3": [], "natkit_fresh_loop": []}
    answers: dict[str, list[str | None]] = {k: [] for k in times}
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if warm_up:  # imports, the loop's first sockets
            natkit_warm_trial(runner, server.port)
            natkit_fresh_trial(server.port)
            pystun3_trial(server.port)
        for _ in range(runs):  # interleaved: natkit, pystun3, natkit (fresh loop), ...
            for name, trial in (
                ("natkit", lambda: natkit_warm_trial(runner, server.port)),
                ("pystun3", lambda: pystun3_trial(server.port)),
                ("natkit_fresh_loop", lambda: natkit_fresh_trial(server.port)),
            ):
                elapsed, verdict = trial()
                times[name].append(elapsed)
                answers[name].append(verdict)
    expected = EXPECTED[server.name]
    same = all(v == expected["pystun3"] for v in answers["pystun3"]) and all(
        v == expected["natkit"] for v in answers["natkit"] + answers["natkit_fresh_loop"]
    )
    stats = {name: summary(values) for name, values in times.items()}
    pystun3_median = stats["pystun3"]["median"]
    return {
        "command": server.argv,
        "pid": server.pid,
        "expected": expected,
        "natkit_s": stats["natkit"],
        "natkit_fresh_loop_s": stats["natkit_fresh_loop"],
        "pystun3_s": stats["pystun3"],
        "ratio": {
            "natkit/pystun3": ratio(stats["natkit"]["median"], pystun3_median),
            "natkit_fresh_loop/pystun3": ratio(
                stats["natkit_fresh_loop"]["median"], pystun3_median
            ),
            "natkit/pystun3_per_run": [
                ratio(a, b) for a, b in zip(times["natkit"], times["pystun3"], strict=True)
            ],
        },
        "answers": answers,
        "same_answer": same,
    }


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.servers.split(",") if n]
    if args.firewall and "natkit-firewalled" not in names:
        names.append("natkit-firewalled")
    for n in names:
        if n not in SERVERS:
            raise BenchError(f"unknown server {n!r} (choose from {', '.join(SERVERS)})")
    try:
        import stun  # noqa: F401
    except ImportError as exc:
        raise BenchError("pystun3 is not installed: pip install pystun3 (or .[test])") from exc
    before = machine()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        for name in names:  # one server at a time: each gets the whole machine
            server = make_server(name, Path(tmp))
            firewalled = name == "natkit-firewalled"
            with running([server]):
                results[name] = measure(
                    server, args.firewall_runs if firewalled else args.runs, warm_up=not firewalled
                )
    primary = "stund" if "stund" in results else names[0]
    target = results[primary]["ratio"]["natkit/pystun3"]
    return {
        "benchmark": "natcheck",
        "unit": "seconds of wall time per classic NAT type detection",
        "smoke": args.smoke,
        "params": {"runs": args.runs, "firewall_runs": args.firewall_runs, "servers": names},
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "servers": results,
        "same_answer": all(r["same_answer"] for r in results.values()),
        "target": {
            "natkit/pystun3_at_most": 0.5,
            "server": primary,
            "met": None if target is None else target <= 0.5,
        },
    }


# -- --lab: the namespace lab, behind natkit's TUN NAT with link delays ---------------

LAB_PRESETS = ("open", "full-cone", "port-restricted-cone", "symmetric")
LAB_DELAY = 0.02  # seconds one-way on each side of the NAT: 2 x 20 ms = ~40 ms RTT
PYSTUN3_WORDS = {
    "Open Internet": "open-internet",
    "Full Cone": "full-cone",
    "Restric NAT": "restricted-cone",
    "Restric Port NAT": "port-restricted-cone",
    "Symmetric NAT": "symmetric",
    "Symmetric UDP Firewall": "symmetric-udp-firewall",
    "Blocked": "udp-blocked",
}
"""pystun3's words (``stun.FullCone``, ``stun.RestricPortNAT``, ...) in natkit's."""
LAB_TRIAL_BOUND = 2.5 + 2 * 8.5
"""Seconds a trial pair may take, round trips aside: natkit's 2.2 s schedule
and pystun3's two 8 s silences (port-restricted cone)."""
PORT_WINDOW = 16
NATKIT_PORT_BASE = 20_000
PYSTUN3_PORT_BASE = 10_000


def _set_port_window(first: int) -> None:
    """Confine this namespace's ephemeral ports to a window no earlier trial
    used: a port (and so a NAT mapping, alive for 120 s) left over from an
    earlier trial could let an answer through that a fresh mapping would
    filter, and both detectors must see a fresh NAT every time."""
    Path("/proc/sys/net/ipv4/ip_local_port_range").write_text(
        f"{first} {first + PORT_WINDOW - 1}\n"
    )


def _binding_rtts(host: str, port: int, count: int = 5) -> list[float]:
    import socket

    from benchlib import binding_request

    rtts: list[float] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        for _ in range(count):
            request, tid = binding_request()
            t0 = time.perf_counter()
            sock.sendto(request, (host, port))
            while True:
                data = sock.recv(2048)
                if data[8:20] == tid:
                    break
            rtts.append(time.perf_counter() - t0)
    return rtts


def lab_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the client's namespace: ``runs`` trials of each detector,
    alternating which goes first, each timed in this process around the
    detection call alone (imports and the event loop are set up before)."""
    import stun
    from natkit.nat.aio import natcheck  # noqa: F401  (imported before any timer)
    from natkit.net.loop import loop_factory

    host, port, client_ip = spec["host"], spec["port"], spec["client_ip"]
    rtts = _binding_rtts(host, port)
    times: dict[str, list[float]] = {"natkit": [], "pystun3": []}
    answers: dict[str, list[str | None]] = {"natkit": [], "pystun3": []}
    raw_pystun3: list[str] = []

    def natkit_trial(runner: asyncio.Runner, i: int) -> tuple[float, str | None]:
        _set_port_window(NATKIT_PORT_BASE + PORT_WINDOW * i)
        elapsed, verdict = runner.run(_natcheck_coroutine(port, host))
        return float(elapsed), verdict

    def pystun3_trial(i: int) -> tuple[float, str | None]:
        t0 = time.perf_counter()
        try:
            nat_type, _, _ = stun.get_ip_info(
                source_ip=client_ip,
                source_port=PYSTUN3_PORT_BASE + i,
                stun_host=host,
                stun_port=port,
            )
        except Exception as exc:  # pystun3 raises on answers it cannot parse
            raw_pystun3.append(f"error: {exc!r}")
            return time.perf_counter() - t0, None
        elapsed = time.perf_counter() - t0
        raw_pystun3.append(str(nat_type))
        return elapsed, PYSTUN3_WORDS.get(str(nat_type), f"unknown: {nat_type}")

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(asyncio.sleep(0))  # the loop exists before the first timer starts
        for i in range(spec["runs"]):
            trials = [
                ("natkit", functools.partial(natkit_trial, runner, i)),
                ("pystun3", functools.partial(pystun3_trial, i)),
            ]
            for name, trial in trials if i % 2 == 0 else trials[::-1]:
                elapsed, verdict = trial()
                times[name].append(elapsed)
                answers[name].append(verdict)
    return {"times": times, "answers": answers, "pystun3_raw": raw_pystun3, "rtts": rtts}


def lab_preset(preset_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One lab (STUN server pair, natkit's TUN NAT with ``preset_name``, a
    client), the trials run on the client, and the lab torn down."""
    from natkit.net.netns import Lab, TunNat
    from natkit.net.netns.scenario import build_nat_lab, expected_for, start_stun_server
    from natkit.net.netns.system import lab_namespaces

    engine = TunNat(preset_name, delay_inside=args.delay, delay_outside=args.delay, seed=1)
    expected = expected_for(engine).classic
    expected_value = expected.value if expected else None
    spec: dict[str, Any] = {"runs": args.lab_runs}
    with Lab() as lab:
        nat_lab = build_nat_lab(lab, engine)
        server = start_stun_server(nat_lab)
        spec.update(
            host=nat_lab.primary.host, port=nat_lab.primary.port, client_ip=nat_lab.client.address
        )
        proc = lab.run(
            nat_lab.client,
            [sys.executable, __file__, "--lab-client", json.dumps(spec)],
            timeout=30.0 + args.lab_runs * (LAB_TRIAL_BOUND + 20 * args.delay),
        )
        if proc.returncode != 0:
            raise BenchError(f"the lab client failed ({proc.returncode}): {proc.stderr[-800:]}")
        try:
            found = json.loads(proc.stdout)
        except ValueError as exc:
            raise BenchError(f"the lab client printed no JSON: {proc.stdout[-300:]!r}") from exc
        pids = {"stun_server": server.pid, "tun_nat": nat_lab.nat.pid}
        run_id = lab.run_id
        addresses = {
            "server": str(nat_lab.primary),
            "alternate": str(nat_lab.alternate),
            "client": nat_lab.client.address,
            "nat_public": list(nat_lab.nat.public_ips),
        }
    times, answers = found["times"], found["answers"]
    same = all(a == expected_value for a in answers["natkit"] + answers["pystun3"])
    stats = {name: summary(values) for name, values in times.items()}
    return {
        "expected": expected_value,
        "natkit_s": stats["natkit"],
        "pystun3_s": stats["pystun3"],
        "ratio": {
            "natkit/pystun3": ratio(stats["natkit"]["median"], stats["pystun3"]["median"]),
            "natkit/pystun3_per_run": [
                ratio(a, b) for a, b in zip(times["natkit"], times["pystun3"], strict=True)
            ],
        },
        "answers": answers,
        "pystun3_words": found["pystun3_raw"],
        "same_answer": same,
        "rtt_ms": summary([r * 1000 for r in found["rtts"]], 3),
        "run_id": run_id,
        "pid": pids,
        "addresses": addresses,
        "namespaces_left": lab_namespaces(f"natkit-{run_id}-"),
    }


def lab_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from natkit.net.netns import LabUnavailable
    from natkit.net.netns.system import check_available

    head = {"benchmark": "natcheck", "mode": "lab", "smoke": args.smoke}
    try:
        check_available(tun=True)
    except LabUnavailable as exc:
        return {**head, "skipped": str(exc)}
    try:
        import stun  # noqa: F401
    except ImportError as exc:
        raise BenchError("pystun3 is not installed: pip install pystun3 (or .[test])") from exc
    before = machine()
    results = {name: lab_preset(name, args) for name in args.presets}
    met = {
        name: (r["ratio"]["natkit/pystun3"] is not None and r["ratio"]["natkit/pystun3"] <= 0.5)
        for name, r in results.items()
    }
    return {
        **head,
        "unit": "seconds per classic NAT type detection, timed in-process in the client namespace",
        "server": "natkit stun-server (RFC 5780 + RFC 3489) on 203.0.113.10:3478 / .11:3479",
        "clients": {
            "natkit": "await natcheck(OsStack(), server, NatCheckConfig(classic=True, "
            "behavior=False)) on a uvloop loop that has run before",
            "pystun3": "stun.get_ip_info(source_ip=CLIENT, source_port=P, stun_host=SERVER, "
            "stun_port=3478)",
        },
        "params": {
            "presets": args.presets,
            "runs": args.lab_runs,
            "delay_inside_s": args.delay,
            "delay_outside_s": args.delay,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "presets": results,
        "same_answer": all(r["same_answer"] for r in results.values()),
        "target": {"natkit/pystun3_at_most": 0.5, "met": met, "all_met": all(met.values())},
        "namespaces_left": sorted(n for r in results.values() for n in r["namespaces_left"]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100, help="trials per client per server")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma-separated subset")
    p.add_argument(
        "--firewall", action="store_true", help="add natkit-firewalled (pystun3 takes ~8 s a run)"
    )
    p.add_argument("--firewall-runs", type=int, default=3, help="trials against natkit-firewalled")
    p.add_argument(
        "--lab",
        action="store_true",
        help="in the namespace lab behind natkit's TUN NAT with link delays (root)",
    )
    p.add_argument(
        "--presets", default=",".join(LAB_PRESETS), help="--lab: comma-separated TUN NAT presets"
    )
    p.add_argument("--lab-runs", type=int, default=5, help="--lab: trials per client per preset")
    p.add_argument(
        "--delay", type=float, default=LAB_DELAY, help="--lab: one-way delay per NAT side, s"
    )
    p.add_argument(
        "--smoke", action="store_true", help="three trials each (CI); with --lab, one full-cone"
    )
    p.add_argument("--serve-firewalled", nargs=2, type=int, help=argparse.SUPPRESS)
    p.add_argument("--lab-client", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.presets = [name for name in args.presets.split(",") if name]
    if args.smoke:
        args.runs = 3
        args.presets, args.lab_runs = ["full-cone"], 1
    if not (1 <= args.runs <= 1000 and 1 <= args.firewall_runs <= 20):
        p.error("--runs 1..1000, --firewall-runs 1..20")
    if not (1 <= args.lab_runs <= 100 and 0 <= args.delay <= 1 and args.presets):
        p.error("--lab-runs 1..100, --delay 0..1 s, at least one preset")
    from natkit.nat.presets import PRESETS

    unknown = [name for name in args.presets if name not in PRESETS]
    if unknown:
        p.error(f"--presets: unknown {unknown} (natkit presets: {', '.join(PRESETS)})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_firewalled:
        from natkit.net.loop import run

        run(serve_firewalled(*args.serve_firewalled))
        return
    if args.lab_client:
        emit(lab_client(json.loads(args.lab_client)))
        return
    from natkit.net.netns import LabError

    try:
        result = lab_benchmark(args) if args.lab else benchmark(args)
    except (BenchError, LabError) as exc:
        fail(str(exc))
    emit(result)
    if "skipped" in result:
        return
    if not result["same_answer"]:
        fail("natkit and pystun3 disagree (see answers above)", code=1)
    if result.get("namespaces_left"):
        fail(f"lab namespaces left behind: {result['namespaces_left']}", code=1)


if __name__ == "__main__":
    main()
