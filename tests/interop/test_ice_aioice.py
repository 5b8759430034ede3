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
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from natkit.addr import Endpoint, Family, Transport
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import RoleSwitched
from natkit.ice.gather_config import GatherConfig
from natkit.ice.sdp import parse_candidate, serialize_candidate
from natkit.net.os_stack import OsStack
from natkit.net.stack import InterfaceAddress
from natkit.rng import seeded_rng
from natkit.stun.aio import StunServerRunner
from natkit.stun.server import StunServerConfig
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
    from natkit.turn.aio.server import TurnServerRunner

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
