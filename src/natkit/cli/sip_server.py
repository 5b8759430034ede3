"""``natkit sip-server``: run the SIP registrar + home proxy, or an Outbound edge proxy.

The element is :class:`natkit.sip.aio.server.SipServer` (docs/sip-server.md);
this module turns flags and, with ``--config``, a TOML file holding the same
keys (:mod:`natkit.sip.aio.config`; a flag given wins) into its config, opens
the store (bindings, users and the server secret live there: ``--store``,
default SQLite), and runs it until SIGINT/SIGTERM. ``--admin ADDR:PORT``
serves ``/metrics``, ``/healthz`` and ``/sessions`` (the registrations;
:mod:`natkit.sip.aio.metrics`).

The server secret keys digest nonces, flow tokens and temporary GRUUs. It is
read from the store (namespace ``sip/server``) and created there on first
start, so a restart keeps registrations' flow tokens valid and every server
sharing a Redis store shares the secret; ``--secret`` overrides it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets as _secrets
import signal
import ssl
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from natkit.cli.server_options import AdminTokenOption, ConfigFileOption
from natkit.errors import NatkitError
from natkit.net.admin import AdminServer
from natkit.net.loop import run, tune_gc
from natkit.net.os_stack import OsStack
from natkit.sip.aio.config import (
    KEYS,
    SipServerSettings,
    build_settings,
    load_toml,
    parse_sip_listen,
)
from natkit.sip.aio.metrics import RegistrationView, SipAdmin, SipCounters, SipMetrics, instrument
from natkit.sip.aio.resolve import SipResolver
from natkit.sip.aio.server import SipServer
from natkit.store import Store, StoreError, default_store_url, open_store

__all__ = ["parse_sip_listen", "server_secret", "sip_server_command", "tls_context"]

err_console = Console(stderr=True)
_log = logging.getLogger(__name__)

SECRET_NAMESPACE = "sip/server"


async def server_secret(store: Store) -> bytes:
    """The cluster's server secret, created in the store on first use."""
    doc = await store.get(SECRET_NAMESPACE, "secret")
    if doc is not None and isinstance(doc.get("hex"), str):
        return bytes.fromhex(doc["hex"])
    fresh = _secrets.token_bytes(32)
    await store.put(SECRET_NAMESPACE, "secret", {"hex": fresh.hex()})
    again = await store.get(SECRET_NAMESPACE, "secret")  # another server may have won
    return bytes.fromhex(again["hex"]) if again is not None else fresh


def tls_context(settings: SipServerSettings) -> ssl.SSLContext | None:
    """The server-side TLS context for tls: and wss: listeners (None without)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        tls.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise NatkitError(f"cannot load the TLS certificate: {exc}") from None
    return tls


def _fail(message: str) -> typer.Exit:
    key = message.partition(":")[0]
    if key in KEYS:  # name the flag the key is (the file's key has the same name)
        message = "--" + message
    err_console.print(f"natkit sip-server: {message}", style="red", highlight=False)
    return typer.Exit(1)


def sip_server_command(
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            "-l",
            help="udp:|tcp:|tls:|ws:|wss:ADDR[:PORT], or ADDR[:PORT] for UDP and TCP "
            "(repeatable). Default: 0.0.0.0:5060.",
        ),
    ] = None,
    domain: Annotated[
        list[str] | None,
        typer.Option("--domain", "-d", help="A domain to be registrar and proxy for (repeatable)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            help="sqlite:PATH, redis://..., or memory: (default: $NATKIT_STORE or SQLite)."
        ),
    ] = None,
    edge_only: Annotated[
        bool | None,
        typer.Option(
            "--edge-only/--no-edge-only", help="Run as an Outbound edge proxy (needs --registrar)."
        ),
    ] = None,
    registrar: Annotated[
        str | None,
        typer.Option(help="The registrar an edge sends to: a sip: URI with an IP address."),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="Name or address to put in Via, Record-Route and Path."),
    ] = None,
    realm: Annotated[
        str | None,
        typer.Option(help="One digest realm for every domain (default: each domain is its own)."),
    ] = None,
    no_auth: Annotated[
        bool | None,
        typer.Option("--no-auth/--auth", help="Open registration (labs and tests only)."),
    ] = None,
    md5_first: Annotated[
        bool | None,
        typer.Option(
            "--md5-first/--no-md5-first",
            help="Offer MD5 before SHA-256 (for clients that answer only the first "
            "challenge, such as sipp 3.6).",
        ),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Server secret (hex); default: kept in the store.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate for tls: and wss:.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key for tls: and wss:.")] = None,
    flow_timer: Annotated[
        int | None,
        typer.Option(help="Flow-Timer seconds for outbound registrations (RFC 5626 §5.4; 120)."),
    ] = None,
    alias_peer: Annotated[
        list[str] | None,
        typer.Option(
            "--alias-peer",
            help="IP address of an adjacent proxy (edge) whose Via alias over TCP/TLS is "
            "honoured: requests for it reuse its connection (RFC 5923; repeatable).",
        ),
    ] = None,
    connection_reuse: Annotated[
        bool | None,
        typer.Option(
            "--connection-reuse/--no-connection-reuse",
            help="As an edge, ask the registrar to reuse our TCP/TLS connection (RFC 5923 alias).",
        ),
    ] = None,
    min_expires: Annotated[
        int | None, typer.Option(help="Shortest registration accepted, else 423 (60 s).")
    ] = None,
    max_expires: Annotated[
        int | None, typer.Option(help="Longest registration granted (7200 s).")
    ] = None,
    default_expires: Annotated[
        int | None, typer.Option(help="Registration time when none is asked (3600 s).")
    ] = None,
    no_record_route: Annotated[
        bool | None,
        typer.Option("--no-record-route/--record-route", help="Do not Record-Route dialogs."),
    ] = None,
    no_nat_pings: Annotated[
        bool | None,
        typer.Option(
            "--no-nat-pings/--nat-pings", help="Do not keep NATed bindings alive with OPTIONS/CRLF."
        ),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            help="Admin HTTP endpoint ADDR[:PORT] (/metrics, /healthz, /sessions; port 9642)."
        ),
    ] = None,
    no_admin: Annotated[
        bool | None, typer.Option("--no-admin", help="No admin endpoint, whatever the file says.")
    ] = None,
    admin_token: AdminTokenOption = None,
    admin_insecure: Annotated[
        bool | None,
        typer.Option(
            "--admin-insecure/--no-admin-insecure",
            help="Allow a non-loopback --admin without --admin-token.",
        ),
    ] = None,
    config: ConfigFileOption = None,
) -> None:
    """Run the SIP registrar and home proxy (or, with --edge-only, an Outbound edge)."""
    flags: dict[str, Any] = {
        "listen": listen,
        "domain": domain,
        "store": store,
        "edge-only": edge_only,
        "registrar": registrar,
        "host": host,
        "realm": realm,
        "no-auth": no_auth,
        "md5-first": md5_first,
        "secret": secret,
        "tls-cert": str(tls_cert) if tls_cert else None,
        "tls-key": str(tls_key) if tls_key else None,
        "flow-timer": flow_timer,
        "alias-peer": alias_peer,
        "connection-reuse": connection_reuse,
        "min-expires": min_expires,
        "max-expires": max_expires,
        "default-expires": default_expires,
        "no-record-route": no_record_route,
        "no-nat-pings": no_nat_pings,
        "admin": admin,
        "no-admin": no_admin,
        "admin-token": admin_token,
        "admin-insecure": admin_insecure,
    }
    try:
        file = load_toml(config) if config is not None else {}
        settings = build_settings(file, flags)
        tls = tls_context(settings)
        run(_serve(settings, tls))
    except (StoreError, NatkitError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None


async def _serve(settings: SipServerSettings, tls: ssl.SSLContext | None) -> None:
    store = await open_store(settings.store or default_store_url())
    try:
        key = settings.secret if settings.secret is not None else await server_secret(store)
        config = settings.core_config(key, tls=tls)
        stack = OsStack()
        server = SipServer(stack, config, store, resolver=SipResolver())
        counters = SipCounters()
        instrument(server, counters)
        view = RegistrationView(store)
        app = SipAdmin(server, SipMetrics(server, counters, view), view)
        admin_server: AdminServer | None = None
        refresher: asyncio.Task[None] | None = None
        await server.start()
        tune_gc()  # no full collections over the transaction and binding state
        try:
            if settings.admin is not None:
                admin_server = AdminServer(stack, settings.admin, app, token=settings.admin_token)
                await admin_server.start()
                refresher = asyncio.ensure_future(view.run())
            app.running = True
            where = ", ".join(f"{t.value}:{ep}" for t, ep in server.listening)
            role = "edge proxy" if config.edge_upstream is not None else "registrar + proxy"
            err_console.print(f"SIP {role} listening on {where}", markup=False)
            if admin_server is not None:
                ep = admin_server.local_endpoint
                err_console.print(f"admin endpoint on http://{ep}", markup=False)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            app.running = False
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            if admin_server is not None:
                admin_server.close()
                await admin_server.wait_closed()
            await app.close()
            await server.close()
    finally:
        await store.close()
