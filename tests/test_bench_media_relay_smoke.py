"""The media relay benchmark (bench/media_relay.py) runs end to end in its
--smoke mode and prints the JSON bench/README.md documents.

Not a timed test: no number is judged, only that every relay relayed the
calls' media to the right sockets, that the JSON has its keys, and that
every relay process the script started is gone when it exits. rtpengine is
left out of the smoke run only where it is not installed (scripts/setup.sh
installs it); a missing C compiler is a skip here and a failure in CI.
"""

from __future__ import annotations

import os
import shutil

import pytest

from .bench_smoke import gone, is_summary, run_smoke, skip_or_fail

pytestmark = [pytest.mark.interop, pytest.mark.slow]

SMOKE_TIMEOUT = 90.0


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_media_relay_smoke_relays_every_call_through_every_relay() -> None:
    if shutil.which("cc") is None:
        skip_or_fail("cc not installed (scripts/setup.sh installs it)")
    result = run_smoke("media_relay.py", timeout=SMOKE_TIMEOUT)
    assert result["benchmark"] == "media_relay" and result["smoke"] is True
    have_rtpengine = shutil.which("rtpengine", path="/usr/bin:" + os.environ["PATH"]) is not None
    expected = {"natkit", "plain"} | ({"rtpengine"} if have_rtpengine else set())
    assert set(result["relays"]) == expected
    assert ("rtpengine" in result["skipped"]) is not have_rtpengine
    (calls,) = result["params"]["calls"]
    for name, relay in result["relays"].items():
        step = relay["calls"][str(calls)]
        for key in ("loss", "delivered_pps", "latency_p50_us", "latency_p99_us", "relay_cpu_util"):
            assert is_summary(step[key]), (name, key)
        # too short to judge loss on a busy CI machine; only that it relays, to the right place
        assert step["delivered_pps"]["median"] > 0, name
        assert step["loss"]["median"] < 0.5, name
        assert relay["errors"] == {"misdelivered": 0, "send_errors": 0}, name
        assert is_summary(relay["max_lossless_calls"]), name
        assert is_summary(relay["latency"]["added_p50_us"]), name
        assert gone(relay["pid"]), name
    assert is_summary(result["direct"]["p50_us"])
    assert result["ratio"]["natkit/plain_max_delivered_pps"] > 0
    if have_rtpengine:
        assert result["ratio"]["natkit/rtpengine_max_delivered_pps"] > 0
    assert isinstance(result["target"]["met"], bool)
