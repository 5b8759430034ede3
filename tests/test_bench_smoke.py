"""The benchmarks in bench/ run end to end in their --smoke mode and print the
JSON their README documents. These are not timed tests: no number is judged,
only that each benchmark runs, its peers answer the same way, and every
server it started is gone when it exits.

A missing peer program or C compiler is a skip on a developer's machine and a
failure in CI (``CI=true``).
"""

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

pytestmark = [pytest.mark.interop, pytest.mark.slow]

BENCH = Path(__file__).resolve().parent.parent / "bench"
SMOKE_TIMEOUT = 60.0  # seconds; each smoke run takes a few
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p, path=_SEARCH_PATH) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (scripts/setup.sh installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the benchmarks", pytrace=False)
    pytest.skip(message)


def _run_smoke(script: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"runs", "median", "min", "max"} <= value.keys()
        and len(value["runs"]) >= 1
        and value["median"] is not None
    )


def test_stun_server_smoke_prints_rates_medians_and_ratios() -> None:
    _require("turnserver", "cc")
    result = _run_smoke("stun_server.py")
    assert result["benchmark"] == "stun_server"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"natkit", "natkit-asyncio", "coturn"}
    for name, server in result["servers"].items():
        for key in ("rate", "server_cpu_util", "answers_per_server_cpu_s", "generator_cpu_util"):
            assert _is_summary(server[key]), (name, key)
        assert server["rate"]["median"] > 0, name
        assert server["errors"]["invalid"] == 0, name
        assert server["runs"][0]["answered"] > 0, name
        assert _gone(server["pid"]), name
    assert set(result["median_rate"]) == set(result["servers"])
    for key in ("natkit/coturn", "natkit/coturn_per_cpu_s", "natkit-asyncio/natkit"):
        assert result["ratio"][key] > 0, key
    assert isinstance(result["target"]["met"], bool)


def test_natcheck_smoke_prints_times_and_same_answer() -> None:
    _require("stund")
    result = _run_smoke("natcheck.py")
    assert result["benchmark"] == "natcheck"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"stund", "natkit"}
    for name, server in result["servers"].items():
        for key in ("natkit_s", "natkit_fresh_loop_s", "pystun3_s"):
            assert _is_summary(server[key]), (name, key)
        assert server["ratio"]["natkit/pystun3"] > 0, name
        assert server["same_answer"] is True, (name, server["answers"])
        assert _gone(server["pid"]), name
    assert result["same_answer"] is True
    assert isinstance(result["target"]["met"], bool)
