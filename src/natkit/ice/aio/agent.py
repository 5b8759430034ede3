"""The asyncio driver of the ICE agent: :class:`AsyncIceAgent` on any stack.

Theory of operation
-------------------
One :class:`AsyncIceAgent` is one media stream (RFC 8445 §2) with one or
more components: it owns an :class:`~natkit.ice.aio.gatherer.AsyncGatherer`
(the base sockets and the TURN allocations) and an
:class:`~natkit.ice.agent.IceAgent` core, and does what STYLE.md's driver
pattern says: after every call into the core it sends the core's
:class:`~natkit.ice.agent.Transmit`\\ s, drains its events and re-arms one
``loop.call_at(core.get_timer())``.

Sending. A Transmit names a local *base*: a host base is a UDP socket the
gatherer opened; a relayed base (the relayed address, RFC 8445 §5.1.1) is a
TURN allocation, and the Transmit goes out through its
:class:`~natkit.turn.client.TurnClient` (RFC 8656): ChannelData once the
client has bound a channel to the peer (§12; the client binds one on first
use), a Send indication before that (§11). Permissions (§9) for the IPs of
the peer's public candidates are created as soon as the candidate is known,
so the peer's checks toward our relayed candidate are let in.

Receiving. Datagrams on a base socket that are not gathering's reach the
driver (``AsyncGatherer.on_datagram``); those from a TURN server the driver
relays through are decoded by its TurnClient and handed to the agent with
``local`` = the relayed address and ``remote`` = the peer, everything else
goes to the agent as it came. Over TCP/TLS the driver reads the control
connection itself (RFC 8656 §3.1 framing, ChannelData padded, §12.5).

Trickle (RFC 8838): local candidates go to the core as the gatherer reports
them, and to the application through ``on_candidate`` or ``async for
candidate in agent.local_candidates()`` (``None``/the end of iteration is
end-of-candidates, §8.2); the peer's arrive through
:meth:`add_remote_candidate` and :meth:`end_of_remote_candidates` whenever
signalling delivers them.

Outcome. :meth:`connect` returns once every component has a selected pair
(``ChecksCompleted``) and raises :class:`IceConnectionFailed` on
``IceFailed``. Application data of each component (RTP/RTCP, RFC 7983
demultiplexing is the core's) goes out with :meth:`send` and comes back
through ``on_data`` or :meth:`recv`; every core event, selected-pair changes
and consent loss included, goes to ``on_event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from natkit.addr import AddressClass, Endpoint, address_class
from natkit.errors import LocalProtocolError, MalformedMessageError, NatkitError
from natkit.ice.agent import IceAgent, IceCredentials, Transmit
from natkit.ice.aio.gatherer import AsyncGatherer
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.events import (
    ChecksCompleted,
    DataReceived,
    IceEvent,
    IceFailed,
    PairNominated,
    SelectedPairChanged,
)
from natkit.ice.gather import TurnAllocation
from natkit.ice.gather_config import GatherConfig, HostAddress
from natkit.net.driver import CoreTimer
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection
from natkit.stun.framing import StreamFramer
from natkit.turn import client_events as turn_events
from natkit.turn.client import TurnClient
from natkit.turn.client_config import ClientState

__all__ = ["AsyncIceAgent", "IceConnectionFailed", "RelayPath", "fast_ice_config"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

_PUBLIC = frozenset({AddressClass.GLOBAL, AddressClass.DOCUMENTATION})
"""Peer addresses a TURN server may relay to (natkit's PeerPolicy denies the rest)."""

_MAX_INLINE_ROUNDS = 64
"""How many deadlines that are due already one flush runs itself before it
leaves the rest to the timer (a bound, should a deadline not move on)."""

_SPIN_WINDOW = 0.001
"""Seconds before a deadline the precise timer wakes and then polls the loop
(``call_soon``) until the deadline: asyncio's and uvloop's timers are
millisecond timers that fire up to a millisecond late (uvloop: or early)."""

_PRECISE_HORIZON = 0.1
"""Only deadlines at most this far ahead when armed are kept to the
microsecond (check pacing, RFC 8445 §14.2's Ta of 5-50 ms, and the nomination
wait); consent, keepalive, failover and retransmission deadlines, 0.3 s and
more away, wait on the loop's own millisecond timer, so an idle agent never
polls."""


def fast_ice_config(**changes: Any) -> IceConfig:
    """natkit's *fast* profile: regular nomination (RFC 8445 §8.1.1) with
    Ta = 5 ms, the smallest pacing §14.2 allows ("MUST NOT be sent more
    often than once every 5 ms"), the default being 50 ms. §14.2 asks an
    agent using another Ta to tell its peer: :class:`~natkit.ice.aio.connection.IceConnection`
    signals it as ``a=ice-pacing`` (RFC 8839 §5.5). Everything else keeps
    :class:`IceConfig`'s RFC defaults; ``changes`` override fields."""
    return IceConfig(**{"ta": 0.005, **changes})


def _core_clock(loop: asyncio.AbstractEventLoop) -> tuple[Callable[[], float], bool]:
    """The clock the core is fed and whether it is a real one the driver may
    poll against. asyncio's loop clock is ``time.monotonic``; uvloop's is
    the same clock in whole milliseconds (libuv's ``uv_now``), too coarse
    for a 5 ms Ta and for round trips on a LAN, so the driver reads
    ``time.monotonic`` itself there (never behind ``loop.time()``). Other
    loops (the simulated internet's virtual clock) keep ``loop.time()``."""
    if type(loop).time is asyncio.BaseEventLoop.time:
        return loop.time, True
    if (
        type(loop).__module__.split(".")[0] == "uvloop"
        and abs(time.monotonic() - loop.time()) < 0.01
    ):
        return time.monotonic, True
    return loop.time, False


class PreciseTimer:
    """The one timer of the ICE core, to the deadline on ``clock`` (RFC 8445
    §14.2 pacing: a check never leaves before its slot, and not a
    millisecond after it either).

    On a real loop, for a deadline within :data:`_PRECISE_HORIZON`, it
    sleeps until :data:`_SPIN_WINDOW` before the deadline and then yields to
    the loop until the deadline passes (I/O keeps being served); later
    deadlines sleep on the loop's timer and are checked against ``clock``
    when it fires (uvloop may fire up to a millisecond early: the rest is
    waited out the same way). On a virtual clock (``precise=False``) it is a
    plain ``call_at``. :meth:`arm` after every call into the core, as with
    :class:`~natkit.net.driver.CoreTimer`."""

    __slots__ = ("_at", "_clock", "_closed", "_core", "_handle", "_loop", "_on_fired", "_precise")

    def __init__(
        self,
        core: IceAgent,
        on_fired: Callable[[], None],
        clock: Callable[[], float],
        *,
        precise: bool,
    ) -> None:
        self._core = core
        self._on_fired = on_fired
        self._clock = clock
        self._precise = precise
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.Handle | None = None
        self._at: float | None = None
        self._closed = False

    def arm(self) -> None:
        if self._closed:
            return
        deadline = self._core.get_timer()
        if deadline == self._at and self._handle is not None:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = deadline
        if deadline is not None:
            self._schedule(deadline)

    def _schedule(self, deadline: float) -> None:
        if not self._precise:
            self._handle = self._loop.call_at(deadline, self._fire)
            return
        remaining = deadline - self._clock()
        if remaining > _PRECISE_HORIZON:
            self._handle = self._loop.call_later(remaining, self._wake)
        elif remaining > _SPIN_WINDOW:
            self._handle = self._loop.call_later(remaining - _SPIN_WINDOW, self._wake)
        else:
            self._handle = self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        self._handle = None
        if self._at is None:
            return
        if self._clock() >= self._at:
            self._fire()
        else:
            self._schedule(self._at)

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        self._core.handle_timer(now=self._clock())
        self._on_fired()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


EventCallback = Callable[[IceEvent], None]
DataCallback = Callable[[int, bytes], None]
CandidateCallback = Callable[[Candidate | None], None]


class IceConnectionFailed(NatkitError):
    """ICE failed for the stream (RFC 8445 §8.1.2): no valid pair for some
    component, or consent lost with no spare path (``reason`` says which)."""


@dataclass(slots=True, eq=False)
class RelayPath:
    """One TURN allocation the agent relays through (its relayed candidate's
    base): the live client core and what carries it to the server."""

    allocation: TurnAllocation
    socket: DatagramEndpoint | None
    connection: StreamConnection | None
    framer: StreamFramer | None = None
    timer: CoreTimer | None = None
    lost: bool = False
    permitted: set[str] = field(default_factory=set)

    @property
    def client(self) -> TurnClient:
        return self.allocation.client

    @property
    def relayed(self) -> Endpoint:
        return self.allocation.candidate.address

    @property
    def server(self) -> Endpoint:
        return self.allocation.client.server


class AsyncIceAgent:
    """One ICE stream on ``stack`` (see the module docstring).

    ``gather_config`` names the STUN and TURN servers; its ``components``
    is overridden by ``components``. ``tls`` is the client context for TURN
    over TLS. The callbacks run on the loop, inside the driver: they must
    not block.
    """

    def __init__(
        self,
        stack: Stack,
        *,
        controlling: bool,
        config: IceConfig | None = None,
        gather_config: GatherConfig | None = None,
        components: int = 1,
        tls: ssl.SSLContext | None = None,
        on_candidate: CandidateCallback | None = None,
        on_event: EventCallback | None = None,
        on_data: DataCallback | None = None,
        max_queued: int = 256,
    ) -> None:
        base = gather_config or GatherConfig()
        if base.components != components:
            base = _with_components(base, components)
        self.stack = stack
        self.core = IceAgent(config, controlling=controlling)
        self.stream = self.core.add_stream(components)
        self.components = components
        self.gatherer = AsyncGatherer(
            stack,
            base,
            tls=tls,
            on_candidate=self._on_local_candidate,
            on_datagram=self._on_datagram,
        )
        self.on_candidate = on_candidate
        self.on_event = on_event
        self.on_data = on_data
        self.relays: dict[Endpoint, RelayPath] = {}
        self.events: list[IceEvent] = []
        """Every core event so far, in order (for inspection and the lab)."""
        self.connected_at: float | None = None
        """When every component had its selected pair, on the agent's clock (``loop.time()``;
        on uvloop ``time.monotonic()``, the same clock in full resolution),
        like :attr:`started_at`."""
        self.checks_at_connected: int | None = None
        """:attr:`checks_sent` when the agent connected."""
        self.started_at: float | None = None
        self._loop = asyncio.get_running_loop()
        self._clock, precise = _core_clock(self._loop)
        self._timer = PreciseTimer(self.core, self._flush, self._clock, precise=precise)
        # Inline deadlines beat a real loop's latency; on a virtual clock the
        # loop runs a due deadline at the same instant anyway, and running it
        # inline would only reorder callbacks of one instant (measured: the
        # simulated relay case then took one Ta longer, 1.018 s, not 0.968 s).
        self._run_due_inline = precise
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._candidates: asyncio.Queue[Candidate | None] = asyncio.Queue()
        self._data: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue(max_queued)
        self._remote_public: set[str] = set()
        self._flushing = False
        self._closed = False
        self._gathering_task: asyncio.Task[None] | None = None
        """Waits for the end of gathering (kept: the loop holds tasks weakly;
        cancelled by :meth:`close`)."""
        self._released = asyncio.Event()  # set once close() saw every allocation end
        self.dropped = 0
        """Received application datagrams dropped because :meth:`recv`'s queue was full."""

    # -- setup and signalling ---------------------------------------------------------

    @property
    def local_credentials(self) -> IceCredentials:
        """The ufrag/pwd to signal (RFC 8445 §5.3)."""
        return self.core.local_credentials(self.stream)

    @property
    def checks_sent(self) -> int:
        return self.core.checks_sent

    async def start(self, addresses: Sequence[HostAddress] | None = None) -> None:
        """Open the base sockets (on ``addresses``, default: the stack's own)
        and start gathering; host candidates are reported at once, the
        others as they arrive."""
        if self.started_at is not None:
            raise LocalProtocolError("the agent is started already")
        self.started_at = self._clock()
        await self.gatherer.open(addresses)
        self.gatherer.start()
        if self.gatherer.completed:
            self._gathering_done()
        else:
            self._gathering_task = self._loop.create_task(self._await_gathering())
            self._gathering_task.add_done_callback(_log_failure)

    async def _await_gathering(self) -> None:
        async for _ in self.gatherer:
            pass  # candidates come through on_candidate; this only waits for the end
        self._gathering_done()

    def set_remote_credentials(self, ufrag: str, pwd: str) -> None:
        """The peer's ufrag/pwd (§5.3); checks start once pairs exist."""
        self.core.set_remote_credentials(self.stream, ufrag, pwd)
        self._flush()

    def add_remote_candidate(self, candidate: Candidate) -> None:
        """A candidate the peer signalled (trickled, RFC 8838 §11)."""
        if self._closed:
            return
        self.core.add_remote_candidate(self.stream, candidate)
        self._permit(candidate.address.host)
        self._flush()

    def end_of_remote_candidates(self) -> None:
        """The peer signalled end-of-candidates (RFC 8838 §13)."""
        self.core.end_of_remote_candidates(self.stream)
        self._flush()

    async def local_candidates(self) -> AsyncIterator[Candidate]:
        """Local candidates as they are gathered, until end-of-candidates
        (each candidate is delivered to one iterator)."""
        while True:
            cand = await self._candidates.get()
            if cand is None:
                self._candidates.put_nowait(None)
                return
            yield cand

    # -- the outcome ----------------------------------------------------------------

    async def connect(self) -> None:
        """Wait until every component has a selected pair (RFC 8445 §8.1.2);
        raises :class:`IceConnectionFailed` when ICE fails first."""
        await asyncio.shield(self._connected)

    @property
    def connected(self) -> bool:
        return self._connected.done() and self._connected.exception() is None

    def selected_pair(self, component: int = 1) -> tuple[Candidate, Candidate] | None:
        """The (local, remote) candidates data of ``component`` goes over."""
        return self.core.selected_pair(self.stream, component)

    def relay_for(self, local: Candidate) -> RelayPath | None:
        """The TURN allocation behind a local relayed candidate."""
        return self.relays.get(local.effective_base)

    # -- the datagram channel per component --------------------------------------------

    def send(self, component: int, data: bytes) -> bool:
        """Send application data on ``component``'s selected pair; False
        (nothing sent) before selection or after consent was lost."""
        sent = self.core.send_data(self.stream, component, data, now=self._clock())
        self._flush()
        return sent

    async def recv(self) -> tuple[int, bytes]:
        """The next ``(component, data)`` received (when ``on_data`` is unset)."""
        return await self._data.get()

    # -- closing ------------------------------------------------------------------

    async def close(self, *, timeout: float = 2.0) -> None:
        """Release the TURN allocations and close every socket and connection."""
        if self._closed:
            return
        self._closed = True
        self._timer.close()
        task, self._gathering_task = self._gathering_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # a cancellation of close() itself still propagates
        now = self._loop.time()
        for relay in self.relays.values():
            if not relay.client.state.ended and not relay.lost:
                relay.client.release(now=now)
                self._flush_relay(relay)
        self._check_released()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._released.wait()
        for relay in self.relays.values():
            if relay.timer is not None:
                relay.timer.close()
            if relay.connection is not None and not relay.connection.closed:
                relay.connection.abort()
        await self.gatherer.close(timeout=timeout)
        if not self._connected.done():
            self._connected.set_exception(IceConnectionFailed("the agent was closed"))
            self._connected.exception()  # retrieved: nobody may be waiting
        self._candidates.put_nowait(None)

    async def __aenter__(self) -> AsyncIceAgent:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals: the core ------------------------------------------------------------

    def _flush(self) -> None:
        """Send the core's Transmits, drain its events, re-arm its timer."""
        if self._flushing:
            return  # a callback called back in; the outer flush picks it up
        self._flushing = True
        try:
            core = self.core
            inline = 0
            while True:
                now = self._clock()
                out = core.datagrams_to_send(now=now)
                for transmit in out:
                    self._transmit(transmit)
                had_event = False
                while (event := core.next_event()) is not None:
                    had_event = True
                    self._on_event(event)
                deadline = core.get_timer()
                if (
                    self._run_due_inline
                    and deadline is not None
                    and not self._closed
                    and inline < _MAX_INLINE_ROUNDS
                ):
                    now = self._clock()  # sending took time: pace from now
                    if deadline <= now:
                        # Due already (the first check of a new check list, a
                        # nomination): run it now, not one loop iteration later.
                        inline += 1
                        core.handle_timer(now=now)
                        continue
                if not out and not had_event:
                    break
        finally:
            self._flushing = False
        self._timer.arm()

    def _transmit(self, transmit: Transmit) -> None:
        sock = self.gatherer.sockets.get(transmit.local)
        if sock is not None:
            if not sock.closed:
                sock.send(transmit.data, transmit.remote)
            return
        relay = self.relays.get(transmit.local)
        if relay is None or relay.lost or relay.client.state is not ClientState.ALLOCATED:
            return
        frame = relay.client.channel_frame(transmit.data, transmit.remote)
        if frame is not None:
            self._write(relay, frame)
            return
        try:
            relay.client.send_to(transmit.data, transmit.remote, now=self._loop.time())
        except LocalProtocolError as exc:
            log.debug("relay %s cannot send to %s: %s", relay.relayed, transmit.remote, exc)
            return
        self._flush_relay(relay)

    def _on_event(self, event: IceEvent) -> None:
        self.events.append(event)
        match event:
            case DataReceived(component=component, data=data):
                if self.on_data is not None:
                    self.on_data(component, data)
                elif self._data.full():
                    self.dropped += 1
                else:
                    self._data.put_nowait((component, data))
            case ChecksCompleted():
                if self.connected_at is None:
                    self.connected_at = self._clock()
                    self.checks_at_connected = self.core.checks_sent
                if not self._connected.done():
                    self._connected.set_result(None)
            case IceFailed(reason=reason):
                if not self._connected.done():
                    self._connected.set_exception(IceConnectionFailed(reason))
            case PairNominated() | SelectedPairChanged():
                log.debug("ice: %s", event)
            case _:
                pass
        if self.on_event is not None:
            self.on_event(event)

    # -- internals: candidates -----------------------------------------------------------

    def _on_local_candidate(self, candidate: Candidate) -> None:
        if candidate.type is CandidateType.RELAYED:
            self._take_allocations()
        self.core.add_local_candidate(self.stream, candidate)
        self._candidates.put_nowait(candidate)
        if self.on_candidate is not None:
            self.on_candidate(candidate)
        self._flush()

    def _gathering_done(self) -> None:
        self._take_allocations()
        if self._closed:
            return
        self.core.end_of_local_candidates(self.stream)
        self._candidates.put_nowait(None)
        if self.on_candidate is not None:
            self.on_candidate(None)
        self._flush()

    def _take_allocations(self) -> None:
        if self.gatherer.core is None:
            return
        for alloc, conn in self.gatherer.take_allocations():
            sock = None if conn is not None else self.gatherer.sockets.get(alloc.base.address)
            relay = RelayPath(alloc, sock, conn)
            self.relays[alloc.candidate.address] = relay
            relay.timer = CoreTimer(alloc.client, functools.partial(self._flush_relay, relay))
            if conn is not None:
                relay.framer = StreamFramer(channel_data=True)
                conn.set_handler(functools.partial(self._on_stream_data, relay))
            for ip in self._remote_public:
                self._permit_on(relay, ip)
            self._flush_relay(relay)

    def _permit(self, ip: str) -> None:
        """RFC 8656 §9: let the peer's address in on every allocation."""
        try:
            public = address_class(ip) in _PUBLIC
        except ValueError:
            return
        if not public:
            return
        self._remote_public.add(ip)
        for relay in self.relays.values():
            self._permit_on(relay, ip)

    def _permit_on(self, relay: RelayPath, ip: str) -> None:
        if ip in relay.permitted or relay.lost or relay.client.state is not ClientState.ALLOCATED:
            return
        if (":" in ip) != (":" in relay.relayed.host):
            return  # a permission is for the allocation's own family (RFC 8656 §9.1)
        relay.permitted.add(ip)
        try:
            relay.client.create_permission(ip, now=self._loop.time())
        except LocalProtocolError as exc:
            log.debug("no permission for %s on %s: %s", ip, relay.relayed, exc)
            return
        self._flush_relay(relay)

    # -- internals: sockets and relays ------------------------------------------------------

    def _on_datagram(self, data: bytes, remote: Endpoint, local: Endpoint) -> None:
        for relay in self.relays.values():
            if (
                relay.socket is not None
                and remote == relay.server
                and local == relay.socket.local_endpoint
            ):
                # after close() too: the release's answer
                self._from_relay(relay, data, self._loop.time())
                return
        if not self._closed:
            self.core.receive_datagram(data, remote, local=local, now=self._clock())
            self._flush()

    def _on_stream_data(self, relay: RelayPath, data: bytes) -> None:
        now = self._loop.time()
        if not data:
            relay.client.transport_closed(now=now)
            self._flush_relay(relay)
            return
        assert relay.framer is not None  # set together with the connection
        try:
            messages = relay.framer.feed(data)
        except MalformedMessageError as exc:
            log.info("TURN stream from %s broken: %s", relay.server, exc)
            if relay.connection is not None:
                relay.connection.abort()
            relay.client.transport_closed(now=now)
            self._flush_relay(relay)
            return
        for message in messages:
            self._from_relay(relay, message, now)

    def _from_relay(self, relay: RelayPath, data: bytes, now: float) -> None:
        got = relay.client.parse_incoming(data, relay.server)
        if got is not None:
            peer, payload = got
            if not self._closed:
                self.core.receive_datagram(payload, peer, local=relay.relayed, now=self._clock())
                self._flush()
            return
        relay.client.receive_datagram(data, relay.server, now=now)
        self._flush_relay(relay)

    def _flush_relay(self, relay: RelayPath) -> None:
        client = relay.client
        now = self._loop.time()
        for datagram in client.datagrams_to_send(now=now):
            self._write(relay, datagram.data)
        while (event := client.next_event()) is not None:
            match event:
                case turn_events.DataReceived(peer=peer, data=payload):
                    if not self._closed:
                        self.core.receive_datagram(
                            payload, peer, local=relay.relayed, now=self._clock()
                        )
                        self._flush()
                case turn_events.AllocationLost(reason=reason):
                    relay.lost = True
                    log.info("relay %s lost: %s", relay.relayed, reason)
                case turn_events.PermissionFailed() | turn_events.ChannelBindFailed():
                    log.info("relay %s: %s", relay.relayed, event)
                case _:
                    pass
        if self._closed:
            self._check_released()
        if relay.timer is not None:
            if client.state.ended:
                relay.timer.close()
            else:
                relay.timer.arm()

    def _check_released(self) -> None:
        if all(r.client.state.ended or r.lost for r in self.relays.values()):
            self._released.set()

    def _write(self, relay: RelayPath, data: bytes) -> None:
        if relay.connection is not None:
            if not relay.connection.closed:
                relay.connection.write(data)
        elif relay.socket is not None and not relay.socket.closed:
            relay.socket.send(data, relay.server)


def _with_components(config: GatherConfig, components: int) -> GatherConfig:
    return dataclasses.replace(config, components=components)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ICE gathering task failed", exc_info=task.exception())
