"""Property: random interleavings of network input, TU calls and timers never
raise, and once the TU has answered every request, every transaction ends
within its timers and nothing is left behind (RFC 3261 §17: each machine
reaches Terminated)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.sip.flow import SipTransport
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response
from natkit.sip.transaction import TransactionLayer, build_cancel
from natkit.sip.transaction_events import (
    ClientTransactionId,
    RequestReceived,
    ServerTransactionId,
    TransactionTerminated,
)

from .test_transaction_helpers import drain, request, response, sent, source, target

BRANCHES = ["z9hG4bKa", "z9hG4bKb", "z9hG4bKc", None, "legacy1"]
METHODS = ["INVITE", "INVITE", "ACK", "CANCEL", "OPTIONS", "REGISTER"]
STATUSES = [100, 180, 183, 200, 202, 302, 404, 486, 487, 500, 603]
TRANSPORTS = [SipTransport.UDP, SipTransport.TCP]

_request_op = st.tuples(
    st.just("request"),
    st.sampled_from(METHODS),
    st.sampled_from(BRANCHES),
    st.sampled_from(TRANSPORTS),
    st.sampled_from([None, "tt1", "x"]),
)
_response_op = st.tuples(
    st.just("response"),
    st.sampled_from(METHODS),
    st.sampled_from(BRANCHES),
    st.sampled_from(STATUSES),
    st.sampled_from(["tt1", "tt2"]),
)
_send_op = st.tuples(
    st.just("send"),
    st.sampled_from(["INVITE", "INVITE", "REGISTER"]),
    st.sampled_from(BRANCHES[:3]),
    st.sampled_from(TRANSPORTS),
    st.none(),
)
_answer_op = st.tuples(
    st.just("answer"), st.integers(0, 20), st.sampled_from(STATUSES), st.none(), st.none()
)
_reply_op = st.tuples(
    st.just("reply"),
    st.integers(0, 20),
    st.sampled_from(STATUSES),
    st.sampled_from(["tt1", "tt2"]),
    st.none(),
)
_peer_op = st.tuples(
    st.sampled_from(["retransmit", "ack", "ack2xx", "cancel-in"]),
    st.integers(0, 20),
    st.sampled_from(TRANSPORTS),
    st.none(),
    st.none(),
)
BREAKAGES: list[tuple[str, str | None]] = [
    ("Via", "garbage"),
    ("Via", ""),
    ("Via", None),
    ("CSeq", "x INVITE"),
    ("CSeq", "99999999999 INVITE"),
    ("CSeq", None),
    ("To", "<<sip:"),
    ("To", None),
    ("From", '"unterminated <sip:a@b>'),
    ("From", None),
    ("Call-ID", None),
]
_broken_op = st.tuples(
    st.sampled_from(["broken-request", "broken-response"]),
    st.sampled_from(METHODS),
    st.sampled_from(BRANCHES),
    st.sampled_from(BREAKAGES),
    st.integers(0, 20),
)
_other_op = st.tuples(
    st.sampled_from(["cancel", "fail", "fail-msg", "time"]),
    st.integers(0, 20),
    st.floats(0.0, 40.0, allow_nan=False),
    st.none(),
    st.none(),
)
OPS = st.lists(
    st.one_of(
        _request_op, _response_op, _send_op, _answer_op, _reply_op, _peer_op, _broken_op, _other_op
    ),
    min_size=20,
    max_size=80,
)


def _answer(req: SipRequest, status: int) -> SipResponse:
    """The TU's answer; a request whose To does not parse gets no To tag."""
    try:
        return response(req, status)
    except MalformedMessageError:
        return make_response(req, status)


def _peer_message(kind: str, req: SipRequest) -> SipMessage | None:
    """What a peer sends about a request it sent: the request again, its
    CANCEL, or an ACK (same branch, or a 2xx ACK's new one); None when the
    request is too broken to build from."""
    if kind == "retransmit":
        return req
    try:
        if kind == "cancel-in":
            return build_cancel(req)
        return request(
            "ACK",
            branch=req.top_via.branch if kind == "ack" else "z9hG4bKack",
            to_tag="tt1",
            uri=str(req.uri),
            call_id=req.call_id,
            from_tag=req.from_.tag or "",
            seq=req.cseq.seq,
        )
    except MalformedMessageError:
        return None


@settings(max_examples=300, deadline=None)
@given(ops=OPS, seed=st.integers(0, 2**32 - 1))
def test_random_interleavings_never_raise_and_every_transaction_ends(
    ops: list[tuple[object, ...]], seed: int
) -> None:
    layer = TransactionLayer(rng=random.Random(seed), reject_merged_requests=seed % 2 == 0)
    now = 0.0
    server_requests: list[tuple[ServerTransactionId, SipRequest]] = []
    clients: list[tuple[ClientTransactionId, SipRequest]] = []
    started: set[object] = set()
    ended: list[object] = []

    last_sent: list[SipMessage] = []

    def collect() -> None:
        for event in drain(layer):
            if isinstance(event, RequestReceived):
                server_requests.append((event.server_txn, event.request))
                started.add(event.server_txn)
            elif isinstance(event, TransactionTerminated):
                ended.append(event.txn)
        last_sent[:] = sent(layer)

    for op in ops:
        kind = op[0]
        if kind == "request":
            _, method, branch, transport, to_tag = op
            req = request(str(method), branch=branch, transport=transport, to_tag=to_tag)  # type: ignore[arg-type]
            layer.receive_message(req, source(transport), now=now)  # type: ignore[arg-type]
        elif kind == "response":
            _, method, branch, status, to_tag = op
            req = request(str(method), branch=branch)  # type: ignore[arg-type]
            layer.receive_message(response(req, int(status), to_tag=str(to_tag)), source(), now=now)  # type: ignore[call-overload]
        elif kind == "send":
            _, method, branch, transport, _ = op
            req = request(str(method), branch=branch, transport=transport)  # type: ignore[arg-type]
            txn = ClientTransactionId(str(branch), str(method))
            if not layer.has_transaction(txn):
                txn = layer.send_request(req, target(transport), now=now)  # type: ignore[arg-type]
                clients.append((txn, req))
                started.add(txn)
        elif kind == "answer" and server_requests:
            _, index, status, _, _ = op
            txn_id, req = server_requests[int(index) % len(server_requests)]  # type: ignore[call-overload]
            answer = _answer(req, int(status))  # type: ignore[call-overload]
            layer.send_response(answer, now=now, server_txn=None if index % 2 else txn_id)  # type: ignore[operator]
        elif kind == "reply" and clients:
            _, index, status, to_tag, _ = op
            req = clients[int(index) % len(clients)][1]  # type: ignore[call-overload]
            layer.receive_message(response(req, int(status), to_tag=str(to_tag)), source(), now=now)  # type: ignore[call-overload]
        elif kind in ("retransmit", "ack", "ack2xx", "cancel-in") and server_requests:
            _, index, transport, _, _ = op
            req = server_requests[int(index) % len(server_requests)][1]  # type: ignore[call-overload]
            incoming = _peer_message(str(kind), req)
            if incoming is not None:
                layer.receive_message(incoming, source(transport), now=now)  # type: ignore[arg-type]
        elif kind in ("broken-request", "broken-response"):
            _, method, branch, (name, value), index = op  # type: ignore[misc]
            base = request(str(method), branch=branch)  # type: ignore[arg-type]
            if kind == "broken-response" and clients:
                base = clients[int(index) % len(clients)][1]  # type: ignore[call-overload]
            msg: SipMessage = base.copy() if kind == "broken-request" else response(base, 486)
            msg.headers.remove(name)
            if value is not None:
                msg.headers.add(name, value)
            layer.receive_message(msg, source(), now=now)
        elif kind == "fail-msg":
            for msg in last_sent:
                layer.transport_failed_for(msg, now=now)
        elif kind == "cancel" and clients:
            layer.cancel(clients[int(op[1]) % len(clients)][0], now=now)  # type: ignore[call-overload]
        elif kind == "fail" and clients:
            layer.transport_failed(clients[int(op[1]) % len(clients)][0], now=now)  # type: ignore[call-overload]
        elif kind == "time":
            now += float(op[2])  # type: ignore[arg-type]
            layer.handle_timer(now=now)
        collect()

    # The TU's duty: a final answer to every request it was given.
    for txn_id, req in server_requests:
        layer.send_response(_answer(req, 500), now=now, server_txn=txn_id)
    collect()
    horizon = now + 180.0 + 64 * 0.5 + 64 * 0.5 + 1.0  # Timer C, then 64*T1 twice at most
    steps = 0
    while (deadline := layer.get_timer()) is not None:
        assert deadline <= horizon
        layer.handle_timer(now=deadline)
        collect()
        steps += 1
        assert steps < 10_000
    assert layer.transaction_count == 0
    assert layer.get_timer() is None
    assert len(layer._heap) == 0
    assert layer._legacy_responses == {} and layer._merge_index == {}
    assert started <= set(ended)  # and each one said so
