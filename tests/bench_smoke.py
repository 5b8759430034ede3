"""What the benchmarks' smoke tests share: run ``bench/SCRIPT --smoke`` and
read its JSON, skip (or, in CI, fail) when a peer program is missing, and
check the summaries and process exits every benchmark reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def skip_or_fail(message: str) -> None:
    """Skip on a developer's machine; fail in CI (``CI=true``), which must run
    the benchmarks."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the benchmarks", pytrace=False)
    pytest.skip(message)


def require(*programs: str) -> None:
    """:func:`skip_or_fail` unless every one of ``programs`` is installed."""
    missing = [p for p in programs if shutil.which(p, path=SEARCH_PATH) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)")


def run_smoke(script: str, *extra: str, timeout: float) -> dict[str, Any]:
    """Run ``bench/script --smoke *extra``; it must exit 0 and print JSON."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts: only its parent can reap it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def is_summary(value: Any) -> bool:
    """``value`` is a benchmark summary: per-run numbers, median, min, max."""
    return (
        isinstance(value, dict)
        and {"runs", "median", "min", "max"} <= value.keys()
        and len(value["runs"]) >= 1
        and value["median"] is not None
    )
