"""The TURN benchmarks (bench/turn_relay.py, bench/turn_alloc.py) run end to
end in their --smoke mode and print the JSON bench/README.md documents.

Not timed tests: no number is judged, only that both servers relayed and
allocated (every allocation made and deleted), that the JSON has its keys,
and that every server the script started is gone when it exits. A
missing coturn or C compiler is a skip here and a failure in CI (``CI=true``).
"""

from __future__ import annotations

import json
import os
import platform
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


def _require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (scripts/setup.sh installs them)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the benchmarks", pytrace=False)
    pytest.skip(message)


def _run_smoke(script: str, *extra: str) -> dict[str, Any]:
    # natkit's server on a named interpreter (this one), spelled relative to
    # our working directory: the server starts in a directory of its own.
    python = os.path.relpath(sys.executable)
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke", "--natkit-python", python, *extra],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    natkit_python = result["params"]["natkit_python"]
    assert natkit_python["executable"] == python
    assert natkit_python["version"] == platform.python_version()
    assert isinstance(natkit_python["shared_libpython"], bool)
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


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_turn_relay_smoke_relays_without_loss_and_reports_latency() -> None:
    _require("turnserver", "cc")
    result = _run_smoke("turn_relay.py")
    assert result["benchmark"] == "turn_relay"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"natkit", "coturn"}
    (rate,) = result["params"]["rates"]
    for name, server in result["servers"].items():
        step = server["offered"][str(int(rate))]
        for key in ("loss", "delivered_rate", "rtt_p50_us", "server_cpu_util"):
            assert _is_summary(step[key]), (name, key)
        # a smoke run is too short to judge loss on a busy CI machine; only that it relays
        assert step["delivered_rate"]["median"] > 0, name
        assert step["loss"]["median"] < 0.5, name
        assert _is_summary(server["max_lossless_rate"]), name
        latency = server["latency"]
        for key in ("rtt_p50_us", "rtt_p99_us", "direct_rtt_p50_us", "added_p50_us"):
            assert _is_summary(latency[key]), (name, key)
        assert latency["rtt_p50_us"]["median"] > 0, name
        assert server["errors"] == {
            "invalid": 0,
            "duplicates": 0,
            "send_errors": 0,
            "echo_errors": 0,
        }, name
        assert _gone(server["pid"]), name
    assert result["ratio"]["natkit/coturn_max_delivered"] > 0
    assert isinstance(result["target"]["met"], bool)


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_turn_alloc_smoke_allocates_deletes_and_measures_memory() -> None:
    _require("turnserver")
    # Pinned: the servers (every thread) to one CPU, the client to another.
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[-1], cpus[0]
    result = _run_smoke(
        "turn_alloc.py", "--server-cpus", str(server_cpu), "--client-cpus", str(client_cpu)
    )
    assert result["params"]["server_cpus"] == [server_cpu]
    assert result["params"]["client_cpus"] == [client_cpu]
    assert result["target"]["one_core_per_server"] is True
    assert result["benchmark"] == "turn_alloc"
    assert result["smoke"] is True
    # natkit and coturn as configured alike; natkit --workers 2 and coturn
    # relay-threads=2 for the like-with-like multi-core comparison.
    assert set(result["servers"]) == {"natkit", "coturn", "natkit-w2", "coturn-t2"}
    hold = result["params"]["hold"]
    for name, server in result["servers"].items():
        for key in ("rate", "server_cpu_util", "allocations_per_server_cpu_s"):
            assert _is_summary(server[key]), (name, key)
        assert server["rate"]["median"] > 0, name
        assert server["failed"] == 0, (name, [r["errors"] for r in server["runs"]])
        assert all(r["server_affinity"] == [server_cpu] for r in server["runs"]), name
    for name in ("natkit", "coturn"):  # memory rounds run single-process servers
        server = result["servers"][name]
        assert _is_summary(server["bytes_per_allocation"]), name
        (memory,) = server["memory_runs"]
        assert memory["held"] == memory["deleted"] == hold, name
        assert _gone(server["pid"]), name
        assert server["memory_pids"] and all(_gone(pid) for pid in server["memory_pids"]), name
    assert result["ratio"]["natkit/coturn_rate"] > 0
    assert isinstance(result["target"]["met"], bool)
