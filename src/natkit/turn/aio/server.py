"""Runs a :class:`~natkit.turn.server.TurnServer` core on a stack: client
listeners over UDP, TCP and TLS, relay sockets, RFC 6062 peer connections,
one timer, metrics and the admin endpoint.

Theory of operation
-------------------
The core decides everything; this driver moves bytes and owns sockets.

* Client packets: a UDP listener's datagram, or one message framed out of a
  TCP/TLS stream by :class:`~natkit.stun.framing.StreamFramer`, first goes
  to ``core.relay_client_packet`` (the hot path: ChannelData and Send to a
  bound peer come back as one datagram to send on the relay socket, with no
  queue, event or log line in between); anything else goes to
  ``core.receive_datagram`` and is followed by :meth:`_flush`.
* Peer packets arrive on relay sockets and take the same two ways
  (``relay_peer_packet`` / ``receive_peer_datagram``). ICMP errors the stack
  reports for a relay socket (``open_udp(on_icmp=)``; Linux only) go to
  ``core.peer_icmp``: a Data indication with the ICMP attribute (RFC 8656
  §11.5).
* :meth:`_flush` sends what the core queued, handles its events (open or
  close relay sockets, connect to or bridge RFC 6062 peers, count
  allocations) and re-arms the single ``loop.call_at(core.get_timer())``.
* Relay sockets are opened on :class:`~natkit.turn.events.RelayRequested`
  (a bind error answers ``relay_failed``, which the core turns into 508)
  and closed on :class:`~natkit.turn.events.RelayReleased`. On a stack that
  binds without awaiting (``OsStack.open_udp_now``) UDP relays are opened
  inline, within the flush that saw the event: no task and no loop turn per
  allocation (a tenth of the allocation cycle's cost); other stacks (the
  simulated internet) and TCP relay listeners go through a task.
* Stream clients: ``(local, remote)`` names the connection client-bound
  datagrams are written to. A connection that sends garbage, stops reading
  (write buffer past ``max_write_buffer``) or, holding no allocation, stays
  silent for ``idle_timeout`` (``unauthenticated_timeout`` until it has
  authenticated: created an allocation or bound an RFC 6062 data
  connection) is aborted, not closed (close() waits for a
  peer that may never read). Its end is reported with ``core.stream_closed``
  so its allocations go (RFC 8656 §3.1).
* RFC 6062: relay listeners are opened with ``reuse_port``, so a Connect's
  connection to the peer starts from the relayed transport address itself
  (§5.2). Once :class:`~natkit.turn.events.ConnectionBound` arrives, the
  client data connection stops being framed and its bytes are piped raw to
  the peer connection and back (``StreamFramer.take_buffered`` hands over
  what was read past the ConnectionBind). When the receiving side's
  ``write_buffer_size`` passes ``bridge_buffer``, the sending side's
  ``pause_reading`` holds it until the receiver drains (back-pressure instead
  of unbounded buffering).
* Shutdown: stop accepting, ``core.shutdown``, flush, close every socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, Protocol, cast

from natkit.addr import Endpoint, Transport
from natkit.errors import MalformedMessageError, TransportError
from natkit.net.admin import AdminServer
from natkit.net.driver import CoreTimer
from natkit.net.stack import (
    DatagramEndpoint,
    DatagramHandler,
    IcmpHandler,
    Stack,
    StreamConnection,
    StreamListener,
)
from natkit.stun.framing import StreamFramer
from natkit.turn.aio.metrics import CONTENT_TYPE, RunnerCounters, TurnMetrics
from natkit.turn.aio.relay_pool import RelaySocketPool, open_file_limit, pool_capacity
from natkit.turn.credentials import CredentialSource
from natkit.turn.events import (
    AllocationCreated,
    AllocationDeleted,
    AuthenticationFailed,
    ConnectionBound,
    PeerConnectionReleased,
    PeerConnectRequested,
    RelayReleased,
    RelayRequested,
    TurnServerEvent,
)
from natkit.turn.server import AllocationInfo, TurnDatagram, TurnServer, TurnServerConfig

__all__ = ["TurnServerRunner", "session_json"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_UDP = Transport.UDP
_TCP = Transport.TCP
ConnKey = tuple[Endpoint, Endpoint]  # (local, remote)


class _OpenUdpNow(Protocol):
    def __call__(
        self, local: Endpoint, on_datagram: DatagramHandler, *, on_icmp: IcmpHandler | None = ...
    ) -> DatagramEndpoint: ...


class _Pipe:
    """One direction of an RFC 6062 bridge: bytes read from ``src`` are
    written to ``dst``; reading ``src`` pauses while ``dst`` is backed up."""

    __slots__ = ("cap", "dst", "paused", "src", "task")

    def __init__(self, src: StreamConnection, dst: StreamConnection, cap: int) -> None:
        self.src = src
        self.dst = dst
        self.cap = cap
        self.paused = False
        self.task: asyncio.Task[None] | None = None

    def push(self, data: bytes) -> None:
        dst = self.dst
        dst.write(data)
        if not self.paused and dst.write_buffer_size > self.cap:
            self.paused = True
            self.src.pause_reading()
            self.task = asyncio.get_running_loop().create_task(self._wait_drained())

    async def _wait_drained(self) -> None:
        try:
            await self.dst.drain()
        except TransportError:
            return
        self.paused = False
        if not self.src.closed:
            self.src.resume_reading()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Peer:
    """An RFC 6062 peer TCP connection, before and after it is bound."""

    __slots__ = ("cid", "client", "conn", "pending", "pipe", "relay", "runner")

    def __init__(self, runner: TurnServerRunner, cid: int, conn: StreamConnection) -> None:
        self.runner = runner
        self.cid = cid
        self.conn = conn
        self.relay = conn.local_endpoint
        self.pending = bytearray()
        self.client: _Client | None = None
        self.pipe: _Pipe | None = None
        conn.set_handler(self.on_data)

    def on_data(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe is not None:
            if data:
                pipe.push(data)
            else:
                self.runner._bridge_ended(self, self.client)
            return
        if not data:
            # Gone before ConnectionBind: nothing to deliver it to (RFC 6062 §5.3).
            self.runner._peer_ended(self)
            return
        # Not bound yet (RFC 6062 §5.2-5.3): hold the peer's bytes, within reason.
        self.pending += data
        if len(self.pending) > self.runner.bridge_buffer:
            self.conn.pause_reading()  # resumed by ConnectionBound


class _Client:
    """A client TCP/TLS connection: framed STUN/ChannelData until it becomes
    an RFC 6062 data connection, raw bytes after."""

    __slots__ = (
        "authenticated",
        "conn",
        "framer",
        "gone",
        "key",
        "last",
        "local",
        "peer",
        "pipe",
        "remote",
        "runner",
        "timer",
        "transport",
    )

    def __init__(self, runner: TurnServerRunner, conn: StreamConnection) -> None:
        self.runner = runner
        self.conn = conn
        self.local = conn.local_endpoint
        self.remote = conn.remote_endpoint
        self.key: ConnKey = (self.local, self.remote)
        self.transport = conn.transport
        self.framer = StreamFramer(channel_data=True)
        self.peer: _Peer | None = None
        self.pipe: _Pipe | None = None
        self.gone = False
        # Until it allocates or is bound (RFC 6062), a connection proved nothing: it
        # counts against its IP's max_unauthenticated_per_ip and idles out sooner.
        self.authenticated = False
        loop = runner._loop
        self.last = loop.time()
        self.timer = loop.call_later(runner.unauthenticated_timeout, self.check_idle)

    def on_data(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe is not None:
            if data:
                pipe.push(data)
            else:
                self.runner._bridge_ended(self.peer, self)
            return
        runner = self.runner
        if not data:
            runner._client_gone(self, "closed by the client")
            return
        if self.gone:
            return
        now = runner._loop.time()
        self.last = now
        framer = self.framer
        try:
            messages = framer.feed(data)
        except MalformedMessageError:
            messages = None
        # ChannelData (first bits 01) needs an allocation on this connection: before
        # one exists, such bytes are something else (an HTTP request starts "GET"),
        # which the framer would otherwise wait for, for up to 64 KiB.
        # (StreamFramer's docstring: the framer cannot tell, this connection's state can.)
        if (
            messages is not None
            and self.key not in runner._stream_allocations
            and (framer.holds_channel_data or any(m[0] >> 6 == 1 for m in messages))
        ):
            messages = None
        if messages is None:
            runner.core.stats.dropped += 1
            runner._client_gone(self, "not STUN or ChannelData", abort=True)
            return
        core = runner.core
        relay_client = core.relay_client_packet
        udp = runner._udp
        local, remote, transport = self.local, self.remote, self.transport
        unflushed = False
        for i, message in enumerate(messages):
            out = relay_client(message, remote, local, now, transport=transport)
            if out is not None:
                ep = udp.get(out.local)
                if ep is not None:
                    ep.send(out.data, out.remote)
                continue
            core.receive_datagram(message, remote, local=local, transport=transport, now=now)
            if message[0] & 0xC0 == 0x40:
                # ChannelData has no answer and cannot bind a connection: one flush
                # for the whole chunk is enough.
                unflushed = True
                continue
            unflushed = False
            runner._flush()
            if self._ended():
                return
            if self.pipe is not None:
                # ConnectionBind succeeded (RFC 6062 §5.4): what follows is raw.
                rest = b"".join(messages[i + 1 :]) + self.framer.take_buffered()
                if rest:
                    self.pipe.push(rest)
                return
        if unflushed:
            runner._flush()
            if self._ended():
                return
        if self.conn.write_buffer_size > runner.max_write_buffer:
            runner._client_gone(self, "does not read its responses", abort=True)

    def _ended(self) -> bool:
        # (A method, so that type checkers re-read the flag after calls into the core.)
        return self.gone

    def write(self, data: bytes) -> None:
        conn = self.conn
        conn.write(data)
        if conn.write_buffer_size > self.runner.max_write_buffer:
            self.runner._client_gone(self, "does not read what is relayed to it", abort=True)

    def check_idle(self) -> None:
        if self.gone:
            return
        runner = self.runner
        now = runner._loop.time()
        if self.pipe is None and self.key not in runner._stream_allocations:
            idle = runner.idle_timeout if self.authenticated else runner.unauthenticated_timeout
            due = self.last + idle
            if now >= due:
                runner._client_gone(self, "idle", abort=True)
                return
            self.timer = runner._loop.call_at(due, self.check_idle)
            return
        # Holding an allocation (its lifetime governs) or bridging: look again later.
        self.timer = runner._loop.call_later(runner.idle_timeout, self.check_idle)


def session_json(info: AllocationInfo, now: float) -> dict[str, Any]:
    """One allocation as ``GET /sessions`` and ``natkit turn sessions --json`` show it."""
    ft = info.five_tuple
    return {
        "id": info.allocation_id,
        "username": info.username,
        "client": str(ft.client),
        "server": str(ft.server),
        "transport": str(ft.transport),
        "relays": [str(r) for r in info.relays],
        "age_s": round(now - info.created, 1),
        "expires_in_s": round(info.expires - now, 1),
        "permissions": list(info.permissions),
        "channels": {f"{n:#06x}": str(peer) for n, peer in sorted(info.channels.items())},
        "packets_in": info.packets_in,
        "packets_out": info.packets_out,
        "bytes_in": info.bytes_in,
        "bytes_out": info.bytes_out,
    }


class TurnServerRunner:
    """``start()``, ``close()``, ``wait_closed()``, or ``async with``.

    ``listen``: ``(transport, endpoint)`` pairs (UDP, TCP, TLS; port 0 picks
    one, see :attr:`endpoints`). ``tls`` is required for TLS listeners.
    ``admin``: where the HTTP admin endpoint listens (None: nowhere).
    ``refresh_credentials``: awaited every ``refresh_interval`` seconds (a
    store mirror's refresh); its failures are logged, never fatal.
    Client TCP/TLS connections: at most ``max_connections`` in all, and at
    most ``max_unauthenticated_per_ip`` (0: no limit) from one IP that have
    not authenticated yet (created an allocation or been bound as an RFC 6062
    data connection), so one host cannot take every slot without
    credentials, while many users behind one NAT still can connect once
    they allocate. Silent unauthenticated ones go after
    ``unauthenticated_timeout``, others holding no allocation after
    ``idle_timeout``.
    """

    def __init__(
        self,
        stack: Stack,
        config: TurnServerConfig,
        credentials: CredentialSource,
        *,
        listen: Sequence[tuple[Transport, Endpoint]],
        tls: ssl.SSLContext | None = None,
        admin: Endpoint | None = None,
        admin_token: str | None = None,
        max_connections: int = 4096,
        idle_timeout: float = 300.0,
        max_unauthenticated_per_ip: int = 256,
        unauthenticated_timeout: float = 30.0,
        max_write_buffer: int = 256 * 1024,
        bridge_buffer: int = 256 * 1024,
        connect_timeout: float = 10.0,
        refresh_credentials: Callable[[], Awaitable[None]] | None = None,
        refresh_interval: float = 5.0,
    ) -> None:
        if not listen:
            raise ValueError("a TURN server needs at least one listener")
        if tls is None and any(t is Transport.TLS for t, _ in listen):
            raise ValueError("TLS listeners need a TLS context")
        # The pool holds at most a quarter of the open files; the core remembers
        # no more released ports than it can hold (one socket parked per port).
        pool = pool_capacity(config.relay_socket_pool, open_file_limit())
        if pool != config.relay_socket_pool:
            config = dataclasses.replace(config, relay_socket_pool=pool)
        self.stack = stack
        self.config = config
        self.core = TurnServer(config, credentials)
        self.listen = list(listen)
        self.tls = tls
        self.admin_endpoint = admin
        self.admin_token = admin_token
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_unauthenticated_per_ip = max_unauthenticated_per_ip
        self.unauthenticated_timeout = unauthenticated_timeout
        self.max_write_buffer = max_write_buffer
        self.bridge_buffer = bridge_buffer
        self.connect_timeout = connect_timeout
        self.refresh_credentials = refresh_credentials
        self.refresh_interval = refresh_interval
        self.counters = RunnerCounters()
        self.metrics_collector = TurnMetrics(
            lambda: self.core.stats,
            allocations=self._allocation_count,
            connections=self._connection_counts,
            peer_connections=lambda: len(self._peers),
            parked_relays=lambda: len(self.relay_pool),
            counters=self.counters,
        )
        self.admin: AdminServer | None = None
        # Every UDP socket (listeners and relays), by local endpoint: where datagrams leave from.
        self._udp: dict[Endpoint, DatagramEndpoint] = {}
        self.udp_listeners: dict[Endpoint, DatagramEndpoint] = {}
        self.stream_listeners: list[tuple[Transport, StreamListener]] = []
        self.relays: dict[Endpoint, DatagramEndpoint] = {}
        self.relay_listeners: dict[Endpoint, StreamListener] = {}
        self._streams: dict[ConnKey, _Client] = {}
        self._stream_allocations: set[ConnKey] = set()
        self._unauthenticated: dict[str, int] = {}  # remote IP -> such connections
        self._peers: dict[int, _Peer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing_sockets: list[DatagramEndpoint | StreamListener] = []
        self._loop = asyncio.get_running_loop()  # construct inside the loop that runs it
        self._timer = CoreTimer(self.core, self._flush)
        self.relay_pool = RelaySocketPool(self._loop, config.relay_socket_pool)
        # A stack that binds UDP without awaiting (OsStack.open_udp_now) opens relay
        # sockets inline: no task and no loop iteration per allocation.
        self._open_udp_now: _OpenUdpNow | None = getattr(stack, "open_udp_now", None)
        self._started = False
        self._closing = False
        self._closed = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def endpoints(self) -> list[tuple[Transport, Endpoint]]:
        """The listeners as bound (ports resolved when 0 was asked for)."""
        out: list[tuple[Transport, Endpoint]] = [(_UDP, ep) for ep in self.udp_listeners]
        out.extend((t, listener.local_endpoint) for t, listener in self.stream_listeners)
        return out

    def endpoint(self, transport: Transport) -> Endpoint:
        """The first bound listener of ``transport``."""
        for t, ep in self.endpoints:
            if t is transport:
                return ep
        raise LookupError(f"no {transport} listener")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        try:
            for transport, local in self.listen:
                if transport is _UDP:
                    holder: list[Endpoint] = [local]
                    ep = await self.stack.open_udp(local, self._client_udp_handler(holder))
                    holder[0] = ep.local_endpoint
                    self.udp_listeners[ep.local_endpoint] = ep
                    self._udp[ep.local_endpoint] = ep
                elif transport.is_stream:
                    tls = self.tls if transport is Transport.TLS else None
                    listener = await self.stack.listen_stream(local, self._on_client, tls=tls)
                    self.stream_listeners.append((transport, listener))
                else:
                    raise ValueError(f"cannot listen on {transport}")
            if self.admin_endpoint is not None:
                self.admin = AdminServer(
                    self.stack, self.admin_endpoint, self, token=self.admin_token
                )
                await self.admin.start()
            if self.refresh_credentials is not None:
                self._spawn(self._refresh_loop(self.refresh_credentials))
        except BaseException:
            self.close()
            raise
        self._timer.arm()

    def close(self) -> None:
        """Stop accepting, end every allocation (``core.shutdown``), close every socket."""
        if self._closing:
            return
        self._closing = True
        for _, listener in self.stream_listeners:
            listener.close()
            self._closing_sockets.append(listener)
        if self._started:
            self.core.shutdown(now=self._loop.time())
            self._flush()
        self._timer.close()
        for task in list(self._tasks):
            task.cancel()
        for cid in list(self._peers):
            self._release_peer(cid)
        for client in list(self._streams.values()):
            stuck = client.conn.write_buffer_size > self.max_write_buffer
            self._client_gone(client, "server shutting down", abort=stuck)
        for relay in list(self.relays):
            self._close_relay(relay, _UDP)
        for relay in list(self.relay_listeners):
            self._close_relay(relay, _TCP)
        self._closing_sockets.extend(self.relay_pool.close())
        for ep in self.udp_listeners.values():
            ep.close()
            self._closing_sockets.append(ep)
        self._udp.clear()
        if self.admin is not None:
            self.admin.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        """After :meth:`close`: return once every socket is released."""
        await self._closed.wait()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for sock in self._closing_sockets:
            with contextlib.suppress(Exception):
                await sock.wait_closed()
        self._closing_sockets.clear()
        if self.admin is not None:
            await self.admin.wait_closed()

    async def __aenter__(self) -> TurnServerRunner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    # -- the core's outputs ------------------------------------------------------------

    def _flush(self) -> None:
        """Send what the core queued, handle its events, re-arm the timer."""
        core = self.core
        send = self._send
        for datagram in core.datagrams_to_send():
            send(datagram)
        while (event := core.next_event()) is not None:
            self._on_event(event)
        self._timer.arm()

    def _send(self, dg: TurnDatagram) -> None:
        if dg.transport is _UDP:
            ep = self._udp.get(dg.local)
            if ep is not None:
                ep.send(dg.data, dg.remote)
            else:
                log.debug("no UDP socket at %s; dropping a datagram for %s", dg.local, dg.remote)
            return
        client = self._streams.get((dg.local, dg.remote))
        if client is not None and not client.gone:
            client.write(dg.data)

    def _on_event(self, event: TurnServerEvent) -> None:
        match event:
            case RelayRequested():
                if self._closing:
                    self.core.relay_failed(event.request_id, now=self._loop.time())
                elif self._open_udp_now is not None and event.transport is _UDP:
                    self._open_relays_now(event, self._open_udp_now)
                else:
                    self._spawn(self._open_relays(event))
            case RelayReleased(relay=relay, transport=transport):
                self._close_relay(relay, transport)
            case PeerConnectRequested():
                if self._closing:
                    self.core.peer_connect_failed(event.connection_id, now=self._loop.time())
                else:
                    self._spawn(self._connect_peer(event))
            case ConnectionBound(connection_id=cid, data_connection=ft):
                self._bind_connection(cid, (ft.server, ft.client))
            case PeerConnectionReleased(connection_id=cid):
                self._release_peer(cid)
            case AllocationCreated(five_tuple=ft):
                if ft.transport.is_stream:
                    self._stream_allocations.add((ft.server, ft.client))
                    client = self._streams.get((ft.server, ft.client))
                    if client is not None:
                        self._authenticated(client)
                if log.isEnabledFor(logging.INFO):  # the join costs even when not logged
                    log.info(
                        "allocation %d for %s from %s over %s: relays %s",
                        event.allocation_id,
                        event.username,
                        ft.client,
                        ft.transport,
                        ", ".join(str(r) for r in event.relays),
                    )
            case AllocationDeleted(five_tuple=ft):
                self.counters.observe(event)
                key = (ft.server, ft.client)
                self._stream_allocations.discard(key)
                log.info("allocation %d deleted: %s", event.allocation_id, event.reason)
                if event.reason == "kicked" and ft.transport.is_stream:
                    client = self._streams.get(key)
                    if client is not None:
                        self._client_gone(client, "kicked", abort=True)
            case AuthenticationFailed():
                log.debug(
                    "authentication failed for %s (%s): %d",
                    event.client,
                    event.username,
                    event.code,
                )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("TURN runner task failed", exc_info=task.exception())

    # -- UDP ---------------------------------------------------------------------------

    def _client_udp_handler(self, holder: list[Endpoint]) -> Callable[[bytes, Endpoint], None]:
        core = self.core
        relay_client = core.relay_client_packet
        receive = core.receive_datagram
        udp = self._udp
        time = self._loop.time
        flush = self._flush

        def on_datagram(data: bytes, client: Endpoint) -> None:
            local = holder[0]
            out = relay_client(data, client, local, time(), transport=_UDP)
            if out is not None:
                ep = udp.get(out.local)
                if ep is not None:
                    ep.send(out.data, out.remote)
                return
            receive(data, client, local=local, transport=_UDP, now=time())
            flush()

        return on_datagram

    def _relay_udp_handler(self, holder: list[Endpoint]) -> Callable[[bytes, Endpoint], None]:
        core = self.core
        relay_peer = core.relay_peer_packet
        receive = core.receive_peer_datagram
        udp = self._udp
        time = self._loop.time
        flush = self._flush
        send = self._send

        def on_datagram(data: bytes, peer: Endpoint) -> None:
            relay = holder[0]
            out = relay_peer(data, peer, relay, time())
            if out is not None:
                if out.transport is _UDP:
                    ep = udp.get(out.local)
                    if ep is not None:
                        ep.send(out.data, out.remote)
                else:
                    send(out)
                return
            receive(data, peer, relay=relay, now=time())
            flush()

        return on_datagram

    def _relay_icmp_handler(self, holder: list[Endpoint]) -> IcmpHandler:
        """ICMP errors for what a relay sent to a peer, where the stack reports
        them: a Data indication with the ICMP attribute (RFC 8656 §11.5)."""
        core = self.core
        time = self._loop.time
        flush = self._flush

        def on_icmp(peer: Endpoint, icmp_type: int, icmp_code: int, info: int) -> None:
            core.peer_icmp(
                holder[0],
                peer,
                icmp_type=icmp_type,
                icmp_code=icmp_code,
                error_data=info,
                now=time(),
            )
            flush()

        return on_icmp

    def _open_relays_now(self, event: RelayRequested, open_now: _OpenUdpNow) -> None:
        """:meth:`_open_relays` for UDP on a stack that binds without awaiting
        (``OsStack.open_udp_now``): no task, no loop iteration per allocation."""
        opened: list[tuple[Endpoint, DatagramEndpoint | StreamListener]] = []
        wanted = list(event.relays)
        if event.reserve is not None:
            wanted.append(event.reserve)
        try:
            for local in wanted:
                held = self._held_udp(local)
                if held is not None:
                    opened.append((local, held))
                    continue
                holder = [local]
                udp = open_now(
                    local,
                    self._relay_udp_handler(holder),
                    on_icmp=self._relay_icmp_handler(holder),
                )
                holder[0] = udp.local_endpoint
                opened.append((udp.local_endpoint, udp))
        except (TransportError, OSError) as exc:
            self._relays_failed(event, wanted, opened, exc)
            return
        self._relays_opened(event, opened)

    def _held_udp(self, local: Endpoint) -> DatagramEndpoint | None:
        """A UDP socket already bound at ``local``: a reservation's (RFC 8656
        §14.2), now used, or a parked one (``relay_pool``), now taken."""
        held = self.relays.get(local)
        return held if held is not None else self.relay_pool.take(local)

    def _relays_failed(
        self,
        event: RelayRequested,
        wanted: list[Endpoint],
        opened: list[tuple[Endpoint, DatagramEndpoint | StreamListener]],
        exc: Exception,
    ) -> None:
        log.warning("cannot open relay %s: %s", ", ".join(map(str, wanted)), exc)
        self._close_unregistered(opened)
        self.counters.relay_bind_failures += 1
        if not self._closing:
            self.core.relay_failed(event.request_id, now=self._loop.time())
            self._flush()

    def _relays_opened(
        self,
        event: RelayRequested,
        opened: list[tuple[Endpoint, DatagramEndpoint | StreamListener]],
    ) -> None:
        if self._closing:
            for _, bound in opened:
                bound.close()
            return
        # Every socket of one request is of the event's transport (a reservation's
        # too: UDP only), so no per-socket isinstance() on the Protocol class,
        # which costs microseconds per allocation.
        if event.transport is _TCP:
            for local, bound in opened:
                self.relay_listeners[local] = bound
        else:
            for local, bound in opened:
                self.relays[local] = self._udp[local] = cast(DatagramEndpoint, bound)
        relays = tuple(local for local, _ in opened[: len(event.relays)])
        self.core.relay_opened(event.request_id, relays, now=self._loop.time())
        self._flush()

    async def _open_relays(self, event: RelayRequested) -> None:
        """Bind the relay sockets the core asked for; answer relay_opened/failed."""
        opened: list[tuple[Endpoint, DatagramEndpoint | StreamListener]] = []
        wanted = list(event.relays)
        if event.reserve is not None:
            wanted.append(event.reserve)
        try:
            for local in wanted:
                held = self._held_udp(local) if event.transport is _UDP else None
                if held is not None:
                    opened.append((local, held))
                    continue
                if event.transport is _TCP:
                    listener = await self.stack.listen_stream(
                        local, self._peer_acceptor(local), reuse_port=True
                    )
                    opened.append((listener.local_endpoint, listener))
                else:
                    holder = [local]
                    udp = await self.stack.open_udp(
                        local,
                        self._relay_udp_handler(holder),
                        on_icmp=self._relay_icmp_handler(holder),
                    )
                    holder[0] = udp.local_endpoint
                    opened.append((udp.local_endpoint, udp))
        except (TransportError, OSError) as exc:
            self._relays_failed(event, wanted, opened, exc)
            return
        except BaseException:  # cancelled by close(): nothing may stay bound
            self._close_unregistered(opened)
            raise
        self._relays_opened(event, opened)

    def _close_unregistered(
        self, opened: list[tuple[Endpoint, DatagramEndpoint | StreamListener]]
    ) -> None:
        for local, bound in opened:
            if self.relays.get(local) is not bound:
                bound.close()
                if self._closing:
                    self._closing_sockets.append(bound)

    def _close_relay(self, relay: Endpoint, transport: Transport) -> None:
        sock: DatagramEndpoint | StreamListener | None
        if transport is _TCP:
            sock = self.relay_listeners.pop(relay, None)
        else:
            sock = self.relays.pop(relay, None)
            self._udp.pop(relay, None)
            if sock is not None and not self._closing and self.relay_pool.park(relay, sock):
                return
        if sock is not None:
            sock.close()
            if self._closing:
                self._closing_sockets.append(sock)

    # -- client streams ------------------------------------------------------------------

    def _on_client(self, conn: StreamConnection) -> None:
        host = conn.remote_endpoint.host
        cap = self.max_unauthenticated_per_ip
        if (
            self._closing
            or len(self._streams) >= self.max_connections
            or (cap and self._unauthenticated.get(host, 0) >= cap)
        ):
            self.counters.connections_rejected += 1
            conn.abort()
            return
        client = _Client(self, conn)
        self._streams[client.key] = client
        self._unauthenticated[host] = self._unauthenticated.get(host, 0) + 1
        conn.set_handler(client.on_data)

    def _authenticated(self, client: _Client) -> None:
        """``client`` created an allocation or became a data connection."""
        if not client.authenticated:
            client.authenticated = True
            self._uncount(client.remote.host)

    def _uncount(self, host: str) -> None:
        left = self._unauthenticated.pop(host, 0) - 1
        if left > 0:
            self._unauthenticated[host] = left

    def _client_gone(self, client: _Client, why: str, *, abort: bool = False) -> None:
        """A client connection ended (or is being ended): forget it, tell the core."""
        if client.gone:
            return
        client.gone = True
        client.timer.cancel()
        if self._streams.get(client.key) is client:
            del self._streams[client.key]
            if not client.authenticated:
                self._uncount(client.remote.host)
        log.debug("client connection %s: %s", client.remote, why)
        if abort:
            client.conn.abort()
        else:
            client.conn.close()
        if client.peer is not None:
            self._release_peer(client.peer.cid)
        if not self._closing:
            self.core.stream_closed(client.remote, local=client.local, now=self._loop.time())
            self._flush()

    def _allocation_count(self) -> int:
        stats = self.core.stats
        return stats.allocations_created - stats.allocations_deleted

    def _connection_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for client in self._streams.values():
            counts[str(client.transport)] = counts.get(str(client.transport), 0) + 1
        return counts

    # -- RFC 6062 --------------------------------------------------------------------------

    def _peer_acceptor(self, relay: Endpoint) -> Callable[[StreamConnection], None]:
        def on_connection(conn: StreamConnection) -> None:
            if self._closing:
                conn.abort()
                return
            cid = self.core.peer_connection_accepted(
                relay, conn.remote_endpoint, now=self._loop.time()
            )
            if cid is None:
                conn.abort()
            else:
                self._peers[cid] = _Peer(self, cid, conn)
            self._flush()

        return on_connection

    async def _connect_peer(self, event: PeerConnectRequested) -> None:
        stack, peer, relay = self.stack, event.peer, event.relay
        try:
            # RFC 6062 §5.2: from the relayed transport address itself, which the
            # relay's listener holds (both are opened with reuse_port).
            conn = await stack.connect_stream(
                peer, local=relay, timeout=self.connect_timeout, reuse_port=True
            )
        except TransportError as exc:
            log.info("RFC 6062 connect %s -> %s failed: %s", relay, peer, exc)
            if not self._closing:
                self.core.peer_connect_failed(event.connection_id, now=self._loop.time())
                self._flush()
            return
        cid = event.connection_id
        if self._closing or not self.core.peer_connected(cid, now=self._loop.time()):
            # Shutting down, or the core gave up on it meanwhile (its allocation went
            # while connecting: the PeerConnectionReleased found nothing to close).
            conn.abort()
            return
        self._peers[cid] = _Peer(self, cid, conn)
        self._flush()

    def _bind_connection(self, cid: int, key: ConnKey) -> None:
        """ConnectionBound: pipe the data connection and the peer connection."""
        peer = self._peers.get(cid)
        client = self._streams.get(key)
        if peer is None or client is None:
            if client is not None:
                self._client_gone(client, "its peer connection is gone")
            if peer is not None:
                self._release_peer(cid)
            return
        peer.client = client
        client.peer = peer
        self._authenticated(client)
        client.pipe = _Pipe(client.conn, peer.conn, self.bridge_buffer)
        peer.pipe = _Pipe(peer.conn, client.conn, self.bridge_buffer)
        pending, peer.pending = bytes(peer.pending), bytearray()
        if pending:
            peer.pipe.push(pending)
        if not peer.pipe.paused:
            peer.conn.resume_reading()  # paused while unbound, if it sent too much

    def _bridge_ended(self, peer: _Peer | None, client: _Client | None) -> None:
        """One side of a bridge closed: close the other, tell the core."""
        if peer is not None:
            self._peer_ended(peer)
        if client is not None:
            self._client_gone(client, "bridge closed")

    def _peer_ended(self, peer: _Peer) -> None:
        if self._peers.get(peer.cid) is not peer:
            return
        if not self._closing:
            self.core.peer_connection_closed(peer.cid, now=self._loop.time())
        self._release_peer(peer.cid)
        self._flush()

    def _release_peer(self, cid: int) -> None:
        peer = self._peers.pop(cid, None)
        if peer is None:
            return
        for pipe in (peer.pipe, peer.client.pipe if peer.client else None):
            if pipe is not None:
                pipe.cancel()
        peer.conn.close()
        client = peer.client
        if client is not None:
            client.peer = None
            self._client_gone(client, "peer connection released")

    # -- credentials ---------------------------------------------------------------------

    async def _refresh_loop(self, refresh: Callable[[], Awaitable[None]]) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await refresh()
            except Exception as exc:  # a store outage must not stop relaying
                if not failing:  # once per outage, not every few seconds
                    log.warning("credential refresh failed (keeping the last ones): %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("credential refresh works again")
                failing = False

    # -- admin (natkit.net.admin.AdminApp) -------------------------------------------------

    def metrics(self) -> tuple[bytes, str]:
        return self.metrics_collector.render(), CONTENT_TYPE

    def sessions(self) -> list[dict[str, Any]]:
        now = self._loop.time()
        return [session_json(info, now) for info in self.core.allocations()]

    def kick(self, session_id: int) -> bool:
        if not any(a.allocation_id == session_id for a in self.core.allocations()):
            return False
        self.core.kick(session_id, now=self._loop.time())
        self._flush()
        return True

    def healthy(self) -> bool:
        return self._started and not self._closing
