"""Prometheus metrics of a running TURN server (prometheus_client).

Counting costs nothing per packet: the core already counts in
:class:`~natkit.turn.server.TurnServerStats`, and :class:`TurnMetrics` is a
custom collector that reads those counters (and the runner's own) when
Prometheus scrapes, instead of incrementing client-library counters on the
relay path. No metric carries a per-username (or per-client) label: label
values are a handful of fixed words, so the series count stays bounded
whatever clients do.

Exposed (all prefixed ``natkit_turn_``):

================================  =======  ===========================================
allocations                        gauge    allocations now
allocations_created_total          counter
allocations_deleted_total          counter  label ``reason`` (expired, kicked, ...)
relayed_packets_total              counter  label ``direction``: to_peer, to_client
relayed_bytes_total                counter  label ``direction``
requests_total                     counter  STUN/TURN requests received
auth_failures_total                counter  credentials that did not verify
rate_limited_total                 counter  unauthenticated requests refused by the limiter
denied_peers_total                 counter  requests or packets for denied peer addresses
quota_rejections_total             counter  Allocates refused by a quota (486)
dropped_total                      counter  malformed or unroutable packets dropped
internal_errors_total              counter  bugs caught at the core's boundary (stays 0)
relay_bind_failures_total          counter  relay sockets that could not be opened
connections                        gauge    client TCP/TLS connections, label ``transport``
connections_rejected_total         counter  connections over ``max_connections``
peer_connections                   gauge    RFC 6062 peer TCP connections
relay_sockets_parked               gauge    released UDP relay sockets kept open for reuse
================================  =======  ===========================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from natkit.turn.events import AllocationDeleted, TurnServerEvent
from natkit.turn.server import TurnServerStats

__all__ = ["CONTENT_TYPE", "RunnerCounters", "TurnMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "natkit_turn_"
_REASONS = ("expired", "refreshed to zero", "kicked", "connection closed", "shutdown")


@dataclass(slots=True)
class RunnerCounters:
    """What the driver counts itself (sockets, connections, deletions by reason)."""

    relay_bind_failures: int = 0
    connections_rejected: int = 0
    deleted_by_reason: dict[str, int] = field(default_factory=dict)

    def observe(self, event: TurnServerEvent) -> None:
        if isinstance(event, AllocationDeleted):
            # A reason the core invents later is counted as "other", never as a new label.
            reason = event.reason if event.reason in _REASONS else "other"
            self.deleted_by_reason[reason] = self.deleted_by_reason.get(reason, 0) + 1


class TurnMetrics(Collector):
    """A collector over ``stats()`` (the core's counters), ``allocations()``
    (how many exist now), ``connections()`` (open client streams per
    transport name), ``peer_connections()`` and the runner's ``counters``.

    Each instance has its own :class:`CollectorRegistry`, so several servers
    in one process (tests, the lab) do not collide in the global one.
    """

    def __init__(
        self,
        stats: Callable[[], TurnServerStats],
        *,
        allocations: Callable[[], int],
        connections: Callable[[], Mapping[str, int]] = dict,
        peer_connections: Callable[[], int] = lambda: 0,
        parked_relays: Callable[[], int] = lambda: 0,
        counters: RunnerCounters | None = None,
    ) -> None:
        self._stats = stats
        self._allocations = allocations
        self._connections = connections
        self._peer_connections = peer_connections
        self._parked_relays = parked_relays
        self.counters = counters if counters is not None else RunnerCounters()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self) -> bytes:
        """The Prometheus text exposition (``Content-Type``: :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        s = self._stats()
        c = self.counters
        yield GaugeMetricFamily(
            PREFIX + "allocations", "TURN allocations now.", value=self._allocations()
        )
        yield _counter("allocations_created", "Allocations created.", s.allocations_created)
        deleted = CounterMetricFamily(
            PREFIX + "allocations_deleted", "Allocations deleted, by reason.", labels=["reason"]
        )
        for reason in (*_REASONS, "other"):
            deleted.add_metric([reason], c.deleted_by_reason.get(reason, 0))
        yield deleted
        packets = CounterMetricFamily(
            PREFIX + "relayed_packets", "Packets relayed.", labels=["direction"]
        )
        packets.add_metric(["to_peer"], s.packets_to_peers)
        packets.add_metric(["to_client"], s.packets_to_clients)
        yield packets
        octets = CounterMetricFamily(
            PREFIX + "relayed_bytes", "Application bytes relayed.", labels=["direction"]
        )
        octets.add_metric(["to_peer"], s.bytes_to_peers)
        octets.add_metric(["to_client"], s.bytes_to_clients)
        yield octets
        yield _counter("requests", "STUN/TURN requests received.", s.requests)
        yield _counter("auth_failures", "Requests whose credentials failed.", s.auth_failures)
        yield _counter(
            "rate_limited", "Unauthenticated requests refused by the limiter.", s.rate_limited
        )
        yield _counter("denied_peers", "Requests or packets for denied peers.", s.denied_peers)
        yield _counter("quota_rejections", "Requests refused by a quota.", s.quota_rejections)
        yield _counter("dropped", "Packets dropped (malformed, unroutable).", s.dropped)
        yield _counter(
            "internal_errors",
            "Bugs caught at the core's boundary (should stay 0).",
            getattr(s, "internal_errors", 0),
        )
        yield _counter(
            "relay_bind_failures", "Relay sockets that could not be bound.", c.relay_bind_failures
        )
        conns = GaugeMetricFamily(
            PREFIX + "connections", "Client TCP/TLS connections now.", labels=["transport"]
        )
        counts = self._connections()
        for name in ("tcp", "tls"):
            conns.add_metric([name], counts.get(name, 0))
        yield conns
        yield _counter(
            "connections_rejected",
            "Client connections refused (max-connections or the per-IP cap reached).",
            c.connections_rejected,
        )
        yield GaugeMetricFamily(
            PREFIX + "peer_connections",
            "RFC 6062 peer TCP connections now.",
            value=self._peer_connections(),
        )
        yield GaugeMetricFamily(
            PREFIX + "relay_sockets_parked",
            "Released UDP relay sockets kept open for the next allocations.",
            value=self._parked_relays(),
        )


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, value=value)
