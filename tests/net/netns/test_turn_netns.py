"""Issue 4 acceptance, namespace lab: a host behind the kernel's NAT, behind
natkit's TUN NAT (port-restricted cone, symmetric, UDP blocked) and behind
the web-only firewall reaches a public peer through natkit's TURN server,
with real packets: the same scenario as tests/lab/test_turn_sim.py, the
server, the echo peer and the client each on a loop inside its host's
namespace."""

from __future__ import annotations

import ssl

import pytest

from natkit.addr import Transport
from natkit.lab.turn import RelayTraffic, expected_transport, turn_in_lab
from natkit.net.netns import KernelNat, Lab, NatEngine, TunNat

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS

EXPECTED = [
    pytest.param(KernelNat(), UDP, id="kernel-masquerade"),
    pytest.param(KernelNat(random_fully=True), UDP, id="kernel-random-fully"),
    pytest.param(TunNat("port-restricted-cone"), UDP, id="tun-port-restricted-cone"),
    pytest.param(TunNat("symmetric"), UDP, id="tun-symmetric"),
    pytest.param(TunNat("udp-blocked"), TCP, id="tun-udp-blocked"),
    pytest.param(TunNat("web-only"), TLS, id="tun-web-only"),
]


@pytest.mark.parametrize(("engine", "transport"), EXPECTED)
def test_a_host_behind_the_nat_reaches_the_peer_through_the_relay(
    lab: Lab,
    engine: NatEngine,
    transport: Transport,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    if isinstance(engine, TunNat):
        assert expected_transport(engine.behavior) is transport  # the table agrees with the sim
    outcome, nat = turn_in_lab(
        lab, engine, tls_server=tls_server_context, tls_client=tls_client_context
    )
    assert outcome.transport is transport, outcome.to_json()
    assert outcome.reached, outcome.to_json()
    assert outcome.relayed is not None and outcome.mapped is not None
    assert outcome.peer_saw == (outcome.relayed,)
    assert outcome.sent == outcome.peer_received == outcome.echoed == 10
    # Batch one in Send/Data indications, batch two in ChannelData, both ways.
    assert outcome.traffic == RelayTraffic(
        send_indications=5, channel_data_sent=5, data_indications=5, channel_data_received=5
    )
    if nat.public_ips:
        assert outcome.mapped.host == nat.public_ips[0]
    assert [a.ok for a in outcome.attempts][-1] is True
    assert not any(a.ok for a in outcome.attempts[:-1])


def test_web_only_blocks_turn_over_tls_on_5349(
    lab: Lab, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    outcome, _ = turn_in_lab(
        lab,
        TunNat("web-only"),
        transports=[(TLS, 5349)],
        attempt_timeout=1.0,
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert outcome.transport is None
    assert not outcome.reached
