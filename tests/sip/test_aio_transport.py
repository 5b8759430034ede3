"""The SIP transport layer on the simulated internet: UDP, TCP, TLS, WS, WSS,
keepalives (RFC 5626 §4.4.1, §8), malformed input, flows and connection reuse."""

from __future__ import annotations

import asyncio
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.errors import TransportError
from natkit.net.sim import Internet, SimHost, run_virtual
from natkit.net.stack import StreamConnection
from natkit.rng import seeded_rng
from natkit.sip.aio.transport import FlowGoneError, SipTransportConfig, SipTransportLayer
from natkit.sip.flow import FlowId, SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from natkit.sip.via_routing import client_via, response_target
from natkit.stun import attributes as stun_attributes
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage
from natkit.stun.message import parse_message as parse_stun
from natkit.stun.message import serialize_message as serialize_stun

SERVER_IP = "203.0.113.10"
CLIENT_IP = "192.0.2.7"
PORTS = {
    SipTransport.UDP: 5060,
    SipTransport.TCP: 5060,
    SipTransport.TLS: 5061,
    SipTransport.WS: 80,
    SipTransport.WSS: 443,
}


def options(transport: SipTransport, *, call_id: str = "c1", body: bytes = b"") -> bytes:
    via = client_via(transport, Endpoint("10.0.0.1", 5070), seeded_rng(len(call_id)))
    return (
        f"OPTIONS sip:bob@example.org SIP/2.0\r\nVia: {via}\r\n"
        "To: <sip:bob@example.org>\r\nFrom: <sip:alice@example.org>;tag=a1\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class Recorder:
    messages: asyncio.Queue[tuple[SipMessage, Source]] = field(default_factory=asyncio.Queue)
    closed: list[FlowId] = field(default_factory=list)
    pongs: list[FlowId] = field(default_factory=list)

    def on_message(self, msg: SipMessage, source: Source) -> None:
        self.messages.put_nowait((msg, source))

    async def next(self) -> tuple[SipMessage, Source]:
        return await asyncio.wait_for(self.messages.get(), 30)


class EchoServer:
    """Answers every request 200 where §18.2.2 / RFC 3581 say (response_target)."""

    def __init__(self, host: SimHost, tls: ssl.SSLContext | None, **config: object) -> None:
        self.seen: list[tuple[SipRequest, Source]] = []
        self.closed: list[FlowId] = []
        self.layer = SipTransportLayer(
            host.stack,
            self.on_message,
            on_flow_closed=self.closed.append,
            config=SipTransportConfig(**config),  # type: ignore[arg-type]
            rng=seeded_rng(1),
        )
        self.tls = tls
        self.tasks: list[asyncio.Task[FlowId]] = []

    async def start(self, *transports: SipTransport) -> None:
        for t in transports or tuple(SipTransport):
            tls = self.tls if t.secure else None
            await self.layer.listen(t, Endpoint("0.0.0.0", PORTS[t]), tls=tls)

    def on_message(self, msg: SipMessage, source: Source) -> None:
        if isinstance(msg, SipRequest):
            self.seen.append((msg, source))
            response = make_response(msg, 200)
            target = response_target(response, source)
            assert target is not None
            self.tasks.append(asyncio.ensure_future(self.layer.send(response, target)))


async def _client(host: SimHost, tls: ssl.SSLContext | None, rec: Recorder) -> SipTransportLayer:
    layer = SipTransportLayer(
        host.stack,
        rec.on_message,
        on_flow_closed=rec.closed.append,
        on_pong=rec.pongs.append,
        config=SipTransportConfig(tls_client=tls, server_hostname="localhost"),
        rng=seeded_rng(2),
    )
    await layer.listen(SipTransport.UDP, Endpoint("0.0.0.0", 5070))
    return layer


def _world() -> tuple[Internet, SimHost, SimHost]:
    net = Internet(seed=5)
    return net, net.add_host("server", SERVER_IP), net.add_host("client", CLIENT_IP)


@pytest.mark.parametrize("transport", [pytest.param(t, id=t.value) for t in SipTransport])
def test_request_and_response_over_every_transport(
    transport: SipTransport, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, tls_server_context)
        await server.start()
        rec = Recorder()
        client = await _client(client_host, tls_client_context, rec)
        target = Target(transport, Endpoint(SERVER_IP, PORTS[transport]))
        flow1 = await client.send(options(transport, call_id="one"), target)
        response, source = await rec.next()
        assert isinstance(response, SipResponse)
        assert response.status == 200
        assert response.call_id == "one"
        assert source.transport is transport
        assert source.flow == flow1
        request, req_source = server.seen[0]
        assert req_source.transport is transport
        assert req_source.remote.host == CLIENT_IP
        # RFC 3581 §4: received and rport stamped on the private sent-by.
        assert request.top_via.received == CLIENT_IP
        assert request.top_via.rport == req_source.remote.port
        flow2 = await client.send(options(transport, call_id="two"), target)
        response2, _ = await rec.next()
        assert response2.call_id == "two"
        assert flow2 == flow1  # §18.1.1: the connection (or UDP pair) is reused
        if transport.reliable:
            assert len(client.flows()) == 1
            assert len(server.layer.flows()) == 1
        client.close()
        server.layer.close()

    run_virtual(main)


def test_stun_binding_on_the_sip_udp_port_is_answered() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        sock = await client_host.stack.open_udp(
            Endpoint("0.0.0.0", 4000), lambda d, r: got.put_nowait(d)
        )
        request = StunMessage.request(Method.BINDING, b"123456789012")
        sock.send(serialize_stun(request, fingerprint=True), Endpoint(SERVER_IP, 5060))
        answer = parse_stun(await asyncio.wait_for(got.get(), 10))
        assert answer.message_class is MessageClass.SUCCESS
        assert answer.transaction_id == b"123456789012"
        assert answer.get(stun_attributes.XOR_MAPPED_ADDRESS) == Endpoint(CLIENT_IP, 4000)
        assert answer.has_fingerprint
        # A CRLF keepalive over UDP and a STUN response are swallowed; SIP still works.
        sock.send(b"\r\n\r\n", Endpoint(SERVER_IP, 5060))
        sock.send(serialize_stun(request.success()), Endpoint(SERVER_IP, 5060))
        sock.send(options(SipTransport.UDP), Endpoint(SERVER_IP, 5060))
        reply = parse_message(await asyncio.wait_for(got.get(), 10))
        assert isinstance(reply, SipResponse)
        assert len(server.seen) == 1

    run_virtual(main)


async def _raw_stream(host: SimHost) -> tuple[StreamConnection, asyncio.Queue[bytes]]:
    conn = await host.stack.connect_stream(Endpoint(SERVER_IP, 5060))
    got: asyncio.Queue[bytes] = asyncio.Queue()
    conn.set_handler(got.put_nowait)
    return conn, got


async def _read_until(got: asyncio.Queue[bytes], marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = await asyncio.wait_for(got.get(), 30)
        if not chunk:
            break
        data += chunk
    return data


def test_crlf_ping_on_tcp_is_answered_with_a_pong() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        conn, got = await _raw_stream(client_host)
        conn.write(b"\r\n\r\n")
        assert await asyncio.wait_for(got.get(), 10) == b"\r\n"
        conn.write(b"\r\n")  # a lone CRLF before a message is ignorable
        conn.write(options(SipTransport.TCP))
        answer = await _read_until(got, b"\r\n\r\n")
        assert answer.startswith(b"SIP/2.0 200 OK")

    run_virtual(main)


def test_client_sees_pongs_and_sends_pings() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        flow = await client.send(
            options(SipTransport.TCP), Target(SipTransport.TCP, Endpoint(SERVER_IP, 5060))
        )
        await rec.next()
        client.send_ping(flow)
        await asyncio.sleep(1)
        assert rec.pongs == [flow]

    run_virtual(main)


def test_malformed_datagram_is_answered_400_and_the_server_keeps_serving() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        sock = await client_host.stack.open_udp(
            Endpoint("0.0.0.0", 4000), lambda d, r: got.put_nowait(d)
        )
        bad = options(SipTransport.UDP).replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        sock.send(bad, Endpoint(SERVER_IP, 5060))
        answer = await asyncio.wait_for(got.get(), 10)
        assert answer.startswith(b"SIP/2.0 400 ")
        assert b"Call-ID: c1" in answer
        sock.send(b"\xff garbage", Endpoint(SERVER_IP, 5060))  # dropped
        sock.send(b"SIP/2.0 200 OK\r\n\r\n", Endpoint(SERVER_IP, 5060))  # bad response: dropped
        sock.send(options(SipTransport.UDP), Endpoint(SERVER_IP, 5060))
        ok = await asyncio.wait_for(got.get(), 10)
        assert ok.startswith(b"SIP/2.0 200 OK")
        assert len(server.seen) == 1

    run_virtual(main)


def test_lost_framing_on_tcp_is_answered_400_then_closed() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        conn, got = await _raw_stream(client_host)
        conn.write(options(SipTransport.TCP).replace(b"Content-Length: 0", b"Content-Length: -999"))
        data = b""
        while True:
            chunk = await asyncio.wait_for(got.get(), 30)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"SIP/2.0 400 Bad Request\r\n")
        assert len(server.closed) == 1
        conn2, got2 = await _raw_stream(client_host)
        conn2.write(options(SipTransport.TCP))
        assert (await _read_until(got2, b"\r\n\r\n")).startswith(b"SIP/2.0 200 OK")

    run_virtual(main)


def test_a_closed_flow_is_reported_and_a_pinned_target_fails() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        await client.send(
            options(SipTransport.TCP), Target(SipTransport.TCP, Endpoint(SERVER_IP, 5060))
        )
        await rec.next()
        server_flow = server.seen[0][1].flow
        assert server.layer.flow(server_flow) is not None
        client.close()
        await asyncio.sleep(1)
        assert server.closed == [server_flow]
        assert server.layer.flow(server_flow) is None
        with pytest.raises(FlowGoneError):
            await server.layer.send(
                b"x", Target(SipTransport.TCP, Endpoint(CLIENT_IP, 1), server_flow)
            )

    run_virtual(main)


def test_idle_connections_are_closed() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None, idle_timeout=60.0)
        await server.start(SipTransport.TCP)
        conn, got = await _raw_stream(client_host)
        await asyncio.sleep(30)
        conn.write(b"\r\n\r\n")  # activity pushes the deadline
        assert await asyncio.wait_for(got.get(), 10) == b"\r\n"
        await asyncio.sleep(45)
        assert len(server.layer.flows()) == 1
        await asyncio.sleep(30)
        assert server.layer.flows() == []
        assert len(server.closed) == 1

    run_virtual(main)


def test_connection_cap_refuses_extra_connections() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None, max_connections=1)
        await server.start(SipTransport.TCP)
        await _raw_stream(client_host)
        _conn2, got2 = await _raw_stream(client_host)
        assert await asyncio.wait_for(got2.get(), 10) == b""
        assert len(server.layer.flows()) == 1

    run_virtual(main)


def test_connect_failure_is_a_transport_error() -> None:
    async def main() -> None:
        _, _server_host, client_host = _world()
        client = await _client(client_host, None, Recorder())
        with pytest.raises(TransportError):
            await client.send(
                options(SipTransport.TCP), Target(SipTransport.TCP, Endpoint(SERVER_IP, 5999))
            )

    run_virtual(main)


def test_large_request_goes_over_tcp_when_enabled() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP, SipTransport.TCP)
        rec = Recorder()
        layer = SipTransportLayer(
            client_host.stack,
            rec.on_message,
            config=SipTransportConfig(large_requests_over_tcp=True),
            rng=seeded_rng(3),
        )
        await layer.listen(SipTransport.UDP, Endpoint("0.0.0.0", 5070))
        request = parse_message(options(SipTransport.UDP, body=b"x" * 1400))
        small = parse_message(options(SipTransport.UDP, call_id="small"))
        await layer.send(request, Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060)))
        await layer.send(small, Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060)))
        await rec.next()
        await rec.next()
        transports = {src.transport for _, src in server.seen}
        assert transports == {SipTransport.TCP, SipTransport.UDP}
        big = next(req for req, src in server.seen if src.transport is SipTransport.TCP)
        assert len(big.body) == 1400

    run_virtual(main)


def test_websocket_without_the_sip_subprotocol_is_rejected() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.WS)
        conn = await client_host.stack.connect_stream(Endpoint(SERVER_IP, 80))
        got: asyncio.Queue[bytes] = asyncio.Queue()
        conn.set_handler(got.put_nowait)
        conn.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = await _read_until(got, b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400")

    run_virtual(main)


def test_websocket_client_like_a_browser() -> None:
    """RFC 7118 §5: a message per WS message, no Content-Length needed, split
    over fragments; a "\\r\\n\\r\\n" message gets "\\r\\n"; WS pings get pongs."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage

    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.WS)
        conn = await client_host.stack.connect_stream(Endpoint(SERVER_IP, 80))
        ws = WSConnection(ConnectionType.CLIENT)
        events: asyncio.Queue[object] = asyncio.Queue()

        def on_data(data: bytes) -> None:
            ws.receive_data(data or None)
            for event in ws.events():
                events.put_nowait(event)

        conn.set_handler(on_data)
        conn.write(ws.send(Request(host="example.org", target="/", subprotocols=["sip"])))
        accepted = await asyncio.wait_for(events.get(), 10)
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "sip"
        text = options(SipTransport.WS).decode().replace("Content-Length: 0\r\n", "")
        conn.write(ws.send(TextMessage(data=text[:50], message_finished=False)))
        conn.write(ws.send(TextMessage(data=text[50:], message_finished=True)))
        reply = await asyncio.wait_for(events.get(), 10)
        assert isinstance(reply, TextMessage)
        assert reply.data.startswith("SIP/2.0 200 OK")
        conn.write(ws.send(TextMessage(data="\r\n\r\n")))
        pong = await asyncio.wait_for(events.get(), 10)
        assert isinstance(pong, TextMessage)
        assert pong.data == "\r\n"
        conn.write(ws.send(Ping(payload=b"hi")))
        ws_pong = await asyncio.wait_for(events.get(), 10)
        assert isinstance(ws_pong, Pong)
        assert server.seen[0][1].transport is SipTransport.WS

    run_virtual(main)


def test_tcp_fed_a_byte_at_a_time() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        conn, got = await _raw_stream(client_host)
        stream = (
            options(SipTransport.TCP, call_id="a")
            + b"\r\n\r\n"
            + options(SipTransport.TCP, call_id="b")
        )
        for i in range(len(stream)):
            conn.write(stream[i : i + 1])
            await asyncio.sleep(0.001)
        data = await _read_until(got, b"Call-ID: b")
        assert data.count(b"SIP/2.0 200 OK") == 2
        assert [req.call_id for req, _ in server.seen] == ["a", "b"]

    run_virtual(main)


def test_udp_flow_ids_name_the_endpoint_pair() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        await client.send(
            options(SipTransport.UDP), Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060))
        )
        await rec.next()
        source = server.seen[0][1]
        assert server.layer.flow(source.flow) == source
        assert len(source.flow) <= 64  # fits a flow token (flow_token.MAX_FLOW_ID_BYTES)
        # Sending over the pinned flow reaches the client from the same 5-tuple.
        await server.layer.send(
            options(SipTransport.UDP, call_id="back"),
            Target(SipTransport.UDP, Endpoint("0.0.0.0", 1), source.flow),
        )
        msg, back_source = await rec.next()
        assert msg.call_id == "back"
        assert back_source.remote == Endpoint(SERVER_IP, 5060)

    run_virtual(main)


TORTURE = Path(__file__).resolve().parents[1] / "data" / "sip_torture"


def _torture_files() -> list[Path]:
    return sorted(TORTURE.glob("*.dat"))


def test_torture_and_mutated_messages_never_stop_the_server() -> None:
    """Every RFC 4475 message over UDP and over TCP, then seeded byte flips of a
    valid request: each is answered or dropped, and a valid request afterwards
    is still served (the simulation fails if a callback raises)."""
    files = _torture_files()
    if not files:
        pytest.skip("tests/data/sip_torture not present")
    rng = random.Random(11)
    valid = options(SipTransport.UDP)
    mutated = []
    for _ in range(300):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        mutated.append(bytes(data))

    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP, SipTransport.TCP)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        sock = await client_host.stack.open_udp(
            Endpoint("0.0.0.0", 4000), lambda d, r: got.put_nowait(d)
        )
        for payload in [f.read_bytes() for f in files] + mutated:
            sock.send(payload, Endpoint(SERVER_IP, 5060))
        for f in files:
            conn, _ = await _raw_stream(client_host)
            conn.write(f.read_bytes())
            await asyncio.sleep(0.5)
            conn.abort()
        await asyncio.sleep(1)
        while not got.empty():
            answer = got.get_nowait()
            assert answer.startswith(b"SIP/2.0 ")
        seen = len(server.seen)
        sock.send(options(SipTransport.UDP, call_id="after"), Endpoint(SERVER_IP, 5060))
        answer = await asyncio.wait_for(got.get(), 10)
        assert b"Call-ID: after" in answer
        assert len(server.seen) == seen + 1

    run_virtual(main)


def test_per_ip_cap_refuses_a_host_but_not_others() -> None:
    async def main() -> None:
        net, server_host, client_host = _world()
        other_host = net.add_host("other", "192.0.2.8")
        server = EchoServer(server_host, None, max_connections_per_ip=2)
        await server.start(SipTransport.TCP)
        first, _ = await _raw_stream(client_host)
        await _raw_stream(client_host)
        _third, got3 = await _raw_stream(client_host)
        assert await asyncio.wait_for(got3.get(), 10) == b""
        conn, got = await _raw_stream(other_host)
        conn.write(options(SipTransport.TCP))
        assert (await _read_until(got, b"\r\n\r\n")).startswith(b"SIP/2.0 200 OK")
        first.close()
        await asyncio.sleep(1)
        again, got4 = await _raw_stream(client_host)
        again.write(options(SipTransport.TCP))
        assert (await _read_until(got4, b"\r\n\r\n")).startswith(b"SIP/2.0 200 OK")

    run_virtual(main)


def test_untrusted_tls_server_is_a_transport_error(tls_server_context: ssl.SSLContext) -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, tls_server_context)
        await server.start(SipTransport.TLS)
        client = await _client(client_host, ssl.create_default_context(), Recorder())
        with pytest.raises(TransportError):
            await client.send(
                options(SipTransport.TLS), Target(SipTransport.TLS, Endpoint(SERVER_IP, 5061))
            )
        assert client.flows() == []

    run_virtual(main)


def test_a_peer_that_does_not_read_is_aborted() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None, max_write_buffer=64_000)
        await server.start(SipTransport.TCP)
        conn, _got = await _raw_stream(client_host)
        conn.write(b"\r\n\r\n")
        await asyncio.sleep(1)
        conn.pause_reading()
        flow = server.layer.flows()[0].flow
        big = options(SipTransport.TCP, body=b"x" * 8000)
        target = Target(SipTransport.TCP, conn.local_endpoint, flow)
        with pytest.raises(FlowGoneError):
            for _ in range(1000):
                await server.layer.send(big, target)
                await asyncio.sleep(0.01)
        assert server.closed == [flow]

    run_virtual(main)


def test_send_soon_from_synchronous_code() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP, SipTransport.TCP)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        failures: list[tuple[Target, TransportError]] = []
        for transport in (SipTransport.UDP, SipTransport.TCP):
            client.send_soon(
                options(transport, call_id=transport.value),
                Target(transport, Endpoint(SERVER_IP, 5060)),
                on_failed=lambda t, e: failures.append((t, e)),
            )
        got = {(await rec.next())[0].call_id for _ in range(2)}
        assert got == {"udp", "tcp"}
        bad = Target(SipTransport.TCP, Endpoint(SERVER_IP, 5999))
        client.send_soon(
            options(SipTransport.TCP), bad, on_failed=lambda t, e: failures.append((t, e))
        )
        await asyncio.sleep(5)
        assert [t for t, _ in failures] == [bad]

    run_virtual(main)


def test_headers_in_the_body_of_a_malformed_datagram_are_not_copied() -> None:
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.UDP)
        got: asyncio.Queue[bytes] = asyncio.Queue()
        sock = await client_host.stack.open_udp(
            Endpoint("0.0.0.0", 4000), lambda d, r: got.put_nowait(d)
        )
        body = b"Via: SIP/2.0/UDP 198.51.100.66;branch=z9hG4bKevil\n"
        bad = options(SipTransport.UDP, body=body).replace(b"\r\n", b"\n")
        bad = bad.replace(b"CSeq: 1 OPTIONS", b"CSeq: x OPTIONS")
        sock.send(bad, Endpoint(SERVER_IP, 5060))
        answer = await asyncio.wait_for(got.get(), 10)
        assert answer.startswith(b"SIP/2.0 400 ")
        assert b"evil" not in answer

    run_virtual(main)


def test_an_alias_sends_over_the_peers_connection_until_it_closes() -> None:
    # RFC 5923: the server aliases the client's listening address to the
    # connection the client opened; requests to that address use it, and
    # after it closed a new connection is opened to the listener.
    async def main() -> tuple[bool, bool, bool]:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(SipTransport.TCP)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        await client.listen(SipTransport.TCP, Endpoint("0.0.0.0", 5070))
        await client.send(
            options(SipTransport.TCP), Target(SipTransport.TCP, Endpoint(SERVER_IP, 5060))
        )
        await rec.next()  # the 200
        (_, source) = server.seen[-1]
        client_listener = Endpoint(CLIENT_IP, 5070)
        aliased = server.layer.add_alias(source.flow, client_listener)
        towards_client = Target(SipTransport.TCP, client_listener)
        await server.layer.send(options(SipTransport.TCP, call_id="back"), towards_client)
        _, arrived = await rec.next()
        reused = arrived.remote == Endpoint(SERVER_IP, 5060)  # over the client's connection
        server.layer.close_flow(source.flow)
        await asyncio.sleep(1)
        await server.layer.send(options(SipTransport.TCP, call_id="again"), towards_client)
        _, again = await rec.next()
        fresh = again.remote.host == SERVER_IP and again.remote.port != 5060
        client.close()
        server.layer.close()
        return aliased, reused, fresh

    assert run_virtual(main) == (True, True, True)


@pytest.mark.parametrize(
    ("remote", "icmp_type", "code", "unreachable"),
    [
        (Endpoint("192.0.2.1", 5060), 3, 3, True),  # port unreachable
        (Endpoint("192.0.2.1", 5060), 3, 4, False),  # fragmentation needed (RFC 1191)
        (Endpoint("192.0.2.1", 5060), 1, 0, False),  # unassigned in ICMPv4
        (Endpoint("2001:db8::1", 5060), 1, 4, True),  # ICMPv6 port unreachable
        (Endpoint("2001:db8::1", 5060), 3, 0, False),  # ICMPv6 time exceeded
    ],
)
def test_only_destination_unreachable_icmp_fails_the_destination(
    remote: Endpoint, icmp_type: int, code: int, unreachable: bool
) -> None:
    """RFC 792 / RFC 4443 §3.1: only destination unreachable ends transactions."""
    seen: list[Endpoint] = []
    layer = SipTransportLayer(
        None,  # type: ignore[arg-type]  # the stack is not used by the ICMP filter
        lambda message, source: None,
        on_unreachable=seen.append,
    )
    layer._icmp(remote, icmp_type, code, 0)
    assert seen == ([remote] if unreachable else [])


@dataclass
class Observer:
    seen_received: list[str] = field(default_factory=list)
    seen_sent: list[str] = field(default_factory=list)

    @staticmethod
    def _name(message: SipMessage) -> str:
        return message.method if isinstance(message, SipRequest) else str(message.status)

    def received(self, message: SipMessage) -> None:
        self.seen_received.append(self._name(message))

    def sent(self, message: SipMessage) -> None:
        self.seen_sent.append(self._name(message))


@pytest.mark.parametrize("transport", [SipTransport.UDP, SipTransport.TCP], ids=["udp", "tcp"])
def test_observers_see_what_is_delivered_and_what_is_sent_by_send_and_send_soon(
    transport: SipTransport,
) -> None:
    # Metrics observe the layer: a UDP send_soon (the UA's path) must count as
    # well as an awaited send; bytes are not parsed for the observer.
    async def main() -> None:
        _, server_host, client_host = _world()
        server = EchoServer(server_host, None)
        await server.start(transport)
        server_view = Observer()
        server.layer.add_observer(server_view)
        rec = Recorder()
        client = await _client(client_host, None, rec)
        client_view = Observer()
        client.add_observer(client_view)
        target = Target(transport, Endpoint(SERVER_IP, PORTS[transport]))
        await client.send(parse_message(options(transport, call_id="one")), target)
        await rec.next()
        client.send_soon(parse_message(options(transport, call_id="two")), target)
        await rec.next()
        await client.send(options(transport, call_id="three"), target)  # raw bytes
        await rec.next()
        assert client_view.seen_sent == ["OPTIONS", "OPTIONS"]
        assert client_view.seen_received == ["200", "200", "200"]
        assert server_view.seen_received == ["OPTIONS"] * 3
        assert server_view.seen_sent == ["200"] * 3
        client.close()
        server.layer.close()

    run_virtual(main)
