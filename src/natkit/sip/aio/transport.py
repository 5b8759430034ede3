"""The SIP transport layer on a Stack: UDP, TCP, TLS, WS and WSS (RFC 3261 §18, RFC 7118).

Theory of operation
-------------------
:class:`SipTransportLayer` owns the listeners and the connection table of one
SIP element. Everything that arrives becomes a parsed message handed to
``on_message(msg, source)``; the :class:`~natkit.sip.flow.Source` names the
flow it came over, so an edge proxy can later send over that same flow.
Requests are stamped with ``received``/``rport`` (RFC 3581 §4, via
:func:`~natkit.sip.via_routing.stamp_received`) before they are delivered.

* UDP (RFC 3261 §18.1, §18.2): one datagram, one message. STUN Binding
  requests on the SIP port (first byte 0x00 or 0x01, RFC 5626 §8, RFC 7983)
  are answered inline with XOR-MAPPED-ADDRESS; CRLF keepalives over UDP are
  ignored. The flow of a datagram is its (local, remote) pair; its id
  encodes both, so sending over a UDP flow needs no table. ICMP
  unreachable errors for datagrams we sent (where the stack reports them)
  go to ``on_unreachable(remote)``: a transport error for the transactions
  towards that address (RFC 3261 §18.4, RFC 3263 §4.3 failover).
  Other STUN messages on the SIP port (responses to our own keepalives,
  RFC 5626 §4.4.1) go to ``on_stun_response(data, source)``.
* TCP and TLS (§18.3): :class:`~natkit.sip.framing.SipStreamFramer` cuts the
  stream; a CRLFCRLF ping is answered with a CRLF pong (RFC 5626 §4.4.1).
  Lost framing is answered 400 when the header block allows and the
  connection is closed.
* WS and WSS (RFC 7118): wsproto on top of a TCP or TLS connection,
  subprotocol ``sip``; each text or binary WebSocket message is one SIP
  message, Content-Length optional (§5). A "\\r\\n\\r\\n" message is a
  ping answered "\\r\\n" (what SIP.js and JsSIP send); WebSocket pings get
  pongs.

Malformed requests are answered with the parser's status when the raw
header block lets a response be matched (Via, From, To, Call-ID, CSeq
present: :func:`~natkit.sip.framing.error_response_for`), else dropped;
malformed responses are dropped (§18.1.2). Nothing a peer sends raises out
of the layer.

Stream connections are kept in a table keyed by flow id, with an index by
(transport, remote) so that requests to a peer reuse an open connection
(§18.1.1) and concurrent sends share one connect. :meth:`SipTransportLayer.add_alias`
adds a peer's advertised listening address to that index for the
connection it opened (RFC 5923 connection reuse). Connections idle for
``idle_timeout`` are closed; ``max_connections`` caps the table and
``max_connections_per_ip`` what one host may open; a peer that stops
reading is aborted once ``max_write_buffer`` octets wait for it. When a
connection closes, ``on_flow_closed(flow_id)`` is called (an edge proxy
then answers 430 for requests that name it, RFC 5626 §5.3).

Requests over UDP longer than ``udp_size_limit`` (1300 octets, §18.1.1) go
over TCP to the same endpoint when ``large_requests_over_tcp`` is set and
the target does not pin a flow; off by default, because most UAs behind
NATs cannot accept the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from natkit.addr import Endpoint, Family, host_of_packed
from natkit.errors import MalformedMessageError, TransportError
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection, StreamListener
from natkit.rng import Rng, default_rng
from natkit.sip.flow import FlowId, SipTransport, Source, Target
from natkit.sip.framing import KeepAlive, SipStreamFramer, error_response_for
from natkit.sip.message import (
    SipLimits,
    SipMessage,
    SipRequest,
    parse_message,
    reason_phrase,
    serialize_message,
)
from natkit.sip.via_routing import stamp_received
from natkit.stun import attributes as stun_attributes
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import is_stun_message
from natkit.stun.message import parse_message as parse_stun
from natkit.stun.message import serialize_message as serialize_stun

__all__ = ["FlowGoneError", "SipTransportConfig", "SipTransportLayer"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

MessageHandler = Callable[[SipMessage, Source], None]
FlowHandler = Callable[[FlowId], None]


class MessageObserver(Protocol):
    """Sees every message the layer delivers and every message handed to it
    to send (metrics, tracing); see :meth:`SipTransportLayer.add_observer`."""

    def received(self, message: SipMessage) -> None: ...

    def sent(self, message: SipMessage) -> None: ...


_PING = b"\r\n\r\n"
_PONG = b"\r\n"
_TAG_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class FlowGoneError(TransportError):
    """A target pinned to a flow that is closed (RFC 5626 §5.3: answer 430)."""


@dataclass(frozen=True, slots=True)
class SipTransportConfig:
    """Transport layer settings (RFC 3261 §18)."""

    limits: SipLimits = field(default_factory=SipLimits)
    idle_timeout: float = 3600.0  # a stream without a byte for this long is closed
    max_connections: int = 10_000
    max_connections_per_ip: int = 0  # accepted connections from one IP; 0: no limit
    max_write_buffer: int = 1 << 20  # octets queued to a peer that does not read: then abort
    connect_timeout: float = 10.0
    tls_client: ssl.SSLContext | None = None  # for outgoing TLS and WSS
    server_hostname: str | None = None  # TLS name to check on outgoing connections
    ws_path: str = "/"
    ws_host: str = "localhost"  # Host header of outgoing WebSocket handshakes
    udp_size_limit: int = 1300  # RFC 3261 §18.1.1
    large_requests_over_tcp: bool = False


def _udp_flow_id(local: Endpoint, remote: Endpoint) -> FlowId:
    raw = _pack(local) + _pack(remote)
    return "u" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _pack(ep: Endpoint) -> bytes:
    return bytes((len(ep.packed),)) + ep.packed + ep.port.to_bytes(2, "big")


def _udp_flow_endpoints(flow: FlowId) -> tuple[Endpoint, Endpoint] | None:
    if not flow.startswith("u"):
        return None
    text = flow[1:]
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        out: list[Endpoint] = []
        pos = 0
        for _ in range(2):
            n = raw[pos]
            host = host_of_packed(raw[pos + 1 : pos + 1 + n])
            port = int.from_bytes(raw[pos + 1 + n : pos + 3 + n], "big")
            out.append(Endpoint(host, port))
            pos += 3 + n
    except (ValueError, IndexError):
        return None
    return out[0], out[1]


_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")


def _head_of(data: bytes) -> bytes:
    """The header block of a datagram (the body must not be read as headers)."""
    match = _END_OF_HEADERS.search(data)
    return data if match is None else data[: match.end()]


class _Connection:
    """One stream flow: TCP/TLS with the framer, or WS/WSS with wsproto."""

    def __init__(
        self,
        layer: SipTransportLayer,
        flow: FlowId,
        transport: SipTransport,
        conn: StreamConnection,
        *,
        outgoing: bool,
    ) -> None:
        self.layer = layer
        self.flow = flow
        self.transport = transport
        self.conn = conn
        self.outgoing = outgoing
        self.source = Source(
            transport=transport, remote=conn.remote_endpoint, local=conn.local_endpoint, flow=flow
        )
        self.closed = False
        self.framer: SipStreamFramer | None = None
        self.ws: WSConnection | None = None
        self.ws_open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ws_parts: list[bytes] = []
        self._ws_size = 0
        if transport in (SipTransport.WS, SipTransport.WSS):
            self.ws = WSConnection(ConnectionType.CLIENT if outgoing else ConnectionType.SERVER)
        else:
            self.framer = SipStreamFramer(limits=layer.config.limits, expect_pings=not outgoing)
            self.ws_open.set_result(None)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.last_activity = loop.time()
        self._idle: asyncio.TimerHandle | None = loop.call_at(
            self.last_activity + layer.config.idle_timeout, self._check_idle
        )
        conn.set_handler(self.on_data)

    # -- output --------------------------------------------------------------------

    def start_ws_handshake(self) -> None:
        assert self.ws is not None
        cfg = self.layer.config
        self.conn.write(
            self.ws.send(Request(host=cfg.ws_host, target=cfg.ws_path, subprotocols=["sip"]))
        )

    def send(self, data: bytes) -> None:
        if self.closed:
            raise FlowGoneError(f"flow {self.flow} is closed")
        self.last_activity = self._loop.time()
        if self.conn.write_buffer_size > self.layer.config.max_write_buffer:
            log.info("aborting %s flow %s: the peer does not read", self.transport, self.flow)
            self.close(abort=True)
            raise FlowGoneError(f"flow {self.flow} aborted: write buffer full")
        if self.ws is None:
            self.conn.write(data)
            return
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            event: TextMessage | BytesMessage = BytesMessage(data=data)
        else:
            event = TextMessage(data=text)
        try:
            self.conn.write(self.ws.send(event))
        except WsLocalProtocolError as exc:
            raise FlowGoneError(f"WebSocket flow {self.flow} is not open") from exc

    def send_ping(self) -> None:
        """RFC 5626 §4.4.1 ping (CRLFCRLF), over TCP/TLS or as a WS message."""
        self.send(_PING)

    # -- input ---------------------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self._loop.time()
        if not data:
            self.close(abort=False)
            return
        if self.ws is not None:
            self._on_ws_data(data)
            return
        framer = self.framer
        assert framer is not None
        framer.feed(data)
        while not self.closed:
            try:
                frame = framer.next_frame()
            except MalformedMessageError as exc:
                head = getattr(exc, "head", None)
                if head is not None and exc.error_code is not None:
                    self._answer_malformed(head, exc.error_code)
                log.info("closing %s flow %s: %s", self.transport, self.flow, exc)
                self.close(abort=False)
                return
            if frame is None:
                return
            if frame is KeepAlive.PING:
                self.conn.write(_PONG)
            elif frame is KeepAlive.PONG:
                self.layer._pong(self.flow)
            else:
                self.layer._deliver(frame, self.source, self._reply, stream=True)

    def _on_ws_data(self, data: bytes) -> None:
        ws = self.ws
        assert ws is not None
        try:
            ws.receive_data(data)
            for event in ws.events():
                self._on_ws_event(event)
        except (WsRemoteProtocolError, WsLocalProtocolError) as exc:
            log.info("WebSocket error on flow %s: %s", self.flow, exc)
            self.close(abort=True)

    def _on_ws_event(self, event: object) -> None:
        ws = self.ws
        assert ws is not None
        if isinstance(event, Request):
            if "sip" in event.subprotocols:  # RFC 7118 §4.1
                self.conn.write(ws.send(AcceptConnection(subprotocol="sip")))
                if not self.ws_open.done():
                    self.ws_open.set_result(None)
            else:
                self.conn.write(ws.send(RejectConnection(status_code=400)))
                self.close(abort=False)
        elif isinstance(event, AcceptConnection):
            if not self.ws_open.done():
                self.ws_open.set_result(None)
        elif isinstance(event, RejectConnection):
            if not self.ws_open.done():
                self.ws_open.set_exception(TransportError("WebSocket handshake rejected"))
            self.close(abort=True)
        elif isinstance(event, Ping):
            self.conn.write(ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            with contextlib.suppress(WsLocalProtocolError):
                self.conn.write(ws.send(event.response()))
            self.close(abort=False)
        elif isinstance(event, TextMessage | BytesMessage):
            part = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
            self._ws_size += len(part)
            if self._ws_size > self.layer.config.limits.max_message_size:
                log.info("WebSocket message over the limit on flow %s", self.flow)
                self.close(abort=True)
                return
            self._ws_parts.append(part)
            if event.message_finished:
                message = b"".join(self._ws_parts)
                self._ws_parts.clear()
                self._ws_size = 0
                self._on_ws_message(message)

    def _on_ws_message(self, message: bytes) -> None:
        if message == _PING:
            self.send(_PONG)
        elif message == _PONG:
            self.layer._pong(self.flow)
        else:
            self.layer._deliver(message, self.source, self._reply, stream=False)

    def _reply(self, data: bytes) -> None:
        with contextlib.suppress(FlowGoneError):
            self.send(data)

    def _answer_malformed(self, head: bytes, status: int) -> None:
        answer = error_response_for(
            head, status, reason_phrase(status), to_tag=self.layer._new_tag()
        )
        if answer is not None:
            self._reply(answer)

    # -- lifetime ------------------------------------------------------------------

    def _check_idle(self) -> None:
        self._idle = None
        if self.closed:
            return
        deadline = self.last_activity + self.layer.config.idle_timeout
        if self._loop.time() >= deadline:
            log.info("closing idle %s flow %s", self.transport, self.flow)
            self.close(abort=False)
        else:
            self._idle = self._loop.call_at(deadline, self._check_idle)

    def close(self, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        if not self.ws_open.done():
            self.ws_open.set_exception(TransportError("connection closed"))
            self.ws_open.exception()  # retrieved: nobody may be waiting
        if self.ws is not None and not abort:
            with contextlib.suppress(WsLocalProtocolError):
                self.conn.write(self.ws.send(CloseConnection(code=1000)))
        if abort:
            self.conn.abort()
        else:
            self.conn.close()
        self.layer._forget(self)


class SipTransportLayer:
    """Listeners, connections and flows of one SIP element; see the module docstring.

    ``on_message(msg, source)`` gets every well-formed message (requests
    already stamped per RFC 3581); ``on_flow_closed(flow)`` every stream flow
    that ends; ``on_pong(flow)`` every CRLF pong (RFC 5626 §4.4.1).
    """

    def __init__(
        self,
        stack: Stack,
        on_message: MessageHandler,
        *,
        on_flow_closed: FlowHandler | None = None,
        on_pong: FlowHandler | None = None,
        on_unreachable: Callable[[Endpoint], None] | None = None,
        on_stun_response: Callable[[bytes, Source], None] | None = None,
        config: SipTransportConfig | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.stack = stack
        self.config = config if config is not None else SipTransportConfig()
        self._on_message = on_message
        self._on_flow_closed = on_flow_closed
        self._on_pong = on_pong
        self._on_unreachable = on_unreachable
        self._on_stun_response = on_stun_response
        self._observers: tuple[MessageObserver, ...] = ()
        self._rng = rng if rng is not None else default_rng()
        self._flow_prefix = "".join(self._rng.choice(_TAG_ALPHABET) for _ in range(6))
        self._counter = 0
        self._udp: dict[Endpoint, DatagramEndpoint] = {}
        self._stream_listeners: list[tuple[SipTransport, StreamListener]] = []
        self._listen_tls: dict[Endpoint, ssl.SSLContext | None] = {}
        self._connections: dict[FlowId, _Connection] = {}
        self._by_remote: dict[tuple[SipTransport, Endpoint], FlowId] = {}
        self._aliases: dict[FlowId, set[tuple[SipTransport, Endpoint]]] = {}
        self._connecting: dict[tuple[SipTransport, Endpoint], asyncio.Future[_Connection]] = {}
        self._listening: list[tuple[SipTransport, Endpoint]] = []
        self._accepted_per_ip: dict[str, int] = {}
        self._tasks: set[asyncio.Task[FlowId]] = set()
        self._closed = False

    # -- setup ---------------------------------------------------------------------

    async def listen(
        self, transport: SipTransport, local: Endpoint, *, tls: ssl.SSLContext | None = None
    ) -> Endpoint:
        """Listen on ``local`` (port 0: any) for ``transport``; returns the bound endpoint.

        TLS and WSS need ``tls`` (the server context)."""
        if transport.secure and tls is None:
            raise ValueError(f"{transport} needs a TLS server context")
        if transport is SipTransport.UDP:
            holder: list[DatagramEndpoint] = []
            endpoint = await self.stack.open_udp(
                local,
                lambda data, remote: self._on_datagram(holder[0], data, remote),
                responder=self._answer_stun,
                on_icmp=self._icmp if self._on_unreachable is not None else None,
            )
            holder.append(endpoint)
            bound = endpoint.local_endpoint
            self._udp[bound] = endpoint
        else:
            listener = await self.stack.listen_stream(
                local,
                lambda conn: self._accept(transport, conn),
                tls=tls if transport.secure else None,
            )
            bound = listener.local_endpoint
            self._stream_listeners.append((transport, listener))
        self._listening.append((transport, bound))
        return bound

    @property
    def listening(self) -> list[tuple[SipTransport, Endpoint]]:
        """Every (transport, bound endpoint) listened on, in order."""
        return list(self._listening)

    def local_endpoint(self, transport: SipTransport, family: Family = Family.IPV4) -> Endpoint:
        """The first endpoint listened on for ``transport`` (the sent-by of our Vias)."""
        for t, ep in self._listening:
            if t is transport and ep.family == family:
                return ep
        raise TransportError(f"not listening on {transport}")

    def flows(self) -> list[Source]:
        """Every open stream flow."""
        return [c.source for c in self._connections.values()]

    def flow(self, flow: FlowId) -> Source | None:
        """The open flow ``flow`` names (UDP flows are always 'open'), or None."""
        conn = self._connections.get(flow)
        if conn is not None:
            return conn.source
        pair = _udp_flow_endpoints(flow)
        if pair is not None and pair[0] in self._udp:
            return Source(SipTransport.UDP, remote=pair[1], local=pair[0], flow=flow)
        return None

    # -- sending -------------------------------------------------------------------

    def add_observer(self, observer: MessageObserver) -> None:
        """Let ``observer`` see every well-formed message delivered to
        ``on_message`` and every message given to :meth:`send` or
        :meth:`send_soon` (raw bytes are not parsed for it)."""
        self._observers = (*self._observers, observer)

    def _observe_sent(self, message: SipMessage | bytes) -> None:
        if isinstance(message, SipMessage):
            for observer in self._observers:
                observer.sent(message)

    async def send(
        self,
        message: SipMessage | bytes,
        target: Target,
        *,
        server_hostname: str | None = None,
    ) -> FlowId:
        """Send one message to ``target`` and return the flow it went over.

        Stream targets reuse an open connection to the same remote and
        transport (§18.1.1) or connect; a target pinned to a closed flow
        raises :class:`FlowGoneError`; connect failures raise TransportError.
        """
        if self._closed:
            raise TransportError("transport layer is closed")
        self._observe_sent(message)
        return await self._send(message, target, server_hostname)

    async def _send(
        self, message: SipMessage | bytes, target: Target, server_hostname: str | None
    ) -> FlowId:
        data = message if isinstance(message, bytes) else serialize_message(message)
        if target.transport is SipTransport.UDP:
            if (
                self.config.large_requests_over_tcp
                and target.flow is None
                and len(data) > self.config.udp_size_limit
                and isinstance(message, SipRequest)
            ):
                # §18.1.1: the Via names the transport actually used.
                over_tcp = message.copy()
                top = over_tcp.top_via
                over_tcp.headers.remove_first("Via")
                over_tcp.headers.prepend(
                    "Via", str(dataclasses.replace(top, transport=SipTransport.TCP.via_token))
                )
                with contextlib.suppress(TransportError):
                    return await self._send(over_tcp, Target(SipTransport.TCP, target.remote), None)
            return self._send_udp(data, target)
        conn = await self._connection_for(target, server_hostname)
        conn.send(data)
        return conn.flow

    def send_soon(
        self,
        message: SipMessage | bytes,
        target: Target,
        *,
        on_failed: Callable[[Target, TransportError], None] | None = None,
    ) -> None:
        """:meth:`send` for synchronous callers (a core's driver draining
        ``messages_to_send``): UDP goes out at once, streams in a task;
        a failure goes to ``on_failed`` (else it is logged)."""

        def failed(exc: TransportError) -> None:
            if on_failed is not None:
                on_failed(target, exc)
            else:
                log.info("sending to %s failed: %s", target.remote, exc)

        if target.transport is SipTransport.UDP and not self.config.large_requests_over_tcp:
            self._observe_sent(message)
            data = message if isinstance(message, bytes) else serialize_message(message)
            try:
                self._send_udp(data, target)
            except TransportError as exc:
                failed(exc)
            return
        task = asyncio.ensure_future(self.send(message, target))
        self._tasks.add(task)

        def done(t: asyncio.Task[FlowId]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if isinstance(exc, TransportError):
                failed(exc)
            elif exc is not None:
                log.error("sending to %s raised", target.remote, exc_info=exc)

        task.add_done_callback(done)

    def send_ping(self, flow: FlowId) -> None:
        """Send an RFC 5626 §4.4.1 CRLFCRLF ping over a stream flow."""
        conn = self._connections.get(flow)
        if conn is None:
            raise FlowGoneError(f"flow {flow} is closed")
        conn.send_ping()

    def add_alias(self, flow: FlowId, remote: Endpoint) -> bool:
        """RFC 5923 §5-6: requests this element sends to ``remote`` over the
        transport of ``flow`` (a stream connection the peer opened) go over
        that connection instead of a new one, while it is open. Whether the
        peer may claim ``remote`` is the caller's decision (RFC 5923 wants
        it authenticated). An open connection of our own to ``remote`` is
        kept. Returns whether the alias is in place."""
        conn = self._connections.get(flow)
        if conn is None or conn.closed:
            return False
        key = (conn.transport, remote)
        current = self._by_remote.get(key)
        if current is not None and current != flow and current in self._connections:
            return False
        self._by_remote[key] = flow
        self._aliases.setdefault(flow, set()).add(key)
        return True

    def close_flow(self, flow: FlowId) -> None:
        """Close a stream flow (``on_flow_closed`` is called)."""
        conn = self._connections.get(flow)
        if conn is not None:
            conn.close(abort=False)

    def _send_udp(self, data: bytes, target: Target) -> FlowId:
        remote = target.remote
        endpoint: DatagramEndpoint | None = None
        if target.flow is not None:
            pair = _udp_flow_endpoints(target.flow)
            if pair is not None:
                endpoint = self._udp.get(pair[0])
                remote = pair[1]
        if endpoint is None:
            for local, candidate in self._udp.items():
                if local.family == remote.family:
                    endpoint = candidate
                    break
        if endpoint is None:
            raise TransportError(f"no UDP listener for {remote}")
        endpoint.send(data, remote)
        return _udp_flow_id(endpoint.local_endpoint, remote)

    async def _connection_for(self, target: Target, server_hostname: str | None) -> _Connection:
        if target.flow is not None:
            conn = self._connections.get(target.flow)
            if conn is None or conn.closed:
                raise FlowGoneError(f"flow {target.flow} is closed")
            await conn.ws_open
            return conn
        key = (target.transport, target.remote)
        flow = self._by_remote.get(key)
        if flow is not None and flow in self._connections:
            conn = self._connections[flow]
            await conn.ws_open
            return conn
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._connect(target, server_hostname))
            self._connecting[key] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(pending)

    async def _connect(self, target: Target, server_hostname: str | None) -> _Connection:
        if len(self._connections) >= self.config.max_connections:
            raise TransportError("connection table is full")
        tls = self.config.tls_client if target.transport.secure else None
        if target.transport.secure and tls is None:
            raise TransportError(f"{target.transport} needs SipTransportConfig.tls_client")
        raw = await self.stack.connect_stream(
            target.remote,
            tls=tls,
            server_hostname=(server_hostname or self.config.server_hostname)
            if tls is not None
            else None,
            timeout=self.config.connect_timeout,
        )
        conn = self._add(target.transport, raw, outgoing=True)
        if conn.ws is not None:
            conn.start_ws_handshake()
            try:
                await asyncio.wait_for(asyncio.shield(conn.ws_open), self.config.connect_timeout)
            except (TimeoutError, TransportError) as exc:
                conn.close(abort=True)
                raise TransportError(f"WebSocket handshake with {target.remote} failed") from exc
        return conn

    # -- receiving -----------------------------------------------------------------

    def _accept(self, transport: SipTransport, raw: StreamConnection) -> None:
        per_ip = self.config.max_connections_per_ip
        host = raw.remote_endpoint.host
        if (
            self._closed
            or len(self._connections) >= self.config.max_connections
            or (per_ip and self._accepted_per_ip.get(host, 0) >= per_ip)
        ):
            log.info("refusing a %s connection from %s: at the cap", transport, host)
            raw.abort()
            return
        self._accepted_per_ip[host] = self._accepted_per_ip.get(host, 0) + 1
        self._add(transport, raw, outgoing=False)

    def _add(
        self, transport: SipTransport, raw: StreamConnection, *, outgoing: bool
    ) -> _Connection:
        self._counter += 1
        flow = f"{self._flow_prefix}{self._counter}"
        conn = _Connection(self, flow, transport, raw, outgoing=outgoing)
        self._connections[flow] = conn
        self._by_remote[(transport, raw.remote_endpoint)] = flow
        return conn

    def _forget(self, conn: _Connection) -> None:
        if self._connections.pop(conn.flow, None) is None:
            return
        if not conn.outgoing:
            host = conn.source.remote.host
            left = self._accepted_per_ip.get(host, 1) - 1
            if left > 0:
                self._accepted_per_ip[host] = left
            else:
                self._accepted_per_ip.pop(host, None)
        for key in (conn.transport, conn.source.remote), *self._aliases.pop(conn.flow, ()):
            if self._by_remote.get(key) == conn.flow:
                del self._by_remote[key]
        if self._on_flow_closed is not None:
            try:
                self._on_flow_closed(conn.flow)
            except Exception:
                log.exception("on_flow_closed failed for %s", conn.flow)

    def _pong(self, flow: FlowId) -> None:
        if self._on_pong is not None:
            try:
                self._on_pong(flow)
            except Exception:
                log.exception("on_pong failed for %s", flow)

    def _answer_stun(self, data: bytes, remote: Endpoint) -> bytes | None:
        """RFC 5626 §8: STUN Binding on the SIP UDP port, told apart by the first byte."""
        if not data or data[0] > 0x01:
            return None
        if not is_stun_message(data):
            return None  # neither SIP nor valid STUN: _on_datagram drops it
        try:
            request = parse_stun(data)
        except MalformedMessageError:
            return None
        if request.method != Method.BINDING or request.message_class != MessageClass.REQUEST:
            return None
        response = request.success().add(stun_attributes.XOR_MAPPED_ADDRESS, remote)
        return serialize_stun(response, fingerprint=request.has_fingerprint)

    def _icmp(self, remote: Endpoint, icmp_type: int, code: int, info: int) -> None:
        """ICMP destination unreachable for a datagram we sent: IPv4 type 3
        (RFC 792) except code 4, fragmentation needed (RFC 1191), or ICMPv6
        type 1 (RFC 4443 §3.1). Other errors (ICMPv6 type 3 is time exceeded)
        do not mean the destination is gone."""
        if self._on_unreachable is None:
            return
        if remote.family == Family.IPV6:
            if icmp_type != 1:
                return
        elif icmp_type != 3 or code == 4:
            return
        try:
            self._on_unreachable(remote)
        except Exception:
            log.exception("on_unreachable failed for %s", remote)

    def _stun_response(self, endpoint: DatagramEndpoint, data: bytes, remote: Endpoint) -> None:
        """A STUN message the responder did not answer (a response to one of
        our keepalives, RFC 5626 §4.4.1; an indication): handed up whole."""
        if self._on_stun_response is None or not is_stun_message(data):
            return
        local = endpoint.local_endpoint
        source = Source(
            transport=SipTransport.UDP, remote=remote, local=local, flow=_udp_flow_id(local, remote)
        )
        try:
            self._on_stun_response(data, source)
        except Exception:
            log.exception("on_stun_response failed for %s", remote)

    def _on_datagram(self, endpoint: DatagramEndpoint, data: bytes, remote: Endpoint) -> None:
        if not data or data[0] <= 0x01:
            # STUN that the responder did not answer: responses to our
            # keepalives, indications.
            self._stun_response(endpoint, data, remote)
            return
        if data in (_PING, _PONG):
            return  # CRLF keepalives are for streams; UDP uses STUN (RFC 5626 §4.4.2)
        local = endpoint.local_endpoint
        source = Source(
            transport=SipTransport.UDP, remote=remote, local=local, flow=_udp_flow_id(local, remote)
        )

        def reply(answer: bytes) -> None:
            endpoint.send(answer, remote)

        self._deliver(data, source, reply, stream=False)

    def _deliver(
        self, data: bytes, source: Source, reply: Callable[[bytes], None], *, stream: bool
    ) -> None:
        try:
            message = parse_message(data, limits=self.config.limits, stream=stream)
            if isinstance(message, SipRequest):
                stamp_received(message, source)
        except MalformedMessageError as exc:
            log.info("malformed message from %s: %s", source.remote, exc)
            if exc.error_code is not None:
                answer = error_response_for(
                    _head_of(data),
                    exc.error_code,
                    reason_phrase(exc.error_code),
                    to_tag=self._new_tag(),
                )
                if answer is not None:
                    reply(answer)
            return
        try:
            for observer in self._observers:
                observer.received(message)
            self._on_message(message, source)
        except Exception:
            log.exception("on_message failed for a message from %s", source.remote)

    def _new_tag(self) -> str:
        return "".join(self._rng.choice(_TAG_ALPHABET) for _ in range(10))

    # -- lifetime ------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening and close every connection."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._udp.values():
            endpoint.close()
        for _, listener in self._stream_listeners:
            listener.close()
        for conn in list(self._connections.values()):
            conn.close(abort=False)
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        for endpoint in self._udp.values():
            await endpoint.wait_closed()
        for _, listener in self._stream_listeners:
            await listener.wait_closed()

    async def __aenter__(self) -> SipTransportLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()
