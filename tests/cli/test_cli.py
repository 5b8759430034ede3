"""The natkit command: help, demo, natcheck, stun-server argument checks."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app

runner = CliRunner()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_lists_every_command_with_one_line() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("stun-server", "natcheck", "demo", "version"):
        assert command in result.output


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.output.strip()


def test_demo_json_reports_open_internet_on_loopback() -> None:
    p1, p2 = _free_port(), _free_port()
    result = runner.invoke(
        app, ["demo", "--json", "--primary", f"127.0.0.1:{p1}", "--alternate", f"127.0.0.2:{p2}"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["classic"] == "open-internet"
    assert data["mapping"] == "endpoint-independent"
    assert data["filtering"] == "endpoint-independent"
    assert data["hairpinning"] is True
    assert data["public_address"] == data["local_address"]
    assert data["other_address"] == f"127.0.0.2:{p2}"
    assert 0 <= data["elapsed_s"] < 2
    lab = {row["scenario"]: row for row in data["lab"]}
    assert lab["symmetric"]["detected"]["classic"] == "symmetric"
    assert all(row["ok"] for row in data["lab"])
    turn = {row["scenario"]: row for row in data["turn"]}
    assert set(turn) == set(lab)
    assert (turn["udp-blocked"]["transport"], turn["web-only"]["transport"]) == ("tcp", "tls")
    assert all(row["ok"] and row["reached"] for row in data["turn"])


def test_demo_human_output_is_a_table() -> None:
    p1, p2 = _free_port(), _free_port()
    result = runner.invoke(
        app, ["demo", "--primary", f"127.0.0.1:{p1}", "--alternate", f"127.0.0.2:{p2}"]
    )
    assert result.exit_code == 0, result.output
    assert "open-internet" in result.output
    assert "endpoint-independent" in result.output
    assert "port-restricted-cone" in result.output  # the lab table
    assert "TURN relay to a public peer" in result.output


def test_natcheck_with_no_server_reports_udp_blocked() -> None:
    result = runner.invoke(app, ["natcheck", f"127.0.0.1:{_free_port()}", "--classic", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["classic"] == "udp-blocked"
    assert data["mapping"] is None


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["natcheck", "127.0.0.1", "--classic", "--behavior"], id="exclusive-modes"),
        pytest.param(["stun-server", "--listen", "not-an-address"], id="bad-listen"),
        pytest.param(["stun-server", "--tls-cert", "x.pem"], id="cert-without-key"),
        pytest.param(
            ["stun-server", "--listen", "127.0.0.1:3478", "--alternate", "127.0.0.1:3479"],
            id="alternate-same-ip",
        ),
        pytest.param(["stun-server", "--alternate", "127.0.0.2:3479"], id="alternate-wildcard"),
        pytest.param(
            ["stun-server", "--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
            id="missing-cert-files",
        ),
    ],
)
def test_bad_arguments_fail_cleanly(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
