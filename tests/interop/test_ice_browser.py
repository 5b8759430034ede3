"""natkit's ICE agent against a real browser's: headless Chromium (libwebrtc).

One RTCPeerConnection in a page (tests/interop/ice_browser.py) and one
:class:`~natkit.ice.aio.agent.AsyncIceAgent` on the OS stack, signalled by
the test: the browser's ufrag/pwd from its description, natkit's in a
description the browser accepts, candidates both ways in their WebRTC
string form (natkit's :func:`~natkit.ice.sdp.serialize_candidate` to
``addIceCandidate``, the browser's trickled strings into
:func:`~natkit.ice.sdp.parse_candidate`). In each case:

- ICE reaches a selected pair on both sides (RFC 8445): the page's
  ``iceConnectionState`` is connected/completed and ``getStats()`` has a
  nominated, succeeded pair whose remote end is natkit's candidate; natkit
  reports ChecksCompleted with the browser's address as the remote end;
- data flows both ways over the pair: the browser's DTLS ClientHello
  (RFC 7983: first byte 22) reaches natkit as application data, and
  natkit's datagrams show up in the browser's ``bytesReceived``;
- consent keeps the pair (RFC 7675) for :data:`HOLD` seconds: the browser's
  consent checks get natkit's answers, natkit's consent checks get the
  browser's, nobody loses consent and the state never leaves connected.

Roles: the offerer is controlling (RFC 8445 §6.1.1, both full agents), so
the browser offering tests natkit controlled, natkit offering tests natkit
controlling.

Host candidates and mDNS: Chromium hides host addresses behind
``<uuid>.local`` names (draft-ietf-mmusic-mdns-ice-candidates) and runs its
mDNS responder only on non-loopback interfaces, answering queries there by
multicast with ID 0 even for a one-shot query with the QU bit (RFC 6762
§5.4, §6.7). Tests never send to a real LAN, so the cases with hiding on
run Chromium in a network namespace of its own, joined to this one by a
veth pair only (:func:`~tests.interop.ice_browser.chromium_in_netns`):
natkit's :class:`~natkit.ice.aio.mdns.AsyncMdnsResolver` asks on the veth
and listens on 224.0.0.251:5353 joined there, and the name resolves to a
host candidate; without resolving, the names are dropped (draft §3.2) and
ICE still connects because natkit learns the browser's address as a
peer-reflexive candidate from the browser's checks (RFC 8445 §7.3.1.3).
The other host cases run Chromium with mDNS obfuscation off
(:data:`~tests.interop.ice_browser.NO_MDNS_ARGS`); loopback_resolver()
confines any query natkit makes for them to lo.

Relay only: ``iceTransportPolicy: 'relay'`` with natkit's TURN server
(RFC 8656, reached over UDP or TCP) on 127.0.0.1: the browser's only
candidate is relayed, every check and datagram between it and natkit's
loopback host candidate travels through a natkit allocation.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from natkit.addr import Endpoint, Transport
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.aio.mdns import AsyncMdnsResolver
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.events import ConsentLost, IceFailed, SelectedPairChanged
from natkit.ice.gather_config import GatherConfig
from natkit.ice.mdns import MdnsResolverConfig
from natkit.ice.sdp import parse_candidate, serialize_candidate
from natkit.net.os_stack import OsStack
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

from .browser import IceServer, chromium, turn_url
from .conftest import LOOPBACK
from .ice_browser import (
    CONNECTED_STATES,
    NETNS_BROWSER_IP,
    NETNS_HOST_IP,
    NO_MDNS_ARGS,
    IcePage,
    IceStats,
    browser_credentials,
    chromium_in_netns,
    ice_page,
    natkit_description,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

CONNECT_TIMEOUT = 15.0
HOLD = 10.0
"""Seconds the connection must stay up on consent alone (the browser checks
consent about every 5 s here, RFC 7675 §5.1 allows 4-6 s)."""
TICK = 0.5
REALM = "example.org"
TURN_USER = ("browser", "browser-secret")
MIN_PORT, MAX_PORT = 61000, 65535
DTLS_HANDSHAKE = 22  # RFC 6347 ContentType handshake; RFC 7983 §7: 20-63 is DTLS
PROBE = b"\x80natkit probe " + b"." * 100  # RTP-like first byte (RFC 7983)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Chromium with host candidates as IP addresses (mDNS obfuscation off)."""
    async with chromium(extra_args=NO_MDNS_ARGS) as launched:
        yield launched


@dataclass
class Session:
    """One natkit agent and the page it is connected to."""

    agent: AsyncIceAgent
    page: IcePage
    natkit_candidates: list[Candidate]
    browser_lines: list[str]
    resolved: dict[str, str | None] = field(default_factory=dict)
    received: list[bytes] = field(default_factory=list)


async def remote_candidates(
    lines: list[str], resolver: AsyncMdnsResolver | None = None, *, resolve_mdns: bool = True
) -> tuple[list[Candidate], dict[str, str | None]]:
    """The browser's candidate strings as natkit candidates; ``.local`` names
    go through natkit's mDNS resolver (``resolver``, else one opened now
    with no group listener) and are dropped when unresolved."""
    out: list[Candidate] = []
    resolved: dict[str, str | None] = {}
    own: AsyncMdnsResolver | None = None
    try:
        for text in lines:
            line = parse_candidate(text)
            if line.is_mdns and not resolve_mdns:
                resolved[line.address] = cand = None  # no resolver: dropped (draft §3.2)
            elif line.is_mdns:
                if resolver is None:
                    resolver = own = loopback_resolver()
                    await resolver.open()
                cand = await resolver.resolve_candidate(line)
                resolved[line.address] = None if cand is None else cand.address.host
            else:
                cand = line.to_candidate()
            if cand is not None:
                out.append(cand)
    finally:
        if own is not None:
            own.close()
    return out, resolved


def loopback_resolver() -> AsyncMdnsResolver:
    """natkit's resolver with its query socket and group join on lo only:
    nothing natkit sends reaches a real LAN."""
    return AsyncMdnsResolver(
        OsStack(), MdnsResolverConfig(timeout=1.0, retransmit=0.5), interface=LOOPBACK
    )


async def start_session(
    page: IcePage,
    *,
    natkit_controlling: bool,
    gather: GatherConfig,
    ice_servers: tuple[IceServer, ...] = (),
    relay_only: bool = False,
    resolver: AsyncMdnsResolver | None = None,
    resolve_mdns: bool = True,
) -> Session:
    received: list[bytes] = []
    agent = AsyncIceAgent(
        OsStack(),
        controlling=natkit_controlling,
        gather_config=gather,
        on_data=lambda _component, data: received.append(data),
    )
    await agent.start()
    ours = [c async for c in agent.local_candidates()]
    creds = agent.local_credentials
    if natkit_controlling:
        offer = natkit_description(creds.ufrag, creds.pwd, offer=True)
        sdp = await page.answer(offer, ice_servers, relay_only=relay_only)
    else:
        sdp = await page.offer(ice_servers, relay_only=relay_only)
        await page.set_answer(natkit_description(creds.ufrag, creds.pwd, offer=False))
    agent.set_remote_credentials(*browser_credentials(sdp))
    for cand in ours:
        await page.add_candidate(serialize_candidate(cand, prefix=False))
    await page.end_of_candidates()
    lines = await page.gathered(CONNECT_TIMEOUT)
    theirs, resolved = await remote_candidates(lines, resolver, resolve_mdns=resolve_mdns)
    for cand in theirs:
        agent.add_remote_candidate(cand)
    agent.end_of_remote_candidates()
    return Session(agent, page, ours, lines, resolved, received)


async def wait_connected(session: Session) -> IceStats:
    """Both sides connected (bounded); the browser's selected pair."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await session.agent.connect()
    except TimeoutError:
        raise await session.page.fail(
            f"natkit did not connect within {CONNECT_TIMEOUT} s; events {session.agent.events}"
        ) from None
    await session.page.connected(CONNECT_TIMEOUT)
    return await agreed_stats(session)


def check_selected(session: Session, stats: IceStats) -> tuple[Candidate, Candidate]:
    """Both sides agree on the pair, and the browser's end is natkit's candidate."""
    selected = session.agent.selected_pair()
    assert selected is not None
    ours, theirs = selected
    assert stats.nominated, stats
    assert stats.state in ("succeeded", "in-progress"), stats  # in-progress: consent check out
    assert (stats.remote.address, stats.remote.port) == (ours.address.host, ours.address.port)
    # The browser's end as natkit sees it: the browser's own candidate address when
    # it is shown (not mDNS-hidden; getStats() gives "" for a hidden one).
    if stats.local.address:
        assert (stats.local.address, stats.local.port) == (theirs.address.host, theirs.address.port)
    return ours, theirs


async def agreed_stats(session: Session, timeout: float = 2.0) -> IceStats:
    """The browser's stats once both sides name the same pair: a browser that
    has just switched pairs tells natkit by its next check (bounded wait)."""
    for _ in range(int(timeout / 0.1)):
        stats = await session.page.stats()
        selected = session.agent.selected_pair()
        if selected is not None and (stats.remote.address, stats.remote.port) == (
            selected[0].address.host,
            selected[0].address.port,
        ):
            break
        await asyncio.sleep(0.1)
    check_selected(session, stats)
    return stats


async def hold(session: Session, before: IceStats) -> IceStats:
    """:data:`HOLD` seconds on consent alone, natkit sending a probe every
    :data:`TICK`; every sample connected on both sides.

    The pair may change only when the browser, controlling, nominates a
    better one (libwebrtc moves from the first working pair to a better one,
    e.g. from IPv4 to IPv6): natkit follows (§7.3.1.5) and both end on the
    same pair; never through consent loss or failover."""
    agent = session.agent
    sent = 0
    for _ in range(int(HOLD / TICK)):
        assert agent.send(1, PROBE)
        sent += 1
        await asyncio.sleep(TICK)
        state = await session.page.ice_state()
        assert state in CONNECTED_STATES, await session.page.fail(f"browser ICE went {state}")
        assert agent.connected and agent.selected_pair() is not None
    lost = [e for e in agent.events if isinstance(e, ConsentLost | IceFailed)]
    assert not lost, lost
    changes = [e for e in agent.events if isinstance(e, SelectedPairChanged)]
    assert all(e.reason == "nomination" for e in changes), changes
    assert not changes or not agent.core.controlling, changes
    after = await agreed_stats(session)
    # RFC 7675 both ways: the browser kept checking consent and natkit answered;
    # natkit kept checking and the browser answered.
    assert after.consent_requests_sent > before.consent_requests_sent, (before, after)
    assert after.responses_received > before.responses_received, (before, after)
    assert after.requests_received > before.requests_received, (before, after)
    # natkit -> browser: every probe arrived (on the selected pair of the moment).
    assert after.bytes_received - before.bytes_received >= sent * len(PROBE), (before, after)
    # browser -> natkit: its DTLS handshake records, as application data.
    assert any(d[0] == DTLS_HANDSHAKE for d in session.received), session.received[:3]
    return after


ROLES = [
    pytest.param(False, id="chromium-controlling"),
    pytest.param(True, id="natkit-controlling"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("natkit_controlling", ROLES)
async def test_chromium_and_natkit_connect_over_host_candidates_and_keep_consent(
    browser: Browser, natkit_controlling: bool
) -> None:
    async with ice_page(browser) as page:
        session = await start_session(
            page, natkit_controlling=natkit_controlling, gather=GatherConfig()
        )
        try:
            assert session.browser_lines and not session.resolved  # IPs, no .local names
            stats = await wait_connected(session)
            ours, theirs = check_selected(session, stats)
            assert stats.local.candidate_type == stats.remote.candidate_type == "host"
            assert ours.type is CandidateType.HOST
            assert theirs.type in (CandidateType.HOST, CandidateType.PEER_REFLEXIVE)
            assert session.agent.core.controlling is natkit_controlling
            await hold(session, stats)
        finally:
            await page.close()
            await session.agent.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_chromium_mdns_host_candidates_connect_through_peer_reflexive_learning() -> None:
    """mDNS hiding on and natkit not resolving the names: they are dropped
    (draft §3.2), and the browser's checks teach natkit its address as a
    peer-reflexive candidate (RFC 8445 §7.3.1.3)."""
    async with chromium_in_netns() as (netns_browser, host_if), ice_page(netns_browser) as page:
        gather = GatherConfig(include_interfaces=(host_if,))
        session = await start_session(
            page, natkit_controlling=False, gather=gather, resolve_mdns=False
        )
        try:
            lines = [parse_candidate(text) for text in session.browser_lines]
            assert lines and all(line.is_mdns for line in lines), session.browser_lines
            stats = await wait_connected(session)
            ours, theirs = check_selected(session, stats)
            assert theirs.type is CandidateType.PEER_REFLEXIVE
            assert theirs.address.host == NETNS_BROWSER_IP
            assert ours.type is CandidateType.HOST
            await hold(session, stats)
        finally:
            await page.close()
            await session.agent.close()


@pytest.mark.asyncio(loop_scope="module")
async def test_chromium_mdns_host_candidates_resolve_over_a_veth_pair() -> None:
    """mDNS hiding on, Chromium in a network namespace joined to this one by
    a veth pair: natkit's resolver (query socket and group join on the veth,
    QU bit, RFC 6762 §5.4) hears Chromium's multicast answer and resolves
    the ``.local`` name, so the browser's candidate is a host candidate."""
    async with chromium_in_netns() as (netns_browser, host_if):
        resolver = AsyncMdnsResolver(
            OsStack(),
            MdnsResolverConfig(timeout=2.0, retransmit=0.5),
            interface=NETNS_HOST_IP,
        )
        async with resolver, ice_page(netns_browser) as page:
            gather = GatherConfig(include_interfaces=(host_if,))
            session = await start_session(
                page, natkit_controlling=False, gather=gather, resolver=resolver
            )
            try:
                assert session.resolved, session.browser_lines
                assert set(session.resolved.values()) == {NETNS_BROWSER_IP}, session.resolved
                stats = await wait_connected(session)
                ours, theirs = check_selected(session, stats)
                assert theirs.type is CandidateType.HOST
                assert theirs.address.host == NETNS_BROWSER_IP
                assert (ours.type, ours.address.host) == (CandidateType.HOST, NETNS_HOST_IP)
                await hold(session, stats)
            finally:
                await page.close()
                await session.agent.close()


@pytest_asyncio.fixture(loop_scope="module")
async def natkit_turn() -> AsyncIterator[dict[str, Endpoint]]:
    """natkit's TURN server in this process: UDP and TCP on 127.0.0.1, relays
    on 127.0.0.1 above the ephemeral range, loopback peers allowed."""
    from natkit.turn.aio.server import TurnServerRunner

    config = TurnServerConfig(
        realm=REALM,
        relay_ips=(LOOPBACK,),
        min_port=MIN_PORT,
        max_port=MAX_PORT,
        allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),),
        wallclock=time.time,
    )
    runner = TurnServerRunner(
        OsStack(),
        config,
        StaticCredentials.from_passwords({TURN_USER[0]: TURN_USER[1]}, REALM),
        listen=[(Transport.UDP, Endpoint(LOOPBACK, 0)), (Transport.TCP, Endpoint(LOOPBACK, 0))],
    )
    await runner.start()
    try:
        yield {"udp": runner.endpoint(Transport.UDP), "tcp": runner.endpoint(Transport.TCP)}
    finally:
        runner.close()
        await runner.wait_closed()


RELAY_CASES = [
    pytest.param(False, "udp", id="chromium-controlling-udp"),
    pytest.param(True, "udp", id="natkit-controlling-udp"),
    pytest.param(False, "tcp", id="chromium-controlling-tcp"),
]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("natkit_controlling", "transport"), RELAY_CASES)
async def test_relay_only_chromium_connects_to_natkit_through_natkit_turn(
    browser: Browser, natkit_turn: dict[str, Endpoint], natkit_controlling: bool, transport: str
) -> None:
    server = natkit_turn[transport]
    ice = IceServer(turn_url(server.host, server.port, transport), *TURN_USER)
    loopback = GatherConfig(allow_loopback=True, include_interfaces=("lo",), ipv6=False)
    async with ice_page(browser) as page:
        session = await start_session(
            page,
            natkit_controlling=natkit_controlling,
            gather=loopback,
            ice_servers=(ice,),
            relay_only=True,
        )
        try:
            lines = [parse_candidate(text) for text in session.browser_lines]
            assert {line.type for line in lines} == {CandidateType.RELAYED}, lines
            relayed = {Endpoint(line.address, line.port) for line in lines}
            stats = await wait_connected(session)
            ours, theirs = check_selected(session, stats)
            assert stats.local.candidate_type == "relay" and stats.local.url == ice.url
            assert stats.local.relay_protocol == transport
            # The browser's end is its relayed address on natkit's server. When the
            # browser's check arrives before its candidate is signalled, natkit knows
            # the address first as peer-reflexive (§7.3.1.3) and keeps that type.
            assert theirs.address in relayed, (theirs, relayed)
            assert theirs.type in (CandidateType.RELAYED, CandidateType.PEER_REFLEXIVE)
            assert theirs.address.host == LOOPBACK
            assert MIN_PORT <= theirs.address.port <= MAX_PORT
            assert ours.address.host == LOOPBACK and ours.type is CandidateType.HOST
            await hold(session, stats)
        finally:
            await page.close()
            await session.agent.close()
