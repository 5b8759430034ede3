"""Candidate gathering on any stack: sockets, streams and the Gatherer core.

:class:`AsyncGatherer` is the asyncio driver of
:class:`~natkit.ice.gather.Gatherer`. :meth:`AsyncGatherer.open` lists the
stack's addresses, keeps those :func:`~natkit.ice.gather.select_host_addresses`
allows, and binds one UDP socket per address and component - inside
``GatherConfig.port_range`` when the operator restricts local ports (ports
are tried from a random point of the range onwards, up to
``max_port_attempts`` of them, so two agents on one host do not collide
on the first port every time). :meth:`AsyncGatherer.start` runs the core;
candidates come out of ``async for candidate in gatherer`` (ending at
GatheringCompleted) or the ``on_candidate`` callback, as they trickle in.

TURN over TCP/TLS: each :class:`TurnConnectionRequested` becomes a task that
connects (``tls`` context, the server's name) from the base's IP within the
server's own deadline and reports back to the core; received bytes go to
``receive_stream_data``, and what the core wants written is written after
every call into it.

Port mapping (``GatherConfig.port_mapping``): for each private IPv4 base the
driver asks the NAT itself for a mapping of the base's port
(:func:`natkit.nat.portmap.aio.map_port`: PCP, then NAT-PMP, then UPnP IGD,
each within ``port_mapping_timeout``), holding gathering's completion until
the answer (:meth:`~natkit.ice.gather.Gatherer.hold_completion`); a public
mapping becomes a server-reflexive candidate of that base. Mappings are
renewed at half their lifetime while the gatherer is open and deleted by
:meth:`close`.

The sockets stay open after gathering: :attr:`AsyncGatherer.sockets` (by
base) is what the ICE agent's driver sends its checks and media from, and
datagrams that are not gathering's (the core's ``receive_datagram`` says so)
go to ``on_datagram`` - set it to take the sockets over. :meth:`close`
releases the TURN allocations and closes everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from natkit.addr import Endpoint, Family, ip_of
from natkit.errors import LocalProtocolError, TransportError
from natkit.ice.candidate import Candidate
from natkit.ice.gather import Gatherer, TurnAllocation, select_host_addresses
from natkit.ice.gather_config import GatherConfig, HostAddress, LocalBase
from natkit.ice.gather_events import (
    CandidateGathered,
    GatherEvent,
    GatheringCompleted,
    ServerFailed,
    TurnConnectionAbandoned,
    TurnConnectionRequested,
)
from natkit.nat.portmap.aio import PortMappingError, map_port, unmap_port
from natkit.nat.portmap.mapping import PortMapping
from natkit.net.driver import CoreTimer
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection
from natkit.packet import IpProto

__all__ = ["AsyncGatherer", "DatagramCallback"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

DatagramCallback = Callable[[bytes, Endpoint, Endpoint], None]
"""``(data, remote, local)`` for a datagram on a base socket that is not gathering's."""


class AsyncGatherer:
    """Gather candidates on ``stack`` (see the module docstring)."""

    def __init__(
        self,
        stack: Stack,
        config: GatherConfig | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        on_candidate: Callable[[Candidate], None] | None = None,
        on_datagram: DatagramCallback | None = None,
        max_port_attempts: int = 100,
    ) -> None:
        self.stack = stack
        self.config = config or GatherConfig()
        self.tls = tls
        self.on_candidate = on_candidate
        self.on_datagram = on_datagram
        self.max_port_attempts = max_port_attempts
        self.sockets: dict[Endpoint, DatagramEndpoint] = {}
        self.streams: dict[int, StreamConnection] = {}
        self.failures: list[ServerFailed] = []
        self.mappings: dict[Endpoint, PortMapping] = {}  # by base: granted by the NAT
        self.core: Gatherer | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Candidate | None] = asyncio.Queue()
        self._done = asyncio.Event()
        self._timer: CoreTimer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._released = asyncio.Event()  # set once close() saw every allocation end

    # -- setup -----------------------------------------------------------------

    async def open(self, addresses: Sequence[HostAddress] | None = None) -> list[LocalBase]:
        """Bind the base sockets: one per selected address and component.

        ``addresses`` defaults to the stack's own (``local_addresses()``).
        Raises :class:`TransportError` when no socket could be opened."""
        if self.core is not None:
            raise LocalProtocolError("already open")
        if addresses is None:
            addresses = [HostAddress(a.interface, a.ip) for a in self.stack.local_addresses()]
        chosen = select_host_addresses(addresses, self.config)
        bases: list[LocalBase] = []
        for addr in chosen:
            for component in range(1, self.config.components + 1):
                try:
                    sock = await self._bind(addr.ip)
                except TransportError as exc:
                    log.warning("no socket on %s: %s", addr.ip, exc)
                    continue
                self.sockets[sock.local_endpoint] = sock
                bases.append(
                    LocalBase(
                        address=sock.local_endpoint,
                        component=component,
                        interface=addr.interface,
                    )
                )
        if not bases:
            raise TransportError("no local address to gather on")
        self.core = Gatherer(bases, self.config)
        self._timer = CoreTimer(self.core, self._flush)
        return bases

    async def _bind(self, ip: str) -> DatagramEndpoint:
        holder: list[Endpoint] = []

        def on_datagram(data: bytes, remote: Endpoint) -> None:
            if holder:
                self._on_datagram(data, remote, holder[0])

        for port in self._ports():
            try:
                sock = await self.stack.open_udp(Endpoint(ip, port), on_datagram)
            except TransportError:
                continue
            holder.append(sock.local_endpoint)
            return sock
        low, high = self.config.port_range or (0, 0)
        raise TransportError(f"no free UDP port on {ip} in {low}-{high}")

    def _ports(self) -> list[int]:
        if self.config.port_range is None:
            return [0]
        low, high = self.config.port_range
        size = high - low + 1
        first = self.config.rng.randrange(size)
        return [low + (first + i) % size for i in range(min(size, self.max_port_attempts))]

    # -- running -----------------------------------------------------------------

    def start(self) -> None:
        """Start gathering (after :meth:`open`); host candidates come at once."""
        core = self._require_core()
        holds = [(base.address, core.hold_completion()) for base in self._mappable_bases()]
        core.start(now=self._loop.time())
        self._flush()
        for base, token in holds:
            self._spawn(self._map_base(base, token))

    def _mappable_bases(self) -> list[LocalBase]:
        """The bases a NAT may map: private (not global) IPv4 addresses."""
        if not self.config.port_mapping:
            return []
        return [
            b
            for b in self._require_core().bases
            if b.address.family is Family.IPV4 and not ip_of(b.address.host).is_global
        ]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request_mapping(
        self, base: Endpoint, previous: PortMapping | None
    ) -> PortMapping | None:
        cfg = self.config
        try:
            return await map_port(
                self.stack,
                cfg.port_mapping_gateway,
                IpProto.UDP,
                base.port,
                lifetime=cfg.port_mapping_lifetime,
                methods=cfg.port_mapping,
                timeout=cfg.port_mapping_timeout,
                local_ip=base.host,
                previous=previous,
                description="natkit ICE",
            )
        except (PortMappingError, TransportError, OSError) as exc:
            log.info("gathering: no port mapping for %s: %s", base, exc)
            return None

    async def _map_base(self, base: Endpoint, token: int) -> None:
        """One base's mapping (RFC 8445 §5.1.1.2 treats it as server
        reflexive), then its renewals until close."""
        core = self._require_core()
        try:
            mapping = await self._request_mapping(base, None)
            if mapping is not None and not self._closed:
                self.mappings[base] = mapping
                core.add_mapping(mapping)
        finally:
            core.release_completion(token)
            self._flush()
        while mapping is not None and mapping.lifetime > 0 and not self._closed:
            await asyncio.sleep(max(mapping.lifetime / 2, 1.0))
            renewed = await self._request_mapping(base, mapping)
            if renewed is None or self._closed:
                return
            if renewed.external != mapping.external:
                core.add_mapping(renewed)  # the NAT moved it: a new candidate
                self._flush()
            self.mappings[base] = mapping = renewed

    async def gather(self) -> tuple[Candidate, ...]:
        """Open (if needed), start (if needed) and wait for GatheringCompleted;
        returns every candidate, highest priority first."""
        if self.core is None:
            await self.open()
        core = self._require_core()
        if not core.started:
            self.start()
        await self._done.wait()
        return core.candidates

    @property
    def bases(self) -> tuple[LocalBase, ...]:
        return self._require_core().bases

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return self._require_core().candidates

    @property
    def completed(self) -> bool:
        return self._done.is_set()

    def add_port_mapping(
        self, base: Endpoint, external: Endpoint, *, gateway: Endpoint | None = None
    ) -> Candidate | None:
        """See :meth:`Gatherer.add_port_mapping`."""
        cand = self._require_core().add_port_mapping(base, external, gateway=gateway)
        self._flush()
        return cand

    def take_allocations(self) -> list[tuple[TurnAllocation, StreamConnection | None]]:
        """Hand the TURN allocations to the agent (:meth:`Gatherer.take_allocations`),
        each with its TCP/TLS connection (``None`` over UDP, where the base
        socket in :attr:`sockets` carries it). The connections are no longer
        the gatherer's: :meth:`close` leaves them open, and the caller sets
        their handler."""
        out: list[tuple[TurnAllocation, StreamConnection | None]] = []
        for alloc in self._require_core().take_allocations():
            conn = None
            if alloc.connection_id is not None:
                conn = self.streams.pop(alloc.connection_id, None)
            out.append((alloc, conn))
        return out

    async def __aiter__(self) -> AsyncIterator[Candidate]:
        """Candidates as they are gathered, until gathering completes (each
        candidate is delivered to one iterator)."""
        while True:
            cand = await self._queue.get()
            if cand is None:
                self._queue.put_nowait(None)  # other iterators end too
                return
            yield cand

    async def close(self, *, timeout: float = 2.0) -> None:
        """Release the TURN allocations (waiting up to ``timeout`` for their
        answers) and close every socket and stream."""
        if self._closed:
            return
        self._closed = True
        core = self.core
        if core is not None and core.allocations:
            core.release_allocations(now=self._loop.time())
            self._flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._released.wait()
        if self._timer is not None:
            self._timer.close()
        for task in list(self._tasks):
            task.cancel()
        for mapping in list(self.mappings.values()):
            with contextlib.suppress(PortMappingError, TransportError, OSError):
                await unmap_port(self.stack, mapping, timeout=min(timeout, 1.0) or 0.5)
        self.mappings.clear()
        for conn in list(self.streams.values()):
            conn.abort()
        sockets = list(self.sockets.values())
        for sock in sockets:
            sock.close()
        for sock in sockets:
            await sock.wait_closed()
        self._finish()

    async def __aenter__(self) -> AsyncGatherer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------

    def _require_core(self) -> Gatherer:
        if self.core is None:
            raise LocalProtocolError("open() the gatherer first")
        return self.core

    def _on_datagram(self, data: bytes, remote: Endpoint, local: Endpoint) -> None:
        core = self.core
        if core is None:
            return
        if core.receive_datagram(data, remote, local=local, now=self._loop.time()):
            self._flush()
        elif self.on_datagram is not None:
            self.on_datagram(data, remote, local)

    def _flush(self) -> None:
        core = self.core
        if core is None:
            return
        now = self._loop.time()
        for data, remote, local in core.datagrams_to_send(now=now):
            sock = self.sockets.get(local) if local is not None else None
            if sock is not None and not sock.closed:
                sock.send(data, remote)
        for cid, data in core.stream_data_to_send():
            conn = self.streams.get(cid)
            if conn is not None and not conn.closed:
                conn.write(data)
        while (event := core.next_event()) is not None:
            self._on_event(event)
        if self._closed and all(a.client.state.ended for a in core.allocations):
            self._released.set()
        if self._timer is not None:
            self._timer.arm()

    def _on_event(self, event: GatherEvent) -> None:
        match event:
            case CandidateGathered(candidate=candidate):
                self._queue.put_nowait(candidate)
                if self.on_candidate is not None:
                    self.on_candidate(candidate)
            case GatheringCompleted():
                self._finish()
            case ServerFailed():
                log.info("gathering: %s via %s failed: %s", event.server, event.local, event.reason)
                self.failures.append(event)
            case TurnConnectionRequested():
                task = self._loop.create_task(self._connect(event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            case TurnConnectionAbandoned(connection_id=cid):
                conn = self.streams.pop(cid, None)
                if conn is not None:
                    conn.abort()

    def _finish(self) -> None:
        if not self._done.is_set():
            self._done.set()
            self._queue.put_nowait(None)

    async def _connect(self, request: TurnConnectionRequested) -> None:
        core = self._require_core()
        cid = request.connection_id
        try:
            if request.tls and self.tls is None:
                raise TransportError("TURN over TLS needs a TLS context")
            conn = await self.stack.connect_stream(
                request.server,
                tls=self.tls if request.tls else None,
                server_hostname=request.server_hostname if request.tls else None,
                local=Endpoint(request.local_ip, 0),
                timeout=self.config.server_timeout,
            )
        except (TransportError, OSError, TimeoutError, ssl.SSLError) as exc:
            core.connection_failed(cid, now=self._loop.time(), reason=str(exc))
            self._flush()
            return
        if self._closed:
            conn.abort()
            return
        self.streams[cid] = conn

        def on_data(data: bytes) -> None:
            core.receive_stream_data(cid, data, now=self._loop.time())
            if not data:
                self.streams.pop(cid, None)
            self._flush()

        conn.set_handler(on_data)
        core.connection_opened(cid, local=conn.local_endpoint, now=self._loop.time())
        self._flush()
