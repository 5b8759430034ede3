"""Prometheus metrics read from the core's counters at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from natkit.addr import Endpoint, Transport
from natkit.turn.aio.metrics import RunnerCounters, TurnMetrics
from natkit.turn.events import AllocationDeleted, FiveTuple
from natkit.turn.server import TurnServerStats


def _scrape(metrics: TurnMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _deleted(reason: str) -> AllocationDeleted:
    ft = FiveTuple(Endpoint("192.0.2.1", 1), Endpoint("192.0.2.2", 3478), Transport.UDP)
    return AllocationDeleted(allocation_id=1, five_tuple=ft, username="alice", reason=reason)


def test_counters_come_from_the_core_stats_when_scraped() -> None:
    stats = TurnServerStats()
    metrics = TurnMetrics(lambda: stats, allocations=lambda: 3, connections=lambda: {"tls": 2})
    stats.packets_to_peers, stats.bytes_to_clients, stats.auth_failures = 10, 1200, 4
    samples = _scrape(metrics)
    assert samples[("natkit_turn_allocations", ())] == 3
    assert samples[("natkit_turn_relayed_packets_total", (("direction", "to_peer"),))] == 10
    assert samples[("natkit_turn_relayed_bytes_total", (("direction", "to_client"),))] == 1200
    assert samples[("natkit_turn_auth_failures_total", ())] == 4
    assert samples[("natkit_turn_connections", (("transport", "tls"),))] == 2
    stats.packets_to_peers = 11  # no registration step: the next scrape sees it
    assert (
        _scrape(metrics)[("natkit_turn_relayed_packets_total", (("direction", "to_peer"),))] == 11
    )


def test_deletions_are_counted_by_a_bounded_set_of_reasons() -> None:
    counters = RunnerCounters()
    metrics = TurnMetrics(TurnServerStats, allocations=lambda: 0, counters=counters)
    for reason in ("expired", "expired", "kicked", "something new"):
        counters.observe(_deleted(reason))
    samples = _scrape(metrics)
    name = "natkit_turn_allocations_deleted_total"
    assert samples[(name, (("reason", "expired"),))] == 2
    assert samples[(name, (("reason", "kicked"),))] == 1
    assert samples[(name, (("reason", "other"),))] == 1
    assert (name, (("reason", "something new"),)) not in samples


def test_no_metric_carries_a_username_label() -> None:
    metrics = TurnMetrics(TurnServerStats, allocations=lambda: 1)
    labels = {key for (_, pairs) in _scrape(metrics) for key, _ in pairs}
    assert labels == {"reason", "direction", "transport"}


def test_two_servers_in_one_process_do_not_collide() -> None:
    a = TurnMetrics(TurnServerStats, allocations=lambda: 1)
    b = TurnMetrics(TurnServerStats, allocations=lambda: 2)
    assert _scrape(a)[("natkit_turn_allocations", ())] == 1
    assert _scrape(b)[("natkit_turn_allocations", ())] == 2
