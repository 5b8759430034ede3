"""Runs a :class:`~natkit.mediarelay.relay.MediaRelay` core on a stack.

Theory of operation
-------------------
The core decides where every packet goes; this driver owns the sockets.

* :meth:`MediaRelayServer.create_call` takes an RTP/RTCP pair from the
  :class:`~natkit.mediarelay.ports.PortAllocator` for each leg, binds it on
  the leg's address family (IPv4 or IPv6: legs of different families are
  bridged), tries the next pair when a port is taken by someone else, and
  hands the bound endpoints to ``core.create_call``. Sockets are the
  stack's ordinary UDP endpoints (on the OS stack an asyncio/uvloop
  datagram transport, whose receive loop runs in C). ``inline_sockets``
  opens them with ``OsStack.open_udp_now`` instead (a raw socket read with
  ``loop.add_reader`` in Python): a call is set up several times faster,
  but each wake-up then costs a Python ``recvfrom`` that finds the socket
  empty, which at one packet per socket per 20 ms is most of the relaying
  cost (measured: ~1.6x the CPU per packet at 25k packets/s, docs/media-relay.md).
* Hot path: each socket's datagram handler is a closure over its
  :class:`~natkit.mediarelay.relay.RelayPort`: ``port.relay(data, source,
  now)`` returns the port the datagram leaves from, and the handler calls
  that port's socket ``send`` (kept in ``RelayPort.send``) with its latched
  remote. No dict lookup, queue or object per packet; the driver's flush
  (events, timer) runs only when the core queued an event (a latch).
* ``CallDeleted`` (delete, idle timeout, shutdown) closes the call's
  sockets and returns its ports. One ``loop.call_at`` (``CoreTimer``)
  serves the core's idle timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError, TransportError
from natkit.mediarelay.config import MediaRelayConfig
from natkit.mediarelay.events import CallDeleted, MediaRelayEvent
from natkit.mediarelay.legs import LegEndpoints, LegSetup, LegUpdate
from natkit.mediarelay.ports import PortAllocator
from natkit.mediarelay.relay import MediaRelay, RelayPort
from natkit.mediarelay.stats import CallStats
from natkit.net.driver import CoreTimer, StartedAndClosedOnExit
from natkit.net.stack import DatagramEndpoint, DatagramHandler, Stack

__all__ = ["CallEndpoints", "LegOffer", "MediaRelayServer"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_BIND_ATTEMPTS = 16


class _OpenUdpNow(Protocol):
    def __call__(self, local: Endpoint, on_datagram: DatagramHandler) -> DatagramEndpoint: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LegOffer:
    """What the signalling knows of one leg: the family its relay ports
    need, whether it does rtcp-mux (RFC 5761), and the addresses its SDP
    announced (latch seeds; None: learn from the first packets only)."""

    family: Family = Family.IPV4
    rtcp_mux: bool = False
    remote_rtp: Endpoint | None = None
    remote_rtcp: Endpoint | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEndpoints:
    """The relay endpoints of a new call, per leg (to put in each SDP)."""

    call_id: str
    a: LegEndpoints
    b: LegEndpoints


class MediaRelayServer(StartedAndClosedOnExit):
    """``start()``, ``close()``, ``wait_closed()``, or ``async with``;
    construct it inside the loop that runs it.

    ``ipv4``/``ipv6``: the local addresses relay ports are bound on (one per
    family a leg may ask for). ``on_event``: called with every core event
    (latches, timeouts, deletions), after the driver has acted on it.
    ``inline_sockets``: bind with the stack's ``open_udp_now`` where it has
    one (faster call set-up, slower relaying; see the module docstring).
    """

    def __init__(
        self,
        stack: Stack,
        config: MediaRelayConfig | None = None,
        *,
        ipv4: str | None = "127.0.0.1",
        ipv6: str | None = None,
        on_event: Callable[[MediaRelayEvent], None] | None = None,
        inline_sockets: bool = False,
    ) -> None:
        if ipv4 is None and ipv6 is None:
            raise ValueError("a media relay needs an IPv4 or an IPv6 address")
        self.stack = stack
        self.config = config or MediaRelayConfig()
        self.core = MediaRelay(self.config)
        self.ports = PortAllocator(self.config)
        self.addresses = {Family.IPV4: ipv4, Family.IPV6: ipv6}
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer = CoreTimer(self.core, self._flush)
        self._sockets: dict[Endpoint, DatagramEndpoint] = {}
        self._pairs: dict[str, list[int]] = {}  # call -> its even ports
        self._holders: dict[Endpoint, list[RelayPort | None]] = {}
        self._closing_sockets: list[DatagramEndpoint] = []
        self._open_udp_now: _OpenUdpNow | None = (
            getattr(stack, "open_udp_now", None) if inline_sockets else None
        )
        self._started = False
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._timer.arm()

    def close(self) -> None:
        """Delete every call and close every socket."""
        if self._closing:
            return
        self._closing = True
        self.core.shutdown(now=self._loop.time())
        self._flush()
        self._timer.close()

    async def wait_closed(self) -> None:
        for sock in self._closing_sockets:
            with contextlib.suppress(Exception):
                await sock.wait_closed()
        self._closing_sockets.clear()

    # -- control -----------------------------------------------------------------------

    async def create_call(
        self, call_id: str, *, a: LegOffer | None = None, b: LegOffer | None = None
    ) -> CallEndpoints:
        """Allocate and bind both legs' relay ports and start relaying.
        Raises :class:`LocalProtocolError` (known call, no address of a leg's
        family, port range exhausted) or :class:`TransportError` (no port of
        ``_BIND_ATTEMPTS`` pairs could be bound)."""
        if self._closing:
            raise LocalProtocolError("the media relay is closed")
        if call_id in self._pairs:
            raise LocalProtocolError(f"call {call_id!r} exists")
        offers = (a or LegOffer(), b or LegOffer())
        for offer in offers:
            if self.addresses[offer.family] is None:
                raise LocalProtocolError(f"no relay address of family {offer.family.name}")
        self._pairs[call_id] = []
        opened: list[DatagramEndpoint] = []
        try:
            setups = [await self._bind_leg(call_id, offer, opened) for offer in offers]
            if self._closing:  # close() ran while the ports were being bound
                raise LocalProtocolError("the media relay is closed")
            ends = self.core.create_call(call_id, a=setups[0], b=setups[1], now=self._loop.time())
        except BaseException:
            for sock in opened:
                sock.close()
                self._sockets.pop(sock.local_endpoint, None)
                self._holders.pop(sock.local_endpoint, None)
            for port in self._pairs.pop(call_id, []):
                self.ports.release(port)
            raise
        for relay_port in self.core.ports_of(call_id):
            self._attach(relay_port)
        self._flush()
        return CallEndpoints(call_id=call_id, a=ends[0], b=ends[1])

    def update_call(
        self, call_id: str, *, a: LegUpdate | None = None, b: LegUpdate | None = None
    ) -> None:
        """A re-offer: new SDP addresses (optional), learning window reopened."""
        self.core.update_call(call_id, a=a, b=b, now=self._loop.time())
        self._flush()

    def delete_call(self, call_id: str) -> CallStats:
        """End the call; its final statistics."""
        stats = self.core.delete_call(call_id, now=self._loop.time())
        self._flush()
        return stats

    def call_stats(self, call_id: str) -> CallStats:
        return self.core.call_stats(call_id)

    def now(self) -> float:
        """The relay's clock: its event loop's time (virtual on the simulated
        internet), which its idle timeouts run on."""
        return self._loop.time()

    @property
    def call_count(self) -> int:
        return self.core.call_count

    # -- sockets -----------------------------------------------------------------------

    async def _bind_leg(
        self, call_id: str, offer: LegOffer, opened: list[DatagramEndpoint]
    ) -> LegSetup:
        host = self.addresses[offer.family]
        if host is None:
            raise LocalProtocolError(f"no relay address of family {offer.family.name}")
        last: Exception | None = None
        for _ in range(_BIND_ATTEMPTS):
            even = self.ports.take()
            wanted = [Endpoint(host, even)]
            if not offer.rtcp_mux:
                wanted.append(Endpoint(host, even + 1))
            bound: list[DatagramEndpoint] = []
            try:
                for local in wanted:
                    bound.append(await self._open(local))
            except BaseException as exc:
                # A port that would not bind, or the create cancelled half way:
                # nothing bound here may outlive it (the caller only knows `opened`).
                for sock in bound:
                    sock.close()
                    self._sockets.pop(sock.local_endpoint, None)
                    self._holders.pop(sock.local_endpoint, None)
                self.ports.release(even)  # to the back of the pool
                if not isinstance(exc, TransportError):
                    raise
                last = exc
                continue
            self._pairs[call_id].append(even)
            opened.extend(bound)
            return LegSetup(
                rtp_local=bound[0].local_endpoint,
                rtcp_local=bound[1].local_endpoint if len(bound) > 1 else None,
                remote_rtp=offer.remote_rtp,
                remote_rtcp=offer.remote_rtcp,
            )
        raise TransportError(f"no bindable relay port pair after {_BIND_ATTEMPTS} tries: {last}")

    async def _open(self, local: Endpoint) -> DatagramEndpoint:
        # Until the core knows the port, datagrams go through the generic path.
        holder: list[RelayPort | None] = [None]
        handler = self._handler(holder)
        if self._open_udp_now is not None:
            sock = self._open_udp_now(local, handler)
        else:
            sock = await self.stack.open_udp(local, handler)
        self._sockets[sock.local_endpoint] = sock
        self._holders[sock.local_endpoint] = holder
        return sock

    def _attach(self, port: RelayPort) -> None:
        sock = self._sockets[port.local]
        port.send = sock.send
        self._holders.pop(port.local)[0] = port

    def _handler(self, holder: list[RelayPort | None]) -> DatagramHandler:
        time = self._loop.time
        pending = self.core.event_queue
        flush = self._flush

        def on_datagram(data: bytes, source: Endpoint) -> None:
            port = holder[0]
            if port is None:
                return  # bound but not yet part of a call
            out = port.relay(data, source, time())
            if out is not None:
                send = out.send
                if send is not None:
                    send(data, out.remote)  # type: ignore[arg-type]  # relay() checked it
            if pending:
                flush()

        return on_datagram

    # -- the core's outputs ------------------------------------------------------------

    def _flush(self) -> None:
        core = self.core
        for data, remote, local in core.datagrams_to_send():
            sock = self._sockets.get(local) if local is not None else None
            if sock is not None:
                sock.send(data, remote)
        while (event := core.next_event()) is not None:
            if isinstance(event, CallDeleted):
                self._release(event)
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("media relay event handler failed")
        self._timer.arm()

    def _release(self, event: CallDeleted) -> None:
        for local in event.local_endpoints:
            sock = self._sockets.pop(local, None)
            if sock is not None:
                sock.close()
                if self._closing:  # wait_closed() waits for these; a running relay does not
                    self._closing_sockets.append(sock)
        for port in self._pairs.pop(event.call_id, []):
            self.ports.release(port)
