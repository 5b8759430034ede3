"""Lab scenario: a host behind a NAT or firewall reaches a public peer through
natkit's TURN relay (RFC 8656), in the simulated internet.

The topology::

    turn  203.0.113.10: TURN over UDP and TCP on 3478, TLS on 443 and 5349;
      |                 relayed addresses on 203.0.113.10 as well
    peer  203.0.113.20: a UDP echo on 7000
      |
    internet (documentation ranges only)
      |
    nat   198.51.100.1 outside, 192.168.1.0/24 inside   (or a firewall with
      |                                                   192.0.2.0/24 behind it)
    client

Theory of operation
-------------------
The client does what a real one does when it does not know what its network
lets through (RFC 8656 §3.1 leaves the choice of transport to the client;
browsers try ``turn:`` over UDP, then TCP, then ``turns:`` on 443): it tries
each transport of ``transports`` in order, giving each ``attempt_timeout``
seconds (of virtual time here) to produce an allocation, and keeps the first
that does. Over it, it installs a permission for the peer (§9), sends
``count`` messages in Send indications (§11), binds a channel (§12) and
sends ``count`` more in ChannelData. The peer echoes each datagram to
wherever it came from, which must be the relayed address; the client must
get every echo back, with the content the peer wrote. The outcome says which
transport the client ended up on, what every attempt gave, the relayed and
mapped addresses, what went each way and how long it took.

:func:`expected_transport` says where a correct client must end up behind a
behaviour: UDP wherever outbound UDP passes; TCP to 3478 where UDP is blocked
but TCP is not; TLS on 443 behind a firewall that only passes web traffic
(ECC report §6.5). The tests keep that table written out.

The client half (:func:`reach_peer`) and the server and peer halves
(:func:`start_turn_server`, :class:`UdpEchoPeer`) only need a stack, so the
namespace lab runs the same code with real packets: :func:`turn_in_lab`
builds the same hosts in an open :class:`~natkit.net.netns.Lab` and runs
each half on an asyncio loop of its own inside its host's namespace
(:class:`NamespaceLoop`), on the OS stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from natkit.addr import Endpoint, Transport
from natkit.errors import MalformedMessageError, NatkitError
from natkit.lab.topology import attach_nat
from natkit.nat.box import NatBehavior
from natkit.nat.presets import PRESETS, NatLayer
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import (
    ConnectionHandler,
    DatagramEndpoint,
    DatagramHandler,
    DataHandler,
    IcmpHandler,
    InterfaceAddress,
    Responder,
    Stack,
    StreamConnection,
    StreamListener,
)
from natkit.packet import IpProto
from natkit.rng import seeded_rng
from natkit.stun.constants import MessageClass, Method
from natkit.stun.framing import StreamFramer
from natkit.stun.message import message_type
from natkit.stun.transaction import LongTermCredentials
from natkit.turn.aio.client import AsyncTurnClient
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.client import TurnClientConfig
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

if TYPE_CHECKING:
    from natkit.net.netns import Lab, Nat, NatEngine

T = TypeVar("T")

__all__ = [
    "DEFAULT_TRANSPORTS",
    "NamespaceLoop",
    "PEER",
    "RelayTraffic",
    "REALM",
    "TURN_IP",
    "TransportAttempt",
    "TurnOutcome",
    "UdpEchoPeer",
    "expected_transport",
    "reach_peer",
    "run_turn_sim",
    "start_turn_server",
    "turn_behind",
    "turn_in_lab",
]

TURN_IP = "203.0.113.10"
PEER_IP = "203.0.113.20"
PEER = Endpoint(PEER_IP, 7000)
TURN_PORT = 3478
TURNS_PORT = 5349
WEB_PORT = 443
REALM = "lab.natkit.test"
USERNAME = "lab"
PASSWORD = "natkit-lab-password"
TLS_HOSTNAME = "localhost"  # what the tests' certificate (trustme) names

DEFAULT_TRANSPORTS: tuple[tuple[Transport, int], ...] = (
    (Transport.UDP, TURN_PORT),
    (Transport.TCP, TURN_PORT),
    (Transport.TLS, WEB_PORT),
)
"""What the client tries, in order: ``turn:`` over UDP and TCP, ``turns:`` on 443."""

ECHO_PREFIX = b"echo:"


@dataclass(slots=True)
class RelayTraffic:
    """How the client's data travelled to and from the server, counted on
    its own socket or connection: Send and Data indications (RFC 8656 §11)
    or ChannelData (§12)."""

    send_indications: int = 0
    channel_data_sent: int = 0
    data_indications: int = 0
    channel_data_received: int = 0

    def count(self, message: bytes, *, outgoing: bool) -> None:
        if len(message) < 4:
            return
        if message[0] >> 6 == 1:  # ChannelData: channel numbers 0x4000-0x4FFF
            if outgoing:
                self.channel_data_sent += 1
            else:
                self.channel_data_received += 1
        elif message[:2] == _SEND_INDICATION and outgoing:
            self.send_indications += 1
        elif message[:2] == _DATA_INDICATION and not outgoing:
            self.data_indications += 1

    def to_json(self) -> dict[str, int]:
        return {
            "send_indications": self.send_indications,
            "channel_data_sent": self.channel_data_sent,
            "data_indications": self.data_indications,
            "channel_data_received": self.channel_data_received,
        }


_SEND_INDICATION = message_type(Method.SEND, MessageClass.INDICATION).to_bytes(2, "big")
_DATA_INDICATION = message_type(Method.DATA, MessageClass.INDICATION).to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class TransportAttempt:
    """One try: over ``transport`` to ``server``, ``ok`` when it allocated."""

    transport: Transport
    server: Endpoint
    ok: bool
    reason: str
    elapsed: float

    def to_json(self) -> dict[str, Any]:
        return {
            "transport": self.transport.value,
            "server": str(self.server),
            "ok": self.ok,
            "reason": self.reason,
            "elapsed": round(self.elapsed, 3),
        }


@dataclass(slots=True)
class TurnOutcome:
    """What happened behind one NAT: the transport the client ended up on
    (``None``: no allocation at all), the addresses, the traffic both ways."""

    preset: str
    transport: Transport | None
    attempts: tuple[TransportAttempt, ...]
    relayed: Endpoint | None = None
    mapped: Endpoint | None = None
    channel: int | None = None
    sent: int = 0
    """Messages the client sent to the peer through the relay."""
    peer_received: int = 0
    """Of those, how many reached the peer from the relayed address."""
    echoed: int = 0
    """Echoes that came back to the client, from the peer, with the peer's content."""
    peer_saw: tuple[Endpoint, ...] = ()
    """Every source address the peer received from (the relayed address alone)."""
    elapsed: float = 0.0
    """Seconds (virtual in the simulator) from the first attempt to the last echo."""
    idle: float = 0.0
    """Seconds the client sat silent between the second and third batch (0: no pause)."""
    unsolicited_received: bool | None = None
    """After the pause the peer spoke first: did that reach the client (None: not tried)?"""
    error: str | None = None
    traffic: RelayTraffic = field(default_factory=RelayTraffic)
    """Send/Data indications and ChannelData, counted on the client's socket."""
    pcaps: tuple[Path, ...] = ()
    trace: list[str] = field(default_factory=list)

    @property
    def reached(self) -> bool:
        """The peer got every message from the relayed address and nothing
        else, every echo came back, and (after a pause) the peer's own
        message reached the client."""
        return (
            self.relayed is not None
            and self.error is None
            and self.sent > 0
            and self.peer_received == self.sent
            and self.echoed == self.sent
            and self.peer_saw == (self.relayed,)
            and self.unsolicited_received is not False
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.preset,
            "transport": self.transport.value if self.transport else None,
            "attempts": [a.to_json() for a in self.attempts],
            "relayed": str(self.relayed) if self.relayed else None,
            "mapped": str(self.mapped) if self.mapped else None,
            "channel": self.channel,
            "sent": self.sent,
            "peer_received": self.peer_received,
            "echoed": self.echoed,
            "peer_saw": [str(ep) for ep in self.peer_saw],
            "elapsed": round(self.elapsed, 3),
            "idle": self.idle,
            "unsolicited_received": self.unsolicited_received,
            "reached": self.reached,
            "error": self.error,
            "traffic": self.traffic.to_json(),
            "pcaps": [str(p) for p in self.pcaps],
        }


def expected_transport(
    behavior: NatBehavior, transports: Sequence[tuple[Transport, int]] = DEFAULT_TRANSPORTS
) -> Transport | None:
    """The first of ``transports`` that ``behavior`` lets out (and its answers
    back in): what a correct client ends up on; ``None`` when none passes.

    TURN keeps one 5-tuple between client and server, so any filtering the
    NAT does lets the server's answers in; only what may leave matters.
    """
    for transport, port in transports:
        proto = IpProto.UDP if transport is Transport.UDP else IpProto.TCP
        if proto is IpProto.UDP and behavior.udp_blocked:
            continue
        allowed = behavior.allowed_outbound
        if allowed is not None and (proto, port) not in allowed:
            continue
        return transport
    return None


class UdpEchoPeer:
    """A public host's UDP socket that echoes each datagram, prefixed with
    :data:`ECHO_PREFIX`, to where it came from, and remembers the sources."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Endpoint]] = []
        self._endpoint: DatagramEndpoint | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def open(cls, stack: Stack, local: Endpoint = PEER) -> UdpEchoPeer:
        peer = cls()
        peer._loop = asyncio.get_running_loop()
        peer._endpoint = await stack.open_udp(local, peer._on_datagram)
        return peer

    def send_threadsafe(self, data: bytes, remote: Endpoint) -> None:
        """Send ``data`` (not echoed: the peer speaks first) from the peer's
        own loop, which may run on another thread (the namespace lab)."""
        if self._loop is None or self._endpoint is None:
            raise NatkitError("the echo peer is not open")
        self._loop.call_soon_threadsafe(self._endpoint.send, data, remote)

    @property
    def local_endpoint(self) -> Endpoint:
        if self._endpoint is None:
            raise NatkitError("the echo peer is not open")
        return self._endpoint.local_endpoint

    @property
    def sources(self) -> tuple[Endpoint, ...]:
        return tuple(dict.fromkeys(src for _, src in self.received))

    def _on_datagram(self, data: bytes, remote: Endpoint) -> None:
        self.received.append((data, remote))
        if self._endpoint is not None:
            self._endpoint.send(ECHO_PREFIX + data, remote)

    def close(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()

    async def aclose(self) -> None:
        """Close, and return once the socket is released."""
        self.close()
        if self._endpoint is not None:
            await self._endpoint.wait_closed()


class _CountedEndpoint:
    """A client UDP socket whose datagrams are counted."""

    def __init__(self, inner: DatagramEndpoint, traffic: RelayTraffic) -> None:
        self._inner = inner
        self._traffic = traffic

    @property
    def local_endpoint(self) -> Endpoint:
        return self._inner.local_endpoint

    def send(self, data: bytes, remote: Endpoint) -> None:
        self._traffic.count(data, outgoing=True)
        self._inner.send(data, remote)

    def close(self) -> None:
        self._inner.close()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()

    @property
    def closed(self) -> bool:
        return self._inner.closed


class _CountedConnection:
    """A client TCP/TLS connection whose messages are counted (the client
    writes one message per call; what arrives is framed again here)."""

    def __init__(self, inner: StreamConnection, traffic: RelayTraffic) -> None:
        self._inner = inner
        self._traffic = traffic
        self._framer = StreamFramer(channel_data=True)

    @property
    def local_endpoint(self) -> Endpoint:
        return self._inner.local_endpoint

    @property
    def remote_endpoint(self) -> Endpoint:
        return self._inner.remote_endpoint

    @property
    def transport(self) -> Transport:
        return self._inner.transport

    def set_handler(self, on_data: DataHandler) -> None:
        def counted(data: bytes) -> None:
            with contextlib.suppress(MalformedMessageError):  # the client will say so
                for message in self._framer.feed(data):
                    self._traffic.count(message, outgoing=False)
            on_data(data)

        self._inner.set_handler(counted)

    def write(self, data: bytes) -> None:
        self._traffic.count(data, outgoing=True)
        self._inner.write(data)

    async def drain(self) -> None:
        await self._inner.drain()

    @property
    def write_buffer_size(self) -> int:
        return self._inner.write_buffer_size

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()

    @property
    def closed(self) -> bool:
        return self._inner.closed


class _ClientStack:
    """The client's view of a stack: counts its relay traffic
    (:class:`RelayTraffic`) and remembers what it opened, so that
    :meth:`settle` can make sure every socket and connection of every
    attempt is closed before the scenario returns (on the OS stack a TLS
    connection whose loop stops before it is gone leaks its transport)."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack
        self._opened: list[DatagramEndpoint | StreamConnection] = []
        self.traffic = RelayTraffic()

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> DatagramEndpoint:
        traffic = self.traffic

        def counted(data: bytes, remote: Endpoint) -> None:
            traffic.count(data, outgoing=False)
            on_datagram(data, remote)

        endpoint = await self._stack.open_udp(local, counted, responder=responder, on_icmp=on_icmp)
        self._opened.append(endpoint)
        return _CountedEndpoint(endpoint, traffic)

    async def connect_stream(
        self,
        remote: Endpoint,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local: Endpoint | None = None,
        timeout: float = 10.0,
        reuse_port: bool = False,
    ) -> StreamConnection:
        conn = await self._stack.connect_stream(
            remote,
            tls=tls,
            server_hostname=server_hostname,
            local=local,
            timeout=timeout,
            reuse_port=reuse_port,
        )
        self._opened.append(conn)
        return _CountedConnection(conn, self.traffic)

    async def listen_stream(
        self,
        local: Endpoint,
        on_connection: ConnectionHandler,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> StreamListener:
        return await self._stack.listen_stream(local, on_connection, tls=tls, reuse_port=reuse_port)

    def local_addresses(self) -> list[InterfaceAddress]:
        return self._stack.local_addresses()

    async def source_address_for(self, remote: Endpoint) -> str:
        return await self._stack.source_address_for(remote)

    async def settle(self, timeout: float = 5.0) -> None:
        """Close whatever is still open and wait (at most ``timeout``) until all is closed."""
        opened, self._opened = self._opened, []
        for item in opened:
            if not item.closed:
                item.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                for item in opened:
                    with contextlib.suppress(NatkitError, OSError):
                        await item.wait_closed()
        for item in opened:
            if isinstance(item, StreamConnection) and not item.closed:
                item.abort()


def lab_credentials() -> tuple[StaticCredentials, LongTermCredentials]:
    """The lab's one user, as the server and the client hold it."""
    server = StaticCredentials.from_passwords({USERNAME: PASSWORD}, REALM)
    return server, LongTermCredentials(USERNAME, PASSWORD)


def turn_listeners(ip: str, *, tls: bool) -> list[tuple[Transport, Endpoint]]:
    """UDP and TCP on 3478, and (with a certificate) TLS on 443 and 5349."""
    listen = [(Transport.UDP, Endpoint(ip, TURN_PORT)), (Transport.TCP, Endpoint(ip, TURN_PORT))]
    if tls:
        listen += [
            (Transport.TLS, Endpoint(ip, WEB_PORT)),
            (Transport.TLS, Endpoint(ip, TURNS_PORT)),
        ]
    return listen


async def start_turn_server(
    stack: Stack,
    ip: str = TURN_IP,
    *,
    tls: ssl.SSLContext | None = None,
    seed: int = 0,
    config: TurnServerConfig | None = None,
) -> TurnServerRunner:
    """natkit's TURN server on ``ip`` (see :func:`turn_listeners`), relaying
    from ``ip``, with the lab's user; started."""
    credentials, _ = lab_credentials()
    core_config = config or TurnServerConfig(realm=REALM, relay_ips=(ip,), rng=seeded_rng(seed))
    runner = TurnServerRunner(
        stack, core_config, credentials, listen=turn_listeners(ip, tls=tls is not None), tls=tls
    )
    await runner.start()
    return runner


def _messages(count: int, label: str) -> list[bytes]:
    return [f"natkit lab turn {label} {i}".encode() for i in range(count)]


async def _collect_echoes(
    client: AsyncTurnClient,
    wanted: list[bytes],
    peer: Endpoint,
    timeout: float,
    *,
    prefix: bytes = ECHO_PREFIX,
) -> int:
    """Receive until every message in ``wanted`` came back from ``peer``
    (echoed: with ``prefix``), or ``timeout``; returns how many did."""
    missing = {prefix + m for m in wanted}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while missing:
                data, source = await client.recv()
                if source == peer:
                    missing.discard(data)
    return len(wanted) - len(missing)


async def reach_peer(
    stack: Stack,
    server_ip: str,
    peer: Endpoint,
    *,
    name: str = "",
    transports: Sequence[tuple[Transport, int]] = DEFAULT_TRANSPORTS,
    attempt_timeout: float = 5.0,
    echo_timeout: float = 5.0,
    count: int = 5,
    tls: ssl.SSLContext | None = None,
    server_hostname: str = TLS_HOSTNAME,
    echo_peer: UdpEchoPeer | None = None,
    idle: float = 0.0,
    seed: int = 0,
) -> TurnOutcome:
    """The client half: allocate over the first transport that works, then
    talk to ``peer`` through the relay (see the module docstring).

    ``echo_peer``, when the peer runs in the same process, lets the outcome
    say what the peer saw; otherwise ``peer_received``/``peer_saw`` stay
    empty and ``reached`` can only be judged from the echoes.
    """
    _, credentials = lab_credentials()
    client_stack = _ClientStack(stack)
    try:
        outcome = await _reach_peer(
            client_stack,
            server_ip,
            peer,
            credentials,
            name=name,
            transports=transports,
            attempt_timeout=attempt_timeout,
            echo_timeout=echo_timeout,
            count=count,
            tls=tls,
            server_hostname=server_hostname,
            echo_peer=echo_peer,
            idle=idle,
            seed=seed,
        )
    finally:
        await client_stack.settle()
    outcome.traffic = client_stack.traffic
    return outcome


async def _reach_peer(
    stack: Stack,
    server_ip: str,
    peer: Endpoint,
    credentials: LongTermCredentials,
    *,
    name: str,
    transports: Sequence[tuple[Transport, int]],
    attempt_timeout: float,
    echo_timeout: float,
    count: int,
    tls: ssl.SSLContext | None,
    server_hostname: str,
    echo_peer: UdpEchoPeer | None,
    idle: float,
    seed: int,
) -> TurnOutcome:
    loop = asyncio.get_running_loop()
    # No automatic channel: the first messages must travel in Send indications.
    config = TurnClientConfig(auto_bind=False, rng=seeded_rng(seed))
    start = loop.time()
    attempts: list[TransportAttempt] = []
    client: AsyncTurnClient | None = None
    chosen: Transport | None = None
    relayed: Endpoint | None = None
    mapped: Endpoint | None = None
    for transport, port in transports:
        server = Endpoint(server_ip, port)
        began = loop.time()
        if transport is Transport.TLS and tls is None:
            attempts.append(TransportAttempt(transport, server, False, "no TLS context", 0.0))
            continue
        candidate: AsyncTurnClient | None = None
        try:
            async with asyncio.timeout(attempt_timeout):
                candidate = await AsyncTurnClient.connect(
                    stack,
                    server,
                    transport=transport,
                    credentials=credentials,
                    tls=tls if transport is Transport.TLS else None,
                    server_hostname=server_hostname if transport is Transport.TLS else None,
                    config=config,
                )
                allocated = await candidate.allocate()
        except TimeoutError:
            reason = f"no allocation within {attempt_timeout:g} s"
        except NatkitError as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            attempts.append(
                TransportAttempt(transport, server, True, "allocated", loop.time() - began)
            )
            client, chosen = candidate, transport
            relayed, mapped = allocated.relayed_endpoint, allocated.mapped
            break
        if candidate is not None:
            await candidate.close()
        attempts.append(TransportAttempt(transport, server, False, reason, loop.time() - began))
    outcome = TurnOutcome(name, chosen, tuple(attempts), relayed=relayed, mapped=mapped, idle=idle)
    if client is None:
        outcome.elapsed = loop.time() - start
        return outcome
    try:
        await _talk(
            client,
            peer,
            outcome,
            count=count,
            timeout=echo_timeout,
            idle=idle,
            echo_peer=echo_peer,
        )
    except NatkitError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    outcome.elapsed = loop.time() - start
    if echo_peer is not None:
        outcome.peer_saw = echo_peer.sources
        outcome.peer_received = sum(1 for _, src in echo_peer.received if src == relayed)
    return outcome


async def _talk(
    client: AsyncTurnClient,
    peer: Endpoint,
    outcome: TurnOutcome,
    *,
    count: int,
    timeout: float,
    idle: float,
    echo_peer: UdpEchoPeer | None,
) -> None:
    """Send indications first, then ChannelData; count the echoes. With
    ``idle``: wait that long, let the peer speak first, then send again."""
    await client.create_permission(peer.host)
    indications = _messages(count, "send")
    for message in indications:
        client.send_to(message, peer)
    outcome.sent += len(indications)
    outcome.echoed += await _collect_echoes(client, indications, peer, timeout)
    outcome.channel = await client.bind_channel(peer)
    channel_data = _messages(count, "channel")
    for message in channel_data:
        client.send_to(message, peer)
    outcome.sent += len(channel_data)
    outcome.echoed += await _collect_echoes(client, channel_data, peer, timeout)
    if idle <= 0:
        return
    await asyncio.sleep(idle)
    if echo_peer is not None and outcome.relayed is not None:
        # Someone calls in after the pause: does the relay still reach the client?
        hello = b"natkit lab turn from the peer after idling"
        echo_peer.send_threadsafe(hello, outcome.relayed)
        outcome.unsolicited_received = (
            await _collect_echoes(client, [hello], peer, timeout, prefix=b"") == 1
        )
    after = _messages(count, "after idling")
    for message in after:
        client.send_to(message, peer)
    outcome.sent += len(after)
    outcome.echoed += await _collect_echoes(client, after, peer, timeout)


async def turn_behind(
    name: str,
    behavior: NatBehavior,
    *,
    seed: int = 0,
    transports: Sequence[tuple[Transport, int]] = DEFAULT_TRANSPORTS,
    attempt_timeout: float = 5.0,
    count: int = 5,
    delay: float = 0.02,
    tls_server: ssl.SSLContext | None = None,
    tls_client: ssl.SSLContext | None = None,
    tandem: NatLayer | None = None,
    trace: bool = False,
    pcap_dir: Path | None = None,
    idle: float = 0.0,
    client_loss: float = 0.0,
    echo_timeout: float = 5.0,
) -> TurnOutcome:
    """Build the topology on the running virtual-clock loop and run the
    client from behind ``behavior`` (its own link losing ``client_loss``
    of the packets each way)."""
    net = Internet(seed=seed, trace=trace, default_link=Link(delay=delay))
    turn = net.add_host("turn", TURN_IP)
    peer_host = net.add_host("peer", PEER_IP)
    nat = attach_nat(net, behavior, seed=seed, tandem=tandem)
    client = net.add_host("client", behind=nat, link=Link(delay=delay, loss=client_loss))
    pcaps: list[Path] = []
    if pcap_dir is not None:
        pcap_dir.mkdir(parents=True, exist_ok=True)
        for link, file in (("client", "client.pcap"), ("nat:outside", "nat-outside.pcap")):
            net.capture(link, pcap_dir / file)
            pcaps.append(pcap_dir / file)
    runner = await start_turn_server(turn.stack, tls=tls_server, seed=seed + 3)
    echo = await UdpEchoPeer.open(peer_host.stack)
    try:
        outcome = await reach_peer(
            client.stack,
            TURN_IP,
            PEER,
            name=name,
            transports=transports,
            attempt_timeout=attempt_timeout,
            count=count,
            tls=tls_client,
            echo_peer=echo,
            idle=idle,
            seed=seed,
            echo_timeout=echo_timeout,
        )
    finally:
        await echo.aclose()
        runner.close()
        await runner.wait_closed()
        net.close_captures()
    outcome.pcaps = tuple(pcaps)
    if trace:
        outcome.trace = net.trace_lines()
    return outcome


def run_turn_sim(
    preset_name: str,
    behavior: NatBehavior | None = None,
    *,
    seed: int = 0,
    transports: Sequence[tuple[Transport, int]] = DEFAULT_TRANSPORTS,
    attempt_timeout: float = 5.0,
    count: int = 5,
    tls_server: ssl.SSLContext | None = None,
    tls_client: ssl.SSLContext | None = None,
    tandem: NatLayer | None = None,
    trace: bool = False,
    pcap_dir: Path | None = None,
    idle: float = 0.0,
    client_loss: float = 0.0,
    echo_timeout: float = 5.0,
    time_limit: float = 7200.0,
) -> TurnOutcome:
    """Run the scenario behind preset ``preset_name`` (or ``behavior`` under
    that name) on a fresh virtual clock. Without TLS contexts the client
    cannot try TLS (the attempt says so). ``idle`` adds a pause after the
    second batch, then the peer speaks first and a third batch follows."""
    emulated = behavior if behavior is not None else PRESETS[preset_name]

    async def main() -> TurnOutcome:
        return await turn_behind(
            preset_name,
            emulated,
            seed=seed,
            transports=transports,
            attempt_timeout=attempt_timeout,
            count=count,
            tls_server=tls_server,
            tls_client=tls_client,
            tandem=tandem,
            trace=trace,
            pcap_dir=pcap_dir,
            idle=idle,
            client_loss=client_loss,
            echo_timeout=echo_timeout,
        )

    return run_virtual(main, time_limit=time_limit)


# -- the namespace lab: the same halves on real sockets ---------------------------------


class NamespaceLoop:
    """An asyncio loop on a thread inside lab namespace ``netns``: coroutines
    given to :meth:`run` open their sockets there (on an
    :class:`~natkit.net.os_stack.OsStack`). :meth:`close` stops the loop and
    joins the thread."""

    def __init__(self, netns: str, *, limit: float = 300.0) -> None:
        self.netns = netns
        self.limit = limit
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name=f"lab-{netns}", daemon=True)
        self._failure: list[BaseException] = []

    def start(self, timeout: float = 10.0) -> NamespaceLoop:
        self._thread.start()
        if not self._ready.wait(timeout) or self._loop is None:
            raise NatkitError(f"no event loop in {self.netns}: {self._failure or 'timed out'}")
        return self

    def _main(self) -> None:
        from natkit.net.netns.system import in_namespace

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        try:
            in_namespace(self.netns, serve, timeout=self.limit)
        except BaseException as exc:
            self._failure.append(exc)
            self._ready.set()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the namespace's loop and wait for its result."""
        if self._loop is None:
            raise NatkitError("the namespace loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> NamespaceLoop:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def turn_in_lab(
    lab: Lab,
    engine: NatEngine,
    *,
    transports: Sequence[tuple[Transport, int]] = DEFAULT_TRANSPORTS,
    attempt_timeout: float = 2.0,
    count: int = 5,
    tls_server: ssl.SSLContext | None = None,
    tls_client: ssl.SSLContext | None = None,
    seed: int = 0,
) -> tuple[TurnOutcome, Nat]:
    """The scenario in an open namespace lab: hosts ``turn`` and ``peer`` on
    the lab internet, ``nat`` (``engine``) and ``client`` behind it. natkit's
    TURN server, the echo peer and the client each run on a loop of their
    own inside their host's namespace, with real sockets; returns the
    client's outcome (virtual seconds become real ones) and the NAT."""
    from natkit.net.os_stack import OsStack

    turn = lab.add_public_host("turn")
    peer_host = lab.add_public_host("peer")
    nat = lab.add_nat("nat", engine)
    client = lab.add_host("client", behind=nat)
    peer = Endpoint(peer_host.address, PEER.port)

    async def start_server() -> TurnServerRunner:
        return await start_turn_server(OsStack(), turn.address, tls=tls_server, seed=seed)

    async def stop_server(runner: TurnServerRunner) -> None:
        runner.close()
        await runner.wait_closed()

    async def start_peer() -> UdpEchoPeer:
        return await UdpEchoPeer.open(OsStack(), peer)

    async def stop_peer(echo: UdpEchoPeer) -> None:
        await echo.aclose()

    async def run_client(echo: UdpEchoPeer) -> TurnOutcome:
        return await reach_peer(
            OsStack(),
            turn.address,
            peer,
            name=engine.label,
            transports=transports,
            attempt_timeout=attempt_timeout,
            count=count,
            tls=tls_client,
            echo_peer=echo,
            seed=seed,
        )

    limit = (attempt_timeout + 5.0) * (len(transports) + 2)
    with (
        NamespaceLoop(turn.netns) as server_loop,
        NamespaceLoop(peer_host.netns) as peer_loop,
        NamespaceLoop(client.netns) as client_loop,
    ):
        runner = server_loop.run(start_server())
        try:
            echo = peer_loop.run(start_peer())
            try:
                outcome = client_loop.run(run_client(echo), timeout=limit)
            finally:
                peer_loop.run(stop_peer(echo))
        finally:
            server_loop.run(stop_server(runner))
    return outcome, nat
