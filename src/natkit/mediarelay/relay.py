"""The media relay core: a table of calls, latching, strict source, stats (sans-IO).

Theory of operation
-------------------
What rtpengine does for Kamailio, and what the ECC report's §6.4 calls a
"NAT proxy": the signalling rewrites each endpoint's SDP to name a relay
port, and the relay forwards what arrives on one leg's port to the other
leg. An endpoint behind a NAT does not know the address its packets come
from, so the relay does not trust the SDP: it *latches* onto the source of
the packets it receives (connection-oriented media, "comedia"; RFC 4145's
``a=direction`` is the standard form of that draft) and sends the other
leg's media back to exactly that source, from the port it received on
(symmetric RTP, RFC 4961): the NAT's own mapping carries it in.

Per relay port (each leg has an RTP and an RTCP port, or one rtcp-mux
port, RFC 5761):

* **Seed.** The address the endpoint announced in its SDP (``c=``/``m=``;
  ``a=rtcp`` of RFC 3605, else the RTP port + 1) is where the other leg's
  media goes until the endpoint's own packets say otherwise (needed when
  only one side speaks first; wrong behind a NAT, corrected by the latch).
* **Learning window.** It opens when the call is created or re-offered.
  A valid RTP/RTCP packet from a source other than the current remote
  moves the latch there (``SourceLatched`` reason LEARNED). The window
  closes (``SourceConfirmed``) after ``learning_packets`` packets in a row
  from the latched source, or at the first packet once ``learning_time``
  has passed. A port silent until the deadline latches (and locks on) the
  first valid packet after it from any source, not only its SDP address:
  a NATed endpoint never sends from its SDP address and a caller's first
  packet may come after a long ringing (see docs/media-relay.md).
* **Strict source.** After the window only the latched source is relayed;
  packets from anywhere else are dropped and counted (``dropped_foreign``):
  the RTP-bleed attack (a stranger spraying relay ports to be latched on
  and receive the call's media) gets nothing.
* **Controlled re-latch (NAT rebinding).** A NAT may give the endpoint a new
  mapping mid-call (its binding expired, it rebooted, a mobile changed
  network). The one exception: the latched source has been silent for at
  least ``relatch_silence`` seconds and a packet carrying the *same SSRC*
  the port last received arrives from a new source: the latch moves
  (reason SSRC_HANDOVER). An attacker must know the stream's 32-bit SSRC
  and can only take over a stream that has stopped; a live stream is never
  moved. ``strict_source=False`` follows every new source instead (LOOSE).
* Only valid packets latch, count as activity or get relayed: version 2,
  at least 12 bytes for RTP, 8 for RTCP, RTCP recognised by its packet type
  192-223 (RFC 5761 §4) on a mux port and required on an RTCP port.

Forwarding: RTP from leg A's port leaves from leg B's RTP (or mux) port to
B's latched address; RTCP from B's RTCP port (or mux port). Legs may be of
different address families (IPv4/IPv6 bridging): each port only ever
sends to remotes of its own family.

Idle timeout: a call whose ports received no valid packet for
``idle_timeout`` seconds (since the last packet, creation or re-offer) is
reported (``CallTimedOut``) and deleted (``CallDeleted``, the driver's cue
to close its sockets).

Hot path: :meth:`RelayPort.relay` takes one datagram and returns the port
it leaves from (whose :attr:`RelayPort.remote` is where it goes) or None,
with a few integer updates and no allocation beyond the SSRC slice; the
driver keeps a port's socket send function in :attr:`RelayPort.send`. The
generic :meth:`MediaRelay.receive_datagram` queues the same result as a
:class:`~natkit.addr.Datagram` (the core shape of STYLE.md).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator

from natkit.addr import Datagram, Endpoint
from natkit.errors import LocalProtocolError
from natkit.mediarelay.config import MediaRelayConfig
from natkit.mediarelay.events import (
    CallCreated,
    CallDeleted,
    CallTimedOut,
    CallUpdated,
    DeleteReason,
    LatchReason,
    MediaRelayEvent,
    SourceConfirmed,
    SourceLatched,
)
from natkit.mediarelay.legs import Component, LegEndpoints, LegSetup, LegSide, LegUpdate
from natkit.mediarelay.stats import CallStats, DirectionStats

__all__ = ["MediaRelay", "RelayPort"]

_RTP, _RTCP, _MUX = Component.RTP, Component.RTCP, Component.MUX


def _is_v6(endpoint: Endpoint) -> bool:
    return ":" in endpoint.host


def _next_port(endpoint: Endpoint) -> Endpoint | None:
    return endpoint.with_port(endpoint.port + 1) if endpoint.port < 0xFFFF else None


class RelayPort:
    """One relay socket's state: latch, counters, and where its media goes.

    ``rtp_out``/``rtcp_out`` are the other leg's ports RTP and RTCP leave
    from; ``send`` is the driver's handle on this port's socket (``None`` in
    a driver-less core)."""

    __slots__ = (
        "_config",
        "_events",
        "bytes",
        "call_id",
        "component",
        "dropped_foreign",
        "dropped_malformed",
        "dropped_no_destination",
        "expected_before",
        "forwarded",
        "is_rtcp_port",
        "last_seen",
        "learn_count",
        "learn_deadline",
        "learned",
        "leg",
        "local",
        "locked",
        "mux",
        "packets",
        "received_before",
        "remote",
        "rtcp_out",
        "rtcp_packets",
        "rtp_out",
        "send",
        "seq_base",
        "seq_cycles",
        "seq_max",
        "seq_received",
        "signalled",
        "ssrc",
    )

    def __init__(
        self,
        config: MediaRelayConfig,
        events: deque[MediaRelayEvent],
        call_id: str,
        leg: LegSide,
        component: Component,
        local: Endpoint,
        remote: Endpoint | None,
        now: float,
    ) -> None:
        self._config = config
        self._events = events
        self.call_id = call_id
        self.leg = leg
        self.component = component
        self.is_rtcp_port = component is _RTCP
        self.mux = component is _MUX
        self.local = local
        self.remote = remote
        self.signalled = remote  # the address the endpoint's SDP gave
        self.learned = False
        self.locked = False
        self.learn_deadline = now + config.learning_time
        self.learn_count = 0
        self.rtp_out: RelayPort = self
        self.rtcp_out: RelayPort = self
        self.send: Callable[[bytes, Endpoint], None] | None = None
        self.ssrc: bytes | None = None
        self.last_seen: float | None = None
        self.packets = self.bytes = self.forwarded = self.rtcp_packets = 0
        self.dropped_foreign = self.dropped_malformed = self.dropped_no_destination = 0
        self.seq_base = self.seq_max = self.seq_cycles = self.seq_received = 0
        self.expected_before = self.received_before = 0

    def relay(self, data: bytes, source: Endpoint, now: float) -> RelayPort | None:
        """A datagram from ``source`` arrived at this port: the port it leaves
        from (send ``data`` to its :attr:`remote`), or None (dropped, counted)."""
        n = len(data)
        if n < 8 or data[0] & 0xC0 != 0x80:
            self.dropped_malformed += 1
            return None
        rtcp = 192 <= data[1] <= 223  # RFC 5761 §4
        if rtcp:
            if not (self.mux or self.is_rtcp_port):
                self.dropped_malformed += 1
                return None
            ssrc = data[4:8]
        elif self.is_rtcp_port or n < 12:
            self.dropped_malformed += 1
            return None
        else:
            ssrc = data[8:12]
        if (source != self.remote or not self.locked) and not self._admit(source, ssrc, now):
            return None
        self.last_seen = now
        self.packets += 1
        self.bytes += n
        if rtcp:
            self.rtcp_packets += 1
            if self.is_rtcp_port:
                self.ssrc = ssrc
            out = self.rtcp_out
        else:
            seq = data[2] << 8 | data[3]
            if ssrc != self.ssrc:
                self._new_ssrc(ssrc, seq)
            else:  # RFC 3550 A.1: in order (or a duplicate) within half the space
                top = self.seq_max
                if (seq - top) & 0xFFFF < 0x8000:
                    if seq < top:
                        self.seq_cycles += 0x10000
                    self.seq_max = seq
            self.seq_received += 1
            out = self.rtp_out
        if out.remote is None:
            self.dropped_no_destination += 1
            return None
        self.forwarded += 1
        return out

    def _admit(self, source: Endpoint, ssrc: bytes, now: float) -> bool:
        """A packet from a source that is not (yet) the strict one: latch or drop."""
        config = self._config
        if self.locked:  # and source != self.remote
            if not config.strict_source:
                self._latch(source, LatchReason.LOOSE)
                return True
            last = self.last_seen
            if (
                config.relatch_same_ssrc
                and ssrc == self.ssrc
                and last is not None
                and now - last >= config.relatch_silence
            ):
                self._latch(source, LatchReason.SSRC_HANDOVER)
                return True
            self.dropped_foreign += 1
            return False
        if source != self.remote or not self.learned:
            self._latch(source, LatchReason.LEARNED)
        self.learn_count += 1
        if self.learn_count >= config.learning_packets or now >= self.learn_deadline:
            self.locked = True
            self._events.append(
                SourceConfirmed(
                    call_id=self.call_id, leg=self.leg, component=self.component, remote=source
                )
            )
        return True

    def _latch(self, source: Endpoint, reason: LatchReason) -> None:
        previous, self.remote = self.remote, source
        self.learned = True
        self.learn_count = 0
        self._events.append(
            SourceLatched(
                call_id=self.call_id,
                leg=self.leg,
                component=self.component,
                remote=source,
                previous=previous,
                reason=reason,
            )
        )

    def _new_ssrc(self, ssrc: bytes, seq: int) -> None:
        """A new RTP source (RFC 3550 §8.2): keep its predecessor's totals, restart."""
        if self.ssrc is not None:
            self.expected_before += self._expected_now()
            self.received_before += self.seq_received
        self.ssrc = ssrc
        self.seq_base = self.seq_max = seq
        self.seq_cycles = 0
        self.seq_received = 0

    def _expected_now(self) -> int:
        if self.ssrc is None or self.is_rtcp_port:
            return 0
        return self.seq_cycles + self.seq_max - self.seq_base + 1

    def reopen_learning(self, remote: Endpoint | None, now: float) -> bool:
        """A re-offer that gives this port's endpoint a new SDP address:
        re-seed and learn again for ``learning_time``. The same address (or
        none) changes nothing: a re-INVITE that does not move the media
        (session refresh, hold, codec change) must not reopen the port to
        whoever sprays it first (RTP bleed). Returns whether it reopened."""
        if remote is None or remote == self.signalled:
            return False
        self.signalled = self.remote = remote
        self.learned = False
        self.locked = False
        self.learn_count = 0
        self.learn_deadline = now + self._config.learning_time
        return True


class _Leg:
    __slots__ = ("rtcp", "rtp", "side")

    def __init__(self, side: LegSide, rtp: RelayPort, rtcp: RelayPort | None) -> None:
        self.side = side
        self.rtp = rtp
        self.rtcp = rtcp

    @property
    def ports(self) -> tuple[RelayPort, ...]:
        return (self.rtp,) if self.rtcp is None else (self.rtp, self.rtcp)

    @property
    def rtcp_port(self) -> RelayPort:
        return self.rtp if self.rtcp is None else self.rtcp

    def endpoints(self) -> LegEndpoints:
        return LegEndpoints(rtp=self.rtp.local, rtcp=None if self.rtcp is None else self.rtcp.local)

    def stats(self) -> DirectionStats:
        ports = self.ports
        seen = [p.last_seen for p in ports if p.last_seen is not None]
        rtp = self.rtp
        expected = rtp.expected_before + rtp._expected_now()
        received = rtp.received_before + rtp.seq_received
        return DirectionStats(
            packets=sum(p.packets for p in ports),
            bytes=sum(p.bytes for p in ports),
            forwarded=sum(p.forwarded for p in ports),
            rtcp_packets=sum(p.rtcp_packets for p in ports),
            dropped_foreign=sum(p.dropped_foreign for p in ports),
            dropped_malformed=sum(p.dropped_malformed for p in ports),
            dropped_no_destination=sum(p.dropped_no_destination for p in ports),
            rtp_expected=expected,
            rtp_lost=expected - received,
            ssrc=None if rtp.ssrc is None else int.from_bytes(rtp.ssrc, "big"),
            last_seen=max(seen) if seen else None,
            source=rtp.remote if rtp.learned else None,
        )


class _Call:
    __slots__ = ("a", "b", "call_id", "created", "touched")

    def __init__(self, call_id: str, a: _Leg, b: _Leg, now: float) -> None:
        self.call_id = call_id
        self.a = a
        self.b = b
        self.created = now
        self.touched = now  # creation or the last re-offer

    def ports(self) -> Iterator[RelayPort]:
        yield from self.a.ports
        yield from self.b.ports

    def last_activity(self) -> float:
        return max([self.touched, *(p.last_seen for p in self.ports() if p.last_seen is not None)])

    def stats(self) -> CallStats:
        return CallStats(
            call_id=self.call_id, created=self.created, a_to_b=self.a.stats(), b_to_a=self.b.stats()
        )


class MediaRelay:
    """The relay table. Commands: :meth:`create_call`, :meth:`update_call`,
    :meth:`delete_call`; data: :meth:`receive_datagram` (or the hot path
    :meth:`port_at` + :meth:`RelayPort.relay`); the core shape's
    :meth:`datagrams_to_send`, :meth:`get_timer`, :meth:`handle_timer`,
    :meth:`next_event`."""

    def __init__(self, config: MediaRelayConfig | None = None) -> None:
        self.config = config or MediaRelayConfig()
        self._calls: dict[str, _Call] = {}
        self._ports: dict[Endpoint, RelayPort] = {}
        self.event_queue: deque[MediaRelayEvent] = deque()
        """Events not yet taken by :meth:`next_event` (truthy when there are some)."""
        self._out: list[Datagram] = []
        self._timers: list[tuple[float, int, _Call]] = []
        self._order = itertools.count()
        self.unknown_port_drops = 0

    # -- commands --------------------------------------------------------------------

    @property
    def call_count(self) -> int:
        return len(self._calls)

    def call_ids(self) -> list[str]:
        return list(self._calls)

    def port_at(self, local: Endpoint) -> RelayPort | None:
        """The relay port bound at ``local`` (the driver's per-socket handle)."""
        return self._ports.get(local)

    def ports_of(self, call_id: str) -> tuple[RelayPort, ...]:
        return tuple(self._call(call_id).ports())

    def create_call(
        self, call_id: str, *, a: LegSetup, b: LegSetup, now: float
    ) -> tuple[LegEndpoints, LegEndpoints]:
        """Add a call relaying between leg ``a`` and leg ``b``, whose ports the
        driver bound at the setups' local endpoints; the learning window opens.
        Returns the endpoints each leg's SDP must name. Raises
        :class:`LocalProtocolError` for a known ``call_id``, a local endpoint
        in use, an SDP address of the wrong family, or a full table."""
        if call_id in self._calls:
            raise LocalProtocolError(f"call {call_id!r} exists")
        if len(self._calls) >= self.config.max_calls:
            raise LocalProtocolError("the media relay's call table is full")
        locals_ = [a.rtp_local, a.rtcp_local, b.rtp_local, b.rtcp_local]
        taken = [ep for ep in locals_ if ep is not None]
        if len(set(taken)) != len(taken) or any(ep in self._ports for ep in taken):
            raise LocalProtocolError("relay endpoints must be distinct and unused")
        leg_a = self._leg(call_id, LegSide.A, a, now)
        leg_b = self._leg(call_id, LegSide.B, b, now)
        for this, other in ((leg_a, leg_b), (leg_b, leg_a)):
            for port in this.ports:
                port.rtp_out = other.rtp
                port.rtcp_out = other.rtcp_port
        call = _Call(call_id, leg_a, leg_b, now)
        self._calls[call_id] = call
        for port in call.ports():
            self._ports[port.local] = port
        self._arm(call, now + self.config.idle_timeout)
        ends = (leg_a.endpoints(), leg_b.endpoints())
        self.event_queue.append(CallCreated(call_id=call_id, a=ends[0], b=ends[1]))
        return ends

    def _leg(self, call_id: str, side: LegSide, setup: LegSetup, now: float) -> _Leg:
        v6 = _is_v6(setup.rtp_local)
        if setup.rtcp_local is not None and _is_v6(setup.rtcp_local) != v6:
            raise LocalProtocolError("a leg's RTP and RTCP ports must be of one family")
        remote_rtcp = setup.remote_rtcp
        if remote_rtcp is None and setup.remote_rtp is not None:
            remote_rtcp = _next_port(setup.remote_rtp)  # RFC 3605 §2.1: no a=rtcp
        for remote in (setup.remote_rtp, setup.remote_rtcp):
            if remote is not None and _is_v6(remote) != v6:
                raise LocalProtocolError(
                    f"leg {side.value}: SDP address {remote} is not of its relay's family"
                )
        events, config = self.event_queue, self.config
        if setup.rtcp_local is None:
            mux = RelayPort(
                config, events, call_id, side, _MUX, setup.rtp_local, setup.remote_rtp, now
            )
            return _Leg(side, mux, None)
        rtp = RelayPort(config, events, call_id, side, _RTP, setup.rtp_local, setup.remote_rtp, now)
        rtcp = RelayPort(config, events, call_id, side, _RTCP, setup.rtcp_local, remote_rtcp, now)
        return _Leg(side, rtp, rtcp)

    def update_call(
        self,
        call_id: str,
        *,
        a: LegUpdate | None = None,
        b: LegUpdate | None = None,
        now: float,
    ) -> None:
        """A re-offer (or answer to one): a leg whose SDP address changed
        (the endpoint moved, RFC 3264 §8) is re-seeded and learns again; a
        leg whose address is unchanged or not given keeps its strict latch.
        Both updates are checked before either is applied. The relay ports
        stay the same."""
        call = self._call(call_id)
        planned: list[tuple[RelayPort, Endpoint | None]] = []
        for leg, update in ((call.a, a), (call.b, b)):
            rtp_remote = update.remote_rtp if update is not None else None
            rtcp_remote = update.remote_rtcp if update is not None else None
            if rtcp_remote is None and rtp_remote is not None and leg.rtcp is not None:
                rtcp_remote = _next_port(rtp_remote)
            v6 = _is_v6(leg.rtp.local)
            for remote in (rtp_remote, rtcp_remote):
                if remote is not None and _is_v6(remote) != v6:
                    raise LocalProtocolError(
                        f"leg {leg.side.value}: SDP address {remote} is not of its relay's family"
                    )
            planned.append((leg.rtp, rtp_remote))
            if leg.rtcp is not None:
                planned.append((leg.rtcp, rtcp_remote))
        for port, remote in planned:
            port.reopen_learning(remote, now)
        call.touched = now
        self.event_queue.append(CallUpdated(call_id=call_id))

    def delete_call(self, call_id: str, *, now: float) -> CallStats:
        """Remove the call (``CallDeleted`` tells the driver to close its ports);
        returns its final statistics."""
        return self._delete(self._call(call_id), DeleteReason.DELETED)

    def shutdown(self, *, now: float) -> None:
        """Delete every call (reason SHUTDOWN)."""
        for call in list(self._calls.values()):
            self._delete(call, DeleteReason.SHUTDOWN)

    def call_stats(self, call_id: str) -> CallStats:
        return self._call(call_id).stats()

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            raise LocalProtocolError(f"no call {call_id!r}")
        return call

    def _delete(self, call: _Call, reason: DeleteReason) -> CallStats:
        del self._calls[call.call_id]
        ports = tuple(call.ports())
        for port in ports:
            self._ports.pop(port.local, None)
            port.send = None
        stats = call.stats()
        self.event_queue.append(
            CallDeleted(
                call_id=call.call_id,
                reason=reason,
                local_endpoints=tuple(p.local for p in ports),
                stats=stats,
            )
        )
        return stats

    # -- data ------------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, remote: Endpoint, *, local: Endpoint, now: float
    ) -> None:
        """A datagram from ``remote`` arrived at relay endpoint ``local``: queue
        it for the other leg if the latching rules let it through."""
        port = self._ports.get(local)
        if port is None:
            self.unknown_port_drops += 1
            return
        out = port.relay(data, remote, now)
        if out is not None and out.remote is not None:
            self._out.append(Datagram(data, out.remote, out.local))

    def datagrams_to_send(self, *, now: float | None = None) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    # -- time ------------------------------------------------------------------------

    def _arm(self, call: _Call, deadline: float) -> None:
        heapq.heappush(self._timers, (deadline, next(self._order), call))

    def get_timer(self) -> float | None:
        """The earliest moment a call may have gone idle (checked, then re-armed)."""
        return self._timers[0][0] if self._timers else None

    def handle_timer(self, *, now: float) -> None:
        """Time out every call idle for ``idle_timeout`` (``CallTimedOut``, ``CallDeleted``)."""
        timers, idle = self._timers, self.config.idle_timeout
        while timers and timers[0][0] <= now:
            _, _, call = heapq.heappop(timers)
            if self._calls.get(call.call_id) is not call:
                continue  # deleted meanwhile
            last = call.last_activity()
            if now - last >= idle:
                stats = call.stats()
                self.event_queue.append(
                    CallTimedOut(call_id=call.call_id, idle_for=now - last, stats=stats)
                )
                self._delete(call, DeleteReason.TIMED_OUT)
            else:
                self._arm(call, last + idle)

    def next_event(self) -> MediaRelayEvent | None:
        return self.event_queue.popleft() if self.event_queue else None
