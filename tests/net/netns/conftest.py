"""Fixtures for the namespace lab tests.

They need root (namespaces, veths, TUN devices, nftables). Without root they
skip with the reason, except under ``CI=true``, where the lab must be proven
(CI runs as root) and a missing prerequisite fails instead. Every lab is
closed in ``finally``, and every test checks afterwards that none of its
``natkit-<run id>-*`` namespaces is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from natkit.net.netns import Lab, LabUnavailable, check_available, lab_namespaces
from natkit.net.netns.system import stop_pids, tool

STOP_TIMEOUT = 5.0


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI runs the namespace lab as root and must prove it)")
    pytest.skip(reason)


def require_lab(*, tun: bool = False, nft: bool = False) -> None:
    try:
        check_available(tun=tun, nft=nft)
    except LabUnavailable as exc:
        unavailable(str(exc))


def require_program(name: str, package: str) -> str:
    path = tool(name)
    if path is None:
        unavailable(f"{name} is not installed: apt-get install {package} (scripts/setup.sh does)")
    return path


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    require_lab(tun=True, nft=True)


def assert_gone(prefix: str) -> None:
    left = lab_namespaces(prefix)
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """An open lab, closed whatever the test does; its namespaces must be gone after."""
    the_lab = Lab(workdir=tmp_path)
    try:
        the_lab.open()
        yield the_lab
    finally:
        the_lab.close()
        assert_gone(the_lab.prefix)


class Background:
    """A Python (or natkit CLI) process started by a test, stopped by PID."""

    def __init__(self, argv: list[str], workdir: Path) -> None:
        self.log_path = workdir / "background.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log
        )

    def readline(self, timeout: float = 20.0) -> str:
        """The next stdout line, waited for at most ``timeout`` seconds."""
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            pytest.fail(f"no output within {timeout} s:\n{self.log()}")
        return self.proc.stdout.readline().decode()

    def signal(self, signum: signal.Signals) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(STOP_TIMEOUT * 3)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pid {self.proc.pid} ignored {signum.name}:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_pids([self.proc.pid])
        self.proc.wait(STOP_TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


@pytest.fixture
def background(tmp_path: Path) -> Iterator[list[Background]]:
    started: list[Background] = []
    try:
        yield started
    finally:
        for item in started:
            item.stop()


def python_argv(code: str) -> list[str]:
    return [sys.executable, "-c", code]
