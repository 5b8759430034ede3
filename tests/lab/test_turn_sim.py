"""Issue 4 acceptance, simulated internet: a host behind every NAT preset and
behind the web-only firewall reaches a public peer through natkit's TURN
relay, over the transport its network lets through (the firewall case over
TLS on 443), with every message relayed both ways."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from natkit.addr import Transport
from natkit.lab.topology import NAT_PUBLIC_IP
from natkit.lab.turn import (
    DEFAULT_TRANSPORTS,
    TURN_IP,
    RelayTraffic,
    expected_transport,
    run_turn_sim,
)
from natkit.nat.presets import PRESETS, carrier_grade_tandem

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS

# Where a correct client ends up (it tries UDP 3478, TCP 3478, TLS 443 in
# that order), and what the server sees as its address (the NAT's public
# one, or the host's own behind a firewall that does not translate).
EXPECTED = [
    pytest.param("open", UDP, False, id="open"),
    pytest.param("full-cone", UDP, True, id="full-cone"),
    pytest.param("restricted-cone", UDP, True, id="restricted-cone"),
    pytest.param("port-restricted-cone", UDP, True, id="port-restricted-cone"),
    pytest.param("symmetric", UDP, True, id="symmetric"),
    pytest.param("symmetric-udp-firewall", UDP, False, id="symmetric-udp-firewall"),
    pytest.param("udp-blocked", TCP, False, id="udp-blocked"),  # TCP passes its filter
    pytest.param("web-only", TLS, False, id="web-only"),  # only TCP 80/443 leaves
    pytest.param("linux-masquerade", UDP, True, id="linux-masquerade"),
    pytest.param("carrier-grade", UDP, True, id="carrier-grade"),
]


# After a pause longer than a NAT's UDP binding lifetime (120 s; 30 s for
# linux-masquerade) the peer speaks first, then the client sends again. A
# client must keep its binding to the server alive for this to work: natkit's
# sends a Binding indication after 10 s of silence over UDP.
IDLE = 200.0
AFTER_IDLING = [
    pytest.param("open", UDP, id="open"),  # no filter, nothing expires
    pytest.param("full-cone", UDP, id="full-cone"),
    pytest.param("restricted-cone", UDP, id="restricted-cone"),
    pytest.param("port-restricted-cone", UDP, id="port-restricted-cone"),
    pytest.param("symmetric", UDP, id="symmetric"),
    pytest.param("symmetric-udp-firewall", UDP, id="symmetric-udp-firewall"),
    pytest.param("udp-blocked", TCP, id="udp-blocked"),  # TCP bindings last hours
    pytest.param("web-only", TLS, id="web-only"),
    pytest.param("linux-masquerade", UDP, id="linux-masquerade"),
    pytest.param("carrier-grade", UDP, id="carrier-grade"),
]


def test_every_preset_has_a_row() -> None:
    assert {p.values[0] for p in EXPECTED} == set(PRESETS)
    assert {p.values[0] for p in AFTER_IDLING} == set(PRESETS)


@pytest.mark.parametrize(("preset", "transport", "translated"), EXPECTED)
def test_the_table_follows_from_the_presets_rules(
    preset: str, transport: Transport, translated: bool
) -> None:
    assert expected_transport(PRESETS[preset]) is transport
    assert PRESETS[preset].translate is translated


@pytest.mark.parametrize(("preset", "transport", "translated"), EXPECTED)
def test_a_host_behind_every_preset_reaches_the_peer_through_the_relay(
    preset: str,
    transport: Transport,
    translated: bool,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    outcome = run_turn_sim(
        preset, seed=1, tls_server=tls_server_context, tls_client=tls_client_context
    )
    assert outcome.transport is transport, outcome.to_json()
    assert outcome.reached, outcome.to_json()
    assert outcome.relayed is not None and outcome.relayed.host == TURN_IP
    assert outcome.peer_saw == (outcome.relayed,)
    assert outcome.sent == outcome.peer_received == outcome.echoed == 10
    # Batch one in Send/Data indications, batch two in ChannelData, both ways.
    assert outcome.traffic == RelayTraffic(
        send_indications=5, channel_data_sent=5, data_indications=5, channel_data_received=5
    )
    assert outcome.channel is not None and 0x4000 <= outcome.channel <= 0x4FFF
    assert outcome.mapped is not None
    assert (outcome.mapped.host == NAT_PUBLIC_IP) is translated
    # Every transport before the one that worked was tried and failed.
    tried = [a.transport for a in outcome.attempts]
    assert tried == [t for t, _ in DEFAULT_TRANSPORTS][: tried.index(transport) + 1]
    assert [a.ok for a in outcome.attempts] == [False] * (len(tried) - 1) + [True]


@pytest.mark.parametrize(("preset", "transport"), AFTER_IDLING)
def test_the_relay_still_reaches_the_client_after_it_idled(
    preset: str,
    transport: Transport,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    outcome = run_turn_sim(
        preset,
        seed=12,
        idle=IDLE,
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert outcome.transport is transport
    assert outcome.unsolicited_received is True, outcome.to_json()
    assert outcome.reached, outcome.to_json()
    assert outcome.sent == outcome.echoed == 15


@pytest.mark.parametrize(
    ("preset", "transport"),
    [pytest.param("udp-blocked", TCP, id="tcp"), pytest.param("web-only", TLS, id="tls")],
)
def test_nothing_is_lost_over_tcp_and_tls_on_a_lossy_link(
    preset: str,
    transport: Transport,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    outcome = run_turn_sim(
        preset,
        seed=13,
        client_loss=0.2,
        attempt_timeout=20.0,  # handshakes and Allocates retried through the loss
        echo_timeout=120.0,  # TCP's retransmissions back off to 8 s
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert outcome.transport is transport
    assert outcome.reached, outcome.to_json()


def test_udp_allocates_through_a_lossy_link() -> None:
    outcome = run_turn_sim("port-restricted-cone", seed=14, client_loss=0.2)
    assert outcome.transport is UDP  # STUN retransmissions get the Allocate through
    assert outcome.relayed is not None
    assert 0 < outcome.echoed <= outcome.sent  # data is not retransmitted: some is lost


def test_fallback_costs_one_attempt_timeout_per_blocked_transport(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    outcome = run_turn_sim(
        "web-only",
        seed=2,
        attempt_timeout=3.0,
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    udp, tcp, tls = outcome.attempts
    assert (udp.ok, tcp.ok, tls.ok) == (False, False, True)
    assert udp.elapsed == pytest.approx(3.0)
    assert tcp.elapsed == pytest.approx(3.0)
    assert tls.elapsed < 1.0  # TCP and TLS handshakes, two Allocate round trips
    assert outcome.reached


def test_web_only_without_tls_on_443_is_not_reached() -> None:
    outcome = run_turn_sim("web-only", seed=3, attempt_timeout=2.0)
    assert outcome.transport is None
    assert not outcome.reached
    assert [a.reason for a in outcome.attempts][-1] == "no TLS context"


def test_web_only_blocks_turns_on_5349(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    outcome = run_turn_sim(
        "web-only",
        seed=4,
        transports=[(TLS, 5349)],
        attempt_timeout=2.0,
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert outcome.transport is None
    assert not outcome.attempts[0].ok


def test_udp_blocked_also_works_over_tls(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    outcome = run_turn_sim(
        "udp-blocked",
        seed=5,
        transports=[(TLS, 443)],
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert outcome.transport is TLS
    assert outcome.reached, outcome.to_json()


@pytest.mark.parametrize("home", ["port-restricted-cone", "symmetric"])
def test_nats_in_tandem_reach_the_peer_over_udp(home: str) -> None:
    cgn, inner = carrier_grade_tandem(home)
    outcome = run_turn_sim(f"cgn+{home}", inner.behavior, seed=6, tandem=cgn)
    assert outcome.transport is UDP
    assert outcome.reached, outcome.to_json()
    assert outcome.mapped is not None and outcome.mapped.host in cgn.public_ips


def test_a_scenario_replays_exactly_from_its_seed() -> None:
    first = run_turn_sim("symmetric", seed=7, trace=True)
    again = run_turn_sim("symmetric", seed=7, trace=True)
    assert first.trace == again.trace
    assert (first.relayed, first.mapped) == (again.relayed, again.mapped)
    other = run_turn_sim("symmetric", seed=8)
    assert other.mapped != first.mapped  # random NAT ports


def test_a_scenario_writes_pcaps(tmp_path: Path) -> None:
    outcome = run_turn_sim("port-restricted-cone", seed=9, pcap_dir=tmp_path)
    assert [p.name for p in outcome.pcaps] == ["client.pcap", "nat-outside.pcap"]
    assert all(p.stat().st_size > 24 for p in outcome.pcaps)


def test_the_outcome_reports_as_json() -> None:
    report = run_turn_sim("full-cone", seed=10).to_json()
    assert report["transport"] == "udp"
    assert report["reached"] is True
    assert report["attempts"][0]["ok"] is True


def test_every_preset_runs_in_well_under_a_second_of_wall_time(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    wall = time.perf_counter()
    for param in EXPECTED:
        run_turn_sim(
            param.values[0],  # type: ignore[arg-type]
            seed=11,
            attempt_timeout=1.0,
            tls_server=tls_server_context,
            tls_client=tls_client_context,
        )
    assert time.perf_counter() - wall < 1.0
