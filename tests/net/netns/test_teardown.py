"""Teardown on signals, ``natkit lab clean`` for leftovers, and the error
when the lab cannot run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from natkit.net.netns import lab_namespaces
from natkit.net.netns.system import namespace_pids, process_alive

from .conftest import Background, assert_gone, python_argv

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

# A lab with a TUN NAT and a process on a host, waiting on stdin.
BUILD_AND_WAIT = """
import sys
from natkit.net.netns import Lab, TunNat
with Lab() as lab:
    nat = lab.add_nat("nat", TunNat("symmetric"))
    host = lab.add_host("client", behind=nat)
    sleeper = lab.exec(host, ["sleep", "600"])
    print(lab.prefix, nat.pid, sleeper.pid, flush=True)
    sys.stdin.read()
"""


def _start(background: list[Background], tmp_path: Path) -> tuple[Background, str, list[int]]:
    proc = Background(python_argv(BUILD_AND_WAIT), tmp_path)
    background.append(proc)
    prefix, *pids = proc.readline().split()
    assert lab_namespaces(prefix), proc.log()
    return proc, prefix, [int(p) for p in pids]


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="ctrl-c"),
        pytest.param(signal.SIGTERM, id="sigterm"),
        pytest.param(signal.SIGHUP, id="sighup"),
    ],
)
def test_signal_tears_the_lab_down(
    background: list[Background], tmp_path: Path, signum: signal.Signals
) -> None:
    proc, prefix, pids = _start(background, tmp_path)
    status = proc.signal(signum)
    assert status != 0
    assert_gone(prefix)
    for pid in pids:
        assert not process_alive(pid)


def test_lab_clean_removes_leftovers_and_the_processes_inside(
    background: list[Background], tmp_path: Path
) -> None:
    proc, prefix, pids = _start(background, tmp_path)
    proc.signal(signal.SIGKILL)  # no teardown: namespaces and processes stay
    names = lab_namespaces(prefix)
    assert names
    inside = sorted(pid for name in names for pid in namespace_pids(name))
    assert set(pids) <= set(inside)
    run_id = prefix.removeprefix("natkit-").rstrip("-")
    result = subprocess.run(
        [sys.executable, "-m", "natkit.cli.main", "lab", "clean", "--run-id", run_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"removed {len(names)} namespaces" in result.stdout
    stopped = {int(p) for p in re.findall(r"\d+", result.stdout.split("processes:")[-1])}
    assert set(inside) <= stopped
    assert_gone(prefix)
    for pid in inside:
        assert not process_alive(pid)
    assert not list(Path(tempfile.gettempdir()).glob(f"natkit-lab-{run_id}-*"))


def test_not_root_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from natkit.cli.main import app

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(app, ["lab", "natcheck", "--nat", "full-cone"])
    assert result.exit_code == 1
    assert "needs root" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not list(tmp_path.iterdir())  # refused before making anything
