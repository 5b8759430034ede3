"""RFC 3263 server location, sans-IO: the plans driven against a dict zone."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError
from natkit.sip.flow import SipTransport, Target
from natkit.sip.headers import Via
from natkit.sip.message import SipRequest, parse_message
from natkit.sip.resolve import (
    NAPTR_SERVICES,
    DnsQuery,
    DnsRecord,
    LocatorLimits,
    NaptrRecord,
    RecordType,
    ServerTarget,
    SipResponseLocator,
    SipServerLocator,
)
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import TransactionTimedOut
from natkit.sip.uri import SipUri, parse_uri
from natkit.srv import SrvRecord

UDP, TCP, TLS, WS, WSS = (
    SipTransport.UDP,
    SipTransport.TCP,
    SipTransport.TLS,
    SipTransport.WS,
    SipTransport.WSS,
)
N, S, A, AAAA = RecordType.NAPTR, RecordType.SRV, RecordType.A, RecordType.AAAA

Zone = dict[tuple[str, RecordType], list[DnsRecord]]


def naptr(order: int, pref: int, service: str, replacement: str, flags: str = "s") -> NaptrRecord:
    return NaptrRecord(order, pref, flags, service, "", replacement)


ZONE: Zone = {
    # RFC 3263 §4.1's example: SIPS preferred, then TCP, then UDP
    ("example.com", N): [
        naptr(90, 50, "SIP+D2T", "_sip._tcp.example.com"),
        naptr(50, 50, "SIPS+D2T", "_sips._tcp.example.com"),
        naptr(100, 50, "SIP+D2U", "_sip._udp.example.com"),
    ],
    ("_sips._tcp.example.com", S): [SrvRecord(0, 0, 5061, "tls.example.com")],
    ("_sip._tcp.example.com", S): [SrvRecord(0, 0, 5060, "tcp.example.com")],
    ("_sip._udp.example.com", S): [SrvRecord(0, 0, 5060, "udp.example.com")],
    ("tls.example.com", A): ["192.0.2.1"],
    ("tcp.example.com", A): ["192.0.2.2"],
    ("udp.example.com", A): ["192.0.2.3"],
    ("udp.example.com", AAAA): ["2001:db8::3"],
    ("example.com", A): ["192.0.2.100"],
    # no NAPTR, SRV for TCP only
    ("_sip._tcp.plain.test", S): [SrvRecord(0, 0, 5070, "a.plain.test")],
    ("a.plain.test", A): ["192.0.2.10"],
    ("plain.test", A): ["192.0.2.20"],
    # addresses only
    ("bare.test", A): ["192.0.2.30"],
    ("bare.test", AAAA): ["2001:db8::30"],
    # RFC 7118: WebSocket services
    ("ws.test", N): [
        naptr(10, 10, "SIPS+D2W", "_sips._ws.ws.test"),
        naptr(20, 10, "SIP+D2W", "_sip._ws.ws.test"),
    ],
    ("_sips._ws.ws.test", S): [SrvRecord(0, 0, 443, "edge.ws.test")],
    ("_sip._ws.ws.test", S): [SrvRecord(0, 0, 8080, "edge.ws.test")],
    ("edge.ws.test", A): ["192.0.2.40"],
    # SRV "." means: no such service here (RFC 2782), so no A fallback
    ("_sip._udp.gone.test", S): [SrvRecord(0, 0, 0, ".")],
    ("gone.test", A): ["192.0.2.50"],
    # NAPTR records nobody can use: SCTP, a non-terminal rule, another application
    ("odd.test", N): [
        naptr(10, 10, "SIP+D2S", "_sip._sctp.odd.test"),
        naptr(20, 10, "SIP+D2T", "odd2.test", flags=""),
        naptr(30, 10, "E2U+sip", "odd3.test", flags="u"),
    ],
    ("_sip._udp.odd.test", S): [SrvRecord(0, 0, 5090, "a.plain.test")],
    # two SRV targets on one address: tried once
    ("_sip._udp.twice.test", S): [
        SrvRecord(0, 0, 5060, "one.twice.test"),
        SrvRecord(1, 0, 5060, "two.twice.test"),
    ],
    ("one.twice.test", A): ["192.0.2.60"],
    ("two.twice.test", A): ["192.0.2.60"],
}


def drive(
    locator: SipServerLocator | SipResponseLocator, zone: Zone = ZONE
) -> tuple[list[ServerTarget], list[DnsQuery]]:
    """Run a plan to its end, answering from ``zone``."""
    targets: list[ServerTarget] = []
    queries: list[DnsQuery] = []
    while (step := locator.next_step()) is not None:
        if isinstance(step, DnsQuery):
            queries.append(step)
            locator.receive_answer(zone.get((step.name, step.rdtype), []))
        else:
            targets.append(step)
    return targets, queries


def hops(targets: Sequence[ServerTarget]) -> list[tuple[SipTransport, str, int]]:
    return [(t.transport, t.remote.host, t.remote.port) for t in targets]


def locate(
    uri: str,
    transports: Sequence[SipTransport] = (UDP, TCP, TLS),
    families: Sequence[Family] = (Family.IPV6, Family.IPV4),
) -> SipServerLocator:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipUri)
    return SipServerLocator.for_uri(
        parsed, transports=transports, families=families, rng=random.Random(1)
    )


CLIENT_CASES = [
    pytest.param(
        "sip:192.0.2.5", (UDP, TCP, TLS), [(UDP, "192.0.2.5", 5060)], id="numeric-sip-udp"
    ),
    pytest.param(
        "sips:192.0.2.5", (UDP, TCP, TLS), [(TLS, "192.0.2.5", 5061)], id="numeric-sips-tls"
    ),
    pytest.param(
        "sip:[2001:db8::1]:5080", (UDP,), [(UDP, "2001:db8::1", 5080)], id="numeric-ipv6-port"
    ),
    pytest.param(
        "sip:192.0.2.5;transport=tcp", (UDP, TCP), [(TCP, "192.0.2.5", 5060)], id="numeric-param"
    ),
    pytest.param(
        "sip:192.0.2.5", (TCP, TLS), [(TCP, "192.0.2.5", 5060)], id="numeric-udp-unsupported"
    ),
    pytest.param(
        "sip:bare.test:5070",
        (UDP, TCP),
        [(UDP, "2001:db8::30", 5070), (UDP, "192.0.2.30", 5070)],
        id="port-given-udp-aaaa-first",
    ),
    pytest.param(
        "sips:bare.test:5071",
        (UDP, TLS),
        [(TLS, "2001:db8::30", 5071), (TLS, "192.0.2.30", 5071)],
        id="port-given-sips-tls",
    ),
    pytest.param(
        "sip:plain.test;transport=tcp", (TCP,), [(TCP, "192.0.2.10", 5070)], id="param-srv"
    ),
    pytest.param(
        "sip:plain.test;transport=udp", (UDP,), [(UDP, "192.0.2.20", 5060)], id="param-no-srv"
    ),
    pytest.param(
        "sips:example.com;transport=tcp",
        (TCP, TLS),
        [(TLS, "192.0.2.1", 5061)],
        id="sips-tcp-param-is-tls",
    ),
    pytest.param(
        "sip:example.com;transport=tls", (TLS,), [(TLS, "192.0.2.1", 5061)], id="sip-tls-param"
    ),
    pytest.param(
        "sip:example.com",
        (UDP, TCP, TLS),
        [
            (TLS, "192.0.2.1", 5061),
            (TCP, "192.0.2.2", 5060),
            (UDP, "2001:db8::3", 5060),
            (UDP, "192.0.2.3", 5060),
        ],
        id="naptr-order",
    ),
    pytest.param(
        "sip:example.com",
        (UDP, TCP),
        [(TCP, "192.0.2.2", 5060), (UDP, "2001:db8::3", 5060), (UDP, "192.0.2.3", 5060)],
        id="naptr-unsupported-discarded",
    ),
    pytest.param(
        "sips:example.com", (UDP, TCP, TLS), [(TLS, "192.0.2.1", 5061)], id="naptr-sips-only"
    ),
    pytest.param(
        "sip:plain.test",
        (UDP, TCP, TLS),
        [(TCP, "192.0.2.10", 5070)],
        id="no-naptr-srv-per-transport",
    ),
    pytest.param(
        "sip:bare.test",
        (UDP, TCP),
        [(UDP, "2001:db8::30", 5060), (UDP, "192.0.2.30", 5060)],
        id="no-naptr-no-srv-udp",
    ),
    pytest.param(
        "sips:bare.test",
        (UDP, TCP, TLS),
        [(TLS, "2001:db8::30", 5061), (TLS, "192.0.2.30", 5061)],
        id="no-naptr-no-srv-sips",
    ),
    pytest.param(
        "sip:example.com;maddr=192.0.2.99", (UDP,), [(UDP, "192.0.2.99", 5060)], id="maddr-numeric"
    ),
    pytest.param(
        "sip:nowhere.test:5099;maddr=bare.test;transport=tcp",
        (TCP,),
        [(TCP, "2001:db8::30", 5099), (TCP, "192.0.2.30", 5099)],
        id="maddr-name",
    ),
    pytest.param(
        "sips:ws.test", (WS, WSS), [(WSS, "192.0.2.40", 443)], id="naptr-sips-d2w-rfc7118"
    ),
    pytest.param(
        "sip:ws.test",
        (WS, WSS),
        [(WSS, "192.0.2.40", 443), (WS, "192.0.2.40", 8080)],
        id="naptr-d2w-both",
    ),
    pytest.param(
        "sip:bare.test;transport=ws",
        (WS,),
        [(WS, "2001:db8::30", 80), (WS, "192.0.2.30", 80)],
        id="ws-default-port-80",
    ),
    pytest.param(
        "sips:192.0.2.5;transport=ws", (WS, WSS), [(WSS, "192.0.2.5", 443)], id="sips-ws-is-wss-443"
    ),
    pytest.param("sips:192.0.2.5;transport=udp", (UDP, TLS), [], id="sips-udp-refused"),
    pytest.param("sip:192.0.2.5;transport=sctp", (UDP, TCP), [], id="sctp-unsupported"),
    pytest.param("sip:bare.test;transport=tls", (UDP, TCP), [], id="param-not-supported"),
    pytest.param("sip:gone.test;transport=udp", (UDP,), [], id="srv-dot-no-fallback"),
    pytest.param(
        "sip:odd.test", (UDP, TCP), [(UDP, "192.0.2.10", 5090)], id="unusable-naptr-falls-to-srv"
    ),
    pytest.param("sip:twice.test", (UDP,), [(UDP, "192.0.2.60", 5060)], id="duplicate-target-once"),
    pytest.param("sips:bare.test", (UDP, TCP), [], id="sips-without-secure-transport"),
]


@pytest.mark.parametrize(("uri", "transports", "expected"), CLIENT_CASES)
def test_client_targets_follow_rfc_3263(
    uri: str, transports: tuple[SipTransport, ...], expected: list[tuple[SipTransport, str, int]]
) -> None:
    locator = locate(uri, transports)
    targets, _ = drive(locator)
    assert hops(targets) == expected
    if not expected:
        assert locator.problems


@pytest.mark.parametrize(
    ("uri", "queries"),
    [
        pytest.param("sip:192.0.2.5", [], id="numeric-no-dns"),
        pytest.param(
            "sip:bare.test:5070", [("bare.test", AAAA), ("bare.test", A)], id="port-no-naptr"
        ),
        pytest.param(
            "sip:plain.test;transport=tcp",
            [("_sip._tcp.plain.test", S), ("a.plain.test", AAAA), ("a.plain.test", A)],
            id="param-no-naptr",
        ),
        pytest.param(
            "sip:bare.test",
            [
                ("bare.test", N),
                ("_sip._udp.bare.test", S),
                ("_sip._tcp.bare.test", S),
                ("_sips._tcp.bare.test", S),
                ("bare.test", AAAA),
                ("bare.test", A),
            ],
            id="naptr-then-srv-then-address",
        ),
    ],
)
def test_client_asks_only_what_the_rfc_asks(
    uri: str, queries: list[tuple[str, RecordType]]
) -> None:
    locator = locate(uri)
    _, asked = drive(locator)
    assert [(q.name, q.rdtype) for q in asked] == queries


def test_targets_carry_domain_for_tls_and_srv_hostname() -> None:
    locator = locate("sips:example.com")
    (target,) = drive(locator)[0]
    assert target.domain == "example.com"
    assert target.hostname == "tls.example.com"
    assert target.target == Target(TLS, Endpoint("192.0.2.1", 5061))


def test_numeric_target_has_no_hostname() -> None:
    locator = locate("sip:192.0.2.5")
    (target,) = drive(locator)[0]
    assert target.hostname is None
    assert target.domain == "192.0.2.5"


def test_ipv4_only_client_skips_aaaa() -> None:
    locator = locate("sip:bare.test", (UDP,), families=(Family.IPV4,))
    targets, queries = drive(locator)
    assert hops(targets) == [(UDP, "192.0.2.30", 5060)]
    assert all(q.rdtype is not AAAA for q in queries)


def test_ipv4_preferred_over_ipv6() -> None:
    locator = locate("sip:bare.test", (UDP,), families=(Family.IPV4, Family.IPV6))
    assert hops(drive(locator)[0]) == [(UDP, "192.0.2.30", 5060), (UDP, "2001:db8::30", 5060)]


def test_numeric_ipv6_unreachable_for_ipv4_only_client() -> None:
    locator = locate("sip:[2001:db8::1]", families=(Family.IPV4,))
    assert drive(locator)[0] == []
    assert "family" in locator.problems[0]


def test_failover_looks_up_backup_servers_only_when_asked() -> None:
    """§4.3: the next SRV target's addresses are resolved only after the
    first target has been handed out (and has failed)."""
    zone: Zone = {
        ("_sip._udp.fo.test", S): [
            SrvRecord(10, 0, 5060, "primary.fo.test"),
            SrvRecord(20, 0, 5062, "backup.fo.test"),
        ],
        ("primary.fo.test", A): ["192.0.2.1"],
        ("backup.fo.test", A): ["192.0.2.2"],
    }
    locator = SipServerLocator(
        scheme="sip", host="fo.test", transport="udp", families=(Family.IPV4,)
    )
    asked: list[str] = []
    while not isinstance(step := locator.next_step(), ServerTarget):
        assert step is not None
        asked.append(step.name)
        locator.receive_answer(zone.get((step.name, step.rdtype), []))
    first = step
    assert first.remote == Endpoint("192.0.2.1", 5060)
    assert "backup.fo.test" not in asked
    rest, later = drive(locator, zone)
    assert [q.name for q in later] == ["backup.fo.test"]
    assert hops(rest) == [(UDP, "192.0.2.2", 5062)]


def test_naptr_failover_moves_to_the_next_record_when_srv_is_empty() -> None:
    zone: Zone = {
        ("n.test", N): [
            naptr(10, 10, "SIP+D2T", "_sip._tcp.n.test"),
            naptr(10, 20, "SIP+D2U", "_sip._udp.n.test"),
        ],
        ("_sip._udp.n.test", S): [SrvRecord(0, 0, 5060, "u.n.test")],
        ("u.n.test", A): ["192.0.2.7"],
    }
    locator = SipServerLocator(scheme="sip", host="n.test", families=(Family.IPV4,))
    assert hops(drive(locator, zone)[0]) == [(UDP, "192.0.2.7", 5060)]


def test_naptr_without_any_srv_falls_back_to_addresses_with_first_transport() -> None:
    zone: Zone = {
        ("n.test", N): [naptr(10, 10, "SIP+D2T", "_sip._tcp.n.test")],
        ("n.test", A): ["192.0.2.8"],
    }
    locator = SipServerLocator(scheme="sip", host="n.test", families=(Family.IPV4,))
    assert hops(drive(locator, zone)[0]) == [(TCP, "192.0.2.8", 5060)]


def test_srv_weights_with_seeded_rng() -> None:
    zone: Zone = {
        ("_sip._udp.w.test", S): [
            SrvRecord(1, 90, 5060, "heavy.w.test"),
            SrvRecord(1, 10, 5060, "light.w.test"),
            SrvRecord(0, 0, 5060, "first.w.test"),
        ],
        ("heavy.w.test", A): ["192.0.2.90"],
        ("light.w.test", A): ["192.0.2.10"],
        ("first.w.test", A): ["192.0.2.1"],
    }
    rng = random.Random(42)
    seconds: list[str] = []
    for _ in range(1000):
        locator = SipServerLocator(
            scheme="sip", host="w.test", transport="udp", families=(Family.IPV4,), rng=rng
        )
        targets = hops(drive(locator, zone)[0])
        assert targets[0][1] == "192.0.2.1"  # priority 0 always first
        seconds.append(targets[1][1])
    share = seconds.count("192.0.2.90") / len(seconds)
    assert 0.85 < share < 0.95


def test_limits_cap_records_queries_and_targets() -> None:
    many = [SrvRecord(0, 0, 5060, f"h{i}.m.test") for i in range(100)]
    zone: Zone = {("_sip._udp.m.test", S): list(many)}
    zone.update({(f"h{i}.m.test", A): [f"192.0.2.{i + 1}"] for i in range(100)})
    limits = LocatorLimits(max_srv_records=50, max_queries=10, max_targets=5)
    locator = SipServerLocator(
        scheme="sip", host="m.test", transport="udp", families=(Family.IPV4,), limits=limits
    )
    targets, queries = drive(locator, zone)
    assert len(targets) == 5
    assert len(queries) <= 10
    assert any("targets" in p for p in locator.problems)
    locator = SipServerLocator(
        scheme="sip",
        host="m.test",
        transport="udp",
        families=(Family.IPV4,),
        limits=LocatorLimits(max_queries=4),
    )
    targets, queries = drive(locator, zone)
    assert (len(targets), len(queries)) == (3, 4)
    assert any("queries" in p for p in locator.problems)


def test_only_max_srv_records_are_taken() -> None:
    many: list[DnsRecord] = [SrvRecord(0, 0, 5060, f"h{i}.m.test") for i in range(40)]
    zone: Zone = {("_sip._udp.m.test", S): many}
    zone.update({(f"h{i}.m.test", A): [f"192.0.2.{i + 1}"] for i in range(40)})
    locator = SipServerLocator(
        scheme="sip",
        host="m.test",
        transport="udp",
        families=(Family.IPV4,),
        limits=LocatorLimits(max_srv_records=3),
    )
    assert len(drive(locator, zone)[0]) == 3


def test_bad_records_are_skipped() -> None:
    zone: Zone = {
        ("_sip._udp.b.test", S): [
            SrvRecord(0, 0, 0, "zero.b.test"),
            SrvRecord(1, 0, 5060, "ok.b.test"),
        ],
        ("zero.b.test", A): ["192.0.2.1"],
        ("ok.b.test", A): ["not-an-ip", "2001:db8::1", "192.0.2.2"],
    }
    locator = SipServerLocator(
        scheme="sip", host="b.test", transport="udp", families=(Family.IPV4,)
    )
    assert hops(drive(locator, zone)[0]) == [(UDP, "192.0.2.2", 5060)]


def test_failed_lookup_counts_as_empty_and_is_reported() -> None:
    locator = SipServerLocator(scheme="sip", host="bare.test", port=5060, families=(Family.IPV4,))
    step = locator.next_step()
    assert step == DnsQuery("bare.test", A)
    locator.receive_answer((), failure="timeout")
    assert locator.next_step() is None
    assert locator.problems == ("A bare.test: timeout",)


def test_steps_must_alternate_with_answers() -> None:
    locator = SipServerLocator(scheme="sip", host="bare.test")
    with pytest.raises(LocalProtocolError):
        locator.receive_answer([])
    assert isinstance(locator.next_step(), DnsQuery)
    with pytest.raises(LocalProtocolError):
        locator.next_step()


def test_names_are_normalised() -> None:
    locator = SipServerLocator(scheme="SIP", host="Bare.Test.", port=5070, families=(Family.IPV4,))
    assert hops(drive(locator)[0]) == [(UDP, "192.0.2.30", 5070)]


# RFC 3263 §5 and RFC 3261 §18.2.2: where a response goes when its request's
# connection or source failed.

SERVER_ZONE: Zone = {
    ("_sip._udp.client.test", S): [SrvRecord(0, 0, 5070, "ua.client.test")],
    ("_sips._tcp.client.test", S): [SrvRecord(0, 0, 5071, "ua.client.test")],
    ("ua.client.test", A): ["198.51.100.7"],
    ("client.test", A): ["198.51.100.8"],
}


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        pytest.param(
            Via("UDP", "192.0.2.7", 5062), [(UDP, "192.0.2.7", 5062)], id="numeric-sent-by"
        ),
        pytest.param(
            Via("TLS", "192.0.2.7", None), [(TLS, "192.0.2.7", 5061)], id="numeric-tls-default"
        ),
        pytest.param(
            Via("TCP", "client.test", 5080, (("received", "203.0.113.9"),)),
            [(TCP, "203.0.113.9", 5080), (TCP, "198.51.100.8", 5080)],
            id="received-first-then-name-with-port",
        ),
        pytest.param(
            Via("UDP", "client.test", None), [(UDP, "198.51.100.7", 5070)], id="name-srv-udp"
        ),
        pytest.param(
            Via("TLS", "client.test", None), [(TLS, "198.51.100.7", 5071)], id="name-srv-sips-tcp"
        ),
        pytest.param(
            Via("TCP", "client.test", None), [(TCP, "198.51.100.8", 5060)], id="name-no-srv"
        ),
        pytest.param(
            Via("UDP", "client.test", 5080, (("received", "203.0.113.9"), ("rport", "40000"))),
            [(UDP, "203.0.113.9", 40000), (UDP, "203.0.113.9", 5080), (UDP, "198.51.100.8", 5080)],
            id="rfc3581-rport-first",
        ),
        pytest.param(
            Via("TCP", "192.0.2.7", 5080, (("received", "203.0.113.9"), ("rport", "40000"))),
            [(TCP, "203.0.113.9", 5080), (TCP, "192.0.2.7", 5080)],
            id="rport-ignored-for-new-tcp-connection",
        ),
        pytest.param(Via("WSS", "abc.invalid", None), [], id="websocket-client-no-targets"),
    ],
)
def test_response_targets_follow_rfc_3263_section_5(
    via: Via, expected: list[tuple[SipTransport, str, int]]
) -> None:
    locator = SipResponseLocator.for_via(via, families=(Family.IPV4,), rng=random.Random(1))
    assert hops(drive(locator, SERVER_ZONE)[0]) == expected


def test_response_to_unknown_via_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="SCTP"):
        SipResponseLocator.for_via(Via("SCTP", "client.test", None))


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(NaptrRecord(10, 10, "S", "sip+d2u", "", "_sip._udp.bare.test."), id="case"),
    ],
)
def test_naptr_fields_compare_case_insensitively(record: NaptrRecord) -> None:
    zone: Zone = {
        ("bare.test", N): [record],
        ("_sip._udp.bare.test", S): [SrvRecord(0, 0, 5099, "bare.test")],
        ("bare.test", A): ["192.0.2.30"],
    }
    locator = SipServerLocator(scheme="sip", host="bare.test", families=(Family.IPV4,))
    assert hops(drive(locator, zone)[0]) == [(UDP, "192.0.2.30", 5099)]


def test_srv_target_written_as_an_ip_is_used_as_is() -> None:
    zone: Zone = {("_sip._udp.ip.test", S): [SrvRecord(0, 0, 5066, "192.0.2.66")]}
    locator = SipServerLocator(scheme="sip", host="ip.test", transport="udp")
    targets, queries = drive(locator, zone)
    assert hops(targets) == [(UDP, "192.0.2.66", 5066)]
    assert len(queries) == 1


# Property: whatever the zone holds, a plan ends, stays within its limits,
# offers each target once and never breaks the scheme's security.

_names = st.sampled_from(["h.test", "a.h.test", "b.h.test", "_sip._udp.h.test", "."])
_records = st.one_of(
    st.builds(
        NaptrRecord,
        order=st.integers(0, 3),
        preference=st.integers(0, 3),
        flags=st.sampled_from(["s", "S", "", "a", "u"]),
        service=st.sampled_from([*NAPTR_SERVICES, "SIP+D2S", "E2U+sip", ""]),
        regexp=st.just(""),
        replacement=_names,
    ),
    st.builds(SrvRecord, st.integers(0, 3), st.integers(0, 9), st.integers(0, 70000), _names),
    st.sampled_from(["192.0.2.1", "2001:db8::1", "192.0.2.2", "bogus", "10.0.0.1"]),
)
_zones = st.dictionaries(
    st.tuples(_names, st.sampled_from(list(RecordType))),
    st.lists(_records, max_size=6),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    zone=_zones,
    scheme=st.sampled_from(["sip", "sips"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    transport=st.one_of(st.none(), st.sampled_from(["udp", "tcp", "tls", "ws", "wss", "sctp"])),
    transports=st.lists(st.sampled_from(list(SipTransport)), min_size=1, max_size=5, unique=True),
    seed=st.integers(0, 1000),
)
def test_any_zone_gives_a_bounded_well_formed_plan(
    zone: Zone,
    scheme: str,
    port: int | None,
    transport: str | None,
    transports: list[SipTransport],
    seed: int,
) -> None:
    limits = LocatorLimits(max_queries=20, max_targets=8)
    locator = SipServerLocator(
        scheme=scheme,
        host="h.test",
        port=port,
        transport=transport,
        transports=transports,
        limits=limits,
        rng=random.Random(seed),
    )
    targets, queries = drive(locator, zone)
    assert len(queries) <= 20
    assert len(targets) <= 8
    assert len({(t.transport, t.remote) for t in targets}) == len(targets)
    for target in targets:
        assert target.transport in transports
        assert target.transport.secure or scheme == "sip"
        assert 0 < target.remote.port <= 65535


def test_failover_with_the_transaction_layer() -> None:
    """§4.3 end to end: a non-INVITE times out (Timer F) at the first SRV
    target; the TU sends the same request with a new branch to the next."""
    zone: Zone = {
        ("_sip._udp.fo.test", S): [
            SrvRecord(10, 0, 5060, "primary.fo.test"),
            SrvRecord(20, 0, 5062, "backup.fo.test"),
        ],
        ("primary.fo.test", A): ["192.0.2.1"],
        ("backup.fo.test", A): ["192.0.2.2"],
    }
    template = parse_message(
        b"OPTIONS sip:fo.test;transport=udp SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.1:5060;rport\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:a@198.51.100.1>;tag=1\r\nTo: <sip:fo.test>\r\n"
        b"Call-ID: fo-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(template, SipRequest) and isinstance(template.uri, SipUri)
    locator = SipServerLocator.for_uri(template.uri, families=(Family.IPV4,))
    layer = TransactionLayer(rng=random.Random(5))

    def next_target() -> ServerTarget | None:
        while isinstance(step := locator.next_step(), DnsQuery):
            locator.receive_answer(zone.get((step.name, step.rdtype), []))
        return step

    now = 0.0
    sent: list[tuple[str | None, Target]] = []
    while (target := next_target()) is not None:
        layer.send_request(template.copy(), target.target, now=now)
        while not isinstance(layer.next_event(), TransactionTimedOut):
            sent.extend((m.top_via.branch, t) for m, t in layer.messages_to_send())
            deadline = layer.get_timer()
            assert deadline is not None
            now = deadline
            layer.handle_timer(now=now)
    remotes = [t.remote for _, t in sent]
    first, second = Endpoint("192.0.2.1", 5060), Endpoint("192.0.2.2", 5062)
    assert remotes.index(second) > max(i for i, r in enumerate(remotes) if r == first)
    assert len({b for b, t in sent if t.remote == first}) == 1
    assert {b for b, t in sent if t.remote == first}.isdisjoint(
        {b for b, t in sent if t.remote == second}
    )
