"""The sans-IO TURN client when answers go missing or a batch is refused:
Refresh and CreatePermission retries, expiry, batch splitting (explicit ``now``)."""

from __future__ import annotations

from typing import Any

import pytest

from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, parse_message
from natkit.turn.client import ClientState, TurnClient
from natkit.turn.client_events import (
    AllocationLost,
    AllocationRefreshed,
    PermissionCreated,
    PermissionFailed,
)
from tests.turn.test_client import (
    PEER,
    PEER2,
    RELAYED,
    RELAYED6,
    allocated,
    error,
    events,
    feed,
    one_request,
    out,
    permitted,
    requests,
    success,
)


def run_until(client: TurnClient, until: float) -> tuple[float, list[StunMessage]]:
    """Fire every timer due up to ``until``, answering nothing; the time of the
    last one fired and the requests sent (retransmissions included)."""
    sent: list[StunMessage] = []
    last = 0.0
    while (deadline := client.get_timer()) is not None and deadline <= until:
        last = deadline
        client.handle_timer(now=deadline)
        sent.extend(requests(client, deadline))
    return last, sent


def until_retried(
    client: TurnClient, method: Method, *already: StunMessage
) -> tuple[float, StunMessage, StunMessage]:
    """Fire timers, answering nothing, until a second ``method`` transaction
    goes out (``already``: requests drained before): its time, the first
    request and the retry. (When the timeout comes depends on the RTO the
    allocation's exchange taught the StunClient.)"""
    sent = list(already)
    when = 0.0
    while len(distinct(sent, method)) < 2:
        deadline = client.get_timer()
        assert deadline is not None
        when = deadline
        client.handle_timer(now=when)
        sent.extend(requests(client, when))
    first, retry = distinct(sent, method)
    return when, first, retry


def distinct(msgs: list[StunMessage], method: Method) -> list[StunMessage]:
    """One message per transaction (retransmissions dropped), in order."""
    seen: dict[bytes, StunMessage] = {}
    for msg in msgs:
        if msg.method == method:
            seen.setdefault(msg.transaction_id, msg)
    return list(seen.values())


def peer_ips(msg: StunMessage) -> list[str]:
    return [ep.host for ep in msg.get_all(at.XOR_PEER_ADDRESS)]


# -- Refresh (item 11) -----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["udp", "stream"])
def test_an_unanswered_refresh_is_retried_and_its_answer_keeps_the_allocation(
    stream: bool,
) -> None:
    client = allocated(stream=stream)
    when, first, retry = until_retried(client, Method.REFRESH)  # the Refresh at 540 s
    assert 540.0 < when < 600.0
    assert events(client) == []
    assert client.state is ClientState.ALLOCATED
    assert retry.get(at.LIFETIME) == first.get(at.LIFETIME)
    feed(client, success(retry, (at.LIFETIME, 600)), 590.0)
    assert events(client) == [AllocationRefreshed(lifetime=600.0)]
    assert client.expires == 1190.0
    assert client.get_timer() == 1130.0


@pytest.mark.parametrize("stream", [False, True], ids=["udp", "stream"])
def test_the_allocation_is_lost_only_when_it_expires_unrefreshed(stream: bool) -> None:
    client = allocated(stream=stream)
    last, sent = run_until(client, 10_000.0)
    assert last == 600.0  # not at the first timeout (579.5): 20 s of lifetime were left
    assert events(client) == [
        AllocationLost(code=None, reason="the allocation expired before a Refresh was answered")
    ]
    assert client.state is ClientState.LOST
    assert len(distinct(sent, Method.REFRESH)) >= 2


def test_a_refresh_timeout_longer_than_the_remaining_lifetime_ends_at_expiry() -> None:
    client = allocated(lifetime=60)  # refreshed at 30 s, expires at 60 s; Ti is 39.5 s
    last, _ = run_until(client, 10_000.0)
    assert last == 60.0
    assert [type(e) for e in events(client)] == [AllocationLost]


def test_a_437_to_the_retried_refresh_loses_the_allocation() -> None:
    # A keepalive Refresh asks for a nonzero lifetime, so its retry cannot be
    # refused because of its own earlier success: 437 means the allocation is gone.
    client = allocated()
    when, _, retry = until_retried(client, Method.REFRESH)
    feed(client, error(retry, 437), when)
    assert events(client) == [AllocationLost(code=437, reason="Allocation Mismatch")]


def test_a_retried_refresh_asks_for_the_same_lifetime() -> None:
    client = allocated(lifetime=3600)
    client.refresh(now=10.0, lifetime=1200)
    first = one_request(client, 10.0)
    _, _, retry = until_retried(client, Method.REFRESH, first)
    assert first.get(at.LIFETIME) == retry.get(at.LIFETIME) == 1200


# -- permission refresh (item 10) ------------------------------------------------------


def test_an_unanswered_permission_refresh_keeps_the_permission_and_retries() -> None:
    client = allocated(auto_bind=False)
    permitted(client, PEER)
    when, _, retry = until_retried(client, Method.CREATE_PERMISSION)  # the refresh at 240 s
    assert 240.0 < when < 300.0
    assert events(client) == []
    assert client.permissions == (PEER.host,)
    client.send_to(b"still relayed", PEER, now=when)
    (wire,) = out(client, when)
    assert parse_message(wire).method == Method.SEND and client.dropped == 0
    assert peer_ips(retry) == [PEER.host]
    feed(client, success(retry), 281.0)
    assert events(client) == []
    assert client.get_timer() == 521.0  # refreshed: the next refresh 240 s on


def test_a_permission_whose_refreshes_go_unanswered_expires_unrefused() -> None:
    client = allocated(auto_bind=False)
    permitted(client, PEER)
    last, _ = run_until(client, 300.0)
    assert last == 300.0
    assert events(client) == [
        PermissionFailed(
            request_id=None,
            peer_ips=(PEER.host,),
            code=None,
            reason="the permission expired before its refresh was answered",
        )
    ]
    assert client.permissions == ()
    client.send_to(b"x", PEER, now=301.0)  # not refused: asks again at once
    assert peer_ips(one_request(client, 301.0)) == [PEER.host]


def test_a_refused_batch_refresh_drops_only_the_refused_ip() -> None:
    client = allocated(auto_bind=False)
    permitted(client, PEER, PEER2)
    client.handle_timer(now=240.0)
    batch = one_request(client, 240.0)
    assert peer_ips(batch) == [PEER.host, PEER2.host]
    feed(client, error(batch, 403, reason="Forbidden"), 240.0)
    alone = {peer_ips(r)[0]: r for r in requests(client, 240.0)}
    assert sorted(alone) == sorted([PEER.host, PEER2.host])
    feed(client, success(alone[PEER.host]), 240.0)
    feed(client, error(alone[PEER2.host], 403, reason="Forbidden"), 240.0)
    assert events(client) == [
        PermissionFailed(request_id=None, peer_ips=(PEER2.host,), code=403, reason="Forbidden")
    ]
    assert client.permissions == (PEER.host,)
    assert client.get_timer() == 480.0


def test_a_refused_explicit_batch_installs_the_others_and_reports_the_refused_ip() -> None:
    client = allocated(auto_bind=False)
    rid = client.create_permission([PEER, PEER2], now=0.0)
    feed(client, error(one_request(client), 403, reason="Forbidden"))
    for req in requests(client):
        refused = peer_ips(req) == [PEER2.host]
        feed(client, error(req, 403, reason="Forbidden") if refused else success(req))
    assert events(client) == [
        PermissionFailed(request_id=rid, peer_ips=(PEER2.host,), code=403, reason="Forbidden")
    ]
    assert client.permissions == (PEER.host,)


def test_an_unanswered_first_permission_fails_but_does_not_refuse_the_ip() -> None:
    client = allocated(auto_bind=False)
    client.send_to(b"queued", PEER, now=0.0)
    out(client)
    when, _ = run_until(client, 100.0)
    assert events(client) == [
        PermissionFailed(
            request_id=None,
            peer_ips=(PEER.host,),
            code=None,
            reason="no response (timed out)",
            dropped=1,
        )
    ]
    client.send_to(b"again", PEER, now=when)  # no refusal: asks again at once
    assert peer_ips(one_request(client, when)) == [PEER.host]


def many_peers(n: int, *, v6: bool = False) -> list[str]:
    if v6:
        return [f"2001:db8:1::{i + 1:x}" for i in range(n)]
    return [f"10.{i // 250}.{i % 250}.1" for i in range(n)]


@pytest.mark.parametrize(
    ("cfg", "v6", "sizes"),
    [
        pytest.param({"stream": True}, False, [100, 50], id="stream"),
        pytest.param({"stream": True, "permission_batch": 64}, False, [64, 64, 22], id="batch-64"),
        pytest.param({}, False, [83, 67], id="udp-ipv4"),
        pytest.param({}, True, [41, 41, 41, 27], id="udp-ipv6"),
    ],
)
def test_a_large_create_permission_is_split_and_reported_once(
    cfg: dict[str, Any], v6: bool, sizes: list[int]
) -> None:
    relayed = (RELAYED, RELAYED6) if v6 else (RELAYED,)
    client = allocated(relayed=relayed, auto_bind=False, **cfg)
    ips = many_peers(150, v6=v6)
    rid = client.create_permission(ips, now=0.0)
    wires = [d for d in out(client) if d[0] >> 6 == 0]
    reqs = [parse_message(w) for w in wires]
    assert [len(peer_ips(r)) for r in reqs] == sizes
    assert [ip for r in reqs for ip in peer_ips(r)] == ips
    assert all(r.message_class == MessageClass.REQUEST for r in reqs)
    if not cfg.get("stream"):
        assert max(map(len, wires)) <= 1280 - 48  # IPv6's minimum MTU less IP and UDP
    for req in reqs[:-1]:
        feed(client, success(req))
        assert events(client) == []
    feed(client, success(reqs[-1]))
    assert events(client) == [PermissionCreated(request_id=rid, peer_ips=tuple(ips))]
    assert len(client.permissions) == 150
    client.handle_timer(now=240.0)  # the refresh is batched the same way
    assert [len(peer_ips(r)) for r in requests(client, 240.0)] == sizes


def test_a_timed_out_refresh_of_one_batch_retries_only_that_batch() -> None:
    client = allocated(auto_bind=False, stream=True)
    permitted_all = many_peers(150)
    client.create_permission(permitted_all, now=0.0)
    for req in requests(client):
        feed(client, success(req))
    events(client)
    client.handle_timer(now=240.0)
    first, second = requests(client, 240.0)
    feed(client, success(second), 240.0)
    _, _, retry = until_retried(client, Method.CREATE_PERMISSION, first)
    assert peer_ips(retry) == peer_ips(first)
    assert events(client) == []
    assert len(client.permissions) == 150


def test_a_refresh_timing_out_after_the_permission_expired_does_not_revive_it() -> None:
    client = allocated(auto_bind=False, stream=True)
    permitted(client, PEER)
    client.handle_timer(now=240.0)
    one_request(client, 240.0)
    client.handle_timer(now=400.0)  # a late driver: Ti (279.5 s) and expiry (300 s) both past
    assert requests(client, 400.0) == []
    assert [(type(e), e.peer_ips) for e in events(client)] == [(PermissionFailed, (PEER.host,))]
    assert client.permissions == ()
