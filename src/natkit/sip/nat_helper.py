"""NAT helpers for user agents without Outbound (RFC 3261, RFC 3581, RFC 6314 §4.1), sans-IO.

Theory of operation
-------------------
Most user agents behind a NAT do not implement Outbound (RFC 5626). They
register a Contact with their private address, and nothing keeps their NAT
mapping open. Three helpers make them reachable anyway; docs/sip-nat.md
says which mode breaks what and why natkit chose this one.

* **Detection** (:func:`detect_nat`): a request comes from behind a NAT when
  its Contact or top Via host is a private, shared (RFC 6598), unique-local
  or link-local address, when the top Via's sent-by differs from the
  address the request came from (what the transport records as
  ``received``/``rport``, RFC 3261 §18.2.1, RFC 3581 §4), or when a Contact
  differs from that source. On stream transports ports are not compared:
  a TCP client's source port is ephemeral with or without a NAT. The
  answer is a :class:`NatVerdict` with every reason that applied.
* **Alias-style registration** (:func:`binding_target`,
  :func:`route_to_binding`): the binding keeps the Contact exactly as the
  UA sent it (so the 200 OK lists the UA's own Contact, RFC 3261 §10.3
  step 8, and the UA recognises its binding), plus the transport address
  and flow the REGISTER arrived from. A request for the AoR is sent with the
  registered Contact as Request-URI (§16.5: the proxy picks the next hop,
  which need not be the Request-URI's host) to that *received source*, over
  the same flow: through the UA's NAT mapping. Nothing in any message is
  rewritten. natkit's registrar already stores both (``Binding.source`` and
  ``Binding.flow``); these functions turn them into a
  :class:`~natkit.sip.flow.Target`.
* **Keepalive** (:class:`NatPinger`): the mapping of a NATed binding must be
  refreshed from the inside or the outside before the NAT forgets it (UDP
  mappings time out after 30 s to a few minutes, RFC 4787 §4.3). The pinger
  sends, per binding, an OPTIONS request (UDP) through the shared
  :class:`~natkit.sip.transaction.TransactionLayer`, or a CRLFCRLF ping
  (RFC 5626 §4.4.1 syntax) over a stream flow, every ``interval`` seconds
  with jitter from the injected rng. Any response to the OPTIONS, even a
  4xx or 5xx, proves the UA and the mapping are alive; a transaction
  timeout or transport failure is a missed ping, and ``max_missed`` in a row
  report :class:`~natkit.sip.nat_helper_events.NatBindingLost`. A stream
  binding is lost when its connection closes. An entry ends with its
  binding: ``Expires: 0``, ``*`` or a replacing REGISTER untrack it
  (:meth:`NatPinger.sync_aor`), one that expires unrefreshed is dropped
  when its next ping falls due, unsent, and :meth:`NatPinger.refresh_aor`
  follows what a lookup found in the store. Bindings wait in one heap
  keyed by due time (O(log n) per ping) and at most ``max_in_flight``
  OPTIONS are outstanding, so 100k bindings ping evenly spread, never at
  once.

Outbound bindings (``reg-id`` accepted by the registrar) are not pinged:
the UA sends its own keepalives (RFC 5626 §4.4).
"""

from __future__ import annotations

import contextlib
import enum
import heapq
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from natkit.addr import AddressClass, Endpoint, address_class, canonical_ip
from natkit.errors import MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import CSeq, NameAddr, Via, parse_name_addr
from natkit.sip.message import Headers, SipRequest, SipResponse
from natkit.sip.nat_helper_events import LossReason, NatBindingLost, NatPingerEvent
from natkit.sip.registrar import Binding
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
from natkit.sip.via_routing import default_port

__all__ = [
    "BindingRoute",
    "NatPinger",
    "NatPingerConfig",
    "NatReason",
    "NatVerdict",
    "binding_is_natted",
    "binding_target",
    "detect_nat",
    "detect_nat_binding",
    "detect_nat_response",
    "is_private_host",
    "parse_source_text",
    "route_to_binding",
]

_PRIVATE_CLASSES = frozenset(
    {
        AddressClass.PRIVATE,
        AddressClass.SHARED,
        AddressClass.UNIQUE_LOCAL,
        AddressClass.LINK_LOCAL,
    }
)


# --------------------------------------------------------------------- detection


class NatReason(enum.StrEnum):
    """One sign of a NAT between the UA and us (cf. Kamailio nat_uac_test flags
    1, 2, 4, 16 and 64, defined here from the RFCs)."""

    PRIVATE_CONTACT = "private-contact"  # a Contact host is RFC 1918/6598/4193/link-local
    PRIVATE_VIA = "private-via"  # the top Via sent-by host is such an address
    VIA_HOST_DIFFERS = "via-host-differs"  # RFC 3261 §18.2.1: would get ;received
    VIA_PORT_DIFFERS = "via-port-differs"  # RFC 3581 §4: rport differs (datagrams only)
    CONTACT_DIFFERS = "contact-differs"  # a Contact's address is not the source


@dataclass(frozen=True, slots=True)
class NatVerdict:
    """Whether a request came through a NAT, and why (empty ``reasons``: no)."""

    reasons: frozenset[NatReason] = frozenset()

    @property
    def natted(self) -> bool:
        return bool(self.reasons)

    def __bool__(self) -> bool:
        return self.natted


def is_private_host(host: str) -> bool:
    """True for an IP literal in a range that is not reachable from the
    Internet (RFC 1918, RFC 6598 shared, RFC 4193 unique-local, link-local).
    Host names are not resolved here: they count as not private."""
    try:
        return address_class(canonical_ip(host)) in _PRIVATE_CLASSES
    except ValueError:
        return False


def _same_ip(host: str, other: str) -> bool | None:
    """Whether two hosts are the same IP; None when ``host`` is a name."""
    try:
        return canonical_ip(host) == canonical_ip(other)
    except ValueError:
        return None


def _uri_transport(uri: SipUri) -> SipTransport:
    if uri.scheme == "sips":
        return SipTransport.TLS
    named = SipTransport.from_via(uri.transport) if uri.transport else None
    return named or SipTransport.UDP


def _contact_reasons(uri: Uri, source: Source, *, relayed: bool = False) -> set[NatReason]:
    """``relayed``: the message may have come through a proxy, whose address
    the source then is: another IP in the Contact is no evidence of a NAT
    (a private Contact, or the same IP at another port, still is)."""
    reasons: set[NatReason] = set()
    if not isinstance(uri, SipUri):
        return reasons
    if is_private_host(uri.host):
        reasons.add(NatReason.PRIVATE_CONTACT)
    same = _same_ip(uri.host, source.remote.host)
    if same is False:
        if not relayed:
            reasons.add(NatReason.CONTACT_DIFFERS)
    elif same and not source.transport.reliable:
        port = uri.port or default_port(_uri_transport(uri))
        if port != source.remote.port:
            reasons.add(NatReason.CONTACT_DIFFERS)
    return reasons


def _via_reasons(via: Via, source: Source) -> set[NatReason]:
    reasons: set[NatReason] = set()
    if is_private_host(via.host):
        reasons.add(NatReason.PRIVATE_VIA)
    # §18.2.1: the sent-by host is compared with the packet's source; a
    # name that is not the source's address counts as differing (the
    # transport adds ;received then too).
    if _same_ip(via.host, source.remote.host) is not True:
        reasons.add(NatReason.VIA_HOST_DIFFERS)
    if not source.transport.reliable:
        transport = SipTransport.from_via(via.transport) or source.transport
        port = via.port or default_port(transport)
        if port != source.remote.port:
            reasons.add(NatReason.VIA_PORT_DIFFERS)
    return reasons


def detect_nat(request: SipRequest, source: Source) -> NatVerdict:
    """Tell whether ``request``, received from ``source``, crossed a NAT.

    Looks at the top Via (its sent-by against the source address, and port
    on datagram transports, RFC 3261 §18.2.1, RFC 3581 §4; a private
    sent-by host) and every Contact (private host; address, and port on
    datagram transports, against the source). A request with more than one
    Via came through a proxy (the source and top Via are that proxy's): its
    Contacts count only when private or at the source's IP. Stamped
    ``received``/``rport`` params are ignored: the source itself is the
    truth they record. Headers that do not parse are skipped (the element
    answers 400 for them), so this never raises.
    """
    reasons: set[NatReason] = set()
    relayed = False
    with contextlib.suppress(MalformedMessageError):
        reasons |= _via_reasons(request.top_via, source)
        relayed = len(request.vias) > 1
    try:
        contacts = request.contacts
    except MalformedMessageError:
        contacts = []
    if contacts != "*":
        for contact in contacts:
            reasons |= _contact_reasons(contact.uri, source, relayed=relayed)
    return NatVerdict(frozenset(reasons))


def detect_nat_response(response: SipResponse, source: Source) -> NatVerdict:
    """:func:`detect_nat` for a response from ``source``: its Contacts only
    (the top Via of a response names whoever sent the request, not the
    answering user agent), and, as a response keeps no trace of the proxies
    it came back through, judged as possibly relayed: a private Contact, or
    the source's IP at another port, is a NAT; another IP is not. Never
    raises."""
    reasons: set[NatReason] = set()
    try:
        contacts = response.contacts
    except MalformedMessageError:
        contacts = []
    if contacts != "*":
        for contact in contacts:
            reasons |= _contact_reasons(contact.uri, source, relayed=True)
    return NatVerdict(frozenset(reasons))


def detect_nat_binding(binding: Binding) -> NatVerdict:
    """Whether a registered contact is behind a NAT, for a request routed to
    it: :func:`binding_is_natted` when the REGISTER came straight from the
    user agent. A binding registered through an edge proxy (``path``: its
    source is the edge) or without a source is judged by a private Contact
    only. Never raises."""
    if binding.source is not None and not binding.path:
        return binding_is_natted(binding)
    try:
        uri = binding.uri()
    except MalformedMessageError:
        return NatVerdict()
    private = isinstance(uri, SipUri) and is_private_host(uri.host)
    return NatVerdict(frozenset({NatReason.PRIVATE_CONTACT}) if private else frozenset())


# ----------------------------------------------------------- alias-style routing


def binding_target(contact: NameAddr | Uri, received_source: Source | None) -> Target | None:
    """Where requests for a registered ``contact`` go (alias style).

    With the source the REGISTER came from, always that source: its
    transport, address and port, pinned to its flow (RFC 3261 §16.5 lets a
    proxy send to any next hop; RFC 3581 §4 made the UA's NAT keep that
    mapping for its own socket). The Contact's own transport and address
    are not used then: a private address is unreachable, and even a
    public one may be a port the NAT has not mapped. Without a source,
    the Contact's IP literal (RFC 3263 §4 defaults); a host name gives
    None (the caller resolves names).
    """
    if received_source is not None:
        return Target(received_source.transport, received_source.remote, received_source.flow)
    uri = contact.uri if isinstance(contact, NameAddr) else contact
    if not isinstance(uri, SipUri):
        return None
    host = uri.maddr or uri.host
    try:
        ip = canonical_ip(host)
    except ValueError:
        return None
    transport = _uri_transport(uri)
    return Target(transport, Endpoint(ip, uri.port or default_port(transport)))


def parse_source_text(text: str, flow: str | None = None) -> Source | None:
    """Read a :attr:`Binding.source` (``"udp:192.0.2.1:5060"``,
    ``"tcp:[2001:db8::1]:40000"``, as :func:`natkit.sip.registrar.source_text`
    writes it) back into a :class:`Source`. The local endpoint is not stored;
    it is given as the unspecified address; without ``flow`` the flow id is
    made up from the text (no transport knows it). None when it does not
    parse."""
    name, sep, rest = text.partition(":")
    transport = SipTransport.from_via(name) if sep else None
    if transport is None:
        return None
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            return None
        port_text = port_text[1:]
    else:
        host, _, port_text = rest.rpartition(":")
    if not port_text.isdigit():
        return None
    try:
        remote = Endpoint.of(host, int(port_text))
    except ValueError:
        return None
    unspecified = Endpoint("::" if ":" in remote.host else "0.0.0.0", 0)
    return Source(transport, remote, unspecified, flow or f"{name}:{remote}")


@dataclass(frozen=True, slots=True)
class BindingRoute:
    """How the home proxy reaches one binding: Request-URI (the registered
    Contact, unchanged) and next hop."""

    uri: Uri
    target: Target


def route_to_binding(binding: Binding) -> BindingRoute | None:
    """Alias-style route for a binding of natkit's registrar: the Contact as
    Request-URI, its recorded source and flow as next hop (see
    :func:`binding_target`). None when the Contact does not parse or
    names a host without a recorded source. A binding with a Path is the
    edge proxy's to route (RFC 3327 §5.4), not this function's."""
    try:
        contact = parse_name_addr(binding.contact)
    except MalformedMessageError:
        return None
    source = parse_source_text(binding.source, binding.flow) if binding.source else None
    target = binding_target(contact, source)
    if target is None:
        return None
    if binding.flow is None and target.flow is not None:
        target = Target(target.transport, target.remote)  # any flow to that address
    return BindingRoute(contact.uri, target)


def binding_is_natted(binding: Binding) -> NatVerdict:
    """:func:`detect_nat`'s Contact checks applied to a stored binding (the
    REGISTER's Via is not stored; for a registration the Contact and
    source say the same)."""
    if binding.source is None:
        return NatVerdict()
    source = parse_source_text(binding.source, binding.flow)
    try:
        uri = parse_name_addr(binding.contact).uri
    except MalformedMessageError:
        return NatVerdict()
    if source is None:
        return NatVerdict()
    return NatVerdict(frozenset(_contact_reasons(uri, source)))


# ---------------------------------------------------------------------- pinger


@dataclass(frozen=True, slots=True, kw_only=True)
class NatPingerConfig:
    """Pinger settings.

    ``udp_interval``: 25 s, so that with 20 % jitter every wait (20-25 s)
    stays clearly under the shortest UDP NAT timeouts met in practice, 30
    s (RFC 4787 §4.3 asks for 2 min; many NATs do not), network delay
    included (a 30 s interval would graze a 30 s timeout on every long
    draw). ``stream_interval``: 120 s, RFC 5626 §4.4.1's recommendation for
    connection-oriented transports (TCP NAT timeouts are long, RFC 5382
    §5). Each wait is drawn uniformly from ``[interval * (1 - jitter),
    interval]`` (RFC 5626 §4.4.1 uses 80-100 %), so pings never fall behind
    the interval and spread out. ``miss_retry``: the wait after a missed
    ping, shorter so a dead binding goes in about ``max_missed`` transaction
    timeouts. ``max_in_flight`` bounds outstanding OPTIONS. ``max_forwards``
    70 per RFC 3261 §8.1.1.6 (the UA answers OPTIONS whatever the value).
    """

    host: str
    udp_interval: float = 25.0
    stream_interval: float = 120.0
    jitter: float = 0.2
    miss_retry: float = 5.0
    max_missed: int = 3
    max_in_flight: int = 256
    max_forwards: int = 70
    from_user: str = "natkit-ping"

    def __post_init__(self) -> None:
        if self.udp_interval <= 0 or self.stream_interval <= 0 or self.miss_retry <= 0:
            raise ValueError("intervals must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_missed < 1 or self.max_in_flight < 1:
            raise ValueError("max_missed and max_in_flight must be at least 1")


class _Tracked:
    """Per-binding state: kept small (slots, no per-binding containers)."""

    __slots__ = (
        "aor",
        "contact",
        "due",
        "expires",
        "key",
        "live",
        "missed",
        "target",
        "txn",
        "uri",
    )

    def __init__(
        self, aor: str, key: str, contact: str, uri: Uri, target: Target, expires: float | None
    ) -> None:
        self.aor = aor
        self.expires = expires  # monotonic time the binding expires at (None: never)
        self.key = key
        self.contact = contact
        self.uri = uri
        self.target = target
        self.due = 0.0
        self.live = True
        self.missed = 0
        self.txn: ClientTransactionId | None = None


class NatPinger:
    """Keeps NATed, non-outbound bindings alive and finds dead ones.

    Shares the element's :class:`TransactionLayer` (like the forking proxy):
    the element passes every layer event to :meth:`handle_event` first.
    ``via_for`` builds the element's own Via for a target. Outputs: OPTIONS
    through the layer, CRLFCRLF pings in :meth:`crlf_pings_to_send` (the
    driver writes ``b"\\r\\n\\r\\n"`` on each flow), events in
    :meth:`next_event`. Times are monotonic ``now``.
    """

    def __init__(
        self,
        config: NatPingerConfig,
        layer: TransactionLayer,
        *,
        via_for: Callable[[Target], Via],
        rng: Rng | None = None,
    ) -> None:
        self.config = config
        self._layer = layer
        self._via_for = via_for
        self._rng = rng if rng is not None else default_rng()
        # aor -> key -> entry: one REGISTER touches one AoR's bindings only.
        self._aors: dict[str, dict[str, _Tracked]] = {}
        self._count = 0
        # stream flow id -> its bindings (UDP bindings are not indexed).
        self._stream_flows: dict[str, list[_Tracked]] = {}
        self._heap: list[tuple[float, int, _Tracked]] = []
        self._seq = 0
        self._by_txn: dict[ClientTransactionId, _Tracked | None] = {}
        self._in_flight = 0
        self._crlf: list[Target] = []
        self._events: deque[NatPingerEvent] = deque()
        self._call_seq = 0

    # ------------------------------------------------------------ queries

    @property
    def binding_count(self) -> int:
        return self._count

    @property
    def in_flight(self) -> int:
        """OPTIONS pings sent and not yet answered or timed out."""
        return self._in_flight

    @property
    def transaction_count(self) -> int:
        """Client transactions of the pinger the layer still holds."""
        return len(self._by_txn)

    @property
    def heap_size(self) -> int:
        return len(self._heap)

    def is_tracked(self, aor: str, key: str) -> bool:
        return key in self._aors.get(aor, {})

    # ------------------------------------------------------------ commands

    def track(
        self,
        aor: str,
        key: str,
        contact: str,
        target: Target,
        *,
        now: float,
        expires_at: float | None = None,
    ) -> bool:
        """Start (or refresh) pinging the binding ``key`` of ``aor``.

        ``contact`` is the registered Contact (name-addr text); it becomes
        the OPTIONS Request-URI. ``expires_at`` (monotonic, like ``now``) is
        when the binding expires unless refreshed: the entry is dropped
        then, without a ping or a loss event (RFC 3261 §10.3: an expired
        binding is gone; pinging it would keep a dead UA's NAT open). A
        refresh (a new REGISTER proves the UA alive) resets the missed count,
        moves the expiry and keeps the schedule. Returns False when the
        Contact does not parse (nothing is tracked then).
        """
        try:
            uri = parse_name_addr(contact).uri
        except MalformedMessageError:
            return False
        entry = self._aors.get(aor, {}).get(key)
        if entry is not None and entry.target == target:
            entry.contact, entry.uri, entry.missed = contact, uri, 0
            entry.expires = expires_at
            return True
        if entry is not None:  # registered again from elsewhere: start afresh
            self.untrack(aor, key)
        entry = _Tracked(aor, key, contact, uri, target, expires_at)
        self._aors.setdefault(aor, {})[key] = entry
        self._count += 1
        if target.transport.reliable and target.flow is not None:
            self._stream_flows.setdefault(target.flow, []).append(entry)
        # The first ping is spread over a whole interval, so a burst of
        # registrations (a restart, a NAT reboot) does not ping in a burst.
        self._schedule(entry, now + self._rng.uniform(0.0, self._interval(entry)))
        return True

    def track_binding(
        self, aor: str, binding: Binding, *, now: float, wall: float | None = None
    ) -> bool:
        """Track a registrar binding if it needs pinging: NATed (its Contact
        is private or not its source), not outbound (no ``reg-id``), no
        Path (an edge proxy keeps it). Untracks it otherwise. Returns
        whether it is tracked. ``wall`` is the wall-clock time matching
        ``now``: with it, the entry expires with the binding
        (``binding.expires`` is wall time)."""
        # Cheapest tests first: this runs for every binding of every REGISTER.
        wanted = (
            binding.reg_id is None
            and not binding.path
            and binding.source is not None
            and binding_is_natted(binding).natted
        )
        route = route_to_binding(binding) if wanted else None
        if route is None:
            self.untrack(aor, binding.key)
            return False
        expires_at = None if wall is None else now + (binding.expires - wall)
        return self.track(
            aor, binding.key, binding.contact, route.target, now=now, expires_at=expires_at
        )

    def sync_aor(
        self, aor: str, bindings: Iterable[Binding], *, now: float, wall: float | None = None
    ) -> None:
        """Make the tracked bindings of ``aor`` the NATed ones of ``bindings``
        (call after each REGISTER is applied, with the AoR's bindings; or
        with the bindings a lookup found). Bindings no longer listed -
        removed by ``Expires: 0`` or ``*``, replaced, expired - stop being
        pinged; ``wall`` makes the others expire with their bindings."""
        keep = {b.key for b in bindings if self.track_binding(aor, b, now=now, wall=wall)}
        for key in [k for k in self._aors.get(aor, {}) if k not in keep]:
            self.untrack(aor, key)

    def refresh_aor(
        self, aor: str, bindings: Iterable[Binding], *, now: float, wall: float
    ) -> None:
        """Bring the tracked bindings of ``aor`` in line with what a lookup
        found (``bindings``, e.g. written by another registrar of a cluster):
        those gone stop being pinged, the others take the listed expiry.
        Nothing new is tracked: a binding registered elsewhere may name a
        flow this element does not hold."""
        tracked = self._aors.get(aor)
        if not tracked:
            return
        listed = {b.key: b for b in bindings}
        for key, entry in list(tracked.items()):
            binding = listed.get(key)
            if binding is None:
                self._release(entry)
            else:
                entry.expires = now + (binding.expires - wall)

    def untrack(self, aor: str, key: str) -> None:
        """Stop pinging (binding removed or expired). A ping in flight is
        forgotten; its transaction ends in the layer on its own."""
        entry = self._aors.get(aor, {}).get(key)
        if entry is not None:
            self._release(entry)

    def flow_closed(self, flow: str) -> None:
        """The transport closed ``flow``: stream bindings on it are lost (the
        NAT mapping went with the connection; nothing else reaches the UA)."""
        for entry in list(self._stream_flows.get(flow, ())):
            self._lose(entry, LossReason.FLOW_CLOSED)

    def handle_event(self, event: TransactionEvent, *, now: float) -> bool:
        """Take a layer event if it belongs to a ping; False otherwise."""
        match event:
            case ResponseReceived(response=response, client_txn=txn):
                if txn not in self._by_txn:
                    return False
                if response.status >= 200:
                    entry = self._finish(txn)
                    if entry is not None:
                        entry.missed = 0
                        self._schedule(entry, now + self._wait(entry))
                return True
            case (
                TransactionTimedOut(txn=ClientTransactionId() as txn)
                | TransportFailed(txn=ClientTransactionId() as txn)
            ):
                if txn not in self._by_txn:
                    return False
                entry = self._finish(txn)
                if entry is not None:
                    entry.missed += 1
                    if entry.missed >= self.config.max_missed:
                        self._lose(entry, LossReason.NO_ANSWER)
                    else:
                        self._schedule(entry, now + self.config.miss_retry)
                return True
            case TransactionTerminated(txn=ClientTransactionId() as txn):
                if txn not in self._by_txn:
                    return False
                self._finish(txn)
                del self._by_txn[txn]
                if not self._by_txn:
                    self._by_txn = {}  # an emptied dict keeps its table
                return True
        return False

    # ------------------------------------------------------------- outputs

    def crlf_pings_to_send(self) -> list[Target]:
        """Stream flows to write a CRLFCRLF keepalive on, now."""
        out, self._crlf = self._crlf, []
        return out

    def next_event(self) -> NatPingerEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When the next ping is due; None when nothing is, or when the
        in-flight cap is reached (a completing ping makes room: ask again
        after passing it events)."""
        self._drop_stale()
        if not self._heap or self._in_flight >= self.config.max_in_flight:
            return None
        return self._heap[0][0]

    def handle_timer(self, *, now: float) -> None:
        """Send every ping that is due, up to the in-flight cap."""
        while True:
            self._drop_stale()
            if not self._heap or self._heap[0][0] > now:
                return
            entry = self._heap[0][2]
            if entry.expires is not None and entry.expires <= now:
                heapq.heappop(self._heap)
                self._release(entry)  # the binding expired: no ping to it
                continue
            if not entry.target.transport.reliable:
                if self._in_flight >= self.config.max_in_flight:
                    return
                heapq.heappop(self._heap)
                entry.due = -1.0
                self._send_options(entry, now)
            else:
                heapq.heappop(self._heap)
                self._crlf.append(entry.target)
                self._schedule(entry, now + self._wait(entry))

    # ------------------------------------------------------------ internals

    def _interval(self, entry: _Tracked) -> float:
        if entry.target.transport.reliable:
            return self.config.stream_interval
        return self.config.udp_interval

    def _wait(self, entry: _Tracked) -> float:
        interval = self._interval(entry)
        return self._rng.uniform(interval * (1.0 - self.config.jitter), interval)

    def _schedule(self, entry: _Tracked, due: float) -> None:
        entry.due = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, entry))
        if len(self._heap) > 2 * self._count + 64:
            self._compact()

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            due, _, entry = heap[0]
            if entry.live and entry.due == due:
                return
            heapq.heappop(heap)

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if item[2].live and item[2].due == item[0]]
        heapq.heapify(self._heap)

    def _send_options(self, entry: _Tracked, now: float) -> None:
        """RFC 3261 §11: an OPTIONS to the registered Contact, over the
        binding's flow. Call-ID and tags from the rng."""
        via = self._via_for(entry.target).with_params(branch=self._layer.new_branch())
        self._call_seq += 1
        tag = f"{self._rng.getrandbits(48):012x}"
        call_id = f"{self._rng.getrandbits(64):016x}-{self._call_seq}@{self.config.host}"
        from_uri = SipUri(scheme="sip", host=self.config.host, user=self.config.from_user)
        headers = Headers(
            [
                ("Via", str(via)),
                ("Max-Forwards", str(self.config.max_forwards)),
                ("From", str(NameAddr(from_uri, params=(("tag", tag),)))),
                ("To", str(NameAddr(entry.uri))),
                ("Call-ID", call_id),
                ("CSeq", str(CSeq(1, "OPTIONS"))),
                ("Content-Length", "0"),
            ]
        )
        request = SipRequest(method="OPTIONS", uri=entry.uri, headers=headers)
        txn = self._layer.send_request(request, entry.target, now=now)
        entry.txn = txn
        self._by_txn[txn] = entry
        self._in_flight += 1

    def _finish(self, txn: ClientTransactionId) -> _Tracked | None:
        """The ping ``txn`` has its outcome: free its in-flight slot and
        return its binding if still tracked (a dropped one gives None)."""
        entry = self._by_txn.get(txn)
        if entry is None:
            return None
        self._by_txn[txn] = None
        self._in_flight -= 1
        entry.txn = None
        if not entry.live:
            return None
        return entry

    def _release(self, entry: _Tracked) -> None:
        """Forget ``entry`` everywhere (its heap slot goes stale)."""
        entry.live = False
        entry.due = -1.0
        keys = self._aors[entry.aor]
        del keys[entry.key]
        if not keys:
            del self._aors[entry.aor]
        self._count -= 1
        flow = entry.target.flow
        if entry.target.transport.reliable and flow is not None:
            on_flow = self._stream_flows[flow]
            on_flow.remove(entry)
            if not on_flow:
                del self._stream_flows[flow]
        if entry.txn is not None:
            self._finish(entry.txn)
        self._shrink()

    def _shrink(self) -> None:
        """Give back the tables of emptied containers (a dict never shrinks
        on deletion: 10k removed bindings would keep ~300 KiB)."""
        if not self._count:
            self._aors = {}
            self._stream_flows = {}
            self._heap = []

    def _lose(self, entry: _Tracked, reason: LossReason) -> None:
        self._release(entry)
        self._events.append(
            NatBindingLost(
                aor=entry.aor,
                key=entry.key,
                contact=entry.contact,
                reason=reason,
                missed=entry.missed,
            )
        )
