"""``natkit serve``: STUN, TURN, the SIP registrar/edge/home proxy and the media
relay in one process from one TOML file (:mod:`natkit.serve`).

Without ``--config`` the embedded defaults run everything on loopback
(:data:`natkit.serve.settings.DEFAULT_TOML`). ``--set SECTION.KEY=VALUE``
overrides any key of the file; the named flags override ``--set``. Every
configuration error is one line on stderr naming ``section.key`` and exit
status 1; SIGINT and SIGTERM shut everything down (exit status 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from natkit.errors import NatkitError
from natkit.net.loop import run, tune_gc
from natkit.serve.settings import (
    DEFAULT_TOML,
    ServeSettings,
    build_serve_settings,
    load_serve_toml,
    parse_override,
)
from natkit.store import StoreError

__all__ = ["serve_command"]

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console(soft_wrap=True)
TOKEN_ENV = "NATKIT_ADMIN_TOKEN"
_UDP_BUFFER = 4 * 1024 * 1024


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="natkit.toml (default: the embedded defaults)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="SECTION.KEY=VALUE over the file, e.g. sip.domain='[\"example.org\"]' "
            "(repeatable; values are TOML).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Where the SQLite store lives (data-dir).")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Store URL: sqlite:PATH | redis://... | memory:")
    ] = None,
    admin: Annotated[
        str | None, typer.Option(help="Admin HTTP endpoint ADDR:PORT (127.0.0.1:9640).")
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(help="Bearer token the admin endpoint requires.", envvar=TOKEN_ENV),
    ] = None,
    print_defaults: Annotated[
        bool, typer.Option("--print-defaults", help="Print the embedded defaults and exit.")
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Check the configuration and exit.")
    ] = False,
) -> None:
    """Run STUN, TURN, the SIP registrar/proxy and the media relay from one TOML file."""
    if print_defaults:
        out_console.print(DEFAULT_TOML, markup=False, highlight=False, end="")
        return
    try:
        file = load_serve_toml(config) if config is not None else {}
        overrides: dict[str, dict[str, Any]] = {}
        for text in set_ or ():
            section, key, value = parse_override(text)
            overrides.setdefault(section, {})[key] = value
        if data_dir is not None:
            overrides.setdefault("", {})["data-dir"] = str(data_dir)
        if store is not None:
            overrides.setdefault("store", {})["url"] = store
        if admin is not None:
            overrides.setdefault("admin", {})["listen"] = admin
        if admin_token is not None:
            overrides.setdefault("admin", {})["token"] = admin_token
        settings = build_serve_settings(file, overrides)
        if check:
            out_console.print("configuration ok", markup=False)
            return
        turn_tls = _tls(settings.turn.tls_cert, settings.turn.tls_key) if settings.turn else None
        sip_tls = _tls(settings.sip.tls_cert, settings.sip.tls_key) if settings.sip else None
        run(_serve(settings, turn_tls, sip_tls))
    except (NatkitError, StoreError, ValueError, OSError, ssl.SSLError) as exc:
        raise _fail(str(exc)) from exc


def _tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise NatkitError(f"TLS: cannot use {cert} / {key}: {exc}") from exc
    return ctx


async def _serve(
    settings: ServeSettings, turn_tls: ssl.SSLContext | None, sip_tls: ssl.SSLContext | None
) -> None:
    from natkit.cli.turn_server import _raise_fd_limit
    from natkit.net.os_stack import OsStack
    from natkit.serve.runner import ServeRunner

    _raise_fd_limit()  # every TURN allocation and relayed stream holds sockets
    stack = OsStack(udp_buffer=_UDP_BUFFER)
    runner = ServeRunner(stack, settings, turn_tls=turn_tls, sip_tls=sip_tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await runner.start()
    tune_gc()  # as turn-server does: no full collections on the relay paths
    try:
        _print_summary(runner, settings)
        await stop.wait()
        err_console.print("shutting down", markup=False)
    finally:
        try:
            async with asyncio.timeout(10):
                await runner.close()
        except TimeoutError:
            err_console.print("servers still closing after 10 s; exiting anyway", markup=False)


def _print_summary(runner: Any, settings: ServeSettings) -> None:
    from natkit.store.url import masked

    table = Table(title="natkit serve", title_justify="left")
    for column in ("service", "transport", "listening on"):
        table.add_column(column, no_wrap=True)
    for listener in runner.listeners():
        table.add_row(listener.service, listener.transport, listener.endpoint)
    err_console.print(table)
    err_console.print(f"store: {masked(settings.store_url)}", markup=False)
    if settings.turn is not None:
        err_console.print(
            f"TURN realm {settings.turn.realm}, relaying from "
            f"{', '.join(runner.turn_relay_ips)} ports "
            f"{settings.turn.min_port}-{settings.turn.max_port}; "
            "users: natkit turn user add NAME --store " + masked(settings.store_url),
            markup=False,
        )
    if settings.sip is not None:
        names = sorted(settings.sip.domains)
        realm = settings.sip.realm or (names[0] if names else "-")
        auth = "digest" if settings.sip.authenticate else "open registration"
        err_console.print(
            f"SIP domains {', '.join(names) or '-'} ({auth}); "
            f"users: natkit sip user add NAME --realm {realm}",
            markup=False,
        )
    if settings.media_relay is not None and settings.sip is not None:
        err_console.print(
            f"media relay: policy {settings.media_relay.policy} (calls from NATed user agents "
            "without ICE go through it)",
            markup=False,
        )
    if settings.admin.listen is not None and runner.admin is not None:
        ep = runner.admin.local_endpoint
        err_console.print(
            f"status page http://{ep}/, metrics http://{ep}/metrics"
            + (" (token required)" if settings.admin.token else ""),
            markup=False,
        )
        if not ep.ip.is_loopback and not settings.admin.token:
            err_console.print("[yellow]warning:[/yellow] the admin endpoint is open to the network")
    err_console.print("natkit serve is running (Ctrl-C to stop)", markup=False)
