"""The NAT behaviour core: a NAT (or a firewall) as a sans-IO state machine.

Theory of operation
-------------------
A :class:`NatBox` has two interfaces, :attr:`Side.INSIDE` and
:attr:`Side.OUTSIDE`. The driver (the simulated internet, the TUN NAT) hands
it each IPv4 UDP or TCP :class:`~natkit.packet.Packet` with the side it
arrived on and the time; the box queues what goes out (``packets_to_send``)
and reports what happened (``next_event``). Nothing else moves it: no clock,
no sockets. What kind of NAT it is, is a :class:`NatBehavior` value in the
terms of RFC 4787 (UDP) and RFC 5382 (TCP).

*Mappings* (RFC 4787 §4.1). An outbound packet from internal endpoint X to
remote Y uses the mapping keyed by X alone (endpoint-independent), by X and
Y's address (address-dependent) or by X and Y (address-and-port-dependent);
if there is none, one is created with an external endpoint from the pool:
the public address is the one paired with X's address (REQ-2) or any, and
the port is X's own when free (port preservation), the next free one
(sequential) or a random free one (§4.2.1). No two mappings share an
external endpoint (no port overloading, REQ-3), so every inbound packet
finds at most one mapping by its destination: one dict lookup each way.

*Filtering* (RFC 4787 §5). Each mapping remembers whom it sent to: remote
addresses (address-dependent) or remote endpoints (address-and-port-
dependent). An inbound packet passes when its source is among them, or
always with endpoint-independent filtering. What a mapping has permitted
lives as long as the mapping.

*Lifetimes* (RFC 4787 §4.3, RFC 5382 §5). A UDP mapping expires
``udp_mapping_timeout`` seconds after the last packet that refreshed it:
outbound ones (REQ-6), and inbound ones too with ``refresh=BOTH``. A
mapping is dead at exactly ``last refresh + timeout``. TCP mappings are
created by an outbound SYN only and track each connection through them:
transitory (one SYN seen, or FIN both ways, or RST) or established (SYNs
seen both ways), each with its own idle timeout (REQ-5); a TCP mapping
lives as long as its longest-lived connection. Expiry is checked on every
packet as well as by ``handle_timer``, so a late timer never lets a dead
mapping carry traffic.

*Hairpinning* (RFC 4787 §6). A packet from the inside to one of the box's
own public addresses is translated as outbound (creating or refreshing the
sender's mapping), then treated as inbound with the sender's *external*
endpoint as its source (REQ-9) and sent back inside; with
``hairpinning=False`` it is dropped before any mapping is made.

*Firewalls.* With ``translate=False`` the box keeps the same per-endpoint
state but never rewrites addresses: a stateful firewall (with
address-and-port-dependent filtering, the ECC report's "symmetric UDP
firewall"); with ``filtering=None`` too, it passes everything (the open
Internet). ``udp_blocked`` and ``allowed_outbound`` are policies applied
before any state is made.

*Port mappings* (RFC 6886, RFC 6887). ``add_port_mapping`` makes an
explicit mapping: endpoint-independent, reachable from anyone, expiring
after its lifetime whatever the traffic, and used by outbound packets from
its internal endpoint in preference to dynamic mappings.

*ICMP.* With ``icmp_on_closed`` an inbound packet that finds no mapping or
is filtered is answered with an ICMP port unreachable, except that an
unsolicited TCP SYN is held for ``tcp_syn_hold`` seconds first and dropped
silently if the inside opens the same connection meanwhile (RFC 5382
REQ-4). ICMP errors arriving at the box are not translated (they are
dropped as unsupported).
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import itertools
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from natkit.addr import Endpoint, canonical_ip, ip_of
from natkit.nat.events import (
    Direction,
    DropReason,
    MappingCreated,
    MappingExpired,
    MappingRemoved,
    NatEvent,
    PacketDropped,
    PacketHairpinned,
    PacketTranslated,
    Side,
)
from natkit.nat.types import Filtering, Mapping
from natkit.packet import IcmpError, IpProto, Packet, TcpFlags, encode_ipv4
from natkit.rng import Rng, default_rng

__all__ = [
    "MappingInfo",
    "NatBehavior",
    "NatBox",
    "Pooling",
    "PortAssignment",
    "Refresh",
    "Side",
]


class PortAssignment(enum.StrEnum):
    """How a new mapping's external port is chosen (RFC 4787 §4.2.1)."""

    PRESERVING = "preserving"
    """The internal port when it is free on the public address, else sequential."""
    SEQUENTIAL = "sequential"
    """The next free port after the last one assigned, wrapping in the range."""
    RANDOM = "random"
    """A random free port from the behaviour's range (the box's ``rng``)."""


class Pooling(enum.StrEnum):
    """Which public address a new mapping gets (RFC 4787 §4.1, REQ-2)."""

    PAIRED = "paired"
    """Every mapping of one internal address uses the same public address."""
    ARBITRARY = "arbitrary"
    """Any public address, chosen per mapping."""


class Refresh(enum.StrEnum):
    """Which packets restart a mapping's idle timer (RFC 4787 §4.3, REQ-6)."""

    OUTBOUND = "outbound"
    BOTH = "both"


@dataclass(frozen=True, slots=True, kw_only=True)
class NatBehavior:
    """What a NAT or firewall does, in RFC 4787 / RFC 5382 terms.

    The defaults are an RFC 4787-conformant NAT with the strict filtering
    most deployed ones use: endpoint-independent mapping (REQ-1),
    address-and-port-dependent filtering, port preservation, paired pooling
    (REQ-2), a 120 s UDP timeout (REQ-5's minimum is 2 min), outbound refresh
    (REQ-6) and RFC 5382 REQ-5's minimum TCP timeouts.

    ``mapping`` is ignored when ``translate`` is false: a firewall keeps one
    state per internal endpoint. ``filtering=None`` (no filter at all) is
    only meaningful without translation: that is the open Internet.
    ``allowed_outbound``, when set, is the only (protocol, destination port)
    traffic that may leave. ``port_range`` bounds assigned external ports
    (both ends included); a preserved port must lie in it too.
    """

    mapping: Mapping = Mapping.ENDPOINT_INDEPENDENT
    filtering: Filtering | None = Filtering.ADDRESS_AND_PORT_DEPENDENT
    port_assignment: PortAssignment = PortAssignment.PRESERVING
    pooling: Pooling = Pooling.PAIRED
    hairpinning: bool = False
    udp_mapping_timeout: float = 120.0
    refresh: Refresh = Refresh.OUTBOUND
    tcp_established_timeout: float = 7440.0
    """RFC 5382 REQ-5: at least 2 hours 4 minutes."""
    tcp_transitory_timeout: float = 240.0
    """RFC 5382 REQ-5: at least 4 minutes (SYN sent, FIN both ways, RST)."""
    tcp_syn_hold: float = 6.0
    """RFC 5382 REQ-4: how long an unsolicited SYN waits before its ICMP."""
    icmp_on_closed: bool = False
    translate: bool = True
    udp_blocked: bool = False
    allowed_outbound: frozenset[tuple[IpProto, int]] | None = None
    port_range: tuple[int, int] = (1024, 65535)

    def __post_init__(self) -> None:
        if self.filtering is None and self.translate:
            raise ValueError("filtering=None (no filter) needs translate=False")
        for name in (
            "udp_mapping_timeout",
            "tcp_established_timeout",
            "tcp_transitory_timeout",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.tcp_syn_hold < 0:
            raise ValueError("tcp_syn_hold must not be negative")
        low, high = self.port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"port_range must be 1 <= low <= high <= 65535, not {self.port_range}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingInfo:
    """A snapshot of one live mapping (see :meth:`NatBox.mappings`)."""

    proto: IpProto
    internal: Endpoint
    external: Endpoint
    expires: float
    explicit: bool


# Address kinds, cached per host string.
_OUTSIDE, _INSIDE, _OURS, _BAD = 0, 1, 2, 3
# Mapping keys and filter modes as small ints: enum hashing and comparison
# are Python-level calls, too slow for the per-packet path.
_EIM, _ADM, _APDM = 0, 1, 2
_NO_FILTER, _EIF, _ADF, _APDF = 0, 1, 2, 3
_MAPPING_MODE = {
    Mapping.ENDPOINT_INDEPENDENT: _EIM,
    Mapping.ADDRESS_DEPENDENT: _ADM,
    Mapping.ADDRESS_AND_PORT_DEPENDENT: _APDM,
}
_FILTER_MODE = {
    None: _NO_FILTER,
    Filtering.ENDPOINT_INDEPENDENT: _EIF,
    Filtering.ADDRESS_DEPENDENT: _ADF,
    Filtering.ADDRESS_AND_PORT_DEPENDENT: _APDF,
}
_KIND_CACHE_LIMIT = 65536
_RANDOM_TRIES = 64
_ICMP_QUOTE = 28  # RFC 792: the IP header and the first 64 bits of data

_UDP, _TCP = IpProto.UDP, IpProto.TCP
_SYN, _ACK, _FIN, _RST = (int(f) for f in (TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN, TcpFlags.RST))
# Connection bits: what each direction has shown (RFC 5382 §5 phases).
_SYN_OUT, _SYN_IN, _FIN_OUT, _FIN_IN, _RESET = 1, 2, 4, 8, 16
_SYN_BOTH, _FIN_BOTH = _SYN_OUT | _SYN_IN, _FIN_OUT | _FIN_IN
_INSIDE_SIDE, _OUTSIDE_SIDE = Side.INSIDE, Side.OUTSIDE


class _Conn:
    """One TCP connection through a mapping, keyed by its remote endpoint."""

    __slots__ = ("bits", "established", "expires")

    def __init__(self) -> None:
        self.bits = 0
        self.established = False
        self.expires = 0.0


class _Table:
    """The mappings of one protocol."""

    __slots__ = ("by_external", "dynamic", "explicit", "next_port", "proto", "used")

    def __init__(self, proto: IpProto) -> None:
        self.proto = proto
        self.dynamic: dict[object, _Binding] = {}  # by mapping key (RFC 4787 §4.1)
        self.explicit: dict[Endpoint, _Binding] = {}  # port mappings, by internal endpoint
        self.by_external: dict[Endpoint, _Binding] = {}  # every live mapping
        self.next_port: dict[str, int] = {}  # sequential assignment, per public address
        self.used: dict[str, int] = {}  # assigned ports, per public address


class _Binding:
    """One mapping. ``heap_time`` is the time of its live expiry-heap entry."""

    __slots__ = (
        "conns",
        "expires",
        "explicit",
        "external",
        "heap_time",
        "internal",
        "key",
        "live",
        "permitted",
        "table",
    )

    def __init__(
        self,
        table: _Table,
        key: object,
        internal: Endpoint,
        external: Endpoint,
        expires: float,
        explicit: bool,
    ) -> None:
        self.table = table
        self.key = key
        self.internal = internal
        self.external = external
        self.expires = expires
        self.heap_time = expires
        self.explicit = explicit
        self.live = True
        self.permitted: set[object] = set()
        self.conns: dict[Endpoint, _Conn] | None = None  # TCP only, made on first use


class NatBox:
    """A NAT or firewall between an inside and an outside; see the module docstring.

    ``public_ips`` are the addresses mappings are made on (at least one when
    the behaviour translates; a firewall may have none). ``inside_networks``
    are the CIDRs behind the box: inside packets must come from them, and
    a firewall forwards inbound packets only to them. ``trace=False`` turns
    off :class:`PacketTranslated` and :class:`PacketHairpinned` events.
    """

    def __init__(
        self,
        behavior: NatBehavior,
        public_ips: Sequence[str],
        *,
        inside_networks: Sequence[str],
        rng: Rng | None = None,
        name: str = "nat",
        trace: bool = True,
    ) -> None:
        self.behavior = behavior
        self.name = name
        self._rng = rng if rng is not None else default_rng()
        self._trace = trace
        self._networks = [ipaddress.IPv4Network(net) for net in inside_networks]
        if not self._networks:
            raise ValueError("a NAT box needs at least one inside network")
        ips = tuple(canonical_ip(ip) for ip in public_ips)
        for ip in ips:
            if ip_of(ip).version != 4:
                raise ValueError(f"public address {ip} is not IPv4")
            if any(ip_of(ip) in net for net in self._networks):
                raise ValueError(f"public address {ip} lies in an inside network")
        if len(set(ips)) != len(ips):
            raise ValueError(f"duplicate public addresses in {ips}")
        if behavior.translate and not ips:
            raise ValueError("a translating NAT box needs at least one public address")
        self._public_ips = ips
        self._base_kinds = dict.fromkeys(ips, _OURS)
        self._kinds: dict[str, int] = dict(self._base_kinds)

        b = behavior
        self._translate = b.translate
        self._open = not b.translate and b.filtering is None
        self._mapping_mode = _MAPPING_MODE[b.mapping] if b.translate else _EIM
        self._filter_mode = _FILTER_MODE[b.filtering]
        self._served = _OURS if b.translate else _INSIDE
        self._udp_blocked = b.udp_blocked
        self._allowed = (
            None
            if b.allowed_outbound is None
            else frozenset((int(proto), port) for proto, port in b.allowed_outbound)
        )
        self._hairpinning = b.hairpinning
        self._udp_timeout = b.udp_mapping_timeout
        self._refresh_both = b.refresh is Refresh.BOTH
        self._icmp = b.icmp_on_closed

        self._udp = _Table(IpProto.UDP)
        self._tcp = _Table(IpProto.TCP)
        self._paired: dict[str, str] = {}
        self._pair_next = 0
        self._heap: list[tuple[float, int, _Binding]] = []
        self._seq = itertools.count()
        self._held: dict[tuple[Endpoint, Endpoint], tuple[float, Side, Packet]] = {}
        self._send: list[tuple[Side, Packet]] = []
        self._events: deque[NatEvent] = deque()

    # -- the core shape ------------------------------------------------------------

    @property
    def public_ips(self) -> tuple[str, ...]:
        """The public addresses, in the order given."""
        return self._public_ips

    def receive_packet(self, packet: Packet, *, side: Side, now: float) -> None:
        """Take a packet that arrived on ``side`` at ``now``.

        What comes of it (the translated packet, a hairpinned one, an ICMP
        error, nothing) is queued for :meth:`packets_to_send`; events say
        why. Never raises for a packet: what the box cannot handle is
        dropped with a :class:`DropReason`.
        """
        if side is _INSIDE_SIDE:
            self._from_inside(packet, now)
        else:
            self._from_outside(packet, now)

    def packets_to_send(self, *, now: float) -> list[tuple[Side, Packet]]:
        """Everything queued since the last call, with the side to put it on."""
        out, self._send = self._send, []
        return out

    def get_timer(self) -> float | None:
        """The next mapping expiry or held-SYN deadline, or ``None``."""
        deadline = self._next_expiry()
        if self._held:
            held = next(iter(self._held.values()))[0]
            if deadline is None or held < deadline:
                deadline = held
        return deadline

    def handle_timer(self, *, now: float) -> None:
        """Expire mappings whose time has come (RFC 4787 §4.3, RFC 5382 §5)
        and send the ICMP errors of unsolicited SYNs held long enough
        (RFC 5382 REQ-4)."""
        self._expire_due(now)
        held = self._held
        while held:
            key, (deadline, side, packet) = next(iter(held.items()))
            if deadline > now:
                break
            del held[key]
            self._send_icmp(packet, side)

    def _next_expiry(self) -> float | None:
        """The earliest live mapping expiry. Refreshes do not touch the heap
        (that would cost a push per packet): stale entries are dropped and
        early ones moved to their mapping's current expiry here."""
        heap = self._heap
        while heap:
            when, _, binding = heap[0]
            if not binding.live or when != binding.heap_time:
                heapq.heappop(heap)
            elif when < binding.expires:
                binding.heap_time = binding.expires
                heapq.heapreplace(heap, (binding.expires, next(self._seq), binding))
            else:
                return when
        return None

    def _expire_due(self, now: float) -> None:
        while (when := self._next_expiry()) is not None and when <= now:
            self._expire(heapq.heappop(self._heap)[2])

    def next_event(self) -> NatEvent | None:
        """The oldest event not yet taken, or ``None``."""
        return self._events.popleft() if self._events else None

    # -- port mappings (NAT-PMP / PCP) -------------------------------------------------

    def add_port_mapping(
        self,
        proto: IpProto,
        internal: Endpoint,
        *,
        external_port: int | None,
        lifetime: float,
        now: float,
    ) -> Endpoint | None:
        """Create or renew an explicit mapping for ``internal``; return the
        external endpoint granted, or ``None`` when impossible.

        The mapping is endpoint-independent and unfiltered (RFC 6887 §11,
        RFC 6886 §3.3): anyone may reach it until ``now + lifetime``, traffic
        does not extend it. ``external_port`` is a suggestion: it is granted
        when free on a public address this host may use, otherwise the port is
        assigned as for a dynamic mapping. A renewal keeps the external
        endpoint and sets the new lifetime. If a live dynamic
        endpoint-independent mapping already serves ``internal``, it becomes
        the explicit one, so the host's already-learned external endpoint
        stays valid. A firewall grants ``internal`` itself (a pinhole); the
        open Internet grants it without keeping state.
        """
        table = self._udp if proto is _UDP else self._tcp if proto is _TCP else None
        if (
            table is None
            or not lifetime > 0
            or (table is self._udp and self._udp_blocked)
            or not 0 < internal.port <= 65535
            or (external_port is not None and not 0 < external_port <= 65535)
            or self._kind(internal.host) != _INSIDE
        ):
            return None
        if self._open:
            return internal
        expires = now + lifetime
        binding = table.explicit.get(internal)
        if binding is not None and binding.expires <= now:
            self._expire(binding)
            binding = None
        if binding is not None:
            self._set_expiry(binding, expires)
            return binding.external
        if self._mapping_mode == _EIM:
            dynamic = table.dynamic.get(internal)
            if dynamic is not None and dynamic.expires <= now:
                self._expire(dynamic)
            elif dynamic is not None:
                del table.dynamic[internal]
                dynamic.explicit = True
                dynamic.key = None
                table.explicit[internal] = dynamic
                self._set_expiry(dynamic, expires)
                self._created(dynamic, None)
                return dynamic.external
        external = (
            self._allocate(table, internal, external_port, now) if self._translate else internal
        )
        if external is None:
            return None
        binding = _Binding(table, None, internal, external, expires, True)
        table.explicit[internal] = binding
        self._add(binding)
        self._created(binding, None)
        return external

    def remove_port_mapping(self, proto: IpProto, internal: Endpoint, *, now: float) -> bool:
        """Delete the explicit mapping of ``internal`` (RFC 6886 §3.4, RFC
        6887 §15: lifetime 0); ``False`` if there is none (or it had expired)."""
        table = self._udp if proto is _UDP else self._tcp if proto is _TCP else None
        binding = None if table is None else table.explicit.get(internal)
        if binding is None:
            return False
        if binding.expires <= now:
            self._expire(binding)
            return False
        self._forget(binding)
        self._events.append(
            MappingRemoved(proto=proto, internal=binding.internal, external=binding.external)
        )
        return True

    def reboot(self, *, now: float) -> int:
        """Forget every mapping, as a NAT that restarts does; return how many
        were alive.

        Dynamic and explicit mappings, the TCP connections through them,
        held SYNs, address pairing and the sequential port counters are all
        lost (a rebooted box starts from its configuration only); nothing
        queued survives either. Each live mapping is reported as
        :class:`MappingRemoved`. Afterwards the box behaves as if new:
        inbound packets find no mapping and outbound ones make new mappings
        (a port-preserving NAT may hand out the same external port again).
        """
        alive = 0
        for table in (self._udp, self._tcp):
            for binding in list(table.by_external.values()):
                binding.live = False
                if binding.expires > now:
                    alive += 1
                    self._events.append(
                        MappingRemoved(
                            proto=table.proto,
                            internal=binding.internal,
                            external=binding.external,
                        )
                    )
            table.dynamic.clear()
            table.explicit.clear()
            table.by_external.clear()
            table.next_port.clear()
            table.used.clear()
        self._paired.clear()
        self._pair_next = 0
        self._heap.clear()
        self._held.clear()
        self._send.clear()
        return alive

    def mappings(self, *, now: float) -> list[MappingInfo]:
        """The mappings alive at ``now``, UDP then TCP, oldest first."""
        return [
            MappingInfo(
                proto=table.proto,
                internal=b.internal,
                external=b.external,
                expires=b.expires,
                explicit=b.explicit,
            )
            for table in (self._udp, self._tcp)
            for b in table.by_external.values()
            if b.expires > now
        ]

    # -- the packet path ---------------------------------------------------------------

    def _from_inside(self, p: Packet, now: float) -> None:
        kinds = self._kinds
        src, dst = p.src, p.dst
        kind = kinds.get(src.host)
        if kind is None:
            kind = self._kind(src.host)
        if kind != _INSIDE:
            reason = DropReason.UNSUPPORTED if kind == _BAD else DropReason.FOREIGN_SOURCE
            self._drop(_INSIDE_SIDE, p, reason)
            return
        kind = kinds.get(dst.host)
        if kind is None:
            kind = self._kind(dst.host)
        if kind in (_BAD, _INSIDE):
            reason = DropReason.UNSUPPORTED if kind == _BAD else DropReason.FOREIGN_DESTINATION
            self._drop(_INSIDE_SIDE, p, reason)
            return
        table = self._table_for(p, _INSIDE_SIDE)
        if table is None:
            return
        if self._allowed is not None and (int(p.proto), dst.port) not in self._allowed:
            self._drop(_INSIDE_SIDE, p, DropReason.BLOCKED)
            return
        if kind == _OURS:
            if self._translate:
                self._hairpin(table, p, now)
            else:
                self._drop(_INSIDE_SIDE, p, DropReason.FOREIGN_DESTINATION)
            return
        if self._open:
            out = p
        else:
            binding = self._outbound(table, p, now)
            if binding is None:
                return
            # Spelled out: twice as fast as p._replace() on the per-packet path.
            out = (
                Packet(p.proto, binding.external, dst, p.payload, p.flags, p.seq, p.ack, p.ttl)
                if self._translate
                else p
            )
        self._send.append((_OUTSIDE_SIDE, out))
        if self._trace:
            self._events.append(PacketTranslated(direction=Direction.OUTBOUND, before=p, after=out))

    def _table_for(self, p: Packet, side: Side) -> _Table | None:
        """The mapping table for ``p``'s protocol, or ``None`` after dropping a
        packet the policy blocks (UDP blocked) or the box does not model."""
        proto = p.proto
        if proto is _UDP:
            if self._udp_blocked:
                self._drop(side, p, DropReason.BLOCKED)
                return None
            return self._udp
        if proto is _TCP:
            return self._tcp
        self._drop(side, p, DropReason.UNSUPPORTED)
        return None

    def _from_outside(self, p: Packet, now: float) -> None:
        kinds = self._kinds
        src, dst = p.src, p.dst
        kind = kinds.get(dst.host)
        if kind is None:
            kind = self._kind(dst.host)
        if kind != self._served:
            reason = DropReason.UNSUPPORTED if kind == _BAD else DropReason.FOREIGN_DESTINATION
            self._drop(_OUTSIDE_SIDE, p, reason)
            return
        kind = kinds.get(src.host)
        if kind is None:
            kind = self._kind(src.host)
        if kind != _OUTSIDE:
            reason = DropReason.UNSUPPORTED if kind == _BAD else DropReason.FOREIGN_SOURCE
            self._drop(_OUTSIDE_SIDE, p, reason)
            return
        table = self._table_for(p, _OUTSIDE_SIDE)
        if table is None:
            return
        if self._open:
            out = p
        else:
            binding = self._inbound(table, p, src, _OUTSIDE_SIDE, now)
            if binding is None:
                return
            out = (
                Packet(p.proto, src, binding.internal, p.payload, p.flags, p.seq, p.ack, p.ttl)
                if self._translate
                else p
            )
        self._send.append((_INSIDE_SIDE, out))
        if self._trace:
            self._events.append(PacketTranslated(direction=Direction.INBOUND, before=p, after=out))

    def _hairpin(self, table: _Table, p: Packet, now: float) -> None:
        """RFC 4787 §6: out through the sender's mapping, back in through the
        target's, with the sender's external endpoint as source (REQ-9)."""
        if not self._hairpinning:
            self._drop(_INSIDE_SIDE, p, DropReason.HAIRPIN_DISABLED)
            return
        sender = self._outbound(table, p, now)
        if sender is None:
            return
        source = sender.external
        target = self._inbound(table, p, source, _INSIDE_SIDE, now)
        if target is None:
            return
        out = Packet(p.proto, source, target.internal, p.payload, p.flags, p.seq, p.ack, p.ttl)
        self._send.append((_INSIDE_SIDE, out))
        if self._trace:
            self._events.append(PacketHairpinned(before=p, after=out))

    def _outbound(self, table: _Table, p: Packet, now: float) -> _Binding | None:
        """Find, or create, and refresh the mapping an outbound packet uses."""
        src, dst = p.src, p.dst
        binding = None
        if table.explicit:
            binding = table.explicit.get(src)
            if binding is not None and binding.expires <= now:
                self._expire(binding)
                binding = None
        if binding is None:
            mode = self._mapping_mode
            key: object = src if mode == _EIM else (src, dst.host) if mode == _ADM else (src, dst)
            binding = table.dynamic.get(key)
            if binding is not None and binding.expires <= now:
                self._expire(binding)
                binding = None
            if binding is None:
                binding = self._create(table, key, p, now)
                if binding is None:
                    return None
        if table is self._tcp and not self._track_tcp(binding, dst, p.flags, True, now):
            self._drop(_INSIDE_SIDE, p, DropReason.NO_CONNECTION)
            return None
        if not binding.explicit:
            if table is self._udp:
                binding.expires = now + self._udp_timeout
            mode = self._filter_mode
            if mode == _APDF:
                binding.permitted.add(dst)
            elif mode == _ADF:
                binding.permitted.add(dst.host)
        return binding

    def _inbound(
        self, table: _Table, p: Packet, remote: Endpoint, side: Side, now: float
    ) -> _Binding | None:
        """The mapping an inbound packet from ``remote`` reaches, refreshed;
        ``None`` (and a drop) if none does or its filter refuses."""
        binding = table.by_external.get(p.dst)
        if binding is None:
            self._refuse(p, remote, side, DropReason.NO_MAPPING, now)
            return None
        if binding.expires <= now:
            self._expire(binding)
            self._refuse(p, remote, side, DropReason.EXPIRED, now)
            return None
        if not binding.explicit:
            mode = self._filter_mode
            if (mode == _APDF and remote not in binding.permitted) or (
                mode == _ADF and remote.host not in binding.permitted
            ):
                self._refuse(p, remote, side, DropReason.FILTERED, now)
                return None
        if table is self._udp:
            if self._refresh_both and not binding.explicit:
                binding.expires = now + self._udp_timeout
        elif not self._track_tcp(binding, remote, p.flags, False, now):
            self._refuse(p, remote, side, DropReason.NO_CONNECTION, now)
            return None
        return binding

    def _track_tcp(
        self, binding: _Binding, remote: Endpoint, flags: int, outbound: bool, now: float
    ) -> bool:
        """Follow the connection with ``remote`` through ``binding`` (RFC 5382
        §5): only a SYN starts one; SYNs both ways make it established; FIN
        both ways or RST make it transitory again. Return ``False`` for a
        packet of no connection."""
        flags = int(flags)
        conns = binding.conns
        if conns is None:
            conns = binding.conns = {}
        conn = conns.get(remote)
        if conn is not None and conn.expires <= now:
            del conns[remote]
            conn = None
        if flags & _SYN:
            if conn is None or (
                not flags & _ACK and (conn.bits & _RESET or conn.bits & _FIN_BOTH == _FIN_BOTH)
            ):
                conn = conns[remote] = _Conn()
                if outbound and self._held:
                    # REQ-4: the inside opened the connection an unsolicited SYN
                    # asked for; that SYN is dropped silently.
                    self._held.pop((binding.external, remote), None)
        elif conn is None:
            return False
        bits = conn.bits
        if flags & _SYN:
            bits |= _SYN_OUT if outbound else _SYN_IN
        if flags & _FIN:
            bits |= _FIN_OUT if outbound else _FIN_IN
        if flags & _RST:
            bits |= _RESET
        established = (
            bits & _SYN_BOTH == _SYN_BOTH and bits & _FIN_BOTH != _FIN_BOTH and not bits & _RESET
        )
        fresh = conn.bits == 0
        conn.bits = bits
        if not (fresh or established != conn.established or outbound or self._refresh_both):
            return True
        lowered = conn.established and not established
        conn.established = established
        b = self.behavior
        timeout = b.tcp_established_timeout if established else b.tcp_transitory_timeout
        conn.expires = now + timeout
        if binding.explicit:
            return True
        if lowered:
            self._set_expiry(binding, max(c.expires for c in conns.values()))
        elif conn.expires > binding.expires:
            binding.expires = conn.expires
        return True

    # -- mappings ----------------------------------------------------------------------

    def _create(self, table: _Table, key: object, p: Packet, now: float) -> _Binding | None:
        """A new dynamic mapping for an outbound packet (RFC 4787 §4.1, RFC 5382 §4.1)."""
        src = p.src
        if table is self._tcp and not p.flags & _SYN:
            self._drop(_INSIDE_SIDE, p, DropReason.NO_MAPPING)
            return None
        if not 0 < src.port <= 65535:
            self._drop(_INSIDE_SIDE, p, DropReason.MALFORMED)
            return None
        if self._translate:
            external = self._allocate(table, src, None, now)
            if external is None:
                self._drop(_INSIDE_SIDE, p, DropReason.PORTS_EXHAUSTED)
                return None
        else:
            external = src
        timeout = self._udp_timeout if table is self._udp else self.behavior.tcp_transitory_timeout
        binding = _Binding(table, key, src, external, now + timeout, False)
        table.dynamic[key] = binding
        self._add(binding)
        self._created(binding, p.dst)
        return binding

    def _allocate(
        self, table: _Table, internal: Endpoint, wanted: int | None, now: float
    ) -> Endpoint | None:
        """An external endpoint no mapping uses (RFC 4787 §4.1 pooling, §4.2.1 ports)."""
        ips = self._public_ips
        if len(ips) == 1:
            candidates: Sequence[str] = ips
        elif self.behavior.pooling is Pooling.PAIRED:
            paired = self._paired.get(internal.host)
            if paired is None:
                paired = self._paired[internal.host] = ips[self._pair_next % len(ips)]
                self._pair_next += 1
            candidates = (paired,)
        else:
            start = self._rng.randrange(len(ips))
            candidates = ips[start:] + ips[:start]
        low, high = self.behavior.port_range
        assignment = self.behavior.port_assignment
        preferred = [wanted] if wanted is not None else []
        if assignment is PortAssignment.PRESERVING:
            preferred.append(internal.port)
        for port in preferred:
            if low <= port <= high:
                for ip in candidates:
                    if self._is_free(table, Endpoint(ip, port), now):
                        return Endpoint(ip, port)
        for ip in candidates:
            free = self._free_port(table, ip, assignment is PortAssignment.RANDOM, now)
            if free is not None:
                return Endpoint(ip, free)
        return None

    def _free_port(self, table: _Table, ip: str, random: bool, now: float) -> int | None:
        low, high = self.behavior.port_range
        size = high - low + 1
        if table.used.get(ip, 0) >= size:
            # Full: mappings that timed out unseen may free some; never scan a full range.
            self._expire_due(now)
            if table.used.get(ip, 0) >= size:
                return None
        if random:
            for _ in range(min(size, _RANDOM_TRIES)):
                port = self._rng.randint(low, high)
                if self._is_free(table, Endpoint(ip, port), now):
                    return port
            start = self._rng.randint(low, high)  # nearly full: scan from a random place
        else:
            start = table.next_port.get(ip, low)
        # Fewer ports are used than the range holds, so the scan finds one.
        scan = (low + (start - low + i) % size for i in range(size))
        port = next(p for p in scan if self._is_free(table, Endpoint(ip, p), now))
        if not random:
            table.next_port[ip] = port + 1 if port < high else low
        return port

    def _is_free(self, table: _Table, endpoint: Endpoint, now: float) -> bool:
        """No live mapping uses ``endpoint`` (one that timed out unseen is expired now)."""
        binding = table.by_external.get(endpoint)
        if binding is None:
            return True
        if binding.expires <= now:
            self._expire(binding)
            return True
        return False

    def _created(self, binding: _Binding, remote: Endpoint | None) -> None:
        self._events.append(
            MappingCreated(
                proto=binding.table.proto,
                internal=binding.internal,
                external=binding.external,
                remote=remote,
                explicit=binding.explicit,
                expires=binding.expires,
            )
        )

    def _set_expiry(self, binding: _Binding, expires: float) -> None:
        """Move an expiry, also earlier (the heap only needs entries for those)."""
        binding.expires = expires
        if expires < binding.heap_time:
            binding.heap_time = expires
            heapq.heappush(self._heap, (expires, next(self._seq), binding))

    def _add(self, binding: _Binding) -> None:
        table = binding.table
        table.by_external[binding.external] = binding
        if self._translate:
            host = binding.external.host
            table.used[host] = table.used.get(host, 0) + 1
        heapq.heappush(self._heap, (binding.expires, next(self._seq), binding))

    def _forget(self, binding: _Binding) -> None:
        binding.live = False
        table = binding.table
        del table.by_external[binding.external]
        if self._translate:
            table.used[binding.external.host] -= 1
        if binding.explicit:
            del table.explicit[binding.internal]
        else:
            del table.dynamic[binding.key]

    def _expire(self, binding: _Binding) -> None:
        self._forget(binding)
        self._events.append(
            MappingExpired(
                proto=binding.table.proto,
                internal=binding.internal,
                external=binding.external,
                explicit=binding.explicit,
            )
        )

    # -- drops and ICMP ----------------------------------------------------------------

    def _drop(self, side: Side, p: Packet, reason: DropReason) -> None:
        self._events.append(PacketDropped(side=side, packet=p, reason=reason))

    def _refuse(
        self, p: Packet, remote: Endpoint, side: Side, reason: DropReason, now: float
    ) -> None:
        """Drop an inbound packet that no mapping accepts; with
        ``icmp_on_closed``, answer it with ICMP port unreachable, after
        ``tcp_syn_hold`` for an unsolicited SYN (RFC 5382 REQ-4)."""
        self._drop(side, p, reason)
        if not self._icmp:
            return
        if p.proto is _TCP and p.flags & _SYN and not p.flags & _ACK:
            key = (p.dst, remote)
            if key not in self._held:
                self._held[key] = (now + self.behavior.tcp_syn_hold, side, p)
            return
        self._send_icmp(p, side)

    def _send_icmp(self, p: Packet, side: Side) -> None:
        try:
            quote = encode_ipv4(p)[:_ICMP_QUOTE]
        except (ValueError, OverflowError, struct.error):
            return  # nothing a valid error could quote
        error = Packet(
            IpProto.ICMP,
            Endpoint(p.dst.host, 0),
            Endpoint(p.src.host, 0),
            quote,
            icmp=IcmpError.PORT_UNREACHABLE,
        )
        self._send.append((side, error))

    def _kind(self, host: str) -> int:
        """Classify an address for this box (cached: hosts repeat)."""
        kind = self._kinds.get(host)
        if kind is not None:
            return kind
        try:
            ip = ip_of(host)
        except ValueError:
            kind = _BAD
        else:
            if ip.version != 4:
                kind = _BAD
            elif any(ip in net for net in self._networks):
                kind = _INSIDE
            else:
                kind = _OUTSIDE
        if len(self._kinds) >= _KIND_CACHE_LIMIT:
            self._kinds = dict(self._base_kinds)
        self._kinds[host] = kind
        return kind
