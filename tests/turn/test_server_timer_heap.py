"""The timer heap drops its stale entries (deleted allocations, answered
pending Allocates) instead of keeping them, and their records, until their
deadlines; live timers still fire."""

from __future__ import annotations

from natkit.addr import Endpoint
from tests.turn.server_helpers import Client, code_of, make_server


def test_allocations_deleted_by_refresh_zero_leave_a_bounded_timer_heap() -> None:
    server, driver = make_server()
    for i in range(2500):
        client = Client(driver, client=Endpoint(f"198.51.{100 + i // 250}.{i % 250 + 1}", 40000))
        assert code_of(client.allocate(now=1.0)) == 0
        assert code_of(client.refresh(0, now=1.0)) == 0
    assert server.table_sizes()["allocations"] == 0
    # Without compaction: two entries per cycle (the pending Allocate, the allocation).
    assert server.table_sizes()["timers"] <= 4097


def test_a_live_allocation_still_expires_after_the_heap_was_compacted() -> None:
    server, driver = make_server()
    keeper = Client(driver, client=Endpoint("198.51.99.1", 40000))
    assert code_of(keeper.allocate(now=0.0)) == 0
    for i in range(2500):  # enough cycles to compact the heap at least once
        client = Client(driver, client=Endpoint(f"198.51.{100 + i // 250}.{i % 250 + 1}", 40000))
        assert code_of(client.allocate(now=1.0)) == 0
        assert code_of(client.refresh(0, now=1.0)) == 0
    assert server.table_sizes()["allocations"] == 1
    driver.advance(599.0)
    assert server.table_sizes()["allocations"] == 1
    driver.advance(600.0)  # the keeper's default lifetime, from now=0
    assert server.table_sizes()["allocations"] == 0
