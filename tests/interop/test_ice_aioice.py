"""natkit's ICE agent against aioice (PyPI), aiortc's ICE agent, on loopback.

Each case is one :class:`~natkit.ice.aio.agent.AsyncIceAgent` on the OS
stack and one ``aioice.Connection``, in this process, signalled by the test:
ufrag/pwd both ways, every candidate through its SDP form (natkit's
:func:`~natkit.ice.sdp.serialize_candidate` into aioice's
``Candidate.from_sdp``, aioice's ``to_sdp()`` into natkit's
:func:`~natkit.ice.sdp.parse_candidate`) and end-of-candidates. ICE
(RFC 8445) must reach a selected pair on both sides in either role, and
application data must then flow both ways over it.

Loopback: natkit gathers on 127.0.0.1 because its config allows loopback
(``GatherConfig(allow_loopback=True)``, §5.1.1.1 excludes it otherwise);
aioice's ``gather_candidates()`` skips 127.0.0.1, so :class:`AioicePeer`
gathers through aioice's own ``get_component_candidates`` on the addresses
it is given, which is all ``gather_candidates`` does for each component.

Application data starts with a byte above 127 (an RTP-like first byte): the
agent tells data from STUN by the first byte (RFC 7983 §7: 0-3 is STUN), as
every ICE agent sharing sockets with STUN must.

Servers: natkit's own STUN server (aioice learns a server-reflexive
candidate from it) and natkit's TURN server (aioice relay-only, RFC 8656:
every check and every datagram from aioice travels through a natkit
allocation).

Across NATs (marker ``netns``, root): the namespace lab with natkit behind one
NAT and aioice behind another, natkit's STUN and TURN servers on the lab
internet; natkit, aioice and each server run on an event loop of their own
on a thread inside their host's namespace (``NamespaceLoop``: the sockets
they open are that namespace's), with real packets through natkit's TUN NAT
(RFC 4787 presets) or the kernel's masquerade. Direct where theory says a
direct path exists, relayed through natkit's TURN server elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import ConsentLost, IceFailed, RoleSwitched
from natkit.ice.gather_config import GatherConfig, TurnServerSpec
from natkit.ice.sdp import parse_candidate, serialize_candidate
from natkit.net.netns import (
    KernelNat,
    Lab,
    LabUnavailable,
    NatEngine,
    TunNat,
    check_available,
    lab_namespaces,
)
from natkit.net.os_stack import OsDatagramEndpoint, OsStack
from natkit.net.stack import DatagramHandler, IcmpHandler, InterfaceAddress, Responder
from natkit.rng import seeded_rng
from natkit.stun.aio import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

from .conftest import LOOPBACK, require_module

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

require_module("aioice", "aioice")
import aioice  # noqa: E402
from aioice.ice import Connection, TransportPolicy  # noqa: E402

CONNECT_TIMEOUT = 10.0
REALM = "example.org"
TURN_USER = ("alice", "alice-secret")
MESSAGES = 20


def payload(sender: str, index: int) -> bytes:
    """Application data: an RTP-like first byte (RFC 7983: not STUN), 20 B to ~1.2 KB."""
    return b"\x80" + f"{sender} {index} ".encode() + b"." * (index * 61 % 1200)


class LoopbackStack(OsStack):
    """The OS stack with only the given loopback addresses listed as local
    (127.0.0.0/8 is all local on Linux: no setup needed for 127.0.0.2...)."""

    def __init__(self, ips: Sequence[str] = (LOOPBACK,)) -> None:
        super().__init__()
        self.ips = tuple(ips)

    def local_addresses(self) -> list[InterfaceAddress]:
        return [
            InterfaceAddress(
                interface="lo", ip=ip, prefix_len=8, family=Family.IPV4, is_loopback=True
            )
            for ip in self.ips
        ]


def natkit_agent(
    *,
    controlling: bool,
    seed: int,
    ips: Sequence[str] = (LOOPBACK,),
    stun: Endpoint | None = None,
) -> AsyncIceAgent:
    gather = GatherConfig(
        allow_loopback=True,
        ipv6=False,
        stun_servers=(stun,) if stun is not None else (),
        rng=seeded_rng(seed),
    )
    return AsyncIceAgent(
        LoopbackStack(ips),
        controlling=controlling,
        config=IceConfig(rng=seeded_rng(seed + 1)),
        gather_config=gather,
    )


class AioicePeer(Connection):
    """aioice's Connection gathering on the addresses given (loopback included)."""

    def __init__(self, addresses: Sequence[str] = (LOOPBACK,), **kwargs: Any) -> None:
        super().__init__(use_ipv6=False, **kwargs)
        self.addresses = list(addresses)

    async def gather_candidates(self) -> None:
        if self._local_candidates_start:
            return
        self._local_candidates_start = True
        addresses = self.addresses if self._transport_policy == TransportPolicy.ALL else []
        for component in sorted(self._components):
            self._local_candidates += await self.get_component_candidates(
                component=component, addresses=addresses
            )
        self._local_candidates_end = True


def to_aioice(candidate: Candidate) -> aioice.Candidate:
    return aioice.Candidate.from_sdp(
        serialize_candidate(candidate, prefix=False).removeprefix("candidate:")
    )


def from_aioice(candidate: aioice.Candidate) -> Candidate:
    return parse_candidate(candidate.to_sdp()).to_candidate()


async def signal(natkit: AsyncIceAgent, peer: AioicePeer) -> list[Candidate]:
    """Start both, gather both, exchange credentials and every candidate;
    returns natkit's local candidates."""
    await asyncio.gather(natkit.start(), peer.gather_candidates())
    local = [c async for c in natkit.local_candidates()]
    creds = natkit.local_credentials
    peer.remote_username, peer.remote_password = creds.ufrag, creds.pwd
    natkit.set_remote_credentials(peer.local_username, peer.local_password)
    for cand in local:
        await peer.add_remote_candidate(to_aioice(cand))
    await peer.add_remote_candidate(None)
    for theirs in peer.local_candidates:
        natkit.add_remote_candidate(from_aioice(theirs))
    natkit.end_of_remote_candidates()
    return local


async def connect(natkit: AsyncIceAgent, peer: AioicePeer) -> float:
    """Both sides to a selected pair (bounded); returns the seconds it took."""
    started = time.perf_counter()
    async with asyncio.timeout(CONNECT_TIMEOUT):
        await asyncio.gather(natkit.connect(), peer.connect())
    return time.perf_counter() - started


async def exchange(natkit: AsyncIceAgent, peer: AioicePeer, count: int = MESSAGES) -> None:
    """``count`` datagrams each way; each side must receive the other's, in order."""
    for i in range(count):
        assert natkit.send(1, payload("natkit", i))
        await peer.send(payload("aioice", i))
    async with asyncio.timeout(CONNECT_TIMEOUT):
        to_aioice_side = [await peer.recv() for _ in range(count)]
        to_natkit_side = [await natkit.recv() for _ in range(count)]
    assert to_aioice_side == [payload("natkit", i) for i in range(count)]
    assert to_natkit_side == [(1, payload("aioice", i)) for i in range(count)]


@asynccontextmanager
async def pair(
    *,
    natkit_controlling: bool,
    aioice_controlling: bool | None = None,
    seed: int = 1,
    stun: Endpoint | None = None,
    **aioice_kwargs: Any,
) -> AsyncIterator[tuple[AsyncIceAgent, AioicePeer]]:
    natkit = natkit_agent(controlling=natkit_controlling, seed=seed, stun=stun)
    if aioice_controlling is None:
        aioice_controlling = not natkit_controlling
    peer = AioicePeer(ice_controlling=aioice_controlling, **aioice_kwargs)
    try:
        yield natkit, peer
    finally:
        await peer.close()
        await natkit.close()


ROLES = [
    pytest.param(True, id="natkit-controlling"),
    pytest.param(False, id="aioice-controlling"),
]


@pytest.mark.parametrize("natkit_controlling", ROLES)
async def test_natkit_and_aioice_connect_on_loopback_and_exchange_data(
    natkit_controlling: bool,
) -> None:
    async with pair(natkit_controlling=natkit_controlling) as (natkit, peer):
        local = await signal(natkit, peer)
        assert [c.type for c in local] == [CandidateType.HOST]
        await connect(natkit, peer)
        selected = natkit.selected_pair()
        assert selected is not None
        ours, theirs = selected
        (aioice_host,) = peer.local_candidates
        assert ours.address == local[0].address
        assert theirs.address == Endpoint(aioice_host.host, aioice_host.port)
        assert theirs.type is CandidateType.HOST
        assert natkit.core.controlling is natkit_controlling
        await exchange(natkit, peer)


async def test_both_controlling_resolve_the_role_conflict_and_connect() -> None:
    # RFC 8445 §7.3.1.1: the larger tie-breaker stays controlling; the other
    # switches on a 487 answer or on the peer's check, whichever comes first.
    async with pair(natkit_controlling=True, aioice_controlling=True, seed=5) as (natkit, peer):
        await signal(natkit, peer)
        await connect(natkit, peer)
        switched = [e for e in natkit.events if isinstance(e, RoleSwitched)]
        assert natkit.core.controlling is not peer.ice_controlling
        assert bool(switched) is not natkit.core.controlling
        await exchange(natkit, peer, count=5)


async def test_eight_host_candidates_a_side_select_one_pair_and_carry_data() -> None:
    ips = [f"127.0.0.{i}" for i in range(1, 9)]
    natkit = natkit_agent(controlling=True, seed=9, ips=ips)
    peer = AioicePeer(addresses=[f"127.0.1.{i}" for i in range(1, 9)], ice_controlling=False)
    try:
        local = await signal(natkit, peer)
        assert len(local) == 8 and len(peer.local_candidates) == 8
        assert len(natkit.core.pairs(natkit.stream)) == 64
        await connect(natkit, peer)
        selected = natkit.selected_pair()
        assert selected is not None
        # The highest-priority pair works on loopback, so it is the one chosen.
        best = natkit.core.pairs(natkit.stream)[0]
        assert (selected[0].address, selected[1].address) == (
            best.local.address,
            best.remote.address,
        )
        await exchange(natkit, peer, count=5)
    finally:
        await peer.close()
        await natkit.close()


class RequestCountingStack(LoopbackStack):
    """The loopback stack, counting the STUN Binding requests natkit's sockets
    receive (an observer only: every datagram still reaches natkit)."""

    def __init__(self, ips: Sequence[str] = (LOOPBACK,)) -> None:
        super().__init__(ips)
        self.binding_requests = 0

    async def open_udp(
        self,
        local: Endpoint,
        on_datagram: DatagramHandler,
        *,
        responder: Responder | None = None,
        on_icmp: IcmpHandler | None = None,
    ) -> OsDatagramEndpoint:
        def tap(data: bytes, remote: Endpoint) -> None:
            if data[:2] == b"\x00\x01":  # RFC 8489 §5: Binding request
                self.binding_requests += 1
            on_datagram(data, remote)

        return await super().open_udp(local, tap, responder=responder, on_icmp=on_icmp)


CONSENT_HOLD = 12.0
"""Seconds on consent alone: aioice checks every 4-6 s (RFC 7675 §5.1), natkit
every 0.24-0.36 s (its hot-spare interval)."""


@pytest.mark.timeout(60)
async def test_consent_both_ways_keeps_natkit_and_aioice_connected() -> None:
    stack = RequestCountingStack()
    natkit = AsyncIceAgent(
        stack,
        controlling=True,
        config=IceConfig(rng=seeded_rng(21)),
        gather_config=GatherConfig(allow_loopback=True, ipv6=False, rng=seeded_rng(22)),
    )
    peer = AioicePeer(ice_controlling=False)
    loop = asyncio.get_running_loop()
    try:
        await signal(natkit, peer)
        await connect(natkit, peer)
        requests_at_connect = stack.binding_requests
        await asyncio.sleep(CONSENT_HOLD)  # real peers, real time: nothing sent but consent
        # aioice kept checking consent and natkit answered (aioice gives up after
        # 6 unanswered checks and closes); natkit kept checking and aioice answered.
        assert stack.binding_requests - requests_at_connect >= 2
        assert not [e for e in natkit.events if isinstance(e, ConsentLost | IceFailed)]
        freshest = max(p.last_response for p in natkit.core.pairs(natkit.stream))
        assert loop.time() - freshest < 1.0
        await exchange(natkit, peer, count=5)
    finally:
        await peer.close()
        await natkit.close()


@pytest.fixture
async def natkit_stun() -> AsyncIterator[Endpoint]:
    """natkit's STUN server in this process on 127.0.0.1."""
    runner = StunServerRunner(OsStack(), StunServerConfig(primary=Endpoint(LOOPBACK, 0)), tcp=False)
    await runner.start()
    try:
        yield runner.endpoints[0]
    finally:
        runner.close()
        await runner.wait_closed()


async def test_aioice_learns_srflx_from_natkit_stun_and_connects(natkit_stun: Endpoint) -> None:
    stun = (natkit_stun.host, natkit_stun.port)
    async with pair(natkit_controlling=True, stun=natkit_stun, stun_server=stun) as (
        natkit,
        peer,
    ):
        local = await signal(natkit, peer)
        kinds = {c.type for c in peer.local_candidates}
        assert kinds == {"host", "srflx"}
        srflx = next(c for c in peer.local_candidates if c.type == "srflx")
        # On loopback the mapped address is the host address (no NAT).
        assert (srflx.related_address, srflx.related_port) == (srflx.host, srflx.port)
        # natkit asked the server too; its srflx equals its base and is pruned (§5.1.3).
        assert [c.type for c in local] == [CandidateType.HOST]
        await connect(natkit, peer)
        await exchange(natkit, peer, count=5)


@pytest.fixture
async def natkit_turn() -> AsyncIterator[Endpoint]:
    """natkit's TURN server in this process: UDP on 127.0.0.1, relays on
    127.0.0.1 above the ephemeral range, loopback peers allowed."""
    config = TurnServerConfig(
        realm=REALM,
        relay_ips=(LOOPBACK,),
        min_port=61000,
        max_port=65535,
        allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),),
        wallclock=time.time,
    )
    runner = TurnServerRunner(
        OsStack(),
        config,
        StaticCredentials.from_passwords({TURN_USER[0]: TURN_USER[1]}, REALM),
        listen=[(Transport.UDP, Endpoint(LOOPBACK, 0))],
    )
    await runner.start()
    try:
        yield runner.endpoint(Transport.UDP)
    finally:
        runner.close()
        await runner.wait_closed()


@pytest.mark.parametrize("natkit_controlling", ROLES)
async def test_relay_only_aioice_connects_through_natkit_turn(
    natkit_turn: Endpoint, natkit_controlling: bool
) -> None:
    async with pair(
        natkit_controlling=natkit_controlling,
        turn_server=(natkit_turn.host, natkit_turn.port),
        turn_username=TURN_USER[0],
        turn_password=TURN_USER[1],
        transport_policy=TransportPolicy.RELAY,
    ) as (natkit, peer):
        await signal(natkit, peer)
        (relayed,) = peer.local_candidates
        assert relayed.type == "relay"
        assert relayed.host == LOOPBACK and 61000 <= relayed.port <= 65535
        await connect(natkit, peer)
        selected = natkit.selected_pair()
        assert selected is not None
        assert selected[1].address == Endpoint(relayed.host, relayed.port)
        assert selected[1].type is CandidateType.RELAYED
        await exchange(natkit, peer)


# -- across the namespace lab's NATs ------------------------------------------------------

PRC = "port-restricted-cone"
LAB_CASES = [
    # natkit's NAT box on TUN devices, RFC 4787 behaviours exactly: port-restricted
    # cone on both sides lets the server-reflexive candidates reach each other.
    pytest.param(TunNat(PRC), TunNat(PRC), True, "direct", id="tun-prc-prc-natkit-controlling"),
    # aioice controlling nominates aggressively (USE-CANDIDATE on every check)
    # and keeps the first pair that succeeds at its end, often relayed while the
    # direct pair's first check is still filtered; natkit follows (§7.3.1.5).
    pytest.param(TunNat(PRC), TunNat(PRC), False, None, id="tun-prc-prc-aioice-controlling"),
    # Symmetric against port-restricted: no direct path (RFC 6314 §5.2.2.3),
    # natkit's TURN server relays.
    pytest.param(
        TunNat("symmetric"), TunNat(PRC), True, "relay", id="tun-sym-prc-natkit-controlling"
    ),
    pytest.param(
        TunNat(PRC), TunNat("symmetric"), False, "relay", id="tun-prc-sym-aioice-controlling"
    ),
    # The kernel's masquerade on both sides: it maps endpoint-independently, but a
    # check that arrives before the local side has sent to its source leaves a
    # conntrack entry that the local side's own packet then clashes with, so that
    # packet leaves from another port and the peer's port-restricted filter drops
    # it. Whether hole punching works depends on which check arrives first: any
    # path will do here, as long as ICE connects and data flows.
    pytest.param(KernelNat(), KernelNat(), True, None, id="kernel-kernel-natkit-controlling"),
]


def describe(events: Sequence[object]) -> list[str]:
    """natkit's events in one line each (for assertion messages)."""
    lines = []
    for event in events:
        parts = [type(event).__name__]
        for name in ("local", "remote", "candidate"):
            cand = getattr(event, name, None)
            if isinstance(cand, Candidate):
                parts.append(f"{name}={cand.type}:{cand.address}")
        lines.append(" ".join(parts))
    return lines


def _require_lab(*, tun: bool) -> None:
    try:
        check_available(tun=tun, nft=True)
    except LabUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exc} (CI runs the namespace lab as root)", pytrace=False)
        pytest.skip(str(exc))


@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("nat_natkit", "nat_aioice", "natkit_controlling", "path"), LAB_CASES)
def test_natkit_and_aioice_connect_across_lab_nats(
    tmp_path: Path,
    nat_natkit: NatEngine,
    nat_aioice: NatEngine,
    natkit_controlling: bool,
    path: str | None,
) -> None:
    """natkit behind one kernel NAT, aioice behind another, natkit's STUN and
    TURN servers on the lab internet; each program on an event loop of its
    own inside its host's namespace (real sockets, real NATs), signalled by
    the test across the loops."""
    _require_lab(tun=isinstance(nat_natkit, TunNat) or isinstance(nat_aioice, TunNat))
    from natkit.lab.turn import NamespaceLoop, lab_credentials, start_turn_server

    lab = Lab(workdir=tmp_path)
    try:
        lab.open()
        stun_host = lab.add_public_host("stun")
        turn_host = lab.add_public_host("turn")
        natkit_nat = lab.add_nat("nata", nat_natkit)
        aioice_nat = lab.add_nat("natb", nat_aioice)
        natkit_host = lab.add_host("natkit", behind=natkit_nat)
        aioice_host = lab.add_host("aioice", behind=aioice_nat)
        stun_ep = Endpoint(stun_host.address, 3478)
        turn_ep = Endpoint(turn_host.address, 3478)
        _, creds = lab_credentials()
        with (
            NamespaceLoop(stun_host.netns) as stun_loop,
            NamespaceLoop(turn_host.netns) as turn_loop,
            NamespaceLoop(natkit_host.netns) as natkit_loop,
            NamespaceLoop(aioice_host.netns) as aioice_loop,
        ):

            async def start_stun() -> StunServerRunner:
                runner = StunServerRunner(OsStack(), StunServerConfig(primary=stun_ep), tcp=False)
                await runner.start()
                return runner

            async def stop(runner: StunServerRunner | TurnServerRunner) -> None:
                runner.close()
                await runner.wait_closed()

            async def start_natkit() -> tuple[AsyncIceAgent, list[Candidate]]:
                agent = AsyncIceAgent(
                    OsStack(),
                    controlling=natkit_controlling,
                    config=IceConfig(rng=seeded_rng(3)),
                    gather_config=GatherConfig(
                        stun_servers=(stun_ep,),
                        turn_servers=(TurnServerSpec(address=turn_ep, credentials=creds),),
                        ipv6=False,
                        rng=seeded_rng(4),
                    ),
                )
                await agent.start()
                return agent, [c async for c in agent.local_candidates()]

            async def start_aioice() -> Connection:
                conn = Connection(
                    ice_controlling=not natkit_controlling,
                    stun_server=(stun_ep.host, stun_ep.port),
                    turn_server=(turn_ep.host, turn_ep.port),
                    turn_username=creds.username,
                    turn_password=creds.password,
                    use_ipv6=False,
                )
                await conn.gather_candidates()
                return conn

            stun = stun_loop.run(start_stun())
            turn = turn_loop.run(start_turn_server(OsStack(), turn_host.address))
            natkit: AsyncIceAgent | None = None
            peer: Connection | None = None
            try:
                natkit, ours = natkit_loop.run(start_natkit())
                peer = aioice_loop.run(start_aioice())
                assert {c.type for c in ours} == {
                    CandidateType.HOST,
                    CandidateType.SERVER_REFLEXIVE,
                    CandidateType.RELAYED,
                }
                assert {c.type for c in peer.local_candidates} == {"host", "srflx", "relay"}
                theirs = [from_aioice(c) for c in peer.local_candidates]
                creds_natkit = natkit.local_credentials

                async def signal_aioice() -> None:
                    assert peer is not None
                    peer.remote_username = creds_natkit.ufrag
                    peer.remote_password = creds_natkit.pwd
                    for cand in ours:
                        await peer.add_remote_candidate(to_aioice(cand))
                    await peer.add_remote_candidate(None)

                async def signal_natkit() -> None:
                    assert natkit is not None and peer is not None
                    natkit.set_remote_credentials(peer.local_username, peer.local_password)
                    for cand in theirs:
                        natkit.add_remote_candidate(cand)
                    natkit.end_of_remote_candidates()

                aioice_loop.run(signal_aioice())
                natkit_loop.run(signal_natkit())
                # Both connect at once, each on its own loop.
                with ThreadPoolExecutor(max_workers=1) as pool:
                    aioice_done = pool.submit(
                        aioice_loop.run, asyncio.wait_for(peer.connect(), CONNECT_TIMEOUT * 2)
                    )
                    natkit_loop.run(asyncio.wait_for(natkit.connect(), CONNECT_TIMEOUT * 2))
                    aioice_done.result(CONNECT_TIMEOUT * 2)
                selected = natkit.selected_pair()
                assert selected is not None
                local, remote = selected
                # The remote end is one of aioice's candidates (or the address a
                # check came from), the local one natkit's own or learned from it.
                assert remote.address in {c.address for c in theirs} or (
                    remote.type is CandidateType.PEER_REFLEXIVE
                ), describe(natkit.events)
                kinds = (local.type, remote.type)
                observed = "relay" if CandidateType.RELAYED in kinds else "direct"
                assert path is None or observed == path, (
                    [f"{c.type}:{c.address}" for c in ours],
                    [c.to_sdp() for c in peer.local_candidates],
                    describe(natkit.events),
                )

                async def natkit_sends() -> None:
                    assert natkit is not None
                    for i in range(MESSAGES):
                        assert natkit.send(1, payload("natkit", i))

                async def aioice_exchanges() -> list[bytes]:
                    assert peer is not None
                    for i in range(MESSAGES):
                        await peer.send(payload("aioice", i))
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        return [await peer.recv() for _ in range(MESSAGES)]

                async def natkit_receives() -> list[tuple[int, bytes]]:
                    assert natkit is not None
                    async with asyncio.timeout(CONNECT_TIMEOUT):
                        return [await natkit.recv() for _ in range(MESSAGES)]

                natkit_loop.run(natkit_sends())
                assert aioice_loop.run(aioice_exchanges()) == [
                    payload("natkit", i) for i in range(MESSAGES)
                ]
                assert natkit_loop.run(natkit_receives()) == [
                    (1, payload("aioice", i)) for i in range(MESSAGES)
                ]
            finally:
                if peer is not None:
                    aioice_loop.run(peer.close())
                if natkit is not None:
                    natkit_loop.run(natkit.close())
                turn_loop.run(stop(turn))
                stun_loop.run(stop(stun))
    finally:
        lab.close()
    assert not lab_namespaces(lab.prefix)
