"""NAT helpers for non-Outbound UAs: detection, alias-style targets, the binding pinger."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.lab.sip_phone import REGISTRAR_IP, SIP_PORT, LabPhone
from natkit.lab.topology import attach_nat
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import Via, parse_name_addr
from natkit.sip.message import (
    Headers,
    SipMessage,
    SipRequest,
    SipResponse,
    make_response,
    parse_message,
)
from natkit.sip.nat_helper import (
    NatPinger,
    NatPingerConfig,
    NatReason,
    NatVerdict,
    binding_is_natted,
    binding_target,
    detect_nat,
    detect_nat_binding,
    detect_nat_response,
    is_private_host,
    parse_source_text,
    route_to_binding,
)
from natkit.sip.nat_helper_events import LossReason, NatBindingLost
from natkit.sip.registrar import Binding
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import RequestReceived, ResponseReceived, TransactionEvent
from natkit.sip.uri import SipUri, parse_uri

SERVER = Endpoint("192.0.2.1", 5060)
R = NatReason


def source(host: str, port: int, transport: SipTransport = SipTransport.UDP) -> Source:
    return Source(transport, Endpoint.of(host, port), SERVER, f"f-{host}-{port}")


def register(via: str, contact: str, transport: str = "UDP") -> SipRequest:
    text = (
        "REGISTER sip:example.org SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bKreg1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.org>;tag=a\r\nTo: <sip:alice@example.org>\r\n"
        f"Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nContact: {contact}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, SipRequest)
    return request


# ------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("via", "contact", "src", "transport", "expected"),
    [
        pytest.param(
            "192.168.1.20:5060",
            "<sip:alice@192.168.1.20:5060>",
            source("203.0.113.5", 5060),
            "UDP",
            {R.PRIVATE_CONTACT, R.PRIVATE_VIA, R.VIA_HOST_DIFFERS, R.CONTACT_DIFFERS},
            id="private-contact",
        ),
        pytest.param(
            "203.0.113.5:5060",
            "<sip:alice@203.0.113.5:5060>",
            source("203.0.113.5", 61000),
            "UDP",
            {R.VIA_PORT_DIFFERS, R.CONTACT_DIFFERS},
            id="rport-differs",
        ),
        pytest.param(
            "203.0.113.5",
            "<sip:alice@203.0.113.5>",
            source("203.0.113.5", 5060),
            "UDP",
            set(),
            id="public-default-ports-match",
        ),
        pytest.param(
            "[fd00::20]:5060",
            "<sip:alice@[fd00::20]:5060>",
            source("2001:db8::5", 5060),
            "UDP",
            {R.PRIVATE_CONTACT, R.PRIVATE_VIA, R.VIA_HOST_DIFFERS, R.CONTACT_DIFFERS},
            id="ipv6-ula",
        ),
        pytest.param(
            "100.64.3.4:5060",
            "<sip:alice@100.64.3.4:5060>",
            source("198.51.100.9", 5060),
            "UDP",
            {R.PRIVATE_CONTACT, R.PRIVATE_VIA, R.VIA_HOST_DIFFERS, R.CONTACT_DIFFERS},
            id="cgnat-shared",
        ),
        pytest.param(
            "169.254.7.7:5060",
            "<sip:alice@169.254.7.7:5060>",
            source("169.254.7.7", 5060),
            "UDP",
            {R.PRIVATE_CONTACT, R.PRIVATE_VIA},
            id="link-local-same-link",
        ),
        pytest.param(
            "198.51.100.7:5060",
            "<sip:alice@198.51.100.7:5060>",
            source("198.51.100.7", 5060),
            "UDP",
            set(),
            id="public-and-matching",
        ),
        pytest.param(
            "198.51.100.7:5060",
            "<sip:alice@198.51.100.7:5060;transport=tcp>",
            source("198.51.100.7", 49152, SipTransport.TCP),
            "TCP",
            set(),
            id="tcp-ephemeral-port-is-not-nat",
        ),
        pytest.param(
            "10.0.0.2:5060",
            "<sip:alice@10.0.0.2:5060;transport=tcp>",
            source("198.51.100.7", 49152, SipTransport.TCP),
            "TCP",
            {R.PRIVATE_CONTACT, R.PRIVATE_VIA, R.VIA_HOST_DIFFERS, R.CONTACT_DIFFERS},
            id="tcp-private",
        ),
        pytest.param(
            "ua.example.net:5060",
            "<sip:alice@ua.example.net>",
            source("198.51.100.7", 5060),
            "UDP",
            {R.VIA_HOST_DIFFERS},
            id="host-names-are-not-resolved",
        ),
        pytest.param(
            "198.51.100.7:5060",
            "*",
            source("198.51.100.7", 5060),
            "UDP",
            set(),
            id="wildcard-contact",
        ),
        pytest.param(
            "198.51.100.7:5060",
            "<tel:+15551234>",
            source("198.51.100.7", 5060),
            "UDP",
            set(),
            id="tel-contact-ignored",
        ),
    ],
)
def test_detect_nat_table(
    via: str, contact: str, src: Source, transport: str, expected: set[NatReason]
) -> None:
    verdict = detect_nat(register(via, contact, transport), src)
    assert set(verdict.reasons) == expected
    assert verdict.natted is bool(expected) and bool(verdict) is bool(expected)


def test_detect_nat_checks_every_contact() -> None:
    request = register("198.51.100.7:5060", "<sip:a@198.51.100.7:5060>, <sip:a@10.1.1.1>")
    assert R.PRIVATE_CONTACT in detect_nat(request, source("198.51.100.7", 5060)).reasons


def test_a_contact_elsewhere_is_no_evidence_when_a_proxy_may_have_relayed_it() -> None:
    ua = "<sip:alice@203.0.113.5:5060>"
    relayed = register("198.51.100.7:5060", ua)
    relayed.headers.add("Via", "SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKua")
    assert not detect_nat(relayed, source("198.51.100.7", 5060))  # a proxy, not a NAT
    direct = register("203.0.113.5:5060", ua)  # the same from another IP, straight
    assert R.CONTACT_DIFFERS in detect_nat(direct, source("198.51.100.7", 5060)).reasons
    private = register("198.51.100.7:5060", "<sip:alice@10.0.0.5:5060>")
    private.headers.add("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKua")
    assert detect_nat(private, source("198.51.100.7", 5060)).reasons == {R.PRIVATE_CONTACT}


def test_a_response_is_judged_as_possibly_relayed() -> None:
    def answer(contact: str) -> SipResponse:
        return make_response(register("192.0.2.1:5060", "*"), 200, headers=[("Contact", contact)])

    via_proxy = source("198.51.100.7", 5060)
    assert not detect_nat_response(answer("<sip:bob@203.0.113.9:5060>"), via_proxy)
    assert detect_nat_response(answer("<sip:bob@10.0.0.9:5060>"), via_proxy).reasons == {
        R.PRIVATE_CONTACT
    }
    # The answerer's own IP at another port: a NAT rewrote the port.
    natted = detect_nat_response(
        answer("<sip:bob@198.51.100.7:5060>"), source("198.51.100.7", 40001)
    )
    assert natted.reasons == {R.CONTACT_DIFFERS}


def test_detect_nat_never_raises_on_broken_headers() -> None:
    request = SipRequest(
        method="REGISTER",
        uri=parse_uri("sip:example.org"),
        headers=Headers([("Via", "garbage"), ("Contact", "<<<")]),
    )
    assert not detect_nat(request, source("198.51.100.7", 5060))


def test_is_private_host() -> None:
    assert is_private_host("172.16.0.1") and is_private_host("fe80::1")
    assert not is_private_host("8.8.8.8") and not is_private_host("example.org")


# ------------------------------------------------------------ binding targets

UA_UDP = source("203.0.113.5", 61000)
UA_TCP = source("203.0.113.5", 49152, SipTransport.TCP)


@pytest.mark.parametrize(
    ("contact", "src", "expected"),
    [
        pytest.param(
            "sip:alice@192.168.1.20:5060",
            UA_UDP,
            Target(SipTransport.UDP, Endpoint("203.0.113.5", 61000), UA_UDP.flow),
            id="private-udp-goes-to-source",
        ),
        pytest.param(
            "sip:alice@192.168.1.20:5060;transport=tcp",
            UA_TCP,
            Target(SipTransport.TCP, Endpoint("203.0.113.5", 49152), UA_TCP.flow),
            id="tcp-goes-over-the-connection",
        ),
        pytest.param(
            "sip:alice@192.168.1.20;transport=tcp",
            UA_UDP,
            Target(SipTransport.UDP, Endpoint("203.0.113.5", 61000), UA_UDP.flow),
            id="contact-transport-ignored-with-source",
        ),
        pytest.param(
            "sip:alice@198.51.100.7",
            None,
            Target(SipTransport.UDP, Endpoint("198.51.100.7", 5060)),
            id="no-source-literal-default-port",
        ),
        pytest.param(
            "sips:alice@198.51.100.7",
            None,
            Target(SipTransport.TLS, Endpoint("198.51.100.7", 5061)),
            id="no-source-sips",
        ),
        pytest.param(
            "sip:alice@[2001:db8::7]:5070;transport=tcp",
            None,
            Target(SipTransport.TCP, Endpoint("2001:db8::7", 5070)),
            id="no-source-ipv6-tcp",
        ),
        pytest.param("sip:alice@ua.example.net", None, None, id="no-source-name"),
        pytest.param("tel:+15551234", None, None, id="no-source-tel"),
    ],
)
def test_binding_target(contact: str, src: Source | None, expected: Target | None) -> None:
    assert binding_target(parse_uri(contact), src) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("udp:203.0.113.5:61000", Endpoint("203.0.113.5", 61000), id="v4"),
        pytest.param("tcp:[2001:db8::5]:40000", Endpoint("2001:db8::5", 40000), id="v6"),
        pytest.param("sctp:203.0.113.5:1", None, id="unknown-transport"),
        pytest.param("udp:203.0.113.5", None, id="no-port"),
        pytest.param("udp:[2001:db8::5", None, id="no-bracket"),
        pytest.param("udp:host.example:5060", None, id="name"),
        pytest.param("udp:1.2.3.4:99999", None, id="port-range"),
        pytest.param("garbage", None, id="garbage"),
    ],
)
def test_parse_source_text(text: str, expected: Endpoint | None) -> None:
    parsed = parse_source_text(text, "flow-1")
    assert (parsed.remote if parsed else None) == expected
    if parsed is not None:
        assert parsed.flow == "flow-1"


def binding(
    key: str = "k1",
    contact: str = "<sip:alice@192.168.1.20:5060>",
    src: str | None = "udp:203.0.113.5:61000",
    flow: str | None = "u7",
    **kw: object,
) -> Binding:
    return Binding(
        key=key,
        contact=contact,
        expires=4e9,
        call_id="c",
        cseq=1,
        source=src,
        flow=flow,
        **kw,  # type: ignore[arg-type]
    )


def test_route_to_binding_keeps_the_contact_and_targets_the_source() -> None:
    route = route_to_binding(binding())
    assert route is not None
    assert str(route.uri) == "sip:alice@192.168.1.20:5060"
    assert route.target == Target(SipTransport.UDP, Endpoint("203.0.113.5", 61000), "u7")
    unpinned = route_to_binding(binding(flow=None))
    assert unpinned is not None
    assert unpinned.target == Target(SipTransport.UDP, Endpoint("203.0.113.5", 61000))
    assert route_to_binding(binding(contact="<<bad")) is None
    assert route_to_binding(binding(contact="<sip:a@h.example>", src=None)) is None


def test_binding_is_natted() -> None:
    assert R.PRIVATE_CONTACT in binding_is_natted(binding()).reasons
    public = binding(contact="<sip:a@203.0.113.5:61000>")
    assert not binding_is_natted(public)
    assert not binding_is_natted(binding(src=None))
    assert not binding_is_natted(binding(src="junk"))
    assert not binding_is_natted(binding(contact="<<bad"))


# ---------------------------------------------------------------------- pinger

PINGER_IP = "192.0.2.1"


class Harness:
    def __init__(self, **config: object) -> None:
        self.layer = TransactionLayer(rng=seeded_rng(7))
        self.pinger = NatPinger(
            NatPingerConfig(host=PINGER_IP, **config),  # type: ignore[arg-type]
            self.layer,
            via_for=lambda _t: Via("UDP", PINGER_IP, 5060, params=(("rport", None),)),
            rng=seeded_rng(42),
        )
        self.now = 0.0
        self.sent: list[tuple[SipMessage, Target, float]] = []
        self.crlf: list[tuple[Target, float]] = []
        self.lost: list[NatBindingLost] = []
        self.unclaimed: list[TransactionEvent] = []

    def pump(self) -> None:
        while (event := self.layer.next_event()) is not None:
            if not self.pinger.handle_event(event, now=self.now):
                self.unclaimed.append(event)
        for message, where in self.layer.messages_to_send():
            self.sent.append((message, where, self.now))
        self.crlf.extend((t, self.now) for t in self.pinger.crlf_pings_to_send())
        while (lost := self.pinger.next_event()) is not None:
            self.lost.append(lost)

    def advance(self, seconds: float, answer: int | None = None) -> None:
        """Run to now+seconds; with ``answer``, each new OPTIONS is answered
        at once with that status."""
        end = self.now + seconds
        while True:
            deadlines = [
                d for d in (self.layer.get_timer(), self.pinger.get_timer()) if d is not None
            ]
            if not deadlines or min(deadlines) > end:
                break
            self.now = max(self.now, min(deadlines))
            before = len(self.sent)
            self.layer.handle_timer(now=self.now)
            self.pinger.handle_timer(now=self.now)
            self.pump()
            if answer is not None:
                for message, _, _ in self.sent[before:]:
                    if isinstance(message, SipRequest) and message.top_via.host == PINGER_IP:
                        self.answer(message, answer)
        self.now = end

    def answer(self, request: SipRequest, status: int) -> None:
        response = make_response(request, status, to_tag="ua")
        self.layer.receive_message(response, UA_UDP, now=self.now)
        self.pump()

    def options(self) -> list[tuple[SipRequest, Target, float]]:
        out = []
        for message, where, at in self.sent:
            if isinstance(message, SipRequest) and message.method == "OPTIONS":
                out.append((message, where, at))
        return out

    def first_options(self) -> list[tuple[SipRequest, Target, float]]:
        """OPTIONS sends that are not retransmissions (distinct branches)."""
        seen: set[str | None] = set()
        out = []
        for request, where, at in self.options():
            if request.top_via.branch not in seen:
                seen.add(request.top_via.branch)
                out.append((request, where, at))
        return out


UDP_TARGET = Target(SipTransport.UDP, Endpoint("203.0.113.5", 61000), "u7")
TCP_TARGET = Target(SipTransport.TCP, Endpoint("203.0.113.5", 49152), "t9")
CONTACT = "<sip:alice@192.168.1.20:5060>"


def test_ping_is_an_options_to_the_registered_contact_over_the_source_flow() -> None:
    h = Harness()
    assert h.pinger.track("sip:alice@example.org", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0, answer=200)
    ((request, where, at),) = h.first_options()
    assert where == UDP_TARGET
    assert str(request.uri) == "sip:alice@192.168.1.20:5060"
    assert request.max_forwards == 70 and request.cseq.method == "OPTIONS"
    assert request.from_.tag and request.to.tag is None
    assert isinstance(request.from_.uri, SipUri) and request.from_.uri.host == PINGER_IP
    assert 0.0 <= at <= 30.0


def test_first_ping_spread_over_one_interval_then_jittered_intervals() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(600.0, answer=200)
    times = [at for _, _, at in h.first_options()]
    assert 0.0 <= times[0] <= 25.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and all(20.0 <= g <= 25.0 for g in gaps)
    assert len(set(gaps)) > 1  # jittered, not fixed
    assert h.lost == [] and h.pinger.is_tracked("aor", "k1")


def test_many_bindings_spread_their_first_pings() -> None:
    h = Harness()
    for i in range(300):
        h.pinger.track("aor", f"k{i}", CONTACT, UDP_TARGET, now=0.0)
    # Up to 20 s (the shortest second wait) every ping sent is a first one:
    # uniform over [0, 25) puts about 60 in each 5 s slice.
    h.advance(20.0, answer=200)
    times = sorted(at for _, _, at in h.first_options())
    assert 200 <= len(times) <= 280
    buckets = [sum(1 for t in times if s <= t < s + 5) for s in (0, 5, 10, 15)]
    assert all(35 <= b <= 85 for b in buckets), buckets


@pytest.mark.parametrize("status", [200, 404, 483, 503])
def test_any_response_keeps_the_binding(status: int) -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(3600.0, answer=status)
    assert h.lost == [] and h.pinger.is_tracked("aor", "k1")
    assert len(h.first_options()) >= 3600 / 25


def test_three_missed_pings_report_the_binding_lost() -> None:
    h = Harness()
    h.pinger.track("sip:alice@example.org", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0 + 3 * 32.0 + 2 * 5.0 + 1.0)
    assert h.lost == [
        NatBindingLost(
            aor="sip:alice@example.org",
            key="k1",
            contact=CONTACT,
            reason=LossReason.NO_ANSWER,
            missed=3,
        )
    ]
    assert not h.pinger.is_tracked("sip:alice@example.org", "k1")
    assert len(h.first_options()) == 3
    h.advance(600.0)
    assert len(h.first_options()) == 3  # no more pings
    assert h.pinger.transaction_count == 0 and h.pinger.in_flight == 0
    assert h.unclaimed == []


def test_an_answer_between_misses_resets_the_count() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0 + 2 * 32.0 + 5.0 + 1.0)  # two misses
    assert h.lost == []
    h.advance(10.0, answer=200)  # third ping answered
    h.advance(30.0 + 2 * 32.0 + 5.0)  # two misses again
    assert h.lost == [] and h.pinger.is_tracked("aor", "k1")


def test_a_transport_failure_counts_as_a_miss() -> None:
    h = Harness(max_missed=1)
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0)
    ((request, _, _),) = h.first_options()
    h.layer.transport_failed_for(request, now=h.now)
    h.pump()
    assert [e.reason for e in h.lost] == [LossReason.NO_ANSWER]


def test_reregistration_resets_misses_and_keeps_one_schedule() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0 + 2 * 32.0 + 5.0 + 1.0)
    assert h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=h.now)
    # The third ping, in flight, times out by t=131: without the reset that
    # would be the third miss; with it the binding needs two more (t>=175).
    h.advance(60.0)
    assert h.lost == [] and h.pinger.binding_count == 1
    h.advance(120.0)
    assert [e.missed for e in h.lost] == [3]


def test_streams_get_crlf_pings_at_the_stream_interval() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", "<sip:alice@10.0.0.2;transport=tcp>", TCP_TARGET, now=0.0)
    h.advance(1200.0)
    times = [at for target, at in h.crlf if target == TCP_TARGET]
    assert 0.0 <= times[0] <= 120.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and all(96.0 <= g <= 120.0 for g in gaps)
    assert h.options() == [] and h.lost == []


def test_closed_stream_flow_loses_its_bindings_only() -> None:
    h = Harness()
    h.pinger.track("aor", "tcp", "<sip:alice@10.0.0.2;transport=tcp>", TCP_TARGET, now=0.0)
    h.pinger.track("aor", "udp", CONTACT, UDP_TARGET, now=0.0)
    h.pinger.flow_closed("t9")
    h.pinger.flow_closed("u7")  # a UDP "flow" never closes a binding
    h.pump()
    assert [(e.key, e.reason) for e in h.lost] == [("tcp", LossReason.FLOW_CLOSED)]
    assert h.pinger.is_tracked("aor", "udp")


def test_in_flight_cap() -> None:
    h = Harness(max_in_flight=3)
    for i in range(10):
        h.pinger.track("aor", f"k{i}", CONTACT, UDP_TARGET, now=0.0)
    h.now = 31.0
    h.pinger.handle_timer(now=h.now)
    h.pump()
    first = h.first_options()
    assert len(first) == 3 and h.pinger.in_flight == 3
    assert h.pinger.get_timer() is None  # full: wait for an outcome
    h.answer(first[0][0], 200)
    assert h.pinger.in_flight == 2
    assert h.pinger.get_timer() is not None and h.pinger.get_timer() <= h.now  # type: ignore[operator]
    h.pinger.handle_timer(now=h.now)
    h.pump()
    assert len(h.first_options()) == 4 and h.pinger.in_flight == 3
    h.advance(3600.0, answer=200)
    assert h.pinger.in_flight <= 3 and h.lost == []


def test_untrack_with_a_ping_in_flight_leaves_nothing() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.advance(30.0)
    assert h.pinger.in_flight == 1
    h.pinger.untrack("aor", "k1")
    h.pinger.untrack("aor", "never-tracked")
    assert h.pinger.in_flight == 0 and h.pinger.binding_count == 0
    h.advance(600.0)
    assert h.lost == [] and h.unclaimed == [] and h.pinger.transaction_count == 0
    assert h.pinger.get_timer() is None and h.pinger.heap_size == 0
    assert len(h.first_options()) == 1


def test_sync_aor_tracks_only_natted_non_outbound_bindings() -> None:
    h = Harness()
    bindings = [
        binding("natted"),
        binding("public", contact="<sip:a@203.0.113.5:61000>"),
        binding("outbound", reg_id=1, instance='"<urn:uuid:1>"'),
        binding("pathed", path=("<sip:edge.example;lr>",)),
        binding("no-source", src=None),
        binding("bad", contact="<<bad"),
    ]
    h.pinger.sync_aor("aor", bindings, now=0.0)
    assert [k for k in ("natted", "public", "outbound", "pathed", "no-source", "bad")
            if h.pinger.is_tracked("aor", k)] == ["natted"]  # fmt: skip
    h.pinger.sync_aor("aor", [], now=1.0)
    assert h.pinger.binding_count == 0


def test_track_refuses_a_contact_that_does_not_parse() -> None:
    h = Harness()
    assert not h.pinger.track("aor", "k", "<<bad", UDP_TARGET, now=0.0)
    assert h.pinger.binding_count == 0


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"udp_interval": 0.0}, id="interval"),
        pytest.param({"jitter": 1.0}, id="jitter"),
        pytest.param({"max_missed": 0}, id="missed"),
        pytest.param({"max_in_flight": 0}, id="in-flight"),
    ],
)
def test_config_rejects_nonsense(config: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        NatPingerConfig(host=PINGER_IP, **config)  # type: ignore[arg-type]


def tenk(n: int = 10_000) -> tuple[list[str], list[Target]]:
    contacts = [f"<sip:u{i}@10.{i // 65536}.{i // 256 % 256}.{i % 256}:5060>" for i in range(n)]
    targets = [
        Target(SipTransport.UDP, Endpoint("203.0.113.5", 1024 + i), f"u{i}") for i in range(n)
    ]
    return contacts, targets


def test_10k_bindings_one_interval_pings_each_with_bounded_state() -> None:
    n = 10_000
    h = Harness(max_in_flight=100)
    contacts, targets = tenk(n)
    for i in range(n):
        h.pinger.track(f"sip:u{i}@example.org", "k", contacts[i], targets[i], now=0.0)
    # One interval: every binding pinged, none twice within 20 s; heap O(n).
    h.advance(25.0, answer=200)
    assert len({str(r.uri) for r, _, _ in h.first_options()}) == n
    assert len(h.first_options()) <= n + n // 4
    assert h.pinger.in_flight <= 100
    assert h.pinger.heap_size <= 2 * n + 64
    for i in range(n):
        h.pinger.untrack(f"sip:u{i}@example.org", "k")
    h.advance(60.0)
    assert h.pinger.get_timer() is None
    assert h.pinger.binding_count == 0 and h.pinger.heap_size == 0
    assert h.pinger.transaction_count == 0 and h.layer.transaction_count == 0


def test_10k_bindings_memory_is_small_and_freed_on_removal() -> None:
    n = 10_000
    h = Harness(max_in_flight=100)
    contacts, targets = tenk(n)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            h.pinger.track(f"sip:u{i}@example.org", "k", contacts[i], targets[i], now=0.0)
        per_binding = (tracemalloc.get_traced_memory()[0] - base) / n
        h.advance(2.0, answer=200)  # some pings answered
        h.advance(1.0)  # and 100 in flight at removal
        assert h.pinger.in_flight == 100
        for i in range(n):
            h.pinger.untrack(f"sip:u{i}@example.org", "k")
        h.advance(60.0)
        h.sent.clear()  # the harness's record of what went out
        gc.collect()
        mine = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*nat_helper.py")]
        )
        left_in_pinger = sum(stat.size for stat in mine.statistics("filename"))
    finally:
        tracemalloc.stop()
    assert per_binding < 1200, (
        per_binding
    )  # measured ~790 B (entry, parsed URI, AoR dict and strings, heap slot)
    assert left_in_pinger < 4096, left_in_pinger
    assert h.pinger.transaction_count == 0 and h.layer.transaction_count == 0


def test_registering_from_a_new_source_moves_the_binding_to_it() -> None:
    h = Harness()
    h.pinger.track("aor", "k1", CONTACT, TCP_TARGET, now=0.0)
    assert h.pinger.track("aor", "k1", CONTACT, UDP_TARGET, now=0.0)
    h.pinger.flow_closed("t9")  # the old connection no longer matters
    h.advance(30.0, answer=200)
    assert h.lost == [] and h.crlf == []
    assert {where for _, where, _ in h.first_options()} == {UDP_TARGET}


def test_a_flow_with_several_bindings_loses_them_all() -> None:
    h = Harness()
    for aor in ("sip:a@example.org", "sip:b@example.org"):
        h.pinger.track(aor, "k", "<sip:x@10.0.0.2;transport=tcp>", TCP_TARGET, now=0.0)
    h.pinger.flow_closed("t9")
    h.pump()
    assert sorted(e.aor for e in h.lost) == ["sip:a@example.org", "sip:b@example.org"]
    assert h.pinger.binding_count == 0 and h.pinger.get_timer() is None


_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60)


@given(via=_HEADER_TEXT, contact=_HEADER_TEXT)
def test_detect_nat_never_raises(via: str, contact: str) -> None:
    request = SipRequest(
        method="REGISTER",
        uri=parse_uri("sip:example.org"),
        headers=Headers([("Via", f"SIP/2.0/UDP {via}"), ("Contact", contact)]),
    )
    detect_nat(request, source("198.51.100.7", 5060))


@given(text=st.text(max_size=40))
def test_parse_source_text_never_raises(text: str) -> None:
    parse_source_text(text)


# ------------------------------------------- on the simulated internet, with a NAT


class _PingingServer:
    """The smallest home-proxy driver around the sans-IO parts: the transport
    layer, a transaction layer, and the pinger (what sip-server would run)."""

    def __init__(self, host: SimHost, *, pings: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self.pings = pings
        self.layer = TransactionLayer(rng=seeded_rng(3))
        self.transport = SipTransportLayer(host.stack, self._on, rng=seeded_rng(4))
        via = Via("UDP", REGISTRAR_IP, SIP_PORT, params=(("rport", None),))
        self.pinger = NatPinger(
            NatPingerConfig(host=REGISTRAR_IP),
            self.layer,
            via_for=lambda _t: via,
            rng=seeded_rng(5),
        )
        self.route: tuple[str, Target] | None = None
        self.verdict: NatVerdict | None = None
        self.answers: list[int] = []
        self._timer: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await self.transport.listen(SipTransport.UDP, Endpoint(REGISTRAR_IP, SIP_PORT))

    def _on(self, message: SipMessage, src: Source) -> None:
        self.layer.receive_message(message, src, now=self.loop.time())
        self.pump()

    def pump(self) -> None:
        now = self.loop.time()
        while (event := self.layer.next_event()) is not None:
            if self.pinger.handle_event(event, now=now):
                continue
            match event:
                case RequestReceived(request=request, source=src, server_txn=txn):
                    self.verdict = detect_nat(request, src)
                    contacts = request.contacts
                    assert contacts != "*"
                    contact = str(contacts[0].without_params("expires"))
                    target = binding_target(contacts[0], src)
                    assert target is not None
                    self.route = (contact, target)
                    if self.pings and self.verdict:
                        self.pinger.track("sip:alice@example.org", "k", contact, target, now=now)
                    response = make_response(request, 200, to_tag="reg")
                    response.headers.add("Contact", f"{contact};expires=7200")
                    self.layer.send_response(response, now=now, server_txn=txn)
                case ResponseReceived(response=response):
                    self.answers.append(response.status)
        for message, where in self.layer.messages_to_send():
            self.transport.send_soon(message, where)
        while self.pinger.next_event() is not None:
            pass
        if self._timer is not None:
            self._timer.cancel()
        deadlines = [t for t in (self.layer.get_timer(), self.pinger.get_timer()) if t is not None]
        if deadlines:
            self._timer = self.loop.call_at(min(deadlines), self._fire)

    def _fire(self) -> None:
        now = self.loop.time()
        self.layer.handle_timer(now=now)
        self.pinger.handle_timer(now=now)
        self.pump()

    def send_message_to_alice(self) -> None:
        """A request for alice, alias style: her Contact as Request-URI, her
        REGISTER's source as next hop."""
        assert self.route is not None
        contact, target = self.route
        uri = parse_name_addr(contact).uri
        headers = Headers(
            [
                ("Via", f"SIP/2.0/UDP {REGISTRAR_IP}:{SIP_PORT};rport"),
                ("Max-Forwards", "70"),
                ("From", "<sip:bob@example.org>;tag=bob"),
                ("To", "<sip:alice@example.org>"),
                ("Call-ID", "msg-1"),
                ("CSeq", "1 MESSAGE"),
            ]
        )
        request = SipRequest(method="MESSAGE", uri=uri, headers=headers)
        self.layer.send_request(request, target, now=self.loop.time())
        self.pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.transport.close()


@pytest.mark.parametrize(
    ("pings", "reached"),
    [
        pytest.param(True, True, id="server-pings-an-hour"),
        pytest.param(False, False, id="no-pings"),
    ],
)
def test_server_pings_keep_a_passive_ua_reachable_through_a_30s_nat(
    pings: bool, reached: bool
) -> None:
    """A UA without Outbound or keepalives behind a port-restricted cone NAT
    whose UDP mappings expire after 30 s idle: after an hour, a request sent
    alias style reaches it only if the server's OPTIONS kept the mapping."""

    async def main() -> tuple[bool, list[int], NatVerdict | None, int]:
        net = Internet(seed=0, default_link=Link(delay=0.02))
        server_host = net.add_host("registrar", REGISTRAR_IP)
        behavior = dataclasses.replace(PRESETS["port-restricted-cone"], udp_mapping_timeout=30.0)
        nat = attach_nat(net, behavior, seed=0)
        alice = LabPhone(net.add_host("alice", behind=nat), "alice")
        server = _PingingServer(server_host, pings=pings)
        await server.start()
        await alice.start()
        try:
            await alice.register(expires=7200)
            assert (await alice.final_response(10)) is not None
            await asyncio.sleep(3600.0)
            options = sum(1 for r in alice.requests if r.method == "OPTIONS")
            server.send_message_to_alice()
            await asyncio.sleep(40.0)
            got = any(r.method == "MESSAGE" for r in alice.requests)
            return got, server.answers, server.verdict, options
        finally:
            alice.close()
            server.close()

    got, answers, verdict, options = run_virtual(main)
    assert verdict is not None and NatReason.PRIVATE_CONTACT in verdict.reasons
    assert got is reached
    assert (200 in answers) is reached
    assert (options >= 3600 / 25) is pings


def test_a_binding_that_expires_unrefreshed_is_no_longer_pinged() -> None:
    h = Harness()
    wall = 1_000.0  # the registrar's wall clock at now=0
    expiring = dataclasses.replace(binding(), expires=wall + 60.0)
    h.pinger.sync_aor("aor", [expiring], now=0.0, wall=wall)
    h.advance(200.0, answer=200)
    assert all(at < 60.0 for _, _, at in h.first_options())
    assert h.pinger.binding_count == 0 and h.pinger.heap_size == 0
    assert h.lost == []  # expiry is no loss: nothing to delete


def test_a_refresh_moves_the_expiry() -> None:
    h = Harness()
    wall = 1_000.0
    h.pinger.sync_aor(
        "aor", [dataclasses.replace(binding(), expires=wall + 60.0)], now=0.0, wall=wall
    )
    h.advance(50.0, answer=200)
    refreshed = dataclasses.replace(binding(), expires=wall + 50.0 + 60.0)
    h.pinger.sync_aor("aor", [refreshed], now=50.0, wall=wall + 50.0)
    h.advance(55.0, answer=200)
    assert any(60.0 < at < 110.0 for _, _, at in h.first_options())
    h.advance(100.0, answer=200)
    assert all(at < 110.0 for _, _, at in h.first_options())
    assert h.pinger.binding_count == 0


def test_refresh_aor_follows_a_lookup_without_tracking_anything_new() -> None:
    h = Harness()
    wall = 1_000.0
    mine = dataclasses.replace(binding("mine"), expires=wall + 60.0)
    h.pinger.sync_aor("aor", [mine], now=0.0, wall=wall)
    elsewhere = dataclasses.replace(binding("elsewhere"), expires=wall + 3600.0)
    # Another registrar refreshed "mine" for an hour and added "elsewhere".
    longer = dataclasses.replace(mine, expires=wall + 3600.0)
    h.pinger.refresh_aor("aor", [longer, elsewhere], now=10.0, wall=wall + 10.0)
    assert h.pinger.is_tracked("aor", "mine") and not h.pinger.is_tracked("aor", "elsewhere")
    h.advance(300.0, answer=200)
    assert any(at > 60.0 for _, _, at in h.first_options())  # the new expiry holds
    h.pinger.refresh_aor("aor", [elsewhere], now=h.now, wall=wall + h.now)  # "mine" removed
    assert h.pinger.binding_count == 0


def test_a_registered_contact_is_judged_by_its_binding() -> None:
    assert detect_nat_binding(binding()).reasons == {
        NatReason.PRIVATE_CONTACT,
        NatReason.CONTACT_DIFFERS,
    }
    public = binding(contact="<sip:alice@203.0.113.5:61000>")
    assert not detect_nat_binding(public)
    # Through an edge proxy the source is the edge: only a private Contact counts.
    via_edge = binding(contact="<sip:alice@198.51.100.7:5060>", path=("<sip:edge.example;lr>",))
    assert not detect_nat_binding(via_edge)
    assert detect_nat_binding(binding(path=("<sip:edge.example;lr>",))).reasons == {
        NatReason.PRIVATE_CONTACT
    }
    assert detect_nat_binding(binding(src=None)).reasons == {NatReason.PRIVATE_CONTACT}
