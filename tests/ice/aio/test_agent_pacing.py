"""The driver's timing of connectivity checks (RFC 8445 §6.1.4.2, §14.2):
the first check of a new check list leaves when the pair appears, with no
Ta wait; new checks of one agent are at least Ta apart, to the microsecond
on a real loop (uvloop's own clock is whole milliseconds), and the
nomination check takes the first slot after the first success.

Virtual-clock tests are exact; the loopback test only bounds a real gap
from below (never early) and loosely from above."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import uvloop

from natkit.addr import Endpoint
from natkit.ice.aio.agent import AsyncIceAgent, fast_ice_config
from natkit.ice.gather_config import GatherConfig, HostAddress
from natkit.net.os_stack import OsStack
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.rng import seeded_rng
from natkit.stun.constants import MessageClass
from natkit.stun.message import parse_message

TA = 0.005
SEND_SLACK = 0.0001  # s: a datagram leaves this long after the core's time stamp, at most
USE_CANDIDATE = b"\x00\x25\x00\x00"  # the attribute's type and empty length


Sent = list[tuple[float, bool]]  # (time, carries USE-CANDIDATE) of each check


def _agent(stack: Stack, seed: int, *, controlling: bool, loopback: bool) -> AsyncIceAgent:
    return AsyncIceAgent(
        stack,
        controlling=controlling,
        config=fast_ice_config(rng=seeded_rng(seed)),
        gather_config=GatherConfig(allow_loopback=loopback, ipv6=False, rng=seeded_rng(seed + 1)),
    )


class _RecordingSocket:
    """A base socket whose sends of Binding requests are noted."""

    def __init__(self, inner: DatagramEndpoint, sent: Sent, clock: Callable[[], float]) -> None:
        self._inner, self._sent, self._clock = inner, sent, clock

    def send(self, data: bytes, remote: Endpoint) -> None:
        msg = parse_message(data) if data[:1] == b"\x00" else None
        if msg is not None and msg.message_class is MessageClass.REQUEST:
            self._sent.append((self._clock(), USE_CANDIDATE in data[20:]))
        self._inner.send(data, remote)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _record_checks(agent: AsyncIceAgent, clock: Callable[[], float]) -> Sent:
    """The Binding requests ``agent`` sends from its base sockets."""
    sent: Sent = []
    sockets = agent.gatherer.sockets
    for base, sock in list(sockets.items()):
        sockets[base] = _RecordingSocket(sock, sent, clock)
    return sent


async def _connect_pair(
    a: AsyncIceAgent, b: AsyncIceAgent, clock: Callable[[], float], hosts: list[HostAddress] | None
) -> tuple[Sent, float]:
    """Start both, signal in-process; A's checks and when A got B's candidate."""
    if hosts is None:
        await asyncio.gather(a.start(), b.start())
    else:
        await asyncio.gather(a.start(hosts[:1]), b.start(hosts[1:]))
    sent = _record_checks(a, clock)
    a.set_remote_credentials(*b.local_credentials)
    b.set_remote_credentials(*a.local_credentials)
    for cand in b.core.local_candidates(b.stream):
        paired_at = clock()
        a.add_remote_candidate(cand)
    for cand in a.core.local_candidates(a.stream):
        b.add_remote_candidate(cand)
    async with asyncio.timeout(5):
        await asyncio.gather(a.connect(), b.connect())
    return sent, paired_at


def test_first_check_at_once_and_nomination_in_the_next_ta_slot_on_virtual_time() -> None:
    async def main() -> None:
        net = Internet(seed=3, default_link=Link(delay=0.0005))
        ha, hb = net.add_host("a", "198.51.100.1"), net.add_host("b", "198.51.100.2")
        a = _agent(ha.stack, 10, controlling=True, loopback=False)
        b = _agent(hb.stack, 20, controlling=False, loopback=False)
        loop = asyncio.get_running_loop()
        try:
            sent, paired_at = await _connect_pair(a, b, loop.time, None)
        finally:
            await asyncio.gather(a.close(), b.close())
        (first, first_uc), (nominate, nominate_uc) = sent[0], sent[1]
        assert first == paired_at and not first_uc  # §6.1.4.2: no Ta wait for the first
        assert nominate_uc and abs(nominate - first - TA) < 1e-9  # the next slot
        gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(sent)]
        assert all(gap >= TA - 1e-9 for gap in gaps)  # §14.2

    run_virtual(main)


def test_on_uvloop_checks_are_never_less_than_ta_apart_and_not_much_more() -> None:
    """uvloop's loop.time() is whole milliseconds: a pacing slot measured on
    it could open up to 1 ms early, and its timers fire up to 1 ms off."""

    async def main() -> list[float]:
        hosts = [HostAddress("lo", "127.0.0.1"), HostAddress("lo", "127.0.0.1")]
        nomination_gaps = []
        for seed in range(5):
            a = _agent(OsStack(), 30 + seed, controlling=True, loopback=True)
            b = _agent(OsStack(), 40 + seed, controlling=False, loopback=True)
            try:
                sent, _ = await _connect_pair(a, b, time.monotonic, hosts)
            finally:
                await asyncio.gather(a.close(), b.close())
            gaps = [t2 - t1 for (t1, _), (t2, _) in itertools.pairwise(sent)]
            # Never early: the time stamps are the sends, not the core's
            # clock readings, so allow the few microseconds between the two.
            assert gaps and min(gaps) >= TA - SEND_SLACK, gaps
            nomination_gaps.append(gaps[0])
        return nomination_gaps

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        gaps = runner.run(main())
    assert statistics.median(gaps) < 2 * TA, gaps  # loose: the machine may be busy
