"""``natkit lab``: the NAT lab from the command line.

Each command builds the ready-made lab of :mod:`natkit.net.netns.scenario`
(a STUN server pair on the lab internet, the NAT chosen with ``--nat``, a
host ``client`` behind it), does its job, and tears the lab down whatever
happens; ``natkit lab clean`` removes what a killed run left behind.
The namespace lab needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from natkit.addr import Transport
from natkit.errors import NatkitError

if TYPE_CHECKING:
    from natkit.net.netns import NatEngine
    from natkit.net.netns.scenario import NatLab

lab_app = typer.Typer(
    name="lab",
    help="The NAT lab: emulated NATs, simulated or in namespaces with real packets (root).",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

NAT_HELP = (
    "kernel-masquerade, kernel-random-fully (the kernel's nftables NAT), or a natkit "
    "preset on TUN devices: open, full-cone, restricted-cone, port-restricted-cone, "
    "symmetric, symmetric-udp-firewall, udp-blocked, web-only, linux-masquerade, carrier-grade"
)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _nat_engine(
    nat: str, delay_inside: float = 0.0, delay_outside: float = 0.0, seed: int = 0
) -> NatEngine:
    from natkit.net.netns.scenario import parse_nat

    try:
        return parse_nat(nat, delay_inside=delay_inside, delay_outside=delay_outside, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--nat") from exc


@contextlib.contextmanager
def _lab_errors() -> Iterator[None]:
    """Turn lab failures and interruptions into messages and exit codes
    (the lab has been torn down by then)."""
    from natkit.net.netns import LabInterrupted

    try:
        yield
    except (KeyboardInterrupt, LabInterrupted) as exc:
        err_console.print(f"interrupted ({exc or 'SIGINT'}); the lab was torn down")
        raise typer.Exit(130) from None
    except NatkitError as exc:
        raise _fail(str(exc)) from exc


@contextlib.contextmanager
def _standard_lab(
    nat: str,
    *,
    stun: bool = True,
    delay_inside: float = 0.0,
    delay_outside: float = 0.0,
    seed: int = 0,
) -> Iterator[NatLab]:
    from natkit.net.netns import Lab
    from natkit.net.netns.scenario import build_nat_lab, start_stun_server

    engine = _nat_engine(nat, delay_inside, delay_outside, seed)
    with Lab() as lab:
        nat_lab = build_nat_lab(lab, engine)
        if stun:
            start_stun_server(nat_lab)
        yield nat_lab


def _wait_interactive(proc: subprocess.Popen[Any], timeout: float | None) -> int:
    """Wait for a program that owns the terminal: Ctrl-C belongs to it, so
    this process ignores SIGINT meanwhile (as ``system(3)`` does). SIGTERM
    and SIGHUP still tear the lab down."""
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        err_console.print(f"the command ran over {timeout} s; stopping it")
        return 124
    finally:
        signal.signal(signal.SIGINT, old)


def _banner(nat_lab: NatLab, *, stun: bool = True) -> None:
    lab = nat_lab.lab
    err_console.print(f"[bold]natkit lab {lab.run_id}[/bold] (torn down when you leave)")
    for line in lab.describe():
        err_console.print(f"  {line}")
    if stun:
        err_console.print(
            f"  STUN server (natkit, RFC 5780/3489): {nat_lab.primary}, "
            f"alternate {nat_lab.alternate}"
        )


@lab_app.command("natcheck")
def natcheck(
    nat: Annotated[str, typer.Option("--nat", help=NAT_HELP)],
    mode: Annotated[
        str, typer.Option(help="netns: real packets in namespaces; sim: the simulated internet.")
    ] = "netns",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    stun_client: Annotated[
        bool, typer.Option("--stun-client", help="Also run Debian's stun client (stun-client).")
    ] = False,
    delay_inside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the inside.")
    ] = 0.0,
    delay_outside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the outside.")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the emulated NAT's choices.")] = 0,
) -> None:
    """Detect the NAT type from a host behind an emulated NAT: detected vs emulated."""
    from natkit.net.netns.scenario import compare, expected_for

    if mode not in ("netns", "sim"):
        raise typer.BadParameter("choose netns or sim", param_hint="--mode")
    engine = _nat_engine(nat, delay_inside, delay_outside, seed)
    expected = expected_for(engine)
    report: dict[str, Any] = {"mode": mode, "nat": nat, "emulated": expected.to_json()}
    stun_report = None
    if mode == "sim":
        if stun_client or delay_inside or delay_outside:
            raise _fail("--stun-client and the delays need --mode netns", 2)
        detected = _sim_natcheck(nat, seed)
    else:
        from natkit.net.netns.scenario import run_natcheck, run_stun_client

        with (
            _lab_errors(),
            _standard_lab(nat, delay_inside=delay_inside, delay_outside=delay_outside) as nat_lab,
        ):
            if not as_json:
                _banner(nat_lab)
            report["lab"] = nat_lab.lab.run_id
            detected = run_natcheck(nat_lab)
            if stun_client:
                stun_report = run_stun_client(nat_lab)
        report["engine"] = "kernel" if nat.startswith("kernel-") else "tun"
    rows = compare(expected, detected, stun_report)
    report["detected"] = detected
    if stun_report is not None:
        report["stun_client"] = {
            "primary": stun_report.primary,
            "return_value": stun_report.return_value,
        }
    report["comparison"] = [row.to_json() for row in rows]
    report["match"] = all(row.ok is not False for row in rows)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        table = Table(title=f"{nat} ({mode})")
        table.add_column("")
        table.add_column("emulated")
        table.add_column("detected")
        table.add_column("")
        for row in rows:
            mark = "[green]ok[/green]" if row.ok else "[red]DIFFERS[/red]"
            table.add_row(row.what, row.emulated or "-", row.detected or "-", mark)
        console.print(table)
        for label, key in (("public address", "public_address"), ("hairpinning", "hairpinning")):
            console.print(f"{label}: {detected.get(key)}")
    if not report["match"]:
        raise typer.Exit(1)


def _sim_natcheck(nat: str, seed: int) -> dict[str, Any]:
    """``--mode sim``: the same scenario in the simulated internet
    (:mod:`natkit.lab.natcheck`), under a virtual clock."""
    from natkit.lab.natcheck import run_natcheck_sim

    if nat.startswith("kernel-"):
        raise _fail(f"{nat} is the kernel's NAT: it exists only with --mode netns", 2)
    try:
        outcome = run_natcheck_sim(nat, seed=seed)
    except NatkitError as exc:
        raise _fail(str(exc)) from exc
    return outcome.detected.to_json()


@lab_app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    host: Annotated[
        str,
        typer.Argument(
            help="client, stun, nat or inet of a lab built for this command, or the "
            "namespace name (natkit-...) of a lab that is already running."
        ),
    ],
    command: Annotated[list[str], typer.Argument(help="The program and its arguments.")],
    nat: Annotated[str, typer.Option("--nat", help=NAT_HELP)] = "port-restricted-cone",
    stun: Annotated[
        bool, typer.Option("--stun/--no-stun", help="Run the lab's STUN server.")
    ] = True,
    timeout: Annotated[
        float | None, typer.Option(help="Stop the command after this many seconds.")
    ] = None,
    delay_inside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the inside.")
    ] = 0.0,
    delay_outside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the outside.")
    ] = 0.0,
) -> None:
    """Run a command on a lab host: natkit lab exec client -- stun 203.0.113.10"""
    from natkit.net.netns.system import check_available, lab_namespaces, netns_exec_argv

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise typer.BadParameter("give the command to run after --", param_hint="COMMAND")
    if host.startswith("natkit-"):
        with _lab_errors():
            check_available()
            if host not in lab_namespaces():
                raise _fail(f"no lab namespace {host} (running labs: {lab_namespaces()})")
            proc = subprocess.Popen(netns_exec_argv(host, command))
            try:
                code = _wait_interactive(proc, timeout)
            finally:
                if proc.poll() is None:
                    from natkit.net.netns.system import stop_pids

                    stop_pids([proc.pid])
                    proc.wait()
        raise typer.Exit(code)
    with (
        _lab_errors(),
        _standard_lab(
            nat, stun=stun, delay_inside=delay_inside, delay_outside=delay_outside
        ) as nat_lab,
    ):
        _banner(nat_lab, stun=stun)
        proc = nat_lab.lab.exec(host, command, stdin=None)
        code = _wait_interactive(proc, timeout)
    raise typer.Exit(code)


@lab_app.command()
def shell(
    nat: Annotated[str, typer.Option("--nat", help=NAT_HELP)] = "port-restricted-cone",
    host: Annotated[str, typer.Option(help="The lab host to open the shell on.")] = "client",
    timeout: Annotated[
        float | None, typer.Option(help="Close the shell after this many seconds.")
    ] = None,
    delay_inside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the inside.")
    ] = 0.0,
    delay_outside: Annotated[
        float, typer.Option(help="TUN NAT: one-way delay (s) added toward the outside.")
    ] = 0.0,
) -> None:
    """An interactive shell on a host behind the NAT; leave it to tear the lab down."""
    with (
        _lab_errors(),
        _standard_lab(nat, delay_inside=delay_inside, delay_outside=delay_outside) as nat_lab,
    ):
        _banner(nat_lab)
        err_console.print(
            f"  try: natkit natcheck {nat_lab.primary}   or: stun {nat_lab.primary} -v"
        )
        shell_path = os.environ.get("SHELL") or "/bin/bash"
        env = {
            "NATKIT_LAB": nat_lab.lab.run_id,
            "NATKIT_STUN": str(nat_lab.primary),
            "NATKIT_STUN_ALTERNATE": str(nat_lab.alternate),
        }
        proc = nat_lab.lab.exec(host, [shell_path], stdin=None, env=env)
        code = _wait_interactive(proc, timeout)
    raise typer.Exit(code)


@lab_app.command()
def clean(
    run_id: Annotated[
        str | None, typer.Option(help="Only the lab with this run id (natkit-RUNID-*).")
    ] = None,
) -> None:
    """Remove every leftover natkit-* namespace and the processes inside it."""
    from natkit.net.netns.system import PREFIX, check_available, lab_namespaces
    from natkit.net.netns.system import clean as clean_all

    prefix = f"{PREFIX}{run_id}-" if run_id else PREFIX
    if run_id is not None and not run_id.isalnum():
        raise typer.BadParameter("a run id is letters and digits", param_hint="--run-id")
    with _lab_errors():
        if lab_namespaces(prefix):
            check_available()
        report = clean_all(prefix)
    if not (report.namespaces or report.pids or report.workdirs):
        console.print(f"nothing to clean: no {prefix}* namespaces")
        return
    if report.namespaces:
        names = ", ".join(report.namespaces)
        console.print(f"removed {len(report.namespaces)} namespaces: {names}")
    if report.pids:
        console.print(f"stopped {len(report.pids)} processes: {' '.join(map(str, report.pids))}")
    if report.workdirs:
        console.print(f"removed {len(report.workdirs)} work directories of dead labs")


@lab_app.command("turn")
def turn(
    nat: Annotated[
        list[str] | None,
        typer.Option("--nat", help="NAT preset (repeatable; default: every preset). " + NAT_HELP),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="sim: the simulated internet; netns: real packets (root).")
    ] = "sim",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per NAT.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the emulated NAT's choices.")] = 0,
) -> None:
    """Reach a public peer through natkit's TURN relay from behind each NAT.

    The client tries UDP to 3478, then TCP to 3478, then TLS to 443 (a
    throw-away certificate), uses the first that allocates, and exchanges
    messages with an echo peer in Send indications and in ChannelData."""
    if mode not in ("netns", "sim"):
        raise typer.BadParameter("choose netns or sim", param_hint="--mode")
    rows = turn_rows(nat, mode=mode, seed=seed, on_row=_print_json_line if as_json else None)
    if not as_json:
        print_turn(rows, mode)
    if not all(row["ok"] for row in rows):
        raise typer.Exit(1)


def _print_json_line(row: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(row) + "\n")


def turn_rows(
    names: list[str] | None,
    *,
    mode: str = "sim",
    seed: int = 0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the TURN scenario (:mod:`natkit.lab.turn`) behind each NAT; one
    JSON-ready row each, with ``expected``, the transport a correct client
    ends up on, and ``ok``: reached over exactly that transport."""
    from natkit.lab.certs import lab_tls_contexts
    from natkit.lab.turn import TLS_HOSTNAME, expected_transport, run_turn_sim
    from natkit.nat.presets import PRESETS
    from natkit.net.netns import TunNat

    tls_server, tls_client = lab_tls_contexts(hostnames=(TLS_HOSTNAME,))
    rows: list[dict[str, Any]] = []
    for name in names or list(PRESETS):
        engine = _nat_engine(name, seed=seed)
        expected = (
            expected_transport(engine.behavior) if isinstance(engine, TunNat) else Transport.UDP
        )
        if mode == "sim":
            if name.startswith("kernel-"):
                raise _fail(f"{name} is the kernel's NAT: it exists only with --mode netns", 2)
            try:
                outcome = run_turn_sim(
                    name, seed=seed, tls_server=tls_server, tls_client=tls_client
                )
            except NatkitError as exc:
                raise _fail(str(exc)) from exc
        else:
            from natkit.lab.turn import turn_in_lab
            from natkit.net.netns import Lab

            with _lab_errors(), Lab() as lab:
                outcome, _ = turn_in_lab(
                    lab, engine, tls_server=tls_server, tls_client=tls_client, seed=seed
                )
        row = outcome.to_json()
        row["mode"] = mode
        row["expected"] = expected.value if expected else None
        row["ok"] = outcome.reached and outcome.transport is expected
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows


def print_turn(rows: list[dict[str, Any]], mode: str) -> None:
    table = Table(title=f"TURN relay to a public peer from behind each NAT ({mode})")
    table.add_column("NAT", no_wrap=True)
    for column in ("expected", "used", "relayed address", "echoed", "ok"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["scenario"],
            row["expected"] or "-",
            row["transport"] or "-",
            row["relayed"] or "-",
            f"{row['echoed']}/{row['sent']}",
            "[green]yes[/green]" if row["ok"] else "[red]no[/red]",
        )
    console.print(table)
    console.print("Transports tried in order: UDP 3478, TCP 3478, TLS 443.")
