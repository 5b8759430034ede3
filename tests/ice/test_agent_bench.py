"""Checks and virtual time to connected, 1 pair and 8x8 = 64 host pairs.

Printed (``pytest -s``) for the report; the asserted bounds are loose
regressions guards, the benchmark proper lives in bench/.
"""

from __future__ import annotations

import time

import pytest

from natkit.ice.agent import IceAgent
from natkit.ice.events import ChecksCompleted
from tests.ice.test_agent_harness import Net, config, exchange, host


def connect(n: int, seed: int, ta: float) -> tuple[float, int, float]:
    net = Net(delay=0.0005)  # loopback-like
    a = net.add(IceAgent(config(seed, ta=ta), controlling=True))
    b = net.add(IceAgent(config(seed + 1, ta=ta), controlling=False))
    a.add_stream()
    b.add_stream()
    a_c = [host(f"192.0.2.{1 + i}", 5000, pref=65535 - i) for i in range(n)]
    b_c = [host(f"198.51.100.{1 + i}", 6000, pref=65535 - i) for i in range(n)]
    start = time.perf_counter()
    exchange(net, a, b, a_c, b_c)
    t = net.run(10.0, lambda: bool(net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)))
    wall = time.perf_counter() - start
    assert net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)
    return t, a.checks_sent + b.checks_sent, wall


@pytest.mark.parametrize("n", [pytest.param(1, id="1-pair"), pytest.param(8, id="64-pairs")])
@pytest.mark.parametrize("ta", [pytest.param(0.05, id="ta50ms"), pytest.param(0.005, id="ta5ms")])
def test_time_and_checks_to_connected(n: int, ta: float) -> None:
    # Regular nomination costs one Ta: check, triggered check, then the
    # USE-CANDIDATE check at the next pacing slot (§14.2 allows Ta down to 5 ms).
    t, checks, wall = connect(n, 50, ta)
    print(
        f"\n{n * n} pairs, Ta {ta * 1000:g} ms: connected at {t * 1000:.1f} ms virtual, "
        f"{checks} checks, {wall * 1000:.2f} ms wall"
    )
    assert t < ta + 0.01
    assert checks <= 6
