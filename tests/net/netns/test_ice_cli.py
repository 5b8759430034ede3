"""``natkit lab connect --mode netns``: the ICE scenario with real packets from the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app
from natkit.net.netns import lab_namespaces

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

runner = CliRunner()


def test_connect_in_namespaces_prints_one_json_object_and_cleans_up() -> None:
    result = runner.invoke(
        app,
        [
            "lab",
            "connect",
            "--mode",
            "netns",
            "--nat-a",
            "symmetric",
            "--nat-b",
            "port-restricted-cone",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["mode"] == "netns"
    assert row["connected"] and row["data_ok"]
    assert row["path"] == row["expected"] == "relay"
    assert row["elapsed_s"] < 5.0
    assert not lab_namespaces(f"natkit-{row['lab']}-")


def test_the_kernel_masquerade_pair_connects_directly() -> None:
    result = runner.invoke(
        app,
        [
            "lab",
            "connect",
            "--mode",
            "netns",
            "--nat-a",
            "kernel-masquerade",
            "--nat-b",
            "full-cone",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["connected"] and row["path"] == "direct", row
