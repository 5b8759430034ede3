"""The stack interface: the only way natkit components touch a network.

DESIGN.md principle 2: components are given a :class:`Stack` and never call
socket APIs themselves. Three stacks implement it: the OS stack (real
sockets on asyncio/uvloop, :mod:`natkit.net.os`), the simulated internet
(virtual clock), and the namespace lab. Everything is callback-driven, as
asyncio protocols are, so that per-packet cost stays low and a simulated
network can deliver packets without any socket:

* UDP: :meth:`Stack.open_udp` binds a local endpoint and calls
  ``on_datagram(data, remote)`` for each datagram received; the returned
  :class:`DatagramEndpoint` sends with ``send(data, remote)``. ICMP errors
  for what it sent go to an optional :data:`IcmpHandler`, where the stack
  can see them (Linux's error queue, the simulator's port unreachable).
* TCP/TLS: :meth:`Stack.connect_stream` and :meth:`Stack.listen_stream`
  hand back :class:`StreamConnection` objects; received bytes go to a
  :data:`DataHandler` (``b""`` signals end of stream, as in the sans-IO
  cores' ``receive_data``). Connections report their write buffer and can
  stop reading (:meth:`StreamConnection.pause_reading`), so relays apply
  back-pressure. ``reuse_port`` lets a connection start from the endpoint a
  listener holds (RFC 6062 §5.2: a TURN server connects to a peer from the
  relayed transport address its TCP listener is bound to).
* Time: drivers schedule timers on the running asyncio loop; every stack
  runs its components on a loop whose ``time()`` is the clock cores receive
  as ``now`` (monotonic on the OS stack, virtual in the simulator).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from natkit.addr import Endpoint, Family, Transport

__all__ = [
    "ConnectionHandler",
    "DataHandler",
    "DatagramEndpoint",
    "DatagramHandler",
    "IcmpHandler",
    "InterfaceAddress",
    "MulticastStack",
    "Responder",
    "Stack",
    "StreamConnection",
    "StreamListener",
]

DatagramHandler = Callable[[bytes, Endpoint], None]
"""Called with ``(data, remote)`` for every datagram an endpoint receives."""

Responder = Callable[[bytes, Endpoint], bytes | None]
"""An optional inline answerer for a UDP endpoint: given ``(data, remote)`` it
returns the reply to send straight back to ``remote``, or ``None`` to pass the
datagram on to the endpoint's handler. Servers use it for their hottest path
(STUN Binding); stacks call it before anything else."""

IcmpHandler = Callable[[Endpoint, int, int, int], None]
"""Called with ``(remote, icmp_type, icmp_code, info)`` when the platform
reports an ICMP error for a datagram sent to ``remote`` (RFC 8656 §11.5):
types and codes as on the wire (ICMPv4, or ICMPv6 for IPv6 endpoints),
``info`` the error's 32-bit data (the next-hop MTU of "fragmentation needed",
else 0). Stacks that cannot see ICMP never call it."""

DataHandler = Callable[[bytes], None]
"""Called with bytes received on a stream; ``b""`` means the peer closed it."""


@dataclass(frozen=True, slots=True)
class InterfaceAddress:
    """One address configured on one interface of the host."""

    interface: str
    ip: str
    prefix_len: int
    family: Family
    is_loopback: bool = False


@runtime_checkable
class DatagramEndpoint(Protocol):
    """A bound UDP socket (or its simulated equivalent)."""

    @property
    def local_endpoint(self) -> Endpoint: ...

    def send(self, data: bytes, remote: Endpoint) -> None:
        """Send one datagram; never blocks, may drop under pressure (it is UDP)."""

    def close(self) -> None: ...

    async def wait_closed(self) -> None:
        """After :meth:`close`: return once the local address is free to bind again."""

    @property
    def closed(self) -> bool: ...


@runtime_checkable
class StreamConnection(Protocol):
    """A connected TCP or TLS stream."""

    @property
    def local_endpoint(self) -> Endpoint: ...

    @property
    def remote_endpoint(self) -> Endpoint: ...

    @property
    def transport(self) -> Transport: ...

    def set_handler(self, on_data: DataHandler) -> None:
        """Route received bytes to ``on_data`` (bytes that arrived before are replayed)."""

    def write(self, data: bytes) -> None:
        """Queue bytes; never blocks. Use :meth:`drain` to honour back-pressure."""

    async def drain(self) -> None: ...

    @property
    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the peer's stack (the OS stack:
        the transport's buffer; the simulator: bytes not yet acknowledged)."""

    def pause_reading(self) -> None:
        """Stop delivering received bytes until :meth:`resume_reading` (the
        peer's sends then stall on TCP flow control: back-pressure)."""

    def resume_reading(self) -> None:
        """Deliver again (bytes held meanwhile come first); no-op if not paused."""

    def close(self) -> None:
        """Close after queued bytes are sent (a peer that never reads can delay this forever)."""

    def abort(self) -> None:
        """Close at once, discarding queued bytes (TCP RST)."""

    async def wait_closed(self) -> None: ...

    @property
    def closed(self) -> bool: ...


ConnectionHandler = Callable[[StreamConnection], None]
"""Called for each accepted connection; it should call ``set_handler``."""


@runtime_checkable
class StreamListener(Protocol):
    """A listening TCP/TLS socket."""

    @property
    def local_endpoint(self) -> Endpoint: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


@runtime_checkable
class Stack(Protocol):
    """A network: the OS's, a simulated one, or a namespace of the lab."""

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> DatagramEndpoint:
        """Bind ``local`` (port 0 picks a free port) and deliver what arrives
        (after ``responder``, when given, has declined to answer it); ICMP
        errors for datagrams it sent go to ``on_icmp``, where reported."""

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
        """Connect over TCP, or TLS when ``tls`` is given. With ``reuse_port``
        the connection may start from ``local`` while a listener that was
        opened with ``reuse_port`` holds it (SO_REUSEADDR + SO_REUSEPORT)."""

    async def listen_stream(
        self,
        local: Endpoint,
        on_connection: ConnectionHandler,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> StreamListener:
        """Accept TCP (or TLS) connections on ``local``; ``reuse_port`` lets
        connections made with ``reuse_port`` start from the same endpoint."""

    def local_addresses(self) -> list[InterfaceAddress]:
        """Every address of every interface that is up, IPv4 and IPv6."""

    async def source_address_for(self, remote: Endpoint) -> str:
        """The local IP the host would send from to reach ``remote`` (a route lookup)."""


@runtime_checkable
class MulticastStack(Protocol):
    """A stack that can also join an IPv4 multicast group on one interface
    (the OS stack: mDNS answers sent to 224.0.0.251, RFC 6762 §5)."""

    async def open_udp_multicast(
        self, group: Endpoint, on_datagram: DatagramHandler, *, interface: str
    ) -> DatagramEndpoint:
        """Deliver datagrams sent to ``group`` on the interface with address
        ``interface``; sends go out that interface."""
