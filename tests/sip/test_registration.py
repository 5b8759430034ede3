"""The registration client (RFC 3261 §10.2, RFC 5626 §4), sans-IO: explicit
``now``, seeded rng, a scripted registrar answering what goes out."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.sip.digest import AuthOk as DigestOk
from natkit.sip.digest import DigestAlgorithm, DigestServer, DigestServerConfig, compute_ha1
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import NameAddr
from natkit.sip.message import SipRequest, SipResponse, make_response
from natkit.sip.registration import (
    FlowConfig,
    FlowState,
    RegistrationClient,
    RegistrationConfig,
    backoff_bound,
    keepalive_bounds,
)
from natkit.sip.registration_events import (
    FlowFailed,
    KeepaliveDue,
    KeepaliveMethod,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationSucceeded,
    Unregistered,
)
from natkit.sip.transaction import TransactionLayer
from natkit.sip.uri import SipUri, parse_uri

LOCAL = Endpoint("192.0.2.10", 5060)
EDGE1 = Endpoint("198.51.100.1", 5060)
EDGE2 = Endpoint("198.51.100.2", 5060)
INSTANCE = "urn:uuid:00000000-0000-1000-8000-000a95a0e128"


def contact_of(request: SipRequest) -> NameAddr:
    contacts = request.contacts
    assert isinstance(contacts, list) and len(contacts) == 1
    return contacts[0]


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def config(
    *,
    transport: SipTransport = SipTransport.TCP,
    edges: tuple[Endpoint, ...] = (EDGE1,),
    outbound: bool = True,
    seed: int = 1,
    **changes: object,
) -> RegistrationConfig:
    flows = tuple(
        FlowConfig(Target(transport, edge), sip(f"sip:{edge.host}:{edge.port}")) for edge in edges
    )
    options: dict[str, object] = {
        "aor": sip("sip:alice@example.com"),
        "registrar": sip("sip:example.com"),
        "contact": sip("sip:alice@192.0.2.10:5060;transport=tcp"),
        "sent_by": LOCAL,
        "flows": flows,
        "outbound": outbound,
        "instance_id": INSTANCE,
        "rng": random.Random(seed),
    }
    options.update(changes)
    return RegistrationConfig(**options)  # type: ignore[arg-type]


Answer = Callable[[SipRequest], SipResponse | None]
Reply = Callable[[SipRequest], SipResponse]


def ok(
    *, expires: int | None = None, outbound: bool = True, flow_timer: int | None = None
) -> Reply:
    """A 200 listing the request's Contact with the granted expiry."""

    def answer(request: SipRequest) -> SipResponse:
        headers: list[tuple[str, str]] = []
        granted = expires if expires is not None else request.expires
        for value in request.headers.values("Contact"):
            headers.append(("Contact", f"{value};expires={granted}"))
        if outbound:
            headers.append(("Require", "outbound"))
        if flow_timer is not None:
            headers.append(("Flow-Timer", str(flow_timer)))
        return make_response(request, 200, to_tag="reg", headers=headers)

    return answer


def status(code: int, *headers: tuple[str, str]) -> Reply:
    return lambda request: make_response(request, code, to_tag="reg", headers=headers)


class Harness:
    """The client and a scripted registrar; ``now`` advanced explicitly."""

    def __init__(self, client: RegistrationClient) -> None:
        self.client = client
        self.now = 0.0
        self.sent: list[tuple[float, SipRequest, Target]] = []
        self.events: list[RegistrationEvent] = []
        self.history: list[tuple[float, RegistrationEvent]] = []
        self.flow_ids: dict[Endpoint, int] = {}

    def outgoing(self) -> list[tuple[SipRequest, Target]]:
        out: list[tuple[SipRequest, Target]] = []
        for msg, target in self.client.messages_to_send():
            assert isinstance(msg, SipRequest)
            self.sent.append((self.now, msg, target))
            out.append((msg, target))
        return out

    def answer(self, answer: Answer | dict[Endpoint, Answer]) -> list[SipRequest]:
        """Answer every request that went out (by edge if a dict)."""
        requests = self.outgoing()
        for request, target in requests:
            pick = answer[target.remote] if isinstance(answer, dict) else answer
            response = pick(request)
            if response is None:
                continue
            number = self.flow_ids.setdefault(target.remote, len(self.flow_ids) + 1)
            flow = target.flow or f"tcp-{target.remote.host}-{number}"
            source = Source(target.transport, target.remote, LOCAL, flow)
            self.client.receive_message(response, source, now=self.now)
        self.drain()
        return [r for r, _ in requests]

    def advance(
        self,
        until: float,
        *,
        pong: bool = True,
        answer: Answer | dict[Endpoint, Answer] | None = None,
    ) -> None:
        """Run timers up to ``until``, answering keepalives if ``pong`` and
        requests with ``answer`` (else they stay unanswered)."""
        while (deadline := self.client.get_timer()) is not None and deadline <= until:
            self.now = max(self.now, deadline)
            self.client.handle_timer(now=self.now)
            self.drain()
            if answer is not None:
                self.answer(answer)
            if pong:
                for event in self.events:
                    if isinstance(event, KeepaliveDue):
                        self.client.keepalive_answered(event.flow, now=self.now)
                self.events = [e for e in self.events if not isinstance(e, KeepaliveDue)]
        self.now = until

    def run_to_next(self) -> None:
        deadline = self.client.get_timer()
        assert deadline is not None
        self.now = max(self.now, deadline)
        self.client.handle_timer(now=self.now)
        self.drain()

    def drain(self) -> None:
        while (event := self.client.next_event()) is not None:
            self.events.append(event)
            self.history.append((self.now, event))

    def take(self) -> list[RegistrationEvent]:
        self.drain()
        events, self.events = self.events, []
        return events


def harness(**changes: Any) -> Harness:
    h = Harness(RegistrationClient(config(**changes)))
    h.client.register(now=0.0)
    return h


# --------------------------------------------------------------- the REGISTER


def test_first_register_carries_outbound_contact_route_and_supported() -> None:
    h = harness()
    [(request, target)] = h.outgoing()
    assert request.method == "REGISTER"
    assert str(request.uri) == "sip:example.com"
    assert target == Target(SipTransport.TCP, EDGE1)
    assert request.headers.get("Route") == "<sip:198.51.100.1:5060;lr>"
    contact = contact_of(request)
    assert contact.param("reg-id") == "1"
    assert contact.param("+sip.instance") == f"<{INSTANCE}>"
    assert request.expires == 3600
    assert "outbound" in request.headers.values("Supported")
    assert "path" in request.headers.values("Supported")
    assert request.top_via.has_rport
    assert request.to.uri == request.from_.uri == sip("sip:alice@example.com")


def test_without_outbound_one_plain_flow() -> None:
    h = harness(outbound=False, edges=(EDGE1, EDGE2))
    [(request, _)] = h.outgoing()
    assert h.client.flow_count == 1
    contact = contact_of(request)
    assert not contact.has_param("reg-id")
    assert "outbound" not in request.headers.values("Supported")


def test_instance_id_generated_from_rng_is_a_v4_urn() -> None:
    a = RegistrationClient(config(instance_id=None, seed=7))
    b = RegistrationClient(config(instance_id=None, seed=7))
    assert a.instance_id == b.instance_id
    assert a.instance_id.startswith("urn:uuid:")
    assert a.instance_id[9:][14] == "4"


def test_digest_challenge_answered_with_next_cseq_same_call_id() -> None:
    server = DigestServer(
        DigestServerConfig(
            realm="example.com", secrets=(b"s",), algorithms=(DigestAlgorithm.SHA256,)
        ),
        rng=random.Random(3),
    )
    ha1 = compute_ha1(DigestAlgorithm.SHA256, "alice", "example.com", "secret")

    def registrar(request: SipRequest) -> SipResponse:
        credentials = server.credentials_for(request)
        if credentials is None:
            return server.challenge(request, now=0.0)
        result = server.check(credentials, request, ha1, now=0.0)
        assert isinstance(result, DigestOk)
        return ok()(request)

    h = harness(username="alice", password="secret")
    [first] = h.answer(registrar)
    [second] = h.answer(registrar)
    assert "Authorization" not in first.headers
    assert "Authorization" in second.headers
    assert second.call_id == first.call_id
    assert second.cseq.seq == first.cseq.seq + 1
    assert second.top_via.branch != first.top_via.branch
    [event] = h.take()
    assert isinstance(event, RegistrationSucceeded)
    assert event.outbound
    # the refresh reuses the nonce (next nonce-count): no second 401
    h.advance(1800.0)
    [refresh] = h.answer(registrar)
    assert "Authorization" in refresh.headers
    assert refresh.cseq.seq == second.cseq.seq + 1
    assert refresh.call_id == first.call_id


def test_wrong_password_gives_up_without_looping() -> None:
    server = DigestServer(
        DigestServerConfig(realm="example.com", secrets=(b"s",)), rng=random.Random(3)
    )
    h = harness(username="alice", password="wrong")
    challenge: Answer = lambda request: server.challenge(request, now=0.0)  # noqa: E731
    h.answer(challenge)
    h.answer(challenge)
    assert h.outgoing() == []
    [event] = h.take()
    assert isinstance(event, RegistrationFailed) and event.status == 401
    assert event.retry_at is not None and event.retry_at >= 15.0


# ------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("granted", "refresh"),
    [
        pytest.param(3600, 1800.0, id="full-hour"),
        pytest.param(600, 300.0, id="shortened"),
        pytest.param(60, 30.0, id="one-minute"),
    ],
)
def test_refresh_at_half_the_granted_expiry(granted: int, refresh: float) -> None:
    h = harness()
    h.answer(ok(expires=granted))
    [event] = [e for e in h.take() if isinstance(e, RegistrationSucceeded)]
    assert event.expires == granted and event.refresh_at == refresh
    h.advance(refresh - 0.001)
    assert [r for r in h.outgoing() if r[0].method == "REGISTER"] == []
    h.advance(refresh)
    [(request, target)] = h.outgoing()
    assert request.expires == 3600
    assert target.flow is not None  # refresh goes over the registered flow


def test_granted_expiry_from_expires_header_when_contact_has_none() -> None:
    h = harness()

    def answer(request: SipRequest) -> SipResponse:
        return make_response(
            request,
            200,
            headers=[("Contact", request.headers.values("Contact")[0]), ("Expires", "120")],
        )

    h.answer(answer)
    [event] = h.take()
    assert isinstance(event, RegistrationSucceeded) and event.expires == 120
    assert not event.outbound


def test_interval_too_brief_retries_with_min_expires() -> None:
    h = harness(expires=60)
    [first] = h.answer(status(423, ("Min-Expires", "300")))
    [second] = h.answer(ok())
    assert first.expires == 60 and second.expires == 300
    assert second.cseq.seq == first.cseq.seq + 1 and second.call_id == first.call_id
    [event] = h.take()
    assert isinstance(event, RegistrationSucceeded) and event.expires == 300


def test_gruus_reported() -> None:
    h = harness()

    def answer(request: SipRequest) -> SipResponse:
        contact = request.headers.values("Contact")[0]
        value = (
            f'{contact};expires=3600;pub-gruu="sip:alice@example.com;gr=x"'
            ';temp-gruu="sip:t@example.com;gr"'
        )
        return make_response(request, 200, headers=[("Contact", value), ("Require", "outbound")])

    h.answer(answer)
    [event] = h.take()
    assert isinstance(event, RegistrationSucceeded)
    assert event.pub_gruu == "sip:alice@example.com;gr=x"
    assert event.temp_gruu == "sip:t@example.com;gr"


# ------------------------------------------------------------------ back-off


@pytest.mark.parametrize(
    ("failures", "all_failed", "bound"),
    [
        pytest.param(1, True, 60.0, id="1-all-failed"),
        pytest.param(2, True, 120.0, id="2-all-failed"),
        pytest.param(3, True, 240.0, id="3-all-failed-rfc-example"),
        pytest.param(6, True, 1800.0, id="6-all-failed-capped"),
        pytest.param(1, False, 180.0, id="1-one-up"),
        pytest.param(2, False, 360.0, id="2-one-up"),
        pytest.param(4, False, 1440.0, id="4-one-up"),
        pytest.param(5, False, 1800.0, id="5-one-up-capped"),
        pytest.param(1000, True, 1800.0, id="huge-count"),
    ],
)
def test_backoff_bound_table(failures: int, all_failed: bool, bound: float) -> None:
    assert backoff_bound(failures, all_failed=all_failed) == bound


def test_two_flows_one_failing_backoff_sequence() -> None:
    h = harness(edges=(EDGE1, EDGE2))
    assert h.client.flow_count == 2
    h.answer({EDGE1: ok(), EDGE2: status(503)})
    events = h.take()
    assert isinstance(events[0], RegistrationSucceeded) and events[0].flow == 1
    assert h.client.flow_state(1) is FlowState.REGISTERED
    waits: list[float] = []
    failure_at = h.now
    assert isinstance(events[1], RegistrationFailed) and events[1].flow == 2
    for attempt in range(1, 7):
        failed = [e for e in events if isinstance(e, RegistrationFailed) and e.flow == 2][-1]
        assert failed.retry_at is not None
        waits.append(failed.retry_at - failure_at)
        bound = min(1800.0, 90.0 * 2**attempt)  # flow 1 is up: base 90 s
        assert 0.5 * bound <= waits[-1] <= bound
        h.advance(failed.retry_at - 0.001, answer={EDGE1: ok()})
        events = [e for e in h.take() if e.flow == 2]
        assert events == []
        h.advance(failed.retry_at, answer={EDGE2: status(503), EDGE1: ok()})
        failure_at = h.now
        events = h.take()
        assert h.client.flow_state(1) is FlowState.REGISTERED
    assert h.client.consecutive_failures(2) == 7


def test_flow_failure_and_recovery() -> None:
    h = harness(edges=(EDGE1, EDGE2))
    h.answer(ok(flow_timer=30))
    h.take()
    h.client.flow_closed(1, now=h.now)
    [failed] = h.take()
    assert isinstance(failed, FlowFailed) and failed.flow == 1
    assert 90.0 <= failed.retry_at - h.now <= 180.0  # flow 2 is up: base 90, one failure
    assert h.client.flow_target(1).flow is None  # a new connection next time
    h.advance(failed.retry_at)
    [request] = h.answer(ok())
    assert contact_of(request).param("reg-id") == "1"
    assert h.client.flow_state(1) is FlowState.REGISTERED
    assert h.client.consecutive_failures(1) == 0
    # the other flow was never disturbed
    assert h.client.flow_state(2) is FlowState.REGISTERED


def test_all_flows_failed_uses_base_30() -> None:
    h = harness()
    h.answer(ok())
    h.take()
    h.client.keepalive_failed(1, now=h.now)
    [failed] = h.take()
    assert isinstance(failed, FlowFailed)
    assert 30.0 <= failed.retry_at - h.now <= 60.0


def test_timeout_counts_as_failure() -> None:
    h = harness(transport=SipTransport.UDP)
    h.outgoing()
    h.advance(40.0)  # Timer F (32 s) fires
    failed = [e for e in h.take() if isinstance(e, RegistrationFailed)]
    assert failed and failed[0].status is None and failed[0].retry_at is not None
    assert 32.0 + 30.0 <= failed[0].retry_at <= 32.0 + 60.0


def test_retry_after_delays_the_retry_beyond_the_backoff() -> None:
    h = harness()
    h.answer(status(503, ("Retry-After", "600 (maintenance)")))
    [failed] = h.take()
    assert isinstance(failed, RegistrationFailed) and failed.retry_at == 600.0


def test_shared_transaction_layer_events_routed_by_the_core() -> None:
    layer = TransactionLayer(rng=random.Random(9))
    client = RegistrationClient(config(), layer)
    client.register(now=0.0)
    [(request, target)] = layer.messages_to_send()
    assert isinstance(request, SipRequest)
    response = ok()(request)
    layer.receive_message(response, Source(target.transport, target.remote, LOCAL, "f1"), now=0.0)
    mine = 0
    while (event := layer.next_event()) is not None:
        mine += client.handle_transaction_event(event, now=0.0)
    assert mine >= 1
    succeeded = client.next_event()
    assert isinstance(succeeded, RegistrationSucceeded)
    assert client.flow_target(1).flow == "f1"
    assert client.get_timer() is not None  # the refresh (or a keepalive) is pending


# ---------------------------------------------------------------- keepalives


@pytest.mark.parametrize(
    ("transport", "flow_timer", "low", "high", "method"),
    [
        pytest.param(SipTransport.TCP, None, 95.0, 120.0, KeepaliveMethod.CRLF, id="tcp-default"),
        pytest.param(SipTransport.TLS, 50, 40.0, 50.0, KeepaliveMethod.CRLF, id="tls-flow-timer"),
        pytest.param(SipTransport.UDP, None, 24.0, 29.0, KeepaliveMethod.STUN, id="udp-default"),
        pytest.param(SipTransport.UDP, 20, 16.0, 20.0, KeepaliveMethod.STUN, id="udp-flow-timer"),
    ],
)
def test_keepalive_intervals_within_bounds(
    transport: SipTransport,
    flow_timer: int | None,
    low: float,
    high: float,
    method: KeepaliveMethod,
) -> None:
    assert keepalive_bounds(transport, flow_timer) == (low, high)
    h = harness(transport=transport, seed=11)
    h.answer(ok(flow_timer=flow_timer))
    h.take()
    last = h.now
    intervals: list[float] = []
    while len(intervals) < 20:
        h.run_to_next()
        for event in h.take():
            if isinstance(event, KeepaliveDue):
                assert event.method is method and event.target.flow is not None
                intervals.append(h.now - last)
                h.client.keepalive_answered(event.flow, now=h.now)
                last = h.now
        h.answer(ok(flow_timer=flow_timer))  # refreshes
    assert all(low <= i <= high for i in intervals), intervals
    assert max(intervals) - min(intervals) > 0  # randomised


def test_no_keepalives_without_require_outbound() -> None:
    h = harness()
    h.answer(ok(outbound=False))
    h.advance(1799.0)
    assert not [e for e in h.take() if isinstance(e, KeepaliveDue)]


def test_unanswered_pong_fails_the_flow_after_10s() -> None:
    h = harness()
    h.answer(ok(flow_timer=30))
    h.take()
    h.run_to_next()
    [due] = h.take()
    assert isinstance(due, KeepaliveDue)
    sent_at = h.now
    h.run_to_next()
    [failed] = h.take()
    assert isinstance(failed, FlowFailed) and h.now == sent_at + 10.0


def test_flow_closed_by_transport_flow_id() -> None:
    h = harness()
    h.answer(ok())
    h.take()
    flow_id = h.client.flow_target(1).flow
    assert flow_id is not None
    h.client.flow_closed(flow_id, now=h.now)
    assert isinstance(h.take()[0], FlowFailed)
    h.client.flow_closed("unknown-flow", now=h.now)
    assert h.take() == []


# ----------------------------------------------------- address change, removal


def test_local_address_change_reregisters_all_flows_now() -> None:
    h = harness(edges=(EDGE1, EDGE2))
    h.answer(ok())
    h.take()
    h.now = 100.0
    new_contact = sip("sip:alice@203.0.113.7:5060;transport=tcp")
    h.client.local_address_changed(
        now=h.now, contact=new_contact, sent_by=Endpoint("203.0.113.7", 5060)
    )
    requests = h.outgoing()
    assert len(requests) == 2
    for request, target in requests:
        assert target.flow is None
        assert contact_of(request).uri == new_contact
        assert request.top_via.host == "203.0.113.7"


def test_unregister_sends_expires_zero_on_every_flow() -> None:
    h = harness(edges=(EDGE1, EDGE2))
    h.answer(ok())
    h.take()
    h.client.unregister(now=h.now)
    requests = h.answer(ok(expires=0))
    assert len(requests) == 2 and all(r.expires == 0 for r in requests)
    events = h.take()
    assert sorted(e.flow for e in events if isinstance(e, Unregistered)) == [1, 2]
    assert h.client.get_timer() is None or all(
        h.client.flow_state(i) is FlowState.UNREGISTERED for i in (1, 2)
    )
    h.advance(10_000.0)
    assert not [r for r in h.outgoing() if r[0].method == "REGISTER"]


# ---------------------------------------------------------------- properties

ACTIONS = st.lists(
    st.one_of(
        st.sampled_from([200, 401, 403, 423, 480, 500, 503, 0]),  # 0: never answered
        st.sampled_from(["timer", "close1", "close2", "ka-fail", "address"]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(actions=ACTIONS, seed=st.integers(0, 2**16), udp=st.booleans())
def test_random_responses_never_raise_and_always_retry_with_backoff(
    actions: list[int | str], seed: int, udp: bool
) -> None:
    h = harness(
        seed=seed,
        edges=(EDGE1, EDGE2),
        transport=SipTransport.UDP if udp else SipTransport.TCP,
        username="alice",
        password="pw",
    )
    for action in actions:
        if isinstance(action, int):
            code = action
            h.answer(
                lambda r, code=code: (
                    None  # type: ignore[misc]
                    if code == 0
                    else (
                        ok(flow_timer=30)(r)
                        if code == 200
                        else status(code, ("Min-Expires", "7200"))(r)
                    )
                )
            )
        elif action == "timer":
            h.run_to_next() if h.client.get_timer() is not None else None
        elif action == "close1":
            h.client.flow_closed(1, now=h.now)
        elif action == "close2":
            h.client.flow_closed(2, now=h.now)
        elif action == "ka-fail":
            h.client.keepalive_failed(1, now=h.now)
        else:
            h.client.local_address_changed(now=h.now)
        h.drain()
        h.outgoing()
        # every flow has something pending: a transaction, a refresh or a retry
        assert h.client.get_timer() is not None
        for index in (1, 2):
            assert h.client.flow_state(index) is not FlowState.IDLE
    # every failure waits at least half of the smallest back-off bound
    # (base 30 s, one failure: 30-60 s) and at most max-time
    for at, event in h.history:
        if isinstance(event, RegistrationFailed | FlowFailed):
            assert 30.0 <= event.retry_at - at <= 1800.0 or (
                isinstance(event, RegistrationFailed) and event.retry_at - at <= 7200.0
            )
    # no retry storm: a flow sends at most three REGISTERs without time
    # passing (the attempt, its digest answer, its 423 retry) per action
    times = [t for t, r, _ in h.sent if r.method == "REGISTER"]
    for t in set(times):
        assert times.count(t) <= 2 * 3 * (len(actions) + 1)


@settings(max_examples=50, deadline=None)
@given(failures=st.integers(0, 40), seed=st.integers(0, 2**16), others_up=st.booleans())
def test_backoff_wait_in_half_to_full_bound(failures: int, seed: int, others_up: bool) -> None:
    h = harness(seed=seed, edges=(EDGE1, EDGE2))
    h.answer({EDGE1: ok(), EDGE2: ok() if others_up else status(503)})
    h.take()
    for n in range(1, failures + 2):
        h.client.flow_closed(1, now=h.now) if n == 1 else None
        events = h.take()
        failed = [
            e for e in events if isinstance(e, FlowFailed | RegistrationFailed) and e.flow == 1
        ]
        assert failed
        retry_at = failed[-1].retry_at
        assert retry_at is not None
        all_failed = not others_up
        bound = backoff_bound(n, all_failed=all_failed)
        assert 0.5 * bound <= retry_at - h.now <= bound
        h.advance(retry_at - 0.001, answer={EDGE2: ok() if others_up else status(503)})
        h.take()  # flow 2's own refreshes and retries
        h.advance(retry_at, answer={EDGE1: status(500), EDGE2: ok() if others_up else status(503)})


# ------------------------------------------ RFC 5626 §4.4.1: the STUN mapped address

NAT_MAPPED = Endpoint("198.51.100.1", 40001)


def ok_stamped(mapped: Endpoint | None) -> Reply:
    """A 200 whose Via carries the received/rport the edge stamped (RFC 3581 §4)."""
    base = ok(flow_timer=30)

    def answer(request: SipRequest) -> SipResponse:
        response = base(request)
        if mapped is not None:
            via = request.top_via.with_params(received=mapped.host, rport=str(mapped.port))
            response.headers.set("Via", str(via))
        return response

    return answer


def udp_keepalive_due(h: Harness) -> KeepaliveDue:
    """Run timers (the UDP transaction's Timer K among them) to the next keepalive."""
    for _ in range(10):
        h.run_to_next()
        dues = [e for e in h.take() if isinstance(e, KeepaliveDue)]
        if dues:
            (due,) = dues
            assert due.method is KeepaliveMethod.STUN
            return due
    raise AssertionError("no keepalive came")


@pytest.mark.parametrize(
    ("stamped", "answers", "failed_at"),
    [
        pytest.param(NAT_MAPPED, [NAT_MAPPED, NAT_MAPPED], None, id="same-as-registered"),
        pytest.param(NAT_MAPPED, [Endpoint("198.51.100.1", 40777)], 0, id="port-changed"),
        pytest.param(NAT_MAPPED, [Endpoint("198.51.100.9", 40001)], 0, id="address-changed"),
        pytest.param(None, [NAT_MAPPED, NAT_MAPPED], None, id="no-rport-first-answer-is-base"),
        pytest.param(
            None, [NAT_MAPPED, Endpoint("198.51.100.1", 1)], 1, id="no-rport-then-changed"
        ),
    ],
)
def test_a_changed_stun_mapped_address_fails_the_flow(
    stamped: Endpoint | None, answers: list[Endpoint], failed_at: int | None
) -> None:
    h = harness(transport=SipTransport.UDP)
    h.answer(ok_stamped(stamped))
    h.take()
    for index, mapped in enumerate(answers):
        due = udp_keepalive_due(h)
        h.client.keepalive_answered(due.flow, now=h.now, mapped=mapped)
        failures = [e for e in h.take() if isinstance(e, FlowFailed)]
        if index == failed_at:
            (failure,) = failures
            assert failure.reason == "mapped address changed"
            assert h.client.flow_state(1) is FlowState.WAITING
            return
        assert not failures and h.client.flow_state(1) is FlowState.REGISTERED
    assert failed_at is None


def test_after_recovery_the_new_mapping_is_the_base() -> None:
    h = harness(transport=SipTransport.UDP)
    h.answer(ok_stamped(NAT_MAPPED))
    h.take()
    due = udp_keepalive_due(h)
    h.client.keepalive_answered(due.flow, now=h.now, mapped=Endpoint("198.51.100.1", 40777))
    (failure,) = [e for e in h.take() if isinstance(e, FlowFailed)]
    h.advance(failure.retry_at)
    rebound = Endpoint("198.51.100.1", 40777)
    h.answer(ok_stamped(rebound))  # the recovery REGISTER, from the new mapping
    assert h.client.flow_state(1) is FlowState.REGISTERED
    h.take()
    due = udp_keepalive_due(h)
    h.client.keepalive_answered(due.flow, now=h.now, mapped=rebound)
    assert not [e for e in h.take() if isinstance(e, FlowFailed)]


def _response_with_via(via: str) -> SipResponse:
    from natkit.sip.message import parse_message

    raw = (
        f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:a@x>;tag=2\r\n"
        "Call-ID: c\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, SipResponse)
    return message


def test_via_mapped_needs_both_received_and_rport() -> None:
    """RFC 3581 §4: a hostname sent-by is not a mapped address."""
    from natkit.sip.registration import _via_mapped

    assert (
        _via_mapped(
            _response_with_via("SIP/2.0/UDP ua.example.com:5060;branch=z9hG4bKa;rport=5060")
        )
        is None
    )
    assert _via_mapped(
        _response_with_via(
            "SIP/2.0/UDP ua.example.com;branch=z9hG4bKa;received=198.51.100.7;rport=40000"
        )
    ) == Endpoint("198.51.100.7", 40000)
