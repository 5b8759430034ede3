"""RFC 5626 §3.4/§7 on the simulated internet: an Outbound user agent with
two flows through two natkit edge proxies still receives calls when one
edge dies; the forking proxy moves to the instance's next flow."""

from __future__ import annotations

import pytest

from natkit.lab.sip_edge_failover import (
    CALL_WAIT,
    call_after_edge_failure,
    expected_failover,
    run_failover_sim,
)
from natkit.net.sim import run_virtual
from natkit.sip.flow import SipTransport

UDP, TCP = SipTransport.UDP, SipTransport.TCP

# transport, dead edges, wait before the call, status, edge the INVITE came through,
# flows alice's agent held at the call, at most this many seconds to the answer
CASES = [
    pytest.param(UDP, (), 0.0, 200, 1, {1, 2}, 1.0, id="udp-both-up-first-flow"),
    pytest.param(UDP, (1,), 0.0, 200, 2, {1, 2}, 33.0, id="udp-edge1-dead-timeout-then-flow2"),
    pytest.param(UDP, (2,), 0.0, 200, 1, {1, 2}, 1.0, id="udp-edge2-dead-unused"),
    pytest.param(UDP, (1,), 300.0, 200, 2, {2}, 1.0, id="udp-dead-binding-expired"),
    pytest.param(UDP, (1, 2), 0.0, 408, None, {1, 2}, 65.0, id="udp-both-dead-408"),
    pytest.param(TCP, (), 0.0, 200, 1, {1, 2}, 1.0, id="tcp-both-up"),
    pytest.param(TCP, (1,), 0.0, 200, 2, {1, 2}, 1.0, id="tcp-edge1-dead-refused-then-flow2"),
    pytest.param(TCP, (1,), 1.0, 200, 2, {2}, 1.0, id="tcp-agent-saw-flow1-close"),
    pytest.param(TCP, (1,), 300.0, 200, 2, {2}, 1.0, id="tcp-dead-binding-expired"),
    pytest.param(TCP, (1, 2), 1.0, 500, None, set(), 1.0, id="tcp-both-dead-500"),
    pytest.param(TCP, (1, 2), 300.0, 404, None, set(), 1.0, id="tcp-both-expired-404"),
]


@pytest.mark.parametrize(
    ("transport", "dead", "wait", "status", "via_edge", "flows", "setup_limit"), CASES
)
def test_call_after_edge_failure(
    transport: SipTransport,
    dead: tuple[int, ...],
    wait: float,
    status: int,
    via_edge: int | None,
    flows: set[int],
    setup_limit: float,
) -> None:
    outcome = run_virtual(call_after_edge_failure(transport, dead, wait=wait))
    assert outcome.registered == 2
    assert outcome.status == status
    assert outcome.via_edge == via_edge
    assert outcome.flows_at_call == flows
    assert outcome.setup_time <= setup_limit
    assert outcome.ok


@pytest.mark.parametrize("nat", ["symmetric", "carrier-grade", "open"])
@pytest.mark.parametrize("transport", [UDP, TCP])
def test_survivor_carries_the_call_behind_other_nats(nat: str, transport: SipTransport) -> None:
    outcome = run_virtual(call_after_edge_failure(transport, (1,), nat=nat))
    assert (outcome.status, outcome.via_edge) == (200, 2)


@pytest.mark.parametrize("wait", [0.0, 300.0])
def test_every_combination_matches_the_expected_table(wait: float) -> None:
    outcomes = run_failover_sim(wait=wait)
    wrong = [o for o in outcomes if not o.ok]
    assert not wrong, wrong
    assert all(o.setup_time < CALL_WAIT for o in outcomes)


@pytest.mark.parametrize(
    ("dead", "reached"),
    [
        pytest.param((), True, id="none"),
        pytest.param((1,), True, id="one"),
        pytest.param((2,), True, id="other"),
        pytest.param((1, 2), False, id="both"),
    ],
)
def test_expected_table(dead: tuple[int, ...], reached: bool) -> None:
    assert expected_failover(dead) is reached
