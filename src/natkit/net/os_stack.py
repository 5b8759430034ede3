"""The OS stack: real sockets through asyncio (uvloop when installed).

Implements :class:`natkit.net.stack.Stack`. UDP endpoints are asyncio
datagram transports whose ``datagram_received`` calls the component's
handler directly; streams are asyncio protocols with write flow control
surfaced as :meth:`OsStreamConnection.drain` and read flow control as
``pause_reading``/``resume_reading``.

ICMP (Linux): an endpoint opened with ``on_icmp`` sets IP_RECVERR (or
IPV6_RECVERR), so the kernel queues ICMP errors even for an unconnected
socket. Both asyncio and uvloop then report the pending error through
``error_received`` (a failed receive or send); the protocol drains the
socket's error queue (``recvmsg(MSG_ERRQUEUE)``): ``msg_name`` is the
original destination, the ``sock_extended_err`` control message carries the
ICMP type, code and info. Elsewhere ``on_icmp`` is never called.

``bound_udp`` hands :meth:`OsStack.open_udp` sockets bound beforehand, by
:meth:`OsStack.bind_udp_group`: several processes serving one UDP port with
SO_REUSEPORT (``natkit turn-server --workers``), all bound before any reads.

``reuse_port`` on streams sets SO_REUSEADDR and SO_REUSEPORT on the listener
and on a connecting socket bound before it connects, so a connection can
start from the endpoint a listener holds (RFC 6062 §5.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import struct
import sys
from typing import Any

import psutil

from natkit.addr import Endpoint, Family, Transport
from natkit.errors import TransportError
from natkit.net.stack import (
    ConnectionHandler,
    DatagramHandler,
    DataHandler,
    IcmpHandler,
    InterfaceAddress,
    Responder,
)

__all__ = [
    "OsDatagramEndpoint",
    "OsRawDatagramEndpoint",
    "OsStack",
    "OsStreamConnection",
    "OsStreamListener",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


def _endpoint(addr: Any) -> Endpoint:
    return Endpoint(addr[0], addr[1])


def _family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# <linux/errqueue.h> and <linux/in.h>, <linux/in6.h>: Python's socket module lacks them.
_IP_RECVERR = 11
_IPV6_RECVERR = 25
_SO_EE_ORIGIN_ICMP = 2
_SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, pad, info, data
_RECVERR_LEVELS = {(socket.IPPROTO_IP, _IP_RECVERR), (socket.IPPROTO_IPV6, _IPV6_RECVERR)}
ICMP_SUPPORTED = sys.platform.startswith("linux") and hasattr(socket, "MSG_ERRQUEUE")
"""Whether :meth:`OsStack.open_udp` can report ICMP errors here."""


def _enable_recverr(sock: socket.socket, v6: bool) -> None:
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)


def _drain_errqueue(sock: socket.socket, on_icmp: IcmpHandler) -> None:
    """Read every queued error of ``sock``; report the ICMP ones (ip(7), ipv6(7))."""
    for _ in range(256):  # bounded: a flood must not hold the loop
        try:
            _, ancdata, _, addr = sock.recvmsg(64, 512, socket.MSG_ERRQUEUE)
        except OSError:  # BlockingIOError: empty (also: the socket was closed)
            return
        for level, kind, data in ancdata:
            if (level, kind) not in _RECVERR_LEVELS or len(data) < _EXTENDED_ERR.size:
                continue
            _, origin, icmp_type, icmp_code, _, info, _ = _EXTENDED_ERR.unpack_from(data)
            if origin not in (_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6) or not addr:
                continue  # a local error (EMSGSIZE...): not something the network said
            try:
                on_icmp(Endpoint(addr[0], addr[1]), icmp_type, icmp_code, info)
            except Exception:
                log.exception("ICMP handler failed")


class _UdpProtocol(asyncio.DatagramProtocol):
    __slots__ = ("errors", "handler", "icmp", "lost", "responder", "sock", "transport")

    def __init__(
        self,
        handler: DatagramHandler,
        responder: Responder | None = None,
        icmp: IcmpHandler | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.handler = handler
        self.responder = responder
        self.icmp = icmp
        self.sock = sock
        self.errors = 0  # error_received calls: tells a send that failed
        self.transport: asyncio.DatagramTransport | None = None
        # transport.close() only schedules the socket's release; this says when it happened.
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            remote = Endpoint(addr[0], addr[1])
            responder = self.responder
            if responder is not None:
                reply = responder(data, remote)
                if reply is not None:
                    self.transport.sendto(reply, addr)  # type: ignore[union-attr]
                    return
            self.handler(data, remote)
        except Exception:  # a component bug must not kill the socket
            log.exception("datagram handler failed")

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) surface here on Linux, from a receive or a
        # send (asyncio and uvloop alike); with IP_RECVERR the details wait in the
        # error queue, which must be drained (it keeps the socket readable).
        self.errors += 1
        if self.icmp is not None and self.sock is not None:
            _drain_errqueue(self.sock, self.icmp)
        else:
            log.debug("UDP error: %s", exc)


class OsDatagramEndpoint:
    """A bound UDP socket.

    With IP_RECVERR an ICMP error is also the socket's pending error, which
    the next send meets instead of sending (asyncio and uvloop report it
    through ``error_received`` from within ``sendto``): a datagram to one peer
    would be lost for another peer's ICMP. An endpoint that reports ICMP
    therefore sends once more when its send failed (the error is consumed)."""

    __slots__ = ("_closed", "_icmp_protocol", "_local", "_lost", "_sendto", "_transport")

    def __init__(
        self,
        transport: asyncio.DatagramTransport,
        lost: asyncio.Future[None] | None = None,
        icmp_protocol: _UdpProtocol | None = None,
    ) -> None:
        self._transport = transport
        self._lost = lost
        self._icmp_protocol = icmp_protocol
        self._sendto = transport.sendto
        self._local = _endpoint(transport.get_extra_info("sockname"))
        self._closed = False

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def send(self, data: bytes, remote: Endpoint) -> None:
        if not self._closed:
            protocol = self._icmp_protocol
            if protocol is None:
                self._sendto(data, remote)
                return
            errors = protocol.errors
            self._sendto(data, remote)
            if protocol.errors != errors and not self._closed:
                self._sendto(data, remote)  # it met an earlier datagram's ICMP error

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport.close()

    async def wait_closed(self) -> None:
        """Return once the socket is released (its address can be bound again)."""
        if self._lost is not None:
            await asyncio.shield(self._lost)

    @property
    def closed(self) -> bool:
        return self._closed


class OsRawDatagramEndpoint:
    """A bound UDP socket read by ``loop.add_reader`` (:meth:`OsStack.open_udp_now`):
    no asyncio transport, protocol or future behind it, so it opens and closes
    in a few microseconds (a TURN relay socket per allocation).

    Readable: up to 64 datagrams are read at once. A send that finds the
    socket's buffer full drops the datagram (UDP may lose it anyway; an
    asyncio transport would queue it). With IP_RECVERR an ICMP error is the
    socket's pending error, met by the next receive or send: the error queue
    is drained (reported to ``on_icmp``), and a send that met it is tried
    once more, as :class:`OsDatagramEndpoint` does."""

    __slots__ = ("_closed", "_fd", "_handler", "_icmp", "_local", "_loop", "_sendto", "_sock")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        handler: DatagramHandler,
        icmp: IcmpHandler | None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._sendto = sock.sendto
        self._handler = handler
        self._icmp = icmp
        self._fd = sock.fileno()
        self._local = _endpoint(sock.getsockname())
        self._closed = False
        loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        recvfrom = self._sock.recvfrom
        handler = self._handler
        for _ in range(64):  # bounded: other sockets get their turn
            try:
                data, addr = recvfrom(65536)
            except BlockingIOError:
                return
            except OSError as exc:  # a pending ICMP error (ECONNREFUSED ...), or closed
                if self._closed:
                    return
                self._error(exc)
                continue
            try:
                handler(data, Endpoint(addr[0], addr[1]))
            except Exception:  # a component bug must not kill the socket
                log.exception("datagram handler failed")
            if self._closed:
                return

    def _error(self, exc: OSError) -> None:
        if self._icmp is not None:
            _drain_errqueue(self._sock, self._icmp)
        else:
            log.debug("UDP error: %s", exc)

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def send(self, data: bytes, remote: Endpoint) -> None:
        if self._closed:
            return
        try:
            self._sendto(data, remote)
        except BlockingIOError:
            pass  # full: dropped (see the class docstring)
        except OSError as exc:
            self._error(exc)
            if self._icmp is not None and not self._closed:
                # it met an earlier datagram's ICMP error, now consumed
                with contextlib.suppress(OSError):
                    self._sendto(data, remote)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._fd)
            self._sock.close()

    async def wait_closed(self) -> None:
        """Closed at once: the address can be bound again when close() returns."""

    @property
    def closed(self) -> bool:
        return self._closed


class OsStreamConnection(asyncio.Protocol):
    """A TCP or TLS connection exposed through the stack interface."""

    def __init__(self, tls: bool, on_connected: ConnectionHandler | None = None) -> None:
        self._tls = tls
        self._on_connected = on_connected
        self._handler: DataHandler | None = None
        self._pending: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._reading_paused = False
        self._local = Endpoint("0.0.0.0", 0)
        self._remote = Endpoint("0.0.0.0", 0)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP and TLS transports have asyncio.Transport's methods
        # without being its subclass: no isinstance check here.
        self._transport = transport  # type: ignore[assignment]
        self._local = _endpoint(transport.get_extra_info("sockname"))
        self._remote = _endpoint(transport.get_extra_info("peername"))
        if self._on_connected is not None:
            try:
                self._on_connected(self)
            except Exception:
                log.exception("connection handler failed")
                transport.close()

    def data_received(self, data: bytes) -> None:
        if self._handler is None:
            self._pending.append(data)
            return
        try:
            self._handler(data)
        except Exception:
            log.exception("stream handler failed")
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(TransportError("connection lost"))
        if self._handler is not None:
            self._handler(b"")
        else:
            self._pending.append(b"")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # StreamConnection
    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    @property
    def remote_endpoint(self) -> Endpoint:
        return self._remote

    @property
    def transport(self) -> Transport:
        return Transport.TLS if self._tls else Transport.TCP

    def set_handler(self, on_data: DataHandler) -> None:
        self._handler = on_data
        pending, self._pending = self._pending, []
        for chunk in pending:
            on_data(chunk)

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    @property
    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def pause_reading(self) -> None:
        transport = self._transport
        if transport is not None and not self._reading_paused and not transport.is_closing():
            self._reading_paused = True
            transport.pause_reading()

    def resume_reading(self) -> None:
        transport = self._transport
        if transport is not None and self._reading_paused:
            self._reading_paused = False
            if not transport.is_closing():
                transport.resume_reading()

    async def drain(self) -> None:
        if self._closed_fut.done():
            raise TransportError("connection closed")
        if not self._paused:
            return
        self._drain_waiter = asyncio.get_running_loop().create_future()
        await self._drain_waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_fut)

    @property
    def closed(self) -> bool:
        return self._closed_fut.done()


class OsStreamListener:
    __slots__ = ("_local", "_server")

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server
        self._local = _endpoint(server.sockets[0].getsockname())

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def close(self) -> None:
        self._server.close()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()


class OsStack:
    """Real sockets. ``udp_buffer`` sizes SO_RCVBUF/SO_SNDBUF for servers;
    ``reuse_port`` lets several processes share a UDP port (SO_REUSEPORT).
    ``tls_handshake_timeout``: a TLS listener aborts a connection whose
    handshake has not finished by then (asyncio's default is 60 s; until the
    handshake ends, the server above does not even see the connection)."""

    def __init__(
        self,
        *,
        udp_buffer: int | None = None,
        reuse_port: bool = False,
        tls_handshake_timeout: float = 10.0,
        bound_udp: dict[Endpoint, socket.socket] | None = None,
    ) -> None:
        if tls_handshake_timeout <= 0:
            raise ValueError("tls_handshake_timeout must be positive")
        self.udp_buffer = udp_buffer
        self.reuse_port = reuse_port
        self.tls_handshake_timeout = tls_handshake_timeout
        # Sockets bound beforehand (bind_udp_group): open_udp of that endpoint takes
        # one instead of binding a new socket, once.
        self._bound_udp = dict(bound_udp or {})

    def bind_udp_group(self, local: Endpoint, count: int) -> list[socket.socket]:
        """``count`` UDP sockets bound to ``local`` with SO_REUSEPORT (Linux
        spreads datagrams over them by a hash of the 4-tuple, so one remote
        endpoint always reaches the same socket), set up as :meth:`open_udp`
        would. Binding them all before any is read keeps that mapping stable:
        a socket joining or leaving the group later moves remote endpoints to
        other sockets. Give each to one process as ``bound_udp``."""
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                sock = self._udp_socket(local, reuse_port=True)
                # (port 0: the first picks one, the others join it)
                port = socks[0].getsockname()[1] if socks else local.port
                socks.append(sock)
                sock.bind((local.host, port))
        except OSError as exc:
            for sock in socks:
                sock.close()
            raise TransportError(f"cannot bind UDP {local}: {exc.strerror or exc}") from exc
        return socks

    def _udp_socket(self, local: Endpoint, *, reuse_port: bool) -> socket.socket:
        sock = socket.socket(_family_of(local.host), socket.SOCK_DGRAM)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if ":" in local.host:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if self.udp_buffer:
                for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, opt, self.udp_buffer)
        except OSError:
            sock.close()
            raise
        return sock

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> OsDatagramEndpoint:
        loop = asyncio.get_running_loop()
        prebound = self._bound_udp.pop(local, None)
        try:
            sock = prebound or self._udp_socket(local, reuse_port=self.reuse_port)
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {local}: {exc.strerror or exc}") from exc
        try:
            if on_icmp is not None and ICMP_SUPPORTED:
                _enable_recverr(sock, ":" in local.host)
            else:
                on_icmp = None
            if prebound is None:
                sock.bind((local.host, local.port))
            sock.setblocking(False)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(on_datagram, responder, on_icmp, sock), sock=sock
            )
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP {local}: {exc.strerror or exc}") from exc
        return OsDatagramEndpoint(transport, protocol.lost, protocol if on_icmp else None)

    async def open_udp_multicast(
        self, group: Endpoint, on_datagram: DatagramHandler, *, interface: str
    ) -> OsDatagramEndpoint:
        """Receive what is sent to the IPv4 multicast ``group`` on the
        interface whose address is ``interface`` (mDNS answers, RFC 6762
        §5): bound to the group's address and port with SO_REUSEADDR and
        SO_REUSEPORT beside any other listener (an mDNS daemon), joined
        with IP_ADD_MEMBERSHIP on that interface only; what it sends goes
        out that interface (IP_MULTICAST_IF, TTL 255 as §11 asks)."""
        if _family_of(group.host) != socket.AF_INET or not group.ip.is_multicast:
            raise TransportError(f"not an IPv4 multicast group: {group}")
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((group.host, group.port))
            iface = socket.inet_aton(interface)
            mreq = socket.inet_aton(group.host) + iface
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
            sock.setblocking(False)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(on_datagram, None, None, sock), sock=sock
            )
        except OSError as exc:
            sock.close()
            reason = exc.strerror or exc
            raise TransportError(f"cannot join {group} on {interface}: {reason}") from exc
        return OsDatagramEndpoint(transport, protocol.lost, None)

    def open_udp_now(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        on_icmp: IcmpHandler | None = None,
    ) -> OsRawDatagramEndpoint:
        """:meth:`open_udp` without awaiting: a socket bound now and read with
        ``loop.add_reader`` (:class:`OsRawDatagramEndpoint`). For sockets
        opened and closed at a high rate (TURN relays); not for ``bound_udp``
        endpoints. Raises :class:`TransportError` when it cannot bind."""
        loop = asyncio.get_running_loop()
        try:
            sock = self._udp_socket(local, reuse_port=self.reuse_port)
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {local}: {exc.strerror or exc}") from exc
        try:
            if on_icmp is not None and ICMP_SUPPORTED:
                _enable_recverr(sock, ":" in local.host)
            else:
                on_icmp = None
            sock.bind((local.host, local.port))
            sock.setblocking(False)
            return OsRawDatagramEndpoint(loop, sock, on_datagram, on_icmp)
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot bind UDP {local}: {exc.strerror or exc}") from exc

    async def connect_stream(
        self,
        remote: Endpoint,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        local: Endpoint | None = None,
        timeout: float = 10.0,
        reuse_port: bool = False,
    ) -> OsStreamConnection:
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs["ssl"] = tls
            kwargs["server_hostname"] = server_hostname or remote.host
        sock: socket.socket | None = None
        try:
            async with asyncio.timeout(timeout):
                if reuse_port and local is not None:
                    # Bind before connecting, sharing the port with a reuse_port listener.
                    sock = socket.socket(_family_of(local.host), socket.SOCK_STREAM)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                    sock.bind((local.host, local.port))
                    sock.setblocking(False)
                    await loop.sock_connect(sock, (remote.host, remote.port))
                    _, proto = await loop.create_connection(
                        lambda: OsStreamConnection(tls is not None), sock=sock, **kwargs
                    )
                else:
                    if local is not None:
                        kwargs["local_addr"] = (local.host, local.port)
                    _, proto = await loop.create_connection(
                        lambda: OsStreamConnection(tls is not None),
                        remote.host,
                        remote.port,
                        **kwargs,
                    )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            if sock is not None:
                sock.close()
            raise TransportError(f"cannot connect to {remote}: {exc}") from exc
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        return proto

    async def listen_stream(
        self,
        local: Endpoint,
        on_connection: ConnectionHandler,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> OsStreamListener:
        loop = asyncio.get_running_loop()
        extra: dict[str, Any] = {}
        if tls is not None:  # (asyncio refuses the timeout without ssl)
            extra["ssl_handshake_timeout"] = self.tls_handshake_timeout
        try:
            server = await loop.create_server(
                lambda: OsStreamConnection(tls is not None, on_connection),
                local.host,
                local.port,
                ssl=tls,
                reuse_address=True,
                reuse_port=reuse_port or None,
                family=_family_of(local.host),
                **extra,
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {local}: {exc.strerror or exc}") from exc
        return OsStreamListener(server)

    def local_addresses(self) -> list[InterfaceAddress]:
        stats = psutil.net_if_stats()
        out: list[InterfaceAddress] = []
        for name, addrs in psutil.net_if_addrs().items():
            if name in stats and not stats[name].isup:
                continue
            for a in addrs:
                if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                    continue
                ip = ipaddress.ip_address(a.address.partition("%")[0])
                mask = int(ipaddress.ip_address(a.netmask.partition("/")[0]))
                out.append(
                    InterfaceAddress(
                        interface=name,
                        ip=a.address,
                        prefix_len=bin(mask).count("1"),
                        family=Family.IPV4 if ip.version == 4 else Family.IPV6,
                        is_loopback=ip.is_loopback,
                    )
                )
        return out

    async def source_address_for(self, remote: Endpoint) -> str:
        # Connecting a UDP socket sends nothing; the kernel just picks a route.
        with socket.socket(_family_of(remote.host), socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((remote.host, remote.port or 9))
            except OSError as exc:
                raise TransportError(f"no route to {remote}: {exc.strerror or exc}") from exc
            return str(sock.getsockname()[0])
