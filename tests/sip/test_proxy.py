"""The forking proxy (RFC 3261 §16.6-16.10, RFC 5626 §7) over a real TransactionLayer."""

from __future__ import annotations

import dataclasses

import pytest

from natkit.addr import Endpoint
from natkit.rng import seeded_rng
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.headers import Via
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from natkit.sip.proxy import Destination, ForkingProxy, ForkTarget, best_response_status
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import RequestReceived, TransactionEvent
from natkit.sip.uri import parse_uri

PROXY_IP = "192.0.2.1"
UAC = Source(SipTransport.UDP, Endpoint("198.51.100.7", 5060), Endpoint(PROXY_IP, 5060), "u0")


def target(n: int, *, q: float = 1.0, flows: int = 1) -> ForkTarget:
    return ForkTarget(
        tuple(
            Destination(
                uri=parse_uri(f"sip:bob@203.0.113.{n}:{5060 + i}"),
                target=Target(SipTransport.UDP, Endpoint(f"203.0.113.{n}", 5060 + i)),
            )
            for i in range(flows)
        ),
        q=q,
    )


class Harness:
    def __init__(self) -> None:
        self.layer = TransactionLayer(rng=seeded_rng(1))
        self.proxy = ForkingProxy(
            self.layer,
            via_for=lambda _target: Via("UDP", PROXY_IP, 5060),
            is_own_via=lambda via: via.host == PROXY_IP,
        )
        self.now = 0.0
        self.upstream: list[SipResponse] = []
        self.sent: list[tuple[SipMessage, Target]] = []
        self.unclaimed: list[TransactionEvent] = []

    def pump(self) -> None:
        while (event := self.layer.next_event()) is not None:
            if not self.proxy.handle_event(event, now=self.now):
                self.unclaimed.append(event)
        for message, where in self.layer.messages_to_send():
            if where.remote == UAC.remote:
                assert isinstance(message, SipResponse)
                self.upstream.append(message)
            else:
                self.sent.append((message, where))

    def invite(self, *targets: ForkTarget, method: str = "INVITE") -> SipRequest:
        text = (
            f"{method} sip:bob@example.org SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKuac1;rport=5060\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@example.org>;tag=a\r\nTo: <sip:bob@example.org>\r\n"
            f"Call-ID: fork-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
        request = parse_message(text.encode())
        assert isinstance(request, SipRequest)
        self.layer.receive_message(request, UAC, now=self.now)
        event = self.layer.next_event()
        assert isinstance(event, RequestReceived)
        self.proxy.proxy(request, event.server_txn, list(targets), now=self.now)
        self.pump()
        return request

    def branches(self, method: str = "INVITE") -> list[tuple[SipRequest, Target]]:
        return [(m, t) for m, t in self.sent if isinstance(m, SipRequest) and m.method == method]

    def answer(self, branch: SipRequest, status: int, *, tag: str = "b") -> None:
        response = make_response(branch, status, to_tag=tag)
        remote = Endpoint(branch.uri.host, 5060) if hasattr(branch.uri, "host") else UAC.remote
        source = Source(SipTransport.UDP, remote, Endpoint(PROXY_IP, 5060), "ub")
        self.layer.receive_message(response, source, now=self.now)
        self.pump()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.layer.get_timer()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.layer.handle_timer(now=self.now)
            self.pump()
        self.now = end

    def statuses(self) -> list[int]:
        return [r.status for r in self.upstream]


def test_single_target_provisional_and_final_are_forwarded_without_the_proxys_via() -> None:
    h = Harness()
    h.invite(target(1))
    ((branch, where),) = h.branches()
    assert where.remote == Endpoint("203.0.113.1", 5060)
    assert str(branch.uri) == "sip:bob@203.0.113.1:5060"
    assert branch.top_via.host == PROXY_IP and branch.max_forwards == 69
    h.answer(branch, 180)
    h.answer(branch, 200)
    assert h.statuses() == [180, 200]
    assert [v.host for v in h.upstream[-1].vias] == ["198.51.100.7"]


def test_first_2xx_wins_and_the_other_branch_is_cancelled() -> None:
    h = Harness()
    h.invite(target(1), target(2))
    (b1, _), (b2, _) = h.branches()
    h.answer(b2, 180, tag="two")
    h.answer(b1, 200, tag="one")
    assert h.statuses() == [180, 200]
    (cancel, where) = h.branches("CANCEL")[0]
    assert where.remote.host == "203.0.113.2"
    assert cancel.top_via.branch == b2.top_via.branch
    h.answer(b2, 487, tag="two")
    assert h.statuses() == [180, 200]  # the 487 of a cancelled branch goes nowhere


def test_late_2xx_of_another_branch_is_still_forwarded() -> None:
    h = Harness()
    h.invite(target(1), target(2))
    (b1, _), (b2, _) = h.branches()
    h.answer(b1, 200, tag="one")
    h.answer(b2, 200, tag="two")
    assert h.statuses() == [200, 200]


@pytest.mark.parametrize(
    ("answers", "forwarded"),
    [
        pytest.param([486, 404], 486, id="first-of-lowest-class"),
        pytest.param([500, 404], 404, id="4xx-beats-5xx"),
        pytest.param([404, 401], 401, id="401-preferred"),
        pytest.param([503, 503], 500, id="503-becomes-500"),
        pytest.param([302, 486], 302, id="3xx-beats-4xx"),
    ],
)
def test_best_final_response_is_forwarded(answers: list[int], forwarded: int) -> None:
    h = Harness()
    h.invite(target(1), target(2))
    for (branch, _), status in zip(h.branches(), answers, strict=True):
        h.answer(branch, status)
    assert h.statuses()[-1:] == [forwarded]
    assert h.proxy.context_count == 0


def test_challenges_of_every_branch_are_merged() -> None:
    h = Harness()
    h.invite(target(1), target(2))
    (b1, _), (b2, _) = h.branches()
    r1 = make_response(b1, 401, to_tag="x", headers=[("WWW-Authenticate", 'Digest realm="a"')])
    r2 = make_response(b2, 407, to_tag="y", headers=[("Proxy-Authenticate", 'Digest realm="b"')])
    for branch, response in ((b1, r1), (b2, r2)):
        source = Source(SipTransport.UDP, Endpoint(branch.uri.host, 5060), UAC.local, "ub")  # type: ignore[union-attr]
        h.layer.receive_message(response, source, now=h.now)
        h.pump()
    (final,) = h.upstream
    assert final.status == 401
    assert final.headers.get_all("WWW-Authenticate") == ['Digest realm="a"']
    assert final.headers.get_all("Proxy-Authenticate") == ['Digest realm="b"']


def test_6xx_cancels_the_rest_and_stops_the_fork() -> None:
    h = Harness()
    h.invite(target(1), target(2), target(3, q=0.5))
    (b1, _), (b2, _) = h.branches()
    h.answer(b2, 180)
    h.answer(b1, 603)
    assert len(h.branches("CANCEL")) == 1
    h.answer(b2, 487)
    assert h.statuses() == [180, 603]
    assert len(h.branches()) == 2  # the q=0.5 target was never tried


def test_lower_q_targets_are_tried_after_higher_ones_fail() -> None:
    h = Harness()
    h.invite(target(1, q=1.0), target(2, q=0.5))
    ((b1, _),) = h.branches()
    h.answer(b1, 486)
    assert h.statuses() == []
    (_, (b2, where)) = h.branches()
    assert where.remote.host == "203.0.113.2"
    h.answer(b2, 200)
    assert h.statuses() == [200]


def test_flow_failed_moves_to_the_next_flow_of_the_instance() -> None:
    h = Harness()
    h.invite(target(1, flows=2))
    ((b1, w1),) = h.branches()
    h.answer(b1, 430)
    (_, (b2, w2)) = h.branches()
    assert (w1.remote.port, w2.remote.port) == (5060, 5061)
    h.answer(b2, 200)
    assert h.statuses() == [200]


def test_timeout_on_one_flow_moves_to_the_next_then_answers_408() -> None:
    h = Harness()
    h.invite(target(1, flows=2))
    h.advance(40.0)  # timer B (64*T1) of the first flow
    tried = {(m.top_via.branch, t.remote.port) for m, t in h.branches()}
    assert sorted(port for _, port in tried) == [5060, 5061]  # retransmissions aside
    assert h.statuses() == [100]  # the server transaction's own 100 Trying (§17.2.1)
    h.advance(40.0)
    # 408, then its retransmissions (timer G): this UAC never ACKs.
    assert h.statuses()[:2] == [100, 408] and set(h.statuses()) == {100, 408}


def test_cancel_from_upstream_cancels_the_branches() -> None:
    h = Harness()
    request = h.invite(target(1), target(2))
    (b1, _), (b2, _) = h.branches()
    h.answer(b1, 180, tag="one")
    h.answer(b2, 180, tag="two")
    cancel = request.copy()
    cancel.method = "CANCEL"
    cancel.headers.set("CSeq", "1 CANCEL")
    h.layer.receive_message(cancel, UAC, now=h.now)
    h.pump()
    assert h.statuses()[-1] == 200  # for the CANCEL
    assert len(h.branches("CANCEL")) == 2
    h.answer(b1, 487, tag="one")
    h.answer(b2, 487, tag="two")
    assert h.statuses()[-1] == 487


def test_no_target_is_answered_480() -> None:
    h = Harness()
    h.invite()
    assert h.statuses() == [480]


def test_non_invite_requests_fork_too() -> None:
    h = Harness()
    h.invite(target(1), method="MESSAGE")
    ((branch, _),) = h.branches("MESSAGE")
    h.answer(branch, 202)
    assert h.statuses() == [202]


def test_nothing_is_left_once_every_transaction_ended() -> None:
    h = Harness()
    h.invite(target(1), target(2))
    (b1, _), (b2, _) = h.branches()
    h.answer(b2, 180)
    h.answer(b1, 200)
    h.answer(b2, 487)
    h.advance(120.0)
    assert h.proxy.context_count == 0
    assert h.proxy.branch_count == 0
    assert h.layer.transaction_count == 0


@pytest.mark.parametrize(
    ("statuses", "best"),
    [
        pytest.param([404], 404, id="single"),
        pytest.param([486, 600], 600, id="6xx-first"),
        pytest.param([415, 480], 415, id="415-preferred"),
        pytest.param([500, 302], 302, id="lowest-class"),
    ],
)
def test_best_response_status(statuses: list[int], best: int) -> None:
    assert best_response_status(statuses) == best


def test_best_response_status_needs_responses() -> None:
    with pytest.raises(ValueError):
        best_response_status([])


def test_fork_target_needs_a_destination() -> None:
    with pytest.raises(ValueError):
        ForkTarget(())


def test_branches_carry_the_loop_detection_hash() -> None:
    # §16.6 step 8: each branch's Via lets the element recognise the request
    # if it comes back (§16.3 step 4); the branches of one fork still differ.
    from natkit.sip.forwarding import forward_request, is_looped

    h = Harness()
    h.invite(target(1), target(2))
    (first, _), (second, _) = h.branches()
    assert first.top_via.branch != second.top_via.branch
    back = forward_request(
        first, via=Via("UDP", "203.0.113.1", 5060, params=(("branch", "z9hG4bKx"),))
    )
    back.uri = parse_uri("sip:bob@example.org")  # the next hop retargets it back to the AoR
    assert is_looped(back, lambda via: via.host == PROXY_IP)


# -- RFC 3263 §4.3 failover across a next hop's servers -------------------------------


def servers(count: int) -> ForkTarget:
    """One next hop's plan: ``count`` servers, best first."""
    return dataclasses.replace(target(1, flows=count), servers=True)


def distinct_branches(h: Harness, method: str = "INVITE") -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for message, where in h.branches(method):
        key = (message.top_via.branch or "", where.remote.port)
        if key not in seen:
            seen.append(key)
    return seen


def test_a_timeout_moves_to_the_next_server_with_a_new_branch() -> None:
    h = Harness()
    h.invite(servers(2))
    h.advance(40.0)  # timer B of the first server
    (first, second) = distinct_branches(h)
    assert (first[1], second[1]) == (5060, 5061) and first[0] != second[0]
    b2 = next(m for m, _ in h.branches() if m.top_via.branch == second[0])
    h.answer(b2, 200)
    assert h.statuses() == [100, 200]


def test_a_transport_failure_moves_to_the_next_server_at_once() -> None:
    h = Harness()
    h.invite(servers(2), method="MESSAGE")
    ((b1, w1),) = h.branches("MESSAGE")
    h.layer.destination_unreachable(w1.remote, now=h.now)  # ICMP port unreachable
    h.pump()
    (_, (b2, w2)) = h.branches("MESSAGE")
    assert w2.remote.port == 5061 and b2.top_via.branch != b1.top_via.branch
    h.answer(b2, 202)
    assert h.statuses() == [202]


def test_a_503_moves_to_the_next_server_but_a_408_response_does_not() -> None:
    h = Harness()
    h.invite(servers(3), method="MESSAGE")
    ((b1, _),) = h.branches("MESSAGE")
    h.answer(b1, 503)
    (_, (b2, _)) = h.branches("MESSAGE")
    h.answer(b2, 408)
    assert len(h.branches("MESSAGE")) == 2  # the third server is not tried
    assert h.statuses() == [408]


def test_an_invite_that_had_a_provisional_does_not_fail_over() -> None:
    h = Harness()
    h.invite(servers(2))
    ((b1, _),) = h.branches()
    h.answer(b1, 180)
    h.answer(b1, 503)
    assert len(distinct_branches(h)) == 1
    assert h.statuses()[-1] == 500  # §16.7 step 6: a 503 goes up as 500


def test_a_non_invite_fails_over_even_after_a_100() -> None:
    h = Harness()
    h.invite(servers(2), method="MESSAGE")
    ((b1, _),) = h.branches("MESSAGE")
    h.answer(b1, 100)
    h.answer(b1, 503)
    assert len(distinct_branches(h, "MESSAGE")) == 2


def test_a_non_invite_that_timed_out_after_a_100_is_not_resent_elsewhere() -> None:
    """RFC 3263 §4.3: a timeout after a provisional is no failure (the
    request arrived); resending it to the next server would duplicate it."""
    h = Harness()
    h.invite(servers(2), method="MESSAGE")
    ((b1, _),) = h.branches("MESSAGE")
    h.answer(b1, 100)
    h.advance(40.0)  # timer F
    assert len(distinct_branches(h, "MESSAGE")) == 1
    assert h.statuses() == [408]


def test_the_last_server_failing_gives_the_failure_upstream() -> None:
    h = Harness()
    h.invite(servers(2), method="MESSAGE")
    for _ in range(2):
        (*_, (branch, _)) = h.branches("MESSAGE")
        h.answer(branch, 503)
    assert h.statuses() == [500]


def test_icmp_does_not_fail_a_branch_over_a_registered_flow() -> None:
    # A NAT that lost a UA's mapping for a moment answers ICMP; the UA's next
    # keepalive restores it, so retransmissions over the flow go on.
    h = Harness()
    flow = Target(SipTransport.UDP, Endpoint("203.0.113.1", 5060), "flow-1")
    pinned = ForkTarget((Destination(uri=parse_uri("sip:bob@10.0.0.2"), target=flow),))
    h.invite(pinned, method="MESSAGE")
    h.layer.destination_unreachable(flow.remote, now=h.now)
    h.pump()
    ((branch, _),) = h.branches("MESSAGE")
    h.answer(branch, 202)
    assert h.statuses() == [202]
