"""bench/ice_connect.py runs end to end in its --smoke mode and prints the
JSON bench/README.md documents.

Not a timed test: no number is judged, only that every variant connected
(natkit's three configurations and aioice, 1 pair and 64 pairs on loopback),
that the simulated symmetric/port-restricted pair went through the relay,
and that the JSON has its keys. A missing aioice is a skip here and a
failure in CI (``CI=true``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.interop, pytest.mark.slow]

BENCH = Path(__file__).resolve().parent.parent / "bench"
SMOKE_TIMEOUT = 90.0  # seconds; the smoke run takes a few
VARIANTS = ("natkit", "natkit-ta5", "natkit-aggressive")


def _is_summary(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and {"runs", "median", "min", "max"} <= value.keys()
        and len(value["runs"]) >= 1
        and value["median"] is not None
    )


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_ice_connect_smoke_connects_every_variant_and_reports_ratios() -> None:
    if importlib.util.find_spec("aioice") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("aioice is missing; CI must run the benchmarks", pytrace=False)
        pytest.skip("aioice is not installed (pip install aioice)")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "ice_connect.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["benchmark"] == "ice_connect"
    assert result["smoke"] is True
    runs = result["params"]["runs"]
    for case, pairs, expected_ips in (
        ("1-pair", 1, ("127.0.0.1", "127.0.0.2")),
        ("64-pairs", 64, ("127.0.0.1", "127.0.1.1")),
    ):
        entry = result["loopback"][case]
        assert entry["pairs"] == pairs
        for name in (*VARIANTS, "aioice"):
            assert _is_summary(entry[name]["connect_s"]), (case, name)
            assert len(entry[name]["connect_s"]["runs"]) == runs, (case, name)
            assert entry[name]["checks"]["min"] >= 1, (case, name)
        for name in VARIANTS:
            # Every pair works on loopback: the highest-priority one is selected.
            assert entry[name]["selected"] == [list(expected_ips)], (case, name)
            assert entry["ratio"][f"{name}/aioice"] > 0, (case, name)
            assert _is_summary(entry["ratio_per_round"][f"{name}/aioice"]), (case, name)
    sim = result["sim"]
    assert (sim["nat_a"], sim["nat_b"]) == ("symmetric", "port-restricted-cone")
    for name in (*VARIANTS, "lab_connect"):
        assert _is_summary(sim[name]["connect_virtual_s"]), name
        assert sim[name]["paths"] == ["relay"], name  # RFC 6314 §5.2.2.3: no direct path
    assert sim["lab_connect"]["connected"] is True
    target = result["target"]
    assert set(target["met_by_variant"]) == set(VARIANTS)
    assert isinstance(target["met"], bool)
