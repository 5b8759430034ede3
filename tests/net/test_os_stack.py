"""The OS stack on loopback: UDP, TCP, TLS, addresses, errors."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import TransportError
from natkit.net.os_stack import ICMP_SUPPORTED, OsStack, OsStreamConnection
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


async def _closed_udp_port(stack: OsStack, local: Endpoint) -> Endpoint:
    probe = await stack.open_udp(local, lambda d, r: None)
    where = probe.local_endpoint
    probe.close()
    await probe.wait_closed()
    return where


async def _icmp_for_closed_port(local: Endpoint) -> tuple[Endpoint, Endpoint, int, int, int]:
    stack = OsStack()
    closed = await _closed_udp_port(stack, local)
    got: asyncio.Future[tuple[Endpoint, int, int, int]] = asyncio.get_running_loop().create_future()

    def on_icmp(remote: Endpoint, icmp_type: int, icmp_code: int, info: int) -> None:
        if not got.done():
            got.set_result((remote, icmp_type, icmp_code, info))

    ep = await stack.open_udp(local, lambda d, r: None, on_icmp=on_icmp)
    try:
        ep.send(b"anyone?", closed)
        remote, icmp_type, icmp_code, info = await asyncio.wait_for(got, 5)
        ep.send(b"the socket survives the error", closed)  # a send may meet it too
        return closed, remote, icmp_type, icmp_code, info
    finally:
        ep.close()


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
@pytest.mark.parametrize(
    ("local", "port_unreachable"),
    [pytest.param(LOOP4, (3, 3), id="ipv4"), pytest.param(LOOP6, (1, 4), id="ipv6")],
)
async def test_udp_reports_icmp_port_unreachable(
    local: Endpoint, port_unreachable: tuple[int, int]
) -> None:
    closed, remote, icmp_type, icmp_code, info = await _icmp_for_closed_port(local)
    assert remote == closed
    assert (icmp_type, icmp_code, info) == (*port_unreachable, 0)


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
def test_udp_reports_icmp_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        closed, remote, icmp_type, icmp_code, _ = runner.run(_icmp_for_closed_port(LOOP4))
    assert (remote, icmp_type, icmp_code) == (closed, 3, 3)


async def _connect_from_listener(
    stack: OsStack,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
) -> tuple[Endpoint, Endpoint, Endpoint]:
    """Connect to a peer from the endpoint a reuse_port listener holds: (listener
    endpoint, the connection's local endpoint, where the peer saw it come from)."""
    seen: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
    peer = await stack.listen_stream(
        LOOP4, lambda c: seen.set_result(c.remote_endpoint), tls=tls[0] if tls else None
    )
    relay = await stack.listen_stream(LOOP4, lambda c: c.abort(), reuse_port=True)
    try:
        conn = await stack.connect_stream(
            peer.local_endpoint,
            local=relay.local_endpoint,
            reuse_port=True,
            tls=tls[1] if tls else None,
            server_hostname="localhost",
        )
        came_from = await asyncio.wait_for(seen, 5)
        conn.close()
        return relay.local_endpoint, conn.local_endpoint, came_from
    finally:
        relay.close()
        peer.close()


async def test_reuse_port_connects_from_a_listeners_endpoint() -> None:
    relay, local, came_from = await _connect_from_listener(OsStack())
    assert local == came_from == relay


async def test_reuse_port_connects_from_a_listeners_endpoint_over_tls(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    relay, local, came_from = await _connect_from_listener(
        OsStack(), (tls_server_context, tls_client_context)
    )
    assert local == came_from == relay


async def test_without_reuse_port_a_listeners_endpoint_is_taken() -> None:
    stack = OsStack()
    peer = await stack.listen_stream(LOOP4, lambda c: c.abort())
    relay = await stack.listen_stream(LOOP4, lambda c: c.abort())
    try:
        with pytest.raises(TransportError):
            await stack.connect_stream(peer.local_endpoint, local=relay.local_endpoint)
    finally:
        relay.close()
        peer.close()


async def test_pause_reading_holds_bytes_until_resumed() -> None:
    stack = OsStack()
    accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
    listener = await stack.listen_stream(LOOP4, accepted.put_nowait)
    client = await stack.connect_stream(listener.local_endpoint)
    server = await asyncio.wait_for(accepted.get(), 5)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    try:
        server.pause_reading()
        server.set_handler(got.put_nowait)
        client.write(b"held")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(got.get(), 0.05)
        server.resume_reading()
        server.resume_reading()  # a second resume is a no-op
        assert await asyncio.wait_for(got.get(), 5) == b"held"
        assert client.write_buffer_size == 0
    finally:
        client.close()
        server.close()
        listener.close()


async def _send_after_an_icmp_error() -> list[bytes]:
    """On loopback the ICMP error is back before sendto returns: the next send
    meets it as the socket's pending error, and must not lose its datagram."""
    stack = OsStack()
    closed = await _closed_udp_port(stack, LOOP4)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    peer = await stack.open_udp(LOOP4, lambda d, r: got.put_nowait(d))
    ep = await stack.open_udp(LOOP4, lambda d, r: None, on_icmp=lambda r, t, c, i: None)
    try:
        ep.send(b"to a closed port", closed)
        ep.send(b"first", peer.local_endpoint)
        ep.send(b"second", peer.local_endpoint)
        return [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
    finally:
        ep.close()
        peer.close()


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
async def test_an_icmp_error_does_not_cost_the_next_datagram() -> None:
    assert await _send_after_an_icmp_error() == [b"first", b"second"]


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
def test_an_icmp_error_does_not_cost_the_next_datagram_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(_send_after_an_icmp_error()) == [b"first", b"second"]
