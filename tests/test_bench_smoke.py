"""The benchmarks in bench/ run end to end in their --smoke mode and print the
JSON their README documents. These are not timed tests: no number is judged,
only that each benchmark runs, its peers answer the same way, and every
server it started is gone when it exits.

A missing peer program or C compiler is a skip on a developer's machine and a
failure in CI (``CI=true``). So is missing root for the namespace-lab
benchmarks (``bench/tun_nat.py``, ``bench/natcheck.py --lab``), which print
``{"skipped": reason}`` without it; afterwards none of their lab namespaces
may be left.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from .bench_smoke import gone, is_summary, require, run_smoke

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SMOKE_TIMEOUT = 60.0  # seconds; each smoke run takes a few
LAB_SMOKE_TIMEOUT = 120.0  # seconds; a lab smoke run takes 5-10, building the lab included


def _run_smoke(script: str, *extra: str, timeout: float = SMOKE_TIMEOUT) -> dict[str, Any]:
    return run_smoke(script, *extra, timeout=timeout)


def _run_lab_smoke(script: str, *extra: str) -> dict[str, Any]:
    result = _run_smoke(script, *extra, timeout=LAB_SMOKE_TIMEOUT)
    if "skipped" in result:
        reason = f"the namespace lab is unavailable: {result['skipped']}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI runs as root and must run the lab benchmarks")
        pytest.skip(reason)
    return result


def _lab_gone(run_id: str) -> bool:
    from natkit.net.netns import lab_namespaces

    return not lab_namespaces(f"natkit-{run_id}-")


def test_stun_server_smoke_prints_rates_medians_and_ratios() -> None:
    require("turnserver", "cc")
    result = _run_smoke("stun_server.py")
    assert result["benchmark"] == "stun_server"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"natkit", "natkit-asyncio", "coturn"}
    for name, server in result["servers"].items():
        for key in ("rate", "server_cpu_util", "answers_per_server_cpu_s", "generator_cpu_util"):
            assert is_summary(server[key]), (name, key)
        assert server["rate"]["median"] > 0, name
        assert server["errors"]["invalid"] == 0, name
        assert server["runs"][0]["answered"] > 0, name
        assert gone(server["pid"]), name
    assert set(result["median_rate"]) == set(result["servers"])
    for key in ("natkit/coturn", "natkit/coturn_per_cpu_s", "natkit-asyncio/natkit"):
        assert result["ratio"][key] > 0, key
    assert isinstance(result["target"]["met"], bool)


def test_natcheck_smoke_prints_times_and_same_answer() -> None:
    require("stund")
    result = _run_smoke("natcheck.py")
    assert result["benchmark"] == "natcheck"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"stund", "natkit"}
    for name, server in result["servers"].items():
        for key in ("natkit_s", "natkit_fresh_loop_s", "pystun3_s"):
            assert is_summary(server[key]), (name, key)
        assert server["ratio"]["natkit/pystun3"] > 0, name
        assert server["same_answer"] is True, (name, server["answers"])
        assert gone(server["pid"]), name
    assert result["same_answer"] is True
    assert isinstance(result["target"]["met"], bool)


@pytest.mark.netns
@pytest.mark.timeout(LAB_SMOKE_TIMEOUT + 30)
def test_tun_nat_smoke_prints_rates_loss_and_ratio() -> None:
    require("cc")
    result = _run_lab_smoke("tun_nat.py")
    assert result["benchmark"] == "tun_nat"
    assert result["smoke"] is True
    assert set(result["per_engine"]) == {"tun", "kernel"}
    for name, engine in result["per_engine"].items():
        at_10k = engine["offered"]["10000"]
        assert is_summary(at_10k["loss"]), name
        assert is_summary(at_10k["delivered_rate"]), name
        assert is_summary(engine["max_delivered_rate"]), name
        assert engine["max_delivered_rate"]["median"] > 0, name
    assert {r["engine"] for r in result["runs"]} == {"tun", "kernel"}
    assert all(r["duplicates"] == 0 and r["sent"] > 0 for r in result["runs"])
    assert result["ratio"]["kernel/tun_max_delivered"] > 0
    assert isinstance(result["target"]["met"], bool)
    assert gone(result["forwarder"]["pid"])
    assert result["forwarder"]["stats"]["written_outside"] > 0
    assert result["namespaces_left"] == []
    assert _lab_gone(result["run_id"])


@pytest.mark.netns
@pytest.mark.timeout(LAB_SMOKE_TIMEOUT + 30)
def test_natcheck_lab_smoke_gives_the_emulated_type_for_both_clients() -> None:
    result = _run_lab_smoke("natcheck.py", "--lab")
    assert result["benchmark"] == "natcheck"
    assert result["mode"] == "lab"
    assert result["smoke"] is True
    assert set(result["presets"]) == {"full-cone"}
    preset = result["presets"]["full-cone"]
    for key in ("natkit_s", "pystun3_s", "rtt_ms"):
        assert is_summary(preset[key]), key
    assert preset["answers"] == {"natkit": ["full-cone"], "pystun3": ["full-cone"]}
    assert preset["same_answer"] is True
    assert preset["ratio"]["natkit/pystun3"] > 0
    assert preset["rtt_ms"]["median"] >= 1000 * 2 * result["params"]["delay_inside_s"]
    assert all(gone(pid) for pid in preset["pid"].values())
    assert result["same_answer"] is True
    assert result["namespaces_left"] == []
    assert _lab_gone(preset["run_id"])
