"""SSDP search for Internet Gateway Devices (UPnP Device Architecture 1.1
§1.3, HTTP over UDP), sans-IO.

Theory of operation
-------------------
A control point multicasts ``M-SEARCH * HTTP/1.1`` to 239.255.255.250:1900
with a search target (ST) and a maximum wait (MX, 1 to 5 s); devices answer
by unicast ``HTTP/1.1 200 OK`` carrying the URL of their description in
LOCATION. UDP loses datagrams, so :class:`SsdpSearch` sends each search
``config.sends`` times ``config.interval`` apart and listens until MX + 1 s
after the last send, reporting each device once (:class:`DeviceFound`) and
then :class:`SearchFinished`. Searches may also go by unicast to a known
gateway's port 1900, which miniupnpd answers too.

A response's LOCATION must name the host that sent the response (an IP
literal, over plain http): otherwise any host that can send a datagram to
the searcher could point it at an arbitrary URL. Such responses are
ignored, as are malformed ones.

Its events live here rather than in :mod:`.events`, which is NAT-PMP's and
PCP's: SSDP is a protocol of its own. The codec is bounded: a message of at
most 8 KiB, at most 64 header lines, no line folding; header names are
case-insensitive (§1.3.3).
"""

from __future__ import annotations

import urllib.parse
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from natkit.addr import Datagram, Endpoint, ip_of
from natkit.errors import MalformedMessageError

__all__ = [
    "IGD_SEARCH_TARGETS",
    "MAX_SSDP_SIZE",
    "SSDP_MULTICAST",
    "DeviceFound",
    "SearchFinished",
    "SsdpEvent",
    "SsdpResponse",
    "SsdpSearch",
    "SsdpSearchConfig",
    "build_msearch",
    "location_matches",
    "parse_ssdp_response",
]

SSDP_MULTICAST = Endpoint("239.255.255.250", 1900)
IGD_SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
)
MAX_SSDP_SIZE = 8192
_MAX_HEADERS = 64


def build_msearch(
    st: str, *, mx: int = 2, host: Endpoint = SSDP_MULTICAST, user_agent: str | None = None
) -> bytes:
    """An M-SEARCH request (UDA 1.1 §1.3.2). Raises ``ValueError`` for an
    MX outside 1..5 or a search target that would break the message."""
    if not 1 <= mx <= 5:
        raise ValueError("MX must be 1 to 5 seconds")
    if any(c in st for c in "\r\n") or not st:
        raise ValueError("bad search target")
    lines = [
        "M-SEARCH * HTTP/1.1",
        f"HOST: {host}",
        'MAN: "ssdp:discover"',
        f"MX: {mx}",
        f"ST: {st}",
    ]
    if user_agent:
        lines.append(f"USER-AGENT: {user_agent}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class SsdpResponse:
    """A search response (UDA 1.1 §1.3.3)."""

    location: str
    st: str
    usn: str
    server: str | None = None
    max_age: int | None = None


def _headers(data: bytes) -> tuple[str, dict[str, str]]:
    if len(data) > MAX_SSDP_SIZE:
        raise MalformedMessageError("SSDP message too large", error_code=None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessageError("SSDP message is not UTF-8", error_code=None) from exc
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    if len(lines) - 1 > _MAX_HEADERS:
        raise MalformedMessageError("too many SSDP header lines", error_code=None)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise MalformedMessageError(f"bad SSDP header line {line[:40]!r}", error_code=None)
        headers.setdefault(name.lower(), value.strip())
    return lines[0], headers


def parse_ssdp_response(data: bytes) -> SsdpResponse:
    """Decode a search response; raises :class:`MalformedMessageError`
    (``error_code=None``) for anything else, including NOTIFY and M-SEARCH."""
    start, headers = _headers(data)
    parts = start.split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or parts[1] != "200":
        raise MalformedMessageError(f"not an SSDP search response: {start[:40]!r}", error_code=None)
    location = headers.get("location")
    st = headers.get("st")
    if not location or st is None:
        raise MalformedMessageError("SSDP response without LOCATION or ST", error_code=None)
    max_age: int | None = None
    for directive in headers.get("cache-control", "").split(","):
        name, _, value = directive.strip().partition("=")
        if name.strip().lower() == "max-age" and value.strip().isdigit():
            max_age = int(value.strip()[:9])
    return SsdpResponse(
        location=location,
        st=st,
        usn=headers.get("usn", ""),
        server=headers.get("server"),
        max_age=max_age,
    )


def location_matches(location: str, source: Endpoint) -> bool:
    """Whether ``location`` is an http URL on ``source``'s IP (see the module docstring)."""
    try:
        url = urllib.parse.urlsplit(location)
        host = url.hostname
        return url.scheme == "http" and host is not None and ip_of(host) == ip_of(source.host)
    except ValueError:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFound:
    """A device answered the search; ``source`` is where the answer came from."""

    response: SsdpResponse
    source: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchFinished:
    """The search window closed; ``found`` devices were reported."""

    found: int


SsdpEvent = DeviceFound | SearchFinished


@dataclass(frozen=True, slots=True)
class SsdpSearchConfig:
    """``mx`` is the devices' maximum answer delay (UDA §1.3.2: 1-5 s);
    each search target goes out ``sends`` times, ``interval`` apart, and
    answers are awaited for ``window`` seconds after the last send
    (default MX + 1: a device may wait up to MX before answering)."""

    search_targets: tuple[str, ...] = IGD_SEARCH_TARGETS
    mx: int = 2
    sends: int = 2
    interval: float = 1.0
    user_agent: str | None = "natkit UPnP/1.1"
    max_devices: int = 32
    window: float | None = None


class SsdpSearch:
    """One search for IGDs, to each of ``destinations`` (the multicast
    group and/or a gateway's unicast address)."""

    def __init__(
        self, destinations: Sequence[Endpoint], config: SsdpSearchConfig | None = None
    ) -> None:
        self.config = config or SsdpSearchConfig()
        self.destinations = tuple(destinations)
        self._out: list[Datagram] = []
        self._events: deque[SsdpEvent] = deque()
        self._seen: set[tuple[str, str]] = set()
        self._sends = 0
        self._next_send: float | None = None
        self._end: float | None = None
        self.finished = False

    def start(self, *, now: float) -> None:
        """Send the first round of searches (queued)."""
        if self._sends == 0 and not self.finished:
            self._send_round(now)

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        del now
        if self.finished or self._sends == 0:
            return
        try:
            response = parse_ssdp_response(data)
        except MalformedMessageError:
            return
        if not location_matches(response.location, addr):
            return
        key = (response.location, response.st)
        if key in self._seen or len(self._seen) >= self.config.max_devices:
            return
        self._seen.add(key)
        self._events.append(DeviceFound(response=response, source=addr))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        if self.finished:
            return None
        return self._next_send if self._next_send is not None else self._end

    def handle_timer(self, *, now: float) -> None:
        if self.finished:
            return
        if self._next_send is not None and now >= self._next_send:
            self._send_round(now)
        elif self._end is not None and now >= self._end:
            self.finished = True
            self._events.append(SearchFinished(found=len(self._seen)))

    def next_event(self) -> SsdpEvent | None:
        return self._events.popleft() if self._events else None

    def _send_round(self, now: float) -> None:
        cfg = self.config
        for st in cfg.search_targets:
            for dest in self.destinations:
                msg = build_msearch(st, mx=cfg.mx, host=dest, user_agent=cfg.user_agent)
                self._out.append(Datagram(msg, dest))
        self._sends += 1
        if self._sends < cfg.sends:
            self._next_send = now + cfg.interval
        else:
            self._next_send = None
            self._end = now + (cfg.mx + 1 if cfg.window is None else cfg.window)
