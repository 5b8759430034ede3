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
from natkit.cli.lab_matrix import matrix_command
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


CONNECT_NAT_HELP = (
    "sim: open, full-cone, restricted-cone, port-restricted-cone, symmetric, "
    "symmetric-udp-firewall, udp-blocked, web-only, tandem (a carrier-grade NAT in front of a "
    "port-restricted home NAT), linux-masquerade, carrier-grade; netns: the natkit presets on "
    "TUN devices (not tandem) or kernel-masquerade, kernel-random-fully"
)


@lab_app.command("connect")
def connect(
    nat_a: Annotated[
        str,
        typer.Option(
            "--nat-a",
            help="Agent a's NAT (controlling). same-nat / same-nat-hairpin (sim): both "
            "agents behind one NAT of --nat-b's preset. " + CONNECT_NAT_HELP,
        ),
    ] = "symmetric",
    nat_b: Annotated[str, typer.Option("--nat-b", help="Agent b's NAT.")] = (
        "port-restricted-cone"
    ),
    mode: Annotated[
        str, typer.Option(help="sim: the simulated internet; netns: real packets (root).")
    ] = "sim",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    grid: Annotated[
        bool,
        typer.Option(
            "--grid",
            help="Every pair instead: the 9x9 traversal matrix (sim) or the 4x4 grid of the "
            "ECC NAT types (netns); with --json one object per line.",
        ),
    ] = False,
    latency: Annotated[
        float, typer.Option(help="sim: one-way delay (s) between the two agents.")
    ] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of the lab's random choices.")] = 0,
) -> None:
    """Two natkit ICE agents behind two NATs, with natkit's STUN and TURN servers on
    the lab internet: did they connect, over which pair, how fast, with how many checks."""
    if mode not in ("netns", "sim"):
        raise typer.BadParameter("choose netns or sim", param_hint="--mode")
    if latency < 0:
        raise typer.BadParameter("latency must not be negative", param_hint="--latency")
    pairs = _connect_pairs(nat_a, nat_b, mode=mode, grid=grid)
    rows = connect_rows(
        pairs,
        mode=mode,
        seed=seed,
        latency=latency,
        on_row=_print_json_line if as_json and grid else None,
    )
    if as_json and not grid:
        sys.stdout.write(json.dumps(rows[0], indent=2) + "\n")
    elif not as_json:
        print_connect(rows, mode)
    if not all(row["connected"] and row["as_expected"] for row in rows):
        raise typer.Exit(1)


def _connect_pairs(nat_a: str, nat_b: str, *, mode: str, grid: bool) -> list[tuple[str, str]]:
    from natkit.lab.ice_connect import NAT_NAMES, SAME_NAT, SAME_NAT_HAIRPIN, TANDEM, behavior_of
    from natkit.lab.ice_netns import ECC_TYPES

    if grid:
        names = NAT_NAMES if mode == "sim" else ECC_TYPES
        return [(a, b) for a in names for b in names]
    for hint, name in (("--nat-a", nat_a), ("--nat-b", nat_b)):
        shared = hint == "--nat-a" and name in (SAME_NAT, SAME_NAT_HAIRPIN)
        if mode == "sim":
            if name.startswith("kernel-"):
                raise _fail(f"{name} is the kernel's NAT: it exists only with --mode netns", 2)
            if not shared:
                try:
                    behavior_of(name)
                except ValueError as exc:
                    raise typer.BadParameter(str(exc), param_hint=hint) from exc
        else:
            if shared or name == TANDEM:
                raise _fail(f"{name} exists only with --mode sim", 2)
            try:
                _nat_engine(name)
            except typer.BadParameter as exc:
                raise typer.BadParameter(str(exc.message), param_hint=hint) from exc
    return [(nat_a, nat_b)]


def connect_rows(
    pairs: list[tuple[str, str]],
    *,
    mode: str = "sim",
    seed: int = 0,
    latency: float = 0.05,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the ICE scenario (:mod:`natkit.lab.ice_connect`, or
    :mod:`natkit.lab.ice_netns` in namespaces) for each pair; one JSON-ready
    row each, with ``expected`` (DESIGN.md's path) and ``as_expected``."""
    from natkit.lab.certs import lab_tls_contexts
    from natkit.lab.ice_connect import SAME_NAT, SAME_NAT_HAIRPIN, expected_path
    from natkit.lab.turn import TLS_HOSTNAME

    tls_server, tls_client = lab_tls_contexts(hostnames=(TLS_HOSTNAME,))
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any], expected: str) -> None:
        row["expected"] = expected
        row["as_expected"] = row["path"] == expected
        rows.append(row)
        if on_row is not None:
            on_row(row)

    if mode == "sim":
        from natkit.lab.ice_connect import run_connect_sim

        for nat_a, nat_b in pairs:
            try:
                result = run_connect_sim(
                    nat_a,
                    nat_b,
                    seed=seed,
                    latency=latency,
                    tls_server=tls_server,
                    tls_client=tls_client,
                )
            except NatkitError as exc:
                raise _fail(str(exc)) from exc
            shared = nat_a in (SAME_NAT, SAME_NAT_HAIRPIN)
            emit(result.to_json(), "direct" if shared else expected_path(nat_a, nat_b))
        return rows
    from natkit.lab.ice_netns import IceNamespaceLab, expected_netns_path
    from natkit.net.netns import Lab

    engines_a = {a: _nat_engine(a, seed=seed) for a, _ in pairs}
    engines_b = {b: _nat_engine(b, seed=seed) for _, b in pairs}
    with (
        _lab_errors(),
        Lab() as lab,
        IceNamespaceLab(
            lab,
            list(engines_a.values()),
            list(engines_b.values()),
            tls_server=tls_server,
            tls_client=tls_client,
            seed=seed,
        ) as ice_lab,
    ):
        for nat_a, nat_b in pairs:
            engine_a, engine_b = engines_a[nat_a], engines_b[nat_b]
            row = ice_lab.connect(engine_a, engine_b).to_json()
            row["lab"] = lab.run_id
            emit(row, expected_netns_path(engine_a, engine_b))
    return rows


def print_connect(rows: list[dict[str, Any]], mode: str) -> None:
    if len(rows) == 1:
        row = rows[0]
        table = Table(title=f"ICE: {row['nat_a']} <-> {row['nat_b']} ({mode})", show_header=False)
        table.add_column("")
        table.add_column("")
        connected = "[green]yes[/green]" if row["connected"] else "[red]no[/red]"
        table.add_row("connected", connected)
        upgraded = " - relayed at first, then upgraded" if row["upgraded"] else ""
        table.add_row("path", f"{row['path'] or '-'} (expected {row['expected']}){upgraded}")
        table.add_row(
            "selected pair",
            f"{row['local_type'] or '-'} {row['local'] or ''} -> "
            f"{row['remote_type'] or '-'} {row['remote'] or ''}",
        )
        table.add_row(
            "transport", f"a: {row['transport'] or '-'}, b: {row['remote_transport'] or '-'}"
        )
        table.add_row("time to connected", f"{row['elapsed_s'] * 1000:.0f} ms")
        table.add_row(
            "checks sent", f"{row['checks_sent']} (a {row['checks_a']}, b {row['checks_b']})"
        )
        table.add_row("data both ways", "yes" if row["data_ok"] else "no")
        if row["error"]:
            table.add_row("error", f"[red]{row['error']}[/red]")
        console.print(table)
        return
    table = Table(title=f"ICE between every pair of NATs ({mode})")
    for column in ("a", "b", "path", "pair", "via", "ms", "checks", "ok"):
        if column in ("a", "b"):
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        ok = row["connected"] and row["as_expected"] and row["data_ok"]
        table.add_row(
            row["nat_a"],
            row["nat_b"],
            row["path"] or "-",
            f"{row['local_type'] or '-'}/{row['remote_type'] or '-'}",
            f"{row['transport'] or '-'}/{row['remote_transport'] or '-'}",
            f"{row['elapsed_s'] * 1000:.0f}",
            str(row["checks_sent"]),
            "[green]yes[/green]" if ok else f"[red]no[/red] (expected {row['expected']})",
        )
    console.print(table)
    console.print(
        "path: direct (host/srflx/prflx at both ends) or relay (natkit's TURN server); "
        "pair and via: agent a's end / agent b's end (via: how it reaches the TURN server)."
    )


lab_app.command("matrix")(matrix_command)
