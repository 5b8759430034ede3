"""RFC 6314 §3 / Figure 1 on the simulated internet: a REGISTER's response
comes back through the NAT with rport, and without it only when the NAT kept
the UA's port."""

from __future__ import annotations

import pytest

from natkit.lab.sip_rport import expected_arrival, register_behind, run_rport_sim
from natkit.lab.topology import NAT_PUBLIC_IP
from natkit.nat.presets import FULL_CONE, PRESETS, SYMMETRIC, UDP_BLOCKED
from natkit.net.sim import run_virtual

CASES = [
    pytest.param("full-cone", False, False, True, id="cone-keeps-5060-no-rport"),
    pytest.param("full-cone", False, True, False, id="cone-5060-taken-no-rport-lost"),
    pytest.param("full-cone", True, True, True, id="cone-5060-taken-rport"),
    pytest.param("symmetric", False, False, False, id="symmetric-no-rport-lost"),
    pytest.param("symmetric", True, False, True, id="symmetric-rport"),
    pytest.param("port-restricted-cone", True, True, True, id="port-restricted-rport"),
]


@pytest.mark.parametrize(("nat", "rport", "taken", "arrives"), CASES)
def test_response_through_the_nat(nat: str, rport: bool, taken: bool, arrives: bool) -> None:
    outcome = run_virtual(register_behind(nat, PRESETS[nat], rport=rport, port_taken=taken))
    assert outcome.arrived is arrives
    assert outcome.expected is arrives
    assert outcome.mapped is not None and outcome.mapped.host == NAT_PUBLIC_IP


def test_every_preset_matches_the_expected_table() -> None:
    names = [n for n in PRESETS if not PRESETS[n].udp_blocked]
    outcomes = run_rport_sim(names)
    assert len(outcomes) == 4 * len(names)
    wrong = [o for o in outcomes if not o.ok]
    assert not wrong, wrong


def test_expected_table() -> None:
    assert expected_arrival(FULL_CONE, rport=False, port_taken=False)
    assert not expected_arrival(SYMMETRIC, rport=False, port_taken=False)
    assert expected_arrival(SYMMETRIC, rport=True, port_taken=True)
    assert not expected_arrival(UDP_BLOCKED, rport=True, port_taken=False)
