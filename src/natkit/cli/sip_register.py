"""``natkit sip register AOR``: register to a SIP registrar and stay registered.

Runs natkit's registration client (:class:`natkit.sip.aio.registration.RegistrationAgent`,
RFC 3261 §10.2, RFC 5626 §4): digest authentication, Outbound (``+sip.instance``,
``reg-id``, one flow per ``--proxy``, keepalives at the interval the registrar's
Flow-Timer asks for, or ``--keepalive``), refreshes, and flow recovery with the
RFC 5626 §4.5 back-off. It prints one line per event (JSON lines with
``--json``) until SIGINT/SIGTERM, then unregisters. With ``--once`` it
registers, prints the outcome, unregisters and exits: 0 if every flow
registered, 1 if not — for checking a registrar from a script.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from natkit.addr import Endpoint, parse_endpoint
from natkit.cli.users import fail
from natkit.errors import NatkitError
from natkit.net.loop import run
from natkit.net.os_stack import OsStack
from natkit.sip.aio.registration import RegistrationAgent
from natkit.sip.aio.resolve import SipResolver
from natkit.sip.aio.server import literal_target
from natkit.sip.flow import SipTransport, Target
from natkit.sip.registration import FlowConfig, RegistrationConfig
from natkit.sip.registration_events import RegistrationEvent, RegistrationSucceeded
from natkit.sip.uri import SipUri, parse_uri

__all__ = ["register_command"]


def _sip_uri(text: str, what: str) -> SipUri:
    try:
        uri = parse_uri(text if ":" in text else f"sip:{text}")
    except NatkitError as exc:
        raise fail(f"{what}: {exc}") from None
    if not isinstance(uri, SipUri):
        raise fail(f"{what} must be a sip: or sips: URI")
    return uri


def register_command(
    aor: Annotated[str, typer.Argument(help="The address of record, e.g. sip:alice@example.org.")],
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="Digest password ('-': read stdin).")
    ] = None,
    username: Annotated[
        str | None, typer.Option(help="Digest username (default: the AoR's user part).")
    ] = None,
    registrar: Annotated[
        str | None,
        typer.Option(
            help="Where to send REGISTERs (default: the AoR's domain, located by RFC 3263)."
        ),
    ] = None,
    proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--proxy", help="An outbound/edge proxy URI; one flow each (repeatable, RFC 5626)."
        ),
    ] = None,
    outbound: Annotated[
        bool, typer.Option("--outbound/--no-outbound", help="Ask for SIP Outbound (RFC 5626).")
    ] = True,
    keepalive: Annotated[
        float | None,
        typer.Option(help="Keepalive interval in seconds (default: the server's Flow-Timer)."),
    ] = None,
    transport: Annotated[
        str, typer.Option("--transport", "-t", help="udp, tcp or tls, when the URI does not say.")
    ] = "udp",
    bind: Annotated[
        str | None, typer.Option(help="Local IP[:PORT] (default: the route's source address).")
    ] = None,
    expires: Annotated[int, typer.Option(help="Requested registration lifetime (s).")] = 3600,
    once: Annotated[
        bool, typer.Option("--once", help="Register, report, unregister and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    timeout: Annotated[float, typer.Option(help="With --once: seconds to wait.")] = 30.0,
) -> None:
    """Register AOR and keep the registration alive (Outbound, keepalives, recovery)."""
    aor_uri = _sip_uri(aor, "AOR")
    if password == "-":
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        chosen = SipTransport(transport.lower())
    except ValueError:
        raise fail(f"--transport: not one of udp, tcp, tls: {transport!r}") from None
    registrar_uri = _sip_uri(registrar, "--registrar") if registrar else None
    proxies = [_sip_uri(p, "--proxy") for p in proxy or ()]
    local: Endpoint | None = None
    if bind is not None:
        try:
            local = parse_endpoint(bind, 0)
        except ValueError as exc:
            raise fail(f"--bind: {exc}") from None
    try:
        ok = run(
            _register(
                aor_uri,
                username=username or aor_uri.user or "",
                password=password,
                domain=SipUri(scheme=aor_uri.scheme, host=aor_uri.host),
                registrar=registrar_uri,
                proxies=proxies,
                outbound=outbound,
                keepalive=keepalive,
                transport=chosen,
                local=local,
                expires=expires,
                once=once,
                as_json=as_json,
                timeout=timeout,
            )
        )
    except (NatkitError, OSError) as exc:
        raise fail(str(exc)) from None
    if not ok:
        raise typer.Exit(1)


async def _target(resolver: SipResolver, uri: SipUri, transport: SipTransport) -> Target:
    if uri.transport is None and uri.scheme == "sip" and transport is not SipTransport.UDP:
        uri = uri.with_params(transport=transport.value)
    literal = literal_target(uri)
    if literal is not None:
        return literal
    targets = resolver.targets_for_uri(uri)
    try:
        first = await targets.__anext__()
    except StopAsyncIteration:
        raise NatkitError(f"no SIP server found for {uri}") from None
    finally:
        await targets.aclose()
    return first.target


def _free_port(ip: str, transport: SipTransport) -> int:
    """A port free for ``transport`` on ``ip`` right now (the Contact needs it
    before the agent binds)."""
    kind = socket.SOCK_DGRAM if transport is SipTransport.UDP else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


async def _register(
    aor: SipUri,
    *,
    username: str,
    password: str | None,
    domain: SipUri,
    registrar: SipUri | None,
    proxies: list[SipUri],
    outbound: bool,
    keepalive: float | None,
    transport: SipTransport,
    local: Endpoint | None,
    expires: int,
    once: bool,
    as_json: bool,
    timeout: float,
) -> bool:
    stack = OsStack()
    resolver = SipResolver()
    # The Request-URI is the AoR's domain (RFC 3261 §10.2); --registrar only
    # says where to send it, --proxy adds a Route (an outbound/edge proxy).
    hops = proxies or [registrar or domain]
    targets = [await _target(resolver, hop, transport) for hop in hops]
    flows = tuple(
        FlowConfig(target=target, proxy=hop if proxies else None)
        for hop, target in zip(hops, targets, strict=True)
    )
    if local is None or local.port == 0:
        ip = local.host if local is not None else await stack.source_address_for(targets[0].remote)
        local = Endpoint(ip, _free_port(ip, targets[0].transport))
    params: tuple[tuple[str, str | None], ...] = ()
    if targets[0].transport is not SipTransport.UDP:
        params = (
            ("transport", "tcp" if targets[0].transport.secure else targets[0].transport.value),
        )
    contact = SipUri(
        scheme="sips" if targets[0].transport.secure else "sip",
        host=local.host,
        user=aor.user,
        port=local.port,
        params=params,
    )
    config = RegistrationConfig(
        aor=aor,
        registrar=domain,
        contact=contact,
        sent_by=local,
        flows=flows,
        expires=expires,
        outbound=outbound,
        username=username if password is not None else None,
        password=password,
        keepalive_interval=keepalive,
    )
    async with RegistrationAgent(stack, config) as agent:
        if once:
            ok = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while not ok:
                        event = await agent.events.get()
                        _print(event, as_json)
                        ok = len(agent.registered_flows) == len(flows)
            if ok:
                await agent.unregister()
            return ok
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(agent.events.get())
                done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    _print(getter.result(), as_json)
                else:
                    getter.cancel()
        finally:
            waiter.cancel()
        await agent.unregister()
        return True


def _print(event: RegistrationEvent, as_json: bool) -> None:
    fields = {"event": type(event).__name__, **asdict(event)}
    if as_json:
        sys.stdout.write(json.dumps(fields, default=str) + "\n")
    elif isinstance(event, RegistrationSucceeded):
        sys.stdout.write(
            f"flow {event.flow}: registered for {event.expires} s"
            f"{' (outbound)' if event.outbound else ''}\n"
        )
    else:
        detail = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event", "flow"))
        sys.stdout.write(f"flow {fields.get('flow')}: {fields['event']} {detail}\n")
    sys.stdout.flush()
