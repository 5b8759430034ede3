"""The SIP transport layer on the OS stack, on loopback: UDP, TCP, TLS, WSS."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from natkit.addr import Endpoint
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng
from natkit.sip.aio.transport import SipTransportConfig, SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response
from natkit.sip.via_routing import client_via, response_target
from natkit.stun import attributes as stun_attributes
from natkit.stun.constants import Method
from natkit.stun.message import StunMessage
from natkit.stun.message import parse_message as parse_stun
from natkit.stun.message import serialize_message as serialize_stun

LOOPBACK = Endpoint("127.0.0.1", 0)


def _options(transport: SipTransport, call_id: str) -> bytes:
    via = client_via(transport, Endpoint("127.0.0.1", 5999), seeded_rng(1))
    return (
        f"OPTIONS sip:bob@example.org SIP/2.0\r\nVia: {via}\r\n"
        "To: <sip:bob@example.org>\r\nFrom: <sip:alice@example.org>;tag=a1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _echo_server(
    tls: ssl.SSLContext,
) -> tuple[SipTransportLayer, dict[SipTransport, Endpoint]]:
    tasks: list[asyncio.Task[str]] = []
    layer: SipTransportLayer

    def on_message(msg: SipMessage, source: Source) -> None:
        if isinstance(msg, SipRequest):
            response = make_response(msg, 200)
            target = response_target(response, source)
            assert target is not None
            tasks.append(asyncio.ensure_future(layer.send(response, target)))

    layer = SipTransportLayer(OsStack(), on_message, rng=seeded_rng(4))
    bound = {}
    for transport in SipTransport:
        bound[transport] = await layer.listen(
            transport, LOOPBACK, tls=tls if transport.secure else None
        )
    return layer, bound


@pytest.mark.parametrize("transport", [pytest.param(t, id=t.value) for t in SipTransport])
async def test_round_trip_on_loopback(
    transport: SipTransport, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    server, bound = await _echo_server(tls_server_context)
    got: asyncio.Queue[SipMessage] = asyncio.Queue()
    client = SipTransportLayer(
        OsStack(),
        lambda msg, src: got.put_nowait(msg),
        config=SipTransportConfig(tls_client=tls_client_context, server_hostname="localhost"),
        rng=seeded_rng(5),
    )
    await client.listen(SipTransport.UDP, LOOPBACK)
    try:
        await client.send(_options(transport, "os-1"), Target(transport, bound[transport]))
        response = await asyncio.wait_for(got.get(), 10)
        assert isinstance(response, SipResponse)
        assert (response.status, response.call_id) == (200, "os-1")
    finally:
        client.close()
        server.close()
        await client.wait_closed()
        await server.wait_closed()


async def test_stun_binding_on_the_sip_port_on_loopback(tls_server_context: ssl.SSLContext) -> None:
    server, bound = await _echo_server(tls_server_context)
    stack = OsStack()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    sock = await stack.open_udp(LOOPBACK, lambda d, r: got.put_nowait(d))
    try:
        request = StunMessage.request(Method.BINDING, b"abcdefghijkl")
        sock.send(serialize_stun(request), bound[SipTransport.UDP])
        answer = parse_stun(await asyncio.wait_for(got.get(), 10))
        assert answer.get(stun_attributes.XOR_MAPPED_ADDRESS) == sock.local_endpoint
    finally:
        sock.close()
        server.close()
        await server.wait_closed()


async def test_crlf_ping_and_malformed_input_on_loopback_tcp(
    tls_server_context: ssl.SSLContext,
) -> None:
    server, bound = await _echo_server(tls_server_context)
    reader, writer = await asyncio.open_connection("127.0.0.1", bound[SipTransport.TCP].port)
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(_options(SipTransport.TCP, "ok").replace(b"Content-Length: 0", b"l: five"))
        answer = await asyncio.wait_for(reader.read(), 5)  # 400, then the server closes
        assert answer.startswith(b"SIP/2.0 400 Bad Request\r\n")
    finally:
        writer.close()
        server.close()
        await server.wait_closed()
