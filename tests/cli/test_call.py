"""``natkit call`` and ``natkit answer``: bad arguments (exit 2), and one real
call on loopback between subprocesses - natkit sip-server, ``natkit answer``
registered there, ``natkit call`` through it - with each side's recording
holding the other's tone."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from natkit.cli.main import app
from natkit.media.tone import contains_tone
from natkit.media.wav import read_wav

NATKIT = [sys.executable, "-m", "natkit.cli.main"]
ENV = {**os.environ, "COLUMNS": "200"}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["call", "mailto:bob@example.org"], id="not-a-sip-uri"),
        pytest.param(["call", "sip:bob@127.0.0.1", "--tone", "5000"], id="tone-above-nyquist"),
        pytest.param(["call", "sip:bob@127.0.0.1", "--tone", "440", "--play", "x.wav"], id="both"),
        pytest.param(["call", "sip:bob@127.0.0.1", "--play", "/nonexistent.wav"], id="no-wav"),
        pytest.param(["call", "sip:bob@127.0.0.1", "--stun", "not an endpoint"], id="bad-stun"),
        pytest.param(["answer", "--register", "sip:example.org", "--password", "x"], id="no-user"),
    ],
)
def test_bad_arguments_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(proc: subprocess.Popen[bytes], stream: str, marker: bytes) -> bytes:
    pipe = proc.stderr if stream == "stderr" else proc.stdout
    assert pipe is not None
    seen = b""
    deadline = time.monotonic() + 20
    while marker not in seen:
        ready, _, _ = select.select([pipe], [], [], max(0, deadline - time.monotonic()))
        line = pipe.readline() if ready else b""
        if not line:
            raise AssertionError(f"no {marker!r}: {seen.decode()}")
        seen += line
    return seen


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.mark.parametrize(
    ("srtp_call", "srtp_answer", "suite"),
    [
        pytest.param("off", "off", None, id="rtp"),
        pytest.param("mandatory", "optional", "AES_CM_128_HMAC_SHA1_80", id="srtp"),
    ],
)
def test_call_against_answer_on_loopback_carries_both_tones(
    tmp_path: Path, srtp_call: str, srtp_answer: str, suite: str | None
) -> None:
    port = _free_udp_port()
    registrar = f"127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = subprocess.Popen(
            [*NATKIT, "sip-server", "--listen", f"udp:{registrar}", "--domain", "example.org",
             "--no-auth", "--store", "memory:"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0, env=ENV,
        )  # fmt: skip
        procs.append(server)
        _wait_for(server, "stderr", b"listening on")
        answer = subprocess.Popen(
            [*NATKIT, "answer", "--register", "sip:bob@example.org", "--password", "x",
             "--registrar", registrar, "--tone", "1000", "--record", str(tmp_path / "b.wav"),
             "--duration", "20", "--bind", "127.0.0.1", "--json", "--srtp", srtp_answer],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0, env=ENV,
        )  # fmt: skip
        procs.append(answer)
        _wait_for(answer, "stdout", b'"registered"')
        caller = subprocess.run(
            [*NATKIT, "call", "sip:bob@example.org", "--proxy", registrar, "--tone", "440",
             "--record", str(tmp_path / "a.wav"), "--duration", "2", "--bind", "127.0.0.1",
             "--json", "--timeout", "10", "--srtp", srtp_call],
            capture_output=True, timeout=60, env=ENV, check=False,
        )  # fmt: skip
        assert caller.returncode == 0, caller.stdout.decode() + caller.stderr.decode()
        lines = [json.loads(line) for line in caller.stdout.decode().splitlines()]
        phases = [line["phase"] for line in lines if line["event"] == "progress"]
        assert phases[0] == "dialling" and "established" in phases and phases[-1] == "ended"
        result = lines[-1]
        assert result["event"] == "result" and result["established"] is True
        assert result["path"] == "sdp" and result["received_packets"] > 50
        assert result["srtp"] == suite
        answer.wait(30)  # --calls 1: it exits after the call
        assert answer.returncode == 0
        assert contains_tone(read_wav(tmp_path / "a.wav"), 1000, min_duration=1.0)
        assert contains_tone(read_wav(tmp_path / "b.wav"), 440, min_duration=1.0)
        assert not contains_tone(read_wav(tmp_path / "a.wav"), 440, min_duration=0.2)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def test_call_to_nobody_fails_with_exit_1_or_3(tmp_path: Path) -> None:
    port = _free_udp_port()  # nothing listens there: ICMP unreachable or no answer
    caller = subprocess.run(
        [*NATKIT, "call", f"sip:bob@127.0.0.1:{port}", "--bind", "127.0.0.1", "--json",
         "--timeout", "3", "--duration", "1"],
        capture_output=True, timeout=60, env=ENV, check=False,
    )  # fmt: skip
    assert caller.returncode in (1, 3), caller.stdout.decode() + caller.stderr.decode()
    result = json.loads(caller.stdout.decode().splitlines()[-1])
    assert result["event"] == "result" and result["established"] is False
