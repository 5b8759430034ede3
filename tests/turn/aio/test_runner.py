"""TurnServerRunner over real loopback sockets (UDP clients): allocations,
permissions, channels, data both ways, relay sockets' lifecycle, the admin
endpoint and shutdown."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from ipaddress import ip_network
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from natkit.addr import Endpoint, Family, Transport
from natkit.nat.portmap.http import HttpExchange, HttpRequest, HttpResponse
from natkit.net.os_stack import OsStack
from natkit.net.stack import Stack
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage
from natkit.turn import attributes as tat
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import TransportProtocol
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig
from tests.turn.aio._runner_client import PASSWORD, REALM, USER, HandClient, Peer

LO = "127.0.0.1"
UDP, TCP = Transport.UDP, Transport.TCP
CREDENTIALS = StaticCredentials.from_passwords({USER: PASSWORD}, REALM)


def config(**kw: Any) -> TurnServerConfig:
    base: dict[str, Any] = {
        "realm": REALM,
        "relay_ips": (LO,),
        "min_port": 62000,
        "max_port": 62999,
        "allowed_peers": (ip_network("127.0.0.0/8"),),
        "rng": random.Random(1),
    }
    base.update(kw)
    return TurnServerConfig(**base)


async def start(stack: Stack | None = None, **kw: Any) -> TurnServerRunner:
    runner = TurnServerRunner(
        stack or OsStack(),
        config(**kw),
        CREDENTIALS,
        listen=[(UDP, Endpoint(LO, 0)), (TCP, Endpoint(LO, 0))],
        admin=Endpoint(LO, 0),
    )
    await runner.start()
    return runner


@pytest.fixture
async def runner() -> AsyncIterator[TurnServerRunner]:
    r = await start()
    yield r
    r.close()
    await r.wait_closed()


async def http(
    stack: Stack, method: str, url: str, headers: tuple[tuple[str, str], ...] = ()
) -> HttpResponse:
    """One request to the admin endpoint with natkit's h11 client, over the stack."""
    exchange = HttpExchange(HttpRequest(method=method, url=url, headers=headers))
    conn = await stack.connect_stream(exchange.server)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_data(data: bytes) -> None:
        exchange.receive_data(data)
        if (exchange.response is not None or not data) and not done.done():
            done.set_result(None)

    conn.set_handler(on_data)
    conn.write(exchange.data_to_send())
    await asyncio.wait_for(done, 5)
    conn.close()
    assert exchange.response is not None
    return exchange.response


def admin_url(runner: TurnServerRunner, path: str) -> str:
    assert runner.admin is not None
    return f"http://{runner.admin.local_endpoint}{path}"


async def test_udp_allocation_relays_both_ways_by_indication_and_channel(
    runner: TurnServerRunner,
) -> None:
    stack = OsStack()
    client = await HandClient.udp(stack, runner.endpoint(UDP))
    peer = await Peer.open(stack, Endpoint(LO, 0))
    try:
        relay = await client.allocate()
        assert relay.host == LO and 62000 <= relay.port <= 62999
        assert relay in runner.relays
        await client.permit(peer.endpoint)
        client.send_indication(peer.endpoint, b"hello")
        assert await peer.recv() == (b"hello", relay)
        peer.send(b"back", relay)
        assert await client.next_data() == (peer.endpoint, b"back")
        await client.bind_channel(0x4000, peer.endpoint)
        client.send_channel(0x4000, b"x" * 120)
        assert await peer.recv() == (b"x" * 120, relay)
        peer.send(b"y" * 120, relay)
        assert await client.next_data() == (0x4000, b"y" * 120)
        stats = runner.core.stats
        assert (stats.packets_to_peers, stats.packets_to_clients) == (2, 2)
        assert stats.bytes_to_peers == 125
    finally:
        client.close()
        peer.close()


async def test_without_a_pool_refresh_to_zero_closes_the_relay_socket() -> None:
    runner = await start(relay_socket_pool=0)
    client = await HandClient.udp(OsStack(), runner.endpoint(UDP))
    try:
        relay = await client.allocate()
        sock = runner.relays[relay]
        resp = await client.refresh(0)
        assert resp.message_class == MessageClass.SUCCESS
        assert runner.relays == {}
        assert sock.closed
        await sock.wait_closed()
        # The port is really free again.
        again = await OsStack().open_udp(relay, lambda d, r: None)
        again.close()
    finally:
        client.close()
        runner.close()
        await runner.wait_closed()


async def test_a_released_relay_socket_is_parked_and_reused_after_its_quarantine() -> None:
    runner = await start(relay_port_quarantine=0.2)
    stack = OsStack()
    first = await HandClient.udp(stack, runner.endpoint(UDP))
    peer = await Peer.open(stack, Endpoint(LO, 0))
    clients = [first]
    try:
        relay = await first.allocate()
        await first.permit(peer.endpoint)
        sock = runner.relays[relay]
        assert (await first.refresh(0)).message_class == MessageClass.SUCCESS
        assert runner.relays == {} and not sock.closed  # parked, still bound
        gauges = {f.name: f.samples[0].value for f in runner.metrics_collector.collect()}
        assert gauges["natkit_turn_relay_sockets_parked"] == 1
        peer.send(b"late", relay)  # for the deleted allocation: read and dropped
        # Within the quarantine the port is not handed out again.
        second = await HandClient.udp(stack, runner.endpoint(UDP))
        clients.append(second)
        other = await second.allocate()
        assert other != relay
        other_sock = runner.relays[other]
        await asyncio.sleep(0.25)
        assert runner.core.stats.packets_to_clients == 0  # "late" was dropped
        third = await HandClient.udp(stack, runner.endpoint(UDP))
        clients.append(third)
        assert await third.allocate() == relay
        assert runner.relays[relay] is sock  # the same socket, not a new one
        # The late datagram went nowhere; the new allocation relays as usual.
        await third.permit(peer.endpoint)
        peer.send(b"fresh", relay)
        assert await third.next_data() == (peer.endpoint, b"fresh")
        assert await second.refresh(0) and await third.refresh(0)
    finally:
        for client in clients:
            client.close()
        peer.close()
        runner.close()
        await runner.wait_closed()
    assert sock.closed and other_sock.closed  # shutdown closes parked sockets too


async def test_a_full_pool_closes_the_socket_released_last() -> None:
    runner = await start(relay_socket_pool=1, relay_port_quarantine=0.0)
    stack = OsStack()
    clients = [await HandClient.udp(stack, runner.endpoint(UDP)) for _ in range(2)]
    try:
        relays = [await client.allocate() for client in clients]
        socks = [runner.relays[relay] for relay in relays]
        for client in clients:
            assert (await client.refresh(0)).message_class == MessageClass.SUCCESS
        assert not socks[0].closed and socks[1].closed  # the pool holds one: the oldest
        assert len(runner.relay_pool) == 1 and relays[0] in runner.relay_pool
        again = await HandClient.udp(stack, runner.endpoint(UDP))
        clients.append(again)
        assert await again.allocate() == relays[0]  # the core hands out the parked one
        assert runner.relays[relays[0]] is socks[0]
    finally:
        for client in clients:
            client.close()
        runner.close()
        await runner.wait_closed()


async def test_the_core_remembers_no_more_ports_than_the_pool_can_park(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("natkit.turn.aio.server.open_file_limit", lambda: 400)
    runner = TurnServerRunner(
        OsStack(), config(relay_socket_pool=16384), CREDENTIALS, listen=[(UDP, Endpoint(LO, 0))]
    )
    assert runner.relay_pool.capacity == 100 == runner.core.config.relay_socket_pool


async def test_a_peer_without_permission_is_not_relayed(runner: TurnServerRunner) -> None:
    stack = OsStack()
    client = await HandClient.udp(stack, runner.endpoint(UDP))
    stranger = await Peer.open(stack, Endpoint(LO, 0))
    try:
        relay = await client.allocate()
        before = runner.core.stats.dropped
        stranger.send(b"let me in", relay)
        # A request after the packet: once it is answered, the packet was handled.
        await client.refresh(600)
        assert client.inbox.empty()
        assert runner.core.stats.dropped == before + 1
    finally:
        client.close()
        stranger.close()


async def test_shutdown_closes_every_relay_socket() -> None:
    runner = await start()
    clients = [await HandClient.udp(OsStack(), runner.endpoint(UDP)) for _ in range(3)]
    try:
        relays = [await c.allocate() for c in clients]
        socks = [runner.relays[r] for r in relays]
        runner.close()
        await runner.wait_closed()
        assert runner.relays == {} and all(s.closed for s in socks)
        assert all(s.closed for s in runner.udp_listeners.values())
        for relay in relays:  # every port can be bound again
            (await OsStack().open_udp(relay, lambda d, r: None)).close()
    finally:
        for c in clients:
            c.close()


async def test_a_relay_port_that_cannot_be_bound_ends_in_508() -> None:
    stack = OsStack()
    squatter = await stack.open_udp(Endpoint(LO, 0), lambda d, r: None)
    port = squatter.local_endpoint.port
    runner = await start(stack, min_port=port, max_port=port)
    client = await HandClient.udp(stack, runner.endpoint(UDP))
    try:
        req = StunMessage.request(Method.ALLOCATE, b"")
        req.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
        resp = await client.request(req)
        assert resp.error is not None and resp.error.code == 508
        assert runner.counters.relay_bind_failures >= 1
        assert runner.relays == {}
    finally:
        client.close()
        squatter.close()
        runner.close()
        await runner.wait_closed()


async def test_admin_metrics_parse_and_count_the_allocation(runner: TurnServerRunner) -> None:
    stack = OsStack()
    client = await HandClient.udp(stack, runner.endpoint(UDP))
    try:
        await client.allocate()
        resp = await http(stack, "GET", admin_url(runner, "/metrics"))
        assert resp.status == 200
        assert (resp.header("content-type") or "").startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(resp.body.decode())}
        assert families["natkit_turn_allocations"].samples[0].value == 1
        assert families["natkit_turn_allocations_created"].samples[0].value == 1
        assert families["natkit_turn_requests"].samples[0].value >= 2
        labels = {key for f in families.values() for s in f.samples for key in s.labels}
        assert labels <= {"reason", "direction", "transport"}  # never a username
    finally:
        client.close()


async def test_admin_sessions_lists_and_kick_removes_an_allocation(
    runner: TurnServerRunner,
) -> None:
    stack = OsStack()
    client = await HandClient.udp(stack, runner.endpoint(UDP))
    try:
        relay = await client.allocate()
        resp = await http(stack, "GET", admin_url(runner, "/sessions"))
        assert resp.status == 200
        (session,) = json.loads(resp.body)
        assert session["username"] == USER
        assert session["client"] == str(client.local_endpoint)
        assert session["relays"] == [str(relay)]
        assert session["transport"] == "udp"
        assert 0 < session["expires_in_s"] <= 600
        kicked = await http(stack, "POST", admin_url(runner, f"/sessions/{session['id']}/kick"))
        assert kicked.status == 200
        assert runner.relays == {}
        assert json.loads((await http(stack, "GET", admin_url(runner, "/sessions"))).body) == []
        again = await http(stack, "POST", admin_url(runner, f"/sessions/{session['id']}/kick"))
        assert again.status == 404
        health = await http(stack, "GET", admin_url(runner, "/healthz"))
        assert (health.status, health.body) == (200, b"ok\n")
    finally:
        client.close()


async def test_ipv6_client_relays_to_an_ipv6_peer() -> None:
    stack = OsStack()
    runner = TurnServerRunner(
        stack,
        config(relay_ips=(LO, "::1"), allowed_peers=(ip_network("::1/128"),)),
        CREDENTIALS,
        listen=[(UDP, Endpoint("::1", 0))],
    )
    async with runner:
        client = await HandClient.udp(stack, runner.endpoint(UDP))
        peer = await Peer.open(stack, Endpoint("::1", 0))
        try:
            req = StunMessage.request(Method.ALLOCATE, b"")
            req.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
            req.add(tat.REQUESTED_ADDRESS_FAMILY, int(Family.IPV6))
            resp = await client.request(req)
            relay = resp.get(at.XOR_RELAYED_ADDRESS)
            assert relay is not None and relay.host == "::1"
            await client.bind_channel(0x4000, peer.endpoint)
            client.send_channel(0x4000, b"six")
            assert await peer.recv() == (b"six", relay)
            peer.send(b"xis", relay)
            assert await client.next_data() == (0x4000, b"xis")
        finally:
            client.close()
            peer.close()


async def test_even_port_reservation_holds_the_next_port_for_the_token(
    runner: TurnServerRunner,
) -> None:
    stack = OsStack()
    first = await HandClient.udp(stack, runner.endpoint(UDP))
    second = await HandClient.udp(stack, runner.endpoint(UDP))
    try:
        req = StunMessage.request(Method.ALLOCATE, b"")
        req.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
        req.add(tat.EVEN_PORT, True)
        resp = await first.request(req)
        relay = resp.get(at.XOR_RELAYED_ADDRESS)
        token = resp.get(tat.RESERVATION_TOKEN)
        assert relay is not None and token is not None and relay.port % 2 == 0
        held = runner.relays[relay.with_port(relay.port + 1)]  # bound while reserved
        req = StunMessage.request(Method.ALLOCATE, b"")
        req.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
        req.add(tat.RESERVATION_TOKEN, token)
        resp = await second.request(req)
        assert resp.get(at.XOR_RELAYED_ADDRESS) == relay.with_port(relay.port + 1)
        assert runner.relays[relay.with_port(relay.port + 1)] is held
    finally:
        first.close()
        second.close()
