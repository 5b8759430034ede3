"""bench/call_setup.py runs end to end in its --smoke mode and prints the
JSON bench/README.md documents.

Not a timed test: no number is judged, only that every media path set up
its calls with two-way media over the path it names, and that the JSON has
its keys."""

from __future__ import annotations

import pytest

from .bench_smoke import is_summary, run_smoke

pytestmark = [pytest.mark.slow]

SMOKE_TIMEOUT = 60.0


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_call_setup_smoke_sets_up_calls_on_every_media_path() -> None:
    result = run_smoke("call_setup.py", timeout=SMOKE_TIMEOUT)
    assert result["benchmark"] == "call_setup" and result["smoke"]
    paths = result["paths"]
    assert set(paths) == {"stun", "ice", "relay"}
    assert paths["stun"]["media_path"] == ["stun+symmetric-rtp"]
    assert paths["ice"]["media_path"] == ["ice"]
    assert paths["relay"]["nat"] == "symmetric"
    for path in paths.values():
        assert path["calls"] == 2 and path["runs"] == 2
        assert len(path["calls_per_wall_s_runs"]) == 2
        assert is_summary(path["setup_virtual_s"]) and is_summary(path["setup_wall_s"])
        assert 0 < path["setup_virtual_s"]["median"] < 5
        assert path["calls_per_virtual_s"] > 0 and path["calls_per_wall_s"] > 0
