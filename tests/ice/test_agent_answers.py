"""How the agent answers checks (RFC 8445 §7.3, RFC 8489 §9.1.3) and paces its
own (§6.1.4.2, §14.2, §14.3): driven by hand, one datagram at a time."""

from __future__ import annotations

import itertools

import pytest

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent, Transmit
from natkit.ice.checklist import PairState
from natkit.ice.events import RoleSwitched
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.credentials import short_term_key
from natkit.stun.message import StunMessage, parse_message, serialize_message, verify_integrity
from tests.ice.test_agent_harness import as_remote, config, host

LOCAL = host("192.0.2.1", 5000)
PEER = Endpoint("192.0.2.2", 6000)
TID = bytes(range(12))


def agent(controlling: bool = False, **kw: object) -> IceAgent:
    ag = IceAgent(config(30, **kw), controlling=controlling)
    ag.add_stream()
    ag.add_local_candidate(0, LOCAL)
    return ag


def request(
    ag: IceAgent,
    *,
    username: str | None = None,
    key: bytes | None = None,
    priority: int | None = 1_000,
    controlling: int | None = None,
    controlled: int | None = None,
    use_candidate: bool = False,
    extra: tuple[int, bytes] | None = None,
    integrity: bool = True,
) -> bytes:
    creds = ag.local_credentials(0)
    msg = StunMessage.request(Method.BINDING, TID)
    msg.add(at.USERNAME, username if username is not None else f"{creds.ufrag}:peer")
    if priority is not None:
        msg.add(at.PRIORITY, priority)
    if controlling is not None:
        msg.add(at.ICE_CONTROLLING, controlling)
    if controlled is not None:
        msg.add(at.ICE_CONTROLLED, controlled)
    if use_candidate:
        msg.add(at.USE_CANDIDATE, True)
    if extra is not None:
        msg.add_raw(*extra)
    if not integrity:
        return serialize_message(msg, fingerprint=True)
    return serialize_message(
        msg, key=key if key is not None else short_term_key(creds.pwd), fingerprint=True
    )


def answer(ag: IceAgent, data: bytes) -> tuple[Transmit, StunMessage]:
    ag.receive_datagram(data, PEER, local=LOCAL.address, now=1.0)
    out = [t for t in ag.datagrams_to_send(now=1.0) if t.remote == PEER]
    assert len(out) >= 1
    return out[0], parse_message(out[0].data)


def test_valid_check_gets_xor_mapped_address_with_integrity() -> None:
    ag = agent()
    tx, resp = answer(ag, request(ag, controlling=1))
    assert tx.local == LOCAL.address
    assert resp.message_class is MessageClass.SUCCESS
    assert resp.get(at.XOR_MAPPED_ADDRESS) == PEER
    assert verify_integrity(resp, short_term_key(ag.local_credentials(0).pwd))
    assert resp.has_fingerprint


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        pytest.param({"integrity": False}, 400, id="no-message-integrity"),
        pytest.param({"username": "nosuchufrag:peer"}, 401, id="unknown-ufrag"),
        pytest.param({"username": "nocolon"}, 401, id="username-without-colon"),
        pytest.param({"key": b"wrong password"}, 401, id="wrong-password"),
        pytest.param({"priority": None}, 400, id="no-priority"),
        pytest.param({"priority": 0}, 400, id="zero-priority"),
        pytest.param({"extra": (0x0033, b"\x00\x00\x00\x00")}, 420, id="unknown-required-attr"),
    ],
)
def test_bad_checks_get_error_answers(kw: dict[str, object], code: int) -> None:
    ag = agent()
    _, resp = answer(ag, request(ag, controlling=1, **kw))  # type: ignore[arg-type]
    assert resp.message_class is MessageClass.ERROR
    assert resp.error is not None and resp.error.code == code
    assert ag.pairs(0) == []  # nothing learned from an unauthenticated check


def test_controlling_agent_with_larger_tie_breaker_answers_487() -> None:
    ag = agent(controlling=True)
    _, resp = answer(ag, request(ag, controlling=ag.tie_breaker - 1 if ag.tie_breaker else 0))
    assert resp.error is not None and resp.error.code == 487
    assert ag.controlling and ag.next_event() is None


def test_controlling_agent_with_smaller_tie_breaker_switches_role() -> None:
    ag = agent(controlling=True)
    _, resp = answer(ag, request(ag, controlling=2**64 - 1))
    assert resp.message_class is MessageClass.SUCCESS
    assert not ag.controlling
    assert ag.next_event() == RoleSwitched(controlling=False)


def test_controlled_agent_with_larger_tie_breaker_becomes_controlling() -> None:
    ag = agent(controlling=False)
    _, resp = answer(ag, request(ag, controlled=0))
    assert resp.message_class is MessageClass.SUCCESS
    assert ag.controlling


def test_lite_agent_never_takes_the_controlling_role() -> None:
    ag = agent(controlling=False, lite=True)
    _, resp = answer(ag, request(ag, controlled=0))
    assert resp.error is not None and resp.error.code == 487
    assert not ag.controlling


def test_check_from_unknown_address_makes_a_peer_reflexive_pair_and_triggered_check() -> None:
    ag = agent()
    creds_peer = ("peerufrag", "peerpassword0123456789")
    ag.set_remote_credentials(0, *creds_peer)
    answer(ag, request(ag, controlling=1, priority=12345))
    (pair,) = ag.pairs(0)
    assert pair.remote.address == PEER and pair.remote.priority == 12345
    assert [pair.state] == [PairState.WAITING]
    ag.handle_timer(now=1.0)
    (check,) = ag.datagrams_to_send(now=1.0)
    msg = parse_message(check.data)
    assert msg.message_class is MessageClass.REQUEST
    assert msg.get(at.USERNAME) == f"peerufrag:{ag.local_credentials(0).ufrag}"
    assert msg.get(at.ICE_CONTROLLED) == ag.tie_breaker
    assert verify_integrity(msg, short_term_key(creds_peer[1]))
    assert pair.state is PairState.IN_PROGRESS


def test_checks_are_paced_by_ta_and_retransmitted_per_rto() -> None:
    ag = IceAgent(config(31), controlling=True)
    ag.add_stream()
    ag.add_local_candidate(0, LOCAL)
    ag.set_remote_credentials(0, "peer", "peerpassword0123456789")
    for i in range(4):  # four foundations: four checks, Ta apart
        ag.add_remote_candidate(0, as_remote(host(f"192.0.2.{20 + i}", 7000)))
    times: list[tuple[float, bytes]] = []
    now = 0.0
    while now < 2.0:
        timer = ag.get_timer()
        assert timer is not None
        now = max(now, timer)
        ag.handle_timer(now=now)
        times += [
            (now, parse_message(t.data).transaction_id) for t in ag.datagrams_to_send(now=now)
        ]
    firsts: dict[bytes, float] = {}
    for t, tid in times:
        firsts.setdefault(tid, t)
    starts = sorted(firsts.values())
    assert len(starts) == 4
    assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(starts))
    # §14.3: RTO = max(500 ms, Ta * (Waiting + In-Progress)); then doubling.
    first_tid = min(firsts, key=firsts.__getitem__)
    resends = [t for t, tid in times if tid == first_tid]
    assert resends[:3] == pytest.approx([0.0, 0.5, 1.5])


def test_response_with_wrong_integrity_is_ignored() -> None:
    ag = IceAgent(config(32), controlling=True)
    ag.add_stream()
    ag.add_local_candidate(0, LOCAL)
    ag.set_remote_credentials(0, "peer", "peerpassword0123456789")
    ag.add_remote_candidate(0, as_remote(host("192.0.2.2", 6000)))
    ag.handle_timer(now=0.0)
    (check,) = ag.datagrams_to_send(now=0.0)
    req = parse_message(check.data)
    forged = req.success().add(at.XOR_MAPPED_ADDRESS, LOCAL.address)
    ag.receive_datagram(
        serialize_message(forged, key=b"not it"), PEER, local=LOCAL.address, now=0.01
    )
    (pair,) = ag.pairs(0)
    assert pair.state is PairState.IN_PROGRESS
    good = serialize_message(forged, key=short_term_key("peerpassword0123456789"))
    ag.receive_datagram(good, PEER, local=LOCAL.address, now=0.02)
    assert [pair.state] == [PairState.SUCCEEDED]


def test_unknown_stream_or_component_is_a_local_protocol_error() -> None:
    from natkit.errors import LocalProtocolError

    ag = agent()
    with pytest.raises(LocalProtocolError):
        ag.local_credentials(5)
    with pytest.raises(LocalProtocolError):
        ag.send_data(0, 2, b"x", now=0.0)
    with pytest.raises(LocalProtocolError):
        ag.add_local_candidate(0, as_remote(LOCAL))  # no base


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({"ta": 0}, id="ta"),
        pytest.param({"rc": 0}, id="rc"),
        pytest.param({"consent_jitter": 1.0}, id="jitter"),
        pytest.param({"failover_timeout": 0.3}, id="failover-faster-than-checks"),
        pytest.param({"consent_timeout": 5.0}, id="consent-timeout-below-interval"),
        pytest.param({"max_pairs": 0}, id="max-pairs"),
    ],
)
def test_config_rejects_inconsistent_timers(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        config(1, **kw)


def test_rto_grows_with_the_number_of_waiting_and_in_progress_pairs() -> None:
    # §14.3: with 20 pairs of distinct foundations Waiting or In-Progress and
    # Ta 50 ms, RTO is 20 * 50 ms = 1 s rather than the 500 ms floor.
    ag = IceAgent(config(33), controlling=True)
    ag.add_stream()
    ag.add_local_candidate(0, LOCAL)
    ag.set_remote_credentials(0, "peer", "peerpassword0123456789")
    for i in range(20):
        ag.add_remote_candidate(0, as_remote(host(f"192.0.2.{100 + i}", 7000)))
    ag.handle_timer(now=0.0)
    (first,) = ag.datagrams_to_send(now=0.0)
    assert ag.get_timer() == pytest.approx(0.05)  # the next paced check
    sends = []
    now = 0.0
    while now < 1.2:
        timer = ag.get_timer()
        assert timer is not None
        now = timer
        ag.handle_timer(now=now)
        sends += [now for t in ag.datagrams_to_send(now=now) if t.data == first.data]
    assert sends[0] == pytest.approx(1.0)
