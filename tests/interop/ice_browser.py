"""Headless Chromium's ICE agent as natkit's peer: one RTCPeerConnection in a page.

The page (:data:`PAGE_SCRIPT`, loaded into a blank page) holds one
RTCPeerConnection with a data channel, so that its description has an
``m=application`` section and ICE starts (RFC 8829 / W3C WebRTC). The test
is the signalling channel: it takes the browser's description (ufrag, pwd)
and its trickled candidates, gives natkit's agent to the browser as the
remote description (:func:`natkit_description`, ICE attributes of RFC 8839
§5 and the DTLS attributes every WebRTC description needs) and adds natkit's
candidates with ``addIceCandidate``.

natkit is ICE only. The browser runs DTLS on top (RFC 8842): natkit's
description says ``a=setup:passive`` in an answer (``actpass`` in an offer,
which the browser answers ``active``), so the browser is always the DTLS
client and sends its ClientHello over the selected pair - data from the
browser that natkit's agent receives (RFC 7983: first byte 20-63). Its
fingerprint is a placeholder, so DTLS never completes; ICE is judged by the
page's ``iceConnectionState`` and by ``getStats()``: the transport's
selected candidate pair (:class:`IceStats`), its consent requests and
responses (RFC 7675) and the bytes natkit's datagrams added on it.

Chromium flags are tests/interop/browser.py's. :data:`NO_MDNS_ARGS` turns
off Chromium's mDNS obfuscation of host candidates
(draft-ietf-mmusic-mdns-ice-candidates), which otherwise hides every host
address behind a ``<uuid>.local`` name.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .browser import CandidateStats, IceServer

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

__all__ = [
    "CONNECTED_STATES",
    "NO_MDNS_ARGS",
    "PAGE_SCRIPT",
    "IceFailedInBrowser",
    "IcePage",
    "IceStats",
    "browser_credentials",
    "ice_page",
    "natkit_description",
]

NO_MDNS_ARGS = ("--disable-features=WebRtcHideLocalIpsWithMdns",)
"""Chromium's switch for host candidates with their IP addresses, not ``.local`` names."""

CONNECTED_STATES = ("connected", "completed")
"""RTCIceConnectionState values that mean ICE has a selected pair."""

PLACEHOLDER_FINGERPRINT = ":".join(["4E"] * 32)
"""A well-formed SHA-256 fingerprint (RFC 8122 §5) no certificate has: DTLS cannot finish."""

PAGE_SCRIPT = """
window.natkitIce = (() => {
  const state = {candidates: [], gathered: false, errors: [], log: [], states: []};
  let pc = null;
  const log = (m) => state.log.push(`${(performance.now() / 1000).toFixed(3)} ${m}`);
  function make(config) {
    pc = new RTCPeerConnection(config);
    pc.createDataChannel("natkit");
    pc.onicecandidate = (e) => {
      if (e.candidate && e.candidate.candidate) state.candidates.push(e.candidate.candidate);
      else if (!e.candidate) state.gathered = true;
    };
    pc.onicecandidateerror = (e) =>
      state.errors.push({url: e.url, errorCode: e.errorCode, errorText: e.errorText});
    pc.oniceconnectionstatechange = () => {
      state.states.push(pc.iceConnectionState);
      log(`ice ${pc.iceConnectionState}`);
    };
    pc.onconnectionstatechange = () => log(`connection ${pc.connectionState}`);
  }
  async function offer(config) {
    make(config);
    await pc.setLocalDescription(await pc.createOffer());
    return pc.localDescription.sdp;
  }
  async function answer(config, sdp) {
    make(config);
    await pc.setRemoteDescription({type: "offer", sdp});
    await pc.setLocalDescription(await pc.createAnswer());
    return pc.localDescription.sdp;
  }
  async function setAnswer(sdp) { await pc.setRemoteDescription({type: "answer", sdp}); }
  async function addCandidate(candidate) {
    await pc.addIceCandidate({candidate, sdpMid: "0", sdpMLineIndex: 0});
  }
  async function endOfCandidates() {
    await pc.addIceCandidate({candidate: "", sdpMid: "0", sdpMLineIndex: 0});
  }
  async function selected() {
    const stats = await pc.getStats();
    const byId = {};
    let transport = null;
    stats.forEach((s) => { byId[s.id] = s; if (s.type === "transport") transport = s; });
    if (!transport || !transport.selectedCandidatePairId) return null;
    const pair = byId[transport.selectedCandidatePairId];
    // Counters over every pair: the controlling side may move to a better pair.
    const totals = {requestsReceived: 0, responsesReceived: 0, consentRequestsSent: 0,
                    bytesReceived: 0};
    stats.forEach((s) => {
      if (s.type !== "candidate-pair") return;
      for (const key of Object.keys(totals)) totals[key] += s[key] || 0;
    });
    return {pair, local: byId[pair.localCandidateId], remote: byId[pair.remoteCandidateId],
            totals, iceState: transport.iceState, dtlsState: transport.dtlsState};
  }
  const iceState = () => (pc ? pc.iceConnectionState : "new");
  const close = () => { if (pc) pc.close(); };
  return {state, offer, answer, setAnswer, addCandidate, endOfCandidates, selected,
          iceState, close};
})();
"""


class IceFailedInBrowser(AssertionError):
    """The page did not get where the test waited for; carries what it saw."""

    def __init__(self, what: str, state: dict[str, Any] | None, console: list[str]) -> None:
        details = json.dumps(state, indent=1, default=str) if state is not None else "(none)"
        console_text = "\n".join(console[-50:]) or "(empty)"
        super().__init__(f"{what}\npage state: {details}\nconsole:\n{console_text}")
        self.state = state


@dataclass(frozen=True)
class IceStats:
    """The browser's selected candidate pair (W3C webrtc-stats) and counters
    summed over all of the transport's pairs."""

    local: CandidateStats
    remote: CandidateStats
    state: str
    nominated: bool
    requests_received: int  # natkit's checks (connectivity and consent)
    responses_received: int  # natkit's answers to the browser's checks
    consent_requests_sent: int  # the browser's RFC 7675 consent checks
    bytes_received: int  # non-STUN payload natkit sent
    ice_state: str  # the transport's RTCIceTransportState

    @classmethod
    def from_js(cls, value: dict[str, Any]) -> IceStats:
        pair = value["pair"]
        totals = value["totals"]
        return cls(
            local=CandidateStats.from_js(value["local"]),
            remote=CandidateStats.from_js(value["remote"]),
            state=str(pair.get("state")),
            nominated=bool(pair.get("nominated")),
            requests_received=int(totals["requestsReceived"]),
            responses_received=int(totals["responsesReceived"]),
            consent_requests_sent=int(totals["consentRequestsSent"]),
            bytes_received=int(totals["bytesReceived"]),
            ice_state=str(value.get("iceState")),
        )


def browser_credentials(sdp: str) -> tuple[str, str]:
    """The browser's ``a=ice-ufrag`` and ``a=ice-pwd`` (RFC 8839 §5.4)."""
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.MULTILINE)
    pwd = re.search(r"^a=ice-pwd:(\S+)", sdp, re.MULTILINE)
    if ufrag is None or pwd is None:
        raise AssertionError(f"no ICE credentials in the browser's description:\n{sdp}")
    return ufrag.group(1), pwd.group(1)


def natkit_description(ufrag: str, pwd: str, *, offer: bool) -> str:
    """natkit's side as a WebRTC description: one bundled data channel
    section with natkit's ICE credentials (candidates are trickled).

    ``a=setup`` (RFC 8842 §5.2): ``actpass`` in an offer, ``passive`` in an
    answer, so the browser is the DTLS client either way."""
    lines = [
        "v=0",
        "o=natkit 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{ufrag}",
        f"a=ice-pwd:{pwd}",
        "a=ice-options:trickle",
        f"a=fingerprint:sha-256 {PLACEHOLDER_FINGERPRINT}",
        f"a=setup:{'actpass' if offer else 'passive'}",
        "a=mid:0",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
    ]
    return "\r\n".join(lines) + "\r\n"


class IcePage:
    """The page's RTCPeerConnection, step by step."""

    def __init__(self, page: Page, console: list[str]) -> None:
        self.page = page
        self.console = console

    async def state(self) -> dict[str, Any] | None:
        from playwright.async_api import Error as PlaywrightError

        try:
            value = await self.page.evaluate("natkitIce.state")
        except PlaywrightError:
            return None
        return value if isinstance(value, dict) else None

    async def fail(self, what: str) -> IceFailedInBrowser:
        return IceFailedInBrowser(what, await self.state(), self.console)

    @staticmethod
    def _config(ice_servers: Sequence[IceServer], relay_only: bool) -> dict[str, Any]:
        return {
            "iceServers": [s.as_js() for s in ice_servers],
            "iceTransportPolicy": "relay" if relay_only else "all",
        }

    async def offer(
        self, ice_servers: Sequence[IceServer] = (), *, relay_only: bool = False
    ) -> str:
        """Create the connection and its offer (the browser will be controlling)."""
        sdp = await self.page.evaluate(
            "config => natkitIce.offer(config)", self._config(ice_servers, relay_only)
        )
        return str(sdp)

    async def answer(
        self, offer: str, ice_servers: Sequence[IceServer] = (), *, relay_only: bool = False
    ) -> str:
        """Create the connection from natkit's offer and answer it (controlled)."""
        sdp = await self.page.evaluate(
            "([config, sdp]) => natkitIce.answer(config, sdp)",
            [self._config(ice_servers, relay_only), offer],
        )
        return str(sdp)

    async def set_answer(self, sdp: str) -> None:
        await self.page.evaluate("sdp => natkitIce.setAnswer(sdp)", sdp)

    async def add_candidate(self, line: str) -> None:
        """A remote candidate in WebRTC's form (``candidate:...``, no ``a=``)."""
        await self.page.evaluate("line => natkitIce.addCandidate(line)", line)

    async def end_of_candidates(self) -> None:
        await self.page.evaluate("natkitIce.endOfCandidates()")

    async def _wait(self, expression: str, timeout: float, what: str) -> None:
        from playwright.async_api import Error as PlaywrightError

        try:
            await self.page.wait_for_function(expression, polling=20, timeout=timeout * 1000)
        except PlaywrightError as exc:
            raise await self.fail(f"{what} within {timeout} s ({exc})") from None

    async def gathered(self, timeout: float = 10.0) -> list[str]:
        """Wait (bounded) for end-of-candidates; the browser's candidate lines."""
        await self._wait("natkitIce.state.gathered", timeout, "gathering did not complete")
        state = await self.state()
        assert state is not None
        return [str(line) for line in state["candidates"]]

    async def connected(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for iceConnectionState connected or completed."""
        await self._wait(
            f"{json.dumps(list(CONNECTED_STATES))}.includes(natkitIce.iceState())",
            timeout,
            "ICE did not connect",
        )

    async def ice_state(self) -> str:
        return str(await self.page.evaluate("natkitIce.iceState()"))

    async def stats(self) -> IceStats:
        """The selected candidate pair from ``getStats()``."""
        value = await self.page.evaluate("natkitIce.selected()")
        if not isinstance(value, dict):
            raise await self.fail("no selected candidate pair in getStats()")
        return IceStats.from_js(value)

    async def close(self) -> None:
        await self.page.evaluate("natkitIce.close()")


@asynccontextmanager
async def ice_page(browser: Browser) -> AsyncIterator[IcePage]:
    """A blank page with :data:`PAGE_SCRIPT` in a fresh browser context,
    closed (with its connection) after the block."""
    context = await browser.new_context()
    console: list[str] = []
    try:
        page = await context.new_page()
        page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
        await page.set_content("<!doctype html><title>natkit ICE</title>")
        await page.add_script_tag(content=PAGE_SCRIPT)
        yield IcePage(page, console)
    finally:
        await context.close()


NETNS_HOST_IP = "198.18.77.1"
NETNS_BROWSER_IP = "198.18.77.2"
"""The veth pair of :func:`chromium_in_netns` (RFC 2544 benchmarking space, /30)."""


@asynccontextmanager
async def chromium_in_netns(extra_args: Sequence[str] = ()) -> AsyncIterator[tuple[Browser, str]]:
    """Headless Chromium in a network namespace of its own, joined to this
    one by a veth pair only (this side :data:`NETNS_HOST_IP`, the browser's
    :data:`NETNS_BROWSER_IP`, its default route through this side), so its
    mDNS responder runs on an interface that is not loopback and reaches no
    LAN: what it multicasts ends at the veth's other end. Yields the browser
    and the name of this side's veth interface; everything is removed
    after (needs root, as the namespace lab does)."""
    import os
    import shutil
    import subprocess
    import tempfile

    from playwright.async_api import async_playwright

    from .browser import CHROMIUM_ARGS, LAUNCH_TIMEOUT, require_chromium

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    tag = f"{os.getpid() % 100000}"
    netns, host_if, ns_if = f"nkbr{tag}", f"nkbh{tag}", f"nkbn{tag}"
    workdir = tempfile.mkdtemp(prefix="natkit-chromium-netns-")
    wrapper = os.path.join(workdir, "chromium")
    with open(wrapper, "w") as fh:
        fh.write(f'#!/bin/sh\nexec ip netns exec {netns} {require_chromium()} "$@"\n')
    os.chmod(wrapper, 0o755)
    ip("netns", "add", netns)
    try:
        ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", netns)
        ip("addr", "add", f"{NETNS_HOST_IP}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        inside = ("-n", netns)
        ip(*inside, "addr", "add", f"{NETNS_BROWSER_IP}/30", "dev", ns_if)
        ip(*inside, "link", "set", ns_if, "up")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "route", "add", "default", "via", NETNS_HOST_IP)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=wrapper,
                args=[*CHROMIUM_ARGS, *extra_args],
                headless=True,
                timeout=LAUNCH_TIMEOUT * 1000,
            )
            try:
                yield browser, host_if
            finally:
                await browser.close()
    finally:
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
