"""Headless Chromium as a TURN client: WebRTC data channels through a relay.

The most used TURN client in the world is a browser. This harness starts
Debian's Chromium (``/usr/bin/chromium``) through the Python ``playwright``
package (never ``playwright install``: the browser is the system's), opens
``data/webrtc_relay.html`` and lets its two RTCPeerConnections, both with
``iceTransportPolicy: 'relay'`` and one TURN server, join with a data
channel. Candidates and descriptions are exchanged inside the page, so the
only network path between the two connections is the TURN server: each
side allocates a relay, installs a permission (and usually a channel) for
the other side's relayed address, and ICE, DTLS, SCTP and the messages all
travel client -> server -> relay -> relay -> server -> client on loopback.

:func:`relay_data_channel` waits (bounded) for the channel to open, sends
messages both ways, waits for all of them and reads ``getStats()`` for the
selected candidate pair of each side. :func:`relay_page` gives the same
steps one by one (:class:`RelayPage`), for tests that look at the server
while the connections are up or pace their messages over time. On any failure it raises
:class:`RelayFailed` with everything the page saw (ICE candidate errors
carry the TURN error code and reason phrase, e.g. ``401`` or ``403``),
which is usually enough to say what the server did wrong.

Chromium flags are those of ../shared/PEERS.md: ``--no-sandbox`` (root),
headless, no GPU/QUIC/background networking, no proxy; playwright gives
every launch a fresh profile. ``--ignore-certificate-errors`` lets a
``turns:`` URL reach a server with a test CA's certificate.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .conftest import require_module, require_program

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = [
    "CHROMIUM_ARGS",
    "CandidateStats",
    "IceServer",
    "RelayFailed",
    "RelayPage",
    "RelayResult",
    "SelectedPair",
    "chromium",
    "expected_messages",
    "relay_data_channel",
    "relay_page",
    "require_chromium",
    "turn_url",
]

PAGE = Path(__file__).parent / "data" / "webrtc_relay.html"

CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
)
"""Flags for every launch (playwright adds ``--headless`` and the profile)."""

LAUNCH_TIMEOUT = 20.0
"""Seconds Chromium gets to start (about 1 s here)."""


def require_chromium() -> str:
    """The Chromium executable; skip (fail in CI) if it or playwright is missing."""
    path = require_program("chromium", "chromium")
    require_module("playwright", "playwright")
    return path


@asynccontextmanager
async def chromium(
    *, ignore_certificate_errors: bool = False, extra_args: Sequence[str] = ()
) -> AsyncIterator[Browser]:
    """A headless Chromium for the duration of the block; always closed after.

    Playwright's driver owns the browser process: closing the browser (or the
    driver, if the block raises before that) ends it.
    """
    from playwright.async_api import async_playwright

    executable = require_chromium()
    args = list(CHROMIUM_ARGS)
    if ignore_certificate_errors:
        args.append("--ignore-certificate-errors")
    args.extend(extra_args)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable,
            args=args,
            headless=True,
            timeout=LAUNCH_TIMEOUT * 1000,
        )
        try:
            yield browser
        finally:
            await browser.close()


def turn_url(host: str, port: int, transport: str) -> str:
    """The ICE server URL (RFC 7065) for ``transport`` ``udp``, ``tcp`` or ``tls``."""
    if transport == "udp":
        return f"turn:{host}:{port}?transport=udp"
    if transport == "tcp":
        return f"turn:{host}:{port}?transport=tcp"
    if transport == "tls":
        return f"turns:{host}:{port}?transport=tcp"
    raise ValueError(f"unknown TURN transport {transport!r}")


@dataclass(frozen=True)
class IceServer:
    """One RTCIceServer: a TURN URL and long-term (or REST) credentials."""

    url: str
    username: str
    credential: str

    def as_js(self) -> dict[str, str]:
        return {"urls": self.url, "username": self.username, "credential": self.credential}


@dataclass(frozen=True)
class CandidateStats:
    """The fields of an RTCIceCandidateStats the tests look at."""

    candidate_type: str
    address: str
    port: int
    protocol: str
    relay_protocol: str | None
    url: str | None

    @classmethod
    def from_js(cls, stat: dict[str, Any]) -> CandidateStats:
        return cls(
            candidate_type=str(stat.get("candidateType")),
            address=str(stat.get("address") or stat.get("ip") or ""),
            port=int(stat.get("port") or 0),
            protocol=str(stat.get("protocol")),
            relay_protocol=stat.get("relayProtocol"),
            url=stat.get("url"),
        )


@dataclass(frozen=True)
class SelectedPair:
    """A side's selected candidate pair (RTCIceCandidatePairStats and its ends)."""

    local: CandidateStats
    remote: CandidateStats
    state: str  # "in-progress" while a consent check is out, "succeeded" between
    nominated: bool
    responses_received: int  # answers to this side's connectivity checks
    bytes_sent: int
    bytes_received: int

    @classmethod
    def from_js(cls, side: dict[str, Any]) -> SelectedPair:
        pair = side["pair"]
        return cls(
            local=CandidateStats.from_js(side["local"]),
            remote=CandidateStats.from_js(side["remote"]),
            state=str(pair.get("state")),
            nominated=bool(pair.get("nominated")),
            responses_received=int(pair.get("responsesReceived") or 0),
            bytes_sent=int(pair.get("bytesSent") or 0),
            bytes_received=int(pair.get("bytesReceived") or 0),
        )


@dataclass(frozen=True)
class RelayResult:
    """What one run through the relay produced."""

    pc1: SelectedPair
    pc2: SelectedPair
    received_by_pc1: list[str]
    received_by_pc2: list[str]
    candidates: dict[str, list[str]]
    connect_seconds: float
    transfer_seconds: float
    log: list[str] = field(default_factory=list)


class RelayFailed(AssertionError):
    """The page did not get a data channel through the relay (or lost messages)."""

    def __init__(self, what: str, state: dict[str, Any] | None, console: list[str]) -> None:
        details = json.dumps(state, indent=1, default=str) if state is not None else "(no state)"
        console_text = "\n".join(console[-50:]) or "(empty)"
        super().__init__(f"{what}\npage state: {details}\nconsole:\n{console_text}")
        self.state = state


def expected_messages(sender: str, receiver: str, count: int) -> list[str]:
    """The messages the page sends from ``sender`` to ``receiver``, in order
    (the page's ``message()``: 10 to ~2000 bytes, some beyond one packet)."""
    return [f"{sender}->{receiver} {i} " + "." * (i * 97 % 2000) for i in range(count)]


class RelayPage:
    """The page's two connections, step by step (see :func:`relay_page`)."""

    def __init__(self, page: Page, console: list[str]) -> None:
        self.page = page
        self.console = console
        self.url = ""

    async def state(self) -> dict[str, Any] | None:
        """Everything the page has seen (None if the page is gone)."""
        from playwright.async_api import Error as PlaywrightError

        try:
            value = await self.page.evaluate("natkitRelay.state")
        except PlaywrightError:
            return None
        return value if isinstance(value, dict) else None

    async def fail(self, what: str) -> RelayFailed:
        return RelayFailed(what, await self.state(), self.console)

    async def _wait(self, expression: str, arg: Any, timeout: float, what: str) -> None:
        from playwright.async_api import Error as PlaywrightError

        try:
            await self.page.wait_for_function(
                expression, arg=arg, polling=20, timeout=timeout * 1000
            )
        except PlaywrightError as exc:
            raise await self.fail(f"{what} through {self.url} within {timeout} s ({exc})") from None

    async def connect(self, server: IceServer, *, timeout: float = 20.0) -> None:
        """Start both connections and wait (bounded) for the data channel to open."""
        self.url = server.url
        await self.page.evaluate("server => natkitRelay.start(server)", server.as_js())
        await self._wait(
            "() => ['open', 'failed'].includes(natkitRelay.state.phase)",
            None,
            timeout,
            "no data channel",
        )
        if await self.page.evaluate("natkitRelay.state.phase") != "open":
            raise await self.fail(f"ICE failed through {server.url}")

    async def exchange(
        self, count: int, *, interval: float = 0.0, timeout: float = 20.0
    ) -> tuple[list[str], list[str]]:
        """Send ``count`` messages each way (one pair every ``interval``
        seconds, or all at once) and wait for all of them; returns what pc1
        and pc2 received. ``timeout`` counts from the last message sent."""
        await self.page.evaluate("natkitRelay.resetReceived()")
        await self.page.evaluate(
            "([count, ms]) => natkitRelay.sendPaced(count, ms)", [count, interval * 1000]
        )
        await self._wait(
            "count => natkitRelay.state.received.pc1.length >= count"
            " && natkitRelay.state.received.pc2.length >= count",
            count,
            timeout + count * interval,
            f"not all {count} messages each way arrived",
        )
        received = await self.page.evaluate("natkitRelay.state.received")
        return list(received["pc1"]), list(received["pc2"])

    async def selected_pairs(self) -> tuple[SelectedPair, SelectedPair]:
        """Each side's selected candidate pair, from ``getStats()``."""
        pairs = await self.page.evaluate("natkitRelay.selectedPairs()")
        if pairs.get("pc1") is None or pairs.get("pc2") is None:
            raise await self.fail(f"no selected candidate pair: {pairs}")
        return SelectedPair.from_js(pairs["pc1"]), SelectedPair.from_js(pairs["pc2"])

    async def close(self) -> None:
        """Close both connections (the browser deallocates its relays)."""
        await self.page.evaluate("natkitRelay.close()")


@asynccontextmanager
async def relay_page(browser: Browser) -> AsyncIterator[RelayPage]:
    """The relay page in a fresh browser context, closed after the block."""
    context = await browser.new_context()
    console: list[str] = []
    try:
        page = await context.new_page()
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
        await page.goto(PAGE.as_uri())
        yield RelayPage(page, console)
    finally:
        await context.close()


async def relay_data_channel(
    browser: Browser,
    server: IceServer,
    *,
    messages: int = 100,
    timeout: float = 20.0,
) -> RelayResult:
    """Connect two relay-only RTCPeerConnections through ``server``, send
    ``messages`` each way and return what arrived and the selected pairs.

    Bounded: ``timeout`` seconds for the channel to open and again for the
    messages. Raises :class:`RelayFailed` with the page's state otherwise.
    """
    async with relay_page(browser) as relay:
        started = time.monotonic()
        await relay.connect(server, timeout=timeout)
        opened = time.monotonic()
        received_by_pc1, received_by_pc2 = await relay.exchange(messages, timeout=timeout)
        done = time.monotonic()
        pc1, pc2 = await relay.selected_pairs()
        final = await relay.state()
        await relay.close()
        if final is None:
            raise await relay.fail("the page went away")
        return RelayResult(
            pc1=pc1,
            pc2=pc2,
            received_by_pc1=received_by_pc1,
            received_by_pc2=received_by_pc2,
            candidates={name: list(lines) for name, lines in final["candidates"].items()},
            connect_seconds=opened - started,
            transfer_seconds=done - opened,
            log=list(final["log"]),
        )
