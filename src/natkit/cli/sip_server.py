"""``natkit sip-server``: run the SIP registrar + home proxy, or an Outbound edge proxy.

The element is :class:`natkit.sip.aio.server.SipServer` (docs/sip-server.md);
this module turns flags into its config, opens the store (bindings, users
and the server secret live there: ``--store``, default SQLite), and runs it
until SIGINT/SIGTERM.

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
from typing import Annotated

import typer
from rich.console import Console

from natkit.addr import Endpoint, canonical_ip, parse_endpoint
from natkit.errors import NatkitError
from natkit.net.loop import run
from natkit.net.os_stack import OsStack
from natkit.sip.aio.resolve import SipResolver
from natkit.sip.aio.server import SipServer, SipServerConfig, literal_target
from natkit.sip.digest import DigestAlgorithm
from natkit.sip.flow import SipTransport, Target
from natkit.sip.uri import SipUri, parse_uri
from natkit.store import Store, StoreError, default_store_url, open_store

__all__ = ["parse_sip_listen", "server_secret", "sip_server_command"]

err_console = Console(stderr=True)
_log = logging.getLogger(__name__)

SECRET_NAMESPACE = "sip/server"
_DEFAULT_PORTS = {
    SipTransport.UDP: 5060,
    SipTransport.TCP: 5060,
    SipTransport.TLS: 5061,
    SipTransport.WS: 80,
    SipTransport.WSS: 443,
}


def parse_sip_listen(text: str) -> list[tuple[SipTransport, Endpoint]]:
    """``udp:|tcp:|tls:|ws:|wss:ADDR[:PORT]``; a bare ``ADDR[:PORT]`` means UDP and TCP."""
    scheme, sep, rest = text.partition(":")
    kinds: tuple[SipTransport, ...]
    if sep and scheme.lower() in {t.value for t in SipTransport}:
        kinds = (SipTransport(scheme.lower()),)
    else:
        kinds, rest = (SipTransport.UDP, SipTransport.TCP), text
    try:
        endpoint = parse_endpoint(rest, _DEFAULT_PORTS[kinds[0]])
    except ValueError as exc:
        raise ValueError(f"--listen {text!r}: {exc}") from None
    return [(kind, endpoint) for kind in kinds]


async def server_secret(store: Store) -> bytes:
    """The cluster's server secret, created in the store on first use."""
    doc = await store.get(SECRET_NAMESPACE, "secret")
    if doc is not None and isinstance(doc.get("hex"), str):
        return bytes.fromhex(doc["hex"])
    fresh = _secrets.token_bytes(32)
    await store.put(SECRET_NAMESPACE, "secret", {"hex": fresh.hex()})
    again = await store.get(SECRET_NAMESPACE, "secret")  # another server may have won
    return bytes.fromhex(again["hex"]) if again is not None else fresh


def _fail(message: str) -> typer.Exit:
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
        bool, typer.Option("--edge-only", help="Run as an Outbound edge proxy (needs --registrar).")
    ] = False,
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
        bool, typer.Option("--no-auth", help="Open registration (labs and tests only).")
    ] = False,
    md5_first: Annotated[
        bool,
        typer.Option(
            "--md5-first",
            help="Offer MD5 before SHA-256 (for clients that answer only the first "
            "challenge, such as sipp 3.6).",
        ),
    ] = False,
    secret: Annotated[
        str | None, typer.Option(help="Server secret (hex); default: kept in the store.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate for tls: and wss:.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM key for tls: and wss:.")] = None,
    flow_timer: Annotated[
        int, typer.Option(help="Flow-Timer seconds for outbound registrations (RFC 5626 §5.4).")
    ] = 120,
    alias_peer: Annotated[
        list[str] | None,
        typer.Option(
            "--alias-peer",
            help="IP address of an adjacent proxy (edge) whose Via alias over TCP/TLS is "
            "honoured: requests for it reuse its connection (RFC 5923; repeatable).",
        ),
    ] = None,
    connection_reuse: Annotated[
        bool,
        typer.Option(
            "--connection-reuse",
            help="As an edge, ask the registrar to reuse our TCP/TLS connection (RFC 5923 alias).",
        ),
    ] = False,
) -> None:
    """Run the SIP registrar and home proxy (or, with --edge-only, an Outbound edge)."""
    try:
        pairs = [pair for text in (listen or ["0.0.0.0:5060"]) for pair in parse_sip_listen(text)]
    except ValueError as exc:
        raise _fail(str(exc)) from None
    tls: ssl.SSLContext | None = None
    if any(t.secure for t, _ in pairs):
        if tls_cert is None or tls_key is None:
            raise _fail("tls: and wss: listeners need --tls-cert and --tls-key")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(tls_cert, tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise _fail(f"cannot load the TLS certificate: {exc}") from None
    upstream: Target | None = None
    if edge_only:
        if registrar is None:
            raise _fail("--edge-only needs --registrar sip:ADDRESS[:PORT]")
        try:
            uri = parse_uri(registrar)
        except NatkitError as exc:
            raise _fail(f"--registrar: {exc}") from None
        upstream = literal_target(uri) if isinstance(uri, SipUri) else None
        if upstream is None:
            raise _fail("--registrar must be a sip: URI with an IP address")
    elif not domain:
        raise _fail("a registrar needs --domain (or run --edge-only)")
    algorithms = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    if md5_first:
        algorithms = (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    try:
        secret_bytes = bytes.fromhex(secret) if secret is not None else None
    except ValueError:
        raise _fail("--secret is hex") from None
    try:
        alias_peers = frozenset(canonical_ip(peer) for peer in alias_peer or ())
    except ValueError:
        raise _fail("--alias-peer must be an IP address") from None
    try:
        run(
            _serve(
                pairs=tuple(pairs),
                domains=frozenset(d.lower() for d in domain or ()),
                store_url=store or default_store_url(),
                upstream=upstream,
                host=host,
                realm=realm,
                authenticate=not no_auth,
                algorithms=algorithms,
                secret=secret_bytes,
                tls=tls,
                flow_timer=flow_timer,
                alias_peers=alias_peers,
                connection_reuse=connection_reuse,
            )
        )
    except (StoreError, NatkitError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None


async def _serve(
    *,
    pairs: tuple[tuple[SipTransport, Endpoint], ...],
    domains: frozenset[str],
    store_url: str,
    upstream: Target | None,
    host: str | None,
    realm: str | None,
    authenticate: bool,
    algorithms: tuple[DigestAlgorithm, ...],
    secret: bytes | None,
    tls: ssl.SSLContext | None,
    flow_timer: int,
    alias_peers: frozenset[str] = frozenset(),
    connection_reuse: bool = False,
) -> None:
    store = await open_store(store_url)
    try:
        key = secret if secret is not None else await server_secret(store)
        config = SipServerConfig(
            listen=pairs,
            domains=domains,
            secret=key,
            host=host,
            realm=realm,
            authenticate=authenticate,
            digest_algorithms=algorithms,
            tls=tls,
            flow_timer=flow_timer,
            edge_upstream=upstream,
            alias_peers=alias_peers,
            connection_reuse=connection_reuse,
        )
        server = SipServer(OsStack(), config, store, resolver=SipResolver())
        await server.start()
        where = ", ".join(f"{t.value}:{ep}" for t, ep in server.listening)
        role = "edge proxy" if config.edge_upstream is not None else "registrar + proxy"
        err_console.print(f"SIP {role} listening on {where}", markup=False)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close()
    finally:
        await store.close()
