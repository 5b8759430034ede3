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

Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import asyncio
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


def _natcheck_coroutine(port: int) -> Any:
    from natkit.addr import Endpoint
    from natkit.nat.aio import natcheck
    from natkit.nat.natcheck import NatCheckConfig
    from natkit.net.os_stack import OsStack

    config = NatCheckConfig(classic=True, behavior=False)

    async def once() -> tuple[float, str | None]:
        t0 = time.perf_counter()
        async with asyncio.timeout(TRIAL_TIMEOUT):
            result = await natcheck(OsStack(), Endpoint(PRIMARY, port), config)
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100, help="trials per client per server")
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help="comma-separated subset")
    p.add_argument(
        "--firewall", action="store_true", help="add natkit-firewalled (pystun3 takes ~8 s a run)"
    )
    p.add_argument("--firewall-runs", type=int, default=3, help="trials against natkit-firewalled")
    p.add_argument("--smoke", action="store_true", help="three trials each (CI)")
    p.add_argument("--serve-firewalled", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.runs = 3
    if not (1 <= args.runs <= 1000 and 1 <= args.firewall_runs <= 20):
        p.error("--runs 1..1000, --firewall-runs 1..20")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_firewalled:
        from natkit.net.loop import run

        run(serve_firewalled(*args.serve_firewalled))
        return
    try:
        result = benchmark(args)
    except BenchError as exc:
        fail(str(exc))
    emit(result)
    if not result["same_answer"]:
        fail("natkit and pystun3 disagree (see answers above)", code=1)


if __name__ == "__main__":
    main()
