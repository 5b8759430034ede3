"""mDNS for ICE on any stack: resolving peers' ``.local`` candidates and
answering for our own.

:class:`AsyncMdnsResolver` drives :class:`~natkit.ice.mdns.MdnsResolver`:
``await resolver.resolve(name)`` gives the IP or ``None`` after the
timeout, and :meth:`AsyncMdnsResolver.resolve_candidate` turns a remote
:class:`~natkit.ice.sdp.CandidateLine` into the agent's
:class:`~natkit.ice.candidate.Candidate` (``None``: drop it,
draft-ietf-mmusic-mdns-ice-candidates §3.2). Lines that are not mDNS pass
through unresolved. Questions leave from one ephemeral UDP socket with the
QU bit (RFC 6762 §5.4), so legacy-unicast (§6.7) and QU-honouring
responders answer there. Some responders (Chromium's) answer a one-shot
query by multicast to 224.0.0.251:5353 all the same, so when the group is
IPv4 multicast and the stack can join groups
(:class:`~natkit.net.stack.MulticastStack`, the OS stack) the resolver also
listens on the group, joined on one interface: ``interface`` (an address of
it; by default the one the host routes the group through). The query socket
is then bound to that address, so the question goes out that interface
only (Linux sends link-local multicast from a bound source address out its
interface) and answers come back on it; tests use ``interface="127.0.0.1"``
so that nothing reaches a real LAN.

:class:`AsyncMdnsResponder` drives :class:`~natkit.ice.mdns.MdnsResponder`
on ``listen`` (0.0.0.0:5353 for real use). It does not join the group, so on
a real LAN the socket receives the group's queries only where the platform
delivers them to a port-5353 socket without a join (Linux does once any
socket joined the group on the interface); tests run the pair over
loopback, where the resolver's ``group`` is the responder's own address.
"""

from __future__ import annotations

import asyncio

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError
from natkit.ice.candidate import Candidate
from natkit.ice.mdns import (
    MDNS_GROUP_V4,
    MDNS_PORT,
    MdnsEvent,
    MdnsResolver,
    MdnsResolverConfig,
    MdnsResponder,
    NameResolved,
    NameUnresolved,
)
from natkit.ice.sdp import CandidateLine
from natkit.net.driver import CoreDriver
from natkit.net.stack import DatagramEndpoint, MulticastStack, Stack

__all__ = ["AsyncMdnsResolver", "AsyncMdnsResponder"]

_MDNS_LISTEN = Endpoint("0.0.0.0", MDNS_PORT)


class AsyncMdnsResolver:
    """One-shot mDNS queries from one socket (see the module docstring)."""

    def __init__(
        self,
        stack: Stack,
        config: MdnsResolverConfig | None = None,
        *,
        interface: str | None = None,
        listen_group: bool = True,
    ) -> None:
        self.stack = stack
        self.config = config or MdnsResolverConfig()
        self.interface = interface
        self.listen_group = listen_group
        self._group_sock: DatagramEndpoint | None = None
        self.core = MdnsResolver(self.config)
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[tuple[str, bool], list[asyncio.Future[str | None]]] = {}
        """Lookups waiting, by (name, ipv6): the core's query keys."""
        self._sock: DatagramEndpoint | None = None
        self._driver: CoreDriver[MdnsEvent] | None = None

    async def open(self) -> AsyncMdnsResolver:
        group = self.config.group
        wildcard = "::" if group.family == Family.IPV6 else "0.0.0.0"
        if group.ip.is_loopback:
            wildcard = group.host
        stack = self.stack
        if self.interface is not None and group.family == Family.IPV4:
            wildcard = self.interface
        if (
            self.listen_group
            and group.family == Family.IPV4
            and group.ip.is_multicast
            and isinstance(stack, MulticastStack)
        ):
            interface = self.interface or await stack.source_address_for(group)
            self._group_sock = await stack.open_udp_multicast(
                group, self._on_datagram, interface=interface
            )
            wildcard = interface
        self._sock = await stack.open_udp(Endpoint(wildcard, 0), self._on_datagram)
        self._driver = CoreDriver(self.core, {None: self._sock}, self._on_event)
        return self

    async def resolve(self, name: str, *, ipv6: bool = False) -> str | None:
        """The address of ``name``, or ``None`` when nobody answered in time."""
        if self._driver is None:
            await self.open()
        assert self._driver is not None  # open() made it
        key = name.rstrip(".").lower()
        fut: asyncio.Future[str | None] = self._loop.create_future()
        self._waiters.setdefault((key, ipv6), []).append(fut)
        self.core.resolve(key, now=self._loop.time(), ipv6=ipv6)
        self._driver.flush()
        return await fut

    async def resolve_candidate(self, line: CandidateLine) -> Candidate | None:
        """The remote candidate of ``line``: its mDNS name resolved (in the
        family of its related address, IPv4 by default); ``None`` when the
        name does not resolve. Lines with IP addresses need no lookup; plain
        FQDNs are not looked up here and give ``None`` (RFC 8839 §5.1 leaves
        them to the application's resolver)."""
        if not line.is_fqdn:
            return line.to_candidate()
        if not line.is_mdns:
            return None
        ipv6 = line.related_address is not None and ":" in line.related_address
        address = await self.resolve(line.address, ipv6=ipv6)
        if address is None:
            return None
        return line.to_candidate(resolved_address=address)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        if self._sock is not None:
            self._sock.close()
        if self._group_sock is not None:
            self._group_sock.close()
        for futs in self._waiters.values():
            for fut in futs:
                if not fut.done():
                    fut.set_result(None)
        self._waiters.clear()

    async def __aenter__(self) -> AsyncMdnsResolver:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _on_datagram(self, data: bytes, remote: Endpoint) -> None:
        if self._driver is None:
            return
        self.core.receive_datagram(data, remote, now=self._loop.time())
        self._driver.flush()

    def _on_event(self, event: MdnsEvent) -> None:
        match event:
            case NameResolved(name=name, address=address, ipv6=ipv6):
                result: str | None = address
            case NameUnresolved(name=name, ipv6=ipv6):
                result = None
        for fut in self._waiters.pop((name, ipv6), []):
            if not fut.done():
                fut.set_result(result)


class AsyncMdnsResponder:
    """Answers for our own ``.local`` names on ``listen``."""

    def __init__(
        self,
        stack: Stack,
        names: dict[str, str] | None = None,
        *,
        listen: Endpoint = _MDNS_LISTEN,
        group: Endpoint = MDNS_GROUP_V4,
    ) -> None:
        self.stack = stack
        self.listen = listen
        self.core = MdnsResponder(names, group=group)
        self._sock: DatagramEndpoint | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def local_endpoint(self) -> Endpoint:
        if self._sock is None:
            raise LocalProtocolError("start() the responder first")
        return self._sock.local_endpoint

    async def start(self) -> AsyncMdnsResponder:
        self._sock = await self.stack.open_udp(self.listen, self._on_datagram)
        return self

    def register(self, name: str, ip: str) -> None:
        self.core.register(name, ip)

    def _on_datagram(self, data: bytes, remote: Endpoint) -> None:
        sock = self._sock
        if sock is None:
            return
        self.core.receive_datagram(data, remote, now=self._loop.time())
        for out, to, _ in self.core.datagrams_to_send(now=self._loop.time()):
            sock.send(out, to)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    async def __aenter__(self) -> AsyncMdnsResponder:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()
