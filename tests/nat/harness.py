"""A test-only virtual network for NAT discovery (sans-IO, virtual time).

Theory of operation
-------------------
Three nodes: the client (a :class:`~natkit.nat.natcheck.NatCheck` owning
several private sockets ``10.0.0.2:40001...``), a :class:`Nat` at the
client's edge (public IP ``203.0.113.5``), and a STUN server core on the
public side (RFC 5780 mode: primary ``198.51.100.1:3478``, alternate
``198.51.100.2:3479``, four sockets).

The NAT is described by a :class:`NatBehavior` value in RFC 4787 terms:
mapping and filtering behaviour, port preservation, hairpinning, and a
mapping forgotten ``mapping_lifetime`` seconds after the last outbound
packet.
``mapping=None`` means no translation (the client holds the public
address): with ``filtering=None`` the open Internet, with
address-and-port-dependent filtering a symmetric UDP firewall.

:class:`Network` moves datagrams with a fixed one-way delay between the NAT
and the server (the NAT processes outbound packets as they are sent and
inbound ones when they arrive, so binding expiry is judged at arrival), and
advances a virtual clock straight to the next delivery or core deadline. It
never sleeps and never reads the wall clock; it raises :class:`Stalled`
when the client is not finished and nothing is scheduled. Everything sent is
recorded in :attr:`Network.trace`, so a seed's run can be compared byte for
byte with another's.

The NAT itself is natkit's :class:`~natkit.nat.box.NatBox`; :class:`Nat`
only adapts it to datagrams and keeps this harness's small vocabulary
(:class:`NatBehavior`) that the natcheck tables are written in.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Protocol

from natkit.addr import Datagram, Endpoint
from natkit.nat.box import NatBehavior as BoxBehavior
from natkit.nat.box import NatBox, PortAssignment, Side
from natkit.nat.natcheck import (
    NatCheck,
    NatCheckConfig,
    NatCheckEvent,
    NatCheckFinished,
    NatCheckResult,
)
from natkit.nat.types import Filtering, Mapping
from natkit.packet import IpProto, Packet
from natkit.rng import seeded_rng
from natkit.stun.server import StunServer, StunServerConfig

PRIVATE_IP = "10.0.0.2"
PUBLIC_IP = "203.0.113.5"
SERVER_PRIMARY = Endpoint("198.51.100.1", 3478)
SERVER_ALTERNATE = Endpoint("198.51.100.2", 3479)
FIRST_CLIENT_PORT = 40001
ONE_WAY_DELAY = 0.025
"""Between the NAT and the server; the LAN behind the NAT takes no time."""

EIM = Mapping.ENDPOINT_INDEPENDENT
ADM = Mapping.ADDRESS_DEPENDENT
APDM = Mapping.ADDRESS_AND_PORT_DEPENDENT
EIF = Filtering.ENDPOINT_INDEPENDENT
ADF = Filtering.ADDRESS_DEPENDENT
APDF = Filtering.ADDRESS_AND_PORT_DEPENDENT


class Stalled(Exception):
    """The client has not finished and nothing can make progress."""


# -- the NAT model -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NatBehavior:
    """What the box at the client's edge does (RFC 4787 terms).

    ``mapping=None``: no translation. ``filtering=None``: no filter.
    """

    mapping: Mapping | None
    filtering: Filtering | None
    port_preservation: bool = True
    hairpinning: bool = False
    mapping_lifetime: float = 120.0
    udp_blocked: bool = False

    @property
    def translates(self) -> bool:
        return self.mapping is not None


FULL_CONE = NatBehavior(mapping=EIM, filtering=EIF)
RESTRICTED_CONE = NatBehavior(mapping=EIM, filtering=ADF)
PORT_RESTRICTED_CONE = NatBehavior(mapping=EIM, filtering=APDF)
SYMMETRIC = NatBehavior(mapping=APDM, filtering=APDF, port_preservation=False)
OPEN_INTERNET = NatBehavior(mapping=None, filtering=None)
SYMMETRIC_UDP_FIREWALL = NatBehavior(mapping=None, filtering=APDF)
UDP_BLOCKED = NatBehavior(mapping=None, filtering=None, udp_blocked=True)


INSIDE_NETWORK = "10.0.0.0/8"
RANDOM_PORTS = (49152, 65535)
"""Where a NAT without port preservation picks ports: never a client's own port."""


def box_behavior(behavior: NatBehavior) -> BoxBehavior:
    """The :class:`natkit.nat.box.NatBehavior` that emulates ``behavior``."""
    if not behavior.translates:
        return BoxBehavior(
            translate=False, filtering=behavior.filtering, udp_blocked=behavior.udp_blocked
        )
    return BoxBehavior(
        mapping=behavior.mapping,
        filtering=behavior.filtering or EIF,
        port_assignment=(
            PortAssignment.PRESERVING if behavior.port_preservation else PortAssignment.RANDOM
        ),
        port_range=(1024, 65535) if behavior.port_preservation else RANDOM_PORTS,
        hairpinning=behavior.hairpinning,
        udp_mapping_timeout=behavior.mapping_lifetime,
        udp_blocked=behavior.udp_blocked,
    )


class Nat:
    """natkit's :class:`NatBox` at the client's edge, behind the datagram-level
    calls the :class:`Network` makes (the client holds the public address
    when nothing translates)."""

    def __init__(self, behavior: NatBehavior, public_ip: str, rng: random.Random) -> None:
        self.behavior = behavior
        self.public_ip = public_ip
        translates = behavior.translates
        self.box = NatBox(
            box_behavior(behavior),
            [public_ip] if translates else [],
            inside_networks=[INSIDE_NETWORK if translates else f"{public_ip}/32"],
            rng=rng,
            trace=False,
        )
        self._sent: dict[tuple[Endpoint, Endpoint], Endpoint] = {}

    def outbound(self, src: Endpoint, dst: Endpoint, *, now: float) -> Endpoint | None:
        """Translate the source of a packet leaving ``src`` for ``dst``
        (creating or refreshing a mapping), or ``None`` to drop it."""
        sent = self._pass(Packet(IpProto.UDP, src, dst), Side.INSIDE, now)
        if sent is None:
            return None
        self._sent[src, dst] = sent.src
        return sent.src

    def inbound(self, src: Endpoint, dst: Endpoint, *, now: float) -> Endpoint | None:
        """The internal endpoint a packet from ``src`` to the public ``dst``
        reaches, or ``None`` when no mapping or the filter drops it."""
        sent = self._pass(Packet(IpProto.UDP, src, dst), Side.OUTSIDE, now)
        return None if sent is None else sent.dst

    def hairpin(
        self, src: Endpoint, dst: Endpoint, *, now: float
    ) -> tuple[Endpoint, Endpoint] | None:
        """A packet from inside to one of our own public endpoints: the
        (external source, internal destination) it is delivered with, or
        ``None``. RFC 4787 REQ-9: the source is the sender's mapping."""
        sent = self._pass(Packet(IpProto.UDP, src, dst), Side.INSIDE, now)
        return None if sent is None else (sent.src, sent.dst)

    def mapping_for(self, internal: Endpoint, remote: Endpoint) -> Endpoint | None:
        """The public endpoint packets from ``internal`` to ``remote`` left with last."""
        return self._sent.get((internal, remote))

    def _pass(self, packet: Packet, side: Side, now: float) -> Packet | None:
        self.box.receive_packet(packet, side=side, now=now)
        while self.box.next_event() is not None:
            pass
        sent = self.box.packets_to_send(now=now)
        return sent[0][1] if sent else None


# -- server variants -----------------------------------------------------------------


class ServerCore(Protocol):
    @property
    def local_endpoints(self) -> list[Endpoint]: ...

    def receive_datagram(
        self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float
    ) -> None: ...

    def datagrams_to_send(self, *, now: float) -> list[Datagram]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...


class Rfc5780Server:
    """The STUN server core as an RFC 5780 server with four sockets."""

    def __init__(self, core: StunServer | None = None) -> None:
        self.core = core or StunServer(
            StunServerConfig(SERVER_PRIMARY, SERVER_ALTERNATE, rfc5780=True)
        )

    @property
    def local_endpoints(self) -> list[Endpoint]:
        return self.core.config.local_endpoints

    def receive_datagram(self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float) -> None:
        self.core.receive_datagram(data, addr, local=local, now=now)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        return self.core.datagrams_to_send(now=now)

    def get_timer(self) -> float | None:
        return self.core.get_timer()

    def handle_timer(self, *, now: float) -> None:
        self.core.handle_timer(now=now)


class PlainServer(Rfc5780Server):
    """A plain RFC 8489 server: one address, 420 to CHANGE-REQUEST."""

    def __init__(self) -> None:
        super().__init__(StunServer(StunServerConfig(SERVER_PRIMARY)))


class IgnoresChangeRequestServer(Rfc5780Server):
    """Advertises an alternate address (OTHER-ADDRESS) but answers every
    request from the socket it arrived at, as servers that ignore
    CHANGE-REQUEST do."""

    def __init__(self) -> None:
        super().__init__()
        self._out: list[Datagram] = []

    def receive_datagram(self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float) -> None:
        self.core.receive_datagram(data, addr, local=local, now=now)
        self._out.extend(d._replace(local=local) for d in self.core.datagrams_to_send(now=now))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out


# -- the network loop ----------------------------------------------------------------


class ClientCore(Protocol):
    """The part of :class:`NatCheck` the network drives."""

    def start(self, *, now: float) -> None: ...

    def receive_datagram(
        self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float
    ) -> None: ...

    def datagrams_to_send(self, *, now: float) -> list[Datagram]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...

    def next_event(self) -> NatCheckEvent | None: ...

    @property
    def done(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Sent:
    """One datagram as a node sent it (client sources are private)."""

    at: float
    source: Endpoint
    destination: Endpoint
    data: bytes


_TO_SERVER, _TO_NAT, _TO_CLIENT = 0, 1, 2


class Network:
    """Client, NAT and server under one virtual clock; see the module docstring."""

    def __init__(
        self,
        behavior: NatBehavior,
        *,
        server: ServerCore | None = None,
        seed: int = 0,
        delay: float = ONE_WAY_DELAY,
    ) -> None:
        self.behavior = behavior
        self.client_ip = PRIVATE_IP if behavior.translates else PUBLIC_IP
        self.nat = Nat(behavior, PUBLIC_IP, seeded_rng(seed))
        self.server: ServerCore = server or Rfc5780Server()
        self.delay = delay
        self.now = 0.0
        self.trace: list[Sent] = []
        self.dropped = 0
        self._server_endpoints = set(self.server.local_endpoints)
        self._queue: list[tuple[float, int, int, Endpoint, Endpoint, bytes]] = []
        self._seq = 0

    def client_locals(self, n: int) -> list[Endpoint]:
        return [Endpoint(self.client_ip, FIRST_CLIENT_PORT + i) for i in range(n)]

    def run(self, client: ClientCore, *, limit: float = 3600.0) -> list[NatCheckEvent]:
        """Start ``client`` and run until it is done; return its events."""
        events: list[NatCheckEvent] = []
        client.start(now=self.now)
        self._flush(client, events)
        while not client.done:
            deadlines = [client.get_timer(), self.server.get_timer()]
            if self._queue:
                deadlines.append(self._queue[0][0])
            pending = [t for t in deadlines if t is not None]
            if not pending:
                raise Stalled(f"nothing can make progress at t={self.now:g}")
            self.now = max(self.now, min(pending))
            if self.now > limit:
                raise Stalled(f"still running at the limit t={limit:g}")
            while self._queue and self._queue[0][0] <= self.now:
                self._deliver(client, *heapq.heappop(self._queue)[2:])
            timer = client.get_timer()
            if timer is not None and timer <= self.now:
                client.handle_timer(now=self.now)
            timer = self.server.get_timer()
            if timer is not None and timer <= self.now:
                self.server.handle_timer(now=self.now)
            self._flush(client, events)
        return events

    def _flush(self, client: ClientCore, events: list[NatCheckEvent]) -> None:
        for d in client.datagrams_to_send(now=self.now):
            assert d.local is not None
            self._from_client(d.local, d.remote, d.data)
        for d in self.server.datagrams_to_send(now=self.now):
            self._from_server(d.local or SERVER_PRIMARY, d.remote, d.data)
        while (event := client.next_event()) is not None:
            events.append(event)

    def _schedule(self, at: float, kind: int, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, src, dst, data))

    def _from_client(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        self.trace.append(Sent(self.now, src, dst, data))
        if dst.host == self.nat.public_ip:
            if not self.behavior.translates:
                self._schedule(self.now, _TO_CLIENT, src, dst, data)  # our own address
                return
            hairpinned = self.nat.hairpin(src, dst, now=self.now)
            if hairpinned is None:
                self.dropped += 1
            else:
                self._schedule(self.now, _TO_CLIENT, *hairpinned, data)
            return
        public_src = self.nat.outbound(src, dst, now=self.now)
        if public_src is None or dst not in self._server_endpoints:
            self.dropped += 1
            return
        self._schedule(self.now + self.delay, _TO_SERVER, public_src, dst, data)

    def _from_server(self, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        self.trace.append(Sent(self.now, src, dst, data))
        if dst.host != self.nat.public_ip:
            self.dropped += 1
            return
        self._schedule(self.now + self.delay, _TO_NAT, src, dst, data)

    def _deliver(
        self, client: ClientCore, kind: int, src: Endpoint, dst: Endpoint, data: bytes
    ) -> None:
        if kind == _TO_SERVER:
            self.server.receive_datagram(data, src, local=dst, now=self.now)
            return
        if kind == _TO_NAT:
            internal = self.nat.inbound(src, dst, now=self.now)
            if internal is None:
                self.dropped += 1
                return
            dst = internal
        client.receive_datagram(data, src, local=dst, now=self.now)


# -- running a check -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    result: NatCheckResult
    events: list[NatCheckEvent]
    network: Network
    check: NatCheck
    locals: list[Endpoint]
    """The client's sockets, in the order NatCheck assigns them (classic first)."""


def run_natcheck(
    behavior: NatBehavior,
    *,
    server: ServerCore | None = None,
    seed: int = 0,
    delay: float = ONE_WAY_DELAY,
    lifetime: bool = False,
    lifetime_max: float = 600.0,
    classic: bool = True,
) -> Run:
    """Run :class:`NatCheck` (seeded) behind ``behavior`` to completion."""
    network = Network(behavior, server=server, seed=seed, delay=delay)
    config = NatCheckConfig(
        classic=classic, lifetime=lifetime, lifetime_max=lifetime_max, rng=seeded_rng(seed)
    )
    locals_ = network.client_locals(NatCheck.sockets_needed(config))
    check = NatCheck(SERVER_PRIMARY, locals_, config)
    events = network.run(check)
    finished = [e for e in events if isinstance(e, NatCheckFinished)]
    if not finished:
        raise AssertionError("NatCheck finished without a NatCheckFinished event")
    return Run(finished[0].result, events, network, check, locals_)
