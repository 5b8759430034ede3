"""mDNS resolver and responder drivers over loopback on the OS stack (the
simulated internet has no multicast, and tests never send to the real LAN):
the resolver's 'group' is the responder's own loopback address."""

from __future__ import annotations

import asyncio
import random
import socket

import dns.flags
import dns.message
import dns.rrset

from natkit.addr import Endpoint
from natkit.ice.aio.mdns import AsyncMdnsResolver, AsyncMdnsResponder
from natkit.ice.mdns import MDNS_GROUP_V4, MdnsResolverConfig, new_mdns_name
from natkit.ice.sdp import parse_candidate
from natkit.net.os_stack import OsStack


async def test_resolves_a_remote_mdns_candidate_over_loopback() -> None:
    stack = OsStack()
    name = new_mdns_name(random.Random(3))
    async with AsyncMdnsResponder(
        stack, {name: "192.168.1.10"}, listen=Endpoint("127.0.0.1", 0)
    ) as responder:
        config = MdnsResolverConfig(
            group=responder.local_endpoint, timeout=2.0, rng=random.Random(1)
        )
        async with AsyncMdnsResolver(stack, config) as resolver:
            line = parse_candidate(f"candidate:1 1 udp 2122260223 {name} 54321 typ host")
            cand = await resolver.resolve_candidate(line)
            assert cand is not None and cand.address == Endpoint("192.168.1.10", 54321)
            plain = parse_candidate("candidate:1 1 udp 1 192.0.2.1 5 typ host")
            assert await resolver.resolve_candidate(plain) == plain.to_candidate()


async def test_unanswered_name_drops_the_candidate() -> None:
    stack = OsStack()
    async with AsyncMdnsResponder(stack, {}, listen=Endpoint("127.0.0.1", 0)) as responder:
        config = MdnsResolverConfig(
            group=responder.local_endpoint, timeout=0.2, retransmit=0.1, rng=random.Random(1)
        )
        async with AsyncMdnsResolver(stack, config) as resolver:
            line = parse_candidate("candidate:1 1 udp 1 nobody-here.local 5 typ host")
            assert await resolver.resolve_candidate(line) is None
            fqdn = parse_candidate("candidate:1 1 udp 1 turn.example.com 5 typ relay")
            assert await resolver.resolve_candidate(fqdn) is None


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_an_answer_multicast_to_the_group_resolves_the_name() -> None:
    """A responder that answers a one-shot query by multicast to the group
    with ID 0 (Chromium's, RFC 6762 §6 style) instead of unicast back to the
    query's port: the resolver's group listener hears it. Everything stays
    on the loopback interface (the group is joined there, the query socket
    is bound to 127.0.0.1, the answer goes out lo); the group's port is a
    free one, not 5353, so no mDNS daemon on this host is involved."""
    stack = OsStack()
    name = new_mdns_name(random.Random(4))
    group = Endpoint(MDNS_GROUP_V4.host, _free_udp_port())
    questions: list[dns.message.Message] = []

    def browser_like(data: bytes, remote: Endpoint) -> None:
        msg = dns.message.from_wire(data)
        if msg.flags & dns.flags.QR:
            return  # its own answer, looped back
        questions.append(msg)
        answer = dns.message.Message(id=0)
        answer.flags = dns.flags.QR | dns.flags.AA
        rrset = dns.rrset.from_text(name + ".", 120, "IN", "A", "192.168.1.11")
        answer.answer = [rrset]
        responder.send(answer.to_wire(), group)

    responder = await stack.open_udp_multicast(group, browser_like, interface="127.0.0.1")
    try:
        config = MdnsResolverConfig(group=group, timeout=2.0, rng=random.Random(2))
        async with AsyncMdnsResolver(stack, config, interface="127.0.0.1") as resolver:
            assert await resolver.resolve(name) == "192.168.1.11"
    finally:
        responder.close()
    (question,) = questions[0].question
    assert question.rdclass & 0x8000  # QU: a unicast answer was asked for (§5.4)
    assert str(question.name) == name + "."


async def test_without_the_group_listener_such_an_answer_is_missed() -> None:
    stack = OsStack()
    name = new_mdns_name(random.Random(5))
    group = Endpoint(MDNS_GROUP_V4.host, _free_udp_port())

    def browser_like(data: bytes, remote: Endpoint) -> None:
        msg = dns.message.from_wire(data)
        if not msg.flags & dns.flags.QR:
            answer = dns.message.Message(id=0)
            answer.flags = dns.flags.QR | dns.flags.AA
            answer.answer = [dns.rrset.from_text(name + ".", 120, "IN", "A", "192.168.1.12")]
            responder.send(answer.to_wire(), group)

    responder = await stack.open_udp_multicast(group, browser_like, interface="127.0.0.1")
    try:
        config = MdnsResolverConfig(group=group, timeout=0.3, retransmit=0.1, rng=random.Random(2))
        async with AsyncMdnsResolver(
            stack, config, interface="127.0.0.1", listen_group=False
        ) as resolver:
            assert await resolver.resolve(name) is None
    finally:
        responder.close()


async def test_concurrent_a_and_aaaa_lookups_get_their_own_answers() -> None:
    """Waiters are keyed by name and record type: the AAAA lookup of an
    IPv4-only name is not handed the A answer of a concurrent lookup."""
    stack = OsStack()
    name = new_mdns_name(random.Random(9))
    async with AsyncMdnsResponder(
        stack, {name: "192.168.1.60"}, listen=Endpoint("127.0.0.1", 0)
    ) as responder:
        config = MdnsResolverConfig(
            group=responder.local_endpoint, timeout=0.3, retransmit=0.2, rng=random.Random(1)
        )
        async with AsyncMdnsResolver(stack, config) as resolver:
            v4, v6 = await asyncio.gather(resolver.resolve(name), resolver.resolve(name, ipv6=True))
            assert (v4, v6) == ("192.168.1.60", None)
