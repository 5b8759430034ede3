"""Released relay ports: handed out again oldest first after their
quarantine, never within it while other ports are free (sans-IO, explicit
time)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.turn.released_ports import ReleasedPorts
from tests.turn.server_helpers import Client, code_of, make_server, relayed

IP = "192.0.2.1"


def test_the_oldest_port_past_its_quarantine_comes_back_first() -> None:
    ports = ReleasedPorts(capacity=8, quarantine=1.0)
    ports.add(IP, 5000, now=0.0)
    ports.add(IP, 5001, now=0.5)
    assert ports.take(IP, set(), now=0.9) is None  # still resting
    assert ports.cooling(IP, 5000, now=0.9) and not ports.cooling(IP, 5000, now=1.0)
    assert ports.take(IP, set(), now=1.2) == 5000
    assert ports.take(IP, set(), now=1.2) is None  # 5001 rests until 1.5
    assert ports.take(IP, {5001}, now=2.0) is None  # claimed meanwhile: skipped, forgotten
    assert len(ports) == 0


def test_a_full_table_keeps_the_oldest_and_zero_remembers_nothing() -> None:
    ports = ReleasedPorts(capacity=2, quarantine=0.0)
    for port in (1, 2, 3):
        ports.add(IP, port, now=0.0)  # 3: the table is full, it is not remembered
    ports.add(IP, 1, now=0.0)  # released again: now the newest
    assert [ports.take(IP, set(), now=0.0) for _ in range(3)] == [2, 1, None]
    off = ReleasedPorts(capacity=0, quarantine=5.0)
    off.add(IP, 1, now=0.0)
    assert len(off) == 0 and not off.cooling(IP, 1, now=0.0)
    with pytest.raises(ValueError):
        ReleasedPorts(capacity=-1, quarantine=0.0)


def test_a_churn_above_capacity_per_quarantine_still_reuses_ports() -> None:
    # 1,000 releases a second for 10 s against room for 100: had the table
    # forgotten its oldest, no port would ever outlast its 1 s quarantine.
    ports = ReleasedPorts(capacity=100, quarantine=1.0)
    taken = 0
    for i in range(10_000):
        now = i / 1000
        ports.add(IP, 10_000 + i, now)
        taken += ports.take(IP, set(), now) is not None
    assert taken >= 800  # about capacity / quarantine per second, from the second on


@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 40), st.floats(0, 3)), min_size=1, max_size=60)
)
def test_a_taken_port_always_rested_and_was_never_in_use(
    steps: list[tuple[bool, int, float]],
) -> None:
    ports = ReleasedPorts(capacity=16, quarantine=1.0)
    released_at: dict[int, float] = {}
    used: set[int] = set()
    now = 0.0
    for release, port, dt in steps:
        now += dt
        if release:
            used.discard(port)
            ports.add(IP, port, now)
            released_at[port] = now
        else:
            got = ports.take(IP, used, now)
            if got is not None:
                assert got not in used and now - released_at[got] >= 1.0
                used.add(got)
    assert len(ports) <= 16


def test_the_server_reuses_a_released_port_only_after_its_quarantine() -> None:
    _, driver = make_server(relay_port_quarantine=1.0)
    first = Client(driver, client=Endpoint("198.51.100.1", 40000))
    (relay,) = relayed(first.allocate(now=0.0))
    assert code_of(first.refresh(0, now=1.0)) == 0
    soon = Client(driver, client=Endpoint("198.51.100.2", 40000))
    assert relayed(soon.allocate(now=1.5)) != [relay]
    later = Client(driver, client=Endpoint("198.51.100.3", 40000))
    assert relayed(later.allocate(now=2.0)) == [relay]


def test_a_full_range_hands_out_a_resting_port_rather_than_508() -> None:
    _, driver = make_server(min_port=61000, max_port=61001, relay_port_quarantine=60.0)
    a, b = (Client(driver, client=Endpoint("198.51.100.1", p)) for p in (40000, 40001))
    assert code_of(a.allocate(now=0.0)) == 0 and code_of(b.allocate(now=0.0)) == 0
    assert code_of(a.refresh(0, now=1.0)) == 0
    c = Client(driver, client=Endpoint("198.51.100.2", 40000))
    assert code_of(c.allocate(now=1.0)) == 0  # the only free port is still resting
