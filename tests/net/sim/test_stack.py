"""The simulated stack's share of the interface beyond plain sockets:
reuse_port streams, ICMP port unreachable, and read pausing (back-pressure)."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from natkit.addr import Endpoint
from natkit.errors import TransportError
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import StreamConnection

SERVER = "203.0.113.10"
PEER = "198.51.100.20"


@pytest.mark.parametrize("use_tls", [pytest.param(False, id="tcp"), pytest.param(True, id="tls")])
def test_reuse_port_connects_from_a_listeners_endpoint(
    use_tls: bool, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    async def main() -> tuple[Endpoint, Endpoint, Endpoint]:
        net = Internet(seed=1)
        server = net.add_host("server", SERVER)
        peer = net.add_host("peer", PEER)
        seen: asyncio.Future[Endpoint] = asyncio.get_running_loop().create_future()
        listener = await peer.stack.listen_stream(
            Endpoint(PEER, 443),
            lambda c: seen.set_result(c.remote_endpoint),
            tls=tls_server_context if use_tls else None,
        )
        relay = await server.stack.listen_stream(
            Endpoint(SERVER, 50000), lambda c: c.abort(), reuse_port=True
        )
        conn = await server.stack.connect_stream(
            listener.local_endpoint,
            local=relay.local_endpoint,
            reuse_port=True,
            tls=tls_client_context if use_tls else None,
            server_hostname="localhost",
        )
        came_from = await asyncio.wait_for(seen, 5)
        # The listener still owns its port: a second connection to the same peer
        # from it would be the same four-tuple.
        with pytest.raises(TransportError, match="in use"):
            await server.stack.connect_stream(
                listener.local_endpoint, local=relay.local_endpoint, reuse_port=True
            )
        return relay.local_endpoint, conn.local_endpoint, came_from

    relay, local, came_from = run_virtual(main)
    assert local == came_from == relay == Endpoint(SERVER, 50000)


def test_without_reuse_port_a_listeners_endpoint_is_taken() -> None:
    async def main() -> None:
        net = Internet(seed=1)
        server = net.add_host("server", SERVER)
        peer = net.add_host("peer", PEER)
        listener = await peer.stack.listen_stream(Endpoint(PEER, 80), lambda c: c.abort())
        relay = await server.stack.listen_stream(
            Endpoint(SERVER, 50000), lambda c: c.abort(), reuse_port=True
        )
        with pytest.raises(TransportError, match="in use"):
            await server.stack.connect_stream(listener.local_endpoint, local=relay.local_endpoint)

    run_virtual(main)


def _icmp_run(port_unreachable: bool) -> tuple[list[tuple[Endpoint, int, int, int, float]], int]:
    async def main() -> tuple[list[tuple[Endpoint, int, int, int, float]], int]:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        server = net.add_host("server", SERVER)
        peer = net.add_host("peer", PEER)
        peer.stack.port_unreachable = port_unreachable
        loop = asyncio.get_running_loop()
        got: list[tuple[Endpoint, int, int, int, float]] = []
        ep = await server.stack.open_udp(
            Endpoint(SERVER, 0),
            lambda d, r: None,
            on_icmp=lambda r, t, c, i: got.append((r, t, c, i, loop.time())),
        )
        start = loop.time()
        ep.send(b"anyone?", Endpoint(PEER, 9))
        await asyncio.sleep(1)
        return [(r, t, c, i, when - start) for r, t, c, i, when in got], net.delivered

    return run_virtual(main)


def test_udp_to_a_closed_port_reports_icmp_port_unreachable() -> None:
    got, _ = _icmp_run(port_unreachable=True)
    assert len(got) == 1
    remote, icmp_type, icmp_code, info, after = got[0]
    assert (remote, icmp_type, icmp_code, info) == (Endpoint(PEER, 9), 3, 3, 0)
    assert after == pytest.approx(0.04)  # there (two links) and back


def test_closed_ports_are_silent_by_default() -> None:
    got, delivered = _icmp_run(port_unreachable=False)
    assert got == []
    assert delivered == 1


async def _paused_transfer(use_tls: bool, tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> list[int]:
    """Pause the receiver, write, look at the sender's buffer; resume, look again."""
    net = Internet(seed=1, default_link=Link(delay=0.01))
    server = net.add_host("server", SERVER)
    client = net.add_host("client", PEER)
    accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
    await server.stack.listen_stream(
        Endpoint(SERVER, 443), accepted.put_nowait, tls=tls[0] if use_tls else None
    )
    conn = await client.stack.connect_stream(
        Endpoint(SERVER, 443), tls=tls[1] if use_tls else None, server_hostname="localhost"
    )
    receiver = await accepted.get()
    got = bytearray()
    receiver.set_handler(got.extend)
    receiver.pause_reading()
    conn.write(b"x" * 10_000)
    await asyncio.sleep(0.5)
    sizes = [len(got), conn.write_buffer_size]
    receiver.resume_reading()
    await asyncio.sleep(0.5)
    sizes += [len(got), conn.write_buffer_size]
    conn.close()
    return sizes


@pytest.mark.parametrize("use_tls", [pytest.param(False, id="tcp"), pytest.param(True, id="tls")])
def test_pause_reading_holds_delivery_and_the_senders_buffer_fills(
    use_tls: bool, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    held, buffered, delivered, left = run_virtual(
        lambda: _paused_transfer(use_tls, (tls_server_context, tls_client_context))
    )
    assert held == 0
    assert buffered >= 10_000  # unacknowledged while the reader's window is closed
    assert delivered == 10_000
    assert left == 0


def test_drain_waits_for_a_paused_reader() -> None:
    async def main() -> tuple[float, int]:
        net = Internet(seed=1, default_link=Link(delay=0.01))
        server = net.add_host("server", SERVER)
        client = net.add_host("client", PEER)
        accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()
        await server.stack.listen_stream(Endpoint(SERVER, 80), accepted.put_nowait)
        conn = await client.stack.connect_stream(Endpoint(SERVER, 80))
        receiver = await accepted.get()
        got = bytearray()
        receiver.set_handler(got.extend)
        receiver.pause_reading()
        conn.write(b"x" * 200_000)
        loop = asyncio.get_running_loop()
        loop.call_later(3.0, receiver.resume_reading)
        start = loop.time()
        await conn.drain()
        return loop.time() - start, len(got)

    waited, delivered = run_virtual(main)
    assert 3.0 <= waited < 4.0  # until the window opened and the ACKs came back
    assert delivered == 200_000
