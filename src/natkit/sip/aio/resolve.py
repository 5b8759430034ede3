"""Locating SIP servers with real lookups: the asyncio driver of
:mod:`natkit.sip.resolve`.

:class:`SipResolver` runs a locator's plan against a :class:`DnsLookup` and
hands out targets as an async iterator, best first; the caller takes the
next one when a transaction to the previous one timed out or its transport
failed (RFC 3263 §4.3), so backup servers cost DNS queries only when used.

Two lookups exist: :class:`DnspythonLookup` (dnspython's async resolver, the
system's name servers) and :class:`StaticZone` (records from a dict, for
tests and for the simulated internet, which has no DNS servers).

Bounds: each lookup is cut off after ``lookup_timeout`` seconds and all of
one resolution after ``resolution_timeout`` (a timeout counts as an empty
answer and is reported if nothing is found); CNAME chains
longer than ``max_cname_chain`` are refused; the locator caps records, queries
and targets (:class:`~natkit.sip.resolve.LocatorLimits`).

Caching: this module keeps no cache of its own. :class:`DnspythonLookup`
gives a resolver that has none dnspython's LRU cache, which keeps positive
answers for their TTL and negative ones (NXDOMAIN, no records) for the SOA
minimum (RFC 2308). Negative answers are the common case here: most domains
publish no NAPTR and only some SRV records, so without negative caching each
request to such a domain costs up to five extra queries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from natkit.addr import Family
from natkit.errors import TransportError
from natkit.net.dns import SrvRecord
from natkit.rng import Rng, default_rng
from natkit.sip.flow import SipTransport
from natkit.sip.headers import Via
from natkit.sip.resolve import (
    DEFAULT_TRANSPORTS,
    DnsQuery,
    DnsRecord,
    LocatorLimits,
    NaptrRecord,
    ServerTarget,
    SipResponseLocator,
    SipServerLocator,
)
from natkit.sip.uri import SipUri

__all__ = [
    "DnsLookup",
    "DnspythonLookup",
    "ResolverConfig",
    "SipResolver",
    "StaticZone",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class DnsLookup(Protocol):
    """One DNS lookup: the records of ``query``, ``[]`` when the name or
    records of that type do not exist; :class:`TransportError` when the
    lookup failed (SERVFAIL, no reachable name server, CNAME loop)."""

    async def lookup(self, query: DnsQuery) -> Sequence[DnsRecord]: ...


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _record(rdata: dns.rdata.Rdata) -> DnsRecord | None:
    """Our record type for a dnspython rdata (None for other types)."""
    match rdata.rdtype:
        case dns.rdatatype.A | dns.rdatatype.AAAA:
            return str(rdata.address)  # type: ignore[attr-defined]
        case dns.rdatatype.SRV:
            target = rdata.target  # type: ignore[attr-defined]
            return SrvRecord(
                rdata.priority,  # type: ignore[attr-defined]
                rdata.weight,  # type: ignore[attr-defined]
                rdata.port,  # type: ignore[attr-defined]
                "." if target == dns.name.root else _text(target),
            )
        case dns.rdatatype.NAPTR:
            return NaptrRecord(
                order=rdata.order,  # type: ignore[attr-defined]
                preference=rdata.preference,  # type: ignore[attr-defined]
                flags=rdata.flags.decode("ascii", "replace"),  # type: ignore[attr-defined]
                service=rdata.service.decode("ascii", "replace"),  # type: ignore[attr-defined]
                regexp=rdata.regexp.decode("utf-8", "replace"),  # type: ignore[attr-defined]
                replacement=_text(rdata.replacement),  # type: ignore[attr-defined]
            )
    return None


class DnspythonLookup:
    """:class:`DnsLookup` on ``dns.asyncresolver``. Names are made absolute
    (no search-list suffixes). Without ``resolver``, the system's
    configuration is used. A resolver without a cache gets an LRU cache of
    ``cache_size`` answers, positive and negative (``cache_size=0``: none)."""

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        max_cname_chain: int = 8,
        cache_size: int = 1024,
    ) -> None:
        if resolver is None:
            resolver = dns.asyncresolver.Resolver()
        if resolver.cache is None and cache_size > 0:
            resolver.cache = dns.resolver.LRUCache(cache_size)
        self.resolver = resolver
        self.max_cname_chain = max_cname_chain

    async def lookup(self, query: DnsQuery) -> list[DnsRecord]:
        try:
            name = dns.name.from_text(query.name)
            answer = await self.resolver.resolve(
                name, dns.rdatatype.from_text(query.rdtype), raise_on_no_answer=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise TransportError(f"DNS {query.rdtype} {query.name}: {exc}") from exc
        if len(answer.chaining_result.cnames) > self.max_cname_chain:
            raise TransportError(
                f"DNS {query.name}: CNAME chain longer than {self.max_cname_chain}"
            )
        if answer.rrset is None:
            return []
        return [r for r in map(_record, answer.rrset) if r is not None]


class StaticZone:
    """:class:`DnsLookup` answering from a dict ``{(name, type): [rdata text]}``
    in zone-file syntax, e.g. ``("example.org", "NAPTR"): ['10 50 "s" "SIP+D2T"
    "" _sip._tcp.example.org.']``; ``(name, "CNAME")`` entries are followed.
    Names in ``failing`` raise :class:`TransportError`, names in ``silent``
    never answer (for timeout tests). ``queries`` records what was asked."""

    def __init__(
        self,
        records: Mapping[tuple[str, str], Sequence[str]],
        *,
        failing: Sequence[str] = (),
        silent: Sequence[str] = (),
        max_cname_chain: int = 8,
    ) -> None:
        self._records: dict[tuple[str, str], list[DnsRecord]] = {}
        self._cnames: dict[str, str] = {}
        for (name, rdtype), texts in records.items():
            key = name.rstrip(".").lower()
            if rdtype.upper() == "CNAME":
                self._cnames[key] = texts[0].rstrip(".").lower()
                continue
            parsed = [
                _record(dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)) for text in texts
            ]
            self._records[(key, rdtype.upper())] = [r for r in parsed if r is not None]
        self._failing = {n.rstrip(".").lower() for n in failing}
        self._silent = {n.rstrip(".").lower() for n in silent}
        self.max_cname_chain = max_cname_chain
        self.queries: list[DnsQuery] = []

    async def lookup(self, query: DnsQuery) -> list[DnsRecord]:
        self.queries.append(query)
        name = query.name.rstrip(".").lower()
        for _ in range(self.max_cname_chain + 1):
            if name in self._silent:
                await asyncio.Event().wait()
            if name in self._failing:
                raise TransportError(f"SERVFAIL {query.rdtype} {name}")
            if name not in self._cnames:
                return list(self._records.get((name, str(query.rdtype)), ()))
            name = self._cnames[name]
        raise TransportError(f"DNS {query.name}: CNAME chain longer than {self.max_cname_chain}")


@dataclass(frozen=True, slots=True)
class ResolverConfig:
    """How :class:`SipResolver` locates servers."""

    transports: tuple[SipTransport, ...] = DEFAULT_TRANSPORTS
    """Transports this element can use, preferred first."""
    families: tuple[Family, ...] = (Family.IPV6, Family.IPV4)
    """Address families this element can reach, preferred first."""
    lookup_timeout: float = 2.0
    """Seconds one DNS lookup may take; then it counts as an empty answer."""
    resolution_timeout: float = 8.0
    """Seconds all lookups of one resolution may take together (a plan may
    need a dozen lookups; RFC 3261 Timer B gives a whole transaction 32 s).
    Lookups after that fail at once, so the targets known so far remain."""
    limits: LocatorLimits = LocatorLimits()  # noqa: RUF009 (frozen, so sharing is safe)


class SipResolver:
    """RFC 3263 server location over a :class:`DnsLookup`.

    Each ``*targets*`` method returns an async generator of
    :class:`~natkit.sip.resolve.ServerTarget`, best first (``aclose()`` it
    when done before the end); it raises
    :class:`TransportError` (naming the failed lookups) when it ends without
    having produced any target.
    """

    def __init__(
        self,
        lookup: DnsLookup | None = None,
        *,
        config: ResolverConfig = ResolverConfig(),
        rng: Rng | None = None,
    ) -> None:
        self.lookup = lookup if lookup is not None else DnspythonLookup()
        self.config = config
        self.rng = rng or default_rng()

    def targets(
        self,
        *,
        scheme: str,
        host: str,
        port: int | None = None,
        transport: str | None = None,
        maddr: str | None = None,
    ) -> AsyncGenerator[ServerTarget, None]:
        """Targets for a request to ``scheme:host[:port];transport=;maddr=`` (RFC 3263 §4)."""
        locator = SipServerLocator(
            scheme=scheme,
            host=host,
            port=port,
            transport=transport,
            maddr=maddr,
            transports=self.config.transports,
            families=self.config.families,
            limits=self.config.limits,
            rng=self.rng,
        )
        return self._drive(locator, f"{scheme}:{maddr or host}")

    def targets_for_uri(self, uri: SipUri) -> AsyncGenerator[ServerTarget, None]:
        """Targets for a request to ``uri`` (RFC 3263 §4)."""
        return self.targets(
            scheme=uri.scheme,
            host=uri.host,
            port=uri.port,
            transport=uri.transport,
            maddr=uri.maddr,
        )

    def response_targets(self, via: Via) -> AsyncGenerator[ServerTarget, None]:
        """Where else a response may go when its request's source failed
        (RFC 3261 §18.2.2, RFC 3263 §5)."""
        try:
            locator = SipResponseLocator.for_via(
                via, families=self.config.families, limits=self.config.limits, rng=self.rng
            )
        except ValueError as exc:
            raise TransportError(str(exc)) from exc
        return self._drive(locator, f"Via {via.host}")

    async def resolve(self, uri: SipUri) -> list[ServerTarget]:
        """Every target for ``uri`` at once (all lookups are done up front)."""
        return [target async for target in self.targets_for_uri(uri)]

    async def _drive(
        self, locator: SipServerLocator | SipResponseLocator, what: str
    ) -> AsyncGenerator[ServerTarget, None]:
        produced = False
        deadline = asyncio.get_running_loop().time() + self.config.resolution_timeout
        while (step := locator.next_step()) is not None:
            if isinstance(step, ServerTarget):
                produced = True
                yield step
                continue
            records = await self._lookup(step, locator, deadline)
            if records is not None:
                locator.receive_answer(records)
        if not produced:
            why = "; ".join(locator.problems) or "no DNS records"
            raise TransportError(f"no SIP server found for {what}: {why}")

    async def _lookup(
        self,
        query: DnsQuery,
        locator: SipServerLocator | SipResponseLocator,
        deadline: float,
    ) -> Sequence[DnsRecord] | None:
        """The records, or None after reporting the failure to the locator."""
        left = deadline - asyncio.get_running_loop().time()
        timeout = min(self.config.lookup_timeout, left)
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(timeout):
                return await self.lookup.lookup(query)
        except TimeoutError:
            failure = f"no answer within {max(timeout, 0.0):g} s"
        except TransportError as exc:
            failure = str(exc)
        log.info("DNS %s %s failed: %s", query.rdtype, query.name, failure)
        locator.receive_answer((), failure=failure)
        return None
