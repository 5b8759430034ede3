"""The runner on the Stack interface's ICMP and reuse_port: a relayed
datagram to a closed port comes back to the client as a Data indication with
the ICMP attribute (RFC 8656 §11.5), and an RFC 6062 Connect reaches the peer
from the relayed transport address itself (§5.2), on loopback and simulated."""

from __future__ import annotations

import asyncio

import pytest

from natkit.addr import Endpoint, Transport
from natkit.net.os_stack import ICMP_SUPPORTED, OsStack
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import Stack, StreamConnection
from natkit.stun import attributes as at
from natkit.stun.constants import Method
from natkit.stun.message import parse_message
from natkit.turn import attributes as tat
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.attributes import IcmpValue, TransportProtocol
from tests.turn.aio._runner_client import HandClient
from tests.turn.aio.test_runner import CREDENTIALS, LO, config

UDP, TCP = Transport.UDP, Transport.TCP
SERVER_IP, PEER_IP = "203.0.113.10", "198.51.100.20"


async def _icmp_indication(
    client_stack: Stack, server: Endpoint, closed: Endpoint, local: Endpoint | None = None
) -> tuple[Endpoint | None, IcmpValue | None, bytes | None]:
    client = await HandClient.udp(client_stack, server, local)
    try:
        await client.allocate()
        await client.permit(closed)
        client.send_indication(closed, b"is anyone there?")
        msg = parse_message(await asyncio.wait_for(client.inbox.get(), 5))
        assert msg.method == Method.DATA
        return msg.get(at.XOR_PEER_ADDRESS), msg.get(tat.ICMP), msg.get(at.DATA)
    finally:
        client.close()


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
async def test_send_to_a_closed_port_yields_an_icmp_data_indication_on_loopback() -> None:
    stack = OsStack()
    probe = await stack.open_udp(Endpoint(LO, 0), lambda d, r: None)
    closed = probe.local_endpoint
    probe.close()
    await probe.wait_closed()
    async with TurnServerRunner(
        stack, config(), CREDENTIALS, listen=[(UDP, Endpoint(LO, 0))]
    ) as runner:
        peer, icmp, data = await _icmp_indication(stack, runner.endpoint(UDP), closed)
    assert peer == closed
    assert icmp == IcmpValue(3, 3, 0)  # destination unreachable: port unreachable
    assert data is None  # RFC 8656 §11.5: ICMP instead of DATA


def test_send_to_a_closed_port_yields_an_icmp_data_indication_simulated() -> None:
    async def main() -> tuple[Endpoint | None, IcmpValue | None, bytes | None]:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        server = net.add_host("turn", SERVER_IP)
        peer = net.add_host("peer", PEER_IP)
        client = net.add_host("client", "192.0.2.7")
        peer.stack.port_unreachable = True
        async with TurnServerRunner(
            server.stack,
            config(relay_ips=(SERVER_IP,), allowed_peers=()),
            CREDENTIALS,
            listen=[(UDP, Endpoint(SERVER_IP, 3478))],
        ):
            return await _icmp_indication(
                client.stack,
                Endpoint(SERVER_IP, 3478),
                Endpoint(PEER_IP, 9),
                Endpoint("0.0.0.0", 0),
            )

    peer, icmp, data = run_virtual(main)
    assert (peer, icmp, data) == (Endpoint(PEER_IP, 9), IcmpValue(3, 3, 0), None)


def test_rfc6062_connect_comes_from_the_relayed_address_simulated() -> None:
    async def main() -> tuple[Endpoint, Endpoint, bytes]:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        server = net.add_host("turn", SERVER_IP)
        peer = net.add_host("peer", PEER_IP)
        client_host = net.add_host("client", "192.0.2.7")
        accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
        await peer.stack.listen_stream(Endpoint(PEER_IP, 80), accepted.put_nowait)
        turn = Endpoint(SERVER_IP, 3478)
        async with TurnServerRunner(
            server.stack,
            config(relay_ips=(SERVER_IP,), allowed_peers=()),
            CREDENTIALS,
            listen=[(TCP, turn)],
        ):
            control = await HandClient.stream(client_host.stack, turn)
            data = await HandClient.stream(client_host.stack, turn)
            relay = await control.allocate(transport=TransportProtocol.TCP)
            await control.permit(Endpoint(PEER_IP, 80))
            cid = await control.connect_peer(Endpoint(PEER_IP, 80))
            peer_conn = await asyncio.wait_for(accepted.get(), 5)
            await data.connection_bind(cid)
            got: asyncio.Queue[bytes] = asyncio.Queue()
            peer_conn.set_handler(got.put_nowait)
            assert data.conn is not None
            data.conn.write(b"raw")
            received = await asyncio.wait_for(got.get(), 5)
            control.close()
            data.close()
            return relay, peer_conn.remote_endpoint, received

    relay, came_from, received = run_virtual(main)
    assert came_from == relay
    assert received == b"raw"


@pytest.mark.skipif(not ICMP_SUPPORTED, reason="ICMP reporting needs Linux's IP_RECVERR")
def test_icmp_data_indication_on_uvloop() -> None:
    """turn-server runs on uvloop, whose UDP transport reports the error too."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> IcmpValue | None:
        stack = OsStack()
        probe = await stack.open_udp(Endpoint(LO, 0), lambda d, r: None)
        closed = probe.local_endpoint
        probe.close()
        await probe.wait_closed()
        async with TurnServerRunner(
            stack, config(), CREDENTIALS, listen=[(UDP, Endpoint(LO, 0))]
        ) as runner:
            _, icmp, _ = await _icmp_indication(stack, runner.endpoint(UDP), closed)
        return icmp

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(asyncio.wait_for(main(), 10)) == IcmpValue(3, 3, 0)


def test_rfc6062_bridge_back_pressure_simulated() -> None:
    """A client that stops reading its data connection: the runner stops reading
    the peer's connection (the peer's unacknowledged bytes pile up), and
    everything arrives in order once the client reads again."""

    async def main() -> tuple[bool, int, bytes, bytes]:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        server = net.add_host("turn", SERVER_IP)
        peer = net.add_host("peer", PEER_IP)
        client_host = net.add_host("client", "192.0.2.7")
        accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
        await peer.stack.listen_stream(Endpoint(PEER_IP, 80), accepted.put_nowait)
        turn = Endpoint(SERVER_IP, 3478)
        async with TurnServerRunner(
            server.stack,
            config(relay_ips=(SERVER_IP,), allowed_peers=()),
            CREDENTIALS,
            listen=[(TCP, turn)],
            bridge_buffer=64 * 1024,
        ) as runner:
            control = await HandClient.stream(client_host.stack, turn)
            data = await HandClient.stream(client_host.stack, turn)
            await control.allocate(transport=TransportProtocol.TCP)
            await control.permit(Endpoint(PEER_IP, 80))
            cid = await control.connect_peer(Endpoint(PEER_IP, 80))
            peer_conn = await asyncio.wait_for(accepted.get(), 5)
            await data.connection_bind(cid)
            assert data.conn is not None and data.raw is not None
            data.conn.pause_reading()
            big = bytes(range(256)) * 4096  # 1 MiB
            peer_conn.write(big)
            await asyncio.sleep(5)
            bridge = runner._peers[cid].pipe
            paused = bridge is not None and bridge.paused
            piled_up = peer_conn.write_buffer_size
            data.conn.resume_reading()
            got = b""
            while len(got) < len(big):
                got += await asyncio.wait_for(data.raw.get(), 60)
            control.close()
            data.close()
            return paused, piled_up, got, big

    paused, piled_up, got, big = run_virtual(main)
    assert paused
    assert piled_up > 512 * 1024  # held at the peer, not buffered in the server
    assert got == big
