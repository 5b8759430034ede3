"""TurnServerRunner with TCP and TLS clients on loopback: relaying, the end
of a connection deleting its allocation, stalled readers, and RFC 6062 TCP
relaying (Connect and ConnectionAttempt) with raw bytes piped both ways."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest

from natkit.addr import Endpoint, Transport
from natkit.net.os_stack import OsStack
from natkit.net.stack import StreamConnection
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import parse_message
from natkit.turn import attributes as tat
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import TransportProtocol
from tests.turn.aio._runner_client import HandClient, Peer, until
from tests.turn.aio.test_runner import CREDENTIALS, LO, config

TCP, TLS, UDP = Transport.TCP, Transport.TLS, Transport.UDP


@pytest.fixture
async def runner(tls_server_context: ssl.SSLContext) -> AsyncIterator[TurnServerRunner]:
    r = TurnServerRunner(
        OsStack(),
        config(),
        CREDENTIALS,
        listen=[(UDP, Endpoint(LO, 0)), (TCP, Endpoint(LO, 0)), (TLS, Endpoint(LO, 0))],
        tls=tls_server_context,
    )
    await r.start()
    yield r
    r.close()
    await r.wait_closed()


async def _relay_round_trip(client: HandClient) -> None:
    peer = await Peer.open(OsStack(), Endpoint(LO, 0))
    try:
        relay = await client.allocate()
        await client.permit(peer.endpoint)
        client.send_indication(peer.endpoint, b"over a stream")
        assert await peer.recv() == (b"over a stream", relay)
        peer.send(b"indicated", relay)
        assert await client.next_data() == (peer.endpoint, b"indicated")
        await client.bind_channel(0x4001, peer.endpoint)
        client.send_channel(0x4001, b"odd")  # padded to 4 on streams (RFC 8656 §12.5)
        assert await peer.recv() == (b"odd", relay)
        peer.send(b"z" * 121, relay)
        assert await client.next_data() == (0x4001, b"z" * 121)
    finally:
        peer.close()


async def test_tcp_client_relays_both_ways(runner: TurnServerRunner) -> None:
    client = await HandClient.stream(OsStack(), runner.endpoint(TCP))
    try:
        await _relay_round_trip(client)
    finally:
        client.close()


async def test_tls_client_relays_both_ways(
    runner: TurnServerRunner, tls_client_context: ssl.SSLContext
) -> None:
    client = await HandClient.stream(OsStack(), runner.endpoint(TLS), tls=tls_client_context)
    try:
        await _relay_round_trip(client)
    finally:
        client.close()


async def test_closing_the_connection_deletes_its_allocation(runner: TurnServerRunner) -> None:
    client = await HandClient.stream(OsStack(), runner.endpoint(TCP))
    relay = await client.allocate()
    sock = runner.relays[relay]
    client.close()
    await until(lambda: not runner.relays)
    assert runner.relays == {} and relay in runner.relay_pool and not sock.closed  # parked
    assert runner.core.allocations() == []
    assert runner.counters.deleted_by_reason == {"connection closed": 1}
    assert runner._streams == {}


async def test_garbage_on_a_stream_aborts_it(runner: TurnServerRunner) -> None:
    conn = await OsStack().connect_stream(runner.endpoint(TCP))
    conn.set_handler(lambda data: None)
    conn.write(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(conn.wait_closed(), 5)
    assert runner._streams == {}


async def test_connections_over_the_limit_are_refused() -> None:
    r = TurnServerRunner(
        OsStack(), config(), CREDENTIALS, listen=[(TCP, Endpoint(LO, 0))], max_connections=1
    )
    async with r:
        first = await HandClient.stream(OsStack(), r.endpoint(TCP))
        await first.allocate()
        second = await OsStack().connect_stream(r.endpoint(TCP))
        second.set_handler(lambda data: None)
        await asyncio.wait_for(second.wait_closed(), 5)
        assert r.counters.connections_rejected == 1
        first.close()


async def _raw_conn(
    conn: StreamConnection,
) -> asyncio.Queue[bytes]:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    conn.set_handler(q.put_nowait)
    return q


async def _read_exactly(q: asyncio.Queue[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await asyncio.wait_for(q.get(), 5)
        assert chunk, "connection closed early"
        buf += chunk
    return buf


async def test_rfc6062_connect_pipes_raw_bytes_both_ways(runner: TurnServerRunner) -> None:
    stack = OsStack()
    accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
    peer_listener = await stack.listen_stream(Endpoint(LO, 0), accepted.put_nowait)
    control = await HandClient.stream(stack, runner.endpoint(TCP))
    data = await HandClient.stream(stack, runner.endpoint(TCP))
    try:
        relay = await control.allocate(transport=TransportProtocol.TCP)
        assert relay in runner.relay_listeners
        await control.permit(peer_listener.local_endpoint)
        cid = await control.connect_peer(peer_listener.local_endpoint)
        peer_conn = await asyncio.wait_for(accepted.get(), 5)
        assert peer_conn.remote_endpoint == relay  # RFC 6062 §5.2: from the relayed address
        peer_q = await _raw_conn(peer_conn)
        resp = await data.connection_bind(cid)
        assert resp.message_class == MessageClass.SUCCESS
        # From now on the data connection carries raw bytes, not STUN.
        assert data.conn is not None and data.raw is not None
        data_q = data.raw
        data.conn.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await _read_exactly(peer_q, 18) == b"GET / HTTP/1.0\r\n\r\n"
        big = bytes(range(256)) * 4096  # 1 MiB through the bridge, in order
        peer_conn.write(big)
        assert await _read_exactly(data_q, len(big)) == big
        # The peer hangs up: the data connection closes too.
        peer_conn.close()
        await asyncio.wait_for(data.conn.wait_closed(), 5)
        assert runner._peers == {}
    finally:
        control.close()
        data.close()
        peer_listener.close()


async def test_rfc6062_peer_connecting_to_the_relay_is_announced_and_bridged(
    runner: TurnServerRunner,
) -> None:
    stack = OsStack()
    control = await HandClient.stream(stack, runner.endpoint(TCP))
    data = await HandClient.stream(stack, runner.endpoint(TCP))
    try:
        relay = await control.allocate(transport=TransportProtocol.TCP)
        peer_ip = Endpoint(LO, 0)
        await control.permit(peer_ip)
        peer_conn = await stack.connect_stream(relay)
        peer_q = await _raw_conn(peer_conn)
        peer_conn.write(b"early bytes ")  # before the client binds: held for it
        ind = parse_message(await asyncio.wait_for(control.inbox.get(), 5))
        assert ind.method == Method.CONNECTION_ATTEMPT
        assert ind.get(at.XOR_PEER_ADDRESS) == peer_conn.local_endpoint
        cid = ind.get(tat.CONNECTION_ID)
        assert cid is not None
        resp = await data.connection_bind(cid)
        assert resp.message_class == MessageClass.SUCCESS
        assert data.conn is not None and data.raw is not None
        data_q = data.raw
        assert await _read_exactly(data_q, 12) == b"early bytes "
        data.conn.write(b"answer")
        assert await _read_exactly(peer_q, 6) == b"answer"
        # The client's data connection ends: the peer's goes too.
        data.conn.close()
        await asyncio.wait_for(peer_conn.wait_closed(), 5)
    finally:
        control.close()
        data.close()


async def test_rfc6062_a_peer_without_permission_is_refused(runner: TurnServerRunner) -> None:
    stack = OsStack()
    control = await HandClient.stream(stack, runner.endpoint(TCP))
    try:
        relay = await control.allocate(transport=TransportProtocol.TCP)
        peer_conn = await stack.connect_stream(relay)
        peer_conn.set_handler(lambda data: None)
        await asyncio.wait_for(peer_conn.wait_closed(), 5)
        assert runner._peers == {}
    finally:
        control.close()


async def test_kicking_a_tcp_allocation_closes_its_connection(runner: TurnServerRunner) -> None:
    client = await HandClient.stream(OsStack(), runner.endpoint(TCP))
    try:
        await client.allocate()
        (info,) = runner.core.allocations()
        assert runner.kick(info.allocation_id)
        await asyncio.wait_for(client.closed.wait(), 5)
        assert runner.relays == {} and runner._streams == {}
        assert not runner.kick(info.allocation_id)
    finally:
        client.close()


async def _bound_pair(
    runner: TurnServerRunner, stack: OsStack
) -> tuple[HandClient, HandClient, StreamConnection, asyncio.Queue[bytes]]:
    """An RFC 6062 bridge: (control, data client, peer connection, peer's inbox)."""
    accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
    peer_listener = await stack.listen_stream(Endpoint(LO, 0), accepted.put_nowait)
    control = await HandClient.stream(stack, runner.endpoint(TCP))
    data = await HandClient.stream(stack, runner.endpoint(TCP))
    await control.allocate(transport=TransportProtocol.TCP)
    await control.permit(peer_listener.local_endpoint)
    cid = await control.connect_peer(peer_listener.local_endpoint)
    peer_conn = await asyncio.wait_for(accepted.get(), 5)
    peer_listener.close()
    peer_q = await _raw_conn(peer_conn)
    assert (await data.connection_bind(cid)).message_class == MessageClass.SUCCESS
    return control, data, peer_conn, peer_q


async def test_rfc6062_bridge_pauses_the_sender_instead_of_buffering(
    runner: TurnServerRunner,
) -> None:
    stack = OsStack()
    control, data, peer_conn, _ = await _bound_pair(runner, stack)
    try:
        assert data.conn is not None and data.raw is not None
        data.conn.pause_reading()
        chunk = b"p" * 65536
        for _ in range(400):  # 26 MB offered by a peer whose client does not read
            peer_conn.write(chunk)
            await asyncio.sleep(0)
        (client,) = [c for c in runner._streams.values() if c.pipe is not None]
        # What the server holds for the client stays near the cap; the rest waits in
        # the peer's own socket because the server stopped reading it.
        assert getattr(client.conn, "write_buffer_size", 0) <= 2 * runner.bridge_buffer + 65536
        assert getattr(peer_conn, "write_buffer_size", 0) > 4 * runner.bridge_buffer
        data.conn.resume_reading()
        got = 0
        while got < 400 * 65536:
            got += len(await asyncio.wait_for(data.raw.get(), 5))
        assert got == 400 * 65536
    finally:
        control.close()
        data.close()
        peer_conn.close()


async def test_a_tcp_client_that_stops_reading_relayed_data_is_aborted() -> None:
    r = TurnServerRunner(
        OsStack(), config(), CREDENTIALS, listen=[(TCP, Endpoint(LO, 0))], max_write_buffer=65536
    )
    async with r:
        stack = OsStack()
        client = await HandClient.stream(stack, r.endpoint(TCP))
        peer = await Peer.open(stack, Endpoint(LO, 0))
        relay = await client.allocate()
        await client.permit(peer.endpoint)
        assert client.conn is not None
        client.conn.pause_reading()
        async with asyncio.timeout(10):
            while r._streams:  # until the server gives up on this client
                for _ in range(20):
                    peer.send(b"d" * 1000, relay)
                await asyncio.sleep(0)
        # A paused reader cannot see the reset; once it reads again, it does.
        client.conn.resume_reading()
        await asyncio.wait_for(client.conn.wait_closed(), 5)
        assert r._streams == {} and r.relays == {}
        peer.close()


async def test_shutdown_closes_tcp_relays_and_peer_connections(
    tls_server_context: ssl.SSLContext,
) -> None:
    r = TurnServerRunner(OsStack(), config(), CREDENTIALS, listen=[(TCP, Endpoint(LO, 0))])
    await r.start()
    stack = OsStack()
    control, data, peer_conn, _ = await _bound_pair(r, stack)
    relay_listeners = list(r.relay_listeners.values())
    r.close()
    await r.wait_closed()
    await asyncio.wait_for(peer_conn.wait_closed(), 5)
    assert r.relay_listeners == {} and r._peers == {} and r._streams == {}
    assert relay_listeners
    control.close()
    data.close()
