"""The mDNS resolver core's question (RFC 6762 §5.4 QU bit) and the answers
it takes: legacy unicast with the query's ID, or multicast with ID 0."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rrset

from natkit.addr import Endpoint
from natkit.ice.mdns import (
    MDNS_GROUP_V4,
    MdnsResolver,
    MdnsResolverConfig,
    MdnsResponder,
    NameResolved,
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
