"""The simulated internet: hosts, links and middleboxes under a virtual clock.

Theory of operation
-------------------
An :class:`Internet` is a tree of address *domains*. The root domain is the
public internet; every middlebox (a NAT or firewall, anything with the
sans-IO packet-core shape of :class:`natkit.nat.box.NatBox`) sits in one
domain with its outside and owns a private domain on its inside. Hosts
attach to exactly one domain. A packet sent by a host is delivered inside
its domain when the destination IP lives there, and otherwise handed to the
domain's gateway middlebox (which translates it into its own outer domain),
or dropped at the root. That is enough for everything the traversal matrix
needs: hosts behind one NAT, behind NATs in tandem (carrier-grade NAT), or
behind the same NAT as their peer.

Every attachment is a :class:`Link` with a one-way delay, jitter, loss and
duplication; all randomness comes from one seeded generator, so a run
replays exactly from its seed. Packets move by timers on the
running loop, which for simulations is a
:class:`~natkit.net.sim.clock.VirtualClockLoop`.

Each host has a :class:`~natkit.net.sim.stack.SimStack` implementing the
stack interface, so natkit's ordinary asyncio code (servers, clients,
drivers) runs on simulated hosts unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from natkit.addr import ip_of
from natkit.nat.events import Side
from natkit.net.pcap import PcapWriter
from natkit.packet import IpProto, Packet

__all__ = [
    "Domain",
    "Internet",
    "Link",
    "Middlebox",
    "PacketCore",
    "Side",
    "SimHost",
    "TraceRecord",
]


class PacketCore(Protocol):
    """What the simulator needs from a NAT or firewall core."""

    def receive_packet(self, packet: Packet, *, side: Any, now: float) -> None: ...

    def packets_to_send(self, *, now: float) -> list[tuple[Any, Packet]]: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, *, now: float) -> None: ...

    def next_event(self) -> Any | None: ...


@dataclass(frozen=True, slots=True)
class Link:
    """One-way characteristics of an attachment, applied in both directions."""

    delay: float = 0.005
    jitter: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    plain: bool = field(init=False, repr=False, compare=False)
    """A fixed delay and nothing random: the simulator's fast path."""

    def __post_init__(self) -> None:
        if (
            self.delay < 0
            or self.jitter < 0
            or not 0 <= self.loss <= 1
            or not 0 <= self.duplicate <= 1
        ):
            raise ValueError(f"impossible link {self}")
        object.__setattr__(self, "plain", not (self.jitter or self.loss or self.duplicate))


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One step of one packet's path (``what``: sent, arrived at a middlebox,
    delivered to a host, dropped)."""

    time: float
    where: str
    what: str
    packet: Packet
    note: str = ""


@dataclass(eq=False)
class Domain:
    """An address realm: the public internet, or the inside of a middlebox."""

    name: str
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    gateway: Middlebox | None = None  # None for the root (the internet)
    hosts: dict[str, SimHost] = field(default_factory=dict)  # by IP
    middleboxes: dict[str, Middlebox] = field(default_factory=dict)  # by outside IP
    routes: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Middlebox]] = field(
        default_factory=list
    )  # networks behind non-translating middleboxes (firewalls)
    _next_host: int = 2
    local_cache: dict[str, bool] = field(default_factory=dict)  # ip -> inside this domain?

    def allocate_ip(self) -> str:
        net = self.networks[0]
        while True:
            candidate = str(net.network_address + self._next_host)
            self._next_host += 1
            if candidate not in self.hosts and candidate not in self.middleboxes:
                return candidate


class SimHost:
    """A host: IPs in one domain, a link to it, and a stack for applications."""

    def __init__(
        self, internet: Internet, name: str, domain: Domain, ips: list[str], link: Link
    ) -> None:
        from natkit.net.sim.stack import SimStack

        self.internet = internet
        self.name = name
        self.domain = domain
        self.ips = ips
        self.link = link
        self.stack = SimStack(self)
        self.received: Callable[[Packet], None] = self.stack.deliver

    @property
    def ip(self) -> str:
        return self.ips[0]

    def send(self, packet: Packet) -> None:
        """Put a packet on this host's link."""
        self.internet.transmit(packet, self.domain, self.link, self.name)

    def __repr__(self) -> str:
        return f"<SimHost {self.name} {self.ips}>"


class Middlebox:
    """A NAT or firewall core between an outer and an inner domain."""

    def __init__(
        self,
        internet: Internet,
        name: str,
        core: PacketCore,
        outer: Domain,
        inner: Domain,
        public_ips: list[str],
        link: Link,
        inside_link: Link,
    ) -> None:
        self.internet = internet
        self.name = name
        self.core = core
        self.outer = outer
        self.inner = inner
        self.public_ips = public_ips
        self.link = link
        self.inside_link = inside_link
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.packets = 0
        self.gateway_host: SimHost | None = None
        self._inside_label = f"{name}:{Side.INSIDE.value}"  # trace/capture names,
        self._outside_label = f"{name}:{Side.OUTSIDE.value}"  # built once, not per packet
        self.on_event: Callable[[Any], None] | None = None
        """Receives the core's events (NAT mappings, translations, drops); they
        are drained after every call into the core either way."""

    def arrive(self, packet: Packet, side: Side) -> None:
        self.packets += 1
        net = self.internet
        if net.capturing or net.tracing:
            label = self._inside_label if side is Side.INSIDE else self._outside_label
            if net.capturing:
                net.observe(label, packet)
            if net.tracing:
                net.record(label, "arrived", packet)
        self.core.receive_packet(packet, side=side, now=net.loop.time())
        self.flush()

    def flush(self) -> None:
        core = self.core
        net = self.internet
        for side, out in core.packets_to_send(now=net.loop.time()):
            if side is Side.OUTSIDE:
                net.transmit(out, self.outer, self.link, self._outside_label)
            else:
                net.transmit(out, self.inner, self.inside_link, self._inside_label)
        on_event = self.on_event
        while (event := core.next_event()) is not None:
            if on_event is not None:
                on_event(event)
        self.rearm()

    def rearm(self) -> None:
        """Re-arm the core's timer (also after a service changed the core)."""
        deadline = self.core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = (
                None if deadline is None else self.internet.loop.call_at(deadline, self._on_timer)
            )

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(now=self.internet.loop.time())
        self.flush()

    def __repr__(self) -> str:
        return f"<Middlebox {self.name} {self.public_ips}>"


class Internet:
    """Build a topology, then run asyncio code on its hosts' stacks.

    Create it inside a running :class:`~natkit.net.sim.clock.VirtualClockLoop`
    (``run_virtual``); ``seed`` fixes every random choice of the network.
    """

    def __init__(
        self, *, seed: int = 0, trace: bool = False, default_link: Link | None = None
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(seed)
        self.default_link = default_link or Link()
        self.root = Domain(
            "internet", [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
        )
        self.hosts: dict[str, SimHost] = {}
        self.middleboxes: dict[str, Middlebox] = {}
        self.tracing = trace
        self.trace: list[TraceRecord] = []
        self.taps: list[Callable[[float, str, Packet], None]] = []
        self._captures: dict[str, list[PcapWriter]] = {}
        self._buckets: dict[float, list[tuple[Callable[..., None], tuple[Any, ...]]]] = {}
        self.delivered = 0
        self.dropped = 0

    # -- topology --------------------------------------------------------------------

    def add_host(
        self,
        name: str,
        ips: str | Sequence[str] | None = None,
        *,
        behind: Middlebox | None = None,
        link: Link | None = None,
    ) -> SimHost:
        """A host on the internet (give its IPs) or behind ``behind`` (IPs optional)."""
        if name in self.hosts or name in self.middleboxes:
            raise ValueError(f"name {name!r} is taken")
        domain = behind.inner if behind is not None else self.root
        if ips is None:
            if behind is None:
                raise ValueError("a host on the internet needs an IP")
            ip_list = [domain.allocate_ip()]
        else:
            ip_list = [ips] if isinstance(ips, str) else list(ips)
        for ip in ip_list:
            self._claim(domain, ip)
        host = SimHost(self, name, domain, ip_list, link or self.default_link)
        for ip in ip_list:
            domain.hosts[ip] = host
        self.hosts[name] = host
        return host

    def add_middlebox(
        self,
        name: str,
        core: PacketCore,
        public_ips: Sequence[str],
        *,
        inside: str | Sequence[str] = "192.168.1.0/24",
        behind: Middlebox | None = None,
        link: Link | None = None,
        inside_link: Link | None = None,
        routed: bool = False,
        gateway_ip: str | None = None,
    ) -> Middlebox:
        """A NAT/firewall whose outside holds ``public_ips`` (in the internet or
        inside ``behind``, for NATs in tandem) and whose inside is ``inside``.

        ``routed=True`` is for a box that does not translate (a firewall): the
        outer domain then routes the inside networks to it, so the hosts
        behind it are reachable at their own (public) addresses.

        ``gateway_ip`` gives the box an address of its own on the inside (the
        router's LAN address) with a stack, :attr:`Middlebox.gateway_host`, on
        which services such as NAT-PMP/PCP run; inside hosts reach it directly."""
        if name in self.hosts or name in self.middleboxes:
            raise ValueError(f"name {name!r} is taken")
        outer = behind.inner if behind is not None else self.root
        nets = [inside] if isinstance(inside, str) else list(inside)
        inner = Domain(f"{name}-inside", [ipaddress.ip_network(n) for n in nets])
        for ip in public_ips:
            self._claim(outer, ip)
        box = Middlebox(
            self,
            name,
            core,
            outer,
            inner,
            list(public_ips),
            link or self.default_link,
            inside_link or Link(delay=0.001),
        )
        inner.gateway = box
        for ip in public_ips:
            outer.middleboxes[ip] = box
        if routed:
            outer.routes.extend((net, box) for net in inner.networks)
        if gateway_ip is not None:
            self._claim(inner, gateway_ip)
            gw = SimHost(self, f"{name}-gateway", inner, [gateway_ip], Link(delay=0.0))
            inner.hosts[gateway_ip] = gw
            box.gateway_host = gw
        self.middleboxes[name] = box
        return box

    def _claim(self, domain: Domain, ip: str) -> None:
        addr = ipaddress.ip_address(ip)
        if domain is not self.root and not any(addr in net for net in domain.networks):
            raise ValueError(f"{ip} is not inside {domain.name} ({domain.networks})")
        if ip in domain.hosts or ip in domain.middleboxes:
            raise ValueError(f"{ip} is already used in {domain.name}")

    # -- packet movement ---------------------------------------------------------------

    def transmit(self, packet: Packet, domain: Domain, link: Link, origin: str) -> None:
        """Move ``packet`` into ``domain`` over ``link`` (called by senders).

        Routing is static, so the whole hop - the sender's link, then the
        receiver's - is decided now and scheduled as one event.
        """
        if self.tracing or self.taps or self._captures:
            self._observe_send(origin, packet)
        target = self._route(packet, domain)
        if target is None:
            self._drop(domain.name, packet, "no route")
            return
        rx_link, fn, args = target
        now = self.loop.time()
        if link.plain and rx_link.plain:
            self._at(now + link.delay + rx_link.delay, fn, *args)
            return
        rng = self.rng
        if (link.loss and rng.random() < link.loss) or (
            rx_link.loss and rng.random() < rx_link.loss
        ):
            self._drop(origin, packet, "link loss")
            return
        copies = 2 if link.duplicate and rng.random() < link.duplicate else 1
        for _ in range(copies):
            delay = link.delay + rx_link.delay
            if link.jitter:
                delay += rng.uniform(-link.jitter, link.jitter)
            if rx_link.jitter:
                delay += rng.uniform(-rx_link.jitter, rx_link.jitter)
            self._at(now + max(0.0, delay), fn, *args)

    def _observe_send(self, origin: str, packet: Packet) -> None:
        if self.tracing:
            self.record(origin, "sent", packet)
        for tap in self.taps:
            tap(self.loop.time(), origin, packet)
        if self._captures:
            self.observe(origin, packet)

    def _route(
        self, packet: Packet, domain: Domain
    ) -> tuple[Link, Callable[..., None], tuple[Any, ...]] | None:
        """Where ``packet`` goes in ``domain``: (receiver's link, handler, args)."""
        dst = packet.dst.host
        host = domain.hosts.get(dst)
        if host is not None:
            return host.link, self._deliver_host, (host, packet)
        box = domain.middleboxes.get(dst)
        if box is not None:
            return box.link, box.arrive, (packet, Side.OUTSIDE)
        if domain.routes:
            addr = ip_of(dst)
            for net, routed in domain.routes:
                if addr in net:
                    return routed.link, routed.arrive, (packet, Side.OUTSIDE)
        gateway = domain.gateway
        if gateway is not None and not self._local(domain, dst):
            return gateway.inside_link, gateway.arrive, (packet, Side.INSIDE)
        return None

    def _at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        # Packets sent at the same instant over the same kind of link arrive at
        # the same instant: one loop timer per distinct time, not per packet,
        # keeps asyncio's timer heap small (FIFO within a time, so runs replay).
        bucket = self._buckets.get(when)
        if bucket is None:
            self._buckets[when] = [(fn, args)]
            self.loop.call_at(when, self._run_bucket, when)
        else:
            bucket.append((fn, args))

    def _run_bucket(self, when: float) -> None:
        for fn, args in self._buckets.pop(when):
            fn(*args)
        # A delivery may have reached a service that changed a core directly
        # (a NAT-PMP request adding a port mapping): keep every timer current.
        for box in self.middleboxes.values():
            box.rearm()

    def _deliver_host(self, host: SimHost, packet: Packet) -> None:
        self.delivered += 1
        if self._captures:
            self.observe(host.name, packet)
        if self.tracing:
            self.record(host.name, "delivered", packet)
        host.received(packet)

    @staticmethod
    def _local(domain: Domain, ip: str) -> bool:
        cache = domain.local_cache
        local = cache.get(ip)
        if local is None:
            if len(cache) >= 65536:
                cache.clear()
            addr = ip_of(ip)
            local = cache[ip] = any(addr in net for net in domain.networks)
        return local

    def _drop(self, where: str, packet: Packet, why: str) -> None:
        self.dropped += 1
        if self.tracing:
            self.record(where, "dropped", packet, why)

    def record(self, where: str, what: str, packet: Packet, note: str = "") -> None:
        """Append a step to the trace (``what``: sent, arrived, delivered, dropped)."""
        self.trace.append(TraceRecord(self.loop.time(), where, what, packet, note))

    # -- captures ---------------------------------------------------------------------

    def capture(self, link: str, path: str | Path) -> PcapWriter:
        """Write every packet crossing ``link`` to a pcap file.

        ``link`` names a host (its attachment) or one side of a middlebox,
        ``"NAME:inside"`` or ``"NAME:outside"``. Close the writer (or call
        :meth:`close_captures`) when done.
        """
        known = set(self.hosts) | {
            f"{name}:{side}" for name in self.middleboxes for side in (Side.INSIDE, Side.OUTSIDE)
        }
        if link not in known:
            raise ValueError(f"no link {link!r}; known: {sorted(known)}")
        writer = PcapWriter(path)
        self._captures.setdefault(link, []).append(writer)
        return writer

    def close_captures(self) -> None:
        for writers in self._captures.values():
            for writer in writers:
                writer.close()
        self._captures.clear()

    @property
    def capturing(self) -> bool:
        return bool(self._captures)

    def observe(self, link: str, packet: Packet) -> None:
        """Record ``packet`` crossing ``link`` in that link's captures, if any."""
        for writer in self._captures.get(link, ()):
            writer.write(self.loop.time(), packet)

    # -- conveniences ----------------------------------------------------------------

    def trace_lines(self, records: Iterable[TraceRecord] | None = None) -> list[str]:
        """Human-readable trace, one line per step."""
        out = []
        for r in records if records is not None else self.trace:
            proto = "UDP" if r.packet.proto == IpProto.UDP else r.packet.proto.name
            note = f" ({r.note})" if r.note else ""
            out.append(
                f"{r.time:10.6f} {r.where:>12} {r.what:<9} {proto} {r.packet.src} -> {r.packet.dst}"
                f" {len(r.packet.payload)}B{note}"
            )
        return out
