"""Runs a :class:`~natkit.stun.server.StunServer` core on a stack: UDP on every
local address of the core, TCP on the primary one, TLS where configured.

Stream connections are framed with :class:`~natkit.stun.framing.StreamFramer`;
a connection whose peer stops reading (write buffer past ``max_write_buffer``),
sends garbage, or stays idle past ``idle_timeout`` is closed, and at most
``max_connections`` are open at once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection, StreamListener
from natkit.stun.framing import StreamFramer
from natkit.stun.server import StunServer, StunServerConfig

__all__ = ["StunServerRunner"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class StunServerRunner:
    """``start()``, ``close()``, ``wait_closed()``, or ``async with``."""

    def __init__(
        self,
        stack: Stack,
        config: StunServerConfig,
        *,
        tcp: bool = True,
        tls: ssl.SSLContext | None = None,
        tls_endpoints: list[Endpoint] | None = None,
        max_connections: int = 1024,
        max_write_buffer: int = 256 * 1024,
        idle_timeout: float = 300.0,
    ) -> None:
        self.stack = stack
        self.core = StunServer(config)
        self.tcp = tcp
        self.tls = tls
        self.tls_endpoints = tls_endpoints or []
        if tls is None and self.tls_endpoints:
            raise ValueError("TLS endpoints need a TLS context")
        self.max_connections = max_connections
        self.max_write_buffer = max_write_buffer
        self.idle_timeout = idle_timeout
        self.udp: dict[Endpoint, DatagramEndpoint] = {}
        self.listeners: list[StreamListener] = []
        self._connections: dict[StreamConnection, asyncio.TimerHandle] = {}
        self._closed = asyncio.Event()

    @property
    def endpoints(self) -> list[Endpoint]:
        """Bound UDP endpoints (ports resolved when 0 was asked for)."""
        return list(self.udp)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        try:
            for local in core.config.local_endpoints:
                holder: list[Endpoint] = []

                def on_datagram(
                    data: bytes, addr: Endpoint, holder: list[Endpoint] = holder
                ) -> None:
                    core.receive_datagram(data, addr, local=holder[0], now=loop.time())
                    self._send_udp()

                ep = await self.stack.open_udp(local, on_datagram, responder=core.answer_binding)
                holder.append(ep.local_endpoint)
                self.udp[ep.local_endpoint] = ep
            if self.tcp:
                primary = core.config.primary
                self.listeners.append(await self.stack.listen_stream(primary, self._on_connection))
            for ep_tls in self.tls_endpoints:
                self.listeners.append(
                    await self.stack.listen_stream(ep_tls, self._on_connection, tls=self.tls)
                )
        except BaseException:
            self.close()
            raise

    def _send_udp(self) -> None:
        udp = self.udp
        for data, remote, local in self.core.datagrams_to_send(now=0.0):
            ep = udp.get(local) if local is not None else None
            if ep is None:
                ep = next(iter(udp.values()))
            ep.send(data, remote)

    def _on_connection(self, conn: StreamConnection) -> None:
        if len(self._connections) >= self.max_connections:
            conn.abort()
            return
        loop = asyncio.get_running_loop()
        self._connections[conn] = loop.call_later(self.idle_timeout, self._drop, conn, "idle")
        framer = StreamFramer()
        core = self.core
        peer = conn.remote_endpoint
        local = conn.local_endpoint
        transport = conn.transport

        def on_data(data: bytes) -> None:
            if not data:
                self._forget(conn)
                return
            timer = self._connections.get(conn)
            if timer is None:
                return  # already dropped
            timer.cancel()
            self._connections[conn] = loop.call_later(self.idle_timeout, self._drop, conn, "idle")
            try:
                messages = framer.feed(data)
            except MalformedMessageError:
                core.stats.dropped += 1
                self._drop(conn, "not STUN")
                return
            for message in messages:
                core.receive_datagram(
                    message,
                    peer,
                    local=self._primary_for(local),
                    now=loop.time(),
                    transport=transport,
                )
                for out, _, _ in core.datagrams_to_send(now=0.0):
                    conn.write(out)
            if getattr(conn, "write_buffer_size", 0) > self.max_write_buffer:
                self._drop(conn, "peer does not read its responses")

        conn.set_handler(on_data)

    def _forget(self, conn: StreamConnection) -> None:
        timer = self._connections.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def _drop(self, conn: StreamConnection, why: str) -> None:
        """Abort a connection: close() would wait for a peer that may never
        read, keeping its slot for good."""
        log.info("dropping %s: %s", conn.remote_endpoint, why)
        self._forget(conn)
        conn.abort()

    def _primary_for(self, local: Endpoint) -> Endpoint:
        # Stream sockets may be bound to a wildcard; responses name the primary.
        return local if local in self.udp else self.core.config.primary

    def close(self) -> None:
        for ep in self.udp.values():
            ep.close()
        for listener in self.listeners:
            listener.close()
        for conn in list(self._connections):
            self._drop(conn, "server closing")
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()
        for ep in self.udp.values():
            await ep.wait_closed()
        for listener in self.listeners:
            await listener.wait_closed()

    async def __aenter__(self) -> StunServerRunner:
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
