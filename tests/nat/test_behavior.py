"""RFC 5780 behaviour discovery through emulated NATs: mapping, filtering,
hairpinning, port preservation, the public address, and binding lifetime."""

from __future__ import annotations

import dataclasses

import pytest

from natkit.addr import Endpoint
from natkit.nat.types import Filtering, Mapping

from .harness import (
    ADF,
    ADM,
    APDF,
    APDM,
    EIF,
    EIM,
    FIRST_CLIENT_PORT,
    FULL_CONE,
    ONE_WAY_DELAY,
    OPEN_INTERNET,
    PORT_RESTRICTED_CONE,
    PUBLIC_IP,
    RESTRICTED_CONE,
    SERVER_PRIMARY,
    SYMMETRIC,
    SYMMETRIC_UDP_FIREWALL,
    UDP_BLOCKED,
    NatBehavior,
    run_natcheck,
)

# -- mapping and filtering (§4.3, §4.4) ------------------------------------------------

NINE_COMBINATIONS = [
    pytest.param(m, f, id=f"{m.value}-mapping-{f.value}-filtering")
    for m in (EIM, ADM, APDM)
    for f in (EIF, ADF, APDF)
]


@pytest.mark.parametrize(("mapping", "filtering"), NINE_COMBINATIONS)
def test_mapping_and_filtering_are_discovered(mapping: Mapping, filtering: Filtering) -> None:
    result = run_natcheck(NatBehavior(mapping=mapping, filtering=filtering)).result
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.nat_present is True
    assert not [n for n in result.notes if n.startswith(("mapping:", "filtering:"))]


NO_TRANSLATION = [
    pytest.param(OPEN_INTERNET, EIM, EIF, id="open-internet"),
    pytest.param(SYMMETRIC_UDP_FIREWALL, EIM, APDF, id="symmetric-udp-firewall"),
]


@pytest.mark.parametrize(("behavior", "mapping", "filtering"), NO_TRANSLATION)
def test_no_translation_maps_endpoint_independently(
    behavior: NatBehavior, mapping: Mapping, filtering: Filtering
) -> None:
    result = run_natcheck(behavior).result
    assert (result.mapping, result.filtering) == (mapping, filtering)
    assert result.nat_present is False


def test_udp_blocked_leaves_every_verdict_open() -> None:
    result = run_natcheck(UDP_BLOCKED).result
    assert (result.nat_present, result.mapping, result.filtering) == (None, None, None)
    assert (result.hairpinning, result.port_preservation, result.public_address) == (
        None,
        None,
        None,
    )
    assert "mapping: Test I got no answer" in result.notes


# -- nat_present -------------------------------------------------------------------------

NAT_PRESENT = [
    pytest.param(OPEN_INTERNET, False, id="open-internet"),
    pytest.param(SYMMETRIC_UDP_FIREWALL, False, id="symmetric-udp-firewall"),
    pytest.param(FULL_CONE, True, id="full-cone"),
    pytest.param(PORT_RESTRICTED_CONE, True, id="port-restricted-cone"),
    pytest.param(SYMMETRIC, True, id="symmetric"),
    pytest.param(UDP_BLOCKED, None, id="udp-blocked"),
]


@pytest.mark.parametrize(("behavior", "expected"), NAT_PRESENT)
def test_nat_present(behavior: NatBehavior, expected: bool | None) -> None:
    assert run_natcheck(behavior).result.nat_present is expected


# -- hairpinning (§4.5) ----------------------------------------------------------------

# Cone NATs (endpoint-independent mapping) are measured fairly: each socket
# sends to the other's mapped address, so each opens its own filter for the
# other's request. With address-dependent or address-and-port-dependent
# mapping each request leaves through a new mapping the other socket never
# addressed; unless the NAT filters endpoint-independently the request is
# dropped whether or not the NAT hairpins, so the verdict is None ("cannot
# tell") with a note, never a wrong False.
HAIRPINNING = [
    pytest.param(FULL_CONE, True, True, id="full-cone-hairpins"),
    pytest.param(FULL_CONE, False, False, id="full-cone-does-not"),
    pytest.param(RESTRICTED_CONE, True, True, id="restricted-cone-hairpins"),
    pytest.param(RESTRICTED_CONE, False, False, id="restricted-cone-does-not"),
    pytest.param(PORT_RESTRICTED_CONE, True, True, id="port-restricted-cone-hairpins"),
    pytest.param(PORT_RESTRICTED_CONE, False, False, id="port-restricted-cone-does-not"),
    pytest.param(SYMMETRIC, True, None, id="symmetric-hairpins-cannot-tell"),
    pytest.param(SYMMETRIC, False, None, id="symmetric-does-not-cannot-tell"),
    pytest.param(NatBehavior(mapping=APDM, filtering=EIF), True, True, id="apdm-eif-hairpins"),
    pytest.param(NatBehavior(mapping=APDM, filtering=EIF), False, False, id="apdm-eif-does-not"),
    pytest.param(
        NatBehavior(mapping=ADM, filtering=ADF), True, None, id="adm-adf-hairpins-cannot-tell"
    ),
]


@pytest.mark.parametrize(("behavior", "hairpinning", "expected"), HAIRPINNING)
def test_hairpinning(behavior: NatBehavior, hairpinning: bool, expected: bool | None) -> None:
    result = run_natcheck(dataclasses.replace(behavior, hairpinning=hairpinning)).result
    assert result.hairpinning is expected
    assert any(n.startswith("hairpinning: cannot tell") for n in result.notes) is (expected is None)


# -- port preservation and the public address ------------------------------------------

PORT_PRESERVATION = [
    pytest.param(FULL_CONE, True, id="cone-preserving"),
    pytest.param(dataclasses.replace(FULL_CONE, port_preservation=False), False, id="cone-not"),
    pytest.param(dataclasses.replace(SYMMETRIC, port_preservation=True), True, id="sym-preserving"),
    pytest.param(SYMMETRIC, False, id="symmetric-not"),
    pytest.param(OPEN_INTERNET, True, id="open-internet"),
]


@pytest.mark.parametrize(("behavior", "expected"), PORT_PRESERVATION)
def test_port_preservation(behavior: NatBehavior, expected: bool) -> None:
    assert run_natcheck(behavior).result.port_preservation is expected


@pytest.mark.parametrize(
    "behavior",
    [
        pytest.param(FULL_CONE, id="full-cone"),
        pytest.param(PORT_RESTRICTED_CONE, id="port-restricted-cone"),
        pytest.param(SYMMETRIC, id="symmetric"),
        pytest.param(dataclasses.replace(FULL_CONE, port_preservation=False), id="cone-no-pp"),
    ],
)
def test_public_address_is_the_nat_mapping_towards_the_server(behavior: NatBehavior) -> None:
    run = run_natcheck(behavior)
    classic_socket = run.locals[0]
    assert run.result.public_address == run.network.nat.mapping_for(classic_socket, SERVER_PRIMARY)
    assert run.result.public_address is not None
    assert run.result.public_address.host == PUBLIC_IP
    assert run.result.local_address == classic_socket


PUBLIC_ADDRESS = [
    pytest.param(FULL_CONE, True, Endpoint(PUBLIC_IP, FIRST_CLIENT_PORT), id="nat-classic"),
    pytest.param(FULL_CONE, False, Endpoint(PUBLIC_IP, FIRST_CLIENT_PORT), id="nat-mapping-socket"),
    pytest.param(OPEN_INTERNET, True, Endpoint(PUBLIC_IP, FIRST_CLIENT_PORT), id="no-nat"),
]


@pytest.mark.parametrize(("behavior", "classic", "expected"), PUBLIC_ADDRESS)
def test_public_address(behavior: NatBehavior, classic: bool, expected: Endpoint) -> None:
    # Without the classic test the first socket is RFC 5780's mapping socket.
    assert run_natcheck(behavior, classic=classic).result.public_address == expected


# -- binding lifetime (§4.6) -----------------------------------------------------------

# The NAT times a mapping from the last packet out; the client sees that
# packet's answer one RTT later and its probe reaches the NAT one RTT after
# sending it. Lifetimes between ladder steps and longer RTTs show that both
# are accounted for.
LIFETIMES = [
    pytest.param(30.0, 600.0, ONE_WAY_DELAY, id="30s"),
    pytest.param(37.0, 600.0, ONE_WAY_DELAY, id="37s-between-ladder-steps"),
    pytest.param(120.0, 600.0, ONE_WAY_DELAY, id="120s"),
    pytest.param(7.5, 60.0, ONE_WAY_DELAY, id="7.5s"),
    pytest.param(45.0, 600.0, 0.09, id="45s-rtt-180ms"),
]


@pytest.mark.parametrize(("lifetime", "lifetime_max", "delay"), LIFETIMES)
def test_binding_lifetime_lies_within_the_reported_bounds(
    lifetime: float, lifetime_max: float, delay: float
) -> None:
    behavior = dataclasses.replace(PORT_RESTRICTED_CONE, mapping_lifetime=lifetime)
    result = run_natcheck(behavior, lifetime=True, lifetime_max=lifetime_max, delay=delay).result
    assert result.binding_lifetime_bounds is not None
    low, high = result.binding_lifetime_bounds
    assert high is not None
    assert low <= lifetime <= high
    assert high - low <= 1.0  # NatCheckConfig.lifetime_resolution
    assert result.binding_lifetime == low


def test_binding_lifetime_beyond_the_maximum_is_a_lower_bound() -> None:
    behavior = dataclasses.replace(PORT_RESTRICTED_CONE, mapping_lifetime=120.0)
    result = run_natcheck(behavior, lifetime=True, lifetime_max=60.0).result
    assert result.binding_lifetime_bounds == (60.0, None)
    assert result.binding_lifetime == 60.0
    assert "binding lifetime: longer than 60 s (the longest probe)" in result.notes


def test_binding_lifetime_discovery_stops_waiting_once_a_probe_finds_the_mapping_dead() -> None:
    # The ladder reaches lifetime_max (600 s); probes longer than the first
    # one to find the mapping dead would only find it dead too.
    behavior = dataclasses.replace(PORT_RESTRICTED_CONE, mapping_lifetime=30.0)
    result = run_natcheck(behavior, lifetime=True, lifetime_max=600.0).result
    assert result.elapsed < 150.0
