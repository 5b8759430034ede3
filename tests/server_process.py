"""Running a ``natkit`` server command as a child process in a test: start it
with its stderr readable line by line, and read until it says it is up."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

START_TIMEOUT = 20.0  # seconds


def start_natkit(*args: str) -> subprocess.Popen[bytes]:
    """``python -m natkit.cli.main *args`` with stderr piped, unbuffered
    (select() must see what readline() has not consumed), 200 columns wide
    (so that rich does not wrap a line being waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "natkit.cli.main", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        bufsize=0,
        env={**os.environ, "COLUMNS": "200"},
    )


def read_until(proc: subprocess.Popen[bytes], marker: bytes, command: str) -> bytes:
    """What ``proc`` wrote to stderr up to the line holding ``marker``; fails
    naming ``command`` if it exits or stays silent for :data:`START_TIMEOUT`."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + START_TIMEOUT
    while marker not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], max(0, deadline - time.monotonic()))
        line = proc.stderr.readline() if ready else b""
        assert line, f"{command} did not start: {seen.decode()}"
        seen += line
    return seen
