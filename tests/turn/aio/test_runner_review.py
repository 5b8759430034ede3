"""TurnServerRunner fixes from the TURN review: stream ChannelData keyed on
its own transport, RFC 6062 peer connections made for allocations that died
meanwhile, and the limits on client connections (per source IP, the
unauthenticated idle timeout)."""

from __future__ import annotations

import asyncio
from typing import Any

from natkit.addr import Endpoint, Transport
from natkit.errors import TransportError
from natkit.net.driver import StreamSender
from natkit.net.os_stack import OsStack, OsStreamConnection
from natkit.net.stack import StreamConnection
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.stun.framing import StreamFramer
from natkit.stun.message import StunMessage
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import TransportProtocol
from tests.turn.aio._runner_client import CREDS, HandClient, Peer, until
from tests.turn.aio.test_runner import CREDENTIALS, LO, config

TCP, UDP = Transport.TCP, Transport.UDP


async def _stream_from(stack: OsStack, server: Endpoint, local: Endpoint) -> HandClient:
    """A TCP HandClient whose connection starts from ``local``."""
    conn = await stack.connect_stream(server, local=local)
    client = HandClient(StreamSender(conn), server, reliable=True)
    client.conn = conn
    framer = StreamFramer(channel_data=True)

    def on_data(data: bytes) -> None:
        for message in framer.feed(data) if data else ():
            client.receive(message, server)

    conn.set_handler(on_data)
    return client


async def _on_one_port(stack: OsStack) -> TurnServerRunner:
    """A runner listening on UDP and TCP at the same port (as on 3478)."""
    for _ in range(20):
        probe = await stack.open_udp(Endpoint(LO, 0), lambda data, remote: None)
        port = probe.local_endpoint.port
        probe.close()
        await probe.wait_closed()
        listen = [(UDP, Endpoint(LO, port)), (TCP, Endpoint(LO, port))]
        r = TurnServerRunner(stack, config(), CREDENTIALS, listen=listen)
        try:
            await r.start()
        except TransportError:  # taken meanwhile, for one of the two: another port
            await r.wait_closed()
            continue
        return r
    raise AssertionError("no port free for both UDP and TCP")


async def test_tcp_channel_data_never_uses_the_udp_allocation_of_the_same_address() -> None:
    # Two users behind one NAT can share a public IP:port, one over UDP, one over TCP:
    # their 5-tuples differ (RFC 8656 §2), so are their channels.
    stack = OsStack()
    r = await _on_one_port(stack)
    peer = await Peer.open(stack, Endpoint(LO, 0))
    for attempt in range(10):
        # The UDP user's ephemeral port may be taken over TCP by another
        # program on this machine: then take another one.
        udp_user = await HandClient.udp(stack, r.endpoint(UDP), local=Endpoint(LO, 0))
        try:
            tcp_user = await _stream_from(stack, r.endpoint(TCP), udp_user.local_endpoint)
            break
        except TransportError as exc:
            udp_user.close()
            if "already in use" not in str(exc) or attempt == 9:
                raise
    try:
        await udp_user.allocate()
        await udp_user.bind_channel(0x4000, peer.endpoint)
        try:
            await tcp_user.allocate()  # bound no channel
            stats = r.core.stats
            relayed, dropped = stats.packets_to_peers, stats.dropped
            tcp_user.send_channel(0x4000, b"not through someone else's channel")
            await until(lambda: (stats.packets_to_peers, stats.dropped) != (relayed, dropped))
            assert (stats.packets_to_peers, stats.dropped) == (relayed, dropped + 1)
            assert peer.inbox.empty()
        finally:
            tcp_user.close()
    finally:
        udp_user.close()
        peer.close()
        r.close()
        await r.wait_closed()


class _GatedStack(OsStack):
    """Holds every connect_stream (the runner's RFC 6062 Connects) until ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def connect_stream(self, remote: Endpoint, **kw: Any) -> OsStreamConnection:
        self.waiting += 1
        await self.gate.wait()
        return await super().connect_stream(remote, **kw)


async def test_a_peer_connection_made_for_an_allocation_gone_meanwhile_is_closed() -> None:
    # RFC 6062 §5.2: the client sends Connect and goes away while the server connects.
    stack = _GatedStack()
    r = TurnServerRunner(stack, config(), CREDENTIALS, listen=[(TCP, Endpoint(LO, 0))])
    await r.start()
    accepted: list[StreamConnection] = []

    def on_peer(conn: StreamConnection) -> None:
        conn.set_handler(lambda data: None)
        accepted.append(conn)

    peer_listener = await OsStack().listen_stream(Endpoint(LO, 0), on_peer)
    control = await HandClient.stream(OsStack(), r.endpoint(TCP))
    try:
        await control.allocate(transport=TransportProtocol.TCP)
        await control.permit(peer_listener.local_endpoint)
        connect = StunMessage.request(Method.CONNECT, b"")
        connect.add(at.XOR_PEER_ADDRESS, peer_listener.local_endpoint)
        control.core.send_request(
            connect, control.server, now=control.driver.now(), credentials=CREDS
        )
        control.driver.flush()
        await until(lambda: stack.waiting == 1)
        control.close()
        await until(lambda: not r.core.allocations())
        stack.gate.set()
        await until(lambda: bool(accepted) and not r._tasks)
        assert r._peers == {}
        assert r.core.table_sizes()["peer_connections"] == 0
        await asyncio.wait_for(accepted[0].wait_closed(), 5)
    finally:
        control.close()
        peer_listener.close()
        r.close()
        await r.wait_closed()


async def _silent(endpoint: Endpoint) -> StreamConnection:
    conn = await OsStack().connect_stream(endpoint)
    conn.set_handler(lambda data: None)
    return conn


async def test_unauthenticated_connections_per_ip_are_capped() -> None:
    r = TurnServerRunner(
        OsStack(),
        config(),
        CREDENTIALS,
        listen=[(TCP, Endpoint(LO, 0))],
        max_unauthenticated_per_ip=2,
    )
    async with r:
        user = await HandClient.stream(OsStack(), r.endpoint(TCP))
        await user.allocate()  # authenticated: no longer counted against 127.0.0.1
        silent = [await _silent(r.endpoint(TCP)) for _ in range(2)]
        await until(lambda: len(r._streams) == 3)
        third = await _silent(r.endpoint(TCP))
        await asyncio.wait_for(third.wait_closed(), 3)
        assert r.counters.connections_rejected == 1
        silent[0].close()
        await until(lambda: len(r._streams) == 2)
        again = await _silent(r.endpoint(TCP))  # a slot is free again
        await until(lambda: len(r._streams) == 3)
        assert not again.closed and r.counters.connections_rejected == 1
        for conn in (*silent, again):
            conn.close()
        user.close()


async def test_silent_unauthenticated_connections_go_after_the_short_timeout() -> None:
    r = TurnServerRunner(
        OsStack(),
        config(),
        CREDENTIALS,
        listen=[(TCP, Endpoint(LO, 0))],
        unauthenticated_timeout=0.2,
    )
    async with r:
        user = await HandClient.stream(OsStack(), r.endpoint(TCP))
        await user.allocate()
        assert (await user.refresh(0)).message_class.name == "SUCCESS"  # no allocation now
        await until(lambda: not r.core.allocations())
        silent = await _silent(r.endpoint(TCP))
        await asyncio.wait_for(silent.wait_closed(), 3)
        # The one that authenticated, silent for longer, has idle_timeout (300 s).
        assert user.conn is not None and not user.conn.closed and len(r._streams) == 1
        user.close()


def test_connection_limit_defaults() -> None:
    async def build() -> TurnServerRunner:
        return TurnServerRunner(OsStack(), config(), CREDENTIALS, listen=[(TCP, Endpoint(LO, 0))])

    r = asyncio.run(build())
    assert (r.max_unauthenticated_per_ip, r.unauthenticated_timeout) == (256, 30.0)
    assert r.idle_timeout == 300.0
