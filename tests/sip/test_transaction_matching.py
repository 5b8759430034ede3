"""Matching (RFC 3261 §17.1.3, §17.2.3, RFC 2543 fallback), CANCEL (§9),
merged requests (§8.2.2.2) and where responses go (§18.2.2, RFC 3581)."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.sip.flow import SipTransport, Target
from natkit.sip.message import Headers, SipRequest, SipResponse, serialize_message
from natkit.sip.timers import TimerConfig
from natkit.sip.transaction import TransactionLayer, build_cancel
from natkit.sip.transaction_events import (
    AckReceived,
    ClientTransactionId,
    RequestReceived,
    ResponseReceived,
    StrayResponseReceived,
    TransactionTerminated,
    TransactionTimedOut,
)
from natkit.sip.uri import parse_uri
from natkit.sip.via_routing import stamp_received

from .test_transaction_helpers import (
    BRANCH,
    TCP,
    UA,
    UA_NATTED,
    UDP,
    drain,
    request,
    response,
    run_timers,
    sent,
    source,
    target,
)

NO_TRYING = TimerConfig(trying_delay=None)


def _received(layer: TransactionLayer) -> list[RequestReceived]:
    return [e for e in drain(layer) if isinstance(e, RequestReceived)]


# ------------------------------------------------------------ client side


@pytest.mark.parametrize(
    ("branch", "method", "matches"),
    [
        pytest.param(BRANCH, "INVITE", True, id="same-branch-and-method"),
        pytest.param(BRANCH, "CANCEL", False, id="same-branch-other-method"),
        pytest.param("z9hG4bKother", "INVITE", False, id="other-branch"),
    ],
)
def test_response_matching_uses_branch_and_cseq_method(
    branch: str, method: str, matches: bool
) -> None:
    layer = TransactionLayer()
    layer.send_request(request("INVITE"), target(), now=0.0)
    resp = response(request("INVITE", branch=branch, cseq_method=method), 180)
    layer.receive_message(resp, source(), now=0.1)
    [event] = drain(layer)
    assert isinstance(event, ResponseReceived if matches else StrayResponseReceived)


def test_response_without_via_is_dropped() -> None:
    layer = TransactionLayer()
    resp = SipResponse(status=200, reason="OK", headers=Headers([("CSeq", "1 OPTIONS")]))
    layer.receive_message(resp, source(), now=0.0)
    assert drain(layer) == []


# ------------------------------------------------------------ server side


@pytest.mark.parametrize(
    ("changes", "same_txn"),
    [
        pytest.param({}, True, id="identical"),
        pytest.param({"via_host": "192.0.2.10", "via_port": 5060}, True, id="explicit-port"),
        pytest.param({"via_host": "192.0.2.10", "via_port": None}, True, id="default-port"),
        pytest.param({"via_port": 5070}, False, id="other-sent-by-port"),
        pytest.param({"via_host": "192.0.2.11"}, False, id="other-sent-by-host"),
        pytest.param({"branch": "z9hG4bKtest2"}, False, id="other-branch"),
        pytest.param({"seq": 2, "call_id": "x"}, True, id="cookie-ignores-other-fields"),
    ],
)
def test_request_matching_uses_branch_sent_by_and_method(
    changes: dict[str, object], same_txn: bool
) -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    layer.receive_message(request("OPTIONS"), source(), now=0.0)
    assert len(_received(layer)) == 1
    layer.receive_message(request("OPTIONS", **changes), source(), now=0.1)  # type: ignore[arg-type]
    assert len(_received(layer)) == (0 if same_txn else 1)


def test_sent_by_host_compares_case_insensitively() -> None:
    layer = TransactionLayer()
    layer.receive_message(request("OPTIONS", via_host="UA.Example.ORG"), source(), now=0.0)
    layer.receive_message(request("OPTIONS", via_host="ua.example.org"), source(), now=0.1)
    assert len(_received(layer)) == 1


def test_same_branch_with_another_method_is_another_transaction() -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    layer.receive_message(request("INVITE"), source(), now=0.0)
    layer.receive_message(request("OPTIONS"), source(), now=0.1)
    assert [e.request.method for e in _received(layer)] == ["INVITE", "OPTIONS"]
    assert layer.transaction_count == 2


def test_cancel_has_its_own_transaction_and_names_the_invite() -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    invite = request("INVITE")
    layer.receive_message(invite, source(), now=0.0)
    [invite_event] = _received(layer)
    cancel = build_cancel(invite)
    layer.receive_message(cancel, source(), now=1.0)
    [cancel_event] = _received(layer)
    assert cancel_event.cancelled_txn == invite_event.server_txn
    assert cancel_event.server_txn != invite_event.server_txn
    # the TU answers both, each through its own transaction
    ok = response(cancel, 200)
    terminated = response(invite, 487)
    layer.send_response(ok, now=1.0)
    layer.send_response(terminated, now=1.0)
    assert sent(layer) == [ok, terminated]
    layer.receive_message(cancel, source(), now=1.5)  # retransmitted CANCEL: 200 again
    assert [serialize_message(m) for m in sent(layer)] == [serialize_message(ok)]


def test_cancel_for_no_invite_names_none() -> None:
    layer = TransactionLayer()
    layer.receive_message(build_cancel(request("INVITE")), source(), now=0.0)
    [event] = _received(layer)
    assert event.cancelled_txn is None


def test_build_cancel_follows_section_9_1() -> None:
    invite = request("INVITE", to_tag="dlg", seq=7, routes=("<sip:p1;lr>", "<sip:p2;lr>"))
    invite.headers.add("Via", "SIP/2.0/UDP upstream.example.org;branch=z9hG4bKup")
    invite.headers.add("Contact", "<sip:alice@192.0.2.10>")
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert str(cancel.uri) == str(invite.uri)
    assert [str(v) for v in cancel.vias] == [str(invite.top_via)]
    assert cancel.cseq.seq == 7 and cancel.cseq.method == "CANCEL"
    assert cancel.to.tag == "dlg"
    assert cancel.from_.tag == "ft1"
    assert cancel.call_id == invite.call_id
    assert cancel.headers.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert cancel.headers.get("Contact") is None
    assert cancel.max_forwards == 70


# --------------------------------------------------------- RFC 2543 peers


def test_rfc2543_invite_retransmission_matches_on_the_old_rules() -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    invite = request("INVITE", branch=None)
    layer.receive_message(invite, source(), now=0.0)
    [event] = _received(layer)
    assert event.server_txn.branch == ""
    busy = response(invite, 486, to_tag="me")
    layer.send_response(busy, now=0.1)  # found without the cookie
    assert sent(layer) == [busy]
    layer.receive_message(request("INVITE", branch=None), source(), now=0.2)
    assert sent(layer) == [busy]
    assert _received(layer) == []


@pytest.mark.parametrize(
    ("changes", "same_txn"),
    [
        pytest.param({}, True, id="identical"),
        pytest.param({"uri": "sip:carol@example.org"}, False, id="request-uri"),
        pytest.param({"from_tag": "other"}, False, id="from-tag"),
        pytest.param({"call_id": "other"}, False, id="call-id"),
        pytest.param({"seq": 2}, False, id="cseq"),
        pytest.param({"via_port": 5070}, False, id="top-via"),
        pytest.param({"to_tag": "x"}, False, id="to-tag"),
        pytest.param({"branch": "1"}, False, id="via-branch-without-cookie"),
    ],
)
def test_rfc2543_request_matching_compares_every_field(
    changes: dict[str, object], same_txn: bool
) -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    layer.receive_message(request("OPTIONS", branch=None), source(), now=0.0)
    _received(layer)
    fields = {"branch": None, **changes}
    layer.receive_message(request("OPTIONS", **fields), source(), now=0.1)  # type: ignore[arg-type]
    assert len(_received(layer)) == (0 if same_txn else 1)


@pytest.mark.parametrize(
    ("ack_to_tag", "absorbed"),
    [
        pytest.param("me", True, id="to-tag-of-the-response"),
        pytest.param("someone-else", False, id="other-to-tag"),
    ],
)
def test_rfc2543_ack_matches_by_the_to_tag_of_the_response(ack_to_tag: str, absorbed: bool) -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    invite = request("INVITE", branch=None)
    layer.receive_message(invite, source(), now=0.0)
    [_event] = _received(layer)
    layer.send_response(response(invite, 404, to_tag="me"), now=0.1)
    sent(layer)
    ack = request("ACK", branch=None, to_tag=ack_to_tag)
    layer.receive_message(ack, source(), now=0.2)
    events = drain(layer)
    if absorbed:
        assert events == []
        assert _send_times_until(layer, 100.0) == []  # Confirmed: G stopped
    else:
        assert events == [AckReceived(request=ack, source=source(), server_txn=None)]


def test_rfc2543_ack_for_a_reinvite_in_a_dialog_matches() -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    invite = request("INVITE", branch=None, to_tag="dlg")
    layer.receive_message(invite, source(), now=0.0)
    layer.send_response(response(invite, 488, to_tag="dlg"), now=0.1)
    drain(layer)
    layer.receive_message(request("ACK", branch=None, to_tag="dlg"), source(), now=0.2)
    assert drain(layer) == []


def test_rfc2543_cancel_names_its_invite() -> None:
    layer = TransactionLayer(timers=NO_TRYING)
    invite = request("INVITE", branch=None)
    layer.receive_message(invite, source(), now=0.0)
    [invite_event] = _received(layer)
    layer.receive_message(build_cancel(invite), source(), now=0.5)
    [cancel_event] = _received(layer)
    assert cancel_event.cancelled_txn == invite_event.server_txn


# ----------------------------------------------------------- merged requests


@pytest.mark.parametrize(
    ("reject", "answers"),
    [pytest.param(True, [482], id="uas-rejects"), pytest.param(False, [], id="proxy-forwards")],
)
def test_merged_request_detection(reject: bool, answers: list[int]) -> None:
    layer = TransactionLayer(timers=NO_TRYING, reject_merged_requests=reject)
    layer.receive_message(request("INVITE", branch="z9hG4bKpath1"), source(), now=0.0)
    _received(layer)
    forked_copy = request("INVITE", branch="z9hG4bKpath2", via_host="192.0.2.99")
    layer.receive_message(forked_copy, source(), now=0.1)
    received = _received(layer)
    responses = [m for m in sent(layer) if isinstance(m, SipResponse)]
    assert [m.status for m in responses] == answers
    assert all(m.to.tag for m in responses)  # §8.2.6.2
    assert len(received) == (0 if reject else 1)


def test_merged_request_rejection_leaves_dialog_requests_alone() -> None:
    layer = TransactionLayer(reject_merged_requests=True)
    layer.receive_message(request("BYE", to_tag="t", branch="z9hG4bKa"), source(), now=0.0)
    layer.receive_message(request("BYE", to_tag="t", branch="z9hG4bKb"), source(), now=0.0)
    assert len(_received(layer)) == 2


# ------------------------------------------------------------ cancel() helper


def test_cancel_waits_for_a_provisional_response() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, target(), now=0.0)
    sent(layer)
    cancel_txn = layer.cancel(txn, now=0.1)
    assert cancel_txn == ClientTransactionId(BRANCH, "CANCEL")
    assert sent(layer) == []  # §9.1: not before a provisional
    layer.receive_message(response(invite, 180), source(), now=0.3)
    [cancel] = sent(layer)
    assert isinstance(cancel, SipRequest) and cancel.method == "CANCEL"
    assert cancel.top_via.branch == BRANCH
    layer.receive_message(response(cancel, 200), source(), now=0.4)
    layer.receive_message(response(invite, 487), source(), now=0.5)
    statuses = [
        (e.client_txn.method, e.response.status)
        for e in drain(layer)
        if isinstance(e, ResponseReceived)
    ]
    assert statuses == [("INVITE", 180), ("CANCEL", 200), ("INVITE", 487)]
    assert [m.method for m in sent(layer) if isinstance(m, SipRequest)] == ["ACK"]


def test_cancel_in_proceeding_goes_out_at_once_and_bounds_the_invite() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, target(), now=0.0)
    layer.receive_message(response(invite, 180), source(), now=0.1)
    sent(layer)
    assert layer.cancel(txn, now=1.0) is not None
    assert [m.method for m in sent(layer) if isinstance(m, SipRequest)] == ["CANCEL"]
    assert layer.cancel(txn, now=1.1) is not None  # idempotent
    assert sent(layer) == []
    drain(layer)
    run_timers(layer, until=40.0)  # the CANCEL times out (F), so does the INVITE (64*T1)
    timeouts = [e for e in drain(layer) if isinstance(e, TransactionTimedOut)]
    assert TransactionTimedOut(txn=txn, timer="cancel") in timeouts
    assert layer.transaction_count == 0


def test_cancel_after_a_final_response_returns_none() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, target(), now=0.0)
    layer.receive_message(response(invite, 200), source(), now=0.1)
    assert layer.cancel(txn, now=0.2) is None
    assert layer.cancel(ClientTransactionId("z9hG4bKnone", "INVITE"), now=0.2) is None


def test_pending_cancel_is_dropped_when_a_final_response_comes_first() -> None:
    layer = TransactionLayer()
    invite = request("INVITE")
    txn = layer.send_request(invite, target(), now=0.0)
    layer.cancel(txn, now=0.1)
    layer.receive_message(response(invite, 486), source(), now=0.2)
    assert [m.method for m in sent(layer) if isinstance(m, SipRequest)] == ["INVITE", "ACK"]


# ----------------------------------------------------- where responses go

_NATTED_UDP = "udp:203.0.113.7:40123"


@pytest.mark.parametrize(
    ("transport", "via", "stamped", "remote", "expected"),
    [
        pytest.param(
            UDP,
            {"rport": True},
            True,
            UA_NATTED,
            Target(UDP, UA_NATTED, _NATTED_UDP),
            id="udp-rport",
        ),
        pytest.param(
            UDP,
            {"rport": True},
            False,
            UA_NATTED,
            Target(UDP, UA_NATTED, _NATTED_UDP),
            id="udp-rport-unstamped",
        ),
        pytest.param(
            UDP,
            {},
            True,
            UA_NATTED,
            Target(UDP, Endpoint("203.0.113.7", 5060)),
            id="udp-received-and-sent-by-port",
        ),
        pytest.param(
            UDP,
            {"via_port": None},
            True,
            UA,
            Target(UDP, UA, "udp:192.0.2.10:5060"),
            id="udp-default-port",
        ),
        pytest.param(
            UDP,
            {"via_host": "ua.example.org"},
            False,
            UA_NATTED,
            Target(UDP, UA_NATTED, _NATTED_UDP),
            id="udp-host-name-unstamped",
        ),
        pytest.param(
            TCP,
            {},
            True,
            UA_NATTED,
            Target(TCP, UA_NATTED, "tcp:203.0.113.7:40123"),
            id="tcp-same-connection",
        ),
    ],
)
def test_responses_go_where_section_18_2_2_says(
    transport: SipTransport,
    via: dict[str, object],
    stamped: bool,
    remote: Endpoint,
    expected: Target,
) -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", transport=transport, **via)  # type: ignore[arg-type]
    if stamped:  # as the transport driver does (§18.2.1, RFC 3581 §4)
        stamp_received(req, source(transport, remote))
    layer.receive_message(req, source(transport, remote), now=0.0)
    layer.send_response(response(req, 200), now=0.0)
    [(_, where)] = layer.messages_to_send()
    assert where == expected


# ---------------------------------------------------------- robustness


def test_request_without_via_or_cseq_is_dropped() -> None:
    layer = TransactionLayer()
    bare = SipRequest(
        method="OPTIONS", uri=parse_uri("sip:x@example.org"), headers=Headers([("Call-ID", "1")])
    )
    layer.receive_message(bare, source(), now=0.0)
    assert drain(layer) == []
    assert layer.transaction_count == 0


def test_every_transaction_reports_its_end_once() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), target(TCP), now=0.0)
    layer.receive_message(request("REGISTER", branch="z9hG4bKr"), source(), now=0.0)
    run_timers(layer, until=100.0)
    ends = [e for e in drain(layer) if isinstance(e, TransactionTerminated)]
    assert len(ends) == 1  # the server one waits for the TU's answer
    assert layer.transaction_count == 1


def _send_times_until(layer: TransactionLayer, until: float) -> list[float]:
    return [when for when, msgs in run_timers(layer, until) for _ in msgs]


def test_merged_request_check_ends_with_the_transaction() -> None:
    layer = TransactionLayer(reject_merged_requests=True)
    first = request("OPTIONS", branch="z9hG4bKpath1", transport=TCP)
    layer.receive_message(first, source(TCP), now=0.0)
    layer.send_response(response(first, 200), now=0.1)  # Timer J is zero over TCP
    sent(layer)
    layer.receive_message(request("OPTIONS", branch="z9hG4bKpath2"), source(), now=1.0)
    assert sent(layer) == []
    assert len(_received(layer)) == 2


def test_response_target_policy_can_be_injected() -> None:
    elsewhere = Target(TCP, Endpoint("192.0.2.200", 5070), "tcp:7")
    seen: list[tuple[str, object]] = []

    def policy(resp: SipResponse, src: object) -> Target:
        seen.append((resp.status, src))
        return elsewhere

    layer = TransactionLayer(response_target=policy)  # type: ignore[arg-type]
    req = request("OPTIONS")
    layer.receive_message(req, source(), now=0.0)
    layer.send_response(response(req, 200), now=0.0)
    layer.receive_message(req, source(), now=0.1)  # retransmission: same target
    assert [where for _, where in layer.messages_to_send()] == [elsewhere, elsewhere]
    assert seen == [(200, source())]


def test_a_response_without_via_goes_back_to_the_source() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS")
    layer.receive_message(req, source(UDP, UA_NATTED), now=0.0)
    [event] = _received(layer)
    ok = response(req, 200)
    ok.headers.remove("Via")
    layer.send_response(ok, now=0.0, server_txn=event.server_txn)
    assert layer.messages_to_send() == [(ok, Target(UDP, UA_NATTED, _NATTED_UDP))]
