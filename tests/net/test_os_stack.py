"""The OS stack on loopback: UDP, TCP, TLS, addresses, errors."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import TransportError
from natkit.net.os_stack import OsStack, OsStreamConnection
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection

LOOP4 = Endpoint("127.0.0.1", 0)
LOOP6 = Endpoint("::1", 0)


def test_os_stack_implements_the_stack_protocol() -> None:
    assert isinstance(OsStack(), Stack)


@pytest.mark.parametrize("local", [pytest.param(LOOP4, id="ipv4"), pytest.param(LOOP6, id="ipv6")])
async def test_udp_round_trip(local: Endpoint) -> None:
    stack = OsStack()
    got: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
    a = await stack.open_udp(local, lambda d, r: got.put_nowait((d, r)))
    b_box: list[DatagramEndpoint] = []
    b = await stack.open_udp(local, lambda d, r: b_box[0].send(d.upper(), r))
    b_box.append(b)
    try:
        assert isinstance(a, DatagramEndpoint)
        assert a.local_endpoint.port != 0
        a.send(b"ping", b.local_endpoint)
        data, src = await asyncio.wait_for(got.get(), 5)
        assert (data, src) == (b"PING", b.local_endpoint)
    finally:
        a.close()
        b.close()
    assert a.closed
    a.send(b"after close is a no-op", b.local_endpoint)


async def test_udp_bind_conflict_is_a_transport_error() -> None:
    stack = OsStack()
    a = await stack.open_udp(LOOP4, lambda d, r: None)
    try:
        with pytest.raises(TransportError, match="cannot bind"):
            await stack.open_udp(a.local_endpoint, lambda d, r: None)
    finally:
        a.close()


async def test_reuse_port_lets_two_sockets_share_a_port() -> None:
    stack = OsStack(reuse_port=True, udp_buffer=1 << 20)
    a = await stack.open_udp(LOOP4, lambda d, r: None)
    b = await stack.open_udp(a.local_endpoint, lambda d, r: None)
    assert a.local_endpoint == b.local_endpoint
    a.close()
    b.close()


async def _echo_server(
    stack: OsStack, tls: ssl.SSLContext | None = None
) -> tuple[Endpoint, list[StreamConnection], object]:
    accepted: list[StreamConnection] = []

    def on_connection(conn: StreamConnection) -> None:
        accepted.append(conn)
        conn.set_handler(lambda data: conn.write(data.upper()) if data else None)

    listener = await stack.listen_stream(LOOP4, on_connection, tls=tls)
    return listener.local_endpoint, accepted, listener


@pytest.mark.parametrize("use_tls", [pytest.param(False, id="tcp"), pytest.param(True, id="tls")])
async def test_stream_round_trip(
    use_tls: bool, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    stack = OsStack()
    server_tls = tls_server_context if use_tls else None
    where, accepted, listener = await _echo_server(stack, server_tls)
    conn = await stack.connect_stream(
        where, tls=tls_client_context if use_tls else None, server_hostname="localhost"
    )
    received: asyncio.Queue[bytes] = asyncio.Queue()
    conn.set_handler(received.put_nowait)
    try:
        assert conn.transport is (Transport.TLS if use_tls else Transport.TCP)
        assert conn.remote_endpoint == where
        conn.write(b"hello")
        await conn.drain()
        chunks = b""
        while len(chunks) < 5:
            chunks += await asyncio.wait_for(received.get(), 5)
        assert chunks == b"HELLO"
        assert accepted[0].remote_endpoint == conn.local_endpoint
        accepted[0].close()
        assert await asyncio.wait_for(received.get(), 5) == b""  # EOF reaches the handler
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert conn.closed
        with pytest.raises(TransportError):
            await conn.drain()
    finally:
        conn.close()
        listener.close()  # type: ignore[attr-defined]


async def test_bytes_before_set_handler_are_replayed() -> None:
    conn = OsStreamConnection(tls=False)
    conn.data_received(b"early")
    conn.connection_lost(None)
    received: list[bytes] = []
    conn.set_handler(received.append)
    assert received == [b"early", b""]
    assert conn.closed


async def test_connect_refused_is_a_transport_error() -> None:
    stack = OsStack()
    probe = await stack.open_udp(LOOP4, lambda d, r: None)
    closed_port = probe.local_endpoint  # a UDP port: nothing listens on TCP there
    probe.close()
    with pytest.raises(TransportError, match="cannot connect"):
        await stack.connect_stream(closed_port, timeout=5)


async def test_tls_to_untrusted_server_fails(tls_server_context: ssl.SSLContext) -> None:
    stack = OsStack()
    where, _, listener = await _echo_server(stack, tls_server_context)
    try:
        with pytest.raises(TransportError):
            await stack.connect_stream(where, tls=ssl.create_default_context(), timeout=5)
    finally:
        listener.close()  # type: ignore[attr-defined]


def test_local_addresses_include_loopback_of_both_families() -> None:
    addrs = OsStack().local_addresses()
    loop = {(a.ip, a.family) for a in addrs if a.is_loopback}
    assert ("127.0.0.1", Family.IPV4) in loop
    assert ("::1", Family.IPV6) in loop
    assert all(0 <= a.prefix_len <= 128 for a in addrs)


async def test_source_address_for_loopback() -> None:
    stack = OsStack()
    assert await stack.source_address_for(Endpoint("127.0.0.1", 3478)) == "127.0.0.1"
    assert await stack.source_address_for(Endpoint("::1", 3478)) == "::1"


async def test_responder_answers_inline_or_passes_on() -> None:
    stack = OsStack()
    handled: list[bytes] = []

    def responder(data: bytes, remote: Endpoint) -> bytes | None:
        return b"inline:" + data if data.startswith(b"fast") else None

    server = await stack.open_udp(LOOP4, lambda d, r: handled.append(d), responder=responder)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    client = await stack.open_udp(LOOP4, lambda d, r: got.put_nowait(d))
    try:
        client.send(b"fast one", server.local_endpoint)
        assert await asyncio.wait_for(got.get(), 5) == b"inline:fast one"
        client.send(b"slow one", server.local_endpoint)
        client.send(b"fast two", server.local_endpoint)
        assert await asyncio.wait_for(got.get(), 5) == b"inline:fast two"
        assert handled == [b"slow one"]
    finally:
        client.close()
        server.close()


def test_streams_work_on_uvloop(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the OS stack's
    streams must take them (natkit's servers run on uvloop in production)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[bytes]:
        stack = OsStack()
        got: list[bytes] = []
        for tls in (None, tls_server_context):
            where, _, listener = await _echo_server(stack, tls)
            conn = await stack.connect_stream(
                where,
                tls=tls_client_context if tls else None,
                server_hostname="localhost",
            )
            received: asyncio.Queue[bytes] = asyncio.Queue()
            conn.set_handler(received.put_nowait)
            conn.write(b"uvloop")
            got.append(await asyncio.wait_for(received.get(), 5))
            conn.close()
            listener.close()  # type: ignore[attr-defined]
        return got

    async def bounded() -> list[bytes]:
        async with asyncio.timeout(10):
            return await main()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(bounded()) == [b"UVLOOP", b"UVLOOP"]
