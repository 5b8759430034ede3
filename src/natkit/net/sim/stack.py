"""The stack interface on a simulated host: UDP sockets and a small TCP.

UDP is what it is everywhere: datagrams become :class:`~natkit.packet.Packet`
values on the host's link. TCP is a deliberately small implementation of
RFC 9293's essentials, enough for NAT connection tracking (RFC 5382) to see
real SYN, SYN/ACK, FIN and RST segments and for applications to get a
reliable ordered byte stream over lossy simulated links: three-way
handshake, cumulative ACKs, go-back-N retransmission with a doubling RTO,
in-order delivery (out-of-order segments are dropped and resent), FIN for
end of stream, RST for a port nobody listens on. No congestion control:
the simulator has no bandwidth limits. Flow control is only what back-pressure
needs: a connection whose reader called ``pause_reading`` holds what arrives
and stops acknowledging it (its window is closed), so the sender's
``write_buffer_size`` (bytes not yet acknowledged) grows until the reader
resumes, and ``drain()`` waits until no more than 64 KiB is unacknowledged.
(There are no zero-window probes: a reader paused for more than a minute or
so looks dead to its peer, which gives up after its retries.)
``reuse_port`` lets a connection start from the endpoint a ``reuse_port``
listener holds (RFC 6062 §5.2). TLS runs over it for real
(:mod:`natkit.net.sim.tls`): the same SSL contexts as on the OS stack.

ICMP: on a host whose stack has :attr:`SimStack.port_unreachable` set, a UDP
datagram to an IPv4 address and port where nothing is bound is answered with
ICMP port unreachable (RFC 1122 §3.2.2.1), quoting the datagram's IP header
and first 8 bytes as RFC 792 does; the sender's endpoint, if it was opened
with ``on_icmp``, hears of it one link delay later. It is off by default
(closed ports are silent, as the simulator always had them, so traces and
packet counts of existing topologies do not change). NATs do
not translate ICMP errors (:mod:`natkit.nat.box` drops them), so only hosts in
the same address realm see them. IPv6 has no ICMP in the simulator.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import TransportError
from natkit.net.sim.tls import SimTlsConnection
from natkit.net.stack import (
    ConnectionHandler,
    DatagramHandler,
    DataHandler,
    IcmpHandler,
    InterfaceAddress,
    Responder,
)
from natkit.packet import IcmpError, IpProto, Packet, TcpFlags, encode_ipv4

if TYPE_CHECKING:
    from natkit.net.sim.network import SimHost

__all__ = ["SimDatagramEndpoint", "SimStack", "SimStreamConnection", "SimStreamListener"]

T = TypeVar("T")

EPHEMERAL_FIRST = 49152
MSS = 1400
SEQ_MASK = 0xFFFFFFFF
_SYN_FIN = TcpFlags.SYN | TcpFlags.FIN
TCP_RTO = 1.0
TCP_RTO_MAX = 8.0  # lab links can be very lossy; keep retrying at a sane pace
TCP_MAX_RETRIES = 12
DRAIN_LOW = 64 * 1024  # drain() returns once no more than this is unacknowledged
WILDCARDS = ("0.0.0.0", "::")
_ICMP_QUOTE = 28  # RFC 792: the IP header and the first 64 bits of the datagram


class SimDatagramEndpoint:
    """A UDP socket on a simulated host."""

    def __init__(
        self,
        stack: SimStack,
        local: Endpoint,
        handler: DatagramHandler,
        responder: Responder | None,
        on_icmp: IcmpHandler | None = None,
    ) -> None:
        self._stack = stack
        self._local = local
        self.handler = handler
        self.responder = responder
        self.on_icmp = on_icmp
        self._closed = False
        self._closed_event = asyncio.Event()

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def send(self, data: bytes, remote: Endpoint) -> None:
        if self._closed:
            return
        src = self._local
        if src.host in WILDCARDS:
            src = Endpoint(self._stack.source_ip(remote.host), src.port)
        self._stack.host.send(Packet(IpProto.UDP, src, remote, data))

    def receive(self, packet: Packet) -> None:
        responder = self.responder
        if responder is not None:
            reply = responder(packet.payload, packet.src)
            if reply is not None:
                self._stack.host.send(Packet(IpProto.UDP, packet.dst, packet.src, reply))
                return
        self.handler(packet.payload, packet.src)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._stack.release(IpProto.UDP, self._local)
            self._closed_event.set()

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    @property
    def closed(self) -> bool:
        return self._closed


class SimStreamConnection:
    """One end of a simulated TCP connection (see the module docstring)."""

    def __init__(self, stack: SimStack, local: Endpoint, remote: Endpoint) -> None:
        self._stack = stack
        self._local = local
        self._remote = remote
        self._handler: DataHandler | None = None
        self._pending: list[bytes] = []
        rng = stack.host.internet.rng
        self._snd_nxt = rng.getrandbits(32)  # kept modulo 2**32 throughout
        self._snd_una = self._snd_nxt
        self._rcv_nxt = 0
        self._unacked: list[tuple[int, bytes, TcpFlags]] = []
        self._unacked_bytes = 0
        self._reading_paused = False
        self._ack_hold = 0  # what we acknowledge while reading is paused
        self._held: list[bytes] = []
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._rto = TCP_RTO
        self._retries = 0
        self._timer: asyncio.TimerHandle | None = None
        self.established = asyncio.get_running_loop().create_future()
        self._closed = asyncio.get_running_loop().create_future()
        self._fin_sent = False
        self._fin_received = False
        self._active = False  # True for the end that sent the SYN
        self.on_accept: ConnectionHandler | None = None

    # -- StreamConnection ------------------------------------------------------------

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    @property
    def remote_endpoint(self) -> Endpoint:
        return self._remote

    @property
    def transport(self) -> Transport:
        return Transport.TCP

    def set_handler(self, on_data: DataHandler) -> None:
        self._handler = on_data
        pending, self._pending = self._pending, []
        for chunk in pending:
            on_data(chunk)

    def write(self, data: bytes) -> None:
        if self._fin_sent or self._closed.done():
            return
        for i in range(0, len(data), MSS):
            self._send_segment(data[i : i + MSS], TcpFlags.ACK | TcpFlags.PSH)

    async def drain(self) -> None:
        while True:
            if self._closed.done():
                raise TransportError("connection closed")
            if self._unacked_bytes <= DRAIN_LOW:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    @property
    def write_buffer_size(self) -> int:
        """Bytes written and not yet acknowledged by the peer."""
        return self._unacked_bytes

    def pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self._ack_hold = self._rcv_nxt

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        held, self._held = self._held, []
        if not self._closed.done():
            self._emit(TcpFlags.ACK, self._snd_nxt)  # open the window again
        for chunk in held:
            if self._reading_paused:  # paused again by the handler
                self._held.append(chunk)
            else:
                self._deliver(chunk)

    def close(self) -> None:
        if self._closed.done() or self._fin_sent:
            return
        self._fin_sent = True
        self._send_segment(b"", TcpFlags.FIN | TcpFlags.ACK)
        if self._fin_received:
            self._finish()

    def abort(self) -> None:
        """Reset the connection (RST) and forget unsent data."""
        if not self._closed.done():
            self._emit(TcpFlags.RST | TcpFlags.ACK, self._snd_nxt)
            self._fail(TransportError("connection aborted"))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    @property
    def closed(self) -> bool:
        return self._closed.done()

    # -- segments --------------------------------------------------------------------

    def _emit(self, flags: TcpFlags, seq: int, payload: bytes = b"") -> None:
        self._stack.host.send(
            Packet(
                IpProto.TCP,
                self._local,
                self._remote,
                payload,
                flags,
                seq,
                self._ack_hold if self._reading_paused else self._rcv_nxt,
            )
        )

    def _send_segment(self, payload: bytes, flags: TcpFlags) -> None:
        seq = self._snd_nxt
        self._snd_nxt = (seq + len(payload) + (1 if flags & _SYN_FIN else 0)) & SEQ_MASK
        self._unacked.append((seq, payload, flags))
        self._unacked_bytes += len(payload)
        self._emit(flags, seq, payload)
        self._arm()

    def start_connect(self) -> None:
        self._active = True
        self._send_segment(b"", TcpFlags.SYN)

    def accept_syn(self, syn: Packet) -> None:
        self._rcv_nxt = (syn.seq + 1) & SEQ_MASK
        self._send_segment(b"", TcpFlags.SYN | TcpFlags.ACK)

    def _arm(self) -> None:
        if self._timer is None and self._unacked:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._rto, self._on_timeout)

    def _on_timeout(self) -> None:
        self._timer = None
        if not self._unacked or self._closed.done():
            return
        self._retries += 1
        if self._retries > TCP_MAX_RETRIES:
            self._fail(TransportError("connection timed out"))
            return
        self._rto = min(self._rto * 2, TCP_RTO_MAX)
        for seq, payload, flags in self._unacked:
            self._emit(flags, seq, payload)
        self._arm()

    def receive(self, packet: Packet) -> None:
        flags = packet.flags
        if flags & TcpFlags.RST:
            self._fail(TransportError("connection reset by peer"))
            return
        if flags & TcpFlags.ACK:
            self._on_ack(packet.ack)
        if flags & TcpFlags.SYN:
            if self._active:
                if flags & TcpFlags.ACK and not self.established.done():
                    self._rcv_nxt = (packet.seq + 1) & SEQ_MASK
                    self.established.set_result(None)
                self._emit(TcpFlags.ACK, self._snd_nxt)  # (re)acknowledge the SYN/ACK
            elif self._unacked and self._unacked[0][2] & TcpFlags.SYN:
                seq, payload, syn_flags = self._unacked[0]  # the peer missed our SYN/ACK
                self._emit(syn_flags, seq, payload)
            return
        if not self.established.done():
            # Only a passive end completes here: once the ACK of its SYN/ACK arrives.
            if self._active or any(f & TcpFlags.SYN for _, _, f in self._unacked):
                return
            self.established.set_result(None)
            if self.on_accept is not None:
                # Synchronously, as an OS stack's accept: the application must
                # own the connection before this segment's data or FIN arrives.
                self.on_accept(self)
        if packet.seq != self._rcv_nxt:
            if packet.payload or flags & TcpFlags.FIN:
                self._emit(TcpFlags.ACK, self._snd_nxt)  # duplicate or out of order
            return
        if packet.payload:
            self._rcv_nxt = (self._rcv_nxt + len(packet.payload)) & SEQ_MASK
            self._emit(TcpFlags.ACK, self._snd_nxt)
            self._deliver(packet.payload)
        if flags & TcpFlags.FIN and not self._fin_received:
            self._fin_received = True
            self._rcv_nxt = (self._rcv_nxt + 1) & SEQ_MASK
            self._emit(TcpFlags.ACK, self._snd_nxt)
            self._deliver(b"")
            if self._fin_sent:
                self._finish()
            else:
                self.close()

    def _on_ack(self, ack: int) -> None:
        acked = False
        while self._unacked:
            seq, payload, flags = self._unacked[0]
            end = seq + len(payload) + (1 if flags & (TcpFlags.SYN | TcpFlags.FIN) else 0)
            if (ack - end) & SEQ_MASK < 0x80000000:  # ack >= end, modulo 2**32
                self._unacked.pop(0)
                self._unacked_bytes -= len(payload)
                acked = True
            else:
                break
        if acked:
            if self._drain_waiters and self._unacked_bytes <= DRAIN_LOW:
                self._wake_drainers()
            self._rto = TCP_RTO
            self._retries = 0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._arm()
        if self._fin_sent and self._fin_received and not self._unacked:
            self._finish()

    def _deliver(self, data: bytes) -> None:
        if self._reading_paused:
            self._held.append(data)
        elif self._handler is None:
            self._pending.append(data)
        else:
            self._handler(data)

    def _finish(self) -> None:
        if self._unacked:
            return  # keep retransmitting our FIN until it is acknowledged
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake_drainers()
        self._stack.forget(self)

    def _fail(self, exc: TransportError) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unacked.clear()
        self._unacked_bytes = 0
        if not self.established.done():
            self.established.set_exception(exc)
        elif not self._fin_received:
            self._fin_received = True
            self._deliver(b"")
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake_drainers()  # they see the connection closed
        self._stack.forget(self)


class SimStreamListener:
    def __init__(
        self,
        stack: SimStack,
        local: Endpoint,
        on_connection: ConnectionHandler,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        self._stack = stack
        self._local = local
        self.on_connection = on_connection
        self.tls = tls
        self.reuse_port = reuse_port
        self._closed = asyncio.Event()

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def close(self) -> None:
        if not self._closed.is_set():
            self._stack.release(IpProto.TCP, self._local)
            self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()


class SimStack:
    """The stack interface for one :class:`~natkit.net.sim.network.SimHost`."""

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self._bound: dict[tuple[IpProto, int], dict[str, object]] = {}
        self._connections: dict[tuple[Endpoint, Endpoint], SimStreamConnection] = {}
        self._next_port = EPHEMERAL_FIRST
        self.port_unreachable = False
        """Answer UDP to a closed IPv4 port with ICMP port unreachable (off: silence)."""

    # -- addresses ------------------------------------------------------------------

    def local_addresses(self) -> list[InterfaceAddress]:
        return [
            InterfaceAddress(
                interface="sim0",
                ip=ip,
                prefix_len=32 if ":" not in ip else 128,
                family=Family.IPV6 if ":" in ip else Family.IPV4,
            )
            for ip in self.host.ips
        ]

    def source_ip(self, remote_ip: str) -> str:
        v6 = ":" in remote_ip
        for ip in self.host.ips:
            if (":" in ip) == v6:
                return ip
        raise TransportError(f"{self.host.name} has no address to reach {remote_ip}")

    async def source_address_for(self, remote: Endpoint) -> str:
        return self.source_ip(remote.host)

    # -- binding ----------------------------------------------------------------------

    def _bind(self, proto: IpProto, local: Endpoint, make: Callable[[Endpoint], T]) -> T:
        """Reserve ``local`` (port 0: an ephemeral one) for the object ``make`` builds."""
        if local.host not in WILDCARDS and local.host not in self.host.ips:
            raise TransportError(f"cannot bind {local}: not an address of {self.host.name}")
        port = local.port
        if port == 0:
            port = self._ephemeral(proto)
        slot = self._bound.setdefault((proto, port), {})
        clash = (
            local.host in slot
            or (local.host in WILDCARDS and slot)
            or any(w in slot for w in WILDCARDS)
        )
        if clash:
            raise TransportError(f"cannot bind {proto.name} {local}: address in use")
        owner = make(Endpoint(local.host, port))
        slot[local.host] = owner
        return owner

    def _ephemeral(self, proto: IpProto) -> int:
        for _ in range(65536 - EPHEMERAL_FIRST):
            port = self._next_port
            self._next_port = EPHEMERAL_FIRST if port >= 65535 else port + 1
            if not self._bound.get((proto, port)):
                return port
        raise TransportError("no free ephemeral port")

    def bound(self) -> set[tuple[IpProto, Endpoint]]:
        """Every (protocol, local endpoint) held by a socket, listener or connection."""
        return {
            (proto, Endpoint(host, port))
            for (proto, port), slot in self._bound.items()
            for host in slot
        }

    def release(self, proto: IpProto, local: Endpoint) -> None:
        slot = self._bound.get((proto, local.port))
        if slot is not None:
            slot.pop(local.host, None)
            if not slot:
                del self._bound[(proto, local.port)]

    def forget(self, conn: SimStreamConnection) -> None:
        self._connections.pop((conn.local_endpoint, conn.remote_endpoint), None)
        # A client connection owns its ephemeral port.
        slot = self._bound.get((IpProto.TCP, conn.local_endpoint.port))
        if slot is not None and slot.get(conn.local_endpoint.host) is conn:
            self.release(IpProto.TCP, conn.local_endpoint)

    def _owner(self, proto: IpProto, dst: Endpoint) -> object | None:
        slot = self._bound.get((proto, dst.port))
        if not slot:
            return None
        owner = slot.get(dst.host)
        if owner is None:
            owner = slot.get("::" if ":" in dst.host else "0.0.0.0")
        return owner

    # -- the Stack interface ----------------------------------------------------------

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> SimDatagramEndpoint:
        return self._bind(
            IpProto.UDP,
            local,
            lambda ep: SimDatagramEndpoint(self, ep, on_datagram, responder, on_icmp),
        )

    async def connect_stream(
        self,
        remote: Endpoint,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local: Endpoint | None = None,
        timeout: float = 10.0,
        reuse_port: bool = False,
    ) -> SimStreamConnection | SimTlsConnection:
        src_ip = (
            local.host
            if local is not None and local.host not in WILDCARDS
            else self.source_ip(remote.host)
        )
        src = Endpoint(src_ip, local.port if local else 0)
        holder = self._owner(IpProto.TCP, src) if reuse_port and src.port else None
        if isinstance(holder, SimStreamListener) and holder.reuse_port:
            # SO_REUSEPORT on both: the listener keeps the port; the connection is
            # told apart by its remote end, so only the same four-tuple clashes.
            if (src, remote) in self._connections:
                raise TransportError(f"cannot bind TCP {src}: address in use")
            conn = SimStreamConnection(self, src, remote)
        else:
            conn = self._bind(IpProto.TCP, src, lambda ep: SimStreamConnection(self, ep, remote))
        self._connections[(conn.local_endpoint, remote)] = conn
        conn.start_connect()
        try:
            async with asyncio.timeout(timeout):
                await conn.established
                if tls is None:
                    return conn
                session = SimTlsConnection(
                    conn, tls, server_side=False, server_hostname=server_hostname
                )
                await session.handshake()
                return session
        except TimeoutError as exc:
            conn.abort()
            raise TransportError(f"cannot connect to {remote}: timed out") from exc
        except TransportError as exc:
            conn.abort()
            raise TransportError(f"cannot connect to {remote}: {exc}") from exc
        except BaseException:
            conn.abort()  # cancelled from outside: free the port, stop the SYNs
            raise

    async def listen_stream(
        self,
        local: Endpoint,
        on_connection: ConnectionHandler,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> SimStreamListener:
        return self._bind(
            IpProto.TCP,
            local,
            lambda ep: SimStreamListener(self, ep, on_connection, tls, reuse_port),
        )

    # -- packets from the network ----------------------------------------------------------

    def deliver(self, packet: Packet) -> None:
        """Called by the network for every packet addressed to this host."""
        if packet.proto == IpProto.UDP:
            owner = self._owner(IpProto.UDP, packet.dst)
            if isinstance(owner, SimDatagramEndpoint):
                owner.receive(packet)
            elif self.port_unreachable and ":" not in packet.dst.host:
                self._port_unreachable(packet)
            return
        if packet.proto == IpProto.TCP:
            self._deliver_tcp(packet)
        elif packet.proto == IpProto.ICMP:
            self._deliver_icmp(packet)

    def _port_unreachable(self, packet: Packet) -> None:
        try:
            quote = encode_ipv4(packet)[:_ICMP_QUOTE]
        except (ValueError, OverflowError):
            return
        self.host.send(
            Packet(
                IpProto.ICMP,
                Endpoint(packet.dst.host, 0),
                Endpoint(packet.src.host, 0),
                quote,
                icmp=IcmpError.PORT_UNREACHABLE,
            )
        )

    def _deliver_icmp(self, packet: Packet) -> None:
        """An ICMP error: tell the UDP endpoint whose datagram it quotes."""
        quote = packet.payload
        if len(quote) < _ICMP_QUOTE or quote[0] >> 4 != 4 or quote[9] != IpProto.UDP:
            return
        ihl = (quote[0] & 0x0F) * 4
        if len(quote) < ihl + 4:
            return
        src_ip = ".".join(str(b) for b in quote[12:16])
        dst_ip = ".".join(str(b) for b in quote[16:20])
        src_port = quote[ihl] << 8 | quote[ihl + 1]
        dst_port = quote[ihl + 2] << 8 | quote[ihl + 3]
        owner = self._owner(IpProto.UDP, Endpoint(src_ip, src_port))
        if isinstance(owner, SimDatagramEndpoint) and owner.on_icmp is not None:
            code = int(packet.icmp if packet.icmp is not None else IcmpError.PORT_UNREACHABLE)
            owner.on_icmp(Endpoint(dst_ip, dst_port), 3, code, 0)

    def _deliver_tcp(self, packet: Packet) -> None:
        conn = self._connections.get((packet.dst, packet.src))
        if conn is not None:
            conn.receive(packet)
            return
        flags = packet.flags
        if flags & TcpFlags.RST:
            return
        owner = self._owner(IpProto.TCP, packet.dst)
        if (
            isinstance(owner, SimStreamListener)
            and flags & TcpFlags.SYN
            and not flags & TcpFlags.ACK
        ):
            conn = SimStreamConnection(self, packet.dst, packet.src)
            self._connections[(packet.dst, packet.src)] = conn
            conn.on_accept = owner.on_connection if owner.tls is None else _tls_acceptor(owner)
            conn.accept_syn(packet)
            return
        # Nobody here: answer with RST (RFC 9293 §3.10.7.1).
        ack = packet.seq + len(packet.payload) + (1 if flags & (TcpFlags.SYN | TcpFlags.FIN) else 0)
        self.host.send(
            Packet(
                IpProto.TCP,
                packet.dst,
                packet.src,
                b"",
                TcpFlags.RST | TcpFlags.ACK,
                packet.ack,
                ack,
            )
        )


def _tls_acceptor(listener: SimStreamListener) -> ConnectionHandler:
    """Wrap accepted connections in TLS; hand them on once the handshake is done."""
    context = listener.tls
    if context is None:
        raise TransportError("not a TLS listener")

    def accept(raw: object) -> None:
        if isinstance(raw, SimStreamConnection):
            SimTlsConnection(raw, context, server_side=True, on_established=listener.on_connection)

    return accept
