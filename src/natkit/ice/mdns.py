"""mDNS names for ICE host candidates (RFC 6762; draft-ietf-mmusic-mdns-ice-candidates), sans-IO.

Theory of operation
-------------------
Browsers hide their host addresses behind random ``<uuid>.local`` names.
To pair with such a candidate an agent resolves the name with a *one-shot*
multicast DNS query (RFC 6762 §5.1): :class:`MdnsResolver` sends one
question per name (A or AAAA) to 224.0.0.251:5353 (or ff02::fb) from an
ordinary ephemeral port, so responders answer it as a legacy unicast query,
straight back to that port with the query's ID (§6.7), and with the QU bit
set (§5.4) for responders that do not do legacy unicast; answers sent to the
group instead reach the driver's group listener (the core takes an answer
for a pending name from either socket); it asks again after
``retransmit`` seconds and gives up after ``timeout``
(:class:`NameUnresolved`: the candidate is dropped, as the draft says,
§3.2). Answers are taken from the answer and additional sections, with or
without the cache-flush bit (§10.2). Address records of ``.local`` names
not asked (announcements, §8.3) are cached for their TTL, bounded, and
answer a later question at once.

:class:`MdnsResponder` is the other half: natkit offering its own host
candidates as mDNS names (``new_mdns_name`` draws a version-4 UUID from the
config's rng, as the draft's §3.1.1 asks). It answers A/AAAA/ANY questions for
its names: legacy unicast queries (source port not 5353) unicast to their
source, echoing the ID and question, TTL at most 10 s (§6.7); others to the
multicast group, or unicast when the question has the QU bit (§5.4).
Malformed packets are dropped.

Messages are built and parsed with dnspython; nothing here opens a socket
(the asyncio drivers are :mod:`natkit.ice.aio.mdns`).
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from natkit.addr import Datagram, Endpoint, canonical_ip
from natkit.rng import Rng, default_rng

__all__ = [
    "MDNS_GROUP_V4",
    "MDNS_GROUP_V6",
    "MDNS_PORT",
    "MdnsEvent",
    "MdnsResolver",
    "MdnsResolverConfig",
    "MdnsResponder",
    "NameResolved",
    "NameUnresolved",
    "is_mdns_name",
    "new_mdns_name",
]

MDNS_PORT = 5353
MDNS_GROUP_V4 = Endpoint("224.0.0.251", MDNS_PORT)
MDNS_GROUP_V6 = Endpoint("ff02::fb", MDNS_PORT)
_MAX_PACKET = 9000  # RFC 6762 §17: mDNS messages up to 9000 bytes
_LEGACY_TTL = 10  # §6.7: legacy unicast answers carry TTL <= 10 s
_HOST_TTL = 120  # §10: host records' recommended TTL
_CACHE_FLUSH = 0x8000
_QU = 0x8000
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


def is_mdns_name(name: str) -> bool:
    """A ``.local`` name (RFC 6762 §3), the only kind resolved by mDNS."""
    return name.rstrip(".").lower().endswith(".local")


def new_mdns_name(rng: Rng) -> str:
    """A random ``<uuid4>.local`` name (draft-ietf-mmusic-mdns-ice-candidates §3.1.1)."""
    return f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.local"


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def _addresses(msg: dns.message.Message) -> list[tuple[str, str, int]]:
    """``(name, ip, ttl)`` of the A/AAAA records in the answer and additional
    sections (the cache-flush bit ignored, RFC 6762 §10.2)."""
    out: list[tuple[str, str, int]] = []
    for rrset in (*msg.answer, *msg.additional):
        if rrset.rdtype not in _ADDRESS_TYPES or rrset.rdclass & ~_CACHE_FLUSH != 1:
            continue
        size = 4 if rrset.rdtype == dns.rdatatype.A else 16
        for rd in rrset:
            raw = getattr(rd, "data", None)
            text: str | None = getattr(rd, "address", None)
            if isinstance(raw, bytes) and len(raw) == size:
                text = str(ipaddress.ip_address(raw))
            if text is not None:
                out.append((_key(rrset.name.to_text()), canonical_ip(text), rrset.ttl))
    return out


def _parse(data: bytes) -> dns.message.Message | None:
    if len(data) > _MAX_PACKET:
        return None
    try:
        # continue_on_error: Chromium's answers carry an NSEC record whose
        # next-domain name is compressed (RFC 3845 §2.1.1 forbids it), which
        # dnspython refuses; the address records before it are still good.
        return dns.message.from_wire(data, ignore_trailing=True, continue_on_error=True)
    except Exception:  # untrusted bytes through a third-party parser: drop, never raise
        return None


# -- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NameResolved:
    """``name`` is at ``address`` (the first answer that came): an AAAA
    record when ``ipv6``, an A record otherwise."""

    name: str
    address: str
    ipv6: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NameUnresolved:
    """No responder answered the A (AAAA when ``ipv6``) question for
    ``name`` within the timeout."""

    name: str
    ipv6: bool = False


MdnsEvent = NameResolved | NameUnresolved


# -- the resolver ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MdnsResolverConfig:
    """RFC 6762 §5.1 leaves one-shot timing to the querier: ask, ask again
    after ``retransmit``, give up at ``timeout`` (browsers' peers use a
    few seconds). ``group`` is where questions go; ``unicast_response``
    sets the QU bit of the question (§5.4: unicast answers requested; a
    responder that answers by multicast anyway, as Chromium's does, is
    heard by the driver's group listener)."""

    group: Endpoint = MDNS_GROUP_V4
    unicast_response: bool = True  # the QU bit (§5.4)
    timeout: float = 3.0
    retransmit: float = 1.0
    max_pending: int = 256  # names being resolved at once (a peer may send many)
    cache_size: int = 256  # announced records kept (§8.3, §10), oldest dropped first
    rng: Rng = field(default_factory=default_rng)


@dataclass(slots=True)
class _Query:
    name: str
    rdtype: dns.rdatatype.RdataType
    query_id: int
    deadline: float
    resend_at: float | None


class MdnsResolver:
    """One-shot mDNS resolution of ``.local`` names (see the module docstring)."""

    def __init__(self, config: MdnsResolverConfig | None = None) -> None:
        self.config = config or MdnsResolverConfig()
        self._pending: dict[tuple[str, bool], _Query] = {}
        """Queries by (name, ipv6): the A and AAAA questions of one name are
        separate queries (RFC 6762 §5: a question is a name and a type)."""
        self._cache: dict[tuple[str, bool], tuple[str, float]] = {}
        self._out: list[Datagram] = []
        self._events: deque[MdnsEvent] = deque()

    def resolve(self, name: str, *, now: float, ipv6: bool = False) -> None:
        """Ask for ``name``'s address (AAAA when ``ipv6``); the answer is a
        :class:`NameResolved` or :class:`NameUnresolved` event. A name not
        under ``.local`` or over the pending limit is unresolved at once.
        The A and the AAAA question of one name are independent queries."""
        key = _key(name)
        if (key, ipv6) in self._pending:
            return
        if not is_mdns_name(key) or len(self._pending) >= self.config.max_pending:
            self._events.append(NameUnresolved(name=key, ipv6=ipv6))
            return
        try:
            dns.name.from_text(key + ".")
        except dns.exception.DNSException:
            self._events.append(NameUnresolved(name=key, ipv6=ipv6))
            return
        cached = self._cache.get((key, ipv6))
        if cached is not None and now < cached[1]:
            self._events.append(NameResolved(name=key, address=cached[0], ipv6=ipv6))
            return
        cfg = self.config
        query = _Query(
            name=key,
            rdtype=dns.rdatatype.AAAA if ipv6 else dns.rdatatype.A,
            query_id=cfg.rng.getrandbits(16),
            deadline=now + cfg.timeout,
            resend_at=now + cfg.retransmit if cfg.retransmit < cfg.timeout else None,
        )
        self._pending[(key, ipv6)] = query
        self._send(query)

    def _send(self, query: _Query) -> None:
        rdclass = dns.rdataclass.RdataClass.make(
            dns.rdataclass.IN | (_QU if self.config.unicast_response else 0)
        )
        msg = dns.message.make_query(query.name + ".", query.rdtype, rdclass=rdclass)
        msg.id = query.query_id  # echoed by legacy unicast answers (§6.7)
        msg.flags = 0
        self._out.append(Datagram(msg.to_wire(), self.config.group))

    def receive_datagram(self, data: bytes, remote: Endpoint, *, now: float) -> None:
        """A datagram on the querier's or the group's socket: answers for
        pending names resolve them; other ``.local`` address records (a
        responder's announcements, §8.3, or answers to others' questions)
        are cached for their TTL (§10; TTL 0 is a goodbye, §10.1), so a name
        announced before it is asked for resolves at once. An A record
        answers the name's A question only, an AAAA record its AAAA one."""
        del remote
        msg = _parse(data)
        if msg is None or not msg.flags & dns.flags.QR:
            return
        for name, address, ttl in _addresses(msg):
            key = (name, ":" in address)
            query = self._pending.pop(key, None)
            if query is not None:
                self._events.append(NameResolved(name=name, address=address, ipv6=key[1]))
            if is_mdns_name(name):
                self._remember(key, address, ttl, now)

    def _remember(self, key: tuple[str, bool], address: str, ttl: int, now: float) -> None:
        cache = self._cache
        cache.pop(key, None)
        if ttl <= 0 or self.config.cache_size < 1:
            return
        while len(cache) >= self.config.cache_size:
            del cache[next(iter(cache))]
        cache[key] = (address, now + ttl)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [q.resend_at or q.deadline for q in self._pending.values()]
        return min(times) if times else None

    def handle_timer(self, *, now: float) -> None:
        for key, query in list(self._pending.items()):
            if now >= query.deadline:
                del self._pending[key]
                self._events.append(NameUnresolved(name=key[0], ipv6=key[1]))
            elif query.resend_at is not None and now >= query.resend_at:
                query.resend_at = None
                self._send(query)

    def next_event(self) -> MdnsEvent | None:
        return self._events.popleft() if self._events else None


# -- the responder ------------------------------------------------------------------


class MdnsResponder:
    """Answers mDNS questions for our own names (see the module docstring).

    ``names`` maps ``<uuid>.local`` to the IP it stands for; ``group`` is
    where multicast answers go."""

    def __init__(self, names: Mapping[str, str] | None = None, *, group: Endpoint = MDNS_GROUP_V4):
        self.group = group
        self._names: dict[str, str] = {}
        self._out: list[Datagram] = []
        for name, ip in (names or {}).items():
            self.register(name, ip)

    @property
    def names(self) -> dict[str, str]:
        return dict(self._names)

    def register(self, name: str, ip: str) -> None:
        """Answer for ``name`` with ``ip`` from now on."""
        if not is_mdns_name(name):
            raise ValueError(f"not an mDNS name: {name!r}")
        self._names[_key(name)] = canonical_ip(ip)

    def unregister(self, name: str) -> None:
        self._names.pop(_key(name), None)

    def receive_datagram(self, data: bytes, remote: Endpoint, *, now: float) -> None:
        """A datagram on the responder's socket: answer questions for our names."""
        del now
        msg = _parse(data)
        if msg is None or msg.flags & dns.flags.QR or msg.opcode() != 0:
            return
        legacy = remote.port != MDNS_PORT
        unicast = legacy
        answers: list[dns.rrset.RRset] = []
        for question in msg.question:
            ip = self._names.get(_key(question.name.to_text()))
            if ip is None:
                continue
            if question.rdclass & _QU:
                unicast = True
            rdtype = dns.rdatatype.AAAA if ":" in ip else dns.rdatatype.A
            if question.rdtype not in (rdtype, dns.rdatatype.ANY):
                continue
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, rdtype)
            rrset.add(
                dns.rdata.from_text(dns.rdataclass.IN, rdtype, ip),
                ttl=_LEGACY_TTL if legacy else _HOST_TTL,
            )
            answers.append(rrset)
        if not answers:
            return
        response = dns.message.Message(id=msg.id if legacy else 0)
        response.flags = dns.flags.QR | dns.flags.AA
        if legacy:
            response.question = list(msg.question)  # §6.7: repeat the question
        response.answer = answers
        self._out.append(Datagram(response.to_wire(), remote if unicast else self.group))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now
