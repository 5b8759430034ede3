"""``natkit lab turn``: the TURN scenario behind each NAT, as a table or JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app
from natkit.lab.certs import lab_tls_contexts
from natkit.nat.presets import PRESETS

runner = CliRunner()


def test_every_preset_reaches_the_peer_over_the_expected_transport() -> None:
    result = runner.invoke(app, ["lab", "turn", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["scenario"] for row in rows] == list(PRESETS)
    by_name = {row["scenario"]: row for row in rows}
    assert by_name["web-only"]["transport"] == by_name["web-only"]["expected"] == "tls"
    assert by_name["udp-blocked"]["transport"] == "tcp"
    assert by_name["symmetric"]["transport"] == "udp"
    assert all(row["ok"] and row["echoed"] == row["sent"] > 0 for row in rows)
    assert {row["mode"] for row in rows} == {"sim"}


def test_human_output_is_a_table_of_the_chosen_nats() -> None:
    result = runner.invoke(app, ["lab", "turn", "--nat", "web-only", "--nat", "symmetric"])
    assert result.exit_code == 0, result.output
    assert "web-only" in result.output and "symmetric" in result.output
    assert "full-cone" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--nat", "kernel-masquerade"], "only with --mode netns", id="kernel-in-sim"),
        pytest.param(["--mode", "qemu"], "choose netns or sim", id="bad-mode"),
        pytest.param(["--nat", "no-such-nat"], "no-such-nat", id="bad-nat"),
    ],
)
def test_bad_arguments_are_refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["lab", "turn", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_lab_certificates_are_trusted_only_by_their_own_client() -> None:
    import ssl

    server, client = lab_tls_contexts(hostnames=("turn.example",))
    other_server, _ = lab_tls_contexts(hostnames=("turn.example",))
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname
    assert len(client.get_ca_certs()) == 1
    assert server.cert_store_stats()  # a context with a certificate chain loaded
    assert other_server is not server
