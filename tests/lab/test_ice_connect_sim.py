"""Issue 6, the heart of the traversal matrix: two natkit ICE agents behind
every pair of NAT presets connect through the simulated internet, directly
exactly where DESIGN.md's ICE bullet (RFC 6314 §5.2.2.3) says a direct path
exists, relayed elsewhere, never failed; UDP-blocked and web-only sides
relay over TURN/TCP and TURN/TLS on 443. Virtual time only: no sleeps."""

from __future__ import annotations

import ssl

import pytest

from natkit.ice.candidate import Candidate, CandidateType
from natkit.lab.ice_connect import (
    NAT_NAMES,
    SAME_NAT,
    SAME_NAT_HAIRPIN,
    ConnectLab,
    ConnectResult,
    expected_path,
    run_connect_sim,
)
from natkit.net.sim import run_virtual

# Rows: agent a's NAT (controlling); columns: agent b's. D: direct (host,
# srflx or prflx at both ends), R: relayed through natkit's TURN server.
# Relayed where both sides map endpoint-dependently (symmetric), where one
# does and the other filters address-and-port-dependently (port-restricted
# cone, symmetric UDP firewall, the port-restricted home NAT of the tandem),
# and wherever a side cannot send UDP at all.
COLUMNS = ["open", "fc", "rc", "prc", "sym", "fw", "udpb", "web", "tandem"]
MATRIX = """
open    D D D D D D R R D
fc      D D D D D D R R D
rc      D D D D D D R R D
prc     D D D D R D R R D
sym     D D D R R R R R R
fw      D D D D R D R R D
udpb    R R R R R R R R R
web     R R R R R R R R R
tandem  D D D D R D R R D
"""
SHORT = dict(zip(COLUMNS, NAT_NAMES, strict=True))
PATH = {"D": "direct", "R": "relay"}
TURN_TRANSPORT = {"udp-blocked": "tcp", "web-only": "tls"}


def _table() -> list[tuple[str, str, str]]:
    rows = []
    for line in MATRIX.strip().splitlines():
        row, *cells = line.split()
        for column, cell in zip(COLUMNS, cells, strict=True):
            rows.append((SHORT[row], SHORT[column], PATH[cell]))
    return rows


PAIRS = [pytest.param(a, b, path, id=f"{a}--{b}") for a, b, path in _table()]


def test_the_table_is_the_theory() -> None:
    assert len(PAIRS) == len(NAT_NAMES) ** 2
    for a, b, path in _table():
        assert expected_path(a, b) == path, (a, b)


def _check_relay_ends(result: ConnectResult) -> None:
    """A side that cannot send UDP must be on TURN over TCP (UDP blocked) or
    TLS on 443 (web-only), at its own end of the pair."""
    if result.nat_a in TURN_TRANSPORT:
        assert result.local_type == "relay"
        assert result.transport == TURN_TRANSPORT[result.nat_a]
    if result.nat_b in TURN_TRANSPORT:
        assert result.remote_type == "relay"
        assert result.remote_transport == TURN_TRANSPORT[result.nat_b]


@pytest.mark.parametrize(("nat_a", "nat_b", "path"), PAIRS)
def test_every_pair_connects_on_the_expected_path(
    nat_a: str,
    nat_b: str,
    path: str,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    result = run_connect_sim(
        nat_a, nat_b, tls_server=tls_server_context, tls_client=tls_client_context
    )
    assert result.connected, result.to_json()
    assert result.path == path, result.to_json()
    assert result.data_ok, result.to_json()
    if path == "direct":
        assert "relay" not in (result.local_type, result.remote_type)
    else:
        assert "relay" in (result.local_type, result.remote_type)
    _check_relay_ends(result)
    assert result.elapsed_s < 2.0, result.to_json()
    assert result.checks_sent > 0


@pytest.mark.parametrize("shared", [SAME_NAT, SAME_NAT_HAIRPIN])
@pytest.mark.parametrize("preset", ["port-restricted-cone", "symmetric"])
def test_behind_one_nat_the_host_candidates_connect(
    shared: str,
    preset: str,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> None:
    result = run_connect_sim(
        shared, preset, tls_server=tls_server_context, tls_client=tls_client_context
    )
    assert result.connected and result.data_ok, result.to_json()
    assert (result.path, result.local_type, result.remote_type) == ("direct", "host", "host")
    assert result.local is not None and result.local.startswith("192.168.1.")
    assert result.remote is not None and result.remote.startswith("192.168.1.")


def test_a_relayed_pair_connects_within_one_virtual_second_at_50_ms(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """Issue 6 "Speed": symmetric/port-restricted (relay needed), 50 ms
    one-way between the agents, gathering included."""
    result = run_connect_sim(
        "symmetric",
        "port-restricted-cone",
        latency=0.05,
        tls_server=tls_server_context,
        tls_client=tls_client_context,
    )
    assert result.connected and result.path == "relay", result.to_json()
    assert result.elapsed_s < 1.0, result.to_json()


def test_the_same_seed_replays_the_same_run(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    runs = [
        run_connect_sim(
            "symmetric", "symmetric", tls_server=tls_server_context, tls_client=tls_client_context
        ).to_json()
        for _ in range(2)
    ]
    assert runs[0] == runs[1]


@pytest.mark.parametrize(
    ("shared", "path"),
    [
        pytest.param(SAME_NAT, "relay", id="no-hairpinning"),
        pytest.param(SAME_NAT_HAIRPIN, "direct", id="hairpinning"),
    ],
)
def test_behind_one_nat_stun_addresses_alone_need_hairpinning(shared: str, path: str) -> None:
    """DESIGN.md: same NAT without hairpinning, STUN addresses alone do not
    connect (the relay does); with hairpinning the srflx pair does."""

    def no_host(candidate: Candidate) -> bool:
        return candidate.type is not CandidateType.HOST

    async def main() -> ConnectResult:
        lab = await ConnectLab.build(shared, "port-restricted-cone")
        try:
            return await lab.connect(signalled=no_host)
        finally:
            await lab.close()

    result = run_virtual(main)
    assert result.connected and result.data_ok, result.to_json()
    assert result.path == path, result.to_json()
    assert "host" not in (result.local_type, result.remote_type)
