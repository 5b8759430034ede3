"""RFC 6314 §5.1 / RFC 5626 §4.4.1 on the simulated internet: an INVITE
reaches a user agent behind a NAT over its registered flow; after the NAT's
30 s mapping lifetime only if the flow was kept alive."""

from __future__ import annotations

import pytest

from natkit.lab.sip_keepalive import expected_reached, invite_after, run_keepalive_sim
from natkit.nat.presets import OPEN, PRESETS, SYMMETRIC
from natkit.net.sim import run_virtual

CASES = [
    pytest.param("port-restricted-cone", False, 5.0, 200, id="fresh-flow-reached"),
    pytest.param("port-restricted-cone", False, 120.0, 408, id="expired-mapping-408"),
    pytest.param("port-restricted-cone", True, 3600.0, 200, id="kept-alive-an-hour"),
    pytest.param("symmetric", False, 120.0, 408, id="symmetric-expired"),
    pytest.param("symmetric", True, 3600.0, 200, id="symmetric-kept-alive"),
    pytest.param("open", False, 3600.0, 200, id="no-nat-needs-nothing"),
]


@pytest.mark.parametrize("nat", ["port-restricted-cone", "symmetric"])
def test_the_registrars_nat_helper_keeps_a_silent_ua_reachable(nat: str) -> None:
    outcome = run_virtual(
        invite_after(nat, PRESETS[nat], keepalive=False, wait=3600.0, server_pings=True)
    )
    assert outcome.status == 200 and outcome.reached and outcome.ok


@pytest.mark.parametrize(("nat", "keepalive", "wait", "status"), CASES)
def test_invite_over_the_registered_flow(
    nat: str, keepalive: bool, wait: float, status: int
) -> None:
    outcome = run_virtual(invite_after(nat, PRESETS[nat], keepalive=keepalive, wait=wait))
    assert outcome.status == status
    assert outcome.reached is (status == 200)
    assert outcome.ok


def test_every_preset_matches_the_expected_table() -> None:
    outcomes = run_keepalive_sim(wait=300.0)
    wrong = [o for o in outcomes if not o.ok]
    assert not wrong, wrong
    assert any(not o.reached for o in outcomes)  # the table is not trivially "reached"


def test_expected_table() -> None:
    assert expected_reached(OPEN, keepalive=False, wait=1e6)
    assert not expected_reached(SYMMETRIC, keepalive=False, wait=SYMMETRIC.udp_mapping_timeout + 1)
    assert expected_reached(SYMMETRIC, keepalive=True, wait=1e6)
