"""Candidate gathering (RFC 8445 §5.1.1, RFC 8421, RFC 8838 §4), sans-IO.

Theory of operation
-------------------
The driver opens one UDP socket per usable local address and component
(:func:`select_host_addresses` chooses the addresses from what its stack
lists) and hands them to a :class:`Gatherer` as :class:`LocalBase` values.
:meth:`Gatherer.start` then

1. reports a host candidate for every base at once (§5.1.1.1), with the
   local preference of RFC 8421 §4 (:func:`host_preferences`: IPv6 and IPv4
   addresses interleaved, IPv6 first, poor IPv6 kinds and link-local last,
   a distinct preference per address for multihomed hosts, RFC 8445
   §5.1.2.1);
2. queues one STUN Binding transaction (RFC 8489 §6) per base and STUN
   server of the same family, and one TURN Allocate (RFC 8656 §7) per base
   and TURN server of the same family, and starts them one every Ta (§14.2,
   50 ms by default) so a host with many addresses does not burst.

A Binding answer gives a server-reflexive candidate whose base and related
address are the host base (§5.1.1.2). An Allocate answer gives a relayed
candidate (base: the relayed address itself; related: the mapped address,
RFC 8839 §5.1) and, over UDP, a server-reflexive candidate from its
XOR-MAPPED-ADDRESS. Every new candidate is checked against those already
reported and dropped if redundant (§5.1.3, :func:`prune_redundant`), so what
is reported never needs retracting; each goes out as it arrives
(:class:`CandidateGathered`: trickle ICE, RFC 8838).

Each server gets ``server_timeout`` seconds from its first request, on its
own: a dead server is reported (:class:`ServerFailed`) and forgotten at its
deadline while the others carry on, and :class:`GatheringCompleted` comes
as soon as the last server answered or ran out of time.

TURN over TCP and TLS (RFC 8656 §3.1): the driver owns the stream. The
gatherer asks for it with :class:`TurnConnectionRequested` (a connection
id, the server, TLS or not, the local IP to connect from); the driver
connects and calls :meth:`Gatherer.connection_opened` (or
:meth:`connection_failed`), feeds received bytes to
:meth:`Gatherer.receive_stream_data` (``b""`` at end of stream) and writes
what :meth:`Gatherer.stream_data_to_send` returns. Framing (RFC 8489 §6.2.2,
ChannelData padding RFC 8656 §12.5) is done here, with the same
:class:`~natkit.stun.framing.StreamFramer` the TURN driver uses; each
allocation is one :class:`~natkit.turn.client.TurnClient` core, so
authentication, redirects over UDP and the refresh schedule are the TURN
client's own. Allocations stay alive after gathering (the gatherer keeps
driving their refreshes); :attr:`Gatherer.allocations` lists them, and
:meth:`Gatherer.take_allocations` hands them to the agent, which relays
through them from then on.

Port-mapped candidates (ECC report §6.1; RFC 6886, 6887, UPnP IGD):
:meth:`Gatherer.add_port_mapping` takes a mapping a NAT-PMP/PCP/UPnP client
obtained (:class:`~natkit.nat.portmap.mapping.PortMapping`, or just base and
external address) and reports it as a server-reflexive candidate of that
base, at any time.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from natkit.addr import AddressClass, Datagram, Endpoint, Family, Transport, address_class
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.ice.candidate import Candidate, CandidateType, prune_redundant
from natkit.ice.gather_config import GatherConfig, HostAddress, LocalBase, TurnServerSpec
from natkit.ice.gather_events import (
    CandidateGathered,
    GatherEvent,
    GatheringCompleted,
    ServerFailed,
    TurnConnectionAbandoned,
    TurnConnectionRequested,
)
from natkit.nat.portmap.mapping import PortMapping
from natkit.packet import IpProto
from natkit.stun import attributes as at
from natkit.stun.constants import MessageClass, Method
from natkit.stun.events import ResponseReceived, TransactionFailed, TransactionTimedOut
from natkit.stun.framing import StreamFramer
from natkit.stun.message import StunMessage
from natkit.stun.transaction import StunClient, StunClientConfig
from natkit.turn.client import TurnClient, TurnClientConfig
from natkit.turn.client_events import Allocated, AllocationFailed, Redirected

__all__ = [
    "Gatherer",
    "TurnAllocation",
    "host_preferences",
    "select_host_addresses",
]

_PREFERENCE_STEP = 128  # local preferences 65535, 65407, ...: room for 511 addresses
_RELAY_RANK = {Transport.UDP: 3, Transport.TCP: 2, Transport.TLS: 1}  # §5.1.2.1: UDP first
_POOR_V6 = frozenset(
    {AddressClass.TEREDO, AddressClass.SIX_TO_FOUR, AddressClass.IPV4_MAPPED}
)  # RFC 8421 §4 (RFC 6724 precedence): below native addresses
_SITE_LOCAL = ipaddress.IPv6Network("fec0::/10")  # deprecated, RFC 3879
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291 §2.5.5.1
_LAST_RESORT = frozenset({AddressClass.LINK_LOCAL, AddressClass.LOOPBACK})


def _family(ip: str) -> Family:
    return Family.IPV6 if ":" in ip else Family.IPV4


def select_host_addresses(
    addresses: Iterable[HostAddress], config: GatherConfig
) -> list[HostAddress]:
    """The addresses to gather host candidates on (RFC 8445 §5.1.1.1).

    Interfaces are kept by ``include_interfaces`` (fnmatch patterns; empty:
    all) minus ``exclude_interfaces``; addresses in ``exclude_addresses``,
    of a disabled family, unspecified, multicast or with a zone are
    dropped, and so are those RFC 8445 §5.1.1.1 excludes (IPv4-mapped,
    IPv4-compatible and site-local IPv6). Loopback and link-local addresses
    are kept only when allowed, or when nothing else is left (a host with
    only those can still talk to itself or its link). Order is preserved, duplicates dropped.
    """
    kept: list[HostAddress] = []
    last_resort: list[HostAddress] = []
    seen: set[str] = set()
    for addr in addresses:
        if config.include_interfaces and not any(
            fnmatch.fnmatchcase(addr.interface, p) for p in config.include_interfaces
        ):
            continue
        if any(fnmatch.fnmatchcase(addr.interface, p) for p in config.exclude_interfaces):
            continue
        if "%" in addr.ip or addr.ip in seen:
            continue
        try:
            cls = address_class(addr.ip)
        except ValueError:
            continue
        family = _family(addr.ip)
        if (family == Family.IPV4 and not config.ipv4) or (
            family == Family.IPV6 and not config.ipv6
        ):
            continue
        if cls in (AddressClass.UNSPECIFIED, AddressClass.MULTICAST, AddressClass.IPV4_MAPPED):
            continue
        ip = Endpoint(addr.ip, 0).ip
        if ip.version == 6 and (ip in _SITE_LOCAL or (ip in _V4_COMPATIBLE and int(ip) > 1)):
            continue  # RFC 8445 §5.1.1.1: MUST NOT be included
        if any(ip.version == net.version and ip in net for net in config.exclude_addresses):
            continue
        seen.add(addr.ip)
        if (cls == AddressClass.LOOPBACK and not config.allow_loopback) or (
            cls == AddressClass.LINK_LOCAL and not config.allow_link_local
        ):
            last_resort.append(addr)
        else:
            kept.append(addr)
    return kept or last_resort


def host_preferences(ips: Sequence[str]) -> dict[str, int]:
    """Local preference per host IP (RFC 8445 §5.1.2.1; RFC 8421 §3 multihomed, §4 dual stack).

    IPv6 and IPv4 addresses are interleaved, IPv6 first, so that a dual-stack
    host's checks alternate families instead of waiting for all of one;
    within a family the driver's order is kept, except that Teredo, 6to4 and
    IPv4-mapped IPv6 addresses come after native ones and link-local and
    loopback addresses come last. Each address gets a distinct preference:
    65535, then 128 less for each next one.
    """

    def rank(ip: str) -> int:
        cls = address_class(ip)
        return 2 if cls in _LAST_RESORT else 1 if cls in _POOR_V6 else 0

    unique = list(dict.fromkeys(ips))
    v6 = sorted((ip for ip in unique if ":" in ip), key=rank)
    v4 = sorted((ip for ip in unique if ":" not in ip), key=rank)
    good6 = [ip for ip in v6 if rank(ip) < 2]
    good4 = [ip for ip in v4 if rank(ip) < 2]
    ordered: list[str] = []
    for i in range(max(len(good6), len(good4))):
        ordered += good6[i : i + 1] + good4[i : i + 1]
    ordered += [ip for ip in v6 + v4 if rank(ip) == 2]
    return {ip: max(1, 65535 - _PREFERENCE_STEP * i) for i, ip in enumerate(ordered)}


class _Kind(enum.Enum):
    STUN = "stun"
    TURN = "turn"


@dataclass(slots=True, eq=False)
class _Job:
    kind: _Kind
    base: LocalBase
    server: Endpoint
    transport: Transport
    spec: TurnServerSpec | None = None
    spec_index: int = 0
    deadline: float | None = None
    done: bool = False
    tid: bytes | None = None
    turn: TurnClient | None = None
    connection_id: int | None = None
    framer: StreamFramer | None = None
    local: Endpoint | None = None  # the stream's local endpoint, once connected


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnAllocation:
    """A TURN allocation made during gathering, for the agent to relay
    through: ``client`` is the live core (the gatherer keeps driving its
    refreshes), reached over the base socket ``base`` (UDP) or stream
    ``connection_id`` (TCP/TLS)."""

    client: TurnClient
    spec: TurnServerSpec
    base: LocalBase
    candidate: Candidate
    connection_id: int | None = None


@dataclass(slots=True)
class _Stats:
    stun_requests: int = 0
    allocations: int = 0
    failures: int = 0
    pruned: int = 0
    started: float | None = None


class Gatherer:
    """Gathers host, server-reflexive, relayed and port-mapped candidates
    for the given bases (see the module docstring)."""

    def __init__(self, bases: Sequence[LocalBase], config: GatherConfig | None = None) -> None:
        self.config = config or GatherConfig()
        self.bases = tuple(bases)
        if len({b.address for b in self.bases}) != len(self.bases):
            raise LocalProtocolError("each base must be a distinct local transport address")
        self.stats = _Stats()
        self._prefs = host_preferences([b.address.host for b in self.bases])
        self._stun: dict[Endpoint, StunClient] = {}
        self._jobs: list[_Job] = []
        self._queue: deque[_Job] = deque()
        self._next_start: float | None = None
        self._by_tid: dict[tuple[Endpoint, bytes], _Job] = {}
        self._turn_udp: dict[Endpoint, list[_Job]] = {}
        self._turn_stream: dict[int, _Job] = {}
        self._next_connection = 1
        self._candidates: list[Candidate] = []
        self._events: deque[GatherEvent] = deque()
        self._out: list[Datagram] = []
        self._stream_out: list[tuple[int, bytes]] = []
        self._allocations: list[TurnAllocation] = []
        self._handed_over: set[tuple[Endpoint, Endpoint]] = set()  # (base, server) over UDP
        self._started = False
        self._completed = False
        self._holds: set[int] = set()  # work outside the core that may add candidates
        self._next_hold = 1

    # -- properties --------------------------------------------------------------

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        """Every candidate reported so far, highest priority first."""
        return tuple(sorted(self._candidates, key=lambda c: -c.priority))

    @property
    def allocations(self) -> tuple[TurnAllocation, ...]:
        return tuple(self._allocations)

    @property
    def started(self) -> bool:
        return self._started

    @property
    def completed(self) -> bool:
        return self._completed

    def local_preference(self, ip: str) -> int:
        """The host local preference of base IP ``ip`` (RFC 8421 §4)."""
        return self._prefs[ip]

    # -- commands --------------------------------------------------------------

    def start(self, *, now: float) -> None:
        """Report the host candidates and queue every server transaction."""
        if self._started:
            raise LocalProtocolError("gathering already started")
        self._started = True
        self.stats.started = now
        cfg = self.config
        for base in self.bases:
            self._report(
                Candidate.local(
                    CandidateType.HOST,
                    base.address,
                    base=base.address,
                    component=base.component,
                    local_preference=self._prefs[base.address.host],
                ),
                None,
            )
        for base in self.bases:
            family = base.address.family
            for server in cfg.stun_servers:
                if server.family == family:
                    self._jobs.append(_Job(_Kind.STUN, base, server, Transport.UDP))
            for index, spec in enumerate(cfg.turn_servers):
                if spec.address.family == family:
                    self._jobs.append(
                        _Job(
                            _Kind.TURN,
                            base,
                            spec.address,
                            spec.transport,
                            spec=spec,
                            spec_index=index,
                        )
                    )
        self._queue.extend(self._jobs)
        self._next_start = now if self._queue else None
        self._start_due(now)
        self._check_completed()

    def hold_completion(self) -> int:
        """Keep :class:`GatheringCompleted` back until
        :meth:`release_completion` of the returned token: for work the
        driver does outside the core that may still add candidates (a port
        mapping request, :meth:`add_port_mapping`). Take holds before
        :meth:`start` when gathering could otherwise complete at once."""
        if self._completed:
            raise LocalProtocolError("gathering has completed")
        token = self._next_hold
        self._next_hold += 1
        self._holds.add(token)
        return token

    def release_completion(self, token: int) -> None:
        """That work is over (whether it added a candidate or not)."""
        self._holds.discard(token)
        self._check_completed()

    def add_port_mapping(
        self,
        base: Endpoint,
        external: Endpoint,
        *,
        gateway: Endpoint | None = None,
    ) -> Candidate | None:
        """A mapping obtained from the NAT itself (NAT-PMP, PCP, UPnP IGD):
        packets to ``external`` reach the local socket ``base``. Reported as
        a server-reflexive candidate of that base (related address: the
        base), unless redundant; returns it, or ``None`` when pruned."""
        local = self._base(base)
        if local is None:
            raise LocalProtocolError(f"{base} is not one of the gathering bases")
        return self._report(
            Candidate.local(
                CandidateType.SERVER_REFLEXIVE,
                external,
                base=local.address,
                component=local.component,
                local_preference=self._prefs[local.address.host],
                server=gateway,
                related=local.address,
            ),
            gateway,
        )

    def add_mapping(self, mapping: PortMapping) -> Candidate | None:
        """:meth:`add_port_mapping` for a client's :class:`PortMapping`; a
        TCP mapping or one that is not public (cascaded NATs) gives nothing."""
        if mapping.proto != IpProto.UDP or not mapping.public:
            return None
        return self.add_port_mapping(mapping.internal, mapping.external, gateway=mapping.gateway)

    def take_allocations(self) -> tuple[TurnAllocation, ...]:
        """Hand the TURN allocations over to the agent: from now on the
        gatherer no longer drives them (timers, events, datagrams), and
        ``receive_datagram`` returns False for their servers' datagrams and
        ``receive_stream_data`` ignores their streams, so the agent's driver
        routes those itself. Call it after draining the gatherer's output."""
        taken, self._allocations = tuple(self._allocations), []
        for alloc in taken:
            for job in self._jobs:
                if job.turn is alloc.client:
                    job.turn = None
            udp = self._turn_udp.get(alloc.base.address, [])
            self._turn_udp[alloc.base.address] = [j for j in udp if j.turn is not None]
            if alloc.connection_id is not None:
                self._turn_stream.pop(alloc.connection_id, None)
            else:
                self._handed_over.add((alloc.base.address, alloc.client.server))
        return taken

    def release_allocations(self, *, now: float) -> None:
        """Delete every TURN allocation (Refresh LIFETIME 0, RFC 8656 §8)."""
        for alloc in self._allocations:
            if not alloc.client.state.ended:
                alloc.client.release(now=now)
        self._pull_turn(now)

    # -- TURN over TCP/TLS: the driver's stream ----------------------------------------

    def connection_opened(self, connection_id: int, *, local: Endpoint, now: float) -> None:
        """The stream for ``connection_id`` connected from ``local``: allocate."""
        job = self._turn_stream.get(connection_id)
        if job is None or job.done or job.spec is None:
            return
        job.local = local
        job.framer = StreamFramer(channel_data=True)
        job.turn = TurnClient(job.server, job.spec.credentials, self._turn_config(stream=True))
        job.turn.allocate(now=now, family=job.spec.family)
        self._pull_turn(now)

    def connection_failed(self, connection_id: int, *, now: float, reason: str = "") -> None:
        """The stream for ``connection_id`` could not be opened."""
        job = self._turn_stream.get(connection_id)
        if job is not None and not job.done:
            self._fail(job, f"connection failed: {reason}" if reason else "connection failed")
            self._check_completed()
        del now

    def receive_stream_data(self, connection_id: int, data: bytes, *, now: float) -> None:
        """Bytes from the TURN server on stream ``connection_id`` (``b""``: closed)."""
        job = self._turn_stream.get(connection_id)
        if job is None or job.turn is None or job.framer is None:
            return
        if not data:
            job.turn.transport_closed(now=now)
        else:
            try:
                messages = job.framer.feed(data)
            except MalformedMessageError:
                job.turn.transport_closed(now=now)
                self._events.append(TurnConnectionAbandoned(connection_id=connection_id))
                messages = []
            for message in messages:
                job.turn.receive_datagram(message, job.server, now=now)
        self._pull_turn(now)

    def stream_data_to_send(self) -> list[tuple[int, bytes]]:
        """``(connection_id, bytes)`` to write to the driver's streams."""
        out, self._stream_out = self._stream_out, []
        return out

    # -- sans-IO surface ---------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, remote: Endpoint, *, local: Endpoint, now: float
    ) -> bool:
        """A datagram arrived on base socket ``local`` from ``remote``.
        Returns whether it was gathering's (a STUN or TURN server's answer),
        so a driver sharing the socket with the ICE agent passes the rest on."""
        stun = self._stun.get(local)
        # A Binding answer first (one server is often both STUN and TURN server):
        # matched by its transaction ID, which only our StunClient knows.
        if stun is not None and len(data) >= 20 and (local, data[8:20]) in self._by_tid:
            stun.receive_datagram(data, remote, now=now)
            self._pull_stun(local, now)
            return True
        for job in self._turn_udp.get(local, ()):
            if job.turn is not None and remote == job.turn.server:
                job.turn.receive_datagram(data, remote, now=now)
                self._pull_turn(now)
                return True
        if (local, remote) in self._handed_over:
            return False  # that server is also our TURN server: the agent's relay now
        return stun is not None and any(
            job.kind is _Kind.STUN and job.server == remote and job.base.address == local
            for job in self._jobs
        )  # a late or stray answer from one of our STUN servers: ours, dropped

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        """Datagrams to send, each naming the base socket (``local``) to use."""
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        deadlines = [self._next_start]
        deadlines += [j.deadline for j in self._jobs if not j.done]
        deadlines += [c.get_timer() for c in self._stun.values()]
        deadlines += [a.client.get_timer() for a in self._allocations]
        deadlines += [j.turn.get_timer() for j in self._jobs if j.turn is not None and not j.done]
        due = [d for d in deadlines if d is not None]
        return min(due) if due else None

    def handle_timer(self, *, now: float) -> None:
        self._start_due(now)
        for local, stun in self._stun.items():
            stun.handle_timer(now=now)
            self._pull_stun(local, now)
        for job in self._jobs:
            if job.turn is not None and not job.done:
                job.turn.handle_timer(now=now)
        for alloc in self._allocations:
            alloc.client.handle_timer(now=now)
        self._pull_turn(now)
        for job in self._jobs:
            if not job.done and job.deadline is not None and now >= job.deadline:
                self._fail(
                    job, f"no answer within {self.config.server_timeout:g} s", timed_out=True
                )
        self._check_completed()

    def next_event(self) -> GatherEvent | None:
        return self._events.popleft() if self._events else None

    # -- internals --------------------------------------------------------------

    def _base(self, address: Endpoint) -> LocalBase | None:
        for base in self.bases:
            if base.address == address:
                return base
        return None

    def _turn_config(self, *, stream: bool) -> TurnClientConfig:
        cfg = self.config
        return TurnClientConfig(stream=stream, software=cfg.software, rto=cfg.rto, rng=cfg.rng)

    def _start_due(self, now: float) -> None:
        while self._queue and self._next_start is not None and now >= self._next_start:
            self._begin(self._queue.popleft(), now)
            self._next_start = now + self.config.ta if self._queue else None
            if self.config.ta > 0:
                break

    def _begin(self, job: _Job, now: float) -> None:
        job.deadline = now + self.config.server_timeout
        local = job.base.address
        if job.kind is _Kind.STUN:
            stun = self._stun.get(local)
            if stun is None:
                stun = self._stun[local] = StunClient(
                    StunClientConfig(rto=self.config.rto, software=None, rng=self.config.rng)
                )
            job.tid = stun.send_request(
                StunMessage.request(Method.BINDING, b""), job.server, now=now
            )
            self._by_tid[(local, job.tid)] = job
            self.stats.stun_requests += 1
            self._pull_stun(local, now)
            return
        assert job.spec is not None  # TURN jobs are built with their spec
        if job.transport == Transport.UDP:
            job.turn = TurnClient(job.server, job.spec.credentials, self._turn_config(stream=False))
            self._turn_udp.setdefault(local, []).append(job)
            job.turn.allocate(now=now, family=job.spec.family)
            self._pull_turn(now)
            return
        job.connection_id = self._next_connection
        self._next_connection += 1
        self._turn_stream[job.connection_id] = job
        self._events.append(
            TurnConnectionRequested(
                connection_id=job.connection_id,
                server=job.server,
                tls=job.transport == Transport.TLS,
                server_hostname=job.spec.server_hostname,
                local_ip=local.host,
            )
        )

    def _pull_stun(self, local: Endpoint, now: float) -> None:
        stun = self._stun[local]
        for data, remote, _ in stun.datagrams_to_send(now=now):
            self._out.append(Datagram(data, remote, local))
        while (event := stun.next_event()) is not None:
            job = self._by_tid.pop((local, event.transaction_id), None)
            if job is None or job.done:
                continue
            match event:
                case ResponseReceived(response=response) if (
                    response.message_class == MessageClass.SUCCESS
                ):
                    self._binding_answered(job, response)
                case ResponseReceived(response=response):
                    err = response.error
                    self._fail(job, "Binding refused", code=err.code if err else None)
                case TransactionTimedOut():
                    self._fail(job, "no answer", timed_out=True)
                case TransactionFailed(reason=reason):
                    self._fail(job, reason)
        self._check_completed()

    def _binding_answered(self, job: _Job, response: StunMessage) -> None:
        try:
            mapped = response.get(at.XOR_MAPPED_ADDRESS) or response.get(at.MAPPED_ADDRESS)
        except MalformedMessageError:
            mapped = None
        if mapped is None:
            self._fail(job, "Binding response without a mapped address")
            return
        job.done = True
        self._report(self._reflexive(job.base, mapped, job.server), job.server)

    def _reflexive(self, base: LocalBase, mapped: Endpoint, server: Endpoint) -> Candidate:
        return Candidate.local(
            CandidateType.SERVER_REFLEXIVE,
            mapped,
            base=base.address,
            component=base.component,
            local_preference=self._prefs[base.address.host],
            server=server,
            related=base.address,
        )

    def _pull_turn(self, now: float) -> None:
        for job in self._jobs:
            if job.turn is not None and not job.done:
                self._drain_turn(job.turn, job, now)
        for alloc in self._allocations:
            self._drain_turn(alloc.client, self._job_of(alloc), now)
        self._check_completed()

    def _job_of(self, alloc: TurnAllocation) -> _Job | None:
        for job in self._jobs:
            if job.turn is alloc.client:
                return job
        return None

    def _drain_turn(self, client: TurnClient, job: _Job | None, now: float) -> None:
        for data, remote, _ in client.datagrams_to_send(now=now):
            if job is not None and job.connection_id is not None:
                self._stream_out.append((job.connection_id, data))
            elif job is not None:
                self._out.append(Datagram(data, remote, job.base.address))
        while (event := client.next_event()) is not None:
            if job is None or job.done:
                continue  # after gathering: refreshes, data, loss are the agent's business
            match event:
                case Allocated():
                    self._allocated(job, client, event)
                case AllocationFailed(code=code, reason=reason):
                    self._fail(job, f"Allocate failed: {reason}", code=code)
                case Redirected(followed=False, alternate=alternate):
                    self._fail(job, f"redirected to {alternate} (not followed over a stream)")
                case _:
                    pass

    def _allocated(self, job: _Job, client: TurnClient, event: Allocated) -> None:
        assert job.spec is not None  # TURN jobs are built with their spec
        job.done = True
        self.stats.allocations += 1
        rank = _RELAY_RANK[job.transport]
        host_rank = (65535 - self._prefs[job.base.address.host]) // _PREFERENCE_STEP
        preference = max(1, rank * 16384 - 1 - 256 * job.spec_index - host_rank)
        relayed = event.relayed_endpoint
        candidate = Candidate.local(
            CandidateType.RELAYED,
            relayed,
            base=relayed,
            component=job.base.component,
            local_preference=min(0xFFFF, preference),
            server=event.server,
            related=event.mapped,
        )
        self._allocations.append(
            TurnAllocation(
                client=client,
                spec=job.spec,
                base=job.base,
                candidate=candidate,
                connection_id=job.connection_id,
            )
        )
        if event.mapped is not None and job.transport == Transport.UDP:
            self._report(self._reflexive(job.base, event.mapped, event.server), event.server)
        self._report(candidate, event.server)

    def _fail(
        self, job: _Job, reason: str, *, timed_out: bool = False, code: int | None = None
    ) -> None:
        job.done = True
        self.stats.failures += 1
        if job.tid is not None:
            stun = self._stun.get(job.base.address)
            if stun is not None:
                stun.cancel(job.tid)
            self._by_tid.pop((job.base.address, job.tid), None)
        if job.connection_id is not None:
            self._events.append(TurnConnectionAbandoned(connection_id=job.connection_id))
        if job.turn is not None:
            udp = self._turn_udp.get(job.base.address, [])
            if job in udp:
                udp.remove(job)
            job.turn = None
        self._events.append(
            ServerFailed(
                server=job.server,
                transport=job.transport,
                local=job.local or job.base.address,
                reason=reason,
                timed_out=timed_out,
                code=code,
            )
        )

    def _report(self, candidate: Candidate, server: Endpoint | None) -> Candidate | None:
        kept = prune_redundant([*self._candidates, candidate])
        if not any(c is candidate for c in kept):
            self.stats.pruned += 1
            return None
        self._candidates.append(candidate)
        self._events.append(CandidateGathered(candidate=candidate, server=server))
        return candidate

    def _check_completed(self) -> None:
        if self._completed or not self._started or self._queue or self._holds:
            return
        if all(job.done for job in self._jobs):
            self._completed = True
            self._events.append(GatheringCompleted(candidates=self.candidates))
