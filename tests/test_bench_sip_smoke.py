"""The SIP REGISTER benchmark (bench/sip_register.py) runs end to end in its
--smoke mode against Kamailio and ``natkit sip-server`` and prints the JSON
bench/README.md documents.

Not a timed test: no number is judged, only that every registration
succeeded with and without digest auth, that memory per registration was
measured, that the JSON has its keys, and that every server the script
started is gone when it exits. A missing Kamailio or sipp is a skip here and
a failure in CI (``CI=true``).
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
SMOKE_TIMEOUT = 60.0  # seconds; the smoke run takes a few
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p, path=SEARCH_PATH) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (scripts/setup.sh installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the benchmarks", pytrace=False)
    pytest.skip(message)


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


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_sip_register_smoke_registers_with_and_without_auth_and_measures_memory() -> None:
    _require("kamailio", "kamcmd", "sipp")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "sip_register.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["benchmark"] == "sip_register"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"kamailio", "natkit"}
    calls = result["params"]["calls"]
    for name, server in result["servers"].items():
        for mode in ("noauth", "auth"):
            stats = server["modes"][mode]
            assert _is_summary(stats["rate"]), (name, mode)
            assert stats["rate"]["median"] > 0, (name, mode)
            assert stats["failed"] == 0, (name, mode, stats["runs"])
            assert all(run["successful"] == calls for run in stats["runs"]), (name, mode)
        assert _is_summary(server["pss_bytes_per_registration"]), name
        assert _is_summary(server["rss_bytes_per_registration"]), name
        (memory,) = server["memory_runs"]
        hold = result["params"]["natkit_hold" if name == "natkit" else "hold"]
        assert memory["held"] == hold, name
        assert server["pids"] and all(_gone(pid) for pid in server["pids"]), name
    kamailio = result["servers"]["kamailio"]
    assert _is_summary(kamailio["shm_bytes_per_registration"])
    assert kamailio["shm_bytes_per_registration"]["median"] > 0
    assert result["servers"]["natkit"]["shm_bytes_per_registration"] is None
    for mode in ("noauth", "auth"):
        assert result["ratio"][f"natkit/kamailio_{mode}_rate"] > 0, mode
    assert "cpus" in result["machine"]
