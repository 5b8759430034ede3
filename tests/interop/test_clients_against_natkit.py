"""Third-party STUN clients against natkit's server.

* Debian's ``stun`` (stun-client 0.97) runs the RFC 3489 NAT type test; it
  needs CHANGED-ADDRESS, so natkit runs with ``--alternate``. Its exit status
  is the number it prints as "Return value": the NAT type code (0x00 for
  Open) plus 0x01 when ports are preserved and 0x10 when it cannot hairpin.
* coturn's ``turnutils_stunclient`` prints the reflexive address it learnt.
* coturn's ``turnutils_natdiscovery`` runs RFC 5780 discovery (OTHER-ADDRESS,
  RESPONSE-ORIGIN, CHANGE-REQUEST, PADDING with ``-P``).

The ``stun`` and ``turnutils_natdiscovery`` tests run natkit as the
``natkit stun-server`` command, which proves the CLI; ``turnutils_stunclient``
runs against the in-process server, which records where requests came from.
"""

from __future__ import annotations

import re

import pytest

from natkit.addr import Endpoint

from .conftest import (
    LOOPBACK,
    InProcessServer,
    StunPeer,
    require_program,
    run_program,
    run_program_async,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(30)]

STUN_OPEN = 0x00
STUN_TYPE_MASK = 0x0E
STUN_NO_HAIRPIN = 0x10
STUN_PRESERVES_PORT = 0x01


@pytest.fixture
def stun_client() -> str:
    return require_program("stun", "stun-client")


@pytest.fixture
def turnutils_stunclient() -> str:
    return require_program("turnutils_stunclient", "coturn")


@pytest.fixture
def turnutils_natdiscovery() -> str:
    return require_program("turnutils_natdiscovery", "coturn")


def test_debian_stun_client_finds_open_internet_at_natkit_cli_server(
    stun_client: str, natkit_server_process: StunPeer
) -> None:
    result = run_program([stun_client, str(natkit_server_process.primary), "-v"])
    out = result.stdout
    assert "Primary: Open" in out, out + result.stderr
    match = re.search(r"Return value is 0x([0-9a-fA-F]+)", out)
    assert match is not None, out
    value = int(match.group(1), 16)
    assert result.returncode == value
    assert value & STUN_TYPE_MASK == STUN_OPEN
    assert not value & STUN_NO_HAIRPIN
    assert value & STUN_PRESERVES_PORT
    # Tests I, II (change IP), III (change port) and I to CHANGED-ADDRESS all answered.
    for line in ("test I = 1", "test II = 1", "test III = 1", "test I(2) = 1", "hairpin = 1"):
        assert line in result.stderr, result.stderr
    assert f"ChangedAddress = {natkit_server_process.alternate}" in result.stderr


async def test_turnutils_stunclient_prints_the_address_natkit_saw(
    turnutils_stunclient: str, natkit_server: InProcessServer
) -> None:
    peer = natkit_server.peer
    result = await run_program_async(
        [turnutils_stunclient, "-L", LOOPBACK, "-p", str(peer.primary.port), peer.primary.host]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    reflexive = [
        Endpoint(ip, int(port))
        for ip, port in re.findall(r"UDP reflexive addr: ([0-9.]+):(\d+)", result.stdout)
    ]
    assert reflexive, result.stdout
    assert reflexive[0] == natkit_server.sources[0]
    assert set(reflexive) <= set(natkit_server.sources)
    # RFC 5780 answers: OTHER-ADDRESS, and RESPONSE-ORIGIN where it was asked to answer from.
    assert f"Other addr: : {peer.alternate}" in result.stdout
    assert f"Response origin: : {peer.primary}" in result.stdout
    assert f"Response origin: : {peer.alternate}" in result.stdout


@pytest.mark.parametrize(
    "extra",
    [pytest.param([], id="plain"), pytest.param(["-P"], id="padding")],
)
def test_turnutils_natdiscovery_finds_endpoint_independent_behaviour_at_natkit(
    turnutils_natdiscovery: str, natkit_server_process: StunPeer, extra: list[str]
) -> None:
    server = natkit_server_process
    tests = ["-m", "-f", "-H", *extra]
    port = str(server.primary.port)
    result = run_program(
        [turnutils_natdiscovery, *tests, "-L", LOOPBACK, "-p", port, server.primary.host]
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "NAT with Endpoint Independent Mapping!" in out, out
    assert "NAT with Endpoint Independent Filtering!" in out, out
    assert "Received a request (maybe a successful hairpinning)" in out, out
    # The filtering test's CHANGE-REQUEST was answered from the alternate address.
    assert f"Response origin: : {server.alternate}" in out, out
