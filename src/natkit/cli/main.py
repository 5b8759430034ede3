"""The ``natkit`` command (typer + rich).

The library never prints; this module configures logging and renders
results. Each sub-command is a thin shell over a library entry point.
"""

from __future__ import annotations

import json
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from natkit import __version__
from natkit.addr import Endpoint, parse_endpoint
from natkit.cli.call import answer_command, call_command
from natkit.cli.lab import lab_app, print_turn, turn_rows
from natkit.cli.serve import serve_command
from natkit.cli.sip import sip_app
from natkit.cli.sip_server import sip_server_command
from natkit.cli.turn import turn_app
from natkit.cli.turn_server import turn_server_command
from natkit.errors import NatkitError

app = typer.Typer(
    name="natkit",
    help="NAT traversal for real-time communication: STUN, TURN, ICE, SIP and a NAT lab.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(lab_app, name="lab")
app.add_typer(turn_app, name="turn")
app.add_typer(sip_app, name="sip")
app.command("turn-server")(turn_server_command)
app.command("sip-server")(sip_server_command)
app.command("serve")(serve_command)
app.command("call")(call_command)
app.command("answer")(answer_command)
console = Console()
err_console = Console(stderr=True)

DEMO_PRIMARY = Endpoint("127.0.0.1", 3478)
DEMO_ALTERNATE = Endpoint("127.0.0.2", 3479)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _endpoint_arg(text: str, default_port: int = 3478) -> Endpoint:
    try:
        return parse_endpoint(text, default_port)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not ADDR:PORT ({exc})") from exc


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


@app.callback()
def _main(
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="More logging (-vv: debug).")
    ] = 0,
) -> None:
    _setup_logging(verbose)


@app.command()
def version() -> None:
    """Print natkit's version."""
    console.print(__version__)


@app.command("stun-server")
def stun_server(
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen", "-l", help="ADDR:PORT to answer on (repeatable; first is primary)."
        ),
    ] = None,
    alternate: Annotated[
        str | None,
        typer.Option(
            help="Second ADDR:PORT (other IP, other port): makes a full RFC 5780 / 3489 server."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate for STUN over TLS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for STUN over TLS.")] = None,
    tls_listen: Annotated[
        list[str] | None, typer.Option(help="ADDR:PORT for TLS (default: primary IP, port 5349).")
    ] = None,
    no_tcp: Annotated[bool, typer.Option("--no-tcp", help="Do not answer over TCP.")] = False,
    software: Annotated[
        str, typer.Option(help="SOFTWARE attribute ('' to omit).")
    ] = f"natkit {__version__}",
) -> None:
    """Run a STUN server (UDP, TCP, TLS; RFC 5780 with --alternate)."""
    from natkit.net.loop import run
    from natkit.stun.server import StunServerConfig

    listens = [_endpoint_arg(x) for x in (listen or ["0.0.0.0:3478"])]
    alt = _endpoint_arg(alternate) if alternate else None
    tls: ssl.SSLContext | None = None
    if bool(tls_cert) != bool(tls_key):
        raise _fail("--tls-cert and --tls-key go together")
    try:
        if tls_cert and tls_key:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(tls_cert, tls_key)
        tls_eps = [_endpoint_arg(x, 5349) for x in (tls_listen or [])]
        if tls is not None and not tls_eps:
            tls_eps = [Endpoint(listens[0].host, 5349)]
        configs = [
            StunServerConfig(
                primary=ep,
                alternate=alt if i == 0 else None,
                rfc5780=alt is not None and i == 0,
                software=software or None,
            )
            for i, ep in enumerate(listens)
        ]
        run(_serve_stun(configs, tls, tls_eps, not no_tcp))
    except (NatkitError, ValueError, OSError, ssl.SSLError) as exc:
        raise _fail(str(exc)) from exc


async def _serve_stun(
    configs: list[Any], tls: ssl.SSLContext | None, tls_eps: list[Endpoint], tcp: bool
) -> None:
    import asyncio

    from natkit.net.os_stack import OsStack
    from natkit.stun.aio import StunServerRunner

    stack = OsStack(udp_buffer=4 * 1024 * 1024)
    runners = []
    try:
        for i, cfg in enumerate(configs):
            runner = StunServerRunner(
                stack,
                cfg,
                tcp=tcp,
                tls=tls if i == 0 else None,
                tls_endpoints=tls_eps if i == 0 else None,
            )
            await runner.start()
            runners.append(runner)
            desc = ", ".join(str(e) for e in runner.endpoints)
            mode = "RFC 5780" if cfg.rfc5780 else "RFC 8489"
            err_console.print(f"STUN server ({mode}) on udp {desc}" + (" + tcp" if tcp else ""))
        if tls_eps:
            err_console.print(f"STUN over TLS on {', '.join(str(e) for e in tls_eps)}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        err_console.print("shutting down")
    finally:
        for runner in runners:
            runner.close()


@app.command()
def natcheck(
    server: Annotated[
        str, typer.Argument(help="STUN server: HOST[:PORT] (SRV lookup without a port).")
    ],
    classic: Annotated[
        bool, typer.Option("--classic", help="Only the classic RFC 3489 test.")
    ] = False,
    behavior: Annotated[
        bool, typer.Option("--behavior", help="Only RFC 5780 behaviour discovery.")
    ] = False,
    lifetime: Annotated[
        bool, typer.Option("--lifetime", help="Also measure the binding lifetime (takes minutes).")
    ] = False,
    lifetime_max: Annotated[
        float, typer.Option(help="Longest lifetime to probe, seconds.")
    ] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    bind: Annotated[str | None, typer.Option(help="Local IP to send from.")] = None,
) -> None:
    """Detect the NAT between this host and a STUN server (classic type and RFC 5780 behaviour)."""
    from natkit.nat.natcheck import NatCheckConfig
    from natkit.net.loop import run

    if classic and behavior:
        raise _fail("--classic and --behavior exclude each other; give neither for both")
    config = NatCheckConfig(
        classic=not behavior,
        behavior=not classic,
        lifetime=lifetime,
        lifetime_max=lifetime_max,
    )
    try:
        result = run(_natcheck(server, config, bind, quiet=as_json))
    except NatkitError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print_natcheck(result)


async def _natcheck(server: str, config: Any, bind: str | None, *, quiet: bool) -> dict[str, Any]:
    from natkit.nat.aio import natcheck as run_natcheck
    from natkit.nat.natcheck import NatCheckEvent, ProbeFinished
    from natkit.net.dns import resolve_stun
    from natkit.net.os_stack import OsStack

    targets = await resolve_stun(server)
    target = next(
        (t for t in targets if bind is None or (":" in t.host) == (":" in bind)), targets[0]
    )

    def on_event(event: NatCheckEvent) -> None:
        if (
            not quiet
            and isinstance(event, ProbeFinished)
            and not event.name.startswith("behavior.life")
        ):
            err_console.print(
                f"  [dim]{event.name:<24} {'answered' if event.answered else 'no answer'}[/dim]"
            )

    if not quiet:
        err_console.print(f"natcheck against {target}")
    result = await run_natcheck(OsStack(), target, config, bind_ip=bind, on_event=on_event)
    return result.to_json()


def _print_natcheck(result: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    labels = [
        ("classic", "NAT type (RFC 3489)"),
        ("mapping", "mapping (RFC 5780)"),
        ("filtering", "filtering (RFC 5780)"),
        ("public_address", "public address"),
        ("local_address", "local address"),
        ("hairpinning", "hairpinning"),
        ("port_preservation", "port preservation"),
        ("binding_lifetime_s", "binding lifetime (s)"),
        ("server", "server"),
        ("other_address", "server's other address"),
        ("elapsed_s", "elapsed (s)"),
    ]
    for key, label in labels:
        value = result.get(key)
        if value is None and key == "binding_lifetime_s":
            continue
        table.add_row(label, "-" if value is None else str(value))
    if result.get("classic_reason"):
        table.add_row("why", str(result["classic_reason"]))
    for note in result.get("notes", []):
        table.add_row("note", note)
    console.print(table)


@app.command()
def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    primary: Annotated[str, typer.Option(help="The server's primary ADDR:PORT.")] = str(
        DEMO_PRIMARY
    ),
    alternate: Annotated[str, typer.Option(help="The server's alternate ADDR:PORT.")] = str(
        DEMO_ALTERNATE
    ),
) -> None:
    """natkit's main job on embedded defaults: natcheck and a TURN relay behind every emulated NAT.

    A local STUN server pair listens on 127.0.0.1:3478 and 127.0.0.2:3479
    unless told otherwise; then natcheck runs behind each NAT preset in the
    simulated internet, detected against emulated, and a host behind each
    preset reaches a public peer through natkit's TURN relay (UDP, else TCP,
    else TLS on 443)."""
    from natkit.nat.natcheck import NatCheckConfig
    from natkit.net.loop import run

    try:
        result = run(
            _demo(_endpoint_arg(primary), _endpoint_arg(alternate), NatCheckConfig(), quiet=as_json)
        )
    except NatkitError as exc:
        raise _fail(str(exc)) from exc
    lab = _demo_lab()
    result["lab"] = [outcome.to_json() for outcome in lab]
    turn = turn_rows(None, mode="sim", seed=1)
    result["turn"] = turn
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        _print_natcheck(result)
        console.print(
            "\nOn loopback there is no NAT, so 'open-internet' is the right answer. "
            "Point [bold]natkit natcheck[/bold] at a public STUN server to see yours.\n"
        )
        _print_lab(lab)
        print_turn(turn, "sim")
    if not all(outcome.ok for outcome in lab) or not all(row["ok"] for row in turn):
        raise typer.Exit(1)


def _demo_lab() -> list[Any]:
    from natkit.lab.natcheck import run_natcheck_sim
    from natkit.nat.presets import PRESETS

    return [run_natcheck_sim(name, seed=1) for name in PRESETS]


_SHORT = {
    "endpoint-independent": "EI",
    "address-dependent": "AD",
    "address-and-port-dependent": "APD",
}


def _print_lab(outcomes: list[Any]) -> None:
    table = Table(title="natcheck behind emulated NATs, simulated (natkit lab natcheck)")
    for column in ("NAT preset", "detected type", "mapping", "filtering", "as emulated"):
        table.add_column(column, no_wrap=True)
    for o in outcomes:
        d = o.detected
        table.add_row(
            o.name,
            d.classic.value if d.classic else "-",
            _SHORT[d.mapping.value] if d.mapping else "-",
            _SHORT[d.filtering.value] if d.filtering else "-",
            "[green]yes[/green]" if o.ok else f"[red]no[/red] ({o.expected.classic.value})",
        )
    console.print(table)
    console.print("EI/AD/APD: endpoint-independent, address-dependent, address-and-port-dependent")


async def _demo(
    primary: Endpoint, alternate: Endpoint, config: Any, *, quiet: bool
) -> dict[str, Any]:
    from natkit.net.os_stack import OsStack
    from natkit.stun.aio import StunServerRunner
    from natkit.stun.server import StunServerConfig

    stack = OsStack()
    cfg = StunServerConfig(primary=primary, alternate=alternate, rfc5780=True)
    async with StunServerRunner(stack, cfg):
        if not quiet:
            err_console.print(f"STUN server (RFC 5780) on {primary} and {alternate}")
        return await _natcheck(str(primary), config, None, quiet=quiet)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
