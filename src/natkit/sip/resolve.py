"""Locating SIP servers in the DNS (RFC 3263), sans-IO.

A client turns a URI into an ordered list of (transport, address, port)
targets (RFC 3263 §4); a server whose response could not go back over the
request's connection or to its source turns the top Via's sent-by into the
same kind of list (§5). Both are *plans*: a short program of DNS lookups
whose next step depends on the previous answers. The plan is written as a
generator and driven from outside, one step at a time:

    locator = SipServerLocator.for_uri(uri, transports=(...), rng=rng)
    while (step := locator.next_step()) is not None:
        if isinstance(step, DnsQuery):
            locator.receive_answer(lookup(step))   # the driver does the I/O
        else:
            try_to_send(step)                      # a ServerTarget, best first

A target is produced as soon as it is known, so the caller starts with the
first one and asks for the next only when a transaction to it timed out or
its transport failed (§4.3): the A/AAAA records of a backup SRV target are
looked up only when they are needed. The asyncio driver with dnspython is
:mod:`natkit.sip.aio.resolve`.

Client rules (§4.1 transport, §4.2 port and address):

* TARGET is the ``maddr`` parameter if present, else the host.
* ``;transport=`` given: that transport (``tcp`` in a sips URI means TLS,
  ``ws`` means WSS, RFC 7118 §5); a numeric TARGET or an explicit port: UDP
  for sip, TLS for sips. Only then, NAPTR (services ``SIP+D2U``,
  ``SIP+D2T``, ``SIPS+D2T`` and RFC 7118's ``SIP+D2W``/``SIPS+D2W``, flag
  ``s``), tried in (order, preference) order; records of transports the
  caller does not support are discarded, and a sips URI keeps only SIPS
  services. Without usable NAPTR records, SRV for each supported transport
  (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``, ``_sip._ws``, ``_sips._ws``).
* A numeric TARGET is used as is; a name with a port gets its AAAA/A records
  at that port; otherwise SRV records in RFC 2782 order (:func:`natkit.srv.order_srv`)
  and each target's addresses; without any SRV record the name's own
  addresses at the transport's default port (5060, 5061 for TLS, 80/443 for
  WS/WSS).

Bounds (:class:`LocatorLimits`): records taken from each answer, DNS queries
per plan and targets per plan are capped, so a hostile zone cannot make one
request fan out into thousands of lookups. Targets already produced are not
produced again.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError
from natkit.rng import Rng, default_rng
from natkit.sip.flow import SipTransport, Target
from natkit.sip.headers import Via
from natkit.sip.uri import SipUri
from natkit.srv import SrvAnswer, order_srv

__all__ = [
    "DEFAULT_PORTS",
    "DEFAULT_TRANSPORTS",
    "DnsQuery",
    "DnsRecord",
    "NAPTR_SERVICES",
    "SRV_SERVICES",
    "LocatorLimits",
    "NaptrRecord",
    "RecordType",
    "ServerTarget",
    "SipResponseLocator",
    "SipServerLocator",
    "SrvAnswer",
]

DEFAULT_PORTS: dict[SipTransport, int] = {
    SipTransport.UDP: 5060,
    SipTransport.TCP: 5060,
    SipTransport.TLS: 5061,
    SipTransport.WS: 80,  # RFC 7118 §5
    SipTransport.WSS: 443,
}

DEFAULT_TRANSPORTS: tuple[SipTransport, ...] = (
    SipTransport.UDP,
    SipTransport.TCP,
    SipTransport.TLS,
)
"""What a caller supports unless it says otherwise, in order of preference
(used where RFC 3263 lets the client choose: SRV queries without NAPTR)."""

NAPTR_SERVICES: dict[str, SipTransport] = {
    "SIP+D2U": SipTransport.UDP,  # RFC 3263 §4.1
    "SIP+D2T": SipTransport.TCP,
    "SIPS+D2T": SipTransport.TLS,
    "SIP+D2W": SipTransport.WS,  # RFC 7118 §5, §10.4
    "SIPS+D2W": SipTransport.WSS,
}

SRV_SERVICES: dict[SipTransport, str] = {
    SipTransport.UDP: "_sip._udp",  # RFC 3263 §4.1 / §4.2
    SipTransport.TCP: "_sip._tcp",
    SipTransport.TLS: "_sips._tcp",
    SipTransport.WS: "_sip._ws",  # by analogy; RFC 7118 names no SRV labels
    SipTransport.WSS: "_sips._ws",
}

_BOTH_FAMILIES: tuple[Family, ...] = (Family.IPV6, Family.IPV4)


class RecordType(enum.StrEnum):
    """The DNS record types a plan asks for."""

    NAPTR = "NAPTR"
    SRV = "SRV"
    A = "A"
    AAAA = "AAAA"


@dataclass(frozen=True, slots=True)
class DnsQuery:
    """One lookup the driver must perform and answer with :meth:`receive_answer`."""

    name: str
    rdtype: RecordType


@dataclass(frozen=True, slots=True)
class NaptrRecord:
    """A NAPTR record (RFC 3403 §4.1); ``replacement`` without the final dot."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


DnsRecord = NaptrRecord | SrvAnswer | str
"""An answer's records: NAPTR records, SRV records, or IP address text (A/AAAA)."""


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """Where to send: a transport and an address, and the names that led there.

    ``hostname`` is the name whose A/AAAA records gave ``remote`` (an SRV
    target, or TARGET itself), None for a numeric TARGET. ``domain`` is
    TARGET, the name from the URI: the identity a TLS server certificate is
    checked against (RFC 5922 §4), which is why it is not the SRV target.
    """

    transport: SipTransport
    remote: Endpoint
    hostname: str | None
    domain: str

    @property
    def target(self) -> Target:
        """The transaction layer's :class:`~natkit.sip.flow.Target`."""
        return Target(self.transport, self.remote)


@dataclass(frozen=True, slots=True)
class LocatorLimits:
    """Caps on what one plan takes from the DNS."""

    max_naptr_records: int = 16
    max_srv_records: int = 16
    max_addresses: int = 16
    """Per name and address family."""
    max_queries: int = 48
    max_targets: int = 32


def _normal_name(name: str) -> str:
    return name.strip("[]").rstrip(".").lower()


def _ip_or_none(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


_Plan = Generator["DnsQuery | ServerTarget", "tuple[DnsRecord, ...] | None", None]


class _Locator:
    """The stepping machinery shared by the client and server plans."""

    def __init__(
        self,
        *,
        domain: str,
        families: Sequence[Family],
        limits: LocatorLimits,
        rng: Rng | None,
    ) -> None:
        self.domain = domain
        self._families = tuple(families)
        self._limits = limits
        self._rng = rng or default_rng()
        self._problems: list[str] = []
        self._plan: _Plan | None = None
        self._reply: tuple[DnsRecord, ...] | None = None
        self._outstanding: DnsQuery | None = None
        self._queries = 0
        self._produced: set[tuple[SipTransport, Endpoint]] = set()

    @property
    def problems(self) -> tuple[str, ...]:
        """Why targets are missing: unusable input, failed lookups, limits hit."""
        return tuple(self._problems)

    @property
    def queries_made(self) -> int:
        return self._queries

    def next_step(self) -> DnsQuery | ServerTarget | None:
        """The next lookup to perform, the next target to try, or None when
        the plan is exhausted. A returned :class:`DnsQuery` must be answered
        with :meth:`receive_answer` before the next call."""
        if self._outstanding is not None:
            raise LocalProtocolError(f"answer {self._outstanding} first")
        if self._plan is None:
            self._plan = self._run()
        while True:
            reply, self._reply = self._reply, None
            try:
                step = self._plan.send(reply)
            except StopIteration:
                return None
            if isinstance(step, DnsQuery):
                if self._queries >= self._limits.max_queries:
                    self._stop(f"more than {self._limits.max_queries} DNS queries")
                    return None
                self._queries += 1
                self._outstanding = step
                return step
            key = (step.transport, step.remote)
            if key in self._produced:
                continue
            if len(self._produced) >= self._limits.max_targets:
                self._stop(f"more than {self._limits.max_targets} targets")
                return None
            self._produced.add(key)
            return step

    def receive_answer(self, records: Sequence[DnsRecord], *, failure: str | None = None) -> None:
        """Answer the outstanding query. ``records`` is empty when the name or
        its records do not exist; ``failure`` says the lookup itself failed
        (timeout, SERVFAIL), which the plan treats as an empty answer."""
        query = self._outstanding
        if query is None:
            raise LocalProtocolError("no DNS query is outstanding")
        self._outstanding = None
        if failure is not None:
            self._problems.append(f"{query.rdtype} {query.name}: {failure}")
        self._reply = tuple(records)

    def _stop(self, why: str) -> None:
        self._problems.append(why)
        if self._plan is not None:
            self._plan.close()

    def _run(self) -> _Plan:
        raise NotImplementedError  # pragma: no cover

    # building blocks of the plans

    def _numeric(self, ip: str, transport: SipTransport, port: int) -> _Plan:
        endpoint = Endpoint.of(ip, port)
        if endpoint.family not in self._families:
            self._problems.append(f"{ip}: address family not supported")
            return
        yield ServerTarget(transport, endpoint, None, self.domain)

    def _addresses(self, name: str, transport: SipTransport, port: int) -> _Plan:
        """AAAA/A of ``name`` in the caller's family order (§4.2)."""
        if not 0 < port <= 0xFFFF:
            return
        for family in self._families:
            rdtype = RecordType.AAAA if family is Family.IPV6 else RecordType.A
            answer = yield DnsQuery(name, rdtype)
            texts = [r for r in answer or () if isinstance(r, str)]
            for text in texts[: self._limits.max_addresses]:
                try:
                    endpoint = Endpoint.of(text, port)
                except ValueError:
                    continue
                if endpoint.family is family:
                    yield ServerTarget(transport, endpoint, name, self.domain)

    def _srv(self, name: str, transport: SipTransport, found: list[bool]) -> _Plan:
        """SRV of ``name``, each target's addresses in RFC 2782 order. Appends
        to ``found`` whether any SRV record (even "." = no service) came back."""
        answer = yield DnsQuery(name, RecordType.SRV)
        records = [r for r in answer or () if not isinstance(r, (str, NaptrRecord))][
            : self._limits.max_srv_records
        ]
        found.append(bool(records))
        ordered = order_srv(records, self._rng)
        if records and not ordered:
            self._problems.append(f"{name}: SRV says there is no such service")
        for record in ordered:
            ip = _ip_or_none(record.target)
            if ip is not None:  # not allowed by RFC 2782, but zones do it
                if 0 < record.port <= 0xFFFF:
                    yield from self._numeric(str(ip), transport, record.port)
                continue
            yield from self._addresses(_normal_name(record.target), transport, record.port)


class SipServerLocator(_Locator):
    """RFC 3263 §4: the targets for a request to a SIP or SIPS URI.

    ``transports`` are the transports the caller can use, in its order of
    preference; ``families`` the address families it can reach, preferred
    first. ``transport`` is the URI's ``;transport=`` value as written.
    """

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        maddr: str | None = None,
        transports: Sequence[SipTransport] = DEFAULT_TRANSPORTS,
        families: Sequence[Family] = _BOTH_FAMILIES,
        limits: LocatorLimits = LocatorLimits(),
        rng: Rng | None = None,
    ) -> None:
        target = _normal_name(maddr or host)
        super().__init__(domain=target, families=families, limits=limits, rng=rng)
        self.scheme = scheme.lower()
        self.port = port
        self.transport_param = transport.lower() if transport is not None else None
        self._supported = tuple(transports)

    @classmethod
    def for_uri(
        cls,
        uri: SipUri,
        *,
        transports: Sequence[SipTransport] = DEFAULT_TRANSPORTS,
        families: Sequence[Family] = _BOTH_FAMILIES,
        limits: LocatorLimits = LocatorLimits(),
        rng: Rng | None = None,
    ) -> SipServerLocator:
        """The locator for a parsed URI (a Request-URI or the top Route's URI)."""
        return cls(
            scheme=uri.scheme,
            host=uri.host,
            port=uri.port,
            transport=uri.transport,
            maddr=uri.maddr,
            transports=transports,
            families=families,
            limits=limits,
            rng=rng,
        )

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def _explicit_transport(self) -> SipTransport | None:
        """§4.1's first rule; raises ValueError for a transport natkit cannot
        use with this scheme (sips;transport=udp, sctp, unknown tokens)."""
        match self.transport_param, self.secure:
            case None, _:
                return None
            case "udp", False:
                return SipTransport.UDP
            case "tcp", secure:
                return SipTransport.TLS if secure else SipTransport.TCP
            case "tls", _:
                return SipTransport.TLS  # RFC 3261 deprecates it in sip: URIs; devices send it
            case "ws", secure:
                return SipTransport.WSS if secure else SipTransport.WS
            case "wss", _:
                return SipTransport.WSS
            case other, _:
                raise ValueError(f"transport {other} with a {self.scheme} URI")

    def _default_transport(self) -> SipTransport | None:
        """UDP for sip, TLS for sips (§4.1), or else the caller's first
        supported transport that the scheme allows."""
        preferred = SipTransport.TLS if self.secure else SipTransport.UDP
        if preferred in self._supported:
            return preferred
        for transport in self._supported:
            if transport.secure or not self.secure:
                return transport
        self._problems.append(f"no supported transport for a {self.scheme} URI")
        return None

    def _usable(self, transport: SipTransport) -> bool:
        return transport in self._supported and (transport.secure or not self.secure)

    def _naptr_choices(self, answer: tuple[DnsRecord, ...]) -> list[tuple[SipTransport, str]]:
        """§4.1: SIP NAPTR records with flag "s" and a supported service, in
        (order, preference) order. Every usable record is kept, not only the
        lowest order, so that a client can fail over from SIPS+D2T to SIP+D2T
        as RFC 3263's own example zone intends."""
        records = [r for r in answer if isinstance(r, NaptrRecord)]
        records = records[: self._limits.max_naptr_records]
        choices: list[tuple[SipTransport, str]] = []
        for record in sorted(records, key=lambda r: (r.order, r.preference)):
            transport = NAPTR_SERVICES.get(record.service.upper())
            replacement = _normal_name(record.replacement)
            if (
                record.flags.lower() == "s"
                and transport is not None
                and self._usable(transport)
                and replacement
            ):
                choices.append((transport, replacement))
        return choices

    def _run(self) -> _Plan:
        target = self.domain
        try:
            explicit = self._explicit_transport()
        except ValueError as exc:
            self._problems.append(str(exc))
            return
        if explicit is not None and explicit not in self._supported:
            self._problems.append(f"transport {explicit} is not supported")
            return
        ip = _ip_or_none(target)
        if ip is not None or self.port is not None:
            transport = explicit or self._default_transport()
            if transport is None:
                return
            port = self.port or DEFAULT_PORTS[transport]
            if ip is not None:
                yield from self._numeric(str(ip), transport, port)
            else:
                yield from self._addresses(target, transport, port)
            return
        found: list[bool] = []
        if explicit is not None:
            yield from self._srv(f"{SRV_SERVICES[explicit]}.{target}", explicit, found)
            if not any(found):
                yield from self._addresses(target, explicit, DEFAULT_PORTS[explicit])
            return
        answer = yield DnsQuery(target, RecordType.NAPTR)
        choices = self._naptr_choices(answer or ())
        if choices:
            for transport, replacement in choices:
                yield from self._srv(replacement, transport, found)
            fallback: SipTransport | None = choices[0][0]
        else:
            # §4.1: no NAPTR, so SRV for each supported transport, preferred first.
            for transport in self._supported:
                if self._usable(transport):
                    yield from self._srv(f"{SRV_SERVICES[transport]}.{target}", transport, found)
            fallback = None
        if not any(found):
            transport = fallback or self._default_transport()
            if transport is not None:
                yield from self._addresses(target, transport, DEFAULT_PORTS[transport])


class SipResponseLocator(_Locator):
    """Where a response goes when the request's connection or source failed.

    Over UDP, a Via with ``received`` and an ``rport`` value gives that
    address and port first (RFC 3581 §4). Then RFC 3261 §18.2.2: the
    ``received`` address with the sent-by port (or the transport's default);
    then RFC 3263 §5: a numeric sent-by
    as is; a name with a port by its A/AAAA records; a name without a port by
    SRV for the Via's transport (``_sips._tcp`` for TLS) and then A/AAAA at
    the default port. Sending to the request's source (RFC 3581 ``rport``)
    and over its connection is the transport layer's job and comes before
    this. WebSocket clients accept no connections (RFC 7118 §5), so a WS or
    WSS Via gives no targets.
    """

    def __init__(
        self,
        *,
        transport: SipTransport,
        host: str,
        port: int | None = None,
        received: str | None = None,
        rport: int | None = None,
        families: Sequence[Family] = _BOTH_FAMILIES,
        limits: LocatorLimits = LocatorLimits(),
        rng: Rng | None = None,
    ) -> None:
        super().__init__(domain=_normal_name(host), families=families, limits=limits, rng=rng)
        self.transport = transport
        self.port = port
        self.received = received
        self.rport = rport

    @classmethod
    def for_via(
        cls,
        via: Via,
        *,
        families: Sequence[Family] = _BOTH_FAMILIES,
        limits: LocatorLimits = LocatorLimits(),
        rng: Rng | None = None,
    ) -> SipResponseLocator:
        """The locator for a request's top Via. Raises ValueError for a Via
        transport natkit does not speak (SCTP, extensions)."""
        transport = SipTransport.from_via(via.transport)
        if transport is None:
            raise ValueError(f"Via transport {via.transport} is not supported")
        return cls(
            transport=transport,
            host=via.host,
            port=via.port,
            received=via.received,
            rport=via.rport,
            families=families,
            limits=limits,
            rng=rng,
        )

    def _run(self) -> _Plan:
        transport = self.transport
        if transport in (SipTransport.WS, SipTransport.WSS):
            self._problems.append("a WebSocket client accepts no new connections")
            return
        port = self.port or DEFAULT_PORTS[transport]
        received = _ip_or_none(self.received or "")
        if received is not None:
            if transport is SipTransport.UDP and self.rport is not None and self.rport > 0:
                yield from self._numeric(str(received), transport, self.rport)
            yield from self._numeric(str(received), transport, port)
        ip = _ip_or_none(self.domain)
        if ip is not None:
            yield from self._numeric(str(ip), transport, port)
        elif self.port is not None:
            yield from self._addresses(self.domain, transport, port)
        else:
            found: list[bool] = []
            yield from self._srv(f"{SRV_SERVICES[transport]}.{self.domain}", transport, found)
            if not any(found):
                yield from self._addresses(self.domain, transport, port)
