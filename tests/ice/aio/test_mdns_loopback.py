"""mDNS resolver and responder drivers over loopback on the OS stack (the
simulated internet has no multicast, and tests never send to the real LAN):
the resolver's 'group' is the responder's own loopback address."""

from __future__ import annotations

import random

from natkit.addr import Endpoint
from natkit.ice.aio.mdns import AsyncMdnsResolver, AsyncMdnsResponder
from natkit.ice.mdns import MdnsResolverConfig, new_mdns_name
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
