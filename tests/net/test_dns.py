"""STUN server location (RFC 8489 §8) against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from natkit.addr import Endpoint, Transport
from natkit.errors import TransportError
from natkit.net.dns import SrvRecord, order_srv, resolve_stun, split_host_port

ZONE: dict[tuple[str, str], list[str]] = {
    ("_stun._udp.srv.test.", "SRV"): ["10 0 3478 a.srv.test.", "20 0 3479 b.srv.test."],
    ("_stun._tcp.srv.test.", "SRV"): ["10 0 3480 a.srv.test."],
    ("_stuns._tcp.srv.test.", "SRV"): ["10 0 5349 a.srv.test."],
    ("a.srv.test.", "A"): ["192.0.2.10"],
    ("a.srv.test.", "AAAA"): ["2001:db8::10"],
    ("b.srv.test.", "A"): ["192.0.2.11"],
    ("plain.test.", "A"): ["198.51.100.5"],
    ("_stun._udp.gone.test.", "SRV"): ["0 0 0 ."],
}


class _DnsServer(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        key = (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        records = ZONE.get(key)
        if records:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 60, "IN", key[1], records)
            )
        elif not any(name == key[0] for name, _ in ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def resolver() -> AsyncIterator[dns.asyncresolver.Resolver]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_DnsServer, local_addr=("127.0.0.1", 0))
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = transport.get_extra_info("sockname")[1]
    res.lifetime = 2.0
    try:
        yield res
    finally:
        transport.close()


async def test_srv_records_ordered_by_priority(resolver: dns.asyncresolver.Resolver) -> None:
    found = await resolve_stun("srv.test", resolver=resolver, rng=random.Random(1))
    assert found == [
        Endpoint("2001:db8::10", 3478),
        Endpoint("192.0.2.10", 3478),
        Endpoint("192.0.2.11", 3479),
    ]


@pytest.mark.parametrize(
    ("transport", "port"),
    [
        pytest.param(Transport.TCP, 3480, id="stun-tcp"),
        pytest.param(Transport.TLS, 5349, id="stuns"),
    ],
)
async def test_stream_services(
    resolver: dns.asyncresolver.Resolver, transport: Transport, port: int
) -> None:
    found = await resolve_stun("srv.test", transport=transport, resolver=resolver)
    assert Endpoint("192.0.2.10", port) in found


async def test_no_srv_falls_back_to_addresses(resolver: dns.asyncresolver.Resolver) -> None:
    assert await resolve_stun("plain.test", resolver=resolver) == [Endpoint("198.51.100.5", 3478)]
    assert await resolve_stun("plain.test", transport=Transport.TLS, resolver=resolver) == [
        Endpoint("198.51.100.5", 5349)
    ]


async def test_explicit_port_skips_srv(resolver: dns.asyncresolver.Resolver) -> None:
    assert await resolve_stun("a.srv.test:9999", resolver=resolver) == [
        Endpoint("2001:db8::10", 9999),
        Endpoint("192.0.2.10", 9999),
    ]


async def test_ip_literals_need_no_dns() -> None:
    assert await resolve_stun("192.0.2.1") == [Endpoint("192.0.2.1", 3478)]
    assert await resolve_stun("[2001:db8::1]:1234") == [Endpoint("2001:db8::1", 1234)]


@pytest.mark.parametrize("name", ["missing.test", "gone.test"])
async def test_unresolvable_names_raise(resolver: dns.asyncresolver.Resolver, name: str) -> None:
    with pytest.raises(TransportError):
        await resolve_stun(name, resolver=resolver)


def test_order_srv_weights_follow_rfc_2782() -> None:
    records = [
        SrvRecord(1, 90, 1, "heavy"),
        SrvRecord(1, 10, 2, "light"),
        SrvRecord(0, 0, 3, "first"),
    ]
    rng = random.Random(7)
    firsts = [order_srv(records, rng)[1].target for _ in range(2000)]
    assert all(order_srv(records, rng)[0].target == "first" for _ in range(50))
    share = firsts.count("heavy") / len(firsts)
    assert 0.85 < share < 0.95


def test_order_srv_drops_the_root_target() -> None:
    assert order_srv([SrvRecord(0, 0, 0, ".")]) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.org", ("example.org", None)),
        ("example.org:3478", ("example.org", 3478)),
        ("[2001:db8::1]:5", ("2001:db8::1", 5)),
        ("[2001:db8::1]", ("2001:db8::1", None)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int | None]) -> None:
    assert split_host_port(text) == expected
