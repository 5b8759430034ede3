"""Issue 6, namespace lab: the 4x4 grid of the ECC report's NAT types with
natkit's TUN NAT and real packets (natkit's STUN and TURN servers on the lab
internet), and the relay failover: the TURN server in use is killed
mid-session and media resumes over the hot spare within 2 s.

The grid shares one lab (its NATs built once, torn down in ``finally``
and checked gone); each pair gets fresh agents. Only the four diagonal
pairs (both agents behind the same NAT type) run here, about 12 s: every
ordered pair of the 4x4 grid runs as a real call between two user agents
in tests/net/netns/test_matrix_netns.py (``natkit lab matrix --mode netns``),
which checks the same paths. The theory is checked for all 16 below."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.net.netns.conftest import assert_gone, require_lab

from natkit.lab.ice_netns import ECC_TYPES, IceNamespaceLab, expected_netns_path
from natkit.net.netns import Lab, TunNat

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

# Rows: agent a's NAT (controlling), columns: agent b's (full cone,
# restricted cone, port-restricted cone, symmetric). D direct, R relayed.
GRID = """
fc   D D D D
rc   D D D D
prc  D D D R
sym  D D R R
"""
PATH = {"D": "direct", "R": "relay"}


def _pairs() -> list[tuple[str, str, str]]:
    rows = []
    for line, a in zip(GRID.strip().splitlines(), ECC_TYPES, strict=True):
        for cell, b in zip(line.split()[1:], ECC_TYPES, strict=True):
            rows.append((a, b, PATH[cell]))
    return rows


PAIRS = [pytest.param(a, b, path, id=f"{a}--{b}") for a, b, path in _pairs() if a == b]


@pytest.fixture(scope="module")
def grid_lab(
    tmp_path_factory: pytest.TempPathFactory,
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
) -> Iterator[IceNamespaceLab]:
    require_lab(tun=True, nft=True)
    lab = Lab(workdir=tmp_path_factory.mktemp("ice-grid"))
    try:
        lab.open()
        engines = [TunNat(name) for name in ECC_TYPES]
        ice_lab = IceNamespaceLab(
            lab,
            engines,
            engines,
            tls_server=tls_server_context,
            tls_client=tls_client_context,
        )
        try:
            yield ice_lab.open()
        finally:
            ice_lab.close()
    finally:
        lab.close()
        assert_gone(lab.prefix)


def test_the_grid_is_the_theory() -> None:
    for a, b, path in _pairs():
        assert expected_netns_path(TunNat(a), TunNat(b)) == path


@pytest.mark.parametrize(("nat_a", "nat_b", "path"), PAIRS)
def test_ecc_nat_pair_connects_with_real_packets(
    grid_lab: IceNamespaceLab, nat_a: str, nat_b: str, path: str
) -> None:
    result = grid_lab.connect(TunNat(nat_a), TunNat(nat_b))
    assert result.connected, result.to_json()
    assert result.path == path, result.to_json()
    assert result.data_ok, result.to_json()
    assert result.elapsed_s < 5.0, result.to_json()
    if path == "direct":
        # The peer saw a NAT's public address: a translated, direct path.
        assert result.local is not None and result.local.startswith("198.51.100.")
        assert result.remote is not None and result.remote.startswith("198.51.100.")


def test_killing_the_turn_server_in_use_moves_media_to_the_hot_spare(
    tmp_path: Path, tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    lab = Lab(workdir=tmp_path)
    try:
        lab.open()
        a, b = TunNat("symmetric"), TunNat("port-restricted-cone")
        with IceNamespaceLab(
            lab,
            [a],
            [b],
            tls_server=tls_server_context,
            tls_client=tls_client_context,
            turn_servers=2,
        ) as ice_lab:
            outcome = ice_lab.relay_failover(a, b)
        assert outcome.result.connected and outcome.result.path == "relay", outcome.to_json()
        assert outcome.killed is not None
        assert outcome.survivor is not None and outcome.survivor != outcome.killed
        assert outcome.gap_a < 2.0 and outcome.gap_b < 2.0, outcome.to_json()
        assert outcome.flowing, outcome.to_json()
    finally:
        lab.close()
        assert_gone(lab.prefix)
