"""The test harness's NAT model and loop: the verdicts above are only as
good as the emulation they run against."""

from __future__ import annotations

import dataclasses
import random

import pytest

from natkit.addr import Datagram, Endpoint
from natkit.nat.natcheck import NatCheckEvent
from natkit.nat.types import Mapping

from .harness import (
    ADM,
    APDF,
    APDM,
    EIF,
    EIM,
    FULL_CONE,
    PORT_RESTRICTED_CONE,
    PUBLIC_IP,
    RESTRICTED_CONE,
    SERVER_ALTERNATE,
    SERVER_PRIMARY,
    Nat,
    NatBehavior,
    Network,
    Stalled,
)

INSIDE = Endpoint("10.0.0.2", 40001)
OTHER_PORT = Endpoint(SERVER_PRIMARY.host, SERVER_ALTERNATE.port)


def _nat(behavior: NatBehavior) -> Nat:
    return Nat(behavior, PUBLIC_IP, random.Random(0))


MAPPINGS = [
    pytest.param(EIM, (True, True), id="endpoint-independent"),
    pytest.param(ADM, (True, False), id="address-dependent"),
    pytest.param(APDM, (False, False), id="address-and-port-dependent"),
]


@pytest.mark.parametrize(("mapping", "same"), MAPPINGS)
def test_nat_reuses_a_mapping_per_its_mapping_behaviour(
    mapping: Mapping, same: tuple[bool, bool]
) -> None:
    nat = _nat(NatBehavior(mapping=mapping, filtering=EIF))
    first = nat.outbound(INSIDE, SERVER_PRIMARY, now=0.0)
    other_port = nat.outbound(INSIDE, OTHER_PORT, now=0.0)
    other_ip = nat.outbound(INSIDE, SERVER_ALTERNATE, now=0.0)
    assert (first == other_port, first == other_ip) == same


FILTERS = [
    pytest.param(FULL_CONE, (True, True), id="endpoint-independent"),
    pytest.param(RESTRICTED_CONE, (True, False), id="address-dependent"),
    pytest.param(PORT_RESTRICTED_CONE, (False, False), id="address-and-port-dependent"),
]


@pytest.mark.parametrize(("behavior", "admitted"), FILTERS)
def test_nat_filters_per_its_filtering_behaviour(
    behavior: NatBehavior, admitted: tuple[bool, bool]
) -> None:
    nat = _nat(behavior)
    public = nat.outbound(INSIDE, SERVER_PRIMARY, now=0.0)
    assert public is not None
    assert nat.inbound(SERVER_PRIMARY, public, now=0.1) == INSIDE
    from_other_port = nat.inbound(OTHER_PORT, public, now=0.1) == INSIDE
    from_other_ip = nat.inbound(SERVER_ALTERNATE, public, now=0.1) == INSIDE
    assert (from_other_port, from_other_ip) == admitted


def test_nat_mapping_expires_unless_refreshed_by_outbound_packets() -> None:
    nat = _nat(dataclasses.replace(PORT_RESTRICTED_CONE, mapping_lifetime=30.0))
    public = nat.outbound(INSIDE, SERVER_PRIMARY, now=0.0)
    assert public is not None
    assert nat.inbound(SERVER_PRIMARY, public, now=29.0) == INSIDE  # inbound: no refresh
    assert nat.inbound(SERVER_PRIMARY, public, now=30.0) is None
    public = nat.outbound(INSIDE, SERVER_PRIMARY, now=40.0)
    assert public is not None
    nat.outbound(INSIDE, SERVER_PRIMARY, now=60.0)
    assert nat.inbound(SERVER_PRIMARY, public, now=89.0) == INSIDE


def test_nat_hairpins_with_the_senders_public_source() -> None:
    nat = _nat(dataclasses.replace(FULL_CONE, hairpinning=True))
    inside_b = Endpoint("10.0.0.2", 40002)
    public_b = nat.outbound(inside_b, SERVER_PRIMARY, now=0.0)
    public_a = nat.outbound(INSIDE, SERVER_PRIMARY, now=0.0)
    assert public_b is not None
    assert nat.hairpin(INSIDE, public_b, now=0.0) == (public_a, inside_b)


def test_nat_without_hairpinning_drops_packets_to_its_own_address() -> None:
    nat = _nat(FULL_CONE)
    public_b = nat.outbound(Endpoint("10.0.0.2", 40002), SERVER_PRIMARY, now=0.0)
    assert public_b is not None
    assert nat.hairpin(INSIDE, public_b, now=0.0) is None


def test_nat_without_port_preservation_picks_another_port() -> None:
    nat = _nat(NatBehavior(mapping=EIM, filtering=APDF, port_preservation=False))
    public = nat.outbound(INSIDE, SERVER_PRIMARY, now=0.0)
    assert public is not None
    assert public.host == PUBLIC_IP
    assert public.port != INSIDE.port


class _NeverDone:
    """A client with nothing scheduled that never finishes."""

    done = False

    def start(self, *, now: float) -> None:
        del now

    def receive_datagram(self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float) -> None:
        del data, addr, local, now

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now

    def next_event(self) -> NatCheckEvent | None:
        return None


def test_network_raises_when_nothing_can_make_progress() -> None:
    with pytest.raises(Stalled, match="nothing can make progress"):
        Network(FULL_CONE).run(_NeverDone())
