"""NatCheck as a whole under virtual time: the tests run concurrently, the
event stream is complete, and a seed replays a run exactly."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from natkit.addr import Endpoint
from natkit.nat.natcheck import NatCheck, NatCheckConfig, NatCheckFinished, ProbeFinished

from .harness import (
    FULL_CONE,
    ONE_WAY_DELAY,
    OPEN_INTERNET,
    PORT_RESTRICTED_CONE,
    RESTRICTED_CONE,
    SERVER_PRIMARY,
    SYMMETRIC,
    SYMMETRIC_UDP_FIREWALL,
    UDP_BLOCKED,
    NatBehavior,
    run_natcheck,
)

RTT = 2 * ONE_WAY_DELAY


def probe_timeout(config: NatCheckConfig) -> float:
    """When an unanswered probe is given up (RFC 8489 §6.2.1 schedule)."""
    sends = [config.rto * 2.0**i for i in range(config.rc - 1)]
    return sum(sends) + config.rm * config.rto


def test_default_probe_timeout_is_2_2_seconds() -> None:
    assert probe_timeout(NatCheckConfig()) == pytest.approx(2.2)


# Run one after another, the classic test (Test II's timeout, then Test I to
# the alternate address) and RFC 5780's (the filtering tests' timeout, then
# the hairpinning probes' timeout) would need at least two probe timeouts.
# Everything ends within one timeout plus a few round trips, so they overlap.
ELAPSED = [
    pytest.param(OPEN_INTERNET, 0.0, 2 * RTT, id="open-internet"),
    pytest.param(dataclasses.replace(FULL_CONE, hairpinning=True), 0.0, 3 * RTT, id="full-cone-hp"),
    pytest.param(FULL_CONE, 1.0, 2 * RTT, id="full-cone"),
    pytest.param(RESTRICTED_CONE, 1.0, 2 * RTT, id="restricted-cone"),
    pytest.param(PORT_RESTRICTED_CONE, 1.0, 2 * RTT, id="port-restricted-cone"),
    pytest.param(SYMMETRIC, 1.0, 2 * RTT, id="symmetric"),
    pytest.param(SYMMETRIC_UDP_FIREWALL, 1.0, 2 * RTT, id="symmetric-udp-firewall"),
    pytest.param(UDP_BLOCKED, 1.0, 2 * RTT, id="udp-blocked"),
]


@pytest.mark.parametrize(("behavior", "timeouts", "rtts"), ELAPSED)
def test_classic_and_behavior_finish_within_one_probe_timeout_plus_a_few_rtts(
    behavior: NatBehavior, timeouts: float, rtts: float
) -> None:
    result = run_natcheck(behavior).result
    assert result.elapsed <= timeouts * probe_timeout(NatCheckConfig()) + rtts + 1e-9


def test_port_restricted_cone_takes_well_under_five_seconds() -> None:
    result = run_natcheck(PORT_RESTRICTED_CONE).result
    assert 2.2 <= result.elapsed < 2.5


# Which probes ran and which were answered, behind a port-restricted cone:
# the NAT drops everything that does not come from the address and port a
# socket sent to.
PORT_RESTRICTED_PROBES = {
    "classic.test1": True,
    "classic.test2": False,
    "classic.test3": False,
    "classic.test1b": True,
    "behavior.map1": True,
    "behavior.map2": True,
    "behavior.map3": True,
    "behavior.filter2": False,
    "behavior.filter3": False,
    "behavior.hairpin1": True,
    "behavior.hairpin.m2h": False,
    "behavior.hairpin.h2m": False,
}


def test_probe_finished_is_reported_for_every_probe() -> None:
    run = run_natcheck(PORT_RESTRICTED_CONE)
    probes = [e for e in run.events if isinstance(e, ProbeFinished)]
    assert {e.name: e.answered for e in probes} == PORT_RESTRICTED_PROBES
    assert len(probes) == len(PORT_RESTRICTED_PROBES)
    times = [e.at for e in probes]
    assert times == sorted(times)
    assert times[-1] <= run.result.elapsed


@pytest.mark.parametrize(
    "behavior",
    [
        pytest.param(OPEN_INTERNET, id="open-internet"),
        pytest.param(PORT_RESTRICTED_CONE, id="port-restricted-cone"),
        pytest.param(UDP_BLOCKED, id="udp-blocked"),
    ],
)
def test_natcheck_finished_is_the_last_event_and_comes_once(behavior: NatBehavior) -> None:
    run = run_natcheck(behavior)
    finished = [e for e in run.events if isinstance(e, NatCheckFinished)]
    assert len(finished) == 1
    assert run.events[-1] == finished[0]
    assert finished[0].result == run.result


def test_nothing_is_left_to_do_after_finishing() -> None:
    run = run_natcheck(PORT_RESTRICTED_CONE)
    assert run.check.done
    assert run.check.get_timer() is None
    assert run.check.datagrams_to_send(now=run.network.now) == []
    assert run.check.next_event() is None


# -- determinism -------------------------------------------------------------------------

REPLAYS = [
    pytest.param(PORT_RESTRICTED_CONE, False, id="port-restricted-cone"),
    pytest.param(SYMMETRIC, False, id="symmetric-random-ports"),
    pytest.param(
        dataclasses.replace(RESTRICTED_CONE, mapping_lifetime=30.0), True, id="with-lifetime"
    ),
]


@pytest.mark.parametrize(("behavior", "lifetime"), REPLAYS)
def test_same_seed_replays_the_same_run(behavior: NatBehavior, lifetime: bool) -> None:
    first = run_natcheck(behavior, seed=7, lifetime=lifetime)
    second = run_natcheck(behavior, seed=7, lifetime=lifetime)
    assert first.result == second.result
    assert first.events == second.events
    assert first.network.trace == second.network.trace


def test_another_seed_changes_the_bytes_not_the_verdict() -> None:
    first = run_natcheck(PORT_RESTRICTED_CONE, seed=7)
    other = run_natcheck(PORT_RESTRICTED_CONE, seed=8)
    assert first.result == other.result
    assert [s.data for s in first.network.trace] != [s.data for s in other.network.trace]


def test_natcheck_refuses_too_few_sockets() -> None:
    config = NatCheckConfig(rng=random.Random(0))
    locals_ = [Endpoint("10.0.0.2", 40001 + i) for i in range(NatCheck.sockets_needed(config) - 1)]
    with pytest.raises(ValueError, match="natcheck needs 5 sockets"):
        NatCheck(SERVER_PRIMARY, locals_, config)


def test_result_serialises_to_json() -> None:
    behavior = dataclasses.replace(SYMMETRIC, mapping_lifetime=30.0)
    result = run_natcheck(behavior, lifetime=True).result
    data = json.loads(json.dumps(result.to_json()))
    assert data["classic"] == "symmetric"
    assert data["mapping"] == "address-and-port-dependent"
    assert data["server"] == "198.51.100.1:3478"
    assert data["binding_lifetime_bounds_s"][0] <= 30.0 <= data["binding_lifetime_bounds_s"][1]


def test_lifetime_probes_reach_lifetime_max_beyond_the_default_ladder() -> None:
    from natkit.nat.behavior import BehaviorSockets, BehaviorTest
    from natkit.nat.prober import Prober, probe_config
    from natkit.stun.transaction import StunClientConfig

    probes = tuple(Endpoint("10.0.0.2", 41000 + i) for i in range(12))
    sockets = BehaviorSockets(
        Endpoint("10.0.0.2", 40001),
        Endpoint("10.0.0.2", 40002),
        Endpoint("10.0.0.2", 40003),
        Endpoint("10.0.0.2", 40004),
        probes,
    )
    prober = Prober(
        [sockets.mapping, sockets.filtering, sockets.hairpin, sockets.lifetime_sender, *probes],  # type: ignore[list-item]
        probe_config(0.2, 4, 4, StunClientConfig(rng=random.Random(1))),
    )
    test = BehaviorTest(prober, sockets, SERVER_PRIMARY, lifetime=True, lifetime_max=1200.0)
    test.start(now=0.0)
    assert test._ladder[-1] == 1200.0
    assert len(test._ladder) == len(probes)
