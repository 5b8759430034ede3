"""What ``natkit serve`` shows: one Prometheus registry for every server, the
status document and its HTML page, on one admin endpoint.

Theory of operation
-------------------
:class:`ServeMetrics` is one :class:`CollectorRegistry` holding the TURN
server's collector (:class:`~natkit.turn.aio.metrics.TurnMetrics`), the SIP
element's (:class:`~natkit.sip.aio.metrics.SipMetrics`), and two of its own:
the STUN server's counters (``natkit_stun_*``) and the media relay's
(``natkit_media_relay_*``, from :class:`~natkit.serve.media.RelayMediaHandler`),
plus ``natkit_serve_uptime_seconds``. Every collector reads counters that
already exist when Prometheus scrapes; nothing is counted twice.

:class:`ServeAdminServer` is the :class:`~natkit.net.admin.AdminServer`
(``/healthz``, ``/metrics``, ``/sessions``: TURN allocations and SIP
registrations, ``/sessions/N/kick`` for an allocation) with two more paths:
``/status.json`` and ``/`` (the same status as a small HTML page that
reloads itself every 10 s). Both sit behind the same token and Host-header
defences as the others.
"""

from __future__ import annotations

import hmac
import html
import json
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from natkit.net.admin import AdminServer, _host_ok

if TYPE_CHECKING:
    from natkit.serve.media import RelayMediaHandler
    from natkit.stun.server import StunServer

__all__ = [
    "CONTENT_TYPE",
    "MediaRelayMetrics",
    "ServeAdminServer",
    "ServeMetrics",
    "StunMetrics",
    "render_status_html",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST


class StunMetrics(Collector):
    """``natkit_stun_*``: the STUN servers' counters (summed over their sockets)."""

    def __init__(self, cores: Callable[[], list[StunServer]]) -> None:
        self._cores = cores

    def collect(self) -> Iterator[CounterMetricFamily]:
        cores = self._cores()
        for name, doc in (
            ("requests", "STUN requests received."),
            ("responses", "STUN responses sent."),
            ("error_responses", "STUN error responses sent."),
            ("dropped", "Packets dropped (malformed, indications, stray responses)."),
            ("rate_limited", "Requests refused by the error-response limiter."),
        ):
            total = sum(getattr(core.stats, name) for core in cores)
            yield CounterMetricFamily(f"natkit_stun_{name}", doc, value=total)


class MediaRelayMetrics(Collector):
    """``natkit_media_relay_*``: calls through the relay and media paths chosen."""

    def __init__(self, handler: Callable[[], RelayMediaHandler | None]) -> None:
        self._handler = handler

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        h = self._handler()
        if h is None:
            return
        yield GaugeMetricFamily(
            "natkit_media_relay_calls", "Calls relayed now.", value=h.relay.call_count
        )
        paths = CounterMetricFamily(
            "natkit_media_relay_call_paths",
            "Calls by the media path chosen for them.",
            labels=["path"],
        )
        for path, count in sorted(h.paths_chosen.items()):
            paths.add_metric([path], count)
        yield paths
        ended = CounterMetricFamily(
            "natkit_media_relay_calls_ended", "Relayed calls ended, by reason.", labels=["reason"]
        )
        for reason, count in sorted(h.ended_by_reason.items()):
            ended.add_metric([reason], count)
        yield ended
        packets, octets, foreign = h.relayed_totals()
        yield CounterMetricFamily(
            "natkit_media_relay_packets", "Packets relayed (both directions).", value=packets
        )
        yield CounterMetricFamily(
            "natkit_media_relay_bytes", "Bytes relayed (both directions).", value=octets
        )
        yield CounterMetricFamily(
            "natkit_media_relay_dropped_foreign",
            "Packets from a source other than the latched one (RTP bleed), dropped.",
            value=foreign,
        )
        yield CounterMetricFamily(
            "natkit_media_relay_allocation_failures",
            "Calls the relay could not take (ports, limits): their SDP went unchanged.",
            value=h.allocation_failures,
        )


class ServeMetrics:
    """One registry for the process (``render`` is ``/metrics``)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Uptime(started))

    def add(self, collector: Collector) -> None:
        self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Uptime(Collector):
    def __init__(self, started: float) -> None:
        self.started = started

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "natkit_serve_uptime_seconds",
            "Seconds since natkit serve started.",
            value=time.monotonic() - self.started,
        )


class ServeAdminServer(AdminServer):
    """The admin endpoint plus ``/`` (HTML) and ``/status.json``."""

    def __init__(self, *args: Any, status: Callable[[], dict[str, Any]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.status = status

    def route(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        if path not in ("/", "/status.json"):
            return super().route(method, path, headers)
        text = "text/plain; charset=utf-8"
        if not _host_ok(headers.get("host", "")):
            return 421, b"Host must be an IP address or localhost\n", text, ()
        if method not in ("GET", "HEAD"):
            return 405, b"method not allowed\n", text, (("Allow", "GET, HEAD"),)
        if self.token is not None:  # the same check as the base class's paths
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, b"token required\n", text, (("WWW-Authenticate", "Bearer"),)
        doc = self.status()
        if path == "/status.json":
            body = (json.dumps(doc, indent=1) + "\n").encode()
            return 200, body, "application/json", ()
        return 200, render_status_html(doc).encode(), "text/html; charset=utf-8", ()


def _cell(value: Any) -> str:
    return html.escape("-" if value is None or value == "" else str(value))


def _table(title: str, columns: list[str], rows: list[list[Any]], empty: str) -> str:
    out = [f"<h2>{html.escape(title)}</h2>"]
    if not rows:
        out.append(f"<p class=empty>{html.escape(empty)}</p>")
        return "\n".join(out)
    out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    head = f"{days}d " if days else ""
    return f"{head}{hours:02d}:{minutes:02d}:{s:02d}"


def render_status_html(doc: dict[str, Any]) -> str:
    """The status page: what listens where, registrations, allocations, calls."""
    services = [[s["service"], s["transport"], s["endpoint"]] for s in doc.get("listening", [])]
    regs = [
        [r.get("aor"), r.get("contact"), r.get("source"), r.get("expires_in_s")]
        for r in doc.get("registrations", [])
    ]
    allocs = [
        [a.get("id"), a.get("username"), a.get("client"), " ".join(a.get("relays", []))]
        for a in doc.get("allocations", [])
    ]
    calls = [
        [c.get("call_id"), c.get("caller"), c.get("callee"), c.get("path"), c.get("reason"),
         c.get("state"), c.get("packets")]
        for c in doc.get("calls", [])
    ]  # fmt: skip
    counts = doc.get("counts", {})
    summary = ", ".join(f"{html.escape(str(k))}: {html.escape(str(v))}" for k, v in counts.items())
    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        '<meta http-equiv="refresh" content="10">',
        "<title>natkit serve</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin-bottom:1em}",
        "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em}",
        "th{background:#f0f0f0}.empty{color:#888}",
        "</style></head><body>",
        f"<h1>natkit serve {html.escape(str(doc.get('version', '')))}</h1>",
        f"<p>up {_duration(float(doc.get('uptime_s', 0)))} &middot; {summary}</p>",
        _table("Listening", ["service", "transport", "endpoint"], services, "nothing"),
        _table(
            "SIP registrations",
            ["AoR", "contact", "from", "expires in (s)"],
            regs,
            "no registrations",
        ),
        _table("TURN allocations", ["id", "user", "client", "relays"], allocs, "no allocations"),
        _table(
            "Calls (most recent first)",
            ["Call-ID", "caller", "callee", "media path", "why", "state", "relayed packets"],
            calls,
            "no calls yet",
        ),
        "<p><a href=/status.json>status.json</a> &middot; <a href=/metrics>metrics</a></p>",
        "</body></html>",
    ]
    return "\n".join(parts)
