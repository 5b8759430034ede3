"""``natkit serve`` as a command: --print-defaults, --check, configuration
errors (one line naming section.key, exit 1), and a real run on loopback with
ephemeral ports: the start-up summary, the status page, SIGTERM -> exit 0."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app

runner = CliRunner()
EPHEMERAL = [
    "--set", 'stun.listen=["127.0.0.1:0"]',
    "--set", 'turn.listen=["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]',
    "--set", 'sip.listen=["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]',
    "--set", "media_relay.min-port=42000",
    "--set", "media_relay.max-port=42999",
    "--admin", "127.0.0.1:0",
]  # fmt: skip


def test_print_defaults_shows_the_embedded_toml() -> None:
    result = runner.invoke(app, ["serve", "--print-defaults"])
    assert result.exit_code == 0
    assert "[media_relay]" in result.stdout and 'listen = "127.0.0.1:9640"' in result.stdout


def test_check_accepts_the_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "natkit.toml"
    result = runner.invoke(app, ["serve", "--config", str(example), "--check"])
    assert result.exit_code == 0, result.output
    assert "configuration ok" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--set", "sip.flow-timer=0"], "sip.flow-timer", id="sip"),
        pytest.param(["--set", "media_relay.policy=never"], "media_relay.policy", id="relay"),
        pytest.param(["--set", "nonsense"], "--set", id="set"),
        pytest.param(["--admin", "0.0.0.0:9640"], "admin.listen", id="open-admin"),
        pytest.param(["--store", "mysql://db"], "store.url", id="store"),
    ],
)
def test_configuration_errors_are_one_line_and_exit_1(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["serve", *args, "--check"], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_serve_runs_prints_what_listens_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "natkit.cli.main", "serve", "--data-dir", str(tmp_path / "d"),
         *EPHEMERAL],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "COLUMNS": "200", "NATKIT_ADMIN_TOKEN": ""},
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"natkit serve is running" not in seen:
            ready, _, _ = select.select([proc.stderr], [], [], max(0, deadline - time.monotonic()))
            line = proc.stderr.readline() if ready else b""
            assert line, f"natkit serve did not start: {seen.decode()}"
            seen += line
        text = seen.decode()
        for service in ("stun", "turn", "sip", "media relay", "admin"):
            assert service in text, text
        assert "42000-42999" in text and "store: sqlite:" in text
        match = re.search(r"status page http://(127\.0\.0\.1:\d+)/", text)
        assert match is not None, text
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{match.group(1)}/status.json", timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["counts"]["registrations"] == 0
        assert {x["service"] for x in doc["listening"]} >= {"stun", "turn", "sip", "admin"}
        assert (tmp_path / "d" / "natkit.db").is_file()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        proc.stderr.close()
    assert code == 0
