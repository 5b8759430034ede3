"""Issue 4, bad input: the TURN server leaks nothing. 10,000 allocations are
created in the simulated internet (raw Allocate requests signed with
long-term credentials by natkit's STUN client, one socket each, from four
hosts); a quarter also get a permission and a channel that would outlive
them, a quarter are deleted at once with Refresh LIFETIME 0 and the rest are
left to expire. Afterwards the core's tables (``table_sizes()``) and timer
heap are empty, every relay socket is closed (the server host has only its
listener bound) and the memory allocated on the way is freed.

Memory, two ways:

* Objects: ``sys.getallocatedblocks()`` before and after the 10,000-round
  (after a 200-allocation warm-up, so first-use caches are outside it). Each
  allocation costs dozens of objects, so a leak of even one object per
  allocation would leave 10,000 blocks; fewer than 1,000 may remain. It costs
  nothing to count, unlike tracemalloc, which makes the simulation about
  three times slower and so traces a round of 1,000 instead:
* Bytes: tracemalloc over a further round of 1,000: less than 1 MB may stay
  allocated, in fewer than 1,000 blocks. What does stay is hash-table
  capacity, not entries: CPython dicts and sets keep their slots when
  entries are deleted and are resized down and up again on reuse, so the
  dozen indexes (server core, runner, simulated stacks) sized during the
  round hold about 0.7 MB of empty slots in ~175 blocks.

A second, smaller test does the same over TCP and TLS (600 connections):
allocations go with their connection, and connections left silent are
closed by the server once their allocation has expired.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import sys
import tracemalloc
from dataclasses import dataclass

import pytest

from natkit.addr import Endpoint, Transport
from natkit.net.sim import Internet, Link, SimHost, SimStack, run_virtual
from natkit.rng import seeded_rng
from natkit.stun import attributes as at
from natkit.stun.aio import AsyncStunClient
from natkit.stun.constants import Method
from natkit.stun.message import StunMessage
from natkit.stun.transaction import LongTermCredentials, StunClientConfig
from natkit.turn import attributes as tat
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import TransportProtocol
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

SERVER_IP = "203.0.113.10"
SERVER = Endpoint(SERVER_IP, 3478)
PEER = Endpoint("203.0.113.20", 7000)
CLIENT_IPS = ("192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4")
REALM = "leak.natkit.test"
USER, PASSWORD = "leak", "leak-password"
WARM_UP = 200
ALLOCATIONS = 10_000
TRACED = 1_000
BLOCK_SLACK = 1_000  # objects left after a round (a leak of one per allocation: >= 10,000)
LIFETIME = 60
MEMORY_SLACK = 1_000_000  # bytes left allocated after the traced round of 1,000


@dataclass(slots=True)
class Round:
    created: int = 0
    released: int = 0
    with_channels: int = 0
    failures: int = 0
    relays_open: int = 0  # relay sockets open once every client is done


def _bound(stack: SimStack) -> set[tuple[object, object]]:
    return set(stack.bound())


async def _one_allocation(
    client: AsyncStunClient, index: int, credentials: LongTermCredentials, result: Round
) -> None:
    allocate = StunMessage.request(Method.ALLOCATE, b"")
    allocate.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP).add(at.LIFETIME, LIFETIME)
    answer = await client.request(allocate, SERVER, credentials=credentials)
    if not answer.is_success or answer.response.get(at.XOR_RELAYED_ADDRESS) is None:
        result.failures += 1
        return
    result.created += 1
    if index % 4 == 0:
        # Deleted at once (RFC 8656 §7.2 via §8: Refresh with LIFETIME 0).
        refresh = StunMessage.request(Method.REFRESH, b"").add(at.LIFETIME, 0)
        answer = await client.request(refresh, SERVER, credentials=credentials)
        result.released += answer.is_success
    elif index % 4 == 1:
        # A permission and a channel that outlive the allocation's lifetime.
        permit = StunMessage.request(Method.CREATE_PERMISSION, b"").add(at.XOR_PEER_ADDRESS, PEER)
        bind = StunMessage.request(Method.CHANNEL_BIND, b"")
        bind.add(tat.CHANNEL_NUMBER, 0x4000 + index % 0x1000).add(at.XOR_PEER_ADDRESS, PEER)
        ok = True
        for request in (permit, bind):
            answer = await client.request(request, SERVER, credentials=credentials)
            ok = ok and answer.is_success
        result.with_channels += ok


async def _round(runner: TurnServerRunner, hosts: list[SimHost], count: int, seed: int) -> Round:
    """``count`` allocations from ``count`` sockets spread over ``hosts``;
    returns once every socket is closed and every allocation is gone."""
    credentials = LongTermCredentials(USER, PASSWORD)
    config = StunClientConfig(rng=seeded_rng(seed))
    clients = [
        await AsyncStunClient.open_udp(hosts[i % len(hosts)].stack, config=config)
        for i in range(count)
    ]
    result = Round()
    await asyncio.gather(
        *(_one_allocation(c, i, credentials, result) for i, c in enumerate(clients))
    )
    result.relays_open = len(runner.relays)
    for client in clients:
        client.close()
    del clients
    # Past every lifetime: allocations (60 s), permissions (300 s), channels
    # (600 s) and the channel number quarantine after them (300 s).
    await asyncio.sleep(1000.0)
    return result


@dataclass(slots=True)
class Measured:
    rounds: list[Round]
    sizes: dict[str, int]
    timer: float | None
    relays_left: int
    ports_clean: bool
    blocks_left: int
    traced_left: int
    traced_blocks_left: int
    traced_peak: int


def test_ten_thousand_allocations_leave_nothing_behind() -> None:
    async def main() -> Measured:
        net = Internet(seed=1, default_link=Link(delay=0.005))
        turn = net.add_host("turn", SERVER_IP)
        hosts = [net.add_host(f"client{i}", ip) for i, ip in enumerate(CLIENT_IPS)]
        core_config = TurnServerConfig(
            realm=REALM,
            relay_ips=(SERVER_IP,),
            default_lifetime=float(LIFETIME),
            unauthenticated_rate=1e9,  # 10,000 first requests from 4 hosts at once
            unauthenticated_burst=1e9,
            # The parked relay sockets and the released-port table are bounded by
            # this; the warm-up fills them, so what they hold is in the baseline.
            relay_socket_pool=WARM_UP,
            rng=seeded_rng(2),
        )
        credentials = StaticCredentials.from_passwords({USER: PASSWORD}, REALM)
        runner = TurnServerRunner(
            turn.stack, core_config, credentials, listen=[(Transport.UDP, SERVER)]
        )
        await runner.start()
        listening = _bound(turn.stack)
        rounds = [await _round(runner, hosts, WARM_UP, seed=3)]
        gc.collect()
        blocks = sys.getallocatedblocks()
        rounds.append(await _round(runner, hosts, ALLOCATIONS, seed=4))
        gc.collect()
        blocks_left = sys.getallocatedblocks() - blocks
        tracemalloc.start()
        try:
            rounds.append(await _round(runner, hosts, TRACED, seed=5))
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            traced_left, traced_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        traced_blocks_left = sum(stat.count for stat in snapshot.statistics("filename"))
        measured = Measured(
            rounds=rounds,
            sizes=runner.core.table_sizes(),
            timer=runner.core.get_timer(),
            relays_left=len(runner.relays),
            ports_clean=_bound(turn.stack) == listening and not any(_bound(h.stack) for h in hosts),
            blocks_left=blocks_left,
            traced_left=traced_left,
            traced_blocks_left=traced_blocks_left,
            traced_peak=traced_peak,
        )
        runner.close()
        await runner.wait_closed()
        return measured

    m = run_virtual(main)
    for r, count in zip(m.rounds, (WARM_UP, ALLOCATIONS, TRACED), strict=True):
        assert r.failures == 0
        assert r.created == count
        assert r.released == count // 4
        assert r.with_channels == count // 4
        assert r.relays_open == count - count // 4
    assert m.sizes == dict.fromkeys(m.sizes, 0), m.sizes
    assert m.timer is None
    assert m.relays_left == 0
    assert m.ports_clean
    assert m.blocks_left < BLOCK_SLACK
    assert m.traced_blocks_left < BLOCK_SLACK
    assert m.traced_left < MEMORY_SLACK, m


STREAM_CLIENTS = 600  # 500 over TCP, 100 over TLS
TLS_EVERY = 6


def _gauge(runner: TurnServerRunner, name: str) -> dict[str, float]:
    """The samples of one of the runner's Prometheus metrics, by label value."""
    for family in runner.metrics_collector.collect():
        if family.name == name:
            return {",".join(s.labels.values()): s.value for s in family.samples}
    raise LookupError(name)


def test_stream_allocations_leave_nothing_behind(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """Allocations over TCP and TLS go with their connection (RFC 8656 §3.1):
    a third released with Refresh 0 and closed, a third closed with the
    allocation still on it, a third left silent, so that the allocation
    expires and the server closes the idle connection itself."""

    async def main() -> tuple[Round, dict[str, int], dict[str, float], dict[str, int], bool]:
        net = Internet(seed=6, default_link=Link(delay=0.005))
        turn = net.add_host("turn", SERVER_IP)
        hosts = [net.add_host(f"client{i}", ip) for i, ip in enumerate(CLIENT_IPS)]
        core_config = TurnServerConfig(
            realm=REALM,
            relay_ips=(SERVER_IP,),
            default_lifetime=float(LIFETIME),
            unauthenticated_rate=1e9,
            unauthenticated_burst=1e9,
            rng=seeded_rng(7),
        )
        tls_server = Endpoint(SERVER_IP, 443)
        runner = TurnServerRunner(
            turn.stack,
            core_config,
            StaticCredentials.from_passwords({USER: PASSWORD}, REALM),
            listen=[(Transport.TCP, SERVER), (Transport.TLS, tls_server)],
            tls=tls_server_context,
        )
        await runner.start()
        listening = _bound(turn.stack)
        credentials = LongTermCredentials(USER, PASSWORD)
        config = StunClientConfig(rng=seeded_rng(8))
        clients = []
        for i in range(STREAM_CLIENTS):
            stack = hosts[i % len(hosts)].stack
            if i % TLS_EVERY == 0:
                client = await AsyncStunClient.connect(
                    stack,
                    tls_server,
                    tls=tls_client_context,
                    server_hostname="localhost",
                    config=config,
                )
            else:
                client = await AsyncStunClient.connect(stack, SERVER, config=config)
            clients.append(client)
        result = Round()

        async def one(index: int, client: AsyncStunClient) -> None:
            server = tls_server if index % TLS_EVERY == 0 else SERVER
            allocate = StunMessage.request(Method.ALLOCATE, b"")
            allocate.add(tat.REQUESTED_TRANSPORT, TransportProtocol.UDP)
            answer = await client.request(allocate, server, credentials=credentials)
            if not answer.is_success:
                result.failures += 1
                return
            result.created += 1
            if index % 3 == 0:
                refresh = StunMessage.request(Method.REFRESH, b"").add(at.LIFETIME, 0)
                answer = await client.request(refresh, server, credentials=credentials)
                result.released += answer.is_success
            if index % 3 != 2:
                client.close()

        await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
        result.relays_open = len(runner.relays)
        # Past the allocations' 60 s and the idle connections' 300 s.
        await asyncio.sleep(1000.0)
        connections = _gauge(runner, "natkit_turn_connections")  # idle ones closed by the server
        for client in clients:
            client.close()
        await asyncio.sleep(10.0)  # the last FINs
        measured = (
            result,
            runner.core.table_sizes(),
            connections,
            dict(runner.counters.deleted_by_reason),
            _bound(turn.stack) == listening and not any(_bound(h.stack) for h in hosts),
        )
        runner.close()
        await runner.wait_closed()
        return measured

    result, sizes, connections, deleted, ports_clean = run_virtual(main)
    assert result.failures == 0
    assert result.created == STREAM_CLIENTS
    assert result.released == STREAM_CLIENTS // 3
    assert result.relays_open == STREAM_CLIENTS - STREAM_CLIENTS // 3 * 2  # the silent third
    assert sizes == dict.fromkeys(sizes, 0), sizes
    assert connections == {"tcp": 0, "tls": 0}
    assert deleted == {
        "refreshed to zero": STREAM_CLIENTS // 3,
        "connection closed": STREAM_CLIENTS // 3,
        "expired": STREAM_CLIENTS // 3,
    }
    assert ports_clean
