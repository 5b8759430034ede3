"""The SIP INVITE benchmark (bench/sip_invite.py) runs end to end in its
--smoke mode: sipp UAC -> proxy -> sipp UAS calls through Kamailio and
``natkit sip-server``, and prints the JSON bench/README.md documents.

Not a timed test: no number is judged, only that every call of both sipps
succeeded through both proxies, that the JSON has its keys and the ratios,
and that every server and UAS the script started is gone when it exits. A
missing Kamailio or sipp is a skip here and a failure in CI (``CI=true``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.test_bench_sip_smoke import BENCH, SMOKE_TIMEOUT, _gone, _is_summary, _require

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
def test_sip_invite_smoke_calls_through_both_proxies() -> None:
    _require("kamailio", "sipp")
    proc = subprocess.run(
        [sys.executable, str(BENCH / "sip_invite.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["benchmark"] == "sip_invite"
    assert result["smoke"] is True
    assert set(result["servers"]) == {"kamailio", "natkit"}
    calls = result["params"]["calls"]
    for name, server in result["servers"].items():
        assert _is_summary(server["rate"]), name
        assert _is_summary(server["calls_per_server_cpu_s"]), name
        assert server["rate"]["median"] > 0, name
        # uas_failed is not judged: a message arriving after its call ended
        # (an ACK swapped behind the BYE) can make a "call" there that fails
        assert server["failed"] == 0, (name, server["runs"])
        for run in server["runs"]:
            # the UAC's call ends with the UAS's 200 to the BYE: every one
            # went through; the UAS's own count is informative only
            assert run["successful"] == calls and run["uas_successful"] > 0, (name, run)
            assert _gone(run["uas_pid"]), name
        assert server["pids"] and all(_gone(pid) for pid in server["pids"]), name
    assert result["ratio"]["natkit/kamailio_rate"] > 0
    assert result["ratio"]["natkit/kamailio_per_cpu_s"] > 0
    assert "cpus" in result["machine"]
