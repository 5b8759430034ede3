"""Issue 5 lab scenario, namespace lab: RFC 6314 §3 / Figure 1 with real
packets. A REGISTER's response comes back through the kernel's masquerade
(port-preserving) without rport only while port 5060 is free on the NAT,
through natkit's symmetric TUN NAT only with rport; the same table as
tests/lab/test_sip_rport_sim.py (:func:`natkit.lab.sip_rport.expected_arrival`)."""

from __future__ import annotations

import pytest

from natkit.lab.sip_netns import engine_behavior, rport_in_lab
from natkit.lab.sip_rport import expected_arrival
from natkit.net.netns import KernelNat, Lab, NatEngine, TunNat

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

KERNEL = KernelNat()
SYMMETRIC = TunNat("symmetric")

CASES = [
    pytest.param(KERNEL, False, False, True, id="kernel-keeps-5060-no-rport"),
    pytest.param(KERNEL, True, False, True, id="kernel-keeps-5060-rport"),
    pytest.param(KERNEL, False, True, False, id="kernel-5060-taken-no-rport-lost"),
    pytest.param(KERNEL, True, True, True, id="kernel-5060-taken-rport"),
    pytest.param(SYMMETRIC, False, False, False, id="tun-symmetric-no-rport-lost"),
    pytest.param(SYMMETRIC, True, False, True, id="tun-symmetric-rport"),
]


@pytest.mark.parametrize(("engine", "rport", "taken", "arrives"), CASES)
def test_response_through_the_nat(
    lab: Lab, engine: NatEngine, rport: bool, taken: bool, arrives: bool
) -> None:
    assert expected_arrival(engine_behavior(engine), rport=rport, port_taken=taken) is arrives
    outcome = rport_in_lab(lab, engine, rport=rport, port_taken=taken)
    assert outcome.arrived is arrives, outcome
    assert outcome.ok
    nat = lab.nats["nat"]
    assert outcome.mapped is not None and outcome.mapped.host == nat.public_ips[0], outcome
    if isinstance(engine, KernelNat):
        # Port-preserving: 5060 while free, another port once taken.
        assert (outcome.mapped.port == 5060) is not taken, outcome
