"""``natkit lab``: natcheck, exec, shell and argument checks, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from natkit.net.netns import lab_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def natkit(*args: str, timeout: float = 45.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "natkit.cli.main", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _run_id(stderr: str) -> str:
    for line in stderr.splitlines():
        if line.startswith("natkit lab "):
            return line.split()[2]
    raise AssertionError(f"no banner in {stderr!r}")


def test_lab_natcheck_json_reports_detected_against_emulated() -> None:
    result = natkit("lab", "natcheck", "--nat", "restricted-cone", "--json", "--stun-client")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "netns"
    assert report["engine"] == "tun"
    assert report["match"] is True
    assert report["emulated"]["classic"] == "restricted-cone"
    assert report["detected"]["classic"] == "restricted-cone"
    assert report["detected"]["public_address"].startswith("198.51.100.")
    assert report["stun_client"]["primary"].startswith(
        "Independent Mapping, Address Dependent Filter"
    )
    assert {row["what"] for row in report["comparison"]} == {
        "classic",
        "mapping",
        "filtering",
        "stun-client",
    }
    assert not lab_namespaces(f"natkit-{report['lab']}-")


def test_lab_natcheck_prints_a_table_for_the_kernel_nat() -> None:
    result = natkit("lab", "natcheck", "--nat", "kernel-random-fully")
    assert result.returncode == 0, result.stderr
    assert "emulated" in result.stdout
    assert "detected" in result.stdout
    assert "DIFFERS" not in result.stdout
    assert not lab_namespaces(f"natkit-{_run_id(result.stderr)}-")


def test_lab_shell_starts_and_exits_with_stdin_closed() -> None:
    result = natkit("lab", "shell", "--nat", "symmetric")
    assert result.returncode == 0, result.stderr
    assert "203.0.113.10:3478" in result.stderr
    assert not lab_namespaces(f"natkit-{_run_id(result.stderr)}-")


def test_lab_exec_runs_the_command_on_the_host_and_returns_its_status() -> None:
    script = "ip -o -4 addr show dev eth0; exit 3"
    result = natkit("lab", "exec", "--no-stun", "client", "--", "sh", "-c", script)
    assert result.returncode == 3, result.stderr
    assert "192.168.1.10/24" in result.stdout
    assert not lab_namespaces(f"natkit-{_run_id(result.stderr)}-")


def test_lab_exec_into_a_missing_namespace_is_an_error() -> None:
    result = natkit("lab", "exec", "natkit-nosuchlab-client", "--", "true")
    assert result.returncode == 1
    assert "no lab namespace natkit-nosuchlab-client" in result.stderr


def test_unknown_nat_is_a_usage_error() -> None:
    result = natkit("lab", "natcheck", "--nat", "carrier-pigeon")
    assert result.returncode == 2
    assert "kernel-masquerade" in result.stderr


def test_sim_mode_runs_the_same_scenario_in_the_simulator() -> None:
    result = natkit("lab", "natcheck", "--nat", "restricted-cone", "--mode", "sim", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == "sim"
    assert report["match"] is True
    assert report["detected"]["classic"] == "restricted-cone"


def test_sim_mode_has_no_kernel_nat() -> None:
    result = natkit("lab", "natcheck", "--nat", "kernel-masquerade", "--mode", "sim")
    assert result.returncode == 2
    assert "only with --mode netns" in result.stderr
