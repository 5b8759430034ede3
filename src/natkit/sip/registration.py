"""The user agent side of registration (RFC 3261 §10.2, RFC 5626 §4), sans-IO.

Theory of operation
-------------------
A :class:`RegistrationClient` keeps one address-of-record bound to one
Contact. With Outbound on it registers one *flow* per configured edge or
outbound proxy (RFC 5626 §4.2): flow *n* carries ``reg-id=n`` and the UA's
``+sip.instance``, goes to its own :class:`~natkit.sip.flow.Target` with a
``Route: <proxy;lr>`` and has its own Call-ID and CSeq space (§10.2.4: one
Call-ID for all REGISTERs of one registration, CSeq up by one each time).
Without Outbound there is one flow, without ``reg-id``.

Each flow is a small state machine: idle → registering → registered
(refresh at half the granted expiry) or waiting (back-off) → registering...
A 401/407 is answered once per challenge with :class:`~natkit.sip.digest.
DigestClient` (a new CSeq, §22.2); a 423 is retried at once with the
registrar's Min-Expires (§10.2.8); any other failure, a timeout or a
transport error waits the RFC 5626 §4.5 back-off::

    wait = min(max_time, base_time * 2 ** consecutive_failures)
    retry after uniform(0.5, 1.0) * wait

with ``base_time`` 30 s when every flow has failed and 90 s while another
flow is registered, ``max_time`` 1800 s. ``consecutive_failures`` counts the
failures since the flow last registered, this one included (so the RFC's
example, three failures at base 30, gives 240 s, waited 120-240 s); a 2xx
resets it. The first failure of a flow that was registered therefore waits
30-60 s (all flows down) or 90-180 s (another flow up).

When the 2xx carries ``Require: outbound`` the registrar did Outbound, and
the flow is kept alive (§4.4.1): a :class:`KeepaliveDue` event every
uniform(0.8, 1.0) * Flow-Timer seconds, or without Flow-Timer every
uniform(95, 120) s on streams and uniform(24, 29) s on UDP. The driver
sends a STUN Binding (UDP) or CRLFCRLF (streams) and reports
:meth:`keepalive_answered`; no answer within ``keepalive_timeout`` (10 s
for a pong, §4.4.1; 39.5 s for STUN, the RFC 5389 transaction timeout),
:meth:`keepalive_failed` or :meth:`flow_closed` fail the flow, and so does
a STUN answer whose XOR-MAPPED-ADDRESS differs from the address the flow
registered with (the ``received``/``rport`` of its 2xx: the NAT rebound it,
§4.4.1; ``keepalive_answered(mapped=...)``). A failed flow then
re-registers after the back-off over a new connection (its Target loses the
pinned flow id). :meth:`local_address_changed` re-registers every flow now;
:meth:`unregister` sends Expires: 0 on every registered flow.

The transaction layer: the client either owns one (pass none; it then
takes :meth:`receive_message`, :meth:`messages_to_send`, and its timer
includes the layer's) or shares the UA core's: the core passes every
:data:`~natkit.sip.transaction_events.TransactionEvent` it drains to
:meth:`handle_transaction_event`, which returns whether it was ours.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field, replace

from natkit.addr import Endpoint, canonical_ip
from natkit.errors import MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.sip.digest import DigestClient
from natkit.sip.flow import FlowId, SipTransport, Source, Target
from natkit.sip.headers import NameAddr, parse_delta_seconds
from natkit.sip.message import Headers, SipMessage, SipRequest, SipResponse
from natkit.sip.registration_events import (
    FlowFailed,
    KeepaliveDue,
    KeepaliveMethod,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationSucceeded,
    Unregistered,
)
from natkit.sip.timers import TimerConfig
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    ClientTransactionId,
    ResponseReceived,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)
from natkit.sip.uri import SipUri, Uri
from natkit.sip.via_routing import client_via

__all__ = [
    "BackoffConfig",
    "FlowConfig",
    "FlowState",
    "RegistrationClient",
    "RegistrationConfig",
    "backoff_bound",
    "keepalive_bounds",
]


@dataclass(frozen=True, slots=True)
class FlowConfig:
    """One way to the registrar: where REGISTERs go (``target``) and the
    edge/outbound proxy put in Route (``proxy``, ``;lr`` added), RFC 5626 §4.2."""

    target: Target
    proxy: SipUri | None = None


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    """RFC 5626 §4.5 flow recovery constants (seconds)."""

    max_time: float = 1800.0
    base_time_all_failed: float = 30.0
    base_time_not_failed: float = 90.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationConfig:
    """What to register where. ``contact`` is our Contact URI (no params of
    the registration: expires, reg-id and +sip.instance are added);
    ``sent_by`` our Via sent-by; ``flows`` one entry per edge proxy (RFC
    5626 §4.2; only the first is used without ``outbound``).
    ``instance_id``: the ``urn:uuid:...`` of ``+sip.instance``, generated from
    ``rng`` when None. ``keepalive_interval``: fixed seconds instead of the
    §4.4.1 rule (also keeps non-outbound flows alive)."""

    aor: SipUri
    registrar: SipUri
    contact: SipUri
    sent_by: Endpoint
    flows: tuple[FlowConfig, ...]
    expires: int = 3600
    outbound: bool = True
    instance_id: str | None = None
    username: str | None = None
    password: str | None = None
    keepalive_interval: float | None = None
    keepalive_timeout_stream: float = 10.0
    keepalive_timeout_udp: float = 39.5
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    timers: TimerConfig = field(default_factory=TimerConfig)
    user_agent: str | None = "natkit"
    rng: Rng = field(default_factory=default_rng)


class FlowState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    WAITING = "waiting"  # back-off before the next attempt
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


def backoff_bound(
    consecutive_failures: int, *, all_failed: bool, config: BackoffConfig = BackoffConfig()
) -> float:
    """RFC 5626 §4.5 upper bound: min(max-time, base-time * 2**failures)."""
    base = config.base_time_all_failed if all_failed else config.base_time_not_failed
    return min(config.max_time, base * 2.0 ** min(consecutive_failures, 64))


def keepalive_bounds(transport: SipTransport, flow_timer: int | None) -> tuple[float, float]:
    """RFC 5626 §4.4.1 interval range: 80-100 % of Flow-Timer, else 95-120 s
    on connection-oriented transports and 24-29 s on UDP."""
    if flow_timer is not None and flow_timer > 0:
        return 0.8 * flow_timer, float(flow_timer)
    if transport.reliable:
        return 95.0, 120.0
    return 24.0, 29.0


@dataclass(slots=True)
class _Flow:
    index: int
    config: FlowConfig
    call_id: str
    from_tag: str
    cseq: int = 0
    state: FlowState = FlowState.IDLE
    txn: ClientTransactionId | None = None
    request: SipRequest | None = None
    requested_expires: int = 0
    pinned: FlowId | None = None
    consecutive_failures: int = 0
    refresh_at: float | None = None
    retry_at: float | None = None
    keepalive_at: float | None = None
    keepalive_deadline: float | None = None
    mapped: Endpoint | None = None  # UDP: our address as the first hop sees it
    outbound: bool = False
    flow_timer: int | None = None
    expires_at: float | None = None
    preempted: bool = False  # the last REGISTER carried reused credentials

    @property
    def target(self) -> Target:
        return replace(self.config.target, flow=self.pinned)

    def clear_timers(self) -> None:
        self.refresh_at = self.retry_at = None
        self.keepalive_at = self.keepalive_deadline = None
        self.mapped = None


def _uuid4(rng: Rng) -> str:
    bits = rng.getrandbits(128)
    bits &= ~(0xF000 << 64)
    bits |= 0x4000 << 64  # version 4
    bits &= ~(0xC000 << 48)
    bits |= 0x8000 << 48  # RFC 4122 variant
    h = f"{bits:032x}"
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class RegistrationClient:
    """Registers ``config.aor`` over one or more flows; see the module docstring."""

    def __init__(self, config: RegistrationConfig, layer: TransactionLayer | None = None) -> None:
        if not config.flows:
            raise ValueError("RegistrationClient needs at least one flow")
        self.config = config
        self._rng = config.rng
        self._owns_layer = layer is None
        self.layer = (
            layer if layer is not None else TransactionLayer(timers=config.timers, rng=self._rng)
        )
        self.instance_id = config.instance_id or _uuid4(self._rng)
        self._contact = config.contact
        self._sent_by = config.sent_by
        flows = config.flows if config.outbound else config.flows[:1]
        self._flows = [
            _Flow(
                index=i,
                config=fc,
                call_id=f"{self._rng.getrandbits(96):024x}@natkit",
                from_tag=f"{self._rng.getrandbits(64):016x}",
            )
            for i, fc in enumerate(flows, start=1)
        ]
        self._by_txn: dict[ClientTransactionId, _Flow] = {}
        self._digest = (
            DigestClient(config.username, config.password, rng=self._rng)
            if config.username is not None and config.password is not None
            else None
        )
        self._events: deque[RegistrationEvent] = deque()

    # ----------------------------------------------------------------- queries

    @property
    def flow_count(self) -> int:
        return len(self._flows)

    def flow_state(self, flow: int) -> FlowState:
        return self._flow(flow).state

    def consecutive_failures(self, flow: int) -> int:
        return self._flow(flow).consecutive_failures

    def flow_target(self, flow: int) -> Target:
        return self._flow(flow).target

    def _flow(self, index: int) -> _Flow:
        if not 1 <= index <= len(self._flows):
            raise ValueError(f"no flow {index}")
        return self._flows[index - 1]

    def _flow_by_id(self, flow_id: FlowId) -> _Flow | None:
        for f in self._flows:
            if f.pinned == flow_id:
                return f
        return None

    # ---------------------------------------------------------------- commands

    def register(self, *, now: float) -> None:
        """Register every flow that is not registered or registering now."""
        for f in self._flows:
            if f.state not in (FlowState.REGISTERING, FlowState.REGISTERED):
                f.consecutive_failures = 0
                self._send_register(f, self.config.expires, now)

    def unregister(self, *, now: float) -> None:
        """Remove our bindings (Expires: 0, RFC 3261 §10.2.2) on every flow."""
        for f in self._flows:
            f.clear_timers()
            if f.state in (FlowState.REGISTERED, FlowState.REGISTERING):
                self._forget_txn(f)
                self._send_register(f, 0, now, preempt=True)
            else:
                self._forget_txn(f)
                f.state = FlowState.UNREGISTERED

    def local_address_changed(
        self,
        *,
        now: float,
        contact: SipUri | None = None,
        sent_by: Endpoint | None = None,
    ) -> None:
        """Our address moved (new interface, DHCP, NAT rebinding): every flow
        re-registers now over a new connection, with the new Contact/Via."""
        if contact is not None:
            self._contact = contact
        if sent_by is not None:
            self._sent_by = sent_by
        for f in self._flows:
            if f.state in (FlowState.UNREGISTERED, FlowState.UNREGISTERING):
                continue
            self._forget_txn(f)
            f.clear_timers()
            f.pinned = None
            f.consecutive_failures = 0
            self._send_register(f, self.config.expires, now)

    def keepalive_answered(self, flow: int, *, now: float, mapped: Endpoint | None = None) -> None:
        """The driver got the STUN response or CRLF pong for ``flow``;
        ``mapped`` is a STUN response's XOR-MAPPED-ADDRESS.

        RFC 5626 §4.4.1: a mapped address that differs from the one the
        flow registered with (the ``received``/``rport`` of its REGISTER's
        2xx, else the first STUN answer) means the NAT rebound the flow: it
        fails (:class:`FlowFailed`, reason "mapped address changed") and is
        recovered by the §4.5 back-off, as for any failed flow.
        """
        f = self._flow(flow)
        if f.keepalive_deadline is None:
            return
        f.keepalive_deadline = None
        if mapped is not None and f.state is FlowState.REGISTERED:
            mapped = _canonical(mapped)
            if f.mapped is None:
                f.mapped = mapped
            elif f.mapped != mapped:
                self._flow_failed(f, "mapped address changed", now)
                return
        if f.state is FlowState.REGISTERED:
            self._schedule_keepalive(f, now)

    def keepalive_failed(self, flow: int, *, now: float, reason: str = "keepalive failed") -> None:
        """The keepalive of ``flow`` failed (STUN timeout or error, mapped
        address changed, RFC 5626 §4.4.1)."""
        self._flow_failed(self._flow(flow), reason, now)

    def flow_closed(self, flow: int | FlowId, *, now: float) -> None:
        """The connection under ``flow`` (index or transport flow id) closed."""
        f = self._flow(flow) if isinstance(flow, int) else self._flow_by_id(flow)
        if f is not None and f.state in (FlowState.REGISTERED, FlowState.REGISTERING):
            self._flow_failed(f, "flow closed", now)

    # ---------------------------------------------------- network / transactions

    def receive_message(self, msg: SipMessage, source: Source, *, now: float) -> None:
        """Owned layer only: a message from the network."""
        self.layer.receive_message(msg, source, now=now)
        self._drain_layer(now)

    def send_failed(self, message: SipMessage, *, now: float) -> None:
        """Owned layer only: the driver could not send ``message`` (§17.1.4)."""
        self.layer.transport_failed_for(message, now=now)
        self._drain_layer(now)

    def messages_to_send(self) -> list[tuple[SipMessage, Target]]:
        """Owned layer only: what the layer must send."""
        return self.layer.messages_to_send()

    def handle_transaction_event(self, event: TransactionEvent, *, now: float) -> bool:
        """An event of the (shared) transaction layer; True if it was ours."""
        match event:
            case ResponseReceived(client_txn=txn, response=response, source=source):
                f = self._by_txn.get(txn)
                if f is None:
                    return False
                self._response(f, response, source, now)
                return True
            case TransactionTimedOut(txn=ClientTransactionId() as txn):
                f = self._by_txn.pop(txn, None)
                if f is None:
                    return False
                f.txn = None
                self._attempt_failed(f, None, "timed out", now)
                return True
            case TransportFailed(txn=ClientTransactionId() as txn):
                f = self._by_txn.pop(txn, None)
                if f is None:
                    return False
                f.txn = None
                f.pinned = None
                self._attempt_failed(f, None, "transport failed", now)
                return True
            case TransactionTerminated(txn=ClientTransactionId() as txn):
                return self._by_txn.pop(txn, None) is not None
        return False

    def next_event(self) -> RegistrationEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines: list[float] = []
        for f in self._flows:
            for t in (f.refresh_at, f.retry_at, f.keepalive_at, f.keepalive_deadline):
                if t is not None:
                    deadlines.append(t)
        if self._owns_layer:
            layer_timer = self.layer.get_timer()
            if layer_timer is not None:
                deadlines.append(layer_timer)
        return min(deadlines) if deadlines else None

    def handle_timer(self, *, now: float) -> None:
        if self._owns_layer:
            self.layer.handle_timer(now=now)
            self._drain_layer(now)
        for f in self._flows:
            if f.keepalive_deadline is not None and now >= f.keepalive_deadline:
                f.keepalive_deadline = None
                self._flow_failed(f, "keepalive unanswered", now)
                continue
            if f.retry_at is not None and now >= f.retry_at:
                f.retry_at = None
                self._send_register(f, self.config.expires, now)
            elif f.refresh_at is not None and now >= f.refresh_at:
                f.refresh_at = None
                self._send_register(f, self.config.expires, now, preempt=True)
            if f.keepalive_at is not None and now >= f.keepalive_at:
                f.keepalive_at = None
                if f.state is FlowState.REGISTERED:
                    self._send_keepalive(f, now)

    # ---------------------------------------------------------------- internals

    def _drain_layer(self, now: float) -> None:
        while (event := self.layer.next_event()) is not None:
            self.handle_transaction_event(event, now=now)

    def _forget_txn(self, f: _Flow) -> None:
        if f.txn is not None:
            self._by_txn.pop(f.txn, None)
            f.txn = None

    def _contact_for(self, f: _Flow) -> NameAddr:
        contact = NameAddr(self._contact)
        if self.config.outbound:
            contact = contact.with_param("reg-id", str(f.index))
        if self.config.outbound or self.config.instance_id is not None:
            contact = contact.with_param("+sip.instance", f'"<{self.instance_id}>"')
        return contact

    def _build(self, f: _Flow, expires: int, *, preempt: bool) -> SipRequest:
        f.cseq += 1
        transport = f.config.target.transport
        via = client_via(transport, self._sent_by, self._rng)
        headers = Headers([("Via", str(via)), ("Max-Forwards", "70")])
        if f.config.proxy is not None:
            headers.add("Route", f"<{f.config.proxy.with_params(lr=None)}>")
        aor = str(self.config.aor)
        headers.add("From", f"<{aor}>;tag={f.from_tag}")
        headers.add("To", f"<{aor}>")
        headers.add("Call-ID", f.call_id)
        headers.add("CSeq", f"{f.cseq} REGISTER")
        headers.add("Contact", str(self._contact_for(f)))
        headers.add("Expires", str(expires))
        headers.add("Supported", "outbound, path, gruu" if self.config.outbound else "path, gruu")
        if self.config.user_agent:
            headers.add("User-Agent", self.config.user_agent)
        registrar: Uri = self.config.registrar
        request = SipRequest("REGISTER", registrar, headers)
        f.preempted = False
        if self._digest is not None and preempt:
            for name, value in self._digest.preemptive_headers(request):
                headers.add(name, value)
                f.preempted = True
        return request

    def _send(self, f: _Flow, request: SipRequest, expires: int, now: float) -> None:
        self._forget_txn(f)
        f.request = request
        f.requested_expires = expires
        f.state = FlowState.UNREGISTERING if expires == 0 else FlowState.REGISTERING
        txn = self.layer.send_request(request, f.target, now=now)
        f.txn = txn
        self._by_txn[txn] = f

    def _send_register(self, f: _Flow, expires: int, now: float, *, preempt: bool = False) -> None:
        """A new REGISTER. ``preempt``: reuse the last digest challenge (RFC
        7616 §3.4, next nonce-count) - only for refreshes and removals of a
        live registration; fresh attempts go without, so credentials a
        registrar refused are never repeated."""
        f.retry_at = f.refresh_at = None
        self._send(f, self._build(f, expires, preempt=preempt), expires, now)

    def _retry_with(self, f: _Flow, request: SipRequest, now: float) -> None:
        """Resend ``request`` (credentials or expiry changed) with the next
        CSeq and a new branch (RFC 3261 §8.1.3.5, §10.2.8, §22.2)."""
        f.cseq += 1
        f.preempted = False
        request.headers.set("CSeq", f"{f.cseq} REGISTER")
        via = client_via(f.config.target.transport, self._sent_by, self._rng)
        request.headers.remove("Via")
        request.headers.prepend("Via", str(via))
        self._send(f, request, f.requested_expires, now)

    def _response(self, f: _Flow, response: SipResponse, source: Source, now: float) -> None:
        status = response.status
        if status < 200:
            return
        request = f.request
        self._forget_txn(f)
        if request is None:
            return
        if 200 <= status < 300:
            if f.state is FlowState.UNREGISTERING:
                self._unregistered(f, status)
            else:
                self._succeeded(f, response, source, now)
            return
        if status in (401, 407) and self._digest is not None:
            authorized = self._digest.authorize(request, response)
            if authorized is not None:
                self._retry_with(f, authorized, now)
                return
            if f.preempted:  # reused credentials refused: start over without
                self._send_register(f, f.requested_expires, now)
                return
        if status == 423 and f.state is FlowState.REGISTERING:
            minimum = _int_header(response, "Min-Expires")
            if minimum is not None and minimum > f.requested_expires:
                f.requested_expires = minimum
                retry = request.copy()
                retry.headers.set("Expires", str(minimum))
                self._retry_with(f, retry, now)
                return
        self._attempt_failed(f, status, response.reason, now, response=response)

    def _succeeded(self, f: _Flow, response: SipResponse, source: Source, now: float) -> None:
        mine = self._our_contact(f, response)
        expires: int | None = None
        pub_gruu = temp_gruu = None
        if mine is not None:
            expires = _delta(mine.param("expires"))
            pub_gruu = mine.param("pub-gruu")
            temp_gruu = mine.param("temp-gruu")
        if expires is None:
            expires = _int_header(response, "Expires")
        if expires is None:
            expires = f.requested_expires
        if expires <= 0:
            self._attempt_failed(f, response.status, "binding not kept", now)
            return
        f.state = FlowState.REGISTERED
        f.pinned = source.flow
        f.consecutive_failures = 0
        f.retry_at = None
        f.expires_at = now + expires
        f.refresh_at = now + expires / 2.0
        required = {v.strip().lower() for v in response.headers.values("Require")}
        f.outbound = self.config.outbound and "outbound" in required
        f.flow_timer = _int_header(response, "Flow-Timer")
        if f.keepalive_deadline is None and f.keepalive_at is None:
            self._schedule_keepalive(f, now)
        if not f.config.target.transport.reliable:
            f.mapped = _via_mapped(response)
        self._events.append(
            RegistrationSucceeded(
                flow=f.index,
                expires=expires,
                refresh_at=f.refresh_at,
                outbound=f.outbound,
                flow_timer=f.flow_timer,
                pub_gruu=pub_gruu,
                temp_gruu=temp_gruu,
            )
        )

    def _our_contact(self, f: _Flow, response: SipResponse) -> NameAddr | None:
        try:
            contacts = response.contacts
        except MalformedMessageError:
            return None
        if contacts == "*":
            return None
        for c in contacts:
            if self.config.outbound:
                inst = c.param("+sip.instance")
                if (
                    inst is not None
                    and inst.strip("<>") == self.instance_id
                    and c.param("reg-id") in (None, str(f.index))
                ):
                    return c
                continue
            if isinstance(c.uri, SipUri) and c.uri.equivalent(self._contact):
                return c
        return None

    def _schedule_keepalive(self, f: _Flow, now: float) -> None:
        transport = f.config.target.transport
        if self.config.keepalive_interval is not None:
            f.keepalive_at = now + self.config.keepalive_interval
        elif f.outbound:
            low, high = keepalive_bounds(transport, f.flow_timer)
            f.keepalive_at = now + self._rng.uniform(low, high)
        else:
            f.keepalive_at = None

    def _send_keepalive(self, f: _Flow, now: float) -> None:
        reliable = f.config.target.transport.reliable
        method = KeepaliveMethod.CRLF if reliable else KeepaliveMethod.STUN
        timeout = (
            self.config.keepalive_timeout_stream if reliable else self.config.keepalive_timeout_udp
        )
        f.keepalive_deadline = now + timeout
        self._events.append(KeepaliveDue(flow=f.index, target=f.target, method=method))

    def _unregistered(self, f: _Flow, status: int | None) -> None:
        f.clear_timers()
        f.state = FlowState.UNREGISTERED
        f.pinned = None
        self._events.append(Unregistered(flow=f.index, status=status))

    def _all_others_failed(self, f: _Flow) -> bool:
        return not any(o is not f and o.state is FlowState.REGISTERED for o in self._flows)

    def _backoff(self, f: _Flow, now: float) -> float:
        """Count one more failure of ``f`` and return when to retry (§4.5)."""
        f.consecutive_failures += 1
        bound = backoff_bound(
            f.consecutive_failures,
            all_failed=self._all_others_failed(f),
            config=self.config.backoff,
        )
        return now + self._rng.uniform(0.5, 1.0) * bound

    def _attempt_failed(
        self,
        f: _Flow,
        status: int | None,
        reason: str,
        now: float,
        *,
        response: SipResponse | None = None,
    ) -> None:
        if f.state is FlowState.UNREGISTERING:
            self._unregistered(f, status)
            return
        f.clear_timers()
        f.state = FlowState.WAITING
        f.pinned = None
        retry_at = self._backoff(f, now)
        if response is not None and status in (503, 500, 480, 486, 600, 603):
            after = _int_header(response, "Retry-After")
            if after is not None:
                retry_at = max(retry_at, now + after)
        f.retry_at = retry_at
        self._events.append(
            RegistrationFailed(flow=f.index, status=status, reason=reason, retry_at=retry_at)
        )

    def _flow_failed(self, f: _Flow, reason: str, now: float) -> None:
        if f.state not in (FlowState.REGISTERED, FlowState.REGISTERING):
            return
        self._forget_txn(f)
        f.clear_timers()
        f.state = FlowState.WAITING
        f.pinned = None
        f.retry_at = self._backoff(f, now)
        self._events.append(FlowFailed(flow=f.index, reason=reason, retry_at=f.retry_at))


def _canonical(endpoint: Endpoint) -> Endpoint:
    try:
        return Endpoint(canonical_ip(endpoint.host), endpoint.port)
    except ValueError:
        return endpoint


def _via_mapped(response: SipResponse) -> Endpoint | None:
    """Our address as the first hop saw it: the ``received`` and ``rport``
    it stamped on our Via (RFC 3581 §4), when it stamped both."""
    try:
        via = response.top_via
    except MalformedMessageError:
        return None
    port, received = via.rport, via.received
    if port is None or received is None:
        return None  # a sent-by hostname is never the mapped address
    return _canonical(Endpoint(received, port))


def _delta(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_delta_seconds(value.strip())
    except MalformedMessageError:
        return None


def _int_header(msg: SipMessage, name: str) -> int | None:
    value = msg.headers.get(name)
    if value is None:
        return None
    # Retry-After may carry a comment and params: take the leading digits.
    head = value.strip().split(";", 1)[0].split("(", 1)[0].strip()
    return _delta(head)
