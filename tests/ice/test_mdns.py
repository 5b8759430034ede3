"""The mDNS resolver core's question (RFC 6762 §5.4 QU bit) and the answers
it takes: legacy unicast with the query's ID, or multicast with ID 0."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset

from natkit.addr import Endpoint
from natkit.ice.mdns import (
    MDNS_GROUP_V4,
    MdnsResolver,
    MdnsResolverConfig,
    MdnsResponder,
    NameResolved,
    NameUnresolved,
    new_mdns_name,
)

BROWSER = Endpoint("192.0.2.7", 5353)


def _question(resolver: MdnsResolver) -> dns.message.Message:
    (datagram,) = resolver.datagrams_to_send(now=0.0)
    assert datagram.remote == MDNS_GROUP_V4
    return dns.message.from_wire(datagram.data)


def test_the_question_asks_for_a_unicast_answer() -> None:
    resolver = MdnsResolver(MdnsResolverConfig(rng=random.Random(1)))
    resolver.resolve(new_mdns_name(random.Random(2)), now=0.0)
    (question,) = _question(resolver).question
    assert question.rdclass == 0x8001  # IN with the QU bit


def test_the_qu_bit_can_be_left_off() -> None:
    resolver = MdnsResolver(MdnsResolverConfig(unicast_response=False, rng=random.Random(1)))
    resolver.resolve(new_mdns_name(random.Random(2)), now=0.0)
    (question,) = _question(resolver).question
    assert question.rdclass == 1


def test_a_multicast_answer_with_id_zero_resolves_a_pending_name() -> None:
    name = new_mdns_name(random.Random(3))
    resolver = MdnsResolver(MdnsResolverConfig(rng=random.Random(1)))
    resolver.resolve(name, now=0.0)
    assert _question(resolver).id != 0
    answer = dns.message.Message(id=0)
    answer.flags = dns.flags.QR | dns.flags.AA
    answer.answer = [dns.rrset.from_text(name + ".", 120, "IN", "A", "192.168.1.20")]
    resolver.receive_datagram(answer.to_wire(), BROWSER, now=0.1)
    assert resolver.next_event() == NameResolved(name=name, address="192.168.1.20")
    assert resolver.get_timer() is None


def test_a_qu_question_from_port_5353_is_answered_unicast_by_natkit() -> None:
    """natkit's own responder honours the bit (§5.4) for a full querier."""
    name = new_mdns_name(random.Random(4))
    resolver = MdnsResolver(MdnsResolverConfig(rng=random.Random(1)))
    resolver.resolve(name, now=0.0)
    (query,) = resolver.datagrams_to_send(now=0.0)
    responder = MdnsResponder({name: "192.168.1.21"})
    querier = Endpoint("192.0.2.8", 5353)
    responder.receive_datagram(query.data, querier, now=0.0)
    (out,) = responder.datagrams_to_send(now=0.0)
    assert out.remote == querier
    resolver.receive_datagram(out.data, Endpoint("192.0.2.9", 5353), now=0.0)
    assert resolver.next_event() == NameResolved(name=name, address="192.168.1.21")


def _announcement(name: str, ip: str, ttl: int = 120) -> bytes:
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    msg.answer = [dns.rrset.from_text(name + ".", ttl, "IN", "A", ip)]
    return msg.to_wire()


def test_an_announced_name_resolves_at_once_until_its_ttl_ends() -> None:
    """§8.3: Chromium announces each new name by multicast; heard before the
    candidate is signalled, it needs no question (§10: for its TTL)."""
    name = new_mdns_name(random.Random(5))
    resolver = MdnsResolver(MdnsResolverConfig(rng=random.Random(1)))
    resolver.receive_datagram(_announcement(name, "192.168.1.30", ttl=120), BROWSER, now=0.0)
    assert resolver.next_event() is None  # nobody asked yet
    resolver.resolve(name.upper(), now=10.0)
    assert resolver.next_event() == NameResolved(name=name, address="192.168.1.30")
    assert resolver.datagrams_to_send(now=10.0) == []
    resolver.resolve(name, now=120.5)  # expired: asked on the network
    assert resolver.next_event() is None
    assert len(resolver.datagrams_to_send(now=120.5)) == 1


def test_a_goodbye_forgets_the_name_and_the_cache_is_bounded() -> None:
    rng = random.Random(6)
    names = [new_mdns_name(rng) for _ in range(3)]
    resolver = MdnsResolver(MdnsResolverConfig(cache_size=2, rng=random.Random(1)))
    for i, name in enumerate(names):
        resolver.receive_datagram(_announcement(name, f"192.168.1.{40 + i}"), BROWSER, now=0.0)
    resolver.receive_datagram(_announcement(names[2], "192.168.1.42", ttl=0), BROWSER, now=1.0)
    for name in names:
        resolver.resolve(name, now=2.0)
    resolved = [e for e in iter(resolver.next_event, None)]
    assert resolved == [NameResolved(name=names[1], address="192.168.1.41")]
    assert len(resolver.datagrams_to_send(now=2.0)) == 2  # the oldest and the goodbye


# Chromium 156's multicast answer (ID 0) for one of its names, captured on a
# veth pair: the A record with the cache-flush bit, then an NSEC record whose
# next-domain name is compressed (RFC 3845 §2.1.1 forbids that).
CHROMIUM_ANSWER = bytes.fromhex(
    "0000840000000001000000012461363437343734302d316137312d343038322d386638362d363931"
    "626462373063623261056c6f63616c0000018001000000780004c6124d022461363437343734302d"
    "316137312d343038322d386638362d363931626462373063623261056c6f63616c00002f80010000"
    "00780005c046000140"
)
CHROMIUM_NAME = "a6474740-1a71-4082-8f86-691bdb70cb2a.local"


def test_chromiums_answer_with_a_compressed_nsec_name_resolves() -> None:
    resolver = MdnsResolver(MdnsResolverConfig(rng=random.Random(1)))
    resolver.resolve(CHROMIUM_NAME, now=0.0)
    resolver.receive_datagram(CHROMIUM_ANSWER, BROWSER, now=0.1)
    assert resolver.next_event() == NameResolved(name=CHROMIUM_NAME, address="198.18.77.2")


def _answer(name: str, rdtype: str, ip: str) -> bytes:
    msg = dns.message.Message(id=0)
    msg.flags = dns.flags.QR | dns.flags.AA
    msg.answer = [dns.rrset.from_text(name + ".", 120, "IN", rdtype, ip)]
    return msg.to_wire()


def test_a_and_aaaa_questions_for_one_name_are_separate_queries() -> None:
    """A dual-stack peer's name asked in both families: two questions, and an
    A answer resolves the A query only (queries keyed by name and type)."""
    name = new_mdns_name(random.Random(7))
    resolver = MdnsResolver(MdnsResolverConfig(timeout=3.0, retransmit=5.0, rng=random.Random(1)))
    resolver.resolve(name, now=0.0)
    resolver.resolve(name, now=0.0, ipv6=True)
    sent = resolver.datagrams_to_send(now=0.0)
    types = sorted(dns.message.from_wire(d.data).question[0].rdtype for d in sent)
    assert types == [dns.rdatatype.A, dns.rdatatype.AAAA]
    resolver.receive_datagram(_answer(name, "A", "192.168.1.50"), BROWSER, now=0.1)
    assert resolver.next_event() == NameResolved(name=name, address="192.168.1.50", ipv6=False)
    assert resolver.next_event() is None  # the AAAA query still waits
    resolver.receive_datagram(_answer(name, "AAAA", "fd00::50"), BROWSER, now=0.2)
    assert resolver.next_event() == NameResolved(name=name, address="fd00::50", ipv6=True)
    assert resolver.get_timer() is None


def test_an_a_record_never_answers_an_aaaa_question() -> None:
    name = new_mdns_name(random.Random(8))
    resolver = MdnsResolver(MdnsResolverConfig(timeout=3.0, retransmit=5.0, rng=random.Random(1)))
    resolver.resolve(name, now=0.0, ipv6=True)
    resolver.datagrams_to_send(now=0.0)
    resolver.receive_datagram(_answer(name, "A", "192.168.1.51"), BROWSER, now=0.1)
    assert resolver.next_event() is None
    resolver.handle_timer(now=3.0)
    assert resolver.next_event() == NameUnresolved(name=name, ipv6=True)
    resolver.resolve(name, now=4.0)  # the A record heard meanwhile is cached
    assert resolver.next_event() == NameResolved(name=name, address="192.168.1.51", ipv6=False)
