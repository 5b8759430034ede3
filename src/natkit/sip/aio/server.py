"""The SIP server element: registrar, home proxy and Outbound edge on one transport layer.

Theory of operation
-------------------
:class:`SipServer` composes the sans-IO cores into the element that
``natkit sip-server`` runs. It has two shapes (RFC 6314 §5.1):

* **registrar + home proxy** (the default; with the edge co-located, RFC
  6314 §5.1.1): messages go through one
  :class:`~natkit.sip.transaction.TransactionLayer`. REGISTER for a served
  domain is authenticated (:mod:`natkit.sip.digest` against the users in the
  store), evaluated by :class:`~natkit.sip.registrar.SipRegistrar` and
  written atomically to the :class:`~natkit.sip.location.LocationService`.
  Other requests for a served domain are forked by
  :class:`~natkit.sip.proxy.ForkingProxy` to the AoR's bindings: through the
  binding's Path when it has one (a separate edge proxy), else over the very
  flow the REGISTER came on while that flow is open (which is what gets a
  request through the user agent's NAT: RFC 5626 §5.3 for outbound user
  agents, and the "register the source" NAT helper for the others, see
  docs/sip-nat.md), else to the Contact itself. Requests with a Route left
  after removing the server's own are forwarded to that Route; requests for
  foreign domains are refused (403): the server is not an open relay.
* **edge only** (RFC 6314 §5.1.2, ``edge_upstream`` set): every message goes
  to the stateless :class:`~natkit.sip.edge.EdgeProxy`, which adds Path and
  Record-Route with flow tokens and sends requests for user agents over
  their flows.

Routing rule (no open relay): a request whose Request-URI is not a served
domain, or that still carries a Route after the server's own are removed,
is forwarded only when one of the removed Routes is a Record-Route this
server issued - recognised by its sealed flow token (the same AES-SIV tokens
as the edge's), never by host and port alone. Dialog-forming requests are
double record-routed (RFC 5658) with the tokens of the caller's and the
callee's flows, so every request in the dialog, the 2xx ACK included, goes
over the other party's flow, through its NAT (RFC 5626 §5.3 applied to the
co-located edge). Anything else gets 403.

Protocol decisions are the cores'; the coroutines here only fetch what the
cores need from the store (bindings, HA1 values) and hand the result back,
so a request is evaluated once its data is at hand (STYLE.md "Drivers").
Keepalives are the transport layer's (STUN on UDP, CRLF on streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from natkit.addr import Endpoint, canonical_ip
from natkit.errors import MalformedMessageError, NatkitError, TransportError
from natkit.net.stack import Stack
from natkit.rng import Rng, default_rng
from natkit.sip.aio.resolve import SipResolver
from natkit.sip.aio.transport import SipTransportConfig, SipTransportLayer
from natkit.sip.aio.users import Ha1Cache, authenticate
from natkit.sip.digest import AuthOk, DigestAlgorithm, DigestServer, DigestServerConfig
from natkit.sip.edge import DIALOG_FORMING_METHODS, EdgeProxy, EdgeProxyConfig, same_flow
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.flow_token import FlowTokenSigner
from natkit.sip.forwarding import is_looped, pop_own_via, preprocess_routes
from natkit.sip.headers import NameAddr, Via, parse_name_addr
from natkit.sip.location import LocationService
from natkit.sip.media_hook import (
    DIALOG_ENDING_STATUSES,
    OFFER_METHODS,
    MediaHandler,
    carries_sdp,
    dialog_tags,
    is_invite_error,
    media_source,
    with_body,
)
from natkit.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    validate_request,
)
from natkit.sip.nat_helper import (
    NatPinger,
    NatPingerConfig,
    NatReason,
    NatVerdict,
    detect_nat_binding,
)
from natkit.sip.nat_helper_events import NatBindingLost
from natkit.sip.proxy import Destination, ForkingProxy, ForkTarget
from natkit.sip.registrar import (
    Binding,
    BindingChanges,
    RegisterOutcome,
    RegistrarConfig,
    SipRegistrar,
)
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    StrayResponseReceived,
    TransactionEvent,
)
from natkit.sip.uri import SipUri, Uri
from natkit.sip.via_routing import default_port, response_target
from natkit.store.base import Store

__all__ = ["SipServer", "SipServerConfig", "binding_destinations"]

_log = logging.getLogger(__name__)
_log.addHandler(logging.NullHandler())

SERVER_NAME = "natkit"
_CONFIRMED_CALLS_MAX = 100_000


@dataclass(frozen=True, slots=True)
class SipServerConfig:
    """What ``natkit sip-server`` is told (docs/sip-server.md).

    ``listen``: (transport, endpoint) pairs; TLS and WSS need ``tls``.
    ``host``: the name or address the server puts in its Via, Record-Route
    and Path (default: the first listening address). ``domains``: the
    domains it is registrar and home proxy for. ``realm``: one digest realm
    for every domain (default: each domain is its own realm, and its users
    are stored under it: :meth:`SipServer.realm_for`); ``authenticate`` off makes registration
    open (lab and tests only). ``secret``: nonce, flow-token and GRUU key
    (share it across a cluster). ``edge_upstream``: run as an edge proxy
    only, sending everything from user agents there. ``nat_pings``: keep the
    bindings of NATed user agents without Outbound alive with OPTIONS (UDP)
    and CRLF (streams) pings and drop those that stop answering
    (:class:`~natkit.sip.nat_helper.NatPinger`, docs/sip-nat.md).
    ``max_failover_targets``: how many servers of a next hop's RFC 3263 plan
    a forwarded request may try, one after the other (§4.3).
    ``alias_peers``: addresses of adjacent proxies (edges) whose ``alias``
    Via over TCP/TLS is honoured: requests for them reuse the connection
    they opened (RFC 5923; trusted by address, see :meth:`SipServer._alias`).
    ``connection_reuse``: as an edge, ask the upstream for that (``alias``
    in the Via of what it sends there). ``ha1_cache_ttl``: how long a user's
    HA1s are kept in memory between store reads (:class:`~natkit.sip.aio.users.Ha1Cache`;
    None reads the store for every request).
    """

    listen: tuple[tuple[SipTransport, Endpoint], ...]
    domains: frozenset[str]
    secret: bytes
    host: str | None = None
    realm: str | None = None
    authenticate: bool = True
    digest_algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    check_digest_uri: bool = True
    tls: ssl.SSLContext | None = None
    record_route: bool = True
    flow_timer: int | None = 120
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    edge_upstream: Target | None = None
    nat_pings: bool = True
    max_failover_targets: int = 5
    alias_peers: frozenset[str] = frozenset()
    connection_reuse: bool = False
    ha1_cache_ttl: float | None = 30.0
    transport: SipTransportConfig = field(default_factory=SipTransportConfig)

    def __post_init__(self) -> None:
        if not self.listen:
            raise ValueError("a SIP server needs at least one listening address")
        if not self.domains and self.edge_upstream is None:
            raise ValueError("a registrar needs at least one domain (--domain)")
        if len(self.secret) < 16:
            raise ValueError("the server secret must be at least 16 bytes")


class SipServer:
    """The element; ``async with SipServer(stack, config, store) as server: ...``."""

    def __init__(
        self,
        stack: Stack,
        config: SipServerConfig,
        store: Store,
        *,
        resolver: SipResolver | None = None,
        rng: Rng | None = None,
        wallclock: Callable[[], float] | None = None,
        media_handler: MediaHandler | None = None,
    ) -> None:
        self.config = config
        self.media_handler = media_handler
        # Events waiting behind a response whose SDP the media handler is
        # rewriting: the transaction layer's events stay in order.
        self._media_backlog: deque[TransactionEvent] = deque()
        self._media_busy = False
        self._confirmed_calls: dict[str, None] = {}  # Call-IDs with a 2xx INVITE sent
        self.store = store
        self.rng = rng if rng is not None else default_rng()
        self._wallclock = wallclock if wallclock is not None else store.clock
        self._resolver = resolver
        self._alias_peers = frozenset(_canonical_host(h) for h in config.alias_peers)
        self.transport = SipTransportLayer(
            stack,
            self._on_message,
            on_flow_closed=self._on_flow_closed,
            on_unreachable=self._on_unreachable,
            config=config.transport,
            rng=self.rng,
        )
        self.layer = TransactionLayer(rng=self.rng)
        # No flow index: the server never calls remove_flow (it routes over a
        # binding's flow only while that flow is open), and with many AoRs
        # behind one flow (an edge proxy, a NAT, one sipp socket) the index is
        # one document rewritten whole on every REGISTER: O(n) each, O(n^2) total.
        self.location = LocationService(store, index_flows=False)
        self.signer = FlowTokenSigner([config.secret])
        self.registrar = SipRegistrar(
            RegistrarConfig(
                domains=config.domains,
                default_expires=config.default_expires,
                min_expires=config.min_expires,
                max_expires=config.max_expires,
                gruu_secrets=(config.secret,),
            )
        )
        realm = config.realm or (sorted(config.domains)[0] if config.domains else "natkit")
        self.digest = DigestServer(
            DigestServerConfig(
                realm=realm,
                secrets=(config.secret,),
                algorithms=config.digest_algorithms,
                check_uri=config.check_digest_uri,
            ),
            rng=self.rng,
        )
        self.ha1_cache: Ha1Cache | None = (
            Ha1Cache(ttl=config.ha1_cache_ttl) if config.ha1_cache_ttl is not None else None
        )
        self.proxy = ForkingProxy(self.layer, via_for=self._via_for, is_own_via=self._is_own_via)
        self.pinger: NatPinger | None = None
        self.edge: EdgeProxy | None = None
        self._host = config.host
        self._ports: dict[SipTransport, int] = {}
        self._own_hosts: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: dict[ServerTransactionId, bool] = {}  # -> CANCELled meanwhile
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Listen on every configured address (port 0 picks one: see :attr:`listening`)."""
        self._loop = asyncio.get_running_loop()
        for transport, local in self.config.listen:
            bound = await self.transport.listen(transport, local, tls=self.config.tls)
            self._ports.setdefault(transport, bound.port)
            if self._host is None and not _wildcard(bound.host):
                self._host = bound.host
        own = {ep.host for _, ep in self.transport.listening}
        if any(_wildcard(host) for host in own):
            # Listening on every address: each of them is ours, and the name in
            # our Via/Record-Route/Path is the first that is not loopback.
            addresses = [a for a in self.transport.stack.local_addresses()]
            own.update(a.ip for a in addresses)
            if self._host is None:
                public = [a.ip for a in addresses if not a.is_loopback]
                self._host = (public or ["127.0.0.1"])[0]
        self._own_hosts = {h.lower() for h in own if not _wildcard(h)}
        if self.config.edge_upstream is None and self.config.nat_pings:
            self.pinger = NatPinger(
                NatPingerConfig(host=self.host), self.layer, via_for=self._via_for, rng=self.rng
            )
        if self.config.edge_upstream is not None:
            self.edge = EdgeProxy(
                EdgeProxyConfig(
                    host=self.host,
                    ports=self._ports,
                    upstream=self.config.edge_upstream,
                    signer=self.signer,
                    flow_timer=self.config.flow_timer,
                    connection_reuse=self.config.connection_reuse,
                )
            )

    @property
    def host(self) -> str:
        if self._host is None:
            raise NatkitError("the server is not started")
        return self._host

    @property
    def listening(self) -> list[tuple[SipTransport, Endpoint]]:
        return self.transport.listening

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.transport.close()
        await self.transport.wait_closed()

    async def __aenter__(self) -> SipServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- network in -----------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None  # set in start(), before any message
        return self._loop.time()

    def _on_message(self, message: SipMessage, source: Source) -> None:
        if self.edge is not None:
            # The transport reports closed flows only; a flow is known to be
            # open once something arrived over it.
            self.edge.flow_opened(source)
            self.edge.receive_message(message, source, now=self._now())
            for out, target in self.edge.messages_to_send():
                self._spawn(self._send(out, target))
            return
        if self._alias_peers and isinstance(message, SipRequest):
            self._alias(message, source)
        self.layer.receive_message(message, source, now=self._now())
        self._pump()

    def _alias(self, request: SipRequest, source: Source) -> None:
        """RFC 5923 §5-6: a request with ``alias`` in its top Via, over a TCP
        or TLS connection the peer opened, makes requests to the Via's
        sent-by go over that connection. Honoured only for ``alias_peers``
        and a sent-by that is the connection's own source address (with
        the peer's listening port): RFC 5923 asks for the peer's TLS
        certificate to vouch for the sent-by, and natkit's stacks expose
        no peer certificate, so adjacent proxies are trusted by
        configuration instead - which also lets plain TCP peers use it."""
        if source.transport not in (SipTransport.TCP, SipTransport.TLS):
            return
        if source.remote.host not in self._alias_peers:
            return
        try:
            via = request.top_via
            sent_by = canonical_ip(via.host)
        except (MalformedMessageError, ValueError):
            return
        if not via.has_param("alias") or sent_by != source.remote.host:
            return
        port = via.port or default_port(source.transport)
        self.transport.add_alias(source.flow, Endpoint(sent_by, port))

    def _on_unreachable(self, remote: Endpoint) -> None:
        """ICMP unreachable: the UDP transactions towards ``remote`` failed
        (RFC 3263 §4.3: the proxy moves on to the next server)."""
        if self.edge is None:
            self.layer.destination_unreachable(remote, now=self._now())
            self._pump()

    def _on_flow_closed(self, flow: str) -> None:
        if self.edge is not None:
            self.edge.flow_closed(flow)
        if self.pinger is not None:
            self.pinger.flow_closed(flow)
            self._pump()

    # -- the transaction layer's events and output ---------------------------------

    def _pump(self) -> None:
        now = self._now()
        pinger = self.pinger
        media = self.media_handler
        while (event := self.layer.next_event()) is not None:
            if media is not None and (self._media_backlog or _answer_to_rewrite(event)):
                self._media_backlog.append(event)
                if not self._media_busy:
                    self._media_busy = True
                    self._spawn(self._media_answers())
                continue
            self._dispatch(event, now)
        if pinger is not None:
            self._drain_pinger(pinger)
        for message, target in self.layer.messages_to_send():
            if media is not None and isinstance(message, SipResponse):
                if is_invite_error(message):
                    self._media_error_sent(message, media)
                elif _ends_dialog_by_bye(message):
                    self._media_ended(message)
                else:
                    self._media_confirmed(message)
            self._spawn(self._send(message, target))
        self._arm_timer()

    def _dispatch(self, event: TransactionEvent, now: float) -> None:
        if self.pinger is not None and self.pinger.handle_event(event, now=now):
            return
        if self.proxy.handle_event(event, now=now):
            return
        match event:
            case RequestReceived(request=request, server_txn=txn, cancelled_txn=cancelled) if (
                request.method == "CANCEL"
            ):
                self._cancel(request, txn, cancelled)
            case RequestReceived(request=request, source=source, server_txn=txn):
                self._spawn(self._serve(request, source, txn))
            case AckReceived(request=request, source=source, server_txn=None):
                self._spawn(self._guarded(self._forward_ack(request, source)))
            case StrayResponseReceived(response=response):
                self._forward_stray(response)
            case _:
                pass

    # -- the media hook (natkit.sip.media_hook) ------------------------------------

    async def _media_answers(self) -> None:
        """Hand the backlog to the proxy in order, each response with SDP
        after the media handler has seen (and maybe rewritten) it."""
        try:
            while self._media_backlog:
                event = self._media_backlog[0]
                if isinstance(event, ResponseReceived | StrayResponseReceived) and carries_sdp(
                    event.response
                ):
                    rewritten = await self._media_message(event.response, event.source)
                    if isinstance(rewritten, SipResponse):
                        event = dataclasses.replace(event, response=rewritten)
                self._media_backlog.popleft()
                self._dispatch(event, self._now())
                self._pump()
        finally:
            self._media_busy = False
            if self._media_backlog:  # cancelled at shutdown: nothing is left waiting
                self._media_backlog.clear()

    async def _media_message(
        self, message: SipMessage, source: Source, *, target_nat: NatVerdict | None = None
    ) -> SipMessage:
        """``message`` as the media handler wants it forwarded (the
        original when it has no SDP, the handler keeps it or fails);
        ``target_nat``: the verdict on the registered contacts it goes to."""
        handler = self.media_handler
        if handler is None or not carries_sdp(message):
            return message
        try:
            call_id = message.call_id
        except MalformedMessageError:
            return message
        from_tag, to_tag = dialog_tags(message)
        where = media_source(message, source)
        if target_nat is not None:
            where = dataclasses.replace(where, target_nat=target_nat)
        offer = isinstance(message, SipRequest) and message.method in OFFER_METHODS
        try:
            if offer:
                body = await handler.on_offer(call_id, from_tag, to_tag, message, where)
            else:
                body = await handler.on_answer(call_id, from_tag, to_tag, message, where)
        except Exception:  # the call goes on with its own SDP
            _log.exception("media handler failed on %r", message)
            return message
        if body is None or body == message.body:
            return message
        return with_body(message, body)

    async def _media_request(
        self, request: SipRequest, source: Source, *, target_nat: NatVerdict | None = None
    ) -> SipRequest:
        """An INVITE, UPDATE or ACK about to be proxied, through the handler."""
        if self.media_handler is None or request.method not in ("INVITE", "UPDATE", "ACK"):
            return request
        rewritten = await self._media_message(request, source, target_nat=target_nat)
        return rewritten if isinstance(rewritten, SipRequest) else request

    def _media_ended(self, message: SipMessage) -> None:
        handler = self.media_handler
        if handler is None:
            return
        try:
            call_id = message.call_id
        except MalformedMessageError:
            return
        self._confirmed_calls.pop(call_id, None)
        try:
            handler.on_call_ended(call_id)
        except Exception:
            _log.exception("media handler failed ending call %s", call_id)

    def _media_error_sent(self, response: SipResponse, handler: MediaHandler) -> None:
        """A final error to an INVITE: the end of an initial INVITE's call,
        of a confirmed call's only when the error ends the dialog (RFC 5057)."""
        try:
            call_id = response.call_id
        except MalformedMessageError:
            return
        if call_id in self._confirmed_calls and response.status not in DIALOG_ENDING_STATUSES:
            return
        self._media_ended(response)

    def _media_confirmed(self, message: SipMessage) -> None:
        """Remember Call-IDs whose INVITE got a 2xx (bounded: oldest forgotten)."""
        if self.media_handler is None or not isinstance(message, SipResponse):
            return
        if not 200 <= message.status < 300:
            return
        try:
            if message.cseq.method != "INVITE":
                return
            call_id = message.call_id
        except MalformedMessageError:
            return
        confirmed = self._confirmed_calls
        confirmed[call_id] = None
        if len(confirmed) > _CONFIRMED_CALLS_MAX:
            del confirmed[next(iter(confirmed))]

    def _drain_pinger(self, pinger: NatPinger) -> None:
        """CRLF keepalives to write, and bindings that stopped answering to
        delete (docs/sip-nat.md)."""
        for target in pinger.crlf_pings_to_send():
            if target.flow is not None:
                with contextlib.suppress(TransportError):
                    self.transport.send_ping(target.flow)
        while (lost := pinger.next_event()) is not None:
            if isinstance(lost, NatBindingLost):
                self._spawn(self._forget_binding(lost.aor, lost.key))

    async def _forget_binding(self, aor: str, key: str) -> None:
        def compute(current: tuple[Binding, ...]) -> tuple[BindingChanges, None]:
            present = any(b.key == key for b in current)
            return BindingChanges(remove=(key,) if present else ()), None

        await self.location.update(aor, compute)

    def _arm_timer(self) -> None:
        deadline = self.layer.get_timer()
        if self.pinger is not None:
            ping_at = self.pinger.get_timer()
            if ping_at is not None and (deadline is None or ping_at < deadline):
                deadline = ping_at
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.layer.handle_timer(now=self._now())
        if self.pinger is not None:
            self.pinger.handle_timer(now=self._now())
        self._pump()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("SIP task failed", exc_info=task.exception())

    async def _send(self, message: SipMessage, target: Target) -> None:
        try:
            await self.transport.send(message, target)
        except TransportError as exc:
            _log.debug("send to %s failed: %s", target.remote, exc)
            if self.edge is None:
                self.layer.transport_failed_for(message, now=self._now())
                self._pump()

    def _respond(
        self, request: SipRequest, txn: ServerTransactionId, response: SipResponse
    ) -> None:
        response.headers.set("Server", SERVER_NAME)
        self.layer.send_response(response, now=self._now(), server_txn=txn)
        self._pump()

    # -- requests -----------------------------------------------------------------

    async def _serve(self, request: SipRequest, source: Source, txn: ServerTransactionId) -> None:
        """One request from the transaction layer; whatever goes wrong while
        serving it is answered (400 for a header that does not parse, 500
        otherwise), so no server transaction is left without an answer."""
        self._serving[txn] = False
        try:
            await self._route_request(request, source, txn)
        except MalformedMessageError as exc:
            self._respond(
                request, txn, make_response(request, 400, _short(exc), to_tag=self._tag())
            )
        except Exception:  # a bug must not leave the transaction open
            _log.exception("serving %s failed", request.method)
            self._respond(request, txn, make_response(request, 500, to_tag=self._tag()))
        finally:
            self._serving.pop(txn, None)

    async def _route_request(
        self, request: SipRequest, source: Source, txn: ServerTransactionId
    ) -> None:
        status = validate_request(request, proxy=True)
        if status == 483 and request.method == "OPTIONS":
            status = None  # §11, §16.3 step 3: answered here, below
        if status is not None:
            self._respond(request, txn, make_response(request, status, to_tag=self._tag()))
            return
        request, tokens = self._pop_own_routes(request)
        if tokens is None:
            self._respond(
                request,
                txn,
                make_response(request, 403, "Forbidden (bad route)", to_tag=self._tag()),
            )
            return
        if is_looped(request, self._is_own_via):
            # §16.3 step 4: it carries our Via with the hash we would put there
            # now (same Request-URI, Route, tags...): a loop, not a spiral.
            self._respond(request, txn, make_response(request, 482, to_tag=self._tag()))
            return
        if tokens:
            # A request on a route this server recorded (in a dialog): over the
            # flow of the party it did not come from, else along its Route set
            # or to its Request-URI (RFC 5626 §5.3 applied to our own RR).
            await self._forward_in_dialog(request, source, txn, tokens)
            return
        uri = request.uri
        if (
            request.headers.get("Route") is not None
            or not isinstance(uri, SipUri)
            or uri.host.lower() not in self._served_hosts()
        ):
            # Not ours and on no route we recorded: not an open relay.
            denied = make_response(request, 403, "Relaying Denied", to_tag=self._tag())
            self._respond(request, txn, denied)
            return
        if request.method == "REGISTER":
            await self._register(request, source, txn)
            return
        if uri.user is None or (request.method == "OPTIONS" and request.max_forwards == 0):
            # A request for the server itself (OPTIONS pings, RFC 3261 §11).
            if request.method == "OPTIONS":
                ok = make_response(request, 200, to_tag=self._tag())
                ok.headers.add("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE")
                self._respond(request, txn, ok)
            else:
                self._respond(request, txn, make_response(request, 404, to_tag=self._tag()))
            return
        await self._proxy_to_aor(request, source, txn, uri)

    def _pop_own_routes(self, request: SipRequest) -> tuple[SipRequest, list[Source] | None]:
        """§16.4 for every leading Route of ours; the flows their tokens name
        (None: one of them carries a token that does not open)."""
        tokens: list[Source] = []
        while True:
            request, popped = preprocess_routes(request, self._is_own_route)
            if popped is None:
                return request, tokens
            user = popped.uri.user if isinstance(popped.uri, SipUri) else None
            if user:
                flow = self.signer.decode(user)
                if flow is None:
                    return request, None
                tokens.append(flow)

    async def _forward_in_dialog(
        self, request: SipRequest, source: Source, txn: ServerTransactionId, tokens: list[Source]
    ) -> None:
        other = next((flow for flow in tokens if not same_flow(flow, source)), None)
        if other is not None:
            if other.transport.reliable and self.transport.flow(other.flow) is None:
                self._respond(request, txn, make_response(request, 430, to_tag=self._tag()))
                return
            targets = [Target(other.transport, other.remote, other.flow)]
        else:
            uri = request.uri
            if (
                request.headers.get("Route") is None
                and isinstance(uri, SipUri)
                and uri.host.lower() in self.config.domains
                and uri.user is not None
            ):
                # The remote target is one of our AoRs or GRUUs (a UA whose
                # Contact is its GRUU, RFC 5627 §5.1): the location service.
                await self._proxy_to_aor(request, source, txn, uri)
                return
            targets = await self._resolve_all(_next_hop(request))
        if not targets:
            self._respond(request, txn, make_response(request, 404, to_tag=self._tag()))
            return
        # RFC 3263 §4.3: the next hop's servers in the plan's order, failing over.
        fork = ForkTarget(
            tuple(Destination(uri=request.uri, target=t) for t in targets), servers=True
        )
        request = await self._media_request(request, source)
        self.proxy.proxy(request, txn, [fork], now=self._now())
        self._pump()

    def realm_for(self, request: SipRequest) -> str:
        """The digest realm a REGISTER is challenged in and its user looked
        up under (``sip/users/<realm>``): ``config.realm`` when set (one
        realm for every domain), else the domain it registers in - its
        Request-URI's, or its To's when addressed to the server's own
        address (RFC 3261 §22.1: the realm names the protection domain; one
        per served domain keeps each domain's users apart)."""
        if self.config.realm:
            return self.config.realm
        for uri in (self._as_domain_register(request).uri, request.to.uri):
            if isinstance(uri, SipUri) and uri.host.lower() in self.config.domains:
                return uri.host.lower()
        return self.digest.config.realm

    def _as_domain_register(self, request: SipRequest) -> SipRequest:
        """A REGISTER addressed to the server's own address (phones configured
        with an IP, sipp) registers in the domain of its To, when that domain
        is served (RFC 3261 §10.3 step 1 asks which domain the Request-URI
        names; the server's address stands for the domains it serves). The
        digest check has already run against the Request-URI as sent."""
        uri = request.uri
        if not isinstance(uri, SipUri) or uri.host.lower() not in self._own_hosts | {
            self.host.lower()
        }:
            return request
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri) or to_uri.host.lower() not in self.config.domains:
            return request
        rewritten = request.copy()
        rewritten.uri = SipUri(scheme=uri.scheme, host=to_uri.host)
        return rewritten

    async def _register(
        self, request: SipRequest, source: Source, txn: ServerTransactionId
    ) -> None:
        user: str | None = None
        if self.config.authenticate:
            realm = self.realm_for(request)
            result = await authenticate(
                self.digest,
                self.store,
                request,
                now=self._wallclock(),
                realm=realm,
                cache=self.ha1_cache,
            )
            if not isinstance(result, AuthOk):
                challenge = self.digest.answer(request, result, now=self._wallclock(), realm=realm)
                if challenge is not None:
                    self._respond(request, txn, challenge)
                return
            user = result.username
        request = self._as_domain_register(request)
        aor = self.registrar.aor_of(request)
        if aor is None:
            outcome = self.registrar.process(
                request, (), now=self._wallclock(), authenticated_user=user, source=source
            )
            self._respond(request, txn, outcome.response)
            return
        registrar = self.registrar
        wall = self._wallclock()

        def compute(current: tuple[Binding, ...]) -> tuple[BindingChanges, RegisterOutcome]:
            outcome = registrar.process(
                request, current, now=wall, authenticated_user=user, source=source
            )
            return outcome.changes, outcome

        after, outcome = await self.location.update(aor, compute)
        if self.pinger is not None and outcome.ok:
            self.pinger.sync_aor(aor, after, now=self._now(), wall=wall)
        response = outcome.response
        if (
            outcome.ok
            and self.config.flow_timer is not None
            and any(t.lower() == "outbound" for t in response.headers.values("Require"))
            and "Flow-Timer" not in response.headers
        ):
            response.headers.add("Flow-Timer", str(self.config.flow_timer))
        self._respond(request, txn, response)

    async def _proxy_to_aor(
        self, request: SipRequest, source: Source, txn: ServerTransactionId, uri: SipUri
    ) -> None:
        bindings, status = await self._bindings_for(uri)
        if status is not None:
            self._respond(request, txn, make_response(request, status, to_tag=self._tag()))
            return
        dialog = self.config.record_route and _dialog_forming(request)
        targets: list[ForkTarget] = []
        by_instance: dict[str, list[Destination]] = {}
        callee_nat: set[NatReason] = set()
        for binding in bindings:
            destinations = await self._destinations(binding, source if dialog else None)
            if not destinations:
                continue
            callee_nat |= detect_nat_binding(binding).reasons
            if binding.instance:
                by_instance.setdefault(binding.instance, []).extend(destinations)
            else:
                targets.append(
                    ForkTarget(destinations, q=binding.effective_q, servers=len(destinations) > 1)
                )
        for instance, flows in by_instance.items():
            q = max(b.effective_q for b in bindings if b.instance == instance)
            targets.append(ForkTarget(tuple(flows), q=q))
        if self._serving.get(txn):
            # CANCELled while its bindings were being read (§16.10).
            self._respond(request, txn, make_response(request, 487, to_tag=self._tag()))
            return
        if targets:
            request = await self._media_request(
                request, source, target_nat=NatVerdict(frozenset(callee_nat))
            )
        self.proxy.proxy(request, txn, targets, now=self._now())
        self._pump()

    async def _bindings_for(self, uri: SipUri) -> tuple[tuple[Binding, ...], int | None]:
        """The bindings a request for ``uri`` reaches (RFC 3261 §16.5), or
        the status to answer instead.

        A GRUU (RFC 5627 §8.4.1) reaches its instance only: a public GRUU
        (``gr=<instance>``) the bindings with that ``+sip.instance``, 480
        when the instance has none (the GRUU itself stays valid); a
        temporary GRUU (``tgruu.`` token, ``gr`` without value) the
        instance's bindings registered under the Call-ID it was issued
        with (§3.2: a UA that reboots loses its old temporary GRUUs), 404
        when it does not open under our secrets or no such binding is left.
        Any other URI: the AoR's bindings, 404 when there are none.
        """
        if uri.has_param("gr") and self.registrar.gruu is not None:
            gruu = self.registrar.gruu.resolve(uri)
            if gruu is None:
                return (), 404
            mine = tuple(
                b
                for b in await self.location.lookup(gruu.aor)
                if gruu.matches(b.instance, b.call_id)
            )
            if not mine:
                return (), 404 if gruu.temporary else 480
            return mine, None
        bindings = tuple(await self.location.lookup(uri.aor))
        if self.pinger is not None:
            # What the store says now (another registrar of the cluster may
            # have removed or refreshed bindings): pings follow it.
            self.pinger.refresh_aor(uri.aor, bindings, now=self._now(), wall=self._wallclock())
        return bindings, None if bindings else 404

    async def _destinations(
        self, binding: Binding, caller: Source | None
    ) -> tuple[Destination, ...]:
        """The ways to reach ``binding`` (:func:`binding_destinations`); with
        ``caller`` (a dialog-forming request), the branch is double
        record-routed (RFC 5658) with tokens of both flows, so requests in the
        dialog reach each side over its own flow, through its NAT."""
        try:
            contact = parse_name_addr(binding.contact)
        except NatkitError:
            return ()
        flow = self.transport.flow(binding.flow) if binding.flow else None
        if flow is None and binding.reg_id is not None and binding.flow:
            return ()  # an outbound flow that closed: try the instance's others (RFC 5626 §7)
        path = []
        for value in binding.path:
            with contextlib.suppress(NatkitError):
                path.append(parse_name_addr(value))
        destinations = await binding_destinations(contact.uri, path, flow, self._resolve_all)
        if caller is None:
            return destinations
        callee_side = flow if flow is not None and not path else None
        routes = (
            *((self._record_route(callee_side),) if callee_side is not None else ()),
            self._record_route(caller),
        )
        return tuple(dataclasses.replace(d, record_routes=routes) for d in destinations)

    async def _forward_ack(self, ack: SipRequest, source: Source) -> None:
        """An ACK for a 2xx goes end to end (§13.2.2.4, §16.12): forwarded
        statelessly like any request in the dialog (over the other party's
        flow), and only on a route this server recorded."""
        ack, tokens = self._pop_own_routes(ack)
        if not tokens:
            return
        other = next((flow for flow in tokens if not same_flow(flow, source)), None)
        if other is not None:
            target: Target | None = Target(other.transport, other.remote, other.flow)
        elif isinstance(ack.uri, SipUri) and ack.uri.host.lower() in self.config.domains:
            target = await self._aor_flow(ack.uri)  # a GRUU remote target
        else:
            resolved = await self._resolve_all(_next_hop(ack))
            target = resolved[0] if resolved else None
        if target is None:
            return
        ack = await self._media_request(ack, source)
        via = self._via_for(target).with_params(branch=self.layer.new_branch())
        forwarded = ack.copy()
        mf = forwarded.max_forwards
        forwarded.headers.set("Max-Forwards", str(70 if mf is None else max(mf - 1, 0)))
        forwarded.headers.prepend("Via", str(via))
        self.layer.send_stateless(forwarded, target)
        self._pump()

    async def _aor_flow(self, uri: SipUri) -> Target | None:
        """The open flow of the AoR's (or GRUU's) first binding (where a
        stateless ACK goes)."""
        bindings, _ = await self._bindings_for(uri)
        for binding in bindings:
            flow = self.transport.flow(binding.flow) if binding.flow else None
            if flow is not None:
                return Target(flow.transport, flow.remote, flow.flow)
        return None

    def _forward_stray(self, response: SipResponse) -> None:
        """A 2xx retransmission after the INVITE's transactions ended (§16.7):
        pass it on to the next Via."""
        popped = pop_own_via(response, self._is_own_via)
        if popped is None or not 200 <= response.status < 300:
            return
        out, _ = popped
        target = response_target(out)
        if target is not None:
            self.layer.send_stateless(out, target)

    # -- naming ourselves ------------------------------------------------------------

    def _served_hosts(self) -> set[str]:
        hosts = {d.lower() for d in self.config.domains}
        hosts.add(self.host.lower())
        hosts.update(self._own_hosts)
        return hosts

    def _is_own_route(self, uri: SipUri) -> bool:
        return (
            uri.lr
            and (uri.host.lower() == self.host.lower() or uri.host.lower() in self._own_hosts)
            and (uri.port is None or uri.port in self._ports.values())
        )

    def _is_own_via(self, via: Via) -> bool:
        return via.host.lower() == self.host.lower() and via.port in self._ports.values()

    def _via_for(self, target: Target) -> Via:
        transport = target.transport
        port = self._ports.get(transport) or next(iter(self._ports.values()))
        return Via(
            transport=transport.via_token, host=self.host, port=port, params=(("rport", None),)
        )

    def _record_route(self, flow: Source) -> NameAddr:
        """Our Record-Route facing ``flow``: its sealed token (which is what
        makes the route ours, and unforgeable), on that flow's transport."""
        transport = flow.transport
        port = self._ports.get(transport) or next(iter(self._ports.values()))
        params: list[tuple[str, str | None]] = []
        if transport in (SipTransport.TCP, SipTransport.TLS):
            params.append(("transport", "tcp"))
        elif transport in (SipTransport.WS, SipTransport.WSS):
            params.append(("transport", "ws"))
        params.append(("lr", None))
        return NameAddr(
            SipUri(
                scheme="sips" if transport.secure else "sip",
                host=self.host,
                user=self.signer.encode(flow),
                port=port,
                params=tuple(params),
            )
        )

    def _cancel(
        self, cancel: SipRequest, txn: ServerTransactionId, invite: ServerTransactionId | None
    ) -> None:
        """A CANCEL the forking proxy had no context for (§16.10): for an
        INVITE still being routed, 200 now and 487 for the INVITE when its
        routing ends; for nothing we know, 481."""
        if invite is not None and invite in self._serving:
            self._serving[invite] = True
            self._respond(cancel, txn, make_response(cancel, 200, to_tag=self._tag()))
        else:
            self._respond(cancel, txn, make_response(cancel, 481, to_tag=self._tag()))

    async def _guarded(self, job: Coroutine[Any, Any, None]) -> None:
        with contextlib.suppress(MalformedMessageError):
            await job

    def _tag(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    async def _resolve_all(self, uri: Uri) -> list[Target]:
        """The targets of ``uri`` in RFC 3263 order (at most
        ``config.max_failover_targets``): a literal address alone, names by
        the resolver's plan (NAPTR, SRV, A/AAAA) when one was given. The
        proxy fails over along them (RFC 3263 §4.3)."""
        if not isinstance(uri, SipUri):
            return []
        literal = literal_target(uri)
        if literal is not None or self._resolver is None:
            return [literal] if literal is not None else []
        found: list[Target] = []
        targets = self._resolver.targets_for_uri(uri)
        try:
            async for server in targets:
                if server.target not in found:
                    found.append(server.target)
                if len(found) >= self.config.max_failover_targets:
                    break
        except TransportError:
            pass  # what was found before the lookup failed is still usable
        finally:
            await targets.aclose()
        return found


def literal_target(uri: SipUri) -> Target | None:
    """Where a URI with an IP literal host goes (RFC 3263 §4.1-4.2 for numeric
    hosts: UDP for sip, TLS for sips, unless ``transport`` says otherwise)."""
    host = uri.maddr or uri.host
    try:
        ip = canonical_ip(host)
    except ValueError:
        return None
    param = (uri.transport or "").lower()
    transport: SipTransport | None
    if uri.scheme == "sips":
        transport = SipTransport.WSS if param == "ws" else SipTransport.TLS
    else:
        transport = SipTransport.from_via(param) if param else SipTransport.UDP
    if transport is None:
        return None
    return Target(transport, Endpoint(ip, uri.port or default_port(transport)))


async def binding_destinations(
    contact: Uri,
    path: list[NameAddr],
    flow: Source | None,
    resolve: Callable[[Uri], Awaitable[list[Target]]],
) -> tuple[Destination, ...]:
    """The ways to reach one registered contact (RFC 3327 §5.4, RFC 5626
    §5.3), best first: through its Path when it has one (each server of the
    first Path hop, RFC 3263); else over the open flow it registered on (the
    only way through its NAT); else to the Contact's servers. Empty when
    nothing resolves."""
    if path:
        return tuple(
            Destination(uri=contact, target=first, routes=tuple(path))
            for first in await resolve(path[0].uri)
        )
    if flow is not None:
        return (Destination(uri=contact, target=Target(flow.transport, flow.remote, flow.flow)),)
    return tuple(Destination(uri=contact, target=t) for t in await resolve(contact))


def _answer_to_rewrite(event: TransactionEvent) -> bool:
    """A response with SDP on its way to being forwarded (media hook)."""
    return isinstance(event, ResponseReceived | StrayResponseReceived) and carries_sdp(
        event.response
    )


def _dialog_forming(request: SipRequest) -> bool:
    return request.method in DIALOG_FORMING_METHODS and request.to.tag is None


def _canonical_host(host: str) -> str:
    try:
        return canonical_ip(host)
    except ValueError:
        return host.lower()


def _wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::")


def _next_hop(request: SipRequest) -> Uri:
    """§16.12: the top Route, else the Request-URI."""
    return request.name_addrs("Route")[0].uri if request.headers.get("Route") else request.uri


def _short(exc: Exception) -> str:
    return f"Bad Request ({str(exc)[:80]})"


def _ends_dialog_by_bye(response: SipResponse) -> bool:
    """A 2xx, or a 481 (no such dialog), to a BYE: the call is over (RFC 3261
    §15.1.2). Media ends then, not when a BYE merely arrives (a spoofed or
    rejected one must not tear the relay down)."""
    if not (200 <= response.status < 300 or response.status == 481):
        return False
    try:
        return response.cseq.method == "BYE"
    except MalformedMessageError:
        return False
