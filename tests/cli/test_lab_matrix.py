"""``natkit lab matrix``: the rich table, one JSON object per line, the
report directory, --only, and exit status 1 when a scenario differs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from natkit.cli import lab_matrix
from natkit.cli.lab_matrix import matrix_command
from natkit.lab.matrix import Scenario, all_scenarios

app = typer.Typer()
app.command()(matrix_command)


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_json_prints_one_object_per_scenario() -> None:
    result = _invoke("--only", "sip/*", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["scenario"] for r in rows] == [
        "sip/no-rport",
        "sip/rport",
        "sip/no-keepalive-1h",
        "sip/keepalive-1h",
    ]
    for row in rows:
        assert {"scenario", "expected", "observed", "ok"} <= row.keys()
        assert row["ok"] is True and row["observed"] == row["expected"]


def test_table_and_report(tmp_path: Path) -> None:
    result = _invoke("--only", "turn/*", "--report", str(tmp_path / "rep"))
    assert result.exit_code == 0, result.output
    assert "turn/web-only" in result.stdout and "relayed over tls" in result.stdout
    assert "2/2 as expected" in result.stdout
    assert (tmp_path / "rep" / "index.html").exists()
    assert (tmp_path / "rep" / "turn_web-only.pcap").exists()
    assert (tmp_path / "rep" / "turn_udp-blocked.pcap").exists()


def test_exit_status_is_1_when_a_scenario_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    def with_a_wrong_expectation() -> list[Scenario]:
        scenarios = all_scenarios()
        return [
            dataclasses.replace(s, expected="response lost") if s.name == "sip/rport" else s
            for s in scenarios
        ]

    monkeypatch.setattr(lab_matrix, "all_scenarios", with_a_wrong_expectation)
    result = _invoke("--only", "rport", "--json")
    assert result.exit_code == 1
    rows = {r["scenario"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["sip/rport"]["ok"] is False and rows["sip/rport"]["observed"] == "arrives"
    assert rows["sip/no-rport"]["ok"] is True


def test_no_match_and_bad_mode_are_usage_errors() -> None:
    assert _invoke("--only", "nothing-like-this").exit_code == 2
    assert _invoke("--mode", "bogus").exit_code == 2


def test_registered_as_natkit_lab_matrix() -> None:
    from natkit.cli.main import app as natkit_app

    result = CliRunner().invoke(natkit_app, ["lab", "matrix", "--only", "sip/rport", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["scenario"] == "sip/rport" and row["ok"] is True
