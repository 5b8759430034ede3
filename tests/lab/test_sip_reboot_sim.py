"""RFC 5626 §4.4-§4.5 on the simulated internet: the NAT in front of an
Outbound user agent reboots (every mapping lost); the agent registers again
and the next INVITE through natkit's proxy reaches it."""

from __future__ import annotations

import pytest

from natkit.lab.sip_reboot import (
    FLOW_TIMER,
    REGISTRATION_EXPIRES,
    expected_early_call,
    expected_reboot_outcome,
    reboot_then_call,
    run_reboot_sim,
)
from natkit.nat.box import NatBehavior
from natkit.nat.presets import OPEN, PORT_RESTRICTED_CONE, PRESETS, UDP_BLOCKED, WEB_ONLY
from natkit.net.sim import run_virtual
from natkit.sip.flow import SipTransport

UDP, TCP = SipTransport.UDP, SipTransport.TCP

# nat, transport, registered, flow_failed (seen by the agent), reached after recovery
CASES = [
    pytest.param("port-restricted-cone", UDP, True, False, True, id="prc-udp-refresh-heals"),
    pytest.param("port-restricted-cone", TCP, True, True, True, id="prc-tcp-flow-fails"),
    pytest.param("symmetric", UDP, True, True, True, id="symmetric-udp-new-port"),
    pytest.param("symmetric", TCP, True, True, True, id="symmetric-tcp"),
    pytest.param("carrier-grade", UDP, True, True, True, id="cgn-udp-new-port"),
    pytest.param("linux-masquerade", TCP, True, True, True, id="masquerade-tcp"),
    pytest.param("symmetric-udp-firewall", TCP, True, True, True, id="firewall-tcp-state-lost"),
    pytest.param("open", TCP, True, False, True, id="no-state-nothing-lost"),
    pytest.param("udp-blocked", UDP, False, False, False, id="udp-blocked-never-registers"),
]


@pytest.mark.parametrize(("nat", "transport", "registered", "flow_failed", "reached"), CASES)
def test_reboot_then_call(
    nat: str, transport: SipTransport, registered: bool, flow_failed: bool, reached: bool
) -> None:
    outcome = run_virtual(reboot_then_call(nat, PRESETS[nat], transport))
    assert outcome.registered is registered
    assert outcome.flow_failed is flow_failed
    assert outcome.reached is reached
    assert outcome.status == (200 if reached else None)
    assert outcome.ok
    if flow_failed:  # the next ping within Flow-Timer, 10 s for its pong
        assert outcome.detected_after is not None
        assert outcome.detected_after <= FLOW_TIMER + 10 + 1


EARLY = [
    pytest.param("port-restricted-cone", UDP, 200, id="prc-udp-keepalive-recreates-same-port"),
    pytest.param("linux-masquerade", UDP, 200, id="masquerade-udp-same-port"),
    pytest.param("symmetric-udp-firewall", UDP, 200, id="firewall-udp-same-address"),
    pytest.param("symmetric", UDP, 408, id="symmetric-udp-new-port-lost"),
    pytest.param("carrier-grade", UDP, 408, id="cgn-udp-random-port-lost"),
    pytest.param("port-restricted-cone", TCP, 408, id="prc-tcp-dead-connection"),
    pytest.param("symmetric-udp-firewall", TCP, 408, id="firewall-tcp-state-lost"),
    pytest.param("open", TCP, 200, id="open-tcp-nothing-lost"),
]


@pytest.mark.parametrize(("nat", "transport", "status"), EARLY)
def test_call_right_after_the_reboot(nat: str, transport: SipTransport, status: int) -> None:
    """Before re-registering: proves the reboot broke the flow where it should."""
    outcome = run_virtual(reboot_then_call(nat, PRESETS[nat], transport, early=True))
    assert outcome.status == status
    assert outcome.reached is (status == 200)
    assert outcome.reached is expected_early_call(PRESETS[nat], transport)


def test_every_preset_early_call_matches_the_expected_table() -> None:
    async def main() -> list[tuple[str, SipTransport, bool]]:
        wrong = []
        for name, behavior in PRESETS.items():
            for transport in (UDP, TCP):
                o = await reboot_then_call(name, behavior, transport, early=True)
                if o.reached is not expected_early_call(behavior, transport):
                    wrong.append((name, transport, o.reached))
        return wrong

    assert run_virtual(main) == []


@pytest.mark.parametrize("nat", ["port-restricted-cone", "open"])
def test_udp_recovers_at_the_next_refresh(nat: str) -> None:
    """A UDP mapping that comes back on the same port fails nothing; the
    refresh at half the expiry (60 s after registering, 30 s after the
    reboot) re-registers as usual."""
    outcome = run_virtual(reboot_then_call(nat, PRESETS[nat], UDP))
    assert outcome.recovered_after is not None
    assert outcome.recovered_after <= REGISTRATION_EXPIRES / 2


@pytest.mark.parametrize("nat", ["symmetric", "carrier-grade"])
def test_udp_flow_rebound_to_a_new_port_fails_at_the_next_keepalive(nat: str) -> None:
    """RFC 5626 §4.4.1: the STUN keepalive's XOR-MAPPED-ADDRESS changed, so
    the flow fails within one keepalive interval (Flow-Timer) and registers
    again after the §4.5 back-off (30-60 s)."""
    outcome = run_virtual(reboot_then_call(nat, PRESETS[nat], UDP))
    assert outcome.flow_failed
    assert outcome.detected_after is not None and outcome.detected_after <= FLOW_TIMER + 1
    assert outcome.recovered_after is not None
    assert outcome.recovered_after <= FLOW_TIMER + 60 + 1


def test_tcp_recovers_within_detection_plus_the_first_backoff() -> None:
    outcome = run_virtual(reboot_then_call("port-restricted-cone", PORT_RESTRICTED_CONE, TCP))
    # detection: a ping within Flow-Timer, 10 s for its pong; then 30-60 s back-off
    assert outcome.recovered_after is not None
    assert outcome.recovered_after <= FLOW_TIMER + 10 + 60 + 1


def test_every_preset_and_transport_matches_the_expected_table() -> None:
    outcomes = run_reboot_sim()
    wrong = [o for o in outcomes if not o.ok]
    assert not wrong, wrong
    assert len(outcomes) == 2 * len(PRESETS)
    assert any(o.flow_failed for o in outcomes) and any(not o.reached for o in outcomes)


@pytest.mark.parametrize(
    ("behavior", "transport", "expected"),
    [
        pytest.param(PORT_RESTRICTED_CONE, TCP, (True, True, True), id="stateful-tcp"),
        pytest.param(PORT_RESTRICTED_CONE, UDP, (True, False, True), id="udp-same-port"),
        pytest.param(PRESETS["symmetric"], UDP, (True, True, True), id="udp-new-port"),
        pytest.param(OPEN, TCP, (True, False, True), id="open"),
        pytest.param(UDP_BLOCKED, UDP, (False, False, False), id="udp-blocked"),
        pytest.param(WEB_ONLY, TCP, (False, False, False), id="web-only-no-5060"),
    ],
)
def test_expected_table(
    behavior: NatBehavior, transport: SipTransport, expected: tuple[bool, bool, bool]
) -> None:
    assert expected_reboot_outcome(behavior, transport) == expected
