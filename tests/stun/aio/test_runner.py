"""The asyncio STUN client and server runner over real loopback sockets."""

from __future__ import annotations

import asyncio
import random
import ssl

import pytest

from natkit.addr import Endpoint
from natkit.errors import TransactionError, TransactionTimeout
from natkit.net.os_stack import OsStack
from natkit.stun import attributes as at
from natkit.stun.aio import AsyncStunClient, StunServerRunner
from natkit.stun.attributes import ChangeRequest
from natkit.stun.auth import LongTermAuthenticator, StaticUsers
from natkit.stun.constants import Method
from natkit.stun.credentials import NonceIssuer
from natkit.stun.message import StunMessage, serialize_message
from natkit.stun.server import StunServerConfig
from natkit.stun.transaction import LongTermCredentials, StunClientConfig

FAST = StunClientConfig(rto=0.05, rc=3, rm=2, rng=random.Random(1))


async def _free_udp_port(host: str = "127.0.0.1") -> int:
    ep = await OsStack().open_udp(Endpoint(host, 0), lambda d, r: None)
    port = ep.local_endpoint.port
    ep.close()
    return port


@pytest.fixture
async def server() -> StunServerRunner:
    runner = StunServerRunner(OsStack(), StunServerConfig(primary=Endpoint("127.0.0.1", 0)))
    await runner.start()
    yield runner  # type: ignore[misc]
    runner.close()
    await runner.wait_closed()


async def test_udp_binding_returns_the_source_address(server: StunServerRunner) -> None:
    async with await AsyncStunClient.open_udp(
        OsStack(), Endpoint("127.0.0.1", 0), config=FAST
    ) as client:
        mapped = await client.binding(server.endpoints[0])
        assert mapped == client.local_endpoint
    assert server.core.stats.responses == 1


async def test_ipv6_binding() -> None:
    stack = OsStack()
    async with StunServerRunner(stack, StunServerConfig(primary=Endpoint("::1", 0))) as srv:
        async with await AsyncStunClient.open_udp(stack, Endpoint("::1", 0), config=FAST) as client:
            assert await client.binding(srv.endpoints[0]) == client.local_endpoint


async def test_tcp_binding(server: StunServerRunner) -> None:
    where = server.listeners[0].local_endpoint
    client = await AsyncStunClient.connect(OsStack(), where, config=FAST)
    try:
        mapped = await client.binding()
        assert mapped == client.local_endpoint
        # Several requests back to back on one connection.
        results = await asyncio.gather(*(client.binding() for _ in range(5)))
        assert set(results) == {client.local_endpoint}
    finally:
        client.close()


async def test_tls_binding(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    stack = OsStack()
    port = await _free_udp_port()
    tls_ep = Endpoint("127.0.0.1", port)
    cfg = StunServerConfig(primary=Endpoint("127.0.0.1", 0))
    async with StunServerRunner(stack, cfg, tls=tls_server_context, tls_endpoints=[tls_ep]) as srv:
        tls_where = srv.listeners[-1].local_endpoint
        client = await AsyncStunClient.connect(
            stack, tls_where, tls=tls_client_context, server_hostname="localhost", config=FAST
        )
        try:
            assert await client.binding() == client.local_endpoint
        finally:
            client.close()


async def test_timeout_when_nobody_answers() -> None:
    port = await _free_udp_port()
    async with await AsyncStunClient.open_udp(
        OsStack(), Endpoint("127.0.0.1", 0), config=FAST
    ) as client:
        with pytest.raises(TransactionTimeout):
            await client.binding(Endpoint("127.0.0.1", port))


async def test_server_keeps_serving_after_garbage(server: StunServerRunner) -> None:
    stack = OsStack()
    where = server.endpoints[0]
    junk = await stack.open_udp(Endpoint("127.0.0.1", 0), lambda d, r: None)
    for blob in (b"", b"\x00", b"\xff" * 40, b"\x00\x01\x00\x04" + b"\x21\x12\xa4\x42" + b"x" * 12):
        junk.send(blob, where)
    junk.close()
    # A stream that sends garbage is closed; the server still answers others.
    conn = await stack.connect_stream(server.listeners[0].local_endpoint)
    conn.set_handler(lambda data: None)
    conn.write(b"GET / HTTP/1.1\r\n\r\n")
    await asyncio.wait_for(conn.wait_closed(), 5)
    async with await AsyncStunClient.open_udp(
        stack, Endpoint("127.0.0.1", 0), config=FAST
    ) as client:
        assert await client.binding(where) == client.local_endpoint
    assert server.core.stats.dropped >= 1


async def test_connection_limit() -> None:
    stack = OsStack()
    cfg = StunServerConfig(primary=Endpoint("127.0.0.1", 0))
    async with StunServerRunner(stack, cfg, max_connections=1) as srv:
        where = srv.listeners[0].local_endpoint
        first = await AsyncStunClient.connect(stack, where, config=FAST)
        assert await first.binding() == first.local_endpoint
        second = await AsyncStunClient.connect(stack, where, config=FAST)
        with pytest.raises(TransactionError):
            await second.binding()
        first.close()
        second.close()


async def test_rfc5780_change_request_over_real_sockets() -> None:
    stack = OsStack()
    p1, p2 = await _free_udp_port(), await _free_udp_port()
    cfg = StunServerConfig(
        primary=Endpoint("127.0.0.1", p1), alternate=Endpoint("127.0.0.2", p2), rfc5780=True
    )
    async with StunServerRunner(stack, cfg) as srv:
        assert len(srv.endpoints) == 4
        async with await AsyncStunClient.open_udp(
            stack, Endpoint("127.0.0.1", 0), config=FAST
        ) as client:
            req = StunMessage.request(Method.BINDING, b"")
            req.add(at.CHANGE_REQUEST, ChangeRequest(change_ip=True, change_port=True))
            resp = await client.request(req, Endpoint("127.0.0.1", p1))
            assert resp.source == Endpoint("127.0.0.2", p2)
            assert resp.response.get(at.RESPONSE_ORIGIN) == Endpoint("127.0.0.2", p2)
            assert resp.response.get(at.OTHER_ADDRESS) == Endpoint("127.0.0.2", p2)


async def test_long_term_authentication_over_udp() -> None:
    stack = OsStack()
    realm = "example.org"
    auth = LongTermAuthenticator(
        realm, StaticUsers({"alice": "wonderland"}, realm).key, NonceIssuer(b"secret")
    )
    cfg = StunServerConfig(primary=Endpoint("127.0.0.1", 0), authenticator=auth)
    async with StunServerRunner(stack, cfg) as srv:
        async with await AsyncStunClient.open_udp(
            stack, Endpoint("127.0.0.1", 0), config=FAST
        ) as client:
            good = await client.request(
                StunMessage.request(Method.BINDING, b""),
                srv.endpoints[0],
                credentials=LongTermCredentials("alice", "wonderland"),
            )
            assert good.is_success
            assert good.response.integrity_sha256_offset >= 0
            bad = await client.request(
                StunMessage.request(Method.BINDING, b""),
                srv.endpoints[0],
                credentials=LongTermCredentials("alice", "looking-glass"),
            )
            assert not bad.is_success
            assert bad.response.error is not None and bad.response.error.code == 401


async def test_a_peer_that_never_reads_is_dropped_and_frees_its_slot() -> None:
    stack = OsStack()
    cfg = StunServerConfig(primary=Endpoint("127.0.0.1", 0))
    async with StunServerRunner(stack, cfg, max_connections=1, max_write_buffer=1) as srv:
        where = srv.listeners[0].local_endpoint
        greedy = await stack.connect_stream(where)
        # Never read: pause the client's reading so the server's buffer fills.
        greedy._transport.pause_reading()  # type: ignore[attr-defined]
        burst = serialize_message(StunMessage.request(Method.BINDING, bytes(12))) * 2000
        for _ in range(2000):  # at most 80 MB of requests, ~3x that in answers
            if greedy.closed:
                break
            greedy.write(burst)
            await asyncio.sleep(0)
        await asyncio.wait_for(greedy.wait_closed(), 10)
        assert srv._connections == {}
        # The slot is free again: a well-behaved client gets an answer.
        client = await AsyncStunClient.connect(stack, where, config=FAST)
        try:
            assert await client.binding() == client.local_endpoint
        finally:
            client.close()


async def test_idle_connections_are_dropped() -> None:
    stack = OsStack()
    cfg = StunServerConfig(primary=Endpoint("127.0.0.1", 0))
    async with StunServerRunner(stack, cfg, idle_timeout=0.05) as srv:
        conn = await stack.connect_stream(srv.listeners[0].local_endpoint)
        conn.set_handler(lambda data: None)
        await asyncio.wait_for(conn.wait_closed(), 10)
        assert srv._connections == {}
