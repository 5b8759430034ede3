"""The SIP Outbound edge proxy (RFC 5626 §5, RFC 3327), stateless and sans-IO.

Theory of operation
-------------------
An edge proxy sits between user agents (behind NATs) and the registrar or
home proxy (its *upstream*). Everything a user agent sends goes upstream;
everything that comes back for a user agent goes over the flow that user
agent opened: the only path through its NAT (RFC 6314 §5.1).

* REGISTER from a user agent: the edge adds ``Path: <sip:TOKEN@edge;lr>``
  (RFC 3327 §5.2), where TOKEN is the signed flow token of the flow the
  REGISTER came on (:mod:`natkit.sip.flow_token`), with ``ob`` when the
  user agent asked for outbound (a Contact with ``reg-id``, and
  ``Supported: outbound``) and the edge is its first hop (RFC 5626 §5.1).
  The registrar stores the Path; the home proxy later routes requests for
  that contact through it.
* A request whose top Route is this edge with a flow token (§5.3): if the
  token names the flow the request came on, the user agent sent it
  (*outgoing*): the Route is consumed and the request goes upstream. Else it
  is *incoming*: it goes over the flow the token names, answered 430 Flow
  Failed when that connection is gone and 403 when the token is forged
  (§5.3.1). An incoming dialog-forming request whose Route carried ``ob``
  gets that same URI as Record-Route, so mid-dialog requests find the flow.
* Outgoing dialog-forming requests get a Record-Route with the user agent's
  flow token (§5.3.2), for the same reason in the other direction.
* Responses: the edge's Via carries the token of the flow the request came
  on (``nkf``); a response pops that Via and goes back over that flow, which
  is how a stateless edge answers over the right NATed connection. 2xx
  answers to an outbound REGISTER gain ``Flow-Timer`` when configured
  (§5.4) and the registrar did not set one.

The edge keeps no transaction state (§16.11 stateless proxy): branches are
functions of the received request (:func:`~natkit.sip.forwarding.stateless_branch`),
its own answers (400, 403, 404, 430, 483) are sent once and absorbed again by
the client's retransmission logic. The only state is the set of stream flows
that are open (``flow_opened`` / ``flow_closed`` from the transport driver);
UDP flows cannot fail visibly and are always taken to be alive. The edge
resolves no names: its upstream is a :class:`~natkit.sip.flow.Target`.
Keepalives (STUN on the UDP port, CRLF on streams, RFC 5626 §5.4) are the
transport driver's job. Messages are expected stamped with ``received`` /
``rport`` by the transport (RFC 3261 §18.2.1, RFC 3581 §4).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.flow_token import FlowTokenSigner
from natkit.sip.forwarding import (
    forward_request,
    pop_own_via,
    preprocess_routes,
    stateless_branch,
)
from natkit.sip.headers import NameAddr, Via
from natkit.sip.message import (
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    validate_request,
    validate_response,
)
from natkit.sip.uri import SipUri

__all__ = ["DIALOG_FORMING_METHODS", "EdgeProxy", "EdgeProxyConfig", "EdgeStats", "same_flow"]

DIALOG_FORMING_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
"""Requests that create a dialog when sent outside one (no To tag)."""

_FLOW_PARAM = "nkf"


@dataclass(frozen=True, slots=True)
class EdgeProxyConfig:
    """How an edge proxy names itself and where it sends what user agents send.

    ``host``: the edge's address or name as it appears in its Path,
    Record-Route and Via (what upstream and user agents reach it by);
    ``ports``: its listening port per transport; ``aliases``: other names of
    the edge that Route URIs may carry. ``upstream_peers``: further
    addresses of the registrar / home proxy cluster (besides ``upstream``)
    whose requests are routed by flow token rather than sent upstream. ``flow_timer``: RFC 5626 §5.4
    seconds to put in 2xx answers of outbound REGISTERs that have none.
    """

    host: str
    ports: Mapping[SipTransport, int]
    upstream: Target
    signer: FlowTokenSigner
    flow_timer: int | None = None
    aliases: frozenset[str] = frozenset()
    upstream_peers: frozenset[Endpoint] = frozenset()
    branch_salt: str = "natkit-edge"
    connection_reuse: bool = False
    """RFC 5923: put ``alias`` in the Via of requests sent upstream over
    TCP/TLS, asking the upstream to send its requests for this edge back
    over the same connection (an edge behind a firewall or NAT cannot be
    connected to)."""

    def __post_init__(self) -> None:
        if not self.ports:
            raise ValueError("an edge proxy needs at least one listening port")


@dataclass(slots=True)
class EdgeStats:
    """Counters for metrics: what the edge did with what it received."""

    to_upstream: int = 0
    to_flows: int = 0
    responses: int = 0
    rejected: dict[int, int] = field(default_factory=dict)
    dropped: int = 0


class EdgeProxy:
    """RFC 5626 §5 edge proxy; see the module docstring.

    Feed it every SIP message the transport receives, with its
    :class:`~natkit.sip.flow.Source`; send what :meth:`messages_to_send`
    returns. Report stream connections with :meth:`flow_opened` and
    :meth:`flow_closed`.
    """

    def __init__(self, config: EdgeProxyConfig) -> None:
        self.config = config
        self.stats = EdgeStats()
        self._hosts = frozenset({config.host.lower(), *(a.lower() for a in config.aliases)})
        self._ports = frozenset(config.ports.values())
        self._upstream_hosts = frozenset(
            {config.upstream.remote.host, *(peer.host for peer in config.upstream_peers)}
        )
        self._open_flows: set[str] = set()
        self._outbox: list[tuple[SipMessage, Target]] = []

    # -- driver interface ---------------------------------------------------------

    def flow_opened(self, flow: Source) -> None:
        """A stream connection is up (accepted or connected)."""
        if flow.transport.reliable:
            self._open_flows.add(flow.flow)

    def flow_closed(self, flow_id: str) -> None:
        """A stream connection is gone: requests for it now get 430."""
        self._open_flows.discard(flow_id)

    def receive_message(self, message: SipMessage, source: Source, *, now: float) -> None:
        """Route one received message (never raises on its content)."""
        del now  # stateless: no timers
        try:
            if isinstance(message, SipRequest):
                self._on_request(message, source)
            else:
                self._on_response(message)
        except MalformedMessageError:
            # A header that parsed at the transport but not as the typed view
            # routing needs: answer 400 if it is a request we can answer.
            if isinstance(message, SipRequest):
                self._reply(message, source, 400, "Bad Request")
            else:
                self.stats.dropped += 1

    def messages_to_send(self) -> list[tuple[SipMessage, Target]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now

    # -- requests -----------------------------------------------------------------

    def _on_request(self, request: SipRequest, source: Source) -> None:
        status = validate_request(request, proxy=True)
        if status is not None:
            self._reply(request, source, status)
            return
        request, popped = preprocess_routes(request, self._is_own_route)
        token_flow: Source | None = None
        if popped is not None and isinstance(popped.uri, SipUri) and popped.uri.user:
            token_flow = self.config.signer.decode(popped.uri.user)
            if token_flow is None:
                self._reply(request, source, 403, "Forbidden (bad flow token)")
                return
        if token_flow is not None and not same_flow(token_flow, source):
            self._to_flow(request, source, token_flow, popped)
            return
        if self._from_upstream(source):
            # Nothing names a user agent's flow and the edge routes nothing
            # else: it is not an open relay.
            self._reply(request, source, 404, "Not Found (no flow token)")
            return
        self._to_upstream(request, source)

    def _to_upstream(self, request: SipRequest, source: Source) -> None:
        """A request from a user agent: RFC 5626 §5.1 (REGISTER) and §5.3.2."""
        token = self.config.signer.encode(source)
        record_route: NameAddr | None = None
        if request.method == "REGISTER":
            path_uri = self._own_uri(token, source.transport, ob=_wants_outbound(request))
            request = request.copy()
            request.headers.prepend("Path", str(NameAddr(path_uri)))
        elif _dialog_forming(request):
            ob = _contact_has_ob(request)
            record_route = NameAddr(self._own_uri(token, source.transport, ob=ob))
        upstream = self.config.upstream
        forwarded = forward_request(
            request,
            via=self._via(request, upstream.transport, source, alias=self.config.connection_reuse),
            record_route=record_route,
        )
        self.stats.to_upstream += 1
        self._outbox.append((forwarded, upstream))

    def _to_flow(
        self, request: SipRequest, source: Source, flow: Source, route: NameAddr | None
    ) -> None:
        """An incoming request for a user agent: RFC 5626 §5.3.1."""
        if flow.transport.reliable and flow.flow not in self._open_flows:
            self._reply(request, source, 430, "Flow Failed")
            return
        record_route = None
        if (
            route is not None
            and isinstance(route.uri, SipUri)
            and route.uri.has_param("ob")
            and _dialog_forming(request)
        ):
            record_route = route
        forwarded = forward_request(
            request,
            via=self._via(request, flow.transport, source),
            record_route=record_route,
        )
        self.stats.to_flows += 1
        self._outbox.append((forwarded, Target(flow.transport, flow.remote, flow.flow)))

    # -- responses ----------------------------------------------------------------

    def _on_response(self, response: SipResponse) -> None:
        if not validate_response(response):
            self.stats.dropped += 1
            return
        popped = pop_own_via(response, self._is_own_via)
        if popped is None:
            self.stats.dropped += 1
            return
        out, via = popped
        flow = self.config.signer.decode(via.param(_FLOW_PARAM) or "")
        if flow is None:
            self.stats.dropped += 1
            return
        if (
            self.config.flow_timer is not None
            and 200 <= out.status < 300
            and out.cseq.method == "REGISTER"
            and any(tag.lower() == "outbound" for tag in out.headers.values("Require"))
            and "Flow-Timer" not in out.headers
        ):
            out.headers.add("Flow-Timer", str(self.config.flow_timer))
        self.stats.responses += 1
        self._outbox.append((out, Target(flow.transport, flow.remote, flow.flow)))

    # -- helpers ------------------------------------------------------------------

    def _reply(
        self, request: SipRequest, source: Source, status: int, reason: str | None = None
    ) -> None:
        if request.method == "ACK":
            return  # never answered (§17.2.3, §16.11)
        try:
            tag = _stateless_tag(request)
            response = make_response(request, status, reason, to_tag=tag)
        except MalformedMessageError:
            self.stats.dropped += 1
            return
        if status == 420:
            response.headers.add("Unsupported", ", ".join(request.headers.values("Proxy-Require")))
        self.stats.rejected[status] = self.stats.rejected.get(status, 0) + 1
        self._outbox.append((response, Target(source.transport, source.remote, source.flow)))

    def _via(
        self, request: SipRequest, transport: SipTransport, source: Source, *, alias: bool = False
    ) -> Via:
        params: tuple[tuple[str, str | None], ...] = (
            ("branch", stateless_branch(request, salt=self.config.branch_salt)),
            (_FLOW_PARAM, self.config.signer.encode(source)),
        )
        if alias and transport in (SipTransport.TCP, SipTransport.TLS):
            params += (("alias", None),)  # RFC 5923 §5
        return Via(
            transport=transport.via_token,
            host=self.config.host,
            port=self._port_for(transport),
            params=params,
        )

    def _own_uri(self, token: str, transport: SipTransport, *, ob: bool) -> SipUri:
        # RFC 5630 §3.2: TLS is said with sips:, not the deprecated
        # transport=tls; WebSocket is transport=ws under either (RFC 7118 §5).
        params: list[tuple[str, str | None]] = []
        if transport in (SipTransport.TCP, SipTransport.TLS):
            params.append(("transport", "tcp"))
        elif transport in (SipTransport.WS, SipTransport.WSS):
            params.append(("transport", "ws"))
        params.append(("lr", None))
        if ob:
            params.append(("ob", None))
        return SipUri(
            scheme="sips" if transport.secure else "sip",
            host=self.config.host,
            user=token,
            port=self._port_for(transport),
            params=tuple(params),
        )

    def _port_for(self, transport: SipTransport) -> int:
        port = self.config.ports.get(transport)
        if port is None:
            port = next(iter(self.config.ports.values()))
        return port

    def _is_own_route(self, uri: SipUri) -> bool:
        return uri.host.lower() in self._hosts and (uri.port is None or uri.port in self._ports)

    def _is_own_via(self, via: Via) -> bool:
        return via.host.lower() in self._hosts and via.param(_FLOW_PARAM) is not None

    def _from_upstream(self, source: Source) -> bool:
        # By address: a registrar's requests over TCP come from ephemeral ports.
        return source.remote.host in self._upstream_hosts


def same_flow(token_flow: Source, source: Source) -> bool:
    """RFC 5626 §5.3: the token names the flow a request arrived on (for
    streams, the very connection; for UDP, the same pair of endpoints)."""
    if token_flow.transport is not source.transport or token_flow.remote != source.remote:
        return False
    if source.transport.reliable:
        return token_flow.flow == source.flow
    return token_flow.local == source.local


def _dialog_forming(request: SipRequest) -> bool:
    return request.method in DIALOG_FORMING_METHODS and request.to.tag is None


def _wants_outbound(request: SipRequest) -> bool:
    """RFC 5626 §5.1: the UA asked for outbound and the edge is its first hop."""
    if len(request.vias) != 1:
        return False
    if not any(tag.lower() == "outbound" for tag in request.headers.values("Supported")):
        return False
    contacts = request.contacts
    return contacts != "*" and any(contact.has_param("reg-id") for contact in contacts)


def _contact_has_ob(request: SipRequest) -> bool:
    contacts = request.contacts
    return (
        contacts != "*"
        and bool(contacts)
        and isinstance(contacts[0].uri, SipUri)
        and contacts[0].uri.has_param("ob")
    )


def _stateless_tag(request: SipRequest) -> str:
    """The same To tag for every retransmission of a request (§16.11)."""
    return hashlib.sha256(stateless_branch(request, salt="tag").encode()).hexdigest()[:16]
