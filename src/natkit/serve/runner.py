"""``natkit serve``'s runner: STUN, TURN, SIP, the media relay and the admin
endpoint in one process, on one event loop, sharing one store.

Theory of operation
-------------------
:class:`ServeRunner` opens the store (SQLite in the data directory unless
``[store] url`` says otherwise; Redis lets several processes share one
view), then starts each enabled server on the stack it is given (the OS
stack in production, a simulated host in tests):

* ``[stun]``: a :class:`~natkit.stun.aio.server.StunServerRunner` per
  listen address (the first with the RFC 5780 alternate when configured);
* ``[turn]``: a :class:`~natkit.turn.aio.server.TurnServerRunner` whose
  credentials are the configured users and REST secrets plus the store's
  users (``natkit turn user add``), re-read every 5 s;
* ``[media_relay]``: a :class:`~natkit.mediarelay.aio.server.MediaRelayServer`
  and the SIP media handler that decides per call whether it is used
  (:class:`~natkit.serve.media.RelayMediaHandler`);
* ``[sip]``: a :class:`~natkit.sip.aio.server.SipServer` with the server
  secret from the store, counted for metrics
  (:func:`~natkit.sip.aio.metrics.instrument`), its offers and answers
  passing the media handler through the element's media hook
  (:class:`~natkit.serve.media.SipMediaHook`);
* ``[admin]``: a :class:`~natkit.serve.status.ServeAdminServer`.

Start-up is all or nothing: a server that cannot start (a port in use)
closes the ones already started and the error propagates. :meth:`close`
stops them in the reverse order, and the store last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from natkit import __version__
from natkit.addr import Endpoint
from natkit.errors import NatkitError
from natkit.net.stack import Stack
from natkit.serve.settings import ServeSettings
from natkit.serve.status import (
    CONTENT_TYPE,
    MediaRelayMetrics,
    ServeAdminServer,
    ServeMetrics,
    StunMetrics,
)
from natkit.store.base import Store
from natkit.store.url import open_store

if TYPE_CHECKING:
    from natkit.mediarelay.aio.server import MediaRelayServer
    from natkit.serve.media import RelayMediaHandler
    from natkit.sip.aio.metrics import RegistrationView
    from natkit.sip.aio.server import SipServer
    from natkit.stun.aio.server import StunServerRunner
    from natkit.turn.aio.server import TurnServerRunner

__all__ = ["Listener", "ServeRunner"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Listener:
    """One thing that listens: ``service`` (stun, turn, sip, media relay, admin)."""

    service: str
    transport: str
    endpoint: str

    def to_json(self) -> dict[str, str]:
        return {"service": self.service, "transport": self.transport, "endpoint": self.endpoint}


class ServeRunner:
    """``start()``, ``close()``, or ``async with``; see the module docstring.

    ``turn_tls`` and ``sip_tls``: server TLS contexts for the TLS/WSS
    listeners the settings ask for. ``wallclock``: wall time for TURN REST
    credentials and the store (tests inject one)."""

    def __init__(
        self,
        stack: Stack,
        settings: ServeSettings,
        *,
        turn_tls: ssl.SSLContext | None = None,
        sip_tls: ssl.SSLContext | None = None,
        wallclock: Callable[[], float] = time.time,
        store: Store | None = None,
        registration_refresh: float = 5.0,
    ) -> None:
        self.stack = stack
        self.settings = settings
        self.turn_tls = turn_tls
        self.sip_tls = sip_tls
        self.wallclock = wallclock
        self.registration_refresh = registration_refresh
        self.store: Store | None = store
        self._own_store = store is None
        self.started_at = time.monotonic()
        self.prometheus = ServeMetrics(self.started_at)
        self.stun: list[StunServerRunner] = []
        self.turn: TurnServerRunner | None = None
        self.sip: SipServer | None = None
        self.sip_view: RegistrationView | None = None
        self.relay: MediaRelayServer | None = None
        self.media: RelayMediaHandler | None = None
        self.admin: ServeAdminServer | None = None
        self.turn_relay_ips: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            if self.store is None:
                if self.settings.default_store:
                    self.settings.data_dir.mkdir(parents=True, exist_ok=True)
                self.store = await open_store(self.settings.store_url, clock=self.wallclock)
            await self._start_stun()
            await self._start_turn()
            await self._start_media_relay()
            await self._start_sip()
            await self._start_admin()
        except BaseException:
            await self.close()
            raise
        self._running = True

    async def close(self) -> None:
        self._running = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.admin is not None:
            self.admin.close()
            await self.admin.wait_closed()
            self.admin = None
        if self.sip is not None:
            await self.sip.close()
            self.sip = None
        if self.media is not None:
            self.media.close()
        if self.relay is not None:
            self.relay.close()
            await self.relay.wait_closed()
            self.relay = None
        if self.turn is not None:
            self.turn.close()
            await self.turn.wait_closed()
            self.turn = None
        for runner in self.stun:
            runner.close()
            await runner.wait_closed()
        self.stun.clear()
        if self.store is not None and self._own_store:
            await self.store.close()
            self.store = None

    async def __aenter__(self) -> ServeRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, job: Any) -> None:
        self._tasks.append(asyncio.ensure_future(job))

    # -- the servers --------------------------------------------------------------------

    async def _start_stun(self) -> None:
        stun = self.settings.stun
        if stun is None:
            return
        from natkit.stun.aio.server import StunServerRunner
        from natkit.stun.server import StunServerConfig

        for i, ep in enumerate(stun.listen):
            alternate = stun.alternate if i == 0 else None
            config = StunServerConfig(
                primary=ep,
                alternate=alternate,
                rfc5780=alternate is not None,
                software=stun.software,
            )
            runner = StunServerRunner(self.stack, config, tcp=stun.tcp)
            self.stun.append(runner)
            await runner.start()
        self.prometheus.add(StunMetrics(lambda: [r.core for r in self.stun]))

    async def _start_turn(self) -> None:
        turn = self.settings.turn
        if turn is None:
            return
        from natkit.turn.aio.config import resolve_relay_ips
        from natkit.turn.aio.credentials import StoreCredentials
        from natkit.turn.aio.server import TurnServerRunner
        from natkit.turn.credentials import (
            CombinedCredentials,
            CredentialSource,
            RestCredentials,
            StaticCredentials,
        )

        assert self.store is not None
        sources: list[CredentialSource] = []
        if turn.users:
            sources.append(StaticCredentials.from_passwords(dict(turn.users), turn.realm))
        if turn.auth_secrets:
            sources.append(RestCredentials(turn.auth_secrets, turn.realm))
        mirror = await StoreCredentials.load(self.store, turn.realm)
        sources.append(mirror)
        credentials = sources[0] if len(sources) == 1 else CombinedCredentials(sources)
        self.turn_relay_ips = await resolve_relay_ips(self.stack, turn)
        config = turn.core_config(self.turn_relay_ips, wallclock=self.wallclock)
        self.turn = TurnServerRunner(
            self.stack,
            config,
            credentials,
            listen=turn.listeners(),
            tls=self.turn_tls,
            max_connections=turn.max_connections,
            idle_timeout=turn.idle_timeout,
            max_unauthenticated_per_ip=turn.max_unauthenticated_per_ip,
            unauthenticated_timeout=turn.unauthenticated_timeout,
            refresh_credentials=mirror.refresh,
        )
        await self.turn.start()
        self.prometheus.add(self.turn.metrics_collector)

    async def _start_media_relay(self) -> None:
        relay = self.settings.media_relay
        if relay is None or self.settings.sip is None:
            return  # the relay is driven by the SIP element's calls
        from natkit.mediarelay.aio.server import MediaRelayServer
        from natkit.mediarelay.config import MediaRelayConfig
        from natkit.serve.media import RelayMediaHandler

        config = MediaRelayConfig(
            port_min=relay.min_port,
            port_max=relay.max_port,
            learning_packets=relay.learning_packets,
            learning_time=relay.learning_time,
            strict_source=relay.strict_source,
            idle_timeout=relay.idle_timeout,
            max_calls=relay.max_calls,
        )
        handler: list[RelayMediaHandler] = []
        self.relay = MediaRelayServer(
            self.stack,
            config,
            ipv4=relay.ipv4,
            ipv6=relay.ipv6,
            on_event=lambda event: handler[0].on_relay_event(event) if handler else None,
        )
        await self.relay.start()
        self.media = RelayMediaHandler(self.relay, relay)
        handler.append(self.media)
        self.prometheus.add(MediaRelayMetrics(lambda: self.media))

    async def _start_sip(self) -> None:
        sip = self.settings.sip
        if sip is None:
            return
        from natkit.cli.sip_server import server_secret
        from natkit.sip.aio.metrics import RegistrationView, SipCounters, SipMetrics, instrument
        from natkit.sip.aio.resolve import SipResolver
        from natkit.sip.aio.server import SipServer

        assert self.store is not None
        secret = sip.secret if sip.secret is not None else await server_secret(self.store)
        config = sip.core_config(secret, tls=self.sip_tls)
        hook = None
        if self.media is not None:
            from natkit.serve.media import SipMediaHook

            hook = SipMediaHook(self.media)
        self.sip = SipServer(
            self.stack, config, self.store, resolver=SipResolver(), media_handler=hook
        )
        counters = SipCounters()
        instrument(self.sip, counters)
        self.sip_view = RegistrationView(self.store, interval=self.registration_refresh)
        await self.sip.start()
        self.prometheus.add(SipMetrics(self.sip, counters, self.sip_view))
        self._spawn(self.sip_view.run())

    async def _start_admin(self) -> None:
        admin = self.settings.admin
        if admin.listen is None:
            return
        self.admin = ServeAdminServer(
            self.stack, admin.listen, self, token=admin.token, status=self.status
        )
        await self.admin.start()

    # -- what listens where -------------------------------------------------------------

    def listeners(self) -> list[Listener]:
        out: list[Listener] = []
        for runner in self.stun:
            for ep in runner.endpoints:
                out.append(Listener("stun", "udp", str(ep)))
            for listener in runner.listeners:
                out.append(Listener("stun", "tcp", str(listener.local_endpoint)))
        if self.turn is not None:
            for transport, ep in self.turn.endpoints:
                out.append(Listener("turn", str(transport), str(ep)))
        if self.sip is not None:
            for sip_transport, ep in self.sip.listening:
                out.append(Listener("sip", sip_transport.value, str(ep)))
        if self.relay is not None:
            relay = self.settings.media_relay
            assert relay is not None
            for ip in (relay.ipv4, relay.ipv6):
                if ip is not None:
                    host = f"[{ip}]" if ":" in ip else ip
                    out.append(
                        Listener("media relay", "udp", f"{host}:{relay.min_port}-{relay.max_port}")
                    )
        if self.admin is not None:
            out.append(Listener("admin", "http", f"http://{self.admin.local_endpoint}/"))
        return out

    def endpoint(self, service: str, transport: str) -> Endpoint:
        """The first bound endpoint of ``service`` over ``transport`` (tests, the CLI)."""
        if service == "admin" and self.admin is not None:
            return self.admin.local_endpoint
        if service == "stun":
            for runner in self.stun:
                if transport == "udp" and runner.endpoints:
                    return runner.endpoints[0]
                if transport == "tcp" and runner.listeners:
                    return runner.listeners[0].local_endpoint
        if service == "turn" and self.turn is not None:
            for t, ep in self.turn.endpoints:
                if str(t) == transport:
                    return ep
        if service == "sip" and self.sip is not None:
            for kind, ep in self.sip.listening:
                if kind.value == transport:
                    return ep
        raise NatkitError(f"no {service} listener over {transport}")

    # -- natkit.net.admin.AdminApp ------------------------------------------------------

    def metrics(self) -> tuple[bytes, str]:
        return self.prometheus.render(), CONTENT_TYPE

    def sessions(self) -> list[dict[str, Any]]:
        """TURN allocations (``kind: allocation``, kickable by id) and SIP
        registrations (``kind: registration``)."""
        out: list[dict[str, Any]] = []
        if self.turn is not None:
            out.extend({"kind": "allocation", **s} for s in self.turn.sessions())
        if self.sip_view is not None:
            out.extend({"kind": "registration", **s} for s in self.sip_view.sessions())
        return out

    def kick(self, session_id: int) -> bool:
        """End TURN allocation ``session_id``."""
        return self.turn is not None and bool(self.turn.kick(session_id))

    def healthy(self) -> bool:
        if not self._running:
            return False
        return self.turn is None or bool(self.turn.healthy())

    def status(self) -> dict[str, Any]:
        """``/status.json``: what listens, registrations, allocations, calls, uptime."""
        registrations = self.sip_view.sessions() if self.sip_view is not None else []
        allocations = self.turn.sessions() if self.turn is not None else []
        calls = self.media.calls_json() if self.media is not None else []
        counts: dict[str, Any] = {
            "registrations": len(registrations),
            "allocations": len(allocations),
        }
        if self.media is not None:
            counts["relayed calls now"] = self.relay.call_count if self.relay else 0
            counts.update({f"calls {k}": v for k, v in sorted(self.media.paths_chosen.items())})
        return {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "store": _masked(self.settings.store_url),
            "listening": [listener.to_json() for listener in self.listeners()],
            "counts": counts,
            "registrations": registrations,
            "allocations": allocations,
            "calls": calls,
        }


def _masked(url: str) -> str:
    from natkit.store.url import masked

    return masked(url)
