"""A tiny in-test network for back-to-back ICE agents (sans-IO, virtual time).

Every local base is owned by one agent. A datagram from base S to address D
takes ``delay`` seconds, is rewritten by an optional static NAT (private base
-> public address; packets addressed to a NATed private address from outside
are lost) and is dropped when ``blocked(src, dst)`` says so. A relayed
candidate's base (its relayed address) is simply owned by the agent, which
is what a TURN allocation looks like to the ICE core.

For NAT traversal scenarios, :meth:`Net.add_box` puts a
:class:`~natkit.nat.box.NatBox` (the lab's NAT behaviour core) in front of
an inside network: datagrams from inside go through it, datagrams to its
public addresses come in through it, and an inside address is unreachable
from anywhere else.
"""

from __future__ import annotations

import dataclasses
import heapq
import ipaddress
import itertools
from collections.abc import Callable

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import IceEvent
from natkit.nat.box import NatBox
from natkit.nat.events import Side
from natkit.packet import IpProto, Packet
from natkit.rng import seeded_rng


def host(ip: str, port: int, component: int = 1, pref: int = 65535) -> Candidate:
    ep = Endpoint(ip, port)
    return Candidate.local(
        CandidateType.HOST, ep, base=ep, component=component, local_preference=pref
    )


def relay(
    ip: str,
    port: int,
    component: int = 1,
    server: str = "198.51.100.50",
    pref: int = 65535,
) -> Candidate:
    ep = Endpoint(ip, port)
    return Candidate.local(
        CandidateType.RELAYED,
        ep,
        base=ep,
        component=component,
        server=Endpoint(server, 3478),
        related=Endpoint("10.9.9.9", 1),
        local_preference=pref,
    )


def as_remote(cand: Candidate) -> Candidate:
    """What the peer learns over signalling: no base."""
    return dataclasses.replace(cand, base=None)


def config(seed: int, **kw: object) -> IceConfig:
    return IceConfig(rng=seeded_rng(seed), **kw)  # type: ignore[arg-type]


class Net:
    def __init__(self, delay: float = 0.01) -> None:
        self.now = 0.0
        self.delay = delay
        self.owner: dict[Endpoint, IceAgent] = {}
        self.agents: list[IceAgent] = []
        self.events: dict[int, list[tuple[float, IceEvent]]] = {}
        self.nat: dict[Endpoint, Endpoint] = {}
        self._unnat: dict[Endpoint, Endpoint] = {}
        self.blocked: Callable[[Endpoint, Endpoint], bool] = lambda s, d: False
        self.lose: Callable[[bytes], bool] = lambda data: False  # by content
        self._queue: list[tuple[float, int, IceAgent, bytes, Endpoint, Endpoint]] = []
        self._boxes: list[tuple[ipaddress.IPv4Network, NatBox]] = []
        self._seq = itertools.count()
        self.sent = 0

    def add(self, agent: IceAgent, *bases: Endpoint) -> IceAgent:
        if agent not in self.agents:
            self.agents.append(agent)
            self.events[id(agent)] = []
        for base in bases:
            self.owner[base] = agent
        return agent

    def add_box(self, box: NatBox, inside: str) -> None:
        self._boxes.append((ipaddress.IPv4Network(inside), box))

    def _inside(self, ep: Endpoint) -> NatBox | None:
        ip = ipaddress.IPv4Address(ep.host)
        for network, box in self._boxes:
            if ip in network:
                return box
        return None

    def _through_boxes(self, src: Endpoint, dst: Endpoint) -> tuple[Endpoint, Endpoint] | None:
        """Route one UDP datagram through the NAT boxes: the (source,
        destination) it arrives with, or None when a box drops it."""
        packet = Packet(IpProto.UDP, src, dst)
        inner = self._inside(src)
        if inner is not None:
            inner.receive_packet(packet, side=Side.INSIDE, now=self.now)
            out = inner.packets_to_send(now=self.now)
            if not out:
                return None
            side, packet = out[0]
            if side is Side.INSIDE:  # hairpinned
                return packet.src, packet.dst
        for _, box in self._boxes:
            if packet.dst.host in box.public_ips:
                box.receive_packet(packet, side=Side.OUTSIDE, now=self.now)
                out = box.packets_to_send(now=self.now)
                if not out or out[0][0] is not Side.INSIDE:
                    return None
                return out[0][1].src, out[0][1].dst
        if self._inside(packet.dst) is not None:
            return None  # a private address behind someone else's NAT
        return packet.src, packet.dst

    def add_nat(self, private: Endpoint, public: Endpoint) -> None:
        self.nat[private] = public
        self._unnat[public] = private

    def ev(self, agent: IceAgent) -> list[IceEvent]:
        return [e for _, e in self.events[id(agent)]]

    def of(self, agent: IceAgent, kind: type) -> list:  # type: ignore[type-arg]
        return [e for e in self.ev(agent) if isinstance(e, kind)]

    def timed(self, agent: IceAgent, kind: type) -> list[tuple[float, IceEvent]]:
        return [(t, e) for t, e in self.events[id(agent)] if isinstance(e, kind)]

    def _flush(self) -> None:
        for agent in self.agents:
            while (event := agent.next_event()) is not None:
                self.events[id(agent)].append((self.now, event))
            for data, local, remote in agent.datagrams_to_send(now=self.now):
                self.sent += 1
                src = self.nat.get(local, local)
                if remote in self.nat:  # a private address, unreachable from outside
                    continue
                dst = self._unnat.get(remote, remote)
                if self._boxes:
                    routed = self._through_boxes(src, dst)
                    if routed is None:
                        continue
                    src, dst = routed
                target = self.owner.get(dst)
                if target is None or self.blocked(local, dst) or self.lose(data):
                    continue
                heapq.heappush(
                    self._queue,
                    (self.now + self.delay, next(self._seq), target, data, src, dst),
                )

    def run(self, duration: float, until: Callable[[], bool] | None = None) -> float:
        """Advance virtual time by at most ``duration``; stop early when
        ``until()`` holds. Returns the time reached."""
        end = self.now + duration
        steps = 0
        while True:
            self._flush()
            if until is not None and until():
                return self.now
            times = [a.get_timer() for a in self.agents]
            nxt = min((t for t in times if t is not None), default=None)
            if self._queue and (nxt is None or self._queue[0][0] < nxt):
                nxt = self._queue[0][0]
            if nxt is None or nxt > end:
                self.now = end
                self._flush()
                return self.now
            self.now = max(self.now, nxt)
            steps += 1
            assert steps < 200_000, "no progress"
            while self._queue and self._queue[0][0] <= self.now:
                _, _, target, data, src, dst = heapq.heappop(self._queue)
                target.receive_datagram(data, src, local=dst, now=self.now)
            for agent in self.agents:
                t = agent.get_timer()
                if t is not None and t <= self.now:
                    agent.handle_timer(now=self.now)


def exchange(
    net: Net,
    a: IceAgent,
    b: IceAgent,
    a_cands: list[Candidate],
    b_cands: list[Candidate],
    *,
    streams: int = 1,
    eoc: bool = True,
) -> None:
    """Signal credentials and candidates both ways (stream i gets the
    candidates whose component set says so: all of them for stream 0)."""
    for s in range(streams):
        ca, cb = a.local_credentials(s), b.local_credentials(s)
        a.set_remote_credentials(s, cb.ufrag, cb.pwd)
        b.set_remote_credentials(s, ca.ufrag, ca.pwd)
    for c in a_cands:
        assert c.base is not None
        net.add(a, c.base)
        a.add_local_candidate(0, c)
        b.add_remote_candidate(0, as_remote(c))
    for c in b_cands:
        assert c.base is not None
        net.add(b, c.base)
        b.add_local_candidate(0, c)
        a.add_remote_candidate(0, as_remote(c))
    if eoc:
        for agent in (a, b):
            agent.end_of_local_candidates(0)
            agent.end_of_remote_candidates(0)


def test_harness_delivers_with_delay_and_nat() -> None:
    net = Net(delay=0.02)
    a = IceAgent(config(1), controlling=True)
    net.add(a, Endpoint("10.0.0.1", 1))
    net.add_nat(Endpoint("10.0.0.1", 1), Endpoint("203.0.113.1", 9))
    assert net.run(1.0) == 1.0
