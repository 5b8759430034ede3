"""Awaitable TURN client over UDP, TCP or TLS on any stack.

:class:`AsyncTurnClient` drives one :class:`~natkit.turn.client.TurnClient`
(the protocol: transactions, authentication, refresh schedules, channel and
permission bookkeeping all live there) with the generic
:class:`~natkit.net.driver.CoreDriver`: after every call into the core its
datagrams are sent, its events turned into resolved futures, and its one
timer re-armed on the loop. It uses only the :class:`~natkit.net.stack.Stack`
interface, so the same code runs on the OS stack and on the simulated
internet under the virtual clock.

Over TCP/TLS a 300 Try Alternate cannot be followed on the same connection:
:meth:`AsyncTurnClient.allocate` connects to the alternate (TLS names from
ALTERNATE-DOMAIN when given) and allocates there with a fresh core.

RFC 6062: :meth:`AsyncTurnClient.connect_peer` (Connect) and
:meth:`AsyncTurnClient.accept_peer` (ConnectionAttempt) open a data
connection to the server, bind it with :class:`TurnConnectionBinder`, and
return it as a :class:`TurnPeerConnection` carrying the peer's bytes.
ConnectionAttempts wait for ``accept_peer`` in a bounded queue
(``attempt_queue_size``): any peer with a permission can connect to the
relayed address, and an application that never accepts must not pile them
up. Past the bound an attempt is ignored (RFC 6062 has no refusal: the
server closes a peer connection nobody binds within 30 s, §5.3), counted
in :attr:`AsyncTurnClient.ignored_attempts` and logged once; attempts older
than those 30 s are dropped unaccepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import (
    LocalProtocolError,
    MalformedMessageError,
    TransactionError,
    TransportError,
)
from natkit.net.driver import CoreDriver, StreamSender
from natkit.net.stack import DatagramEndpoint, DataHandler, Stack, StreamConnection
from natkit.stun.framing import StreamFramer
from natkit.stun.transaction import LongTermCredentials
from natkit.turn.attributes import TransportProtocol
from natkit.turn.client import ClientState, TurnClient, TurnClientConfig, TurnConnectionBinder
from natkit.turn.client_events import (
    Allocated,
    AllocationFailed,
    AllocationLost,
    AllocationReleased,
    ChannelBindFailed,
    ChannelBound,
    ConnectFailed,
    ConnectionAttempted,
    DataConnectionBound,
    DataConnectionFailed,
    DataReceived,
    PeerConnected,
    PermissionCreated,
    PermissionFailed,
    Redirected,
    TurnClientEvent,
)

__all__ = ["AsyncTurnClient", "TurnPeerConnection", "TurnRequestError"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

DataCallback = Callable[[bytes, Endpoint], None]

# RFC 6062 §5.3: the server closes a peer connection not bound within 30 s.
_ATTEMPT_LIFETIME = 30.0


class TurnRequestError(TransactionError):
    """A TURN request was refused or went unanswered; ``code`` is the STUN
    error code (None: no usable response)."""

    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message if code is None else f"{code} {message}")
        self.code = code


class TurnPeerConnection:
    """An RFC 6062 data connection after ConnectionBind: a
    :class:`~natkit.net.stack.StreamConnection` whose remote is the peer."""

    def __init__(self, conn: StreamConnection, peer: Endpoint, connection_id: int) -> None:
        self._conn = conn
        self.peer = peer
        self.connection_id = connection_id
        self._handler: DataHandler | None = None
        self._pending: list[bytes] = []

    def _on_data(self, data: bytes) -> None:
        if self._handler is None:
            self._pending.append(data)
        else:
            self._handler(data)

    @property
    def local_endpoint(self) -> Endpoint:
        return self._conn.local_endpoint

    @property
    def remote_endpoint(self) -> Endpoint:
        return self.peer

    @property
    def transport(self) -> Transport:
        return self._conn.transport

    def set_handler(self, on_data: DataHandler) -> None:
        self._handler = on_data
        pending, self._pending = self._pending, []
        for chunk in pending:
            on_data(chunk)

    def write(self, data: bytes) -> None:
        self._conn.write(data)

    async def drain(self) -> None:
        await self._conn.drain()

    def close(self) -> None:
        self._conn.close()

    def abort(self) -> None:
        self._conn.abort()

    async def wait_closed(self) -> None:
        await self._conn.wait_closed()

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def read(self) -> bytes:
        """The next chunk of the peer's bytes (``b""`` at end of stream); a
        convenience for callers that did not set a handler."""
        if self._pending:
            return self._pending.pop(0)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def once(data: bytes) -> None:
            self._handler = None
            if not fut.done():
                fut.set_result(data)
            else:
                self._pending.append(data)

        self._handler = once
        return await fut


def _wildcard(server: Endpoint) -> Endpoint:
    return Endpoint("::", 0) if server.family == Family.IPV6 else Endpoint("0.0.0.0", 0)


class AsyncTurnClient:
    """One TURN allocation (see the module docstring). Build with :meth:`connect`."""

    def __init__(
        self,
        stack: Stack,
        server: Endpoint,
        *,
        transport: Transport = Transport.UDP,
        credentials: LongTermCredentials | tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local: Endpoint | None = None,
        config: TurnClientConfig | None = None,
        on_data: DataCallback | None = None,
        on_event: Callable[[TurnClientEvent], None] | None = None,
        queue_size: int = 1024,
        attempt_queue_size: int = 32,
    ) -> None:
        if transport not in (Transport.UDP, Transport.TCP, Transport.TLS):
            raise LocalProtocolError(f"TURN over {transport} is not supported")
        if transport == Transport.TLS and tls is None:
            tls = ssl.create_default_context()
        if isinstance(credentials, tuple):
            credentials = LongTermCredentials(*credentials)
        self.stack = stack
        self.transport = transport
        self.credentials = credentials
        self._tls = tls if transport == Transport.TLS else None
        self._server_hostname = server_hostname
        self._hostname = server_hostname
        self._local = local
        self.config = dataclasses.replace(config or TurnClientConfig(), stream=transport.is_stream)
        self.on_data = on_data
        self.on_event = on_event
        self.allocation: Allocated | None = None
        self.dropped = 0  # received data discarded because the recv() queue was full
        self.ignored_attempts = 0  # ConnectionAttempts past attempt_queue_size (RFC 6062)
        self._server = server
        self._tried: list[Endpoint] = [server]
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[bytes, Endpoint] | None] = asyncio.Queue(queue_size)
        self._attempt_queue_size = attempt_queue_size
        self._attempts: deque[tuple[float, ConnectionAttempted]] = deque()  # (received, attempt)
        self._attempt_waiters: deque[asyncio.Future[ConnectionAttempted]] = deque()
        self._allocate_fut: asyncio.Future[Allocated | Redirected] | None = None
        self._release_fut: asyncio.Future[bool] | None = None
        self._permission_futs: dict[int, asyncio.Future[None]] = {}
        self._channel_futs: dict[int, asyncio.Future[int]] = {}
        self._connect_futs: dict[int, asyncio.Future[PeerConnected]] = {}
        self._closed = False
        self._lost: AllocationLost | None = None
        self.core: TurnClient
        self.driver: CoreDriver[TurnClientEvent]
        self._sender: DatagramEndpoint | StreamSender
        self._udp: DatagramEndpoint | None = None
        self._conn: StreamConnection | None = None
        self._ready = False  # core and driver exist (a stray datagram may come first)

    @classmethod
    async def connect(
        cls,
        stack: Stack,
        server: Endpoint,
        *,
        transport: Transport = Transport.UDP,
        credentials: LongTermCredentials | tuple[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local: Endpoint | None = None,
        config: TurnClientConfig | None = None,
        on_data: DataCallback | None = None,
        on_event: Callable[[TurnClientEvent], None] | None = None,
        attempt_queue_size: int = 32,
    ) -> AsyncTurnClient:
        """Open the transport to ``server`` (a UDP socket on ``local``, or a
        TCP/TLS connection from it). Nothing is sent until :meth:`allocate`.
        ``attempt_queue_size``: RFC 6062 ConnectionAttempts kept for
        :meth:`accept_peer` (more are ignored)."""
        client = cls(
            stack,
            server,
            transport=transport,
            credentials=credentials,
            tls=tls,
            server_hostname=server_hostname,
            local=local,
            config=config,
            on_data=on_data,
            on_event=on_event,
            attempt_queue_size=attempt_queue_size,
        )
        await client._open(server, server_hostname)
        return client

    async def _open(self, server: Endpoint, server_hostname: str | None) -> None:
        core = TurnClient(server, self.credentials, self.config)
        self._server = server
        self._hostname = server_hostname  # data connections (RFC 6062) check the same name
        if self.transport == Transport.UDP:
            if self._udp is None:  # one socket for the client's life, redirects included
                self._udp = await self.stack.open_udp(
                    self._local or _wildcard(server), self._on_datagram
                )
            self.core, self._sender = core, self._udp
            self.driver = CoreDriver(core, {None: self._udp}, self._on_event)
            self._ready = True
            return
        conn = await self.stack.connect_stream(
            server, tls=self._tls, server_hostname=server_hostname, local=self._local
        )
        sender = StreamSender(conn)
        driver: CoreDriver[TurnClientEvent] = CoreDriver(core, {None: sender}, self._on_event)
        framer = StreamFramer(channel_data=True)

        def on_stream(data: bytes) -> None:
            now = self._loop.time()
            if not data:
                core.transport_closed(now=now)
                driver.flush()
                return
            try:
                messages = framer.feed(data)
            except MalformedMessageError:
                conn.abort()
                core.transport_closed(now=now)
                driver.flush()
                return
            for message in messages:
                got = core.parse_incoming(message, server)
                if got is not None:
                    self._deliver(got[1], got[0])
                else:
                    core.receive_datagram(message, server, now=now)
            driver.flush()

        self.core, self.driver, self._sender, self._conn = core, driver, sender, conn
        self._ready = True
        conn.set_handler(on_stream)

    def _on_datagram(self, data: bytes, addr: Endpoint) -> None:
        if not self._ready:
            return
        core = self.core
        got = core.parse_incoming(data, addr)
        if got is not None:
            self._deliver(got[1], got[0])
            return
        core.receive_datagram(data, addr, now=self._loop.time())
        self.driver.flush()

    # -- commands --------------------------------------------------------------------

    @property
    def server(self) -> Endpoint:
        """The server holding (or being asked for) the allocation."""
        return self.core.server

    @property
    def relayed(self) -> Endpoint:
        if self.allocation is None:
            raise LocalProtocolError("no allocation yet")
        return self.allocation.relayed_endpoint

    async def allocate(
        self,
        *,
        lifetime: int | None = None,
        family: Family = Family.IPV4,
        additional_family: Family | None = None,
        even_port: bool | None = None,
        reservation_token: bytes | None = None,
        dont_fragment: bool = False,
        transport: TransportProtocol | Transport = TransportProtocol.UDP,
    ) -> Allocated:
        """Allocate a relay (RFC 8656 §7; RFC 6062 with ``transport=TCP``).

        Raises :class:`TurnRequestError` when the server refuses (after
        authentication retries and redirects) or never answers.
        """
        relay = (
            TransportProtocol.TCP
            if transport in (TransportProtocol.TCP, Transport.TCP)
            else (TransportProtocol.UDP)
        )
        fut = self._new_allocate_future()
        self.core.allocate(
            now=self._loop.time(),
            lifetime=lifetime,
            family=family,
            additional_family=additional_family,
            even_port=even_port,
            reservation_token=reservation_token,
            dont_fragment=dont_fragment,
            transport=relay,
        )
        self.driver.flush()
        while True:
            result = await fut
            if isinstance(result, Allocated):
                self.allocation = result
                return result
            # A stream client was redirected: reconnect and start over there.
            # _tried holds the first server too: len - 1 redirects were followed.
            redirects = len(self._tried) - 1
            if result.alternate in self._tried or redirects >= self.config.max_redirects:
                raise TurnRequestError(
                    f"redirect loop or too many redirects ({result.alternate})", 300
                )
            self._tried.append(result.alternate)
            params = self.core.allocate_params
            assert params is not None  # the redirected core was allocating
            self._close_transport()
            try:
                await self._open(result.alternate, result.alternate_domain or self._server_hostname)
            except (TransportError, OSError) as exc:
                raise TurnRequestError(f"cannot reach {result.alternate}: {exc}", 300) from exc
            fut = self._new_allocate_future()
            self.core.allocate_with(params, now=self._loop.time())
            self.driver.flush()

    async def refresh(self, lifetime: int | None = None) -> None:
        """Refresh now (the core also does it on schedule)."""
        self.core.refresh(now=self._loop.time(), lifetime=lifetime)
        self.driver.flush()

    async def create_permission(self, *peers: str | Endpoint) -> None:
        """Install (and keep) permissions for the IPs of ``peers`` (RFC 8656 §9)."""
        rid = self.core.create_permission(peers, now=self._loop.time())
        fut: asyncio.Future[None] = self._loop.create_future()
        self._permission_futs[rid] = fut
        self.driver.flush()
        await fut

    async def bind_channel(self, peer: Endpoint) -> int:
        """Bind (and keep) a channel to ``peer``; returns its number (RFC 8656 §12)."""
        number = self.core.bind_channel(peer, now=self._loop.time())
        if self.core.channel_for(peer) == number:
            return number
        fut = self._channel_futs.get(number)
        if fut is None:
            fut = self._channel_futs[number] = self._loop.create_future()
        self.driver.flush()
        return await asyncio.shield(fut)

    def send_to(self, data: bytes, peer: Endpoint) -> None:
        """Relay ``data`` to ``peer`` (permission and channel on demand)."""
        if self._closed:
            raise LocalProtocolError("the TURN client is closed")
        core = self.core
        wire = core.channel_frame(data, peer)
        if wire is not None:  # the hot path: the core has nothing else queued
            self._sender.send(wire, core.server)
            return
        core.send_to(data, peer, now=self._loop.time())
        self.driver.flush()

    async def recv(self) -> tuple[bytes, Endpoint]:
        """The next ``(data, peer)`` relayed to us (unless ``on_data`` takes them).

        Raises :class:`TransactionError` once the allocation is lost or closed.
        """
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # wake the next reader too
            raise TransactionError(self._end_reason())
        return item

    async def connect_peer(self, peer: Endpoint) -> TurnPeerConnection:
        """RFC 6062 §4.3: Connect to TCP ``peer`` through the relay, then bind a
        data connection to it."""
        rid = self.core.connect(peer, now=self._loop.time())
        fut: asyncio.Future[PeerConnected] = self._loop.create_future()
        self._connect_futs[rid] = fut
        self.driver.flush()
        connected = await fut
        return await self._bind_data_connection(connected.connection_id, peer)

    async def accept_peer(self) -> TurnPeerConnection:
        """RFC 6062 §4.4: wait for a ConnectionAttempt (the oldest one waiting
        that the server has not given up on yet) and bind a data connection
        to it. Raises :class:`TransactionError` once the allocation is lost
        or the client closed."""
        self._drop_stale_attempts(self._loop.time())
        if self._attempts:
            attempt = self._attempts.popleft()[1]
        else:
            if self._closed or self._lost is not None:
                raise TransactionError(self._end_reason())
            waiter: asyncio.Future[ConnectionAttempted] = self._loop.create_future()
            self._attempt_waiters.append(waiter)
            attempt = await waiter
        return await self._bind_data_connection(attempt.connection_id, attempt.peer)

    @property
    def pending_attempts(self) -> int:
        """ConnectionAttempts waiting for :meth:`accept_peer`."""
        self._drop_stale_attempts(self._loop.time())
        return len(self._attempts)

    async def close(self, *, timeout: float = 5.0) -> None:
        """Release the allocation (Refresh LIFETIME 0), waiting at most
        ``timeout`` seconds for the answer, then close the transport."""
        if self._closed:
            return
        if self.core.state is ClientState.ALLOCATED:
            fut: asyncio.Future[bool] = self._loop.create_future()
            self._release_fut = fut
            self.core.release(now=self._loop.time())
            self.driver.flush()
            with contextlib.suppress(TimeoutError, TransactionError):
                await asyncio.wait_for(asyncio.shield(fut), timeout)
        self._closed = True
        conn = self._conn
        self._close_transport()
        self._fail_all(TransactionError("client closed"))
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        if self._udp is not None:
            self._udp.close()
            await self._udp.wait_closed()
        if conn is not None:
            # close() lets queued bytes go first; a server that stops reading
            # could hold that forever, so it gets a second, then a reset.
            try:
                await asyncio.wait_for(asyncio.shield(conn.wait_closed()), 1.0)
            except TimeoutError:
                conn.abort()
            except (TransportError, OSError):
                pass

    async def abort(self) -> None:
        """Close the transport without releasing the allocation (as a crash
        would): the server keeps it until it expires."""
        if self._closed:
            return
        self._closed = True
        self._close_transport()
        self._fail_all(TransactionError("client aborted"))
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        if self._udp is not None:
            self._udp.close()
            await self._udp.wait_closed()

    async def __aenter__(self) -> AsyncTurnClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- internals -------------------------------------------------------------------

    def _new_allocate_future(self) -> asyncio.Future[Allocated | Redirected]:
        fut: asyncio.Future[Allocated | Redirected] = self._loop.create_future()
        self._allocate_fut = fut
        return fut

    def _close_transport(self) -> None:
        self.driver.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _end_reason(self) -> str:
        if self._lost is not None:
            return f"allocation lost: {self._lost.reason}"
        return "client closed"

    def _deliver(self, data: bytes, peer: Endpoint) -> None:
        if self.on_data is not None:
            self.on_data(data, peer)
            return
        try:
            self._queue.put_nowait((data, peer))
        except asyncio.QueueFull:
            self.dropped += 1

    def _on_event(self, event: TurnClientEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)
        match event:
            case DataReceived(peer=peer, data=data):
                self._deliver(data, peer)
            case Allocated() | Redirected(followed=False):
                self._resolve(self._allocate_fut, event)
            case Redirected():
                log.info("redirected from %s to %s", event.previous, event.alternate)
            case AllocationFailed(code=code, reason=reason):
                self._reject(self._allocate_fut, TurnRequestError(f"Allocate: {reason}", code))
            case PermissionCreated(request_id=rid) if rid is not None:
                self._resolve(self._permission_futs.pop(rid, None), None)
            case PermissionFailed(request_id=rid, code=code, reason=reason) if rid is not None:
                err = TurnRequestError(f"CreatePermission: {reason}", code)
                self._reject(self._permission_futs.pop(rid, None), err)
            case ChannelBound(channel=number):
                self._resolve(self._channel_futs.pop(number, None), number)
            case ChannelBindFailed(channel=number, code=code, reason=reason):
                err = TurnRequestError(f"ChannelBind: {reason}", code)
                self._reject(self._channel_futs.pop(number, None), err)
            case PeerConnected(request_id=rid):
                self._resolve(self._connect_futs.pop(rid, None), event)
            case ConnectFailed(request_id=rid, code=code, reason=reason):
                self._reject(
                    self._connect_futs.pop(rid, None), TurnRequestError(f"Connect: {reason}", code)
                )
            case ConnectionAttempted():
                self._on_attempt(event)
            case AllocationLost():
                self._lost = event
                self._fail_all(TurnRequestError(f"allocation lost: {event.reason}", event.code))
                with contextlib.suppress(asyncio.QueueFull):
                    self._queue.put_nowait(None)
            case AllocationReleased(confirmed=confirmed):
                self._resolve(self._release_fut, confirmed)
            case _:
                pass

    def _on_attempt(self, attempt: ConnectionAttempted) -> None:
        while self._attempt_waiters:
            waiter = self._attempt_waiters.popleft()
            if not waiter.done():  # an accept_peer() waiting (and not cancelled)
                waiter.set_result(attempt)
                return
        now = self._loop.time()
        self._drop_stale_attempts(now)
        if len(self._attempts) >= self._attempt_queue_size:
            self.ignored_attempts += 1
            if self.ignored_attempts == 1:
                log.warning(
                    "%d RFC 6062 ConnectionAttempts wait for accept_peer(): ignoring more"
                    " (the server closes each after 30 s); counted in ignored_attempts",
                    len(self._attempts),
                )
            return
        self._attempts.append((now, attempt))

    def _drop_stale_attempts(self, now: float) -> None:
        attempts = self._attempts
        while attempts and now - attempts[0][0] >= _ATTEMPT_LIFETIME:
            attempts.popleft()

    @staticmethod
    def _resolve(fut: asyncio.Future[Any] | None, value: Any) -> None:
        if fut is not None and not fut.done():
            fut.set_result(value)

    @staticmethod
    def _reject(fut: asyncio.Future[Any] | None, exc: BaseException) -> None:
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        futs: Iterable[asyncio.Future[Any]] = [
            *(f for f in (self._allocate_fut, self._release_fut) if f is not None),
            *self._permission_futs.values(),
            *self._channel_futs.values(),
            *self._connect_futs.values(),
            *self._attempt_waiters,
        ]
        for fut in futs:
            self._reject(fut, exc)
        self._attempt_waiters.clear()
        self._attempts.clear()
        self._permission_futs.clear()
        self._channel_futs.clear()
        self._connect_futs.clear()

    async def _bind_data_connection(self, connection_id: int, peer: Endpoint) -> TurnPeerConnection:
        server = self.core.server
        conn = await self.stack.connect_stream(
            server, tls=self._tls, server_hostname=self._hostname
        )
        binder = TurnConnectionBinder(
            server, self.credentials, connection_id, self.config, auth=self.core.auth
        )
        peer_conn = TurnPeerConnection(conn, peer, connection_id)
        done: asyncio.Future[DataConnectionBound] = self._loop.create_future()
        timer: list[asyncio.TimerHandle] = []

        def flush() -> None:
            out = binder.data_to_send()
            if out:
                conn.write(out)
            while (event := binder.next_event()) is not None:
                match event:
                    case DataConnectionBound(data=data):
                        # Swap handlers now, in this callback: bytes arriving
                        # before the awaiting coroutine resumes belong to the peer.
                        if data:
                            peer_conn._on_data(data)
                        conn.set_handler(peer_conn._on_data)
                        self._resolve(done, event)
                    case DataConnectionFailed(code=code, reason=reason):
                        self._reject(done, TurnRequestError(f"ConnectionBind: {reason}", code))
            for handle in timer:
                handle.cancel()
            timer.clear()
            deadline = binder.get_timer()
            if deadline is not None:
                timer.append(self._loop.call_at(deadline, on_timer))

        def on_timer() -> None:
            binder.handle_timer(now=self._loop.time())
            flush()

        def on_data(data: bytes) -> None:
            binder.receive_data(data, now=self._loop.time())
            flush()

        conn.set_handler(on_data)
        binder.start(now=self._loop.time())
        flush()
        try:
            await done
        except BaseException:
            conn.abort()
            raise
        finally:
            for handle in timer:
                handle.cancel()
        return peer_conn
