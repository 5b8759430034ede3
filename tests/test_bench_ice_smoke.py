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

import pytest

from .bench_smoke import is_summary, run_smoke, skip_or_fail

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SMOKE_TIMEOUT = 90.0  # seconds; the smoke run takes a few
VARIANTS = ("natkit", "natkit-fast", "natkit-aggressive")


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_ice_connect_smoke_connects_every_variant_and_reports_ratios() -> None:
    if importlib.util.find_spec("aioice") is None:
        skip_or_fail("aioice is not installed (pip install aioice)")
    result = run_smoke("ice_connect.py", timeout=SMOKE_TIMEOUT)
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
            assert is_summary(entry[name]["connect_s"]), (case, name)
            assert len(entry[name]["connect_s"]["runs"]) == runs, (case, name)
            assert entry[name]["checks"]["min"] >= 1, (case, name)
        for name in VARIANTS:
            # Every pair works on loopback: the highest-priority one is selected.
            assert entry[name]["selected"] == [list(expected_ips)], (case, name)
            assert entry["ratio"][f"{name}/aioice"] > 0, (case, name)
            assert is_summary(entry["ratio_per_round"][f"{name}/aioice"]), (case, name)
    sim = result["sim"]
    assert (sim["nat_a"], sim["nat_b"]) == ("symmetric", "port-restricted-cone")
    for name in (*VARIANTS, "lab_connect"):
        assert is_summary(sim[name]["connect_virtual_s"]), name
        assert sim[name]["paths"] == ["relay"], name  # RFC 6314 §5.2.2.3: no direct path
    assert sim["lab_connect"]["connected"] is True
    target = result["target"]
    assert set(target["met_by_variant"]) == set(VARIANTS)
    assert isinstance(target["met"], bool)
