"""NAT type detection with real packets: natkit's natcheck, Debian's ``stun``
client and coturn's ``turnutils_natdiscovery`` behind the kernel's NATs and
natkit's TUN NAT.

One lab holds every NAT (and firewall) under test, each with its own client host, beside
one natkit STUN server pair (203.0.113.10:3478 / .11:3479). The detectors
run once per NAT, all NATs at once (each run mostly waits out probe
timeouts), and the tests below read the table of answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from natkit.net.netns import Lab
from natkit.net.netns.scenario import (
    NatDiscoveryReport,
    NatLab,
    StunClientReport,
    build_nat_lab,
    expected_for,
    parse_nat,
    run_natcheck,
    run_natdiscovery,
    run_stun_client,
    start_stun_server,
)
from natkit.net.netns.system import tool

from .conftest import assert_gone, require_lab, require_program

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]

NATS = [
    "kernel-masquerade",
    "kernel-random-fully",
    "full-cone",
    "restricted-cone",
    "port-restricted-cone",
    "symmetric",
    "open",
    "symmetric-udp-firewall",
    "udp-blocked",
    "linux-masquerade",
    "carrier-grade",
]
WORKERS = len(NATS)


@dataclass(frozen=True)
class Answers:
    natcheck: dict[str, Any]
    stun_client: StunClientReport
    natdiscovery: NatDiscoveryReport | None


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Answers]]:
    require_lab(tun=True, nft=True)
    require_program("stun", "stun-client")
    workdir: Path = tmp_path_factory.mktemp("natcheck-lab")
    lab = Lab(workdir=workdir)
    try:
        lab.open()
        labs: dict[str, NatLab] = {}
        for index, name in enumerate(NATS):
            labs[name] = build_nat_lab(
                lab, parse_nat(name), name=f"nat{index}", client=f"client{index}"
            )
        start_stun_server(labs[NATS[0]])

        natdiscovery = tool("turnutils_natdiscovery") is not None

        def detect(nat_lab: NatLab) -> Answers:
            coturn = None
            if natdiscovery and nat_lab.nat.engine.translates:
                coturn = run_natdiscovery(nat_lab)
            return Answers(run_natcheck(nat_lab), run_stun_client(nat_lab), coturn)

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            results = dict(zip(labs, pool.map(detect, labs.values()), strict=True))
        yield results
    finally:
        lab.close()
        assert_gone(lab.prefix)


@pytest.mark.parametrize(
    ("nat", "mapping", "filtering"),
    [
        pytest.param(
            "kernel-masquerade",
            "endpoint-independent",
            "address-and-port-dependent",
            id="kernel-masquerade",
        ),
        pytest.param(
            "kernel-random-fully",
            "address-and-port-dependent",
            "address-and-port-dependent",
            id="kernel-random-fully",
        ),
        pytest.param("full-cone", "endpoint-independent", "endpoint-independent", id="full-cone"),
        pytest.param(
            "restricted-cone", "endpoint-independent", "address-dependent", id="restricted-cone"
        ),
        pytest.param(
            "port-restricted-cone",
            "endpoint-independent",
            "address-and-port-dependent",
            id="port-restricted-cone",
        ),
        pytest.param(
            "symmetric", "address-and-port-dependent", "address-and-port-dependent", id="symmetric"
        ),
        pytest.param("open", "endpoint-independent", "endpoint-independent", id="open"),
        pytest.param(
            "symmetric-udp-firewall",
            "endpoint-independent",
            "address-and-port-dependent",
            id="symmetric-udp-firewall",
        ),
        pytest.param("udp-blocked", None, None, id="udp-blocked"),
        pytest.param(
            "linux-masquerade",
            "endpoint-independent",
            "address-and-port-dependent",
            id="linux-masquerade",
        ),
    ],
)
def test_natcheck_finds_the_rfc_5780_behaviour(
    answers: dict[str, Answers], nat: str, mapping: str | None, filtering: str | None
) -> None:
    found = answers[nat].natcheck
    assert (found["mapping"], found["filtering"]) == (mapping, filtering), found


@pytest.mark.parametrize(
    "nat",
    [
        "kernel-masquerade",
        "kernel-random-fully",
        "full-cone",
        "restricted-cone",
        "port-restricted-cone",
        "symmetric",
        "linux-masquerade",
    ],
)
def test_coturn_natdiscovery_agrees_with_natcheck(answers: dict[str, Answers], nat: str) -> None:
    require_program("turnutils_natdiscovery", "coturn")
    coturn = answers[nat].natdiscovery
    assert coturn is not None
    found = answers[nat].natcheck
    assert coturn.mapping is not None, coturn.stdout
    assert coturn.filtering is not None, coturn.stdout
    assert (coturn.mapping.value, coturn.filtering.value) == (
        found["mapping"],
        found["filtering"],
    )


@pytest.mark.parametrize(
    ("nat", "classic"),
    [
        pytest.param("kernel-random-fully", "symmetric", id="kernel-random-fully"),
        pytest.param("full-cone", "full-cone", id="full-cone"),
        pytest.param("restricted-cone", "restricted-cone", id="restricted-cone"),
        pytest.param("port-restricted-cone", "port-restricted-cone", id="port-restricted-cone"),
        pytest.param("symmetric", "symmetric", id="symmetric"),
        pytest.param("open", "open-internet", id="open"),
        pytest.param(
            "symmetric-udp-firewall", "symmetric-udp-firewall", id="symmetric-udp-firewall"
        ),
        pytest.param("udp-blocked", "udp-blocked", id="udp-blocked"),
        pytest.param("linux-masquerade", "port-restricted-cone", id="linux-masquerade"),
    ],
)
def test_natcheck_classic_type_matches_the_emulated_one(
    answers: dict[str, Answers], nat: str, classic: str
) -> None:
    assert answers[nat].natcheck["classic"] == classic, answers[nat].natcheck
    expected = expected_for(parse_nat(nat)).classic
    assert expected is not None
    assert expected.value == classic


def test_classic_test_reads_linux_masquerade_as_port_restricted(
    answers: dict[str, Answers],
) -> None:
    """What Linux does (docs/lab.md): the unanswered Test II reply leaves a
    conntrack entry for (alternate address, mapped port), so a Test I to the
    alternate address from the *same* socket would get a new port and look
    symmetric. natcheck sends Test II from a socket of its own, as Debian's
    stun client does, and reads masquerade for what it is."""
    found = answers["kernel-masquerade"].natcheck
    assert found["classic"] == "port-restricted-cone"
    assert found["mapping"] == "endpoint-independent"
    assert found["filtering"] == "address-and-port-dependent"


@pytest.mark.parametrize(
    ("nat", "words"),
    [
        pytest.param(
            "kernel-masquerade",
            "Independent Mapping, Port Dependent Filter",
            id="kernel-masquerade",
        ),
        pytest.param("kernel-random-fully", "Dependent Mapping", id="kernel-random-fully"),
        pytest.param("full-cone", "Independent Mapping, Independent Filter", id="full-cone"),
        pytest.param(
            "restricted-cone",
            "Independent Mapping, Address Dependent Filter",
            id="restricted-cone",
        ),
        pytest.param(
            "port-restricted-cone",
            "Independent Mapping, Port Dependent Filter",
            id="port-restricted-cone",
        ),
        pytest.param("symmetric", "Dependent Mapping", id="symmetric"),
        pytest.param("open", "Open", id="open"),
        pytest.param("symmetric-udp-firewall", "Firewall", id="symmetric-udp-firewall"),
        pytest.param("udp-blocked", "Blocked or could not reach STUN server", id="udp-blocked"),
        pytest.param(
            "linux-masquerade",
            "Independent Mapping, Port Dependent Filter",
            id="linux-masquerade",
        ),
    ],
)
def test_debian_stun_client_agrees(answers: dict[str, Answers], nat: str, words: str) -> None:
    report = answers[nat].stun_client
    assert report.nat_type == words, report.primary
    assert report.nat_type == expected_for(parse_nat(nat)).stun_client


@pytest.mark.parametrize(
    ("nat", "preserved"),
    [
        pytest.param("kernel-masquerade", True, id="kernel-masquerade"),
        pytest.param("kernel-random-fully", False, id="kernel-random-fully"),
        pytest.param("port-restricted-cone", True, id="port-restricted-cone"),
        pytest.param("symmetric", False, id="symmetric"),
    ],
)
def test_port_preservation_is_seen_by_both_detectors(
    answers: dict[str, Answers], nat: str, preserved: bool
) -> None:
    assert answers[nat].natcheck["port_preservation"] is preserved
    assert answers[nat].stun_client.preserves_ports is preserved


def test_hairpinning_is_seen_when_the_nat_hairpins(answers: dict[str, Answers]) -> None:
    found = answers["carrier-grade"]
    assert found.natcheck["hairpinning"] is True
    assert found.stun_client.hairpins
    assert found.natcheck["classic"] == "port-restricted-cone"


@pytest.mark.parametrize(
    "nat", [n for n in NATS if n not in ("open", "symmetric-udp-firewall", "carrier-grade")]
)
def test_no_nat_here_hairpins(answers: dict[str, Answers], nat: str) -> None:
    assert answers[nat].natcheck["hairpinning"] is not True
    assert not answers[nat].stun_client.hairpins
