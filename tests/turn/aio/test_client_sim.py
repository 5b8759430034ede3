"""AsyncTurnClient against natkit's own TurnServerRunner on the simulated
internet, under the virtual clock: the same asyncio code as on the OS stack.

Topology: the TURN server on 203.0.113.10, a UDP/TCP peer on 203.0.113.20,
the client on 198.51.100.5 (public) or behind a port-restricted NAT.
"""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, TypeVar

import pytest
import trustme

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import LocalProtocolError, TransactionError
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.sim.network import SimHost
from natkit.net.stack import StreamConnection
from natkit.stun import attributes as at
from natkit.stun.framing import StreamFramer
from natkit.stun.message import parse_message, serialize_message
from natkit.turn.aio.client import AsyncTurnClient, TurnRequestError
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import TransportProtocol
from natkit.turn.client import TurnClientConfig
from natkit.turn.client_events import AllocationRefreshed, TurnClientEvent
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

T = TypeVar("T")

USER, PASSWORD, REALM = "alice", "secret", "sim.example"
TURN_IP, ALT_IP, PEER_IP, CLIENT_IP = "203.0.113.10", "203.0.113.11", "203.0.113.20", "198.51.100.5"
UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS
PORTS = {UDP: 3478, TCP: 3478, TLS: 443}


@dataclass
class World:
    net: Internet
    server: TurnServerRunner
    peer: SimHost
    client_host: SimHost
    tls_client: ssl.SSLContext | None


def server_config(ip: str, **kw: Any) -> TurnServerConfig:
    return TurnServerConfig(
        realm=REALM,
        relay_ips=(ip,),
        min_port=61000,
        max_port=65535,
        allowed_peers=(ip_network("203.0.113.0/24"),),
        rng=random.Random(3),
        **kw,
    )


async def start_server(
    host: SimHost, ip: str, tls: ssl.SSLContext | None, **kw: Any
) -> TurnServerRunner:
    listen = [(UDP, Endpoint(ip, 3478)), (TCP, Endpoint(ip, 3478))]
    if tls is not None:
        listen.append((TLS, Endpoint(ip, 443)))
    runner = TurnServerRunner(
        host.stack,
        server_config(ip, **kw),
        StaticCredentials.from_passwords({USER: PASSWORD}, REALM),
        listen=listen,
        tls=tls,
    )
    await runner.start()
    return runner


def run(
    body: Callable[[World], Awaitable[T]],
    *,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    behind_nat: bool = False,
) -> T:
    async def main() -> T:
        net = Internet(seed=7, default_link=Link(delay=0.01))
        turn = net.add_host("turn", TURN_IP)
        peer = net.add_host("peer", PEER_IP)
        if behind_nat:
            box = NatBox(
                PRESETS["port-restricted-cone"],
                ["198.51.100.1"],
                inside_networks=["192.168.1.0/24"],
            )
            nat = net.add_middlebox("nat", box, ["198.51.100.1"], inside="192.168.1.0/24")
            client_host = net.add_host("client", behind=nat)
        else:
            client_host = net.add_host("client", CLIENT_IP)
        server = await start_server(turn, TURN_IP, tls[0] if tls else None)
        try:
            return await body(World(net, server, peer, client_host, tls[1] if tls else None))
        finally:
            server.close()
            await server.wait_closed()

    return run_virtual(main)


async def connect(world: World, transport: Transport = UDP, **kw: Any) -> AsyncTurnClient:
    return await AsyncTurnClient.connect(
        world.client_host.stack,
        Endpoint(TURN_IP, PORTS[transport]),
        transport=transport,
        credentials=(USER, PASSWORD),
        tls=world.tls_client if transport == TLS else None,
        server_hostname="localhost" if transport == TLS else None,
        config=kw.pop("config", TurnClientConfig(rng=random.Random(11), auto_bind=False)),
        **kw,
    )


class UdpPeer:
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
        self.endpoint = Endpoint(PEER_IP, 5000)
        self.sock: Any = None

    @classmethod
    async def open(cls, world: World) -> UdpPeer:
        peer = cls()
        peer.sock = await world.peer.stack.open_udp(
            peer.endpoint, lambda d, a: peer.received.put_nowait((d, a))
        )
        return peer

    async def next(self) -> tuple[bytes, Endpoint]:
        return await asyncio.wait_for(self.received.get(), 5.0)


async def both_ways(client: AsyncTurnClient, peer: UdpPeer, tag: bytes) -> None:
    client.send_to(b"out " + tag, peer.endpoint)
    assert await peer.next() == (b"out " + tag, client.relayed)
    peer.sock.send(b"in " + tag, client.relayed)
    assert await asyncio.wait_for(client.recv(), 5.0) == (b"in " + tag, peer.endpoint)


# -- tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", [UDP, TCP, TLS])
def test_allocate_permission_channel_and_data_both_ways(
    transport: Transport, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    async def body(world: World) -> None:
        peer = await UdpPeer.open(world)
        async with await connect(world, transport) as client:
            alloc = await client.allocate()
            assert alloc.relayed_endpoint.host == TURN_IP
            assert alloc.mapped is not None and alloc.mapped.host == CLIENT_IP
            await client.create_permission(peer.endpoint)
            await both_ways(client, peer, b"indication")
            await client.bind_channel(peer.endpoint)
            for size in (0, 1, 3, 500):
                await both_ways(client, peer, b"c" * size)
            core = client.core
            assert (core.sent_indications, core.received_indications) == (1, 1)
            assert (core.sent_channel_data, core.received_channel_data) == (4, 4)
        assert world.server.core.allocations() == []  # close() released it

    run(body, tls=(tls_server_context, tls_client_context))


def test_a_client_behind_a_nat_relays_with_an_auto_bound_channel() -> None:
    async def body(world: World) -> None:
        peer = await UdpPeer.open(world)
        config = TurnClientConfig(rng=random.Random(2))
        async with await connect(world, config=config) as client:
            alloc = await client.allocate()
            assert alloc.mapped is not None and alloc.mapped.host == "198.51.100.1"
            client.send_to(b"queued", peer.endpoint)  # before any permission
            assert (await peer.next())[0] == b"queued"
            await asyncio.sleep(1.0)
            assert client.core.channel_for(peer.endpoint) is not None
            await both_ways(client, peer, b"channel")
            assert client.core.received_channel_data == 1

    run(body, behind_nat=True)


def test_an_hour_of_refreshes_keeps_allocation_permission_and_channel_alive() -> None:
    async def body(world: World) -> None:
        peer = await UdpPeer.open(world)
        refreshed: list[TurnClientEvent] = []
        client = await connect(world, on_event=refreshed.append)
        async with client:
            await client.allocate()
            await client.create_permission(peer.endpoint)
            await client.bind_channel(peer.endpoint)
            for minute in range(0, 60, 10):
                await asyncio.sleep(600.0)  # idle longer than permissions and channels last
                await both_ways(client, peer, b"minute %d" % minute)
            assert sum(isinstance(e, AllocationRefreshed) for e in refreshed) >= 6
            assert client.core.sent_indications == 0  # always through the channel

    run(body)


def test_close_releases_the_allocation_on_the_server() -> None:
    async def body(world: World) -> None:
        client = await connect(world)
        await client.allocate()
        assert len(world.server.core.allocations()) == 1
        await client.bind_channel(Endpoint(PEER_IP, 5000))
        await client.close()
        assert world.server.core.allocations() == []
        with pytest.raises(Exception, match="closed"):
            await client.recv()
        with pytest.raises(LocalProtocolError):
            client.send_to(b"late", Endpoint(PEER_IP, 5000))

    run(body)


def test_wrong_password_raises_with_401() -> None:
    async def body(world: World) -> None:
        client = await AsyncTurnClient.connect(
            world.client_host.stack, Endpoint(TURN_IP, 3478), credentials=(USER, "nope")
        )
        async with client:
            with pytest.raises(TurnRequestError) as info:
                await client.allocate()
            assert info.value.code == 401

    run(body)


@pytest.mark.parametrize("transport", [UDP, TCP])
def test_alternate_server_redirects_the_allocation(transport: Transport) -> None:
    async def body(world: World) -> None:
        alt_host = world.net.add_host("alt", ALT_IP)
        alt = await start_server(alt_host, ALT_IP, None)
        # The first server answers every Allocate with 300 and the alternate.
        redirecting = await start_server(
            world.net.add_host("front", "203.0.113.12"),
            "203.0.113.12",
            None,
            alternate_server=Endpoint(ALT_IP, 3478),
        )
        try:
            client = await AsyncTurnClient.connect(
                world.client_host.stack,
                Endpoint("203.0.113.12", 3478),
                transport=transport,
                credentials=(USER, PASSWORD),
            )
            async with client:
                alloc = await client.allocate()
                assert alloc.server == Endpoint(ALT_IP, 3478)
                assert alloc.relayed_endpoint.host == ALT_IP
                assert len(alt.core.allocations()) == 1
                assert redirecting.core.allocations() == []
        finally:
            for runner in (alt, redirecting):
                runner.close()
                await runner.wait_closed()

    run(body)


def test_rfc6062_connect_and_accept_through_natkit_server() -> None:
    async def body(world: World) -> None:
        accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
        listener = await world.peer.stack.listen_stream(
            Endpoint(PEER_IP, 7000), accepted.put_nowait
        )
        async with await connect(world, TCP) as client:
            alloc = await client.allocate(transport=TransportProtocol.TCP)
            conn = await client.connect_peer(listener.local_endpoint)
            inbound = await asyncio.wait_for(accepted.get(), 5.0)
            assert inbound.remote_endpoint.host == alloc.relayed_endpoint.host
            got: asyncio.Queue[bytes] = asyncio.Queue()
            inbound.set_handler(got.put_nowait)
            conn.write(b"to peer")
            assert await asyncio.wait_for(got.get(), 5.0) == b"to peer"
            inbound.write(b"to client")
            assert await asyncio.wait_for(conn.read(), 5.0) == b"to client"

            await client.create_permission(PEER_IP)
            accepting = asyncio.ensure_future(client.accept_peer())
            outbound = await world.peer.stack.connect_stream(alloc.relayed_endpoint)
            taken = await asyncio.wait_for(accepting, 5.0)
            assert taken.remote_endpoint == outbound.local_endpoint
            back: asyncio.Queue[bytes] = asyncio.Queue()
            outbound.set_handler(back.put_nowait)
            taken.write(b"accepted")
            assert await asyncio.wait_for(back.get(), 5.0) == b"accepted"
            for c in (conn, inbound, taken, outbound):
                c.close()
                await c.wait_closed()
        listener.close()
        await listener.wait_closed()

    run(body)


def test_a_kicked_allocation_is_lost_at_the_next_refresh_and_recv_raises() -> None:
    async def body(world: World) -> None:
        events: list[TurnClientEvent] = []
        async with await connect(world, on_event=events.append) as client:
            await client.allocate()
            (info,) = world.server.core.allocations()
            assert world.server.kick(info.allocation_id)
            reading = asyncio.ensure_future(client.recv())
            await asyncio.sleep(600.0)  # the refresh at 540 s gets 437
            with pytest.raises(TransactionError, match="lost"):
                await reading
            assert [type(e).__name__ for e in events][-1] == "AllocationLost"

    run(body)


def test_on_data_callback_receives_what_recv_would() -> None:
    async def body(world: World) -> None:
        peer = await UdpPeer.open(world)
        seen: list[tuple[bytes, Endpoint]] = []
        async with await connect(world, on_data=lambda d, p: seen.append((d, p))) as client:
            await client.allocate()
            await client.create_permission(peer.endpoint)
            peer.sock.send(b"one", client.relayed)
            await client.bind_channel(peer.endpoint)
            peer.sock.send(b"two", client.relayed)
            await asyncio.sleep(0.5)
        assert seen == [(b"one", peer.endpoint), (b"two", peer.endpoint)]

    run(body)


def test_close_gives_up_on_an_unreachable_server_after_its_timeout() -> None:
    async def body(world: World) -> None:
        client = await connect(world)
        await client.allocate()
        world.server.close()
        await world.server.wait_closed()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.close(timeout=2.0)
        assert loop.time() - start == pytest.approx(2.0)

    run(body)


def test_stale_nonces_are_renewed_transparently_across_refreshes() -> None:
    async def body(world: World) -> None:
        peer = await UdpPeer.open(world)
        stale = await start_server(
            world.net.add_host("stale", "203.0.113.13"), "203.0.113.13", None, nonce_lifetime=100.0
        )
        try:
            client = await AsyncTurnClient.connect(
                world.client_host.stack,
                Endpoint("203.0.113.13", 3478),
                credentials=(USER, PASSWORD),
            )
            async with client:
                await client.allocate()
                first_nonce = client.core.auth.nonce if client.core.auth else None
                await client.create_permission(peer.endpoint)
                await asyncio.sleep(1800.0)  # refreshes every 240/540 s, nonces last 100 s
                await both_ways(client, peer, b"after stale nonces")
                assert client.core.auth is not None and client.core.auth.nonce != first_nonce
        finally:
            stale.close()
            await stale.wait_closed()

    run(body)


def test_dual_allocation_and_an_ipv6_relay_on_natkit_server() -> None:
    async def body(world: World) -> None:
        dual_host = world.net.add_host("dual", ["203.0.113.14", "2001:db8::14"])
        dual = TurnServerRunner(
            dual_host.stack,
            TurnServerConfig(
                realm=REALM,
                relay_ips=("203.0.113.14", "2001:db8::14"),
                min_port=61000,
                max_port=65535,
                rng=random.Random(5),
            ),
            StaticCredentials.from_passwords({USER: PASSWORD}, REALM),
            listen=[(UDP, Endpoint("203.0.113.14", 3478))],
        )
        await dual.start()
        try:
            client = await AsyncTurnClient.connect(
                world.client_host.stack,
                Endpoint("203.0.113.14", 3478),
                credentials=(USER, PASSWORD),
            )
            async with client:
                alloc = await client.allocate(additional_family=Family.IPV6)
                assert [r.host for r in alloc.relayed] == ["203.0.113.14", "2001:db8::14"]
            # An IPv4 client reaching an IPv6-only peer through an IPv6 relay (RFC 6156).
            v6_peer = world.net.add_host("v6peer", "2001:db8::20")
            got: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
            peer_ep = Endpoint("2001:db8::20", 6000)
            sock = await v6_peer.stack.open_udp(peer_ep, lambda d, a: got.put_nowait((d, a)))
            client = await AsyncTurnClient.connect(
                world.client_host.stack,
                Endpoint("203.0.113.14", 3478),
                credentials=(USER, PASSWORD),
            )
            async with client:
                alloc = await client.allocate(family=Family.IPV6)
                assert alloc.relayed_endpoint.host == "2001:db8::14"
                await client.bind_channel(peer_ep)
                client.send_to(b"to v6", peer_ep)
                assert await asyncio.wait_for(got.get(), 5) == (b"to v6", alloc.relayed_endpoint)
                sock.send(b"from v6", alloc.relayed_endpoint)
                assert await asyncio.wait_for(client.recv(), 5) == (b"from v6", peer_ep)
        finally:
            dual.close()
            await dual.wait_closed()

    run(body)


def test_a_new_client_on_a_crashed_clients_port_recovers_from_437() -> None:
    async def body(world: World) -> float:
        local = Endpoint(CLIENT_IP, 40000)
        crashed = await connect(world, local=local)
        await crashed.allocate()
        await crashed.abort()
        assert len(world.server.core.allocations()) == 1  # left behind
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with await connect(world, local=local) as client:
            alloc = await client.allocate()
            assert alloc.mapped == local
            assert len(world.server.core.allocations()) == 1
        return loop.time() - start

    elapsed = run(body)
    assert elapsed < 2.0


def test_a_tls_redirect_checks_the_alternate_against_alternate_domain(
    tls_ca: trustme.CA, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """A TLS front (its certificate names front.example) answers 300 with
    ALTERNATE-SERVER and ALTERNATE-DOMAIN localhost: the client reconnects and
    checks the alternate's certificate against that name."""
    front_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("front.example").configure_cert(front_ctx)

    async def body(world: World) -> None:
        front = world.net.add_host("front", "203.0.113.15")

        def on_connection(conn: StreamConnection) -> None:
            framer = StreamFramer()

            def on_data(data: bytes) -> None:
                for raw in framer.feed(data) if data else []:
                    req = parse_message(raw)
                    resp = req.error_response(300)
                    resp.add(at.ALTERNATE_SERVER, Endpoint(TURN_IP, 443))
                    resp.add(at.ALTERNATE_DOMAIN, "localhost")
                    conn.write(serialize_message(resp))

            conn.set_handler(on_data)

        listener = await front.stack.listen_stream(
            Endpoint("203.0.113.15", 443), on_connection, tls=front_ctx
        )
        client = await AsyncTurnClient.connect(
            world.client_host.stack,
            Endpoint("203.0.113.15", 443),
            transport=TLS,
            credentials=(USER, PASSWORD),
            tls=tls_client_context,
            server_hostname="front.example",
        )
        async with client:
            alloc = await client.allocate()
            assert alloc.server == Endpoint(TURN_IP, 443)
        listener.close()
        await listener.wait_closed()

    run(body, tls=(tls_server_context, tls_client_context))


def test_a_lossy_link_costs_retransmissions_not_the_allocation() -> None:
    async def body(world: World) -> None:
        lossy = world.net.add_host("lossy", "198.51.100.9", link=Link(delay=0.02, loss=0.2))
        peer = await UdpPeer.open(world)
        events: list[TurnClientEvent] = []
        client = await AsyncTurnClient.connect(
            lossy.stack,
            Endpoint(TURN_IP, 3478),
            credentials=(USER, PASSWORD),
            config=TurnClientConfig(rng=random.Random(8), auto_bind=False),
            on_event=events.append,
        )
        async with client:
            await client.allocate()
            await client.create_permission(peer.endpoint)
            await client.bind_channel(peer.endpoint)
            await asyncio.sleep(3600.0)  # six allocation refreshes, over 20% loss each way
            assert not any(type(e).__name__ == "AllocationLost" for e in events)
            for _ in range(20):  # some data is lost; the allocation is not
                client.send_to(b"still there", peer.endpoint)
            assert (await peer.next())[0] == b"still there"

    run(body)


@pytest.mark.parametrize(("interval", "reached"), [(10.0, True), (None, False)])
def test_keepalives_keep_the_nat_open_for_peers_while_the_client_is_quiet(
    interval: float | None, reached: bool
) -> None:
    async def body(world: World) -> bool:
        peer = await UdpPeer.open(world)
        config = TurnClientConfig(rng=random.Random(3), keepalive_interval=interval)
        async with await connect(world, config=config) as client:
            await client.allocate()
            await client.create_permission(peer.endpoint)
            await client.bind_channel(peer.endpoint)
            await asyncio.sleep(200.0)  # longer than the NAT's UDP mapping lasts (120 s)
            peer.sock.send(b"are you there", client.relayed)
            try:
                await asyncio.wait_for(client.recv(), 5.0)
            except TimeoutError:
                return False
            return True

    assert run(body, behind_nat=True) is reached


@pytest.mark.parametrize("transport", [UDP, TCP])
@pytest.mark.parametrize(("max_redirects", "allocated"), [(3, True), (2, False), (0, False)])
def test_max_redirects_is_the_number_of_redirects_followed(
    transport: Transport, max_redirects: int, allocated: bool
) -> None:
    async def body(world: World) -> None:
        # 203.0.113.31 -> .32 -> .33 -> the TURN server: three redirects.
        chain = ["203.0.113.31", "203.0.113.32", "203.0.113.33", TURN_IP]
        runners = [
            await start_server(
                world.net.add_host(f"front{i}", ip),
                ip,
                None,
                alternate_server=Endpoint(chain[i + 1], 3478),
            )
            for i, ip in enumerate(chain[:-1])
        ]
        try:
            config = TurnClientConfig(rng=random.Random(4), max_redirects=max_redirects)
            client = await AsyncTurnClient.connect(
                world.client_host.stack,
                Endpoint(chain[0], 3478),
                transport=transport,
                credentials=(USER, PASSWORD),
                config=config,
            )
            async with client:
                if allocated:
                    alloc = await client.allocate()
                    assert alloc.server == Endpoint(TURN_IP, 3478)
                else:
                    with pytest.raises(TurnRequestError) as info:
                        await client.allocate()
                    assert info.value.code == 300
                    assert world.server.core.allocations() == []
            asked = [r.core.stats.requests > 0 for r in [*runners, world.server]]
            assert asked == [i <= max_redirects for i in range(4)]
        finally:
            for runner in runners:
                runner.close()
                await runner.wait_closed()

    run(body)


def test_connection_attempts_nobody_accepts_are_bounded_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def body(world: World) -> None:
        async with await connect(world, TCP, attempt_queue_size=3) as client:
            alloc = await client.allocate(transport=TransportProtocol.TCP)
            await client.create_permission(PEER_IP)
            with caplog.at_level("WARNING", logger="natkit.turn.aio.client"):
                peers = [
                    await world.peer.stack.connect_stream(alloc.relayed_endpoint) for _ in range(5)
                ]
                await asyncio.sleep(1.0)
            assert (client.pending_attempts, client.ignored_attempts) == (3, 2)
            warnings = [r for r in caplog.records if r.name == "natkit.turn.aio.client"]
            assert len(warnings) == 1 and "ignoring more" in warnings[0].getMessage()
            taken = await asyncio.wait_for(client.accept_peer(), 5.0)  # the oldest one
            assert taken.remote_endpoint == peers[0].local_endpoint
            for p in (taken, *peers):
                p.close()

    run(body)


def test_connection_attempts_older_than_30_s_are_not_accepted() -> None:
    async def body(world: World) -> None:
        async with await connect(world, TCP) as client:
            alloc = await client.allocate(transport=TransportProtocol.TCP)
            await client.create_permission(PEER_IP)
            stale = await world.peer.stack.connect_stream(alloc.relayed_endpoint)
            await asyncio.sleep(31.0)  # the server closed it unbound (RFC 6062 §5.3)
            assert client.pending_attempts == 0
            accepting = asyncio.ensure_future(client.accept_peer())
            await asyncio.sleep(1.0)
            assert not accepting.done()
            fresh = await world.peer.stack.connect_stream(alloc.relayed_endpoint)
            taken = await asyncio.wait_for(accepting, 5.0)
            assert taken.remote_endpoint == fresh.local_endpoint
            for p in (taken, stale, fresh):
                p.close()

    run(body)


def test_a_waiting_accept_peer_raises_when_the_client_closes() -> None:
    async def body(world: World) -> None:
        client = await connect(world, TCP)
        await client.allocate(transport=TransportProtocol.TCP)
        accepting = asyncio.ensure_future(client.accept_peer())
        await asyncio.sleep(0.1)
        await client.close()
        with pytest.raises(TransactionError, match="closed"):
            await asyncio.wait_for(accepting, 5.0)
        with pytest.raises(TransactionError, match="closed"):
            await client.accept_peer()

    run(body)
