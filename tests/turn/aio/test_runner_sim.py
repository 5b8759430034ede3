"""TurnServerRunner unchanged on the simulated internet (virtual clock): a
client behind a symmetric NAT relays to a public peer, allocations expire and
their relay sockets are parked, then closed, and TLS on port 443 passes a web-only firewall."""

from __future__ import annotations

import asyncio
import ssl

from natkit.addr import Endpoint, Transport
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.turn.aio.relay_pool import PARKED_IDLE
from natkit.turn.aio.server import TurnServerRunner
from tests.turn.aio._runner_client import HandClient, Peer
from tests.turn.aio.test_runner import CREDENTIALS, config

SERVER_IP, PEER_IP, NAT_IP = "203.0.113.10", "198.51.100.20", "198.51.100.1"
UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS


def _world(preset: str = "symmetric") -> tuple[Internet, SimHost, SimHost, SimHost]:
    net = Internet(seed=1, default_link=Link(delay=0.01))
    server = net.add_host("turn", SERVER_IP)
    peer = net.add_host("peer", PEER_IP)
    if PRESETS[preset].translate:
        box = NatBox(PRESETS[preset], [NAT_IP], inside_networks=["192.168.1.0/24"])
        nat = net.add_middlebox("nat", box, [NAT_IP], inside="192.168.1.0/24")
    else:  # a firewall: hosts behind it keep public addresses
        inside = "192.0.2.128/25"
        box = NatBox(PRESETS[preset], [], inside_networks=[inside], trace=False)
        nat = net.add_middlebox("fw", box, [], inside=inside, routed=True)
    alice = net.add_host("alice", behind=nat)
    return net, server, peer, alice


def _runner(
    server: SimHost, listen: list[tuple[Transport, Endpoint]], **kw: object
) -> TurnServerRunner:
    return TurnServerRunner(
        server.stack,
        config(relay_ips=(SERVER_IP,), allowed_peers=()),
        CREDENTIALS,
        listen=listen,
        **kw,  # type: ignore[arg-type]
    )


def test_client_behind_a_symmetric_nat_relays_through_channels() -> None:
    async def main() -> tuple[Endpoint, bytes, object]:
        _, server, peer_host, alice = _world()
        async with _runner(server, [(UDP, Endpoint(SERVER_IP, 3478))]):
            client = await HandClient.udp(
                alice.stack, Endpoint(SERVER_IP, 3478), Endpoint("0.0.0.0", 0)
            )
            peer = await Peer.open(peer_host.stack, Endpoint(PEER_IP, 5000))
            relay = await client.allocate()
            await client.bind_channel(0x4000, peer.endpoint)
            client.send_channel(0x4000, b"from behind the NAT")
            got, src = await peer.recv()
            peer.send(b"reply", relay)
            back = await client.next_data()
            return src, got, back

    src, got, back = run_virtual(main)
    assert src.host == SERVER_IP and got == b"from behind the NAT"
    assert back == (0x4000, b"reply")


def test_expired_allocations_park_their_relay_sockets_then_close_them() -> None:
    async def main() -> list[tuple[int, int, bool]]:
        _, server, _, alice = _world("full-cone")
        runner = _runner(server, [(UDP, Endpoint(SERVER_IP, 3478))])
        seen: list[tuple[int, int, bool]] = []
        async with runner:
            clients = [
                await HandClient.udp(alice.stack, Endpoint(SERVER_IP, 3478), Endpoint("0.0.0.0", 0))
                for _ in range(5)
            ]
            relays = [await c.allocate() for c in clients]
            socks = [runner.relays[r] for r in relays]

            def state() -> None:
                closed = all(s.closed for s in socks)
                seen.append((len(runner.relays), len(runner.relay_pool), closed))

            state()
            await asyncio.sleep(601)  # virtual time: the 600 s lifetime runs out
            state()  # parked: bound, for the next allocations
            await asyncio.sleep(PARKED_IDLE + 1)
            state()  # nobody took them: closed
        return seen

    assert run_virtual(main) == [(5, 0, False), (0, 5, False), (0, 0, True)]


def test_tls_on_443_through_a_web_only_firewall(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    async def main() -> bytes:
        _, server, peer_host, alice = _world("web-only")
        listen = [(UDP, Endpoint(SERVER_IP, 3478)), (TLS, Endpoint(SERVER_IP, 443))]
        async with _runner(server, listen, tls=tls_server_context):
            client = await HandClient.stream(
                alice.stack, Endpoint(SERVER_IP, 443), tls=tls_client_context
            )
            peer = await Peer.open(peer_host.stack, Endpoint(PEER_IP, 5000))
            relay = await client.allocate()
            await client.permit(peer.endpoint)
            peer.send(b"through the firewall", relay)
            who, data = await client.next_data()
            assert who == peer.endpoint
            client.close()
            return data

    assert run_virtual(main) == b"through the firewall"


def test_idle_streams_without_an_allocation_are_dropped_and_others_kept() -> None:
    async def main() -> tuple[bool, bool, int]:
        _, server, _, alice = _world("full-cone")
        listen = [(TCP, Endpoint(SERVER_IP, 3478))]
        runner = _runner(server, listen, idle_timeout=30.0)
        async with runner:
            silent = await alice.stack.connect_stream(Endpoint(SERVER_IP, 3478))
            silent.set_handler(lambda data: None)
            working = await HandClient.stream(alice.stack, Endpoint(SERVER_IP, 3478))
            await working.allocate()
            await asyncio.sleep(100)  # virtual: past the idle timeout, within the lifetime
            return silent.closed, working.closed.is_set(), len(runner.core.allocations())

    silent_closed, working_closed, allocations = run_virtual(main)
    assert silent_closed and not working_closed and allocations == 1


def test_credentials_are_refreshed_periodically_and_a_failure_is_not_fatal() -> None:
    calls: list[float] = []

    async def refresh() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) == 2:
            raise ConnectionError("store unreachable")

    async def main() -> Endpoint:
        _, server, _, alice = _world("full-cone")
        listen = [(UDP, Endpoint(SERVER_IP, 3478))]
        async with _runner(server, listen, refresh_credentials=refresh, refresh_interval=5.0):
            await asyncio.sleep(16)
            client = await HandClient.udp(
                alice.stack, Endpoint(SERVER_IP, 3478), Endpoint("0.0.0.0", 0)
            )
            return await client.allocate()

    relay = run_virtual(main)
    assert relay.host == SERVER_IP
    assert [round(t) for t in calls] == [5, 10, 15]
