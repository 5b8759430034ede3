"""TLS on the simulated internet: real TLS records over the simulated TCP,
certificates checked as on the OS stack, and through a web-only firewall."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from natkit.addr import Endpoint, Transport
from natkit.errors import TransportError
from natkit.nat.box import NatBox
from natkit.nat.presets import WEB_ONLY
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import StreamConnection
from natkit.rng import seeded_rng

SERVER = "203.0.113.10"


def _echo(conn: StreamConnection) -> None:
    def on_data(data: bytes) -> None:
        if data:
            conn.write(data.upper())
        else:
            conn.close()

    conn.set_handler(on_data)


async def _exchange(conn: StreamConnection, payload: bytes) -> bytes:
    got = bytearray()
    done = asyncio.Event()

    def on_data(data: bytes) -> None:
        got.extend(data)
        if len(got) >= len(payload) or not data:
            done.set()

    conn.set_handler(on_data)
    conn.write(payload)
    await asyncio.wait_for(done.wait(), 60)
    return bytes(got)


@pytest.mark.parametrize("loss", [pytest.param(0.0, id="clean"), pytest.param(0.1, id="lossy")])
def test_tls_round_trip_over_simulated_tcp(
    loss: float, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    payload = b"hello over tls " * 500

    async def main() -> tuple[bytes, Transport, Transport, float]:
        net = Internet(seed=3, default_link=Link(delay=0.02, loss=loss))
        server = net.add_host("server", SERVER)
        client = net.add_host("client", "192.0.2.7")
        accepted: list[StreamConnection] = []

        def on_connection(conn: StreamConnection) -> None:
            accepted.append(conn)
            _echo(conn)

        await server.stack.listen_stream(
            Endpoint("0.0.0.0", 443), on_connection, tls=tls_server_context
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        conn = await client.stack.connect_stream(
            Endpoint(SERVER, 443),
            tls=tls_client_context,
            server_hostname="localhost",
            timeout=60,
        )
        handshake = loop.time() - start
        echoed = await _exchange(conn, payload)
        conn.close()
        return echoed, conn.transport, accepted[0].transport, handshake

    echoed, client_transport, server_transport, handshake = run_virtual(main)
    assert echoed == payload.upper()
    assert client_transport is server_transport is Transport.TLS
    # TCP handshake plus a TLS 1.3 flight: at least two round trips of 80 ms.
    assert handshake >= 0.16


def test_untrusted_certificate_fails_the_connect(tls_server_context: ssl.SSLContext) -> None:
    async def main() -> None:
        net = Internet()
        server = net.add_host("server", SERVER)
        client = net.add_host("client", "192.0.2.7")
        await server.stack.listen_stream(Endpoint("0.0.0.0", 443), _echo, tls=tls_server_context)
        with pytest.raises(TransportError, match="TLS handshake failed"):
            await client.stack.connect_stream(
                Endpoint(SERVER, 443), tls=ssl.create_default_context(), server_hostname="localhost"
            )

    run_virtual(main)


def test_wrong_hostname_fails_the_connect(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        net = Internet()
        server = net.add_host("server", SERVER)
        client = net.add_host("client", "192.0.2.7")
        await server.stack.listen_stream(Endpoint("0.0.0.0", 443), _echo, tls=tls_server_context)
        with pytest.raises(TransportError, match="TLS handshake failed"):
            await client.stack.connect_stream(
                Endpoint(SERVER, 443), tls=tls_client_context, server_hostname="example.org"
            )

    run_virtual(main)


@pytest.mark.parametrize(
    ("port", "passes"),
    [pytest.param(443, True, id="443-passes"), pytest.param(5349, False, id="5349-blocked")],
)
def test_tls_through_a_web_only_firewall(
    port: int,
    passes: bool,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    async def main() -> bytes | None:
        net = Internet(seed=5)
        server = net.add_host("server", SERVER)
        inside = "192.0.2.128/25"
        box = NatBox(WEB_ONLY, [], inside_networks=[inside], rng=seeded_rng(1), trace=False)
        firewall = net.add_middlebox("fw", box, [], inside=inside, routed=True)
        client = net.add_host("client", behind=firewall)
        await server.stack.listen_stream(Endpoint("0.0.0.0", port), _echo, tls=tls_server_context)
        try:
            conn = await client.stack.connect_stream(
                Endpoint(SERVER, port),
                tls=tls_client_context,
                server_hostname="localhost",
                timeout=10,
            )
        except TransportError:
            return None
        return await _exchange(conn, b"web traffic")

    result = run_virtual(main)
    assert (result == b"WEB TRAFFIC") if passes else result is None
