"""The four RFC 3261 §17 state machines with RFC 6026's Accepted state, over
unreliable and reliable transports, driven with explicit ``now``."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from natkit.errors import LocalProtocolError
from natkit.sip.flow import SipTransport
from natkit.sip.message import SipRequest, SipResponse, serialize_message
from natkit.sip.timers import TimerConfig
from natkit.sip.transaction import TransactionLayer
from natkit.sip.transaction_events import (
    AckReceived,
    ClientTransactionId,
    RequestReceived,
    ResponseReceived,
    ServerTransactionId,
    TimerCExpired,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
)

from .test_transaction_helpers import (
    BRANCH,
    TCP,
    UDP,
    drain,
    request,
    response,
    run_timers,
    sent,
    source,
    target,
)

TRANSPORTS = [pytest.param(UDP, id="udp"), pytest.param(TCP, id="tcp")]


def _client(
    method: str = "INVITE", transport: SipTransport = UDP
) -> tuple[TransactionLayer, ClientTransactionId, SipRequest]:
    layer = TransactionLayer()
    req = request(method, transport=transport)
    txn = layer.send_request(req, target(transport), now=0.0)
    assert sent(layer) == [req]
    return layer, txn, req


def _server(
    method: str = "INVITE", transport: SipTransport = UDP, **config: float | None
) -> tuple[TransactionLayer, ServerTransactionId, SipRequest]:
    layer = TransactionLayer(timers=TimerConfig(**config))  # type: ignore[arg-type]
    req = request(method, transport=transport)
    layer.receive_message(req, source(transport), now=0.0)
    [event] = drain(layer)
    assert isinstance(event, RequestReceived)
    return layer, event.server_txn, req


def _send_times(log: Sequence[tuple[float, Sequence[object]]]) -> list[float]:
    return [when for when, msgs in log for _ in msgs]


# ----------------------------------------------------------- INVITE client


def test_invite_client_retransmits_with_timer_a_doubling_then_times_out_with_b() -> None:
    layer, txn, req = _client()
    log = run_timers(layer, until=100.0)
    # A: 0.5, 1, 2, 4, 8, 16 (no T2 cap for INVITE, §17.1.1.2); B at 64*T1.
    assert _send_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(msg is req for _, msgs in log for msg in msgs)
    assert log[-1][0] == 32.0
    assert drain(layer) == [
        TransactionTimedOut(txn=txn, timer="B"),
        TransactionTerminated(txn=txn),
    ]
    assert layer.transaction_count == 0


def test_invite_client_over_reliable_transport_never_retransmits() -> None:
    layer, _txn, _ = _client(transport=TCP)
    log = run_timers(layer, until=100.0)
    assert _send_times(log) == []
    assert [when for when, _ in log] == [32.0]
    assert isinstance(drain(layer)[0], TransactionTimedOut)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_client_provisional_stops_retransmissions_and_timer_b(
    transport: SipTransport,
) -> None:
    layer, txn, req = _client(transport=transport)
    ringing = response(req, 180)
    layer.receive_message(ringing, source(transport), now=0.2)
    [event] = drain(layer)
    assert event == ResponseReceived(response=ringing, source=source(transport), client_txn=txn)
    # only Timer C (180 s) is left
    assert layer.get_timer() == pytest.approx(180.2)
    assert run_timers(layer, until=179.0) == []


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_client_non_2xx_is_acked_by_the_transaction(transport: SipTransport) -> None:
    layer = TransactionLayer()
    req = request("INVITE", transport=transport, routes=("<sip:p1.example.org;lr>",))
    txn = layer.send_request(req, target(transport), now=0.0)
    sent(layer)
    busy = response(req, 486, to_tag="callee")
    layer.receive_message(busy, source(transport), now=1.0)
    [ack] = sent(layer)
    assert isinstance(ack, SipRequest)
    assert ack.method == "ACK"
    assert str(ack.uri) == str(req.uri)
    assert ack.cseq.seq == 1 and ack.cseq.method == "ACK"
    assert ack.to.tag == "callee"
    assert ack.from_.tag == "ft1"
    assert ack.call_id == req.call_id
    assert [v.branch for v in ack.vias] == [BRANCH]
    assert ack.headers.get_all("Route") == ["<sip:p1.example.org;lr>"]
    events = drain(layer)
    assert events[0] == ResponseReceived(response=busy, source=source(transport), client_txn=txn)
    if transport.reliable:  # Timer D is zero
        assert events[1:] == [TransactionTerminated(txn=txn)]
        assert layer.transaction_count == 0
        return
    assert events[1:] == []
    # Completed: retransmitted finals are ACKed again, not passed up (§17.1.1.2)
    layer.receive_message(busy, source(transport), now=2.0)
    assert [m.method for m in sent(layer) if isinstance(m, SipRequest)] == ["ACK"]
    assert drain(layer) == []
    assert layer.get_timer() == pytest.approx(33.0)  # Timer D, 32 s
    run_timers(layer, until=40.0)
    assert drain(layer) == [TransactionTerminated(txn=txn)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_client_accepted_state_passes_2xx_up_and_ends_with_timer_m(
    transport: SipTransport,
) -> None:
    layer, txn, req = _client(transport=transport)
    ok = response(req, 200, to_tag="fork1")
    layer.receive_message(ok, source(transport), now=1.0)
    assert sent(layer) == []  # the ACK for a 2xx is the TU's
    assert drain(layer) == [ResponseReceived(response=ok, source=source(transport), client_txn=txn)]
    # RFC 6026 §8.4: retransmissions and other forks' 2xx reach the TU
    other_fork = response(req, 200, to_tag="fork2")
    layer.receive_message(ok, source(transport), now=2.0)
    layer.receive_message(other_fork, source(transport), now=3.0)
    layer.receive_message(response(req, 486), source(transport), now=3.5)
    assert [e.response.to.tag for e in drain(layer) if isinstance(e, ResponseReceived)] == [
        "fork1",
        "fork2",
    ]
    assert sent(layer) == []
    assert layer.get_timer() == pytest.approx(33.0)  # Timer M, 64*T1
    run_timers(layer, until=40.0)
    assert drain(layer) == [TransactionTerminated(txn=txn)]


def test_invite_client_2xx_after_timer_m_is_a_stray_response() -> None:
    layer, _, req = _client()
    ok = response(req, 200)
    layer.receive_message(ok, source(), now=1.0)
    run_timers(layer, until=40.0)
    drain(layer)
    layer.receive_message(ok, source(), now=41.0)
    [event] = drain(layer)
    assert type(event).__name__ == "StrayResponseReceived"


def test_invite_client_timer_c_warns_then_the_transaction_ends() -> None:
    layer, txn, req = _client()
    layer.receive_message(response(req, 180), source(), now=1.0)
    layer.receive_message(response(req, 183), source(), now=10.0)  # re-arms C
    drain(layer)
    run_timers(layer, until=189.0)
    assert drain(layer) == []
    run_timers(layer, until=190.0)
    assert drain(layer) == [TimerCExpired(client_txn=txn)]
    run_timers(layer, until=190.0 + 32.0)
    assert drain(layer) == [
        TransactionTimedOut(txn=txn, timer="cancel"),
        TransactionTerminated(txn=txn),
    ]


# --------------------------------------------------------- non-INVITE client


def test_non_invite_client_timer_e_doubles_up_to_t2_then_f_times_out() -> None:
    layer, txn, _ = _client("REGISTER")
    log = run_timers(layer, until=100.0)
    assert _send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert drain(layer) == [
        TransactionTimedOut(txn=txn, timer="F"),
        TransactionTerminated(txn=txn),
    ]


def test_non_invite_client_in_proceeding_retransmits_every_t2() -> None:
    layer, _, req = _client("OPTIONS")
    run_timers(layer, until=0.5)
    layer.receive_message(response(req, 100), source(), now=0.6)
    log = run_timers(layer, until=12.0)
    assert _send_times(log) == [1.5, 5.5, 9.5]


def test_non_invite_client_over_reliable_transport_only_has_timer_f() -> None:
    layer, txn, _ = _client("REGISTER", transport=TCP)
    assert layer.get_timer() == 32.0
    log = run_timers(layer, until=100.0)
    assert _send_times(log) == []
    assert drain(layer)[0] == TransactionTimedOut(txn=txn, timer="F")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_non_invite_client_final_response_completes_and_timer_k_ends_it(
    transport: SipTransport,
) -> None:
    layer, txn, req = _client("REGISTER", transport=transport)
    trying = response(req, 100)
    ok = response(req, 200)
    layer.receive_message(trying, source(transport), now=0.1)
    layer.receive_message(ok, source(transport), now=0.2)
    events = drain(layer)
    assert [e.response.status for e in events if isinstance(e, ResponseReceived)] == [100, 200]
    if transport.reliable:  # Timer K is zero
        assert events[-1] == TransactionTerminated(txn=txn)
        return
    layer.receive_message(ok, source(transport), now=1.0)  # absorbed
    assert drain(layer) == []
    assert layer.get_timer() == pytest.approx(5.2)  # Timer K = T4
    assert _send_times(run_timers(layer, until=10.0)) == []
    assert drain(layer) == [TransactionTerminated(txn=txn)]


# ----------------------------------------------------------- INVITE server


def test_invite_server_sends_100_trying_after_200_ms_when_the_tu_is_silent() -> None:
    layer = TransactionLayer()
    req = request("INVITE", extra=(("Timestamp", "54.3"),))
    layer.receive_message(req, source(), now=0.0)
    drain(layer)
    assert layer.get_timer() == pytest.approx(0.2)
    log = run_timers(layer, until=0.2)
    [[trying]] = [msgs for _, msgs in log]
    assert isinstance(trying, SipResponse)
    assert trying.status == 100
    assert trying.to.tag is None
    assert trying.headers.get_all("Timestamp") == ["54.3"]
    # a retransmitted INVITE gets the 100 again
    layer.receive_message(req, source(), now=0.5)
    assert sent(layer) == [trying]


def test_invite_server_sends_no_100_when_the_tu_answers_within_200_ms() -> None:
    layer, _txn, req = _server()
    ringing = response(req, 180)
    layer.send_response(ringing, now=0.1)
    assert sent(layer) == [ringing]
    assert run_timers(layer, until=10.0) == []


def test_invite_server_absorbs_a_retransmission_before_any_response() -> None:
    layer, _, req = _server(trying_delay=None)
    layer.receive_message(req, source(), now=0.3)
    assert sent(layer) == []
    assert drain(layer) == []


@pytest.mark.parametrize(
    ("transport", "resends"),
    [
        # G: 0.5, 1, 2, 4, then capped at T2 = 4 until H at 32 (§17.2.1)
        pytest.param(UDP, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5], id="udp"),
        pytest.param(TCP, [], id="tcp"),
    ],
)
def test_invite_server_retransmits_non_2xx_with_timer_g_until_h(
    transport: SipTransport, resends: list[float]
) -> None:
    layer, txn, req = _server(transport=transport, trying_delay=None)
    busy = response(req, 486)
    layer.send_response(busy, now=0.0)
    assert sent(layer) == [busy]
    log = run_timers(layer, until=100.0)
    assert _send_times(log) == resends
    assert all(msg is busy for _, msgs in log for msg in msgs)
    assert drain(layer) == [
        TransactionTimedOut(txn=txn, timer="H"),
        TransactionTerminated(txn=txn),
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_server_ack_for_non_2xx_confirms_and_is_absorbed(transport: SipTransport) -> None:
    layer, txn, req = _server(transport=transport, trying_delay=None)
    busy = response(req, 486, to_tag="me")
    layer.send_response(busy, now=0.0)
    sent(layer)
    layer.receive_message(req, source(transport), now=0.2)  # retransmitted INVITE
    assert sent(layer) == [busy]
    ack = request("ACK", transport=transport, to_tag="me")
    layer.receive_message(ack, source(transport), now=0.3)
    events = drain(layer)
    assert not any(isinstance(e, AckReceived) for e in events)
    if transport.reliable:  # Timer I is zero
        assert events == [TransactionTerminated(txn=txn)]
        return
    assert events == []
    layer.receive_message(ack, source(transport), now=1.0)  # Confirmed absorbs
    assert layer.get_timer() == pytest.approx(5.3)  # Timer I = T4
    assert _send_times(run_timers(layer, until=10.0)) == []  # G stopped
    assert drain(layer) == [TransactionTerminated(txn=txn)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_invite_server_accepted_state_rfc_6026(transport: SipTransport) -> None:
    layer, txn, req = _server(transport=transport, trying_delay=None)
    ok = response(req, 200, to_tag="me")
    layer.send_response(ok, now=1.0)
    assert sent(layer) == [ok]
    layer.receive_message(req, source(transport), now=1.5)  # absorbed, no resend
    assert sent(layer) == []
    assert drain(layer) == []
    layer.send_response(ok, now=1.5)  # the TU's 2xx retransmission goes out
    assert sent(layer) == [ok]
    layer.send_response(response(req, 486), now=1.6)  # no second final
    assert sent(layer) == []
    # an ACK matching the INVITE's branch is the TU's
    ack = request("ACK", transport=transport, to_tag="me")
    layer.receive_message(ack, source(transport), now=2.0)
    assert drain(layer) == [AckReceived(request=ack, source=source(transport), server_txn=txn)]
    assert layer.get_timer() == pytest.approx(33.0)  # Timer L
    run_timers(layer, until=40.0)
    assert drain(layer) == [TransactionTerminated(txn=txn)]


def test_ack_for_2xx_with_its_own_branch_reaches_the_tu_without_transaction() -> None:
    layer, _, req = _server(trying_delay=None)
    layer.send_response(response(req, 200), now=0.0)
    ack = request("ACK", branch="z9hG4bKack2xx", to_tag="tt1")
    layer.receive_message(ack, source(), now=0.1)
    assert drain(layer) == [AckReceived(request=ack, source=source(), server_txn=None)]


# ------------------------------------------------------- non-INVITE server


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_non_invite_server_states(transport: SipTransport) -> None:
    layer, txn, req = _server("REGISTER", transport=transport)
    layer.receive_message(req, source(transport), now=0.1)  # Trying absorbs
    assert sent(layer) == []
    assert run_timers(layer, until=1.0) == []  # no 100 Trying for non-INVITE
    trying = response(req, 100)
    layer.send_response(trying, now=1.0)
    layer.receive_message(req, source(transport), now=1.1)  # Proceeding resends it
    assert sent(layer) == [trying, trying]
    ok = response(req, 200)
    layer.send_response(ok, now=2.0)
    assert sent(layer) == [ok]
    if transport.reliable:  # Timer J is zero
        assert drain(layer) == [TransactionTerminated(txn=txn)]
        return
    layer.receive_message(req, source(transport), now=3.0)  # Completed resends the final
    # (from the compact Completed record: the same octets, parsed back)
    assert [serialize_message(m) for m in sent(layer)] == [serialize_message(ok)]
    layer.send_response(response(req, 500), now=3.0)  # finals after the first dropped
    assert sent(layer) == []
    assert layer.get_timer() == pytest.approx(34.0)  # Timer J = 64*T1
    run_timers(layer, until=40.0)
    assert drain(layer) == [TransactionTerminated(txn=txn)]
    # the request is new again once J has fired
    layer.receive_message(req, source(transport), now=41.0)
    assert isinstance(drain(layer)[0], RequestReceived)


# --------------------------------------------------------- transport errors


@pytest.mark.parametrize("method", ["INVITE", "REGISTER"])
def test_transport_failure_of_a_client_transaction(method: str) -> None:
    layer, txn, _req = _client(method)
    layer.transport_failed(txn, now=0.1)
    assert drain(layer) == [TransportFailed(txn=txn), TransactionTerminated(txn=txn)]
    assert layer.get_timer() is None
    layer.transport_failed(txn, now=0.2)  # unknown now: nothing
    assert drain(layer) == []


def test_transport_failure_reported_for_the_message_of_a_server_transaction() -> None:
    layer, txn, req = _server(trying_delay=None)
    busy = response(req, 486)
    layer.send_response(busy, now=0.0)
    [(msg, _)] = layer.messages_to_send()
    layer.transport_failed_for(msg, now=0.1)
    assert drain(layer) == [TransportFailed(txn=txn), TransactionTerminated(txn=txn)]
    assert layer.transaction_count == 0


def test_transport_failure_of_the_ack_names_the_invite_transaction() -> None:
    layer, txn, req = _client("INVITE")
    layer.receive_message(response(req, 404), source(), now=0.1)
    drain(layer)
    [ack] = sent(layer)
    layer.transport_failed_for(ack, now=0.2)
    assert drain(layer) == [TransportFailed(txn=txn), TransactionTerminated(txn=txn)]


# --------------------------------------------------------------- TU side


def test_send_request_sets_a_branch_when_the_via_has_none() -> None:
    layer = TransactionLayer()
    req = request("OPTIONS", branch=None)
    txn = layer.send_request(req, target(), now=0.0)
    assert txn.branch.startswith("z9hG4bK") and len(txn.branch) > 7 + 16
    assert req.top_via.branch == txn.branch
    assert txn.method == "OPTIONS"


def test_send_request_sends_an_ack_without_a_transaction() -> None:
    layer = TransactionLayer()
    ack = request("ACK", branch="z9hG4bKack")
    layer.send_request(ack, target(), now=0.0)
    assert sent(layer) == [ack]
    assert layer.transaction_count == 0
    assert layer.get_timer() is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: request("OPTIONS", cseq_method="INVITE"), id="cseq-method-differs"),
        pytest.param(lambda: request("OPTIONS", via_host="", via_port=None), id="bad-via"),
    ],
)
def test_send_request_refuses_requests_it_cannot_track(make: object) -> None:
    layer = TransactionLayer()
    with pytest.raises(LocalProtocolError):
        layer.send_request(make(), target(), now=0.0)  # type: ignore[operator]


def test_send_request_refuses_a_live_duplicate() -> None:
    layer = TransactionLayer()
    layer.send_request(request("OPTIONS"), target(), now=0.0)
    with pytest.raises(LocalProtocolError):
        layer.send_request(request("OPTIONS"), target(), now=0.0)


def test_response_for_no_transaction_is_dropped() -> None:
    layer = TransactionLayer()
    layer.send_response(response(request("OPTIONS"), 200), now=0.0)
    assert sent(layer) == []


def test_send_stateless_queues_without_state() -> None:
    layer = TransactionLayer()
    ok = response(request("INVITE"), 200)
    layer.send_stateless(ok, target())
    assert layer.messages_to_send() == [(ok, target())]
    assert layer.transaction_count == 0


def test_trying_delay_zero_sends_100_at_once() -> None:
    layer = TransactionLayer(timers=TimerConfig(trying_delay=0.0))
    layer.receive_message(request("INVITE"), source(), now=0.0)
    [trying] = sent(layer)
    assert isinstance(trying, SipResponse) and trying.status == 100
    assert layer.get_timer() is None


def test_invite_server_drops_a_second_final_response() -> None:
    layer, _, req = _server(trying_delay=None)
    layer.send_response(response(req, 486), now=0.0)
    sent(layer)
    layer.send_response(response(req, 200), now=0.1)
    assert sent(layer) == []


def test_final_response_with_an_unreadable_to_is_still_sent() -> None:
    layer = TransactionLayer(timers=TimerConfig(trying_delay=None))
    req = request("INVITE", branch=None)  # RFC 2543: the To tag is remembered
    layer.receive_message(req, source(), now=0.0)
    ok = response(req, 486)
    ok.headers.set("To", "<<not a uri")
    layer.send_response(ok, now=0.0)
    assert sent(layer) == [ok]


def test_cancel_helper_does_not_duplicate_a_cancel_the_tu_sent() -> None:
    from natkit.sip.transaction import build_cancel

    layer, txn, req = _client("INVITE")
    layer.receive_message(response(req, 180), source(), now=0.1)
    layer.send_request(build_cancel(req), target(), now=0.2)
    sent(layer)
    assert layer.cancel(txn, now=0.3) == ClientTransactionId(BRANCH, "CANCEL")
    assert sent(layer) == []


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(lambda: request("OPTIONS", branch=None), id="request-without-branch"),
        pytest.param(
            lambda: request("OPTIONS", via_host="", via_port=None), id="request-without-via"
        ),
        pytest.param(
            lambda: response(request("OPTIONS", branch=None), 200), id="unknown-rfc2543-response"
        ),
    ],
)
def test_transport_failure_for_a_message_of_no_transaction_is_ignored(message: object) -> None:
    layer, txn, _ = _client("OPTIONS")
    layer.transport_failed_for(message(), now=0.1)  # type: ignore[operator]
    assert drain(layer) == []
    assert layer.has_transaction(txn)


def test_timer_heap_drops_entries_of_ended_transactions() -> None:
    layer = TransactionLayer()
    for n in range(3000):
        req = request("REGISTER", branch=f"z9hG4bK{n}", transport=TCP)
        layer.send_request(req, target(TCP), now=0.0)
        layer.receive_message(response(req, 200), source(TCP), now=0.0)  # K = 0: ends at once
    assert layer.transaction_count == 0
    assert len(layer._heap) <= 1024  # stale Timer F entries compacted away
    live = layer.send_request(request("REGISTER", transport=TCP), target(TCP), now=1.0)
    run_timers(layer, until=100.0)
    assert drain(layer)[-2:] == [
        TransactionTimedOut(txn=live, timer="F"),
        TransactionTerminated(txn=live),
    ]


def test_final_response_without_to_is_dropped_before_any_state_change() -> None:
    layer, _, req = _client("INVITE")
    busy = response(req, 486)
    busy.headers.remove("To")
    layer.receive_message(busy, source(), now=0.1)
    assert drain(layer) == []
    assert sent(layer) == []
    assert _send_times(run_timers(layer, until=1.0)) == [0.5]  # still Calling


def test_without_timer_c_a_ringing_invite_waits_for_its_final_response() -> None:
    layer = TransactionLayer(timers=TimerConfig(timer_c=None))
    req = request("INVITE")
    txn = layer.send_request(req, target(), now=0.0)
    layer.receive_message(response(req, 180), source(), now=1.0)
    assert layer.get_timer() is None
    layer.receive_message(response(req, 603), source(), now=3600.0)
    assert [type(e) for e in drain(layer)] == [ResponseReceived, ResponseReceived]
    assert layer.has_transaction(txn)  # Completed, Timer D running


def test_invite_client_over_the_wire_format() -> None:
    from natkit.sip.message import parse_message, serialize_message

    layer = TransactionLayer()
    wire = (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8\r\n"
        b"Max-Forwards: 70\r\n"
        b"t: Bob <sip:bob@biloxi.example.com>\r\n"
        b"f: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"i: a84b4c76e66710\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"l: 0\r\n\r\n"
    )
    invite = parse_message(wire)
    assert isinstance(invite, SipRequest)
    txn = layer.send_request(invite, target(), now=0.0)
    assert txn == ClientTransactionId("z9hG4bKnashds8", "INVITE")
    sent(layer)
    reply = (
        b"SIP/2.0 404 Not Found\r\n"
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnashds8;received=192.0.2.1\r\n"
        b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
        b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    layer.receive_message(parse_message(reply), source(), now=0.1)
    [ack] = sent(layer)
    again = parse_message(serialize_message(ack))
    assert isinstance(again, SipRequest)
    assert again.method == "ACK"
    assert again.to.tag == "a6c85cf"
    assert again.top_via.branch == "z9hG4bKnashds8"
    assert again.cseq.seq == 314159 and again.cseq.method == "ACK"


@pytest.mark.parametrize(
    ("method", "first_timer"),
    [pytest.param("INVITE", 0.5, id="timer-a"), pytest.param("OPTIONS", 0.5, id="timer-e")],
)
def test_retransmissions_go_to_the_target_of_the_first_send(
    method: str, first_timer: float
) -> None:
    from natkit.sip.flow import Target

    layer = TransactionLayer()
    pinned = Target(UDP, target().remote, "udp:flow-7")
    req = request(method)
    layer.send_request(req, pinned, now=0.0)
    layer.handle_timer(now=first_timer)
    assert layer.messages_to_send() == [(req, pinned), (req, pinned)]


def test_response_without_via_and_without_transaction_id_is_dropped() -> None:
    layer, txn, req = _server("OPTIONS")
    ok = response(req, 200)
    ok.headers.remove("Via")
    layer.send_response(ok, now=0.0)
    assert sent(layer) == []
    assert layer.has_transaction(txn)  # still waiting for a usable answer


def test_a_completed_udp_non_invite_keeps_only_the_responses_octets() -> None:
    # Timer J holds it 32 s: the compact record must not pin the parsed messages.
    layer, txn, req = _server("REGISTER")
    ok = response(req, 200)
    layer.send_response(ok, now=1.0)
    assert sent(layer) == [ok]
    assert layer.has_transaction(txn)
    record = layer._servers[txn]
    assert not hasattr(record, "request") and isinstance(record.wire, bytes)
    layer.receive_message(req, source(), now=2.0)  # a retransmission: the same octets again
    assert [serialize_message(m) for m in sent(layer)] == [serialize_message(ok)]
    assert run_timers(layer, until=40.0) == [(33.0, [])]  # Timer J ends it, sending nothing
    assert not layer.has_transaction(txn)


def test_timer_j_records_end_in_order_with_the_heap_timers_around_them() -> None:
    """Completed records wait for Timer J in a FIFO beside the timer heap:
    they end at their own deadline, interleaved with heap timers in time
    order, and one that ended early (transport failure) is skipped."""
    layer = TransactionLayer()
    ids = []
    for i, at in enumerate((1.0, 2.0, 3.0)):
        req = request("REGISTER", branch=f"z9hG4bK-j{i}", call_id=f"j{i}")
        layer.receive_message(req, source(), now=at - 0.5)
        [event] = drain(layer)
        assert isinstance(event, RequestReceived)
        layer.send_response(response(req, 200), now=at)
        ids.append(event.server_txn)
    sent(layer)
    layer.transport_failed(ids[1], now=3.5)  # ends early: its J entry is stale
    drain(layer)
    options = request("OPTIONS", branch="z9hG4bK-client")
    client = layer.send_request(options, target(), now=10.0)  # Timer F at 42.0
    assert layer.get_timer() == pytest.approx(10.5)  # E before any J
    ended: list[tuple[float, object]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= 40.0:
        layer.handle_timer(now=deadline)
        ended += [(deadline, e.txn) for e in drain(layer) if isinstance(e, TransactionTerminated)]
    assert [(round(when, 6), txn) for when, txn in ended] == [(33.0, ids[0]), (35.0, ids[2])]
    assert layer.has_transaction(client) and not any(layer.has_transaction(t) for t in ids)
    # Several deadlines due at one call fire earliest first too.
    layer2 = TransactionLayer()
    for i in range(3):
        req = request("REGISTER", branch=f"z9hG4bK-k{i}", call_id=f"k{i}")
        layer2.receive_message(req, source(), now=0.0)
        layer2.send_response(response(req, 200), now=float(i))
    drain(layer2)
    layer2.handle_timer(now=100.0)
    assert layer2.transaction_count == 0 and layer2.get_timer() is None
