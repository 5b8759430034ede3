"""Sans-IO mDNS for ICE host candidates (RFC 6762 §5.1, §6.7): one-shot
queries, their retransmission and timeout, and the responder's answers."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.ice.mdns import (
    MDNS_GROUP_V4,
    MdnsResolver,
    MdnsResolverConfig,
    MdnsResponder,
    NameResolved,
    NameUnresolved,
    is_mdns_name,
    new_mdns_name,
)

NAME = "d4e5f6a7-1234-4bcd-9ef0-123456789abc.local"
QUERIER = Endpoint("192.168.1.20", 50000)
RESPONDER = Endpoint("192.168.1.10", 5353)


def resolver(**kw: object) -> MdnsResolver:
    return MdnsResolver(MdnsResolverConfig(rng=random.Random(1), **kw))  # type: ignore[arg-type]


def test_new_names_are_uuid4_local_names() -> None:
    name = new_mdns_name(random.Random(5))
    assert is_mdns_name(name) and name.endswith(".local")
    assert name[14] == "4" and name != new_mdns_name(random.Random(6))
    assert not is_mdns_name("example.com")


def test_query_goes_to_the_group_with_no_flags() -> None:
    r = resolver()
    r.resolve(NAME, now=0.0)
    ((data, remote, _),) = r.datagrams_to_send(now=0.0)
    assert remote == MDNS_GROUP_V4
    msg = dns.message.from_wire(data)
    assert msg.flags == 0
    assert msg.question[0].rdtype == dns.rdatatype.A
    assert msg.question[0].name.to_text() == NAME + "."


def test_resolver_and_responder_meet() -> None:
    r = resolver()
    responder = MdnsResponder({NAME: "192.168.1.10"})
    r.resolve(NAME.upper(), now=0.0)
    for data, _, _ in r.datagrams_to_send(now=0.0):
        responder.receive_datagram(data, QUERIER, now=0.0)
    ((answer, to, _),) = responder.datagrams_to_send(now=0.0)
    assert to == QUERIER  # legacy unicast: straight back (§6.7)
    msg = dns.message.from_wire(answer)
    assert msg.answer[0].ttl <= 10 and msg.question  # §6.7
    r.receive_datagram(answer, RESPONDER, now=0.01)
    assert r.next_event() == NameResolved(name=NAME.lower(), address="192.168.1.10")
    assert r.get_timer() is None


def test_ipv6_names_answer_aaaa() -> None:
    r = resolver()
    responder = MdnsResponder({NAME: "2001:db8::10"})
    r.resolve(NAME, now=0.0, ipv6=True)
    for data, _, _ in r.datagrams_to_send(now=0.0):
        responder.receive_datagram(data, QUERIER, now=0.0)
    for data, _, _ in responder.datagrams_to_send(now=0.0):
        r.receive_datagram(data, RESPONDER, now=0.0)
    assert r.next_event() == NameResolved(name=NAME, address="2001:db8::10", ipv6=True)


def test_retransmits_once_then_gives_up() -> None:
    r = resolver(timeout=3.0, retransmit=1.0)
    r.resolve(NAME, now=0.0)
    assert len(r.datagrams_to_send(now=0.0)) == 1
    assert r.get_timer() == 1.0
    r.handle_timer(now=1.0)
    assert len(r.datagrams_to_send(now=1.0)) == 1
    assert r.get_timer() == 3.0
    r.handle_timer(now=3.0)
    assert r.next_event() == NameUnresolved(name=NAME)
    assert r.get_timer() is None


def test_non_local_names_and_overflow_are_unresolved_at_once() -> None:
    r = resolver(max_pending=1)
    r.resolve("turn.example.com", now=0.0)
    assert r.next_event() == NameUnresolved(name="turn.example.com")
    r.resolve(NAME, now=0.0)
    r.resolve("other.local", now=0.0)
    assert r.next_event() == NameUnresolved(name="other.local")


def test_multicast_answer_with_cache_flush_bit_is_accepted() -> None:
    r = resolver()
    r.resolve(NAME, now=0.0)
    # Chrome's responder: ID 0, answer with class IN | cache-flush, TTL 120.
    wire = bytearray()
    wire += b"\x00\x00\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00"
    for label in NAME.split("."):
        wire += bytes([len(label)]) + label.encode()
    wire += b"\x00\x00\x01\x80\x01\x00\x00\x00\x78\x00\x04" + bytes([192, 168, 1, 10])
    r.receive_datagram(bytes(wire), RESPONDER, now=0.0)
    assert r.next_event() == NameResolved(name=NAME, address="192.168.1.10")


def test_answers_for_names_not_asked_are_ignored() -> None:
    r = resolver()
    r.resolve(NAME, now=0.0)
    other = MdnsResponder({"x.local": "10.0.0.1"})
    query = dns.message.make_query("x.local.", dns.rdatatype.A)
    other.receive_datagram(query.to_wire(), QUERIER, now=0.0)
    for data, _, _ in other.datagrams_to_send(now=0.0):
        r.receive_datagram(data, RESPONDER, now=0.0)
    assert r.next_event() is None


def test_responder_multicasts_to_port_5353_queriers_and_honours_qu() -> None:
    responder = MdnsResponder({NAME: "192.168.1.10"})
    query = dns.message.make_query(NAME + ".", dns.rdatatype.A)
    querier = Endpoint("192.168.1.20", 5353)
    responder.receive_datagram(query.to_wire(), querier, now=0.0)
    ((data, to, _),) = responder.datagrams_to_send(now=0.0)
    assert to == MDNS_GROUP_V4
    msg = dns.message.from_wire(data)
    assert msg.id == 0 and msg.answer[0].ttl == 120 and msg.flags & dns.flags.AA
    qu = dns.message.Message(id=0)
    qu.question = [
        dns.rrset.RRset(
            dns.name.from_text(NAME + "."), dns.rdataclass.RdataClass.make(0x8001), dns.rdatatype.A
        )
    ]
    responder.receive_datagram(qu.to_wire(), querier, now=0.0)
    ((_, to, _),) = responder.datagrams_to_send(now=0.0)
    assert to == querier


def test_responder_ignores_other_names_types_and_responses() -> None:
    responder = MdnsResponder({NAME: "192.168.1.10"})
    for query in (
        dns.message.make_query("other.local.", dns.rdatatype.A),
        dns.message.make_query(NAME + ".", dns.rdatatype.AAAA),
        dns.message.make_response(dns.message.make_query(NAME + ".", dns.rdatatype.A)),
    ):
        responder.receive_datagram(query.to_wire(), QUERIER, now=0.0)
    assert responder.datagrams_to_send(now=0.0) == []
    responder.unregister(NAME)
    responder.receive_datagram(
        dns.message.make_query(NAME + ".", dns.rdatatype.ANY).to_wire(), QUERIER, now=0.0
    )
    assert responder.datagrams_to_send(now=0.0) == []


@given(st.binary(max_size=600))
def test_random_packets_are_dropped(data: bytes) -> None:
    r = resolver()
    r.resolve(NAME, now=0.0)
    r.receive_datagram(data, RESPONDER, now=0.0)
    responder = MdnsResponder({NAME: "192.168.1.10"})
    responder.receive_datagram(data, QUERIER, now=0.0)
