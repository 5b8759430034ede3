"""``natkit lab connect``: two ICE agents behind two NATs, as a summary or JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app
from natkit.lab.ice_connect import NAT_NAMES

runner = CliRunner()


def test_json_is_one_object_with_the_outcome() -> None:
    result = runner.invoke(
        app, ["lab", "connect", "--nat-a", "symmetric", "--nat-b", "symmetric", "--json"]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["connected"] is True
    assert row["path"] == row["expected"] == "relay"
    assert "relay" in (row["local_type"], row["remote_type"])
    assert 0 < row["elapsed_s"] < 2.0
    assert row["checks_sent"] > 0 and row["data_ok"] is True
    assert row["mode"] == "sim"


@pytest.mark.parametrize(
    ("nat_a", "nat_b", "path", "local_type", "transport"),
    [
        pytest.param("open", "open", "direct", "host", "udp", id="open"),
        pytest.param("full-cone", "port-restricted-cone", "direct", "srflx", "udp", id="cones"),
        pytest.param("web-only", "full-cone", "relay", "relay", "tls", id="web-only"),
        pytest.param("udp-blocked", "open", "relay", "relay", "tcp", id="udp-blocked"),
        pytest.param("same-nat", "symmetric", "direct", "host", "udp", id="same-nat"),
    ],
)
def test_the_selected_pair_is_reported(
    nat_a: str, nat_b: str, path: str, local_type: str, transport: str
) -> None:
    result = runner.invoke(app, ["lab", "connect", "--nat-a", nat_a, "--nat-b", nat_b, "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert (row["path"], row["local_type"], row["transport"]) == (path, local_type, transport)


def test_the_summary_names_the_pair_and_the_time() -> None:
    result = runner.invoke(
        app, ["lab", "connect", "--nat-a", "symmetric", "--nat-b", "port-restricted-cone"]
    )
    assert result.exit_code == 0, result.output
    for text in ("connected", "yes", "relay (expected relay)", "time to connected", "checks"):
        assert text in result.output


def test_the_grid_runs_every_pair_as_json_lines() -> None:
    result = runner.invoke(app, ["lab", "connect", "--grid", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["nat_a"], r["nat_b"]) for r in rows] == [
        (a, b) for a in NAT_NAMES for b in NAT_NAMES
    ]
    assert all(r["connected"] and r["as_expected"] and r["data_ok"] for r in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--nat-a", "kernel-masquerade"], "only with --mode netns", id="kernel-sim"),
        pytest.param(["--mode", "netns", "--nat-a", "tandem"], "only with --mode sim", id="tandem"),
        pytest.param(["--mode", "qemu"], "choose netns or sim", id="bad-mode"),
        pytest.param(["--nat-b", "no-such-nat"], "no-such-nat", id="bad-nat"),
        pytest.param(["--latency", "-1"], "latency", id="bad-latency"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["lab", "connect", *args])
    assert result.exit_code == 2
    assert message in result.output
