"""natkit's TURN client against coturn's turnserver (Debian coturn 4.6) on loopback.

coturn runs with long-term credentials (test:test, realm example.org),
``allow-loopback-peers`` and a relay port range above the Linux ephemeral
range (PEERS.md). The client allocates over UDP, TCP and TLS, installs a
permission, exchanges data with a plain UDP peer (an OsStack endpoint) first
through Send/Data indications and then through a bound channel, and proves
each direction went the way it should with the core's counters. An IPv6
relay (coturn also on ::1) and RFC 6062 TCP relaying (Connect and
ConnectionAttempt, coturn's TCP control connections) are covered too.
"""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from natkit.addr import Endpoint, Family, Transport
from natkit.net.os_stack import OsStack
from natkit.net.stack import StreamConnection
from natkit.turn.aio.client import AsyncTurnClient, TurnRequestError
from natkit.turn.attributes import TransportProtocol
from natkit.turn.client import TurnClientConfig

from .conftest import (
    LOOPBACK,
    ManagedProcess,
    free_ports,
    require_program,
    start_process,
    wait_for_stun,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

USER, PASSWORD, REALM = "test", "test", "example.org"
MIN_PORT, MAX_PORT = 61000, 65535
STEP = 5.0  # seconds any single exchange on loopback may take


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()


@dataclass(frozen=True)
class Coturn:
    udp: Endpoint  # also TCP: coturn listens on both
    tls: Endpoint
    udp6: Endpoint | None
    process: ManagedProcess


COTURN_TURN_CONFIG = """\
# natkit interop: coturn as a TURN server on loopback (long-term credentials).
{listening}
listening-port={port}
tls-listening-port={tls_port}
{relays}
min-port={min_port}
max-port={max_port}
lt-cred-mech
user={user}:{password}
realm={realm}
allow-loopback-peers
no-cli
no-dtls
no-rfc5780
no-stun-backward-compatibility
cert={dir}/cert.pem
pkey={dir}/key.pem
pidfile={dir}/turnserver.pid
userdb={dir}/turndb
log-file=stdout
simple-log
verbose
"""


def start_coturn(workdir: Path, tls_ca: trustme.CA, extra: str = "") -> Coturn:
    """coturn on 127.0.0.1 (and ::1 when present) with UDP/TCP and TLS listeners."""
    turnserver = require_program("turnserver", "coturn")
    workdir.mkdir(parents=True, exist_ok=True)
    port, tls_port = free_ports(2, hosts=(LOOPBACK,))
    cert = tls_ca.issue_cert("localhost", "127.0.0.1", "::1")
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    ips = [LOOPBACK, "::1"] if HAS_IPV6 else [LOOPBACK]
    config = workdir / "turnserver.conf"
    config.write_text(
        COTURN_TURN_CONFIG.format(
            listening="\n".join(f"listening-ip={ip}" for ip in ips),
            relays="\n".join(f"relay-ip={ip}" for ip in ips),
            port=port,
            tls_port=tls_port,
            min_port=MIN_PORT,
            max_port=MAX_PORT,
            user=USER,
            password=PASSWORD,
            realm=REALM,
            dir=workdir,
        )
        + extra
    )
    proc = start_process("turnserver", [turnserver, "-c", str(config)], workdir)
    try:
        udp = Endpoint(LOOPBACK, port)
        wait_for_stun([udp], proc)
    except BaseException:
        proc.stop()
        raise
    return Coturn(
        udp, Endpoint(LOOPBACK, tls_port), Endpoint("::1", port) if HAS_IPV6 else None, proc
    )


@pytest.fixture
def coturn_turn(tmp_path: Path, tls_ca: trustme.CA) -> Iterator[Coturn]:
    server = start_coturn(tmp_path, tls_ca)
    try:
        yield server
    finally:
        server.process.stop()


@dataclass
class UdpPeer:
    """A plain UDP endpoint on loopback that records what reaches it."""

    endpoint: Endpoint
    received: asyncio.Queue[tuple[bytes, Endpoint]]
    sock: object

    async def next(self) -> tuple[bytes, Endpoint]:
        return await asyncio.wait_for(self.received.get(), STEP)

    def send(self, data: bytes, remote: Endpoint) -> None:
        self.sock.send(data, remote)  # type: ignore[attr-defined]


@pytest.fixture
async def udp_peer() -> AsyncIterator[UdpPeer]:
    received: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
    sock = await OsStack().open_udp(
        Endpoint(LOOPBACK, 0), lambda data, addr: received.put_nowait((data, addr))
    )
    try:
        yield UdpPeer(sock.local_endpoint, received, sock)
    finally:
        sock.close()
        await sock.wait_closed()


def _config(**kw: object) -> TurnClientConfig:
    return TurnClientConfig(rng=random.Random(6062), **kw)  # type: ignore[arg-type]


def _client_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    tls_ca.configure_trust(ctx)
    return ctx


async def _connect(
    coturn: Coturn, transport: Transport, tls_ca: trustme.CA, **kw: object
) -> AsyncTurnClient:
    server = coturn.tls if transport == Transport.TLS else coturn.udp
    return await AsyncTurnClient.connect(
        OsStack(),
        server,
        transport=transport,
        credentials=(USER, PASSWORD),
        tls=_client_tls(tls_ca) if transport == Transport.TLS else None,
        server_hostname="localhost" if transport == Transport.TLS else None,
        local=Endpoint(LOOPBACK, 0),
        **kw,  # type: ignore[arg-type]
    )


async def _exchange_both_ways(client: AsyncTurnClient, peer: UdpPeer, tag: bytes) -> None:
    relayed = client.relayed
    client.send_to(b"to-peer " + tag, peer.endpoint)
    data, source = await peer.next()
    assert (data, source) == (b"to-peer " + tag, relayed)
    peer.send(b"to-client " + tag, relayed)
    assert await asyncio.wait_for(client.recv(), STEP) == (b"to-client " + tag, peer.endpoint)


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP, Transport.TLS])
async def test_client_allocates_and_relays_through_indications_and_channels(
    coturn_turn: Coturn, udp_peer: UdpPeer, tls_ca: trustme.CA, transport: Transport
) -> None:
    client = await _connect(coturn_turn, transport, tls_ca, config=_config(auto_bind=False))
    async with client:
        alloc = await asyncio.wait_for(client.allocate(), STEP)
        assert alloc.relayed_endpoint.host == LOOPBACK
        assert MIN_PORT <= alloc.relayed_endpoint.port <= MAX_PORT
        assert alloc.mapped == client._sender.local_endpoint
        assert alloc.lifetime == 600
        await asyncio.wait_for(client.create_permission(udp_peer.endpoint), STEP)

        await _exchange_both_ways(client, udp_peer, b"indication")
        assert client.core.sent_indications == 1
        assert client.core.received_indications == 1

        channel = await asyncio.wait_for(client.bind_channel(udp_peer.endpoint), STEP)
        assert 0x4000 <= channel <= 0x4FFF
        await _exchange_both_ways(client, udp_peer, b"channel")
        assert client.core.sent_channel_data == 1
        assert client.core.received_channel_data == 1
        # Odd-sized payloads over streams exercise ChannelData padding both ways.
        for size in (1, 2, 3, 5, 1200):
            await _exchange_both_ways(client, udp_peer, b"x" * size)
        await asyncio.wait_for(client.refresh(), STEP)
    assert client.core.state.value == "released"


async def test_send_to_a_new_peer_installs_permission_and_channel_on_demand(
    coturn_turn: Coturn, udp_peer: UdpPeer, tls_ca: trustme.CA
) -> None:
    async with await _connect(coturn_turn, Transport.UDP, tls_ca, config=_config()) as client:
        await asyncio.wait_for(client.allocate(), STEP)
        client.send_to(b"first", udp_peer.endpoint)  # queued until the permission exists
        client.send_to(b"second", udp_peer.endpoint)
        assert [(await udp_peer.next())[0] for _ in range(2)] == [b"first", b"second"]
        for _ in range(100):  # the auto-bound channel follows the permission
            if client.core.channel_for(udp_peer.endpoint) is not None:
                break
            await asyncio.sleep(0.01)
        await _exchange_both_ways(client, udp_peer, b"auto")
        assert client.core.received_channel_data == 1


async def test_wrong_password_fails_the_allocation_with_401(
    coturn_turn: Coturn, tls_ca: trustme.CA
) -> None:
    client = await AsyncTurnClient.connect(
        OsStack(), coturn_turn.udp, credentials=(USER, "wrong"), local=Endpoint(LOOPBACK, 0)
    )
    async with client:
        with pytest.raises(TurnRequestError) as info:
            await asyncio.wait_for(client.allocate(), STEP)
    assert info.value.code == 401


async def test_peer_outside_the_relay_family_is_refused_locally(
    coturn_turn: Coturn, tls_ca: trustme.CA
) -> None:
    async with await _connect(coturn_turn, Transport.UDP, tls_ca) as client:
        await asyncio.wait_for(client.allocate(), STEP)
        with pytest.raises(Exception, match="443"):
            client.send_to(b"x", Endpoint("::1", 9))


@pytest.mark.skipif(not HAS_IPV6, reason="this machine has no ::1 loopback")
async def test_ipv6_relay_exchanges_data_with_an_ipv6_peer(
    coturn_turn: Coturn, tls_ca: trustme.CA
) -> None:
    received: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
    sock = await OsStack().open_udp(
        Endpoint("::1", 0), lambda data, addr: received.put_nowait((data, addr))
    )
    peer = UdpPeer(sock.local_endpoint, received, sock)
    try:
        async with await _connect(coturn_turn, Transport.UDP, tls_ca) as client:
            alloc = await asyncio.wait_for(client.allocate(family=Family.IPV6), STEP)
            assert alloc.relayed_endpoint.host == "::1"
            await asyncio.wait_for(client.create_permission(peer.endpoint), STEP)
            await _exchange_both_ways(client, peer, b"v6 indication")
            await asyncio.wait_for(client.bind_channel(peer.endpoint), STEP)
            await _exchange_both_ways(client, peer, b"v6 channel")
    finally:
        sock.close()
        await sock.wait_closed()


# -- RFC 6062 ------------------------------------------------------------------------


class _TcpPeer:
    def __init__(self) -> None:
        self.accepted: asyncio.Queue[StreamConnection] = asyncio.Queue()


async def _read(conn: StreamConnection, want: int) -> bytes:
    buf = bytearray()
    got: asyncio.Queue[bytes] = asyncio.Queue()
    conn.set_handler(got.put_nowait)
    while len(buf) < want:
        chunk = await asyncio.wait_for(got.get(), STEP)
        assert chunk, "connection closed early"
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.TLS])
async def test_rfc6062_connect_and_accept_tcp_peers(
    coturn_turn: Coturn, tls_ca: trustme.CA, transport: Transport
) -> None:
    stack = OsStack()
    peer = _TcpPeer()
    listener = await stack.listen_stream(Endpoint(LOOPBACK, 0), peer.accepted.put_nowait)
    try:
        client = await _connect(coturn_turn, transport, tls_ca)
        async with client:
            alloc = await asyncio.wait_for(client.allocate(transport=TransportProtocol.TCP), STEP)
            # Outgoing: Connect, then a data connection bound with ConnectionBind.
            conn = await asyncio.wait_for(client.connect_peer(listener.local_endpoint), STEP)
            inbound = await asyncio.wait_for(peer.accepted.get(), STEP)
            assert inbound.remote_endpoint.host == alloc.relayed_endpoint.host
            conn.write(b"hello peer")
            assert await _read(inbound, 10) == b"hello peer"
            inbound.write(b"hello client")
            assert await _read(conn, 12) == b"hello client"
            # Incoming: a peer connects to the relayed address -> ConnectionAttempt.
            await asyncio.wait_for(client.create_permission(LOOPBACK), STEP)
            accepting = asyncio.ensure_future(client.accept_peer())
            outbound = await stack.connect_stream(alloc.relayed_endpoint)
            accepted = await asyncio.wait_for(accepting, STEP)
            assert accepted.remote_endpoint == outbound.local_endpoint
            outbound.write(b"from outside")
            assert await _read(accepted, 12) == b"from outside"
            accepted.write(b"back")
            assert await _read(outbound, 4) == b"back"
            for c in (conn, inbound, accepted, outbound):
                c.close()
                await c.wait_closed()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_even_port_reservation_hands_the_next_port_to_a_second_client(
    coturn_turn: Coturn, tls_ca: trustme.CA
) -> None:
    async with await _connect(coturn_turn, Transport.UDP, tls_ca) as first:
        alloc = await asyncio.wait_for(first.allocate(even_port=True), STEP)
        assert alloc.relayed_endpoint.port % 2 == 0
        assert alloc.reservation_token is not None
        async with await _connect(coturn_turn, Transport.UDP, tls_ca) as second:
            reserved = await asyncio.wait_for(
                second.allocate(reservation_token=alloc.reservation_token), STEP
            )
            assert reserved.relayed_endpoint.port == alloc.relayed_endpoint.port + 1


@pytest.mark.skipif(not HAS_IPV6, reason="this machine has no ::1 loopback")
async def test_dual_allocation_gets_an_ipv4_and_an_ipv6_relay(
    coturn_turn: Coturn, tls_ca: trustme.CA
) -> None:
    async with await _connect(coturn_turn, Transport.UDP, tls_ca) as client:
        alloc = await asyncio.wait_for(client.allocate(additional_family=Family.IPV6), STEP)
        assert [r.host for r in alloc.relayed] == [LOOPBACK, "::1"], alloc


@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP, Transport.TLS])
async def test_alternate_server_redirect_is_followed(
    tmp_path: Path, tls_ca: trustme.CA, transport: Transport
) -> None:
    back = start_coturn(tmp_path / "back", tls_ca)
    try:
        front = start_coturn(
            tmp_path / "front",
            tls_ca,
            f"alternate-server={back.udp}\ntls-alternate-server={back.tls}\n",
        )
        try:
            async with await _connect(front, transport, tls_ca) as client:
                alloc = await asyncio.wait_for(client.allocate(), STEP)
                expected = back.tls if transport == Transport.TLS else back.udp
                assert alloc.server == expected
                assert client.server == expected
        finally:
            front.process.stop()
    finally:
        back.process.stop()


@pytest.mark.skipif(not HAS_IPV6, reason="this machine has no ::1 loopback")
@pytest.mark.parametrize("transport", [Transport.UDP, Transport.TCP])
async def test_client_reaches_coturn_over_ipv6_and_relays_to_an_ipv4_peer(
    coturn_turn: Coturn, udp_peer: UdpPeer, transport: Transport
) -> None:
    assert coturn_turn.udp6 is not None
    client = await AsyncTurnClient.connect(
        OsStack(), coturn_turn.udp6, transport=transport, credentials=(USER, PASSWORD)
    )
    async with client:
        alloc = await asyncio.wait_for(client.allocate(), STEP)  # IPv4 relay, the default
        assert alloc.relayed_endpoint.host == LOOPBACK
        assert alloc.mapped is not None and alloc.mapped.host == "::1"
        await asyncio.wait_for(client.create_permission(udp_peer.endpoint), STEP)
        await _exchange_both_ways(client, udp_peer, b"v6 control")


async def test_437_after_a_crash_on_the_same_port_is_recovered(
    coturn_turn: Coturn, udp_peer: UdpPeer
) -> None:
    """A client that vanished without releasing leaves an allocation on its
    5-tuple; a new client on the same port gets 437, deletes it with Refresh
    LIFETIME=0 and allocates again (the decision in natkit.turn.client)."""
    crashed = await AsyncTurnClient.connect(
        OsStack(), coturn_turn.udp, credentials=(USER, PASSWORD), local=Endpoint(LOOPBACK, 0)
    )
    await asyncio.wait_for(crashed.allocate(), STEP)
    local = crashed._sender.local_endpoint
    await crashed.abort()
    events: list[object] = []
    client = await AsyncTurnClient.connect(
        OsStack(),
        coturn_turn.udp,
        credentials=(USER, PASSWORD),
        local=local,
        on_event=events.append,
    )
    async with client:
        alloc = await asyncio.wait_for(client.allocate(), STEP)
        assert alloc.mapped == local
        await asyncio.wait_for(client.create_permission(udp_peer.endpoint), STEP)
        await _exchange_both_ways(client, udp_peer, b"after 437")
