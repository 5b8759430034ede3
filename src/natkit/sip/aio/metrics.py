"""Prometheus metrics and the admin view of a running SIP element.

Theory of operation
-------------------
:class:`SipCounters` counts messages as they cross the element's transport
layer: requests received by method, responses received and sent by class
(1xx..6xx). :func:`instrument` puts it in place on a
:class:`~natkit.sip.aio.server.SipServer` without changing the element: it
wraps the transport layer's delivery callback and its ``send`` (one
dictionary increment per message; no per-AoR or per-client label, so the
series count is bounded whatever clients send: methods outside RFC 3261's
and its extensions' list count as ``other``).

Registrations live in the store, which is asynchronous while Prometheus'
collectors and the admin endpoint are not: :class:`RegistrationView` keeps a
snapshot of the location service (namespace ``sip/location``), refreshed
every ``interval`` seconds by :meth:`RegistrationView.run` (and on demand by
:meth:`RegistrationView.refresh`), so ``/sessions`` and the gauges show the
cluster's view (a shared Redis store included) as of at most ``interval``
seconds ago.

Exposed (all prefixed ``natkit_sip_``):

===============================  =======  =============================================
registrations                    gauge    live bindings (contacts) in the location service
registered_aors                  gauge    AoRs with at least one binding
requests_total                   counter  requests received, label ``method``
responses_total                  counter  labels ``direction`` (received, sent), ``class``
transactions                     gauge    SIP transactions in the transaction layer now
flows                            gauge    open stream flows, label ``transport``
registrations_refresh_errors_total counter  store reads for the snapshot that failed
===============================  =======  =============================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from natkit.sip.aio.server import SipServer
from natkit.sip.flow import SipTransport
from natkit.sip.location import NAMESPACE
from natkit.sip.message import SipMessage, SipRequest, SipResponse
from natkit.sip.registrar import Binding, BindingChanges
from natkit.store.base import Store, StoreError

__all__ = [
    "CONTENT_TYPE",
    "METHODS",
    "RegistrationView",
    "SipAdmin",
    "SipCounters",
    "SipMetrics",
    "instrument",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "natkit_sip_"
METHODS = (
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "UPDATE",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


@dataclass(slots=True)
class SipCounters:
    """Messages seen by the element's transport layer."""

    requests: dict[str, int] = field(default_factory=dict)  # by method (or "other")
    responses_received: dict[str, int] = field(default_factory=dict)  # by class
    responses_sent: dict[str, int] = field(default_factory=dict)

    def received(self, message: SipMessage) -> None:
        if isinstance(message, SipRequest):
            method = message.method if message.method in METHODS else "other"
            self.requests[method] = self.requests.get(method, 0) + 1
        elif isinstance(message, SipResponse):
            cls = _class_of(message.status)
            self.responses_received[cls] = self.responses_received.get(cls, 0) + 1

    def sent(self, message: SipMessage) -> None:
        if isinstance(message, SipResponse):
            cls = _class_of(message.status)
            self.responses_sent[cls] = self.responses_sent.get(cls, 0) + 1


def _class_of(status: int) -> str:
    return f"{min(max(status // 100, 1), 6)}xx"


def instrument(server: SipServer, counters: SipCounters) -> None:
    """Count what ``server``'s transport layer delivers and sends (call
    before ``start``): the counters observe the layer
    (:meth:`~natkit.sip.aio.transport.SipTransportLayer.add_observer`)."""
    server.transport.add_observer(counters)


@dataclass(frozen=True, slots=True)
class Registration:
    """One binding in the snapshot, as ``/sessions`` lists it."""

    id: int
    aor: str
    binding: Binding

    def to_json(self, now: float) -> dict[str, Any]:
        b = self.binding
        return {
            "id": self.id,
            "aor": self.aor,
            "contact": b.contact,
            "expires_in_s": max(0, round(b.expires - now)),
            "source": b.source,
            "instance": b.instance,
            "reg_id": b.reg_id,
            "path": list(b.path),
            "user_agent": b.user_agent,
        }


class RegistrationView:
    """A snapshot of the registrations in ``store`` (see the module docstring).

    ``max_aors`` bounds what one refresh reads and lists; beyond it the
    gauges count AoRs but ``/sessions`` lists the first ``max_aors``."""

    def __init__(self, store: Store, *, interval: float = 5.0, max_aors: int = 10000) -> None:
        self.store = store
        self.interval = interval
        self.max_aors = max_aors
        self.registrations: list[Registration] = []
        self.aors = 0
        self.bindings = 0
        self.refresh_errors = 0
        self._next_id = 1
        self._ids: dict[tuple[str, str], int] = {}

    async def refresh(self) -> None:
        """Read the location service again (``StoreError``: counted, snapshot kept)."""
        try:
            docs = await self.store.scan(NAMESPACE)
        except StoreError as exc:
            self.refresh_errors += 1
            log.warning("cannot read registrations: %s", exc)
            return
        now = self.store.clock()
        rows: list[Registration] = []
        ids: dict[tuple[str, str], int] = {}
        aors = bindings = 0
        for aor in sorted(docs):
            live = _decode(docs[aor], now)
            if not live:
                continue
            aors += 1
            bindings += len(live)
            if aors > self.max_aors:
                continue
            for binding in live:
                key = (aor, binding.key)
                ident = self._ids.get(key)
                if ident is None:  # an id stays with its binding across refreshes
                    ident = self._next_id
                    self._next_id += 1
                ids[key] = ident
                rows.append(Registration(id=ident, aor=aor, binding=binding))
        self._ids = ids
        self.registrations = rows
        self.aors = aors
        self.bindings = bindings

    async def run(self) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    def sessions(self) -> list[dict[str, Any]]:
        now = self.store.clock()
        return [r.to_json(now) for r in self.registrations]

    def find(self, ident: int) -> Registration | None:
        return next((r for r in self.registrations if r.id == ident), None)

    async def remove(self, registration: Registration) -> None:
        """Delete one binding from the location service (the admin's kick)."""
        key = registration.binding.key

        def compute(current: tuple[Binding, ...]) -> tuple[BindingChanges, None]:
            present = any(b.key == key for b in current)
            return BindingChanges(remove=(key,) if present else ()), None

        await server_location(self.store).update(registration.aor, compute)
        await self.refresh()


def server_location(store: Store) -> Any:
    from natkit.sip.location import LocationService

    return LocationService(store, index_flows=False)


def _decode(doc: dict[str, Any], now: float) -> list[Binding]:
    rows = doc.get("b", [])
    out: list[Binding] = []
    if not isinstance(rows, list):
        return out
    for row in rows:
        try:
            binding = Binding.from_json(row)
        except (TypeError, ValueError, KeyError, AttributeError):
            continue  # a corrupt row is the registrar's to report, not the metrics'
        if binding.expires > now:
            out.append(binding)
    return out


class SipMetrics(Collector):
    """A collector over ``counters``, the registration ``view`` and the
    ``server``'s transaction layer and flows. Each instance has its own
    :class:`CollectorRegistry` (several elements in one process do not
    collide); ``natkit serve`` registers it in its shared one instead."""

    def __init__(self, server: SipServer, counters: SipCounters, view: RegistrationView) -> None:
        self.server = server
        self.counters = counters
        self.view = view
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        c = self.counters
        yield GaugeMetricFamily(
            PREFIX + "registrations", "Live bindings in the location service.",
            value=self.view.bindings,
        )  # fmt: skip
        yield GaugeMetricFamily(
            PREFIX + "registered_aors", "AoRs with a live binding.", value=self.view.aors
        )
        requests = CounterMetricFamily(
            PREFIX + "requests", "SIP requests received, by method.", labels=["method"]
        )
        for method in (*METHODS, "other"):
            requests.add_metric([method], c.requests.get(method, 0))
        yield requests
        responses = CounterMetricFamily(
            PREFIX + "responses",
            "SIP responses received and sent, by class.",
            labels=["direction", "class"],
        )
        for direction, counts in (("received", c.responses_received), ("sent", c.responses_sent)):
            for cls in _CLASSES:
                responses.add_metric([direction, cls], counts.get(cls, 0))
        yield responses
        yield GaugeMetricFamily(
            PREFIX + "transactions",
            "SIP transactions now.",
            value=self.server.layer.transaction_count,
        )
        flows = GaugeMetricFamily(
            PREFIX + "flows", "Open stream flows (TCP, TLS, WS, WSS).", labels=["transport"]
        )
        open_flows: dict[str, int] = {}
        for flow in self.server.transport.flows():
            name = flow.transport.value
            open_flows[name] = open_flows.get(name, 0) + 1
        for transport in SipTransport:
            if transport is not SipTransport.UDP:
                flows.add_metric([transport.value], open_flows.get(transport.value, 0))
        yield flows
        yield CounterMetricFamily(
            PREFIX + "registrations_refresh_errors",
            "Store reads of the registration snapshot that failed.",
            value=self.view.refresh_errors,
        )


class SipAdmin:
    """The :class:`~natkit.net.admin.AdminApp` of ``natkit sip-server``:
    ``/metrics``, ``/healthz``, ``/sessions`` (registrations) and
    ``/sessions/N/kick`` (delete binding N)."""

    def __init__(self, server: SipServer, metrics: SipMetrics, view: RegistrationView) -> None:
        self.server = server
        self.metrics_collector = metrics
        self.view = view
        self.running = False
        self._tasks: set[asyncio.Task[None]] = set()

    def metrics(self) -> tuple[bytes, str]:
        return self.metrics_collector.render(), CONTENT_TYPE

    def sessions(self) -> list[dict[str, Any]]:
        return self.view.sessions()

    def kick(self, session_id: int) -> bool:
        registration = self.view.find(session_id)
        if registration is None:
            return False
        self.view.registrations = [r for r in self.view.registrations if r.id != session_id]
        self._spawn(self.view.remove(registration))
        return True

    def healthy(self) -> bool:
        return self.running

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
