"""RFC 3263 server location with lookups: SipResolver over a static zone, a
virtual-clock timeout, and dnspython against a DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncresolver
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from natkit.addr import Endpoint, Family
from natkit.errors import TransportError
from natkit.net.dns import SrvRecord
from natkit.net.sim import run_virtual
from natkit.sip.aio.resolve import DnspythonLookup, ResolverConfig, SipResolver, StaticZone
from natkit.sip.flow import SipTransport
from natkit.sip.headers import Via
from natkit.sip.resolve import DnsQuery, NaptrRecord, RecordType, ServerTarget
from natkit.sip.uri import SipUri, parse_uri

UDP, TCP, TLS = SipTransport.UDP, SipTransport.TCP, SipTransport.TLS

RECORDS: dict[tuple[str, str], list[str]] = {
    ("example.com", "NAPTR"): [
        '50 50 "s" "SIPS+D2T" "" _sips._tcp.example.com.',
        '90 50 "s" "SIP+D2T" "" _sip._tcp.example.com.',
        '100 50 "s" "SIP+D2U" "" _sip._udp.example.com.',
    ],
    ("_sips._tcp.example.com", "SRV"): ["0 0 5061 tls.example.com."],
    ("_sip._tcp.example.com", "SRV"): ["0 0 5060 tcp.example.com."],
    ("_sip._udp.example.com", "SRV"): ["0 0 5060 udp1.example.com.", "1 0 5060 udp2.example.com."],
    ("tls.example.com", "A"): ["192.0.2.1"],
    ("tcp.example.com", "A"): ["192.0.2.2"],
    ("udp1.example.com", "A"): ["192.0.2.3"],
    ("udp1.example.com", "AAAA"): ["2001:db8::3"],
    ("udp2.example.com", "CNAME"): ["udp1.example.com."],
    ("alias.test", "CNAME"): ["hop1.test."],
    ("hop1.test", "CNAME"): ["real.test."],
    ("real.test", "A"): ["198.51.100.1"],
    ("client.test", "A"): ["198.51.100.9"],
}


def uri(text: str) -> SipUri:
    parsed = parse_uri(text)
    assert isinstance(parsed, SipUri)
    return parsed


def hops(targets: list[ServerTarget]) -> list[tuple[SipTransport, str, int]]:
    return [(t.transport, t.remote.host, t.remote.port) for t in targets]


def resolver(zone: StaticZone, **config: object) -> SipResolver:
    return SipResolver(zone, config=ResolverConfig(**config), rng=random.Random(3))  # type: ignore[arg-type]


async def test_static_zone_parses_zone_file_records() -> None:
    zone = StaticZone(RECORDS)
    assert await zone.lookup(DnsQuery("Example.COM.", RecordType.NAPTR)) == [
        NaptrRecord(50, 50, "s", "SIPS+D2T", "", "_sips._tcp.example.com"),
        NaptrRecord(90, 50, "s", "SIP+D2T", "", "_sip._tcp.example.com"),
        NaptrRecord(100, 50, "s", "SIP+D2U", "", "_sip._udp.example.com"),
    ]
    assert await zone.lookup(DnsQuery("_sips._tcp.example.com", RecordType.SRV)) == [
        SrvRecord(0, 0, 5061, "tls.example.com")
    ]
    assert await zone.lookup(DnsQuery("missing.test", RecordType.A)) == []


async def test_resolves_naptr_srv_and_addresses_in_order() -> None:
    found = await resolver(StaticZone(RECORDS), transports=(UDP, TCP, TLS)).resolve(
        uri("sip:example.com")
    )
    # udp2 is a CNAME of udp1: the same addresses are not offered twice
    assert hops(found) == [
        (TLS, "192.0.2.1", 5061),
        (TCP, "192.0.2.2", 5060),
        (UDP, "2001:db8::3", 5060),
        (UDP, "192.0.2.3", 5060),
    ]
    assert found[0].domain == "example.com"
    assert found[0].hostname == "tls.example.com"


async def test_backup_targets_are_looked_up_only_on_failover() -> None:
    zone = StaticZone(RECORDS)
    targets = resolver(zone, transports=(UDP, TCP, TLS)).targets_for_uri(uri("sip:example.com"))
    first = await anext(targets)
    assert first.remote == Endpoint("192.0.2.1", 5061)
    asked = {q.name for q in zone.queries}
    assert "_sip._tcp.example.com" not in asked
    # the transaction to the first target timed out (§4.3): take the next one
    second = await anext(targets)
    assert (second.transport, second.remote) == (TCP, Endpoint("192.0.2.2", 5060))
    await targets.aclose()


async def test_cname_chains_are_followed_within_the_limit() -> None:
    found = await resolver(StaticZone(RECORDS)).resolve(uri("sip:alias.test:5060"))
    assert hops(found) == [(UDP, "198.51.100.1", 5060)]
    with pytest.raises(TransportError, match="CNAME"):
        await resolver(StaticZone(RECORDS, max_cname_chain=1)).resolve(uri("sip:alias.test:5060"))


async def test_nothing_found_raises_with_the_reasons() -> None:
    with pytest.raises(TransportError, match="SERVFAIL"):
        await resolver(StaticZone(RECORDS, failing=["broken.test"])).resolve(
            uri("sip:broken.test:5060")
        )
    with pytest.raises(TransportError, match=r"no SIP server found for sip:missing\.test"):
        await resolver(StaticZone(RECORDS)).resolve(uri("sip:missing.test"))
    with pytest.raises(TransportError, match="udp with a sips URI"):
        await resolver(StaticZone(RECORDS)).resolve(uri("sips:192.0.2.1;transport=udp"))


async def test_a_failed_lookup_does_not_stop_the_others() -> None:
    """A SERVFAIL on NAPTR counts as "no NAPTR records": SRV is tried next."""
    records = dict(RECORDS)
    records[("_sip._udp.flaky.test", "SRV")] = ["0 0 5070 tcp.example.com."]
    zone = StaticZone(records, failing=["flaky.test"])
    found = await resolver(zone, transports=(UDP,)).resolve(uri("sip:flaky.test"))
    assert hops(found) == [(UDP, "192.0.2.2", 5070)]


def test_each_lookup_is_bounded_by_the_timeout() -> None:
    """A name server that never answers the NAPTR query costs lookup_timeout
    (virtual) seconds, then resolution goes on with SRV."""
    records = dict(RECORDS)
    records[("_sip._udp.slow.test", "SRV")] = ["0 0 5070 tcp.example.com."]

    async def main() -> tuple[list[ServerTarget], float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        zone = StaticZone(records, silent=["slow.test"])
        found = await resolver(zone, transports=(UDP,), lookup_timeout=1.5).resolve(
            uri("sip:slow.test")
        )
        return found, loop.time() - start

    found, elapsed = run_virtual(main)
    assert hops(found) == [(UDP, "192.0.2.2", 5070)]
    assert elapsed == pytest.approx(1.5)


def test_a_whole_resolution_is_bounded_too() -> None:
    """Every name server silent: NAPTR and the first SRV query use up the 3 s
    budget, the remaining lookups fail at once, and the error says why."""

    async def main() -> tuple[str, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        zone = StaticZone({}, silent=["dead.test", "_sip._udp.dead.test", "_sip._tcp.dead.test"])
        sip = resolver(zone, transports=(UDP, TCP), lookup_timeout=2.0, resolution_timeout=3.0)
        try:
            await sip.resolve(uri("sip:dead.test"))
        except TransportError as exc:
            return str(exc), loop.time() - start
        raise AssertionError("resolved a dead zone")

    message, elapsed = run_virtual(main)
    assert elapsed == pytest.approx(3.0)
    assert "no answer within 2 s" in message
    assert "no answer within 0 s" in message


async def test_response_targets_for_a_via() -> None:
    via = Via("UDP", "client.test", 5062, (("received", "203.0.113.4"),))
    found = [t async for t in resolver(StaticZone(RECORDS)).response_targets(via)]
    assert hops(found) == [(UDP, "203.0.113.4", 5062), (UDP, "198.51.100.9", 5062)]
    with pytest.raises(TransportError, match="SCTP"):
        resolver(StaticZone(RECORDS)).response_targets(Via("SCTP", "client.test", None))


async def test_ipv4_only_configuration() -> None:
    found = await resolver(StaticZone(RECORDS), transports=(UDP,), families=(Family.IPV4,)).resolve(
        uri("sip:example.com")
    )
    assert hops(found) == [(UDP, "192.0.2.3", 5060)]


# A real DNS server on loopback (dnspython builds the answers), so that
# DnspythonLookup's conversion, NXDOMAIN, CNAME and cache handling are real.

SERVED: dict[tuple[str, str], list[str]] = {
    ("example.test.", "NAPTR"): ['10 10 "S" "SIP+D2T" "" _sip._tcp.example.test.'],
    ("_sip._tcp.example.test.", "SRV"): ["0 0 5080 sip.example.test."],
    ("sip.example.test.", "CNAME"): ["host.example.test."],
    ("host.example.test.", "A"): ["192.0.2.80"],
    ("host.example.test.", "AAAA"): ["2001:db8::80"],
    ("loop1.test.", "CNAME"): ["loop2.test."],
    ("loop2.test.", "CNAME"): ["loop3.test."],
    ("loop3.test.", "A"): ["192.0.2.3"],
}
SOA = "ns.test. hostmaster.test. 1 3600 600 86400 300"


class _DnsServer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        self.asked.append((name, rdtype))
        while (name, "CNAME") in SERVED:
            target = SERVED[(name, "CNAME")]
            response.answer.append(
                dns.rrset.from_text_list(dns.name.from_text(name), 60, "IN", "CNAME", target)
            )
            name = target[0]
        if (name, rdtype) in SERVED:
            response.answer.append(
                dns.rrset.from_text_list(
                    dns.name.from_text(name), 60, "IN", rdtype, SERVED[(name, rdtype)]
                )
            )
        else:
            if not any(n == name for n, _ in SERVED):
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(
                dns.rrset.from_text_list(dns.name.from_text("test."), 60, "IN", "SOA", [SOA])
            )
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def server() -> AsyncIterator[tuple[_DnsServer, dns.asyncresolver.Resolver]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        _DnsServer, local_addr=("127.0.0.1", 0)
    )
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = transport.get_extra_info("sockname")[1]
    res.lifetime = 2.0
    try:
        yield protocol, res
    finally:
        transport.close()


async def test_dnspython_lookup_against_a_loopback_server(
    server: tuple[_DnsServer, dns.asyncresolver.Resolver],
) -> None:
    _, res = server
    sip = SipResolver(DnspythonLookup(res), config=ResolverConfig(transports=(TCP,)))
    found = await sip.resolve(uri("sip:example.test"))
    assert hops(found) == [(TCP, "2001:db8::80", 5080), (TCP, "192.0.2.80", 5080)]
    assert found[0].hostname == "sip.example.test"


async def test_dnspython_lookup_maps_nxdomain_and_nodata_to_empty(
    server: tuple[_DnsServer, dns.asyncresolver.Resolver],
) -> None:
    _, res = server
    lookup = DnspythonLookup(res)
    assert await lookup.lookup(DnsQuery("missing.test", RecordType.NAPTR)) == []
    assert await lookup.lookup(DnsQuery("host.example.test", RecordType.SRV)) == []
    assert await lookup.lookup(DnsQuery("loop1.test", RecordType.A)) == ["192.0.2.3"]


async def test_dnspython_lookup_refuses_long_cname_chains(
    server: tuple[_DnsServer, dns.asyncresolver.Resolver],
) -> None:
    _, res = server
    with pytest.raises(TransportError, match="CNAME"):
        await DnspythonLookup(res, max_cname_chain=1).lookup(DnsQuery("loop1.test", RecordType.A))


async def test_dnspython_lookup_caches_negative_answers(
    server: tuple[_DnsServer, dns.asyncresolver.Resolver],
) -> None:
    protocol, res = server
    lookup = DnspythonLookup(res)
    for _ in range(3):
        assert await lookup.lookup(DnsQuery("missing.test", RecordType.NAPTR)) == []
        assert await lookup.lookup(DnsQuery("host.example.test", RecordType.NAPTR)) == []
    assert protocol.asked.count(("missing.test.", "NAPTR")) == 1
    assert protocol.asked.count(("host.example.test.", "NAPTR")) == 1


async def test_dnspython_lookup_timeout_is_a_transport_error() -> None:
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = 9  # discard: nothing answers
    res.lifetime = 0.2
    with pytest.raises(TransportError):
        await DnspythonLookup(res).lookup(DnsQuery("example.test", RecordType.A))
