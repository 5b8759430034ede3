"""Awaitable STUN client over UDP, TCP or TLS on any stack.

Each awaited request is a future resolved by the core's events; the
retransmission schedule, RTO cache and authentication retries all live in
:class:`natkit.stun.transaction.StunClient`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from types import TracebackType

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError, TransactionError, TransactionTimeout
from natkit.net.driver import CoreDriver, StreamSender
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.stun.events import ResponseReceived, StunEvent, TransactionFailed, TransactionTimedOut
from natkit.stun.framing import StreamFramer
from natkit.stun.message import StunMessage
from natkit.stun.transaction import Credentials, StunClient, StunClientConfig

__all__ = ["AsyncStunClient"]

ANY_IPV4 = Endpoint("0.0.0.0", 0)


class AsyncStunClient:
    """A STUN client bound to one local transport address (or one connection)."""

    def __init__(
        self,
        core: StunClient,
        endpoint: DatagramEndpoint,
        *,
        server: Endpoint | None = None,
    ) -> None:
        self.core = core
        self.endpoint = endpoint
        self.default_server = server
        self._futures: dict[bytes, asyncio.Future[ResponseReceived]] = {}
        self.driver: CoreDriver[StunEvent] = CoreDriver(core, {None: endpoint}, self._on_event)

    @classmethod
    async def open_udp(
        cls,
        stack: Stack,
        local: Endpoint = ANY_IPV4,
        *,
        server: Endpoint | None = None,
        config: StunClientConfig | None = None,
    ) -> AsyncStunClient:
        """Bind a UDP socket on ``local`` and return a client using it."""
        core = StunClient(config)
        holder: list[AsyncStunClient] = []

        def on_datagram(data: bytes, addr: Endpoint) -> None:
            if holder:
                holder[0].receive(data, addr)

        endpoint = await stack.open_udp(local, on_datagram)
        client = cls(core, endpoint, server=server)
        holder.append(client)
        return client

    @classmethod
    async def connect(
        cls,
        stack: Stack,
        server: Endpoint,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        config: StunClientConfig | None = None,
    ) -> AsyncStunClient:
        """Connect over TCP (or TLS) to ``server`` (RFC 8489 §6.2.2)."""
        config = dataclasses.replace(config or StunClientConfig(), reliable=True)
        conn = await stack.connect_stream(server, tls=tls, server_hostname=server_hostname)
        client = cls(StunClient(config), StreamSender(conn), server=server)
        framer = StreamFramer()

        def on_data(data: bytes) -> None:
            if not data:
                client._fail_all(TransactionError("connection closed by the server"))
                return
            try:
                messages = framer.feed(data)
            except MalformedMessageError:
                conn.close()
                return
            for message in messages:
                client.receive(message, server)

        conn.set_handler(on_data)
        return client

    # -- use -------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Endpoint) -> None:
        """Feed a datagram that arrived on this client's socket."""
        self.core.receive_datagram(data, addr, now=self.driver.now())
        self.driver.flush()

    async def request(
        self,
        request: StunMessage,
        server: Endpoint | None = None,
        *,
        credentials: Credentials | None = None,
    ) -> ResponseReceived:
        """Send ``request`` and wait for its response (success or error).

        Raises :class:`TransactionTimeout` when every retransmission goes
        unanswered and :class:`TransactionError` when the transaction fails
        otherwise.
        """
        target = server or self.default_server
        if target is None:
            raise ValueError("no server given")
        tid = self.core.send_request(
            request, target, now=self.driver.now(), credentials=credentials
        )
        fut: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self._futures[tid] = fut
        self.driver.flush()
        try:
            return await fut
        finally:
            if self._futures.pop(tid, None) is not None:
                self.core.cancel(tid)

    async def binding(self, server: Endpoint | None = None) -> Endpoint:
        """One Binding transaction; returns the mapped (server-reflexive) address."""
        resp = await self.request(StunMessage.request(Method.BINDING, b""), server)
        if not resp.is_success:
            err = resp.response.error
            raise TransactionError(
                f"Binding failed: {err.code if err else '?'} {err.reason if err else ''}"
            )
        mapped = resp.response.get(at.XOR_MAPPED_ADDRESS) or resp.response.get(at.MAPPED_ADDRESS)
        if mapped is None:
            raise TransactionError("Binding response carries no mapped address")
        return mapped

    @property
    def local_endpoint(self) -> Endpoint:
        return self.endpoint.local_endpoint

    def close(self) -> None:
        self.driver.close()
        self.endpoint.close()
        self._fail_all(TransactionError("client closed"))

    async def __aenter__(self) -> AsyncStunClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------

    def _on_event(self, event: StunEvent) -> None:
        fut = self._futures.pop(event.transaction_id, None)
        if fut is None or fut.done():
            return
        match event:
            case ResponseReceived():
                fut.set_result(event)
            case TransactionTimedOut(server=server):
                fut.set_exception(TransactionTimeout(f"no response from {server}"))
            case TransactionFailed(reason=reason):
                fut.set_exception(TransactionError(reason))

    def _fail_all(self, exc: Exception) -> None:
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(exc)
