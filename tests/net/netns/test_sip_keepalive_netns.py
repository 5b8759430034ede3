"""Issue 5 lab scenario, namespace lab: an INVITE reaches a UA behind the
kernel's masquerade over its registered flow only while the NAT keeps the
mapping: with the NAT namespace's UDP conntrack timeouts shortened to 2 s,
an INVITE after 5 s of silence is lost, and arrives with a STUN keepalive
every 0.5 s (tests/lab/test_sip_keepalive_sim.py, in real seconds)."""

from __future__ import annotations

import pytest

from natkit.lab.sip_netns import keepalive_in_lab
from natkit.net.netns import Lab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    ("keepalive", "arrives"),
    [
        pytest.param(False, False, id="kernel-no-keepalive-lost"),
        pytest.param(True, True, id="kernel-keepalive-arrives"),
    ],
)
def test_invite_over_the_flow_after_the_mapping_lifetime(
    lab: Lab, keepalive: bool, arrives: bool
) -> None:
    outcome = keepalive_in_lab(lab, keepalive=keepalive)
    # The conntrack timeouts are per namespace: only the NAT's changed.
    assert outcome.nat_timeouts == (2, 2), outcome
    assert all(t > 2 for t in outcome.inet_timeouts), outcome
    assert outcome.registered, outcome
    assert outcome.expected is arrives
    assert outcome.invite_seen is arrives, outcome
    assert outcome.reached is arrives, outcome
    if arrives:
        assert outcome.status == 200
