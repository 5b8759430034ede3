"""The traversal matrix on the simulated internet: every scenario of
DESIGN.md's matrix observes what it expects, selection by pattern, and a
wrong expectation is reported as a difference."""

from __future__ import annotations

import dataclasses
import time

import pytest

from natkit.lab.matrix import Scenario, all_scenarios, run_matrix, run_scenario, select

SCENARIOS = all_scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_every_scenario_observes_what_it_expects(scenario: Scenario) -> None:
    result = run_scenario(scenario, seed=0)
    assert result.ok, result.to_json()
    assert result.capture.sent, "the scenario's packets were recorded"


def test_the_whole_matrix_runs_in_under_a_minute() -> None:
    started = time.perf_counter()
    results = run_matrix(SCENARIOS, seed=1)
    assert time.perf_counter() - started < 60
    assert all(r.ok for r in results), [r.to_json() for r in results if not r.ok]


def test_the_matrix_covers_every_claim_group() -> None:
    groups = {s.group for s in SCENARIOS}
    assert groups == {"detection", "signalling", "media", "firewall", "ice", "ipv6", "portmap"}
    names = {s.name for s in SCENARIOS}
    assert len(names) == len(SCENARIOS)
    # ECC Annex A's seven classic types and RFC 5780's nine combinations
    assert len(select(SCENARIOS, "detect/5780-*")) == 9
    assert len(select(SCENARIOS, "detection")) == 16
    # the ECC 4x4 grid as unordered pairs
    assert len(select(SCENARIOS, "ice/*")) == 13  # and three same-NAT cases


def test_negative_cases_are_expected_as_negative() -> None:
    by_name = {s.name: s for s in SCENARIOS}
    assert by_name["sip/no-rport"].expected == "response lost"
    assert by_name["sip/no-keepalive-1h"].expected == "INVITE lost at NAT"
    assert by_name["call/stun/symmetric+full-cone"].expected.startswith("one-way")
    assert by_name["ice/symmetric+symmetric"].expected == "relay"
    assert by_name["ice/port-restricted-cone+symmetric"].expected == "relay"


def test_select_by_glob_substring_and_group() -> None:
    assert [s.name for s in select(SCENARIOS, "sip/rport")] == ["sip/rport"]
    assert {s.name for s in select(SCENARIOS, "rport")} == {"sip/rport", "sip/no-rport"}
    assert {s.group for s in select(SCENARIOS, "signalling")} == {"signalling"}
    assert select(SCENARIOS, "no-such-scenario") == []
    assert select(SCENARIOS, None) == SCENARIOS


def test_a_wrong_expectation_is_a_difference() -> None:
    (rport,) = select(SCENARIOS, "sip/rport")
    wrong = dataclasses.replace(rport, expected="response lost")
    result = run_scenario(wrong)
    assert result.observed == "arrives"
    assert not result.ok
    assert result.to_json()["ok"] is False


def test_a_scenario_that_raises_is_an_error_row() -> None:
    def boom(seed: int) -> str:
        raise RuntimeError("lab broke")

    result = run_scenario(Scenario("x/boom", "x", "none", "direct", boom))
    assert not result.ok
    assert result.observed == "error: RuntimeError: lab broke"
