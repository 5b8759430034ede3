"""Client transactions: retransmission timers, RTO caching, matching responses (RFC 8489 §6.2)."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from natkit.addr import Endpoint
from natkit.errors import LocalProtocolError
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.events import ResponseReceived, StunEvent, TransactionTimedOut
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.transaction import StunClient, StunClientConfig

SERVER = Endpoint("192.0.2.1", 3478)
SAME_IP_OTHER_PORT = Endpoint("192.0.2.1", 3479)
OTHER_SERVER = Endpoint("198.51.100.1", 3478)
MAPPED = Endpoint("203.0.113.5", 40000)


def _client(**kwargs: object) -> StunClient:
    return StunClient(StunClientConfig(rng=random.Random(7), **kwargs))  # type: ignore[arg-type]


def _binding() -> StunMessage:
    return StunMessage.request(Method.BINDING, b"")


def _events(client: StunClient) -> list[StunEvent]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def _answer(client: StunClient, *, now: float, server: Endpoint = SERVER) -> None:
    """Answer every queued request with a Binding success."""
    for dg in client.datagrams_to_send(now=now):
        req = parse_message(dg.data)
        resp = req.success().add(at.XOR_MAPPED_ADDRESS, MAPPED)
        client.receive_datagram(serialize_message(resp), server, now=now)


def _run_timers(client: StunClient, until: float) -> list[tuple[float, int]]:
    """Fire timers up to ``until``; return (time, datagrams sent) per firing."""
    fired = []
    while (deadline := client.get_timer()) is not None and deadline <= until:
        client.handle_timer(now=deadline)
        fired.append((deadline, len(client.datagrams_to_send(now=deadline))))
    return fired


def _send_times(client: StunClient, start: float = 0.0) -> tuple[list[float], float | None]:
    """Send one request at ``start`` and run it out; return send times and timeout time."""
    client.send_request(_binding(), SERVER, now=start)
    times = [start] * len(client.datagrams_to_send(now=start))
    timeout = None
    while (deadline := client.get_timer()) is not None:
        client.handle_timer(now=deadline)
        times += [deadline] * len(client.datagrams_to_send(now=deadline))
        for event in _events(client):
            assert isinstance(event, TransactionTimedOut)
            timeout = deadline
    return times, timeout


# -- retransmission schedule ----------------------------------------------------------


def test_udp_retransmits_at_rfc_times_and_times_out_at_39_5() -> None:
    times, timeout = _send_times(_client())
    assert times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert timeout == 39.5


def test_timeout_event_names_transaction_and_server() -> None:
    client = _client()
    tid = client.send_request(_binding(), SERVER, now=0.0)
    _run_timers(client, 100.0)
    assert _events(client) == [TransactionTimedOut(transaction_id=tid, server=SERVER)]
    assert client.pending == 0
    assert client.get_timer() is None


def test_timer_does_nothing_before_its_deadline() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.handle_timer(now=0.49)
    assert client.datagrams_to_send(now=0.49) == []
    assert client.get_timer() == 0.5


def test_retransmission_resends_identical_bytes() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    first = client.datagrams_to_send(now=0.0)
    client.handle_timer(now=0.5)
    assert client.datagrams_to_send(now=0.5) == first


@pytest.mark.parametrize(
    ("config", "times", "timeout"),
    [
        pytest.param({"rto": 1.0, "rc": 3, "rm": 4}, [0.0, 1.0, 3.0], 7.0, id="rto1-rc3-rm4"),
        pytest.param({"rc": 1, "rm": 2}, [0.0], 1.0, id="single-send"),
    ],
)
def test_retransmission_schedule_follows_config(
    config: dict[str, float], times: list[float], timeout: float
) -> None:
    assert _send_times(_client(**config)) == (times, timeout)


def test_reliable_transport_sends_once_and_times_out_at_ti() -> None:
    times, timeout = _send_times(_client(reliable=True))
    assert times == [0.0]
    assert timeout == 39.5


def test_independent_transactions_keep_independent_timers() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.send_request(_binding(), OTHER_SERVER, now=0.2)
    assert len(client.datagrams_to_send(now=0.2)) == 2
    assert client.get_timer() == 0.5
    assert _run_timers(client, 0.7) == [(0.5, 1), (0.7, 1)]
    assert client.pending == 2


# -- RTO caching (RFC 8489 §6.2.1) ------------------------------------------------------


def test_clean_sample_sets_the_next_rto_to_the_same_server_ip() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.1)
    # RFC 6298 first sample: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR = 3R.
    assert client.rto_for(SERVER, now=0.1) == pytest.approx(0.3)
    client.send_request(_binding(), SAME_IP_OTHER_PORT, now=1.0)
    assert client.get_timer() == pytest.approx(1.3)


def test_rto_is_cached_per_ip_not_shared_with_other_servers() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.1)
    assert client.rto_for(OTHER_SERVER, now=0.1) == 0.5
    client.send_request(_binding(), OTHER_SERVER, now=1.0)
    assert client.get_timer() == 1.5


def test_second_sample_smooths_the_rto() -> None:
    client = _client()
    for start in (0.0, 1.0):
        client.send_request(_binding(), SERVER, now=start)
        _answer(client, now=start + 0.1)
    # RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.1|, SRTT = 0.1: RTO = 0.1 + 4 * 0.0375
    assert client.rto_for(SERVER, now=1.1) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("rtt", "rto"),
    [
        pytest.param(0.01, 0.1, id="clamped-to-rto-min"),
        pytest.param(2.0, 3.0, id="clamped-to-rto-max"),
    ],
)
def test_cached_rto_is_clamped(rtt: float, rto: float) -> None:
    client = _client(rto=5.0)
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=rtt)
    assert client.rto_for(SERVER, now=rtt) == pytest.approx(rto)


def test_karn_no_sample_from_a_retransmitted_request() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.handle_timer(now=0.5)
    _answer(client, now=0.6)
    # A sample would give 3 * 0.1 (or 3 * 0.6); Karn keeps the backed-off RTO.
    assert client.rto_for(SERVER, now=0.6) == pytest.approx(1.0)


def test_clean_sample_after_karn_backoff_starts_a_fresh_estimate() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.handle_timer(now=0.5)
    _answer(client, now=0.6)
    client.send_request(_binding(), SERVER, now=1.0)
    _answer(client, now=1.2)
    assert client.rto_for(SERVER, now=1.2) == pytest.approx(0.6)


def test_cached_rto_goes_stale_after_ten_minutes() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.1)
    assert client.rto_for(SERVER, now=600.1) == pytest.approx(0.3)
    assert client.rto_for(SERVER, now=600.2) == 0.5
    client.send_request(_binding(), SERVER, now=700.0)
    assert client.get_timer() == 700.5


def test_stale_estimate_is_not_smoothed_into_a_new_sample() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.9)
    client.send_request(_binding(), SERVER, now=1000.0)
    _answer(client, now=1000.1)
    assert client.rto_for(SERVER, now=1000.1) == pytest.approx(0.3)


def test_timed_out_transaction_leaves_rto_cache_alone() -> None:
    client = _client()
    _send_times(client)
    assert client.rto_for(SERVER, now=40.0) == 0.5


# -- matching responses --------------------------------------------------------------


def test_response_is_reported_with_source_and_rtt() -> None:
    client = _client()
    tid = client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.25)
    [event] = _events(client)
    assert isinstance(event, ResponseReceived)
    assert event.transaction_id == tid
    assert event.is_success
    assert event.source == SERVER
    assert event.rtt == pytest.approx(0.25)
    assert event.response.get(at.XOR_MAPPED_ADDRESS) == MAPPED
    assert client.pending == 0
    assert client.get_timer() is None


def test_rtt_is_measured_from_the_last_send() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.handle_timer(now=0.5)
    _answer(client, now=0.7)
    [event] = _events(client)
    assert isinstance(event, ResponseReceived)
    assert event.rtt == pytest.approx(0.2)


def test_error_response_is_reported_not_retried() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    err = parse_message(dg.data).error_response(420)
    client.receive_datagram(serialize_message(err), SERVER, now=0.1)
    [event] = _events(client)
    assert isinstance(event, ResponseReceived)
    assert not event.is_success
    assert event.response.error is not None and event.response.error.code == 420
    assert client.datagrams_to_send(now=0.1) == []


def test_response_from_another_address_is_accepted() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.1, server=OTHER_SERVER)
    [event] = _events(client)
    assert isinstance(event, ResponseReceived)
    assert event.source == OTHER_SERVER


def _response_bytes(
    client: StunClient, *, method: int = Method.BINDING, tid: bytes | None = None
) -> bytes:
    [dg] = client.datagrams_to_send(now=0.0)
    req = parse_message(dg.data)
    resp = StunMessage(method, MessageClass.SUCCESS, tid or req.transaction_id)
    return serialize_message(resp)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda c: _response_bytes(c, method=Method.ALLOCATE), id="wrong-method"),
        pytest.param(lambda c: _response_bytes(c, tid=bytes(12)), id="unknown-tid"),
        pytest.param(lambda c: b"\xff" + _response_bytes(c)[1:], id="garbage"),
        pytest.param(
            lambda c: serialize_message(parse_message(c.datagrams_to_send(now=0.0)[0].data)),
            id="request-echoed-back",
        ),
        pytest.param(
            lambda c: serialize_message(
                StunMessage(
                    Method.BINDING,
                    MessageClass.INDICATION,
                    parse_message(c.datagrams_to_send(now=0.0)[0].data).transaction_id,
                )
            ),
            id="indication",
        ),
    ],
)
def test_unmatched_responses_are_ignored(mangle: Callable[[StunClient], bytes]) -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    data = mangle(client)
    client.receive_datagram(data, SERVER, now=0.1)
    assert _events(client) == []
    assert client.pending == 1
    assert client.get_timer() == 0.5


def test_duplicate_response_reports_once() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    data = serialize_message(parse_message(dg.data).success())
    client.receive_datagram(data, SERVER, now=0.1)
    client.receive_datagram(data, SERVER, now=0.2)
    assert len(_events(client)) == 1


# -- commands ----------------------------------------------------------------------


def test_cancel_stops_retransmissions_and_reports_nothing() -> None:
    client = _client()
    tid = client.send_request(_binding(), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    client.cancel(tid)
    assert client.get_timer() is None
    client.handle_timer(now=100.0)
    assert client.datagrams_to_send(now=100.0) == []
    client.receive_datagram(serialize_message(parse_message(dg.data).success()), SERVER, now=1.0)
    assert _events(client) == []
    assert client.pending == 0


def test_cancel_of_unknown_transaction_is_harmless() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    client.cancel(bytes(12))
    assert client.pending == 1


def test_cancel_keeps_other_transactions_timers() -> None:
    client = _client()
    first = client.send_request(_binding(), SERVER, now=0.0)
    client.send_request(_binding(), OTHER_SERVER, now=0.1)
    client.cancel(first)
    assert client.get_timer() == 0.6


def test_request_keeps_its_own_12_byte_transaction_id() -> None:
    client = _client()
    tid = bytes(range(12))
    assert client.send_request(StunMessage.request(Method.BINDING, tid), SERVER, now=0.0) == tid
    [dg] = client.datagrams_to_send(now=0.0)
    assert parse_message(dg.data).transaction_id == tid


def test_duplicate_transaction_id_is_replaced() -> None:
    client = _client()
    tid = bytes(range(12))
    client.send_request(StunMessage.request(Method.BINDING, tid), SERVER, now=0.0)
    second = client.send_request(StunMessage.request(Method.BINDING, tid), SERVER, now=0.0)
    assert second != tid
    assert len(second) == 12


def test_transaction_ids_come_from_the_seeded_rng() -> None:
    def first_tid() -> bytes:
        return _client().send_request(_binding(), SERVER, now=0.0)

    assert first_tid() == first_tid()
    assert first_tid() == random.Random(7).getrandbits(96).to_bytes(12, "big")


def test_send_request_refuses_non_requests() -> None:
    with pytest.raises(LocalProtocolError):
        _client().send_request(
            StunMessage(Method.BINDING, MessageClass.INDICATION, b""), SERVER, now=0.0
        )


def test_send_indication_is_sent_once_without_a_transaction() -> None:
    client = _client(fingerprint=True)
    client.send_indication(StunMessage(Method.BINDING, MessageClass.INDICATION, b""), SERVER)
    [dg] = client.datagrams_to_send(now=0.0)
    assert dg.remote == SERVER
    msg = parse_message(dg.data)
    assert msg.message_class == MessageClass.INDICATION
    assert len(msg.transaction_id) == 12
    assert msg.has_fingerprint
    assert client.pending == 0
    assert client.get_timer() is None


def test_send_indication_refuses_requests() -> None:
    with pytest.raises(LocalProtocolError):
        _client().send_indication(_binding(), SERVER)


def test_software_and_fingerprint_are_added_from_config() -> None:
    client = _client(software="natkit-test", fingerprint=True)
    client.send_request(_binding(), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    msg = parse_message(dg.data)
    assert msg.get(at.SOFTWARE) == "natkit-test"
    assert msg.has_fingerprint


def test_caller_supplied_software_is_kept_and_auth_attributes_are_dropped() -> None:
    client = _client(software="natkit-test")
    req = _binding().add(at.SOFTWARE, "mine").add(at.USERNAME, "stale").add(at.PRIORITY, 5)
    client.send_request(req, SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    msg = parse_message(dg.data)
    assert msg.get_all(at.SOFTWARE) == ["mine"]
    assert msg.get(at.USERNAME) is None
    assert msg.get(at.PRIORITY) == 5


def test_ipv6_xor_attribute_survives_a_new_transaction_id() -> None:
    """XOR addresses of IPv6 peers depend on the transaction ID (RFC 8489 §14.2):
    a request built without one must still carry the right address."""
    peer = Endpoint("2001:db8::7", 5000)
    client = _client()
    client.send_request(_binding().add(at.XOR_PEER_ADDRESS, peer), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    assert parse_message(dg.data).get(at.XOR_PEER_ADDRESS) == peer


def test_ipv6_xor_attribute_of_an_indication_survives_a_new_transaction_id() -> None:
    peer = Endpoint("2001:db8::7", 5000)
    client = _client()
    indication = StunMessage(Method.SEND, MessageClass.INDICATION, b"")
    client.send_indication(indication.add(at.XOR_PEER_ADDRESS, peer), SERVER)
    [dg] = client.datagrams_to_send(now=0.0)
    assert parse_message(dg.data).get(at.XOR_PEER_ADDRESS) == peer


def test_malformed_xor_attribute_is_sent_as_built() -> None:
    client = _client()
    client.send_request(_binding().add_raw(at.XOR_PEER_ADDRESS.type, b"\x00\x09"), SERVER, now=0.0)
    [dg] = client.datagrams_to_send(now=0.0)
    assert parse_message(dg.data).get_raw(at.XOR_PEER_ADDRESS.type) == b"\x00\x09"


def test_timer_of_a_cancelled_transaction_fires_harmlessly() -> None:
    client = _client()
    tid = client.send_request(_binding(), SERVER, now=0.0)
    client.datagrams_to_send(now=0.0)
    client.cancel(tid)
    client.handle_timer(now=0.5)
    assert client.datagrams_to_send(now=0.5) == []
    assert _events(client) == []


def test_karn_backoff_replaces_an_earlier_estimate() -> None:
    client = _client()
    client.send_request(_binding(), SERVER, now=0.0)
    _answer(client, now=0.1)  # RTO 0.3
    client.send_request(_binding(), SERVER, now=1.0)
    client.datagrams_to_send(now=1.0)
    client.handle_timer(now=1.3)
    _answer(client, now=1.4)
    assert client.rto_for(SERVER, now=1.4) == pytest.approx(0.6)
    assert client.rto_for(SERVER, now=1.4 + 600.0) == pytest.approx(0.6)


def test_the_rto_cache_stays_bounded() -> None:
    from natkit.stun import transaction

    client = StunClient(StunClientConfig(rng=random.Random(1)))
    for i in range(transaction._RTO_CACHE_SIZE + 50):
        server = Endpoint(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 3478)
        tid = client.send_request(StunMessage.request(Method.BINDING, b""), server, now=float(i))
        response = StunMessage(Method.BINDING, MessageClass.SUCCESS, tid)
        client.receive_datagram(serialize_message(response), server, now=float(i) + 0.01)
    assert len(client._rto) <= transaction._RTO_CACHE_SIZE + 1
