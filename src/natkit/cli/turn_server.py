"""``natkit turn-server``: run natkit's TURN server (and ``natkit turn sessions``
/ ``natkit turn kick``, which talk to a running one over its admin endpoint).

Settings come from the flags and, with ``--config``, a TOML file holding the
same keys (:mod:`natkit.turn.aio.config`); a flag given on the command line
wins. Every configuration error is one line on stderr and exit status 1.
SIGTERM and SIGINT shut the server down gracefully (exit status 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from natkit.cli.server_options import TOKEN_ENV, AdminTokenOption, ConfigFileOption
from natkit.cli.turn import turn_app
from natkit.errors import NatkitError
from natkit.net.loop import loop_factory, tune_gc
from natkit.turn.aio.config import (
    ADMIN_DEFAULT,
    TurnServerSettings,
    build_settings,
    load_toml,
    resolve_relay_ips,
)
from natkit.turn.credentials import (
    CombinedCredentials,
    CredentialSource,
    RestCredentials,
    StaticCredentials,
)

__all__ = ["kick_command", "sessions_command", "turn_app", "turn_server_command"]

log = logging.getLogger(__name__)
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
ADMIN_URL = f"http://{ADMIN_DEFAULT}"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(1)


ListOpt = list[str] | None


def turn_server_command(
    listen: Annotated[
        ListOpt,
        typer.Option(
            "--listen",
            "-l",
            help="udp:|tcp:|tls:ADDR[:PORT], or ADDR[:PORT] for UDP and TCP (repeatable). "
            "Default: 0.0.0.0:3478.",
        ),
    ] = None,
    realm: Annotated[str | None, typer.Option(help="Authentication realm (required).")] = None,
    user: Annotated[
        ListOpt, typer.Option("--user", "-u", help="NAME:PASSWORD (repeatable).")
    ] = None,
    auth_secret: Annotated[
        ListOpt,
        typer.Option(help="TURN REST API shared secret, coturn's use-auth-secret (repeatable)."),
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Users and secrets from a store: sqlite:PATH | redis://...")
    ] = None,
    external_ip: Annotated[
        ListOpt,
        typer.Option(
            help="Advertised relay address behind NAT: PUBLIC or PRIVATE=PUBLIC (repeatable)."
        ),
    ] = None,
    relay_ip: Annotated[
        ListOpt,
        typer.Option(help="Local IP relay sockets bind to (one per family; default: listen IP)."),
    ] = None,
    min_port: Annotated[int | None, typer.Option(help="Lowest relay port (49152).")] = None,
    max_port: Annotated[int | None, typer.Option(help="Highest relay port (65535).")] = None,
    allow_peer: Annotated[
        ListOpt,
        typer.Option(help="CIDR of peers to allow even in denied ranges, e.g. 10.0.0.0/8."),
    ] = None,
    deny_peer: Annotated[
        ListOpt, typer.Option(help="CIDR of peers to deny besides the default ranges.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for TLS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for TLS.")] = None,
    alternate_server: Annotated[
        str | None, typer.Option(help="ADDR:PORT to redirect every Allocate to (300).")
    ] = None,
    max_allocations: Annotated[
        int | None, typer.Option(help="Allocations in total (0: no limit).")
    ] = None,
    user_quota: Annotated[
        int | None, typer.Option(help="Allocations per username (0: no limit).")
    ] = None,
    max_bps: Annotated[
        int | None, typer.Option(help="Bytes/s each way per allocation (0: no limit).")
    ] = None,
    bps_capacity: Annotated[
        int | None, typer.Option(help="Bytes/s each way for the whole server (0: no limit).")
    ] = None,
    default_lifetime: Annotated[
        float | None, typer.Option(help="Allocation lifetime when none is asked (600 s).")
    ] = None,
    max_lifetime: Annotated[
        float | None, typer.Option(help="Longest allocation lifetime granted (3600 s).")
    ] = None,
    no_tcp_relay: Annotated[
        bool | None,
        typer.Option("--no-tcp-relay/--tcp-relay", help="Refuse RFC 6062 TCP allocations."),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(help="Admin HTTP endpoint ADDR:PORT (default 127.0.0.1:9641)."),
    ] = None,
    no_admin: Annotated[
        bool | None, typer.Option("--no-admin", help="No admin endpoint, whatever the file says.")
    ] = None,
    admin_token: AdminTokenOption = None,
    admin_insecure: Annotated[
        bool | None,
        typer.Option(
            "--admin-insecure/--no-admin-insecure",
            help="Allow a non-loopback --admin without --admin-token (anyone may kick).",
        ),
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option(help="Client TCP/TLS connections at once (4096).")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option(help="Close TCP/TLS clients without an allocation after this (300 s)."),
    ] = None,
    max_unauthenticated_per_ip: Annotated[
        int | None,
        typer.Option(
            help="TCP/TLS connections from one IP not yet authenticated (256; 0: no limit)."
        ),
    ] = None,
    unauthenticated_timeout: Annotated[
        float | None,
        typer.Option(help="Close silent TCP/TLS clients that never authenticated (30 s)."),
    ] = None,
    relay_socket_pool: Annotated[
        int | None,
        typer.Option(help="Released UDP relay sockets kept open for reuse (16384; 0: none)."),
    ] = None,
    relay_port_quarantine: Annotated[
        float | None,
        typer.Option(help="Seconds a released relay port rests before reuse (1.0)."),
    ] = None,
    max_permissions: Annotated[
        int | None, typer.Option(help="Peer IPs with a permission per allocation (1000; 0: any).")
    ] = None,
    max_channels: Annotated[
        int | None, typer.Option(help="Channel bindings per allocation (1000; 0: any).")
    ] = None,
    max_peer_connections: Annotated[
        int | None, typer.Option(help="RFC 6062 peer connections per allocation (100; 0: any).")
    ] = None,
    deny_connect_port: Annotated[
        list[int] | None,
        typer.Option(help="Peer TCP port RFC 6062 Connect may not reach (repeatable; 25)."),
    ] = None,
    binding_rate: Annotated[
        float | None,
        typer.Option(help="Binding answers/s per source IP without an allocation (50; 0: off)."),
    ] = None,
    binding_burst: Annotated[
        float | None, typer.Option(help="Burst of those Binding answers (100).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes serving the UDP listeners (SO_REUSEPORT, Linux; 1). "
            "See docs/turn-server.md for what more than one implies."
        ),
    ] = None,
    config: ConfigFileOption = None,
) -> None:
    """Run a TURN relay server (RFC 8656, RFC 6062) over UDP, TCP and TLS."""
    flags: dict[str, Any] = {
        "listen": listen,
        "realm": realm,
        "user": user,
        "auth-secret": auth_secret,
        "store": store,
        "external-ip": external_ip,
        "relay-ip": relay_ip,
        "min-port": min_port,
        "max-port": max_port,
        "allow-peer": allow_peer,
        "deny-peer": deny_peer,
        "tls-cert": str(tls_cert) if tls_cert else None,
        "tls-key": str(tls_key) if tls_key else None,
        "alternate-server": alternate_server,
        "max-allocations": max_allocations,
        "user-quota": user_quota,
        "max-bps": max_bps,
        "bps-capacity": bps_capacity,
        "default-lifetime": default_lifetime,
        "max-lifetime": max_lifetime,
        "no-tcp-relay": no_tcp_relay,
        "admin": admin,
        "no-admin": no_admin,
        "admin-token": admin_token,
        "admin-insecure": admin_insecure,
        "max-connections": max_connections,
        "idle-timeout": idle_timeout,
        "max-unauthenticated-per-ip": max_unauthenticated_per_ip,
        "unauthenticated-timeout": unauthenticated_timeout,
        "relay-socket-pool": relay_socket_pool,
        "relay-port-quarantine": relay_port_quarantine,
        "max-permissions": max_permissions,
        "max-channels": max_channels,
        "max-peer-connections": max_peer_connections,
        "deny-connect-port": deny_connect_port,
        "binding-rate": binding_rate,
        "binding-burst": binding_burst,
        "workers": workers,
    }
    try:
        file = load_toml(config) if config is not None else {}
        settings = build_settings(file, flags)
        tls = _tls_context(settings)
        if settings.workers == 1:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                runner.run(_serve(settings, tls))
        else:
            _serve_workers(settings, tls)
    except (NatkitError, ValueError, OSError, ssl.SSLError) as exc:
        raise _fail(str(exc)) from exc


def _serve_workers(settings: TurnServerSettings, tls: ssl.SSLContext | None) -> None:
    """``--workers N``: this process is worker 0 and forks workers 1..N-1.

    Every UDP listener is bound N times with SO_REUSEPORT here, before the
    fork, so the kernel's 4-tuple hash (which sends each client 5-tuple to one
    socket, hence one worker) is fixed before any datagram is read; each
    worker keeps its own socket of each. The workers' settings come from
    :meth:`TurnServerSettings.for_worker`. A worker that exits stops the
    whole server (its clients' datagrams would go to the others, which do not
    hold their allocations); SIGTERM to worker 0 stops them all, and the
    others also get SIGTERM if worker 0 dies (PR_SET_PDEATHSIG)."""
    from natkit.addr import Transport
    from natkit.net.os_stack import OsStack

    if not hasattr(os, "fork"):
        raise NatkitError("workers: more than one needs os.fork (Linux)")
    n = settings.workers
    udp = [ep for t, ep in settings.listen if t is Transport.UDP]
    groups = {ep: OsStack(udp_buffer=_UDP_BUFFER).bind_udp_group(ep, n) for ep in udp}
    children: list[int] = []
    index = 0
    for i in range(1, n):
        pid = os.fork()
        if pid == 0:
            index, children = i, []
            _die_with_parent()
            break
        children.append(pid)
    mine = {ep: socks[index] for ep, socks in groups.items()}
    for socks in groups.values():
        for i, sock in enumerate(socks):
            if i != index:
                sock.close()
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(
                _serve(
                    settings.for_worker(index),
                    tls if index == 0 else None,
                    bound_udp=mine,
                    workers=children,
                    quiet=index != 0,
                )
            )
    finally:
        _stop_workers(children)


def _die_with_parent() -> None:
    """In a forked worker: get SIGTERM when worker 0 goes (Linux prctl)."""
    parent = os.getppid()
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with worker 0; stop the workers by hand")
    if os.getppid() != parent:  # it went before the prctl
        os._exit(1)


def _stop_workers(children: list[int], timeout: float = 12.0) -> None:
    """SIGTERM each forked worker still running and reap it (SIGKILL after ``timeout``)."""
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in children:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.02)


def _tls_context(settings: TurnServerSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    except OSError as exc:
        missing = [str(p) for p in (settings.tls_cert, settings.tls_key) if not p.is_file()]
        what = f"no such file: {', '.join(missing)}" if missing else (exc.strerror or str(exc))
        raise NatkitError(f"TLS: {what}") from exc
    except ssl.SSLError as exc:
        raise NatkitError(
            f"TLS: cannot use {settings.tls_cert} / {settings.tls_key}: {exc}"
        ) from exc
    return ctx


async def _credentials(
    settings: TurnServerSettings,
) -> tuple[CredentialSource, Callable[[], Awaitable[None]] | None, Any]:
    """The credential source, its refresh (a store mirror's), and the store to close."""
    sources: list[CredentialSource] = []
    if settings.users:
        sources.append(StaticCredentials.from_passwords(dict(settings.users), settings.realm))
    if settings.auth_secrets:
        sources.append(RestCredentials(settings.auth_secrets, settings.realm))
    refresh: Callable[[], Awaitable[None]] | None = None
    store: Any = None
    url = settings.store or _default_store()
    if url:
        from natkit.store import open_store
        from natkit.turn.aio.credentials import StoreCredentials

        store = await open_store(url)
        err_console.print(f"users and REST secrets from {store.url}", markup=False)
        mirror = await StoreCredentials.load(store, settings.realm)
        sources.append(mirror)
        refresh = mirror.refresh
    if not sources:
        raise NatkitError(
            "no credentials: give --user NAME:PASSWORD, --auth-secret SECRET or --store URL "
            "(an open relay would serve anyone)"
        )
    source = sources[0] if len(sources) == 1 else CombinedCredentials(sources)
    return source, refresh, store


def _default_store() -> str | None:
    """Without --store: the store ``natkit turn user add`` writes to by default
    ($NATKIT_STORE, else the SQLite file under $XDG_STATE_HOME), when it is
    set or the file exists; the server never creates it."""
    from natkit.store.url import STORE_ENV, default_sqlite_path

    if os.environ.get(STORE_ENV):
        return os.environ[STORE_ENV]
    path = default_sqlite_path()
    return f"sqlite:{path}" if path.is_file() else None


async def _serve(
    settings: TurnServerSettings,
    tls: ssl.SSLContext | None,
    *,
    bound_udp: dict[Any, Any] | None = None,
    workers: list[int] | None = None,
    quiet: bool = False,
) -> None:
    """Run one server (``--workers``: one worker, with its UDP listener sockets
    already bound in ``bound_udp``; worker 0 also watches the ``workers``)."""
    from natkit.net.os_stack import OsStack
    from natkit.turn.aio.server import TurnServerRunner

    _raise_fd_limit()
    stack = OsStack(udp_buffer=_UDP_BUFFER, bound_udp=bound_udp)
    credentials, refresh, store = await _credentials(settings)
    try:
        relay_ips = await resolve_relay_ips(stack, settings)
        config = settings.core_config(relay_ips, wallclock=time.time)
        runner = TurnServerRunner(
            stack,
            config,
            credentials,
            listen=settings.listeners(),
            tls=tls,
            admin=settings.admin,
            admin_token=settings.admin_token,
            max_connections=settings.max_connections,
            idle_timeout=settings.idle_timeout,
            max_unauthenticated_per_ip=settings.max_unauthenticated_per_ip,
            unauthenticated_timeout=settings.unauthenticated_timeout,
            refresh_credentials=refresh,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        died: list[int] = []
        pidfds = [_watch_worker(loop, pid, stop, died) for pid in workers or ()]
        await runner.start()
        tune_gc()
        try:
            if not quiet:
                _print_started(settings, runner, relay_ips, config.external_ips)
            await stop.wait()
            if not quiet:
                err_console.print("shutting down", markup=False)
        finally:
            for fd in pidfds:
                loop.remove_reader(fd)
                os.close(fd)
            runner.close()
            try:
                async with asyncio.timeout(10):
                    await runner.wait_closed()
            except TimeoutError:
                log.warning("sockets still closing after 10 s; exiting anyway")
    finally:
        if store is not None:
            await store.close()
    if died:  # exit status 1, so that a supervisor restarts the whole server
        raise NatkitError(f"worker process {died[0]} exited; the server stopped")


_UDP_BUFFER = 4 * 1024 * 1024


def _watch_worker(
    loop: asyncio.AbstractEventLoop, pid: int, stop: asyncio.Event, died: list[int]
) -> int:
    """In worker 0: a worker that exits stops the server (see _serve_workers).
    A pidfd (Linux 5.3) turns readable when its process ends (uvloop keeps
    SIGCHLD to itself); returns the descriptor, for the caller to close."""
    fd = os.pidfd_open(pid)

    def ended() -> None:
        loop.remove_reader(fd)
        log.error("TURN worker %d exited: stopping", pid)
        died.append(pid)
        stop.set()

    loop.add_reader(fd, ended)
    return fd


def _raise_fd_limit() -> None:
    """Every allocation holds a relay socket: lift the soft file-descriptor
    limit (often 1024) to the hard one, as coturn does."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)


def _print_started(
    settings: TurnServerSettings, runner: Any, relay_ips: list[str], external: dict[str, str]
) -> None:
    where = ", ".join(f"{t}:{ep}" for t, ep in runner.endpoints)
    err_console.print(f"TURN server (realm {settings.realm}) listening on {where}", markup=False)
    relays = ", ".join(
        f"{ip} (advertised as {external[ip]})" if ip in external else ip for ip in relay_ips
    )
    err_console.print(
        f"relaying from {relays}, ports {settings.min_port}-{settings.max_port}", markup=False
    )
    if settings.workers > 1:
        err_console.print(
            f"{settings.workers} worker processes share the UDP listeners (SO_REUSEPORT), "
            "each relaying from its slice of the port range; this one (worker 0) holds "
            "the TCP/TLS listeners",
            markup=False,
        )
    if runner.admin is not None:
        ep = runner.admin.local_endpoint
        err_console.print(f"admin endpoint on http://{ep}", markup=False)
        if not ep.ip.is_loopback:
            err_console.print(
                "[yellow]warning:[/yellow] the admin endpoint is not on loopback"
                + ("" if settings.admin_token else " and has no --admin-token")
            )
    if settings.allow_peers:
        err_console.print(
            "peers allowed in denied ranges: " + ", ".join(map(str, settings.allow_peers)),
            markup=False,
        )


# -- natkit turn sessions / kick ---------------------------------------------------------


def _admin_base(admin: str) -> str:
    base = admin if "://" in admin else f"http://{admin}"
    return base.rstrip("/")


def _admin_request(method: str, url: str, token: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _fail(
            f"cannot reach the admin endpoint at {url}: {reason} "
            "(is natkit turn-server running, with its admin endpoint there?)"
        ) from exc
    if status == 401:
        raise _fail(f"the admin endpoint wants a token: --token or ${TOKEN_ENV}")
    try:
        return status, json.loads(body) if body else None
    except ValueError as exc:
        raise _fail(f"{url} answered {status} with something that is not JSON") from exc


AdminOpt = Annotated[
    str, typer.Option("--admin", help="The server's admin endpoint (URL or ADDR:PORT).")
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="Admin bearer token.", envvar=TOKEN_ENV)
]


@turn_app.command("sessions")
def sessions_command(
    admin: AdminOpt = ADMIN_URL,
    token: TokenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON list.")] = False,
) -> None:
    """List the allocations of a running natkit turn-server."""
    url = _admin_base(admin) + "/sessions"
    status, data = _admin_request("GET", url, token)
    if status != 200 or not isinstance(data, list):
        raise _fail(f"{url} answered {status}")
    if as_json:
        out_console.print_json(data=data)
        return
    if not data:
        out_console.print("no allocations")
        return
    table = Table(title=f"{len(data)} allocation{'s' if len(data) != 1 else ''}")
    for column in ("id", "user", "client", "transport", "relays", "expires in", "peers", "in/out"):
        table.add_column(column, no_wrap=column != "relays")
    for s in data:
        peers = len(s.get("permissions", []))
        table.add_row(
            str(s["id"]),
            escape(str(s.get("username", ""))),
            escape(str(s.get("client", ""))),
            str(s.get("transport", "")),
            escape(" ".join(s.get("relays", []))),
            f"{s.get('expires_in_s', 0):.0f} s",
            f"{peers} ({len(s.get('channels', {}))} ch)",
            f"{_size(s.get('bytes_in', 0))} / {_size(s.get('bytes_out', 0))}",
        )
    out_console.print(table)


@turn_app.command("kick")
def kick_command(
    session_id: Annotated[int, typer.Argument(help="Allocation id (from natkit turn sessions).")],
    admin: AdminOpt = ADMIN_URL,
    token: TokenOpt = None,
) -> None:
    """Drop one allocation of a running natkit turn-server."""
    url = f"{_admin_base(admin)}/sessions/{session_id}/kick"
    status, _ = _admin_request("POST", url, token)
    if status == 404:
        raise _fail(f"no allocation {session_id}")
    if status != 200:
        raise _fail(f"{url} answered {status}")
    out_console.print(f"kicked allocation {session_id}")


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n = n / 1000  # type: ignore[assignment]
    return f"{n:.0f} TB"
