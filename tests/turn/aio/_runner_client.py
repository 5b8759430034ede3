"""A hand-built TURN client for the runner tests (STUN transactions from
natkit.stun.transaction, TURN requests built by hand), over UDP, TCP or TLS
on any stack: independent of natkit's own TURN client on purpose."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Callable

from natkit.addr import Endpoint
from natkit.net.driver import CoreDriver, StreamSender
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.events import ResponseReceived, StunEvent
from natkit.stun.framing import StreamFramer
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.transaction import LongTermCredentials, StunClient, StunClientConfig
from natkit.turn import attributes as tat
from natkit.turn.attributes import TransportProtocol
from natkit.turn.channel import parse_channel_data

USER, PASSWORD, REALM = "alice", "wonderland", "example.org"
CREDS = LongTermCredentials(USER, PASSWORD)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``condition()`` holds (no fixed sleeps)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


class HandClient:
    """Requests go through a StunClient (401/438 handled there); every
    indication and ChannelData message lands in :attr:`inbox`."""

    def __init__(self, endpoint: DatagramEndpoint, server: Endpoint, *, reliable: bool) -> None:
        self.core = StunClient(
            StunClientConfig(rto=0.2, rc=4, rm=4, reliable=reliable, rng=random.Random(7))
        )
        self.endpoint = endpoint
        self.server = server
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._futures: dict[bytes, asyncio.Future[ResponseReceived]] = {}
        self.driver: CoreDriver[StunEvent] = CoreDriver(self.core, {None: endpoint}, self._event)
        self.conn: StreamConnection | None = None
        self.raw: asyncio.Queue[bytes] | None = None  # a bound RFC 6062 data connection's bytes

    @classmethod
    async def udp(cls, stack: Stack, server: Endpoint, local: Endpoint | None = None) -> HandClient:
        holder: list[HandClient] = []

        def on_datagram(data: bytes, remote: Endpoint) -> None:
            holder[0].receive(data, remote)

        ep = await stack.open_udp(local or Endpoint(server.host, 0), on_datagram)
        client = cls(ep, server, reliable=False)
        holder.append(client)
        return client

    @classmethod
    async def stream(
        cls, stack: Stack, server: Endpoint, *, tls: ssl.SSLContext | None = None
    ) -> HandClient:
        conn = await stack.connect_stream(
            server, tls=tls, server_hostname="localhost" if tls else None
        )
        client = cls(StreamSender(conn), server, reliable=True)
        client.conn = conn
        framer = StreamFramer(channel_data=True)
        bind = Method.CONNECTION_BIND

        def on_data(data: bytes) -> None:
            if client.raw is not None:
                client.raw.put_nowait(data)
                return
            if not data:
                client.closed.set()
                return
            messages = framer.feed(data)
            for i, message in enumerate(messages):
                client.receive(message, server)
                if message[0] >> 6 == 0:
                    msg = parse_message(message)
                    if (msg.method, msg.message_class) == (bind, MessageClass.SUCCESS):
                        # RFC 6062 §5.4: raw bytes from here on, maybe in this very chunk.
                        client.raw = asyncio.Queue()
                        rest = b"".join(messages[i + 1 :]) + framer.take_buffered()
                        if rest:
                            client.raw.put_nowait(rest)
                        return

        conn.set_handler(on_data)
        return client

    @property
    def local_endpoint(self) -> Endpoint:
        return self.endpoint.local_endpoint

    def receive(self, data: bytes, addr: Endpoint) -> None:
        if data[0] >> 6 == 1:
            self.inbox.put_nowait(data)
            return
        msg = parse_message(data)
        if msg.message_class == MessageClass.INDICATION:
            self.inbox.put_nowait(data)
            return
        self.core.receive_datagram(data, addr, now=self.driver.now())
        self.driver.flush()

    def _event(self, event: StunEvent) -> None:
        fut = self._futures.pop(event.transaction_id, None)
        if fut is not None and not fut.done():
            if isinstance(event, ResponseReceived):
                fut.set_result(event)
            else:
                fut.set_exception(AssertionError(f"transaction failed: {event}"))

    async def request(
        self, msg: StunMessage, *, credentials: LongTermCredentials | None = CREDS
    ) -> StunMessage:
        tid = self.core.send_request(
            msg, self.server, now=self.driver.now(), credentials=credentials
        )
        fut: asyncio.Future[ResponseReceived] = asyncio.get_running_loop().create_future()
        self._futures[tid] = fut
        self.driver.flush()
        return (await fut).response

    async def allocate(
        self, *, transport: TransportProtocol = TransportProtocol.UDP, lifetime: int | None = None
    ) -> Endpoint:
        req = StunMessage.request(Method.ALLOCATE, b"")
        req.add(tat.REQUESTED_TRANSPORT, transport)
        if lifetime is not None:
            req.add(tat.LIFETIME, lifetime)
        resp = await self.request(req)
        assert resp.message_class == MessageClass.SUCCESS, resp.error
        relay = resp.get(at.XOR_RELAYED_ADDRESS)
        assert relay is not None
        return relay

    async def refresh(self, lifetime: int) -> StunMessage:
        req = StunMessage.request(Method.REFRESH, b"")
        req.add(tat.LIFETIME, lifetime)
        return await self.request(req)

    async def permit(self, peer: Endpoint) -> None:
        req = StunMessage.request(Method.CREATE_PERMISSION, b"")
        req.add(at.XOR_PEER_ADDRESS, peer)
        resp = await self.request(req)
        assert resp.message_class == MessageClass.SUCCESS, resp.error

    async def bind_channel(self, number: int, peer: Endpoint) -> None:
        req = StunMessage.request(Method.CHANNEL_BIND, b"")
        req.add(tat.CHANNEL_NUMBER, number)
        req.add(at.XOR_PEER_ADDRESS, peer)
        resp = await self.request(req)
        assert resp.message_class == MessageClass.SUCCESS, resp.error

    async def connect_peer(self, peer: Endpoint) -> int:
        """RFC 6062 Connect: the CONNECTION-ID."""
        req = StunMessage.request(Method.CONNECT, b"")
        req.add(at.XOR_PEER_ADDRESS, peer)
        resp = await self.request(req)
        assert resp.message_class == MessageClass.SUCCESS, resp.error
        cid = resp.get(tat.CONNECTION_ID)
        assert cid is not None
        return cid

    async def connection_bind(self, cid: int) -> StunMessage:
        req = StunMessage.request(Method.CONNECTION_BIND, b"")
        req.add(tat.CONNECTION_ID, cid)
        return await self.request(req)

    def send_channel(self, number: int, data: bytes) -> None:
        pad = b"\x00" * (-len(data) % 4) if self.conn is not None else b""
        self.endpoint.send(
            number.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data + pad, self.server
        )

    def send_indication(self, peer: Endpoint, data: bytes) -> None:
        ind = StunMessage(Method.SEND, MessageClass.INDICATION, random.Random(3).randbytes(12))
        ind.add(at.XOR_PEER_ADDRESS, peer)
        ind.add(at.DATA, data)
        self.endpoint.send(serialize_message(ind), self.server)

    async def next_data(self) -> tuple[int | Endpoint, bytes]:
        """The next relayed packet: (channel, data) or (peer, data) for a Data indication."""
        raw = await asyncio.wait_for(self.inbox.get(), 5)
        if raw[0] >> 6 == 1:
            return parse_channel_data(raw)
        msg = parse_message(raw)
        assert msg.method == Method.DATA, msg
        peer, data = msg.get(at.XOR_PEER_ADDRESS), msg.get(at.DATA)
        assert peer is not None and data is not None
        return peer, data

    def close(self) -> None:
        self.driver.close()
        self.endpoint.close()


class Peer:
    """A raw UDP peer: records what arrives, sends what it is told."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
        self.ep: DatagramEndpoint | None = None

    @classmethod
    async def open(cls, stack: Stack, local: Endpoint) -> Peer:
        peer = cls()
        peer.ep = await stack.open_udp(local, lambda d, r: peer.inbox.put_nowait((d, r)))
        return peer

    @property
    def endpoint(self) -> Endpoint:
        assert self.ep is not None
        return self.ep.local_endpoint

    def send(self, data: bytes, to: Endpoint) -> None:
        assert self.ep is not None
        self.ep.send(data, to)

    async def recv(self) -> tuple[bytes, Endpoint]:
        return await asyncio.wait_for(self.inbox.get(), 5)

    def close(self) -> None:
        if self.ep is not None:
            self.ep.close()
