"""One RTP media stream: the sans-IO RTP/RTCP session (RFC 3550, RFC 4961).

Theory of operation
-------------------
An :class:`RtpSession` owns one local RTP transport address and one local
RTCP address (the same one with rtcp-mux, RFC 5761), and sends from exactly
the addresses it receives on: every datagram it produces is a
:class:`~natkit.addr.Datagram` naming its local endpoint, which is
symmetric RTP/RTCP (RFC 4961). The remote RTP and RTCP endpoints come from
signalling (:meth:`RtpSession.set_remote`) or, with ``latch`` (comedia),
follow the source of incoming media.

Sending: the SSRC, the first sequence number and the first timestamp are
random (RFC 3550 §5.1, §8.1, from ``config.rng``); :meth:`send_frame`
stamps one payload and queues it.

Receiving: each remote SSRC gets a
:class:`~natkit.rtp.source.ReceivedSource` (Appendix A.1 probation and
sequence tracking, A.3 loss, A.8 jitter). Packets are delivered as
:class:`~natkit.rtp.events.RtpReceived` once their source is valid;
duplicates and wild jumps are dropped. A packet carrying *our* SSRC from
another address is a collision (§8.2): we send BYE for the old SSRC,
pick a new one and remember the address, so a loop is not mistaken for a
new collision.

RTCP: a compound report (SR if we sent RTP since the report before last,
else RR, always with SDES CNAME, §6.1, §6.4) goes out on the timer of §6.3
and Appendix A.7: the interval from :mod:`natkit.rtp.interval`, its
first run halved, timer reconsideration on expiry and reverse
reconsideration when members leave (§6.3.4). Report blocks about us give
the round-trip time A - LSR - DLSR (§6.4.1). A source silent for
``timeout_intervals`` deterministic intervals times out (§6.3.5).
:meth:`close` sends a final report with BYE (§6.3.7: immediately, as a
session this small may).

SRTP (RFC 3711): with ``srtp_send`` every RTP and RTCP packet leaves
protected under our SDES key, with ``srtp_receive`` every one received must
unprotect under the peer's; one that does not (tampered, replayed, plain) is
dropped and counted like a malformed one.

NTP timestamps come from ``config.wallclock`` (Unix seconds) when given;
without one they count from ``now``, which keeps RTT exact (both ends of the
computation are ours) but gives peers no usable wall-clock time.
"""

from __future__ import annotations

import base64
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from natkit.addr import Datagram, Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng, default_rng
from natkit.rtp.demux import DatagramKind, classify_datagram
from natkit.rtp.events import (
    ByeReceived,
    RemoteLatched,
    RtcpReceived,
    RtpEvent,
    RtpReceived,
    RtpStatistics,
    SourceAdded,
    SourceTimedOut,
    SsrcChanged,
    StatisticsUpdated,
)
from natkit.rtp.interval import deterministic_interval, rtcp_interval
from natkit.rtp.packet import ExtensionElement, RtpPacket, parse_rtp, serialize_rtp
from natkit.rtp.rtcp import (
    NTP_UNIX_OFFSET,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SdesItem,
    SdesItemType,
    SenderReport,
    SourceDescription,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
    serialize_rtcp,
)
from natkit.rtp.source import ReceivedSource, SequenceVerdict
from natkit.rtp.srtp import SrtpContext

__all__ = ["RtpSession", "RtpSessionConfig"]

_UDP_IP_OVERHEAD = 28  # §6.2: RTCP sizes include the lower-layer headers (IPv4 + UDP)
_MAX_REPORT_BLOCKS = 31
_MAX_CONFLICTS = 64


@dataclass(frozen=True, slots=True)
class RtpSessionConfig:
    """RTP session parameters; names follow RFC 3550's own symbols.

    ``session_bandwidth`` is in bits/s (SDP ``b=AS``: 64 kbit/s for
    G.711); RTCP gets ``rtcp_fraction`` of it (§6.2) and senders
    ``sender_fraction`` of that. ``t_min`` is the minimum report interval
    (§6.2, "Tmin"); ``reduced_minimum`` lowers it to 360 / (session
    bandwidth in kbit/s) when that is smaller. ``max_dropout``,
    ``max_misorder`` and ``min_sequential`` are A.1's ``MAX_DROPOUT``,
    ``MAX_MISORDER`` and ``MIN_SEQUENTIAL``; ``timeout_intervals`` is
    §6.3.5's M. ``max_sources`` bounds the SSRC table against floods of
    random SSRCs. ``cname`` defaults to a random RFC 7022 identifier.
    """

    clock_rate: int = 8000
    session_bandwidth: float = 64_000.0
    rtcp_fraction: float = 0.05
    sender_fraction: float = 0.25
    t_min: float = 5.0
    reduced_minimum: bool = False
    timeout_intervals: int = 5
    max_dropout: int = 3000
    max_misorder: int = 100
    min_sequential: int = 2
    max_sources: int = 64
    rtcp_mux: bool = False
    latch: bool = False
    accept_reduced_size: bool = True
    cname: str | None = None
    rng: Rng = field(default_factory=default_rng)
    wallclock: Callable[[], float] | None = None


class RtpSession:
    """One media stream from one local RTP (and RTCP) transport address."""

    def __init__(
        self,
        config: RtpSessionConfig | None = None,
        *,
        local_rtp: Endpoint,
        now: float,
        remote_rtp: Endpoint | None = None,
        local_rtcp: Endpoint | None = None,
        remote_rtcp: Endpoint | None = None,
        srtp_send: SrtpContext | None = None,
        srtp_receive: SrtpContext | None = None,
    ) -> None:
        self.config = cfg = config or RtpSessionConfig()
        self._srtp_send = srtp_send
        self._srtp_receive = srtp_receive
        rng = cfg.rng
        self._ssrc = rng.getrandbits(32)
        self._sequence = rng.getrandbits(16)
        self._initial_timestamp = rng.getrandbits(32)
        self._timestamp = self._initial_timestamp
        self.cname = cfg.cname or base64.b64encode(rng.getrandbits(96).to_bytes(12, "big")).decode()
        self.local_rtp = local_rtp
        self.local_rtcp = local_rtp if cfg.rtcp_mux else (local_rtcp or _next_port(local_rtp))
        self.remote_rtp: Endpoint | None = None
        self.remote_rtcp: Endpoint | None = None
        if remote_rtp is not None:
            self.set_remote(remote_rtp, remote_rtcp)
        self._sources: dict[int, ReceivedSource] = {}
        self._conflicts: OrderedDict[Endpoint, None] = OrderedDict()
        self._out: list[Datagram] = []
        self._events: deque[RtpEvent] = deque()
        self._closed = False
        # sender state
        self._packets_sent = 0
        self._octets_sent = 0
        self._sr_packets = 0  # the SR counts: reset with a new SSRC (§6.4.1)
        self._sr_octets = 0
        self._last_sent_time: float | None = None
        self._last_sent_timestamp = 0
        # reception summary and reports about us
        self._fraction_lost = 0.0
        self._rtt: float | None = None
        self._remote_lost: int | None = None
        self._remote_fraction: float | None = None
        self._remote_jitter: float | None = None
        self._malformed = 0
        # RTCP timing (A.7)
        self._minimum = cfg.t_min
        if cfg.reduced_minimum and cfg.session_bandwidth > 0:
            self._minimum = min(cfg.t_min, 360.0 / (cfg.session_bandwidth / 1000.0))
        self._initial = True
        self._last_report: float = -float("inf")
        self._report_before_last: float = -float("inf")
        self._tp = now
        self._pmembers = 1
        self._avg_rtcp_size = float(len(self._build_report(now, peek=True)) + _UDP_IP_OVERHEAD)
        self._tn = now + self._interval()

    # -- properties ----------------------------------------------------------------------

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def sequence_number(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sources(self) -> Mapping[int, ReceivedSource]:
        """Remote SSRCs known to the session, including those on probation."""
        return self._sources

    @property
    def malformed_count(self) -> int:
        """Datagrams dropped because they did not parse (or unprotect, with SRTP)."""
        return self._malformed

    @property
    def statistics(self) -> RtpStatistics:
        sources = [s for s in self._sources.values() if s.validated]
        return RtpStatistics(
            packets_sent=self._packets_sent,
            bytes_sent=self._octets_sent,
            packets_received=sum(s.received for s in sources),
            bytes_received=sum(s.octets_received for s in sources),
            packets_lost=sum(s.lost for s in sources),
            fraction_lost=self._fraction_lost,
            jitter_ms=max((s.jitter * 1000 / s.clock_rate for s in sources), default=0.0),
            duplicates=sum(s.duplicates for s in self._sources.values()),
            rtt_ms=None if self._rtt is None else self._rtt * 1000,
            remote_packets_lost=self._remote_lost,
            remote_fraction_lost=self._remote_fraction,
            remote_jitter_ms=self._remote_jitter,
        )

    # -- commands ------------------------------------------------------------------------

    def set_srtp(self, send: SrtpContext | None, receive: SrtpContext | None) -> None:
        """New SRTP keys (a re-offer changed them, RFC 4568 §7.1.4): what is
        sent from now on is protected with ``send``, what arrives must
        unprotect with ``receive``; ``None`` is plain RTP that way."""
        self._srtp_send = send
        self._srtp_receive = receive

    def set_remote(self, rtp: Endpoint, rtcp: Endpoint | None = None) -> None:
        """Send to ``rtp`` (and RTCP to ``rtcp``: by default the RTP endpoint
        with rtcp-mux, else the next port up, RFC 3550 §11)."""
        self.remote_rtp = rtp
        if self.config.rtcp_mux:
            self.remote_rtcp = rtp
        else:
            self.remote_rtcp = rtcp or _next_port(rtp)

    def send_frame(
        self,
        payload: bytes,
        *,
        pt: int,
        now: float,
        timestamp_increment: int = 0,
        media_timestamp: int | None = None,
        marker: bool = False,
        csrcs: tuple[int, ...] = (),
        extension_profile: int | None = None,
        extensions: tuple[ExtensionElement, ...] = (),
    ) -> RtpPacket:
        """Stamp ``payload`` as the next RTP packet and queue it to the remote.

        The packet's timestamp is the stream's current one, or the initial
        random timestamp plus ``media_timestamp`` when given (RFC 3550
        §5.1); ``timestamp_increment`` (the frame's duration in clock units,
        160 for 20 ms of G.711) then advances it for the next frame. Without
        a remote endpoint the packet is built but not sent.
        """
        if self._closed:
            raise LocalProtocolError("the RTP session is closed")
        if media_timestamp is not None:
            self._timestamp = (self._initial_timestamp + media_timestamp) & 0xFFFFFFFF
        packet = RtpPacket(
            payload_type=pt,
            sequence_number=self._sequence,
            timestamp=self._timestamp,
            ssrc=self._ssrc,
            payload=payload,
            marker=marker,
            csrcs=csrcs,
            extension_profile=extension_profile,
            extensions=extensions,
        )
        data = serialize_rtp(packet)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._timestamp = (self._timestamp + timestamp_increment) & 0xFFFFFFFF
        if self.remote_rtp is not None:
            if self._srtp_send is not None:
                data = self._srtp_send.protect_rtp(data)
            self._out.append(Datagram(data, self.remote_rtp, self.local_rtp))
            self._packets_sent += 1
            self._octets_sent += len(payload)
            self._sr_packets += 1
            self._sr_octets += len(payload)
            self._last_sent_time = now
            self._last_sent_timestamp = packet.timestamp
        return packet

    def close(self, *, now: float, reason: str | None = None) -> None:
        """Leave the session: a last report with BYE (RFC 3550 §6.3.7, §6.6)."""
        if self._closed:
            return
        self._send_report(now, bye=True, bye_reason=reason)
        self._closed = True

    # -- the core shape ------------------------------------------------------------------

    def receive_datagram(
        self, data: bytes, addr: Endpoint, *, now: float, local: Endpoint | None = None
    ) -> None:
        """Take one datagram from ``addr``, received on ``local``.

        Without rtcp-mux and with ``local`` given, the local port says
        whether it is RTP or RTCP; otherwise RFC 5761 §4 decides by content.
        Anything but valid RTP/RTCP is dropped (STUN and DTLS on a shared
        port belong to the ICE agent and DTLS layer above).
        """
        if self._closed:
            return
        kind = classify_datagram(data)
        if kind not in (DatagramKind.RTP, DatagramKind.RTCP):
            self._malformed += 1
            return
        if not self.config.rtcp_mux and local is not None and self.local_rtcp != self.local_rtp:
            kind = DatagramKind.RTCP if local == self.local_rtcp else DatagramKind.RTP
        if kind is DatagramKind.RTP:
            self._receive_rtp(data, addr, now)
        else:
            self._receive_rtcp(data, addr, now)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None if self._closed else self._tn

    def handle_timer(self, *, now: float) -> None:
        """Time out silent sources (§6.3.5); send the report when due (A.7 OnExpire)."""
        if self._closed:
            return
        self._expire_sources(now)
        if now < self._tn:
            return
        # Timer reconsideration (§6.3.6): the interval may have grown since scheduling.
        tn = self._tp + self._interval()
        if tn <= now:
            self._send_report(now)
            self._tn = now + self._interval()
        else:
            self._tn = tn

    def next_event(self) -> RtpEvent | None:
        return self._events.popleft() if self._events else None

    # -- receiving RTP -------------------------------------------------------------------

    def _receive_rtp(self, data: bytes, addr: Endpoint, now: float) -> None:
        try:
            if self._srtp_receive is not None:
                data = self._srtp_receive.unprotect_rtp(data)
            packet = parse_rtp(data)
        except MalformedMessageError:
            self._malformed += 1
            return
        if packet.ssrc == self._ssrc and not self._collided(addr, now):
            return
        source = self._sources.get(packet.ssrc)
        if source is None:
            source = self._new_source(packet.ssrc)
            if source is None:
                return
        was_member = source.is_member
        verdict, deliver = source.update(packet, now=now)
        if verdict is not SequenceVerdict.ACCEPTED:
            return
        source.rtp_source = addr
        if not was_member:
            self._events.append(SourceAdded(ssrc=source.ssrc, source=addr))
        if self.config.latch and addr != self.remote_rtp:
            self.remote_rtp = addr
            if self.config.rtcp_mux or self.remote_rtcp is None:
                self.remote_rtcp = addr if self.config.rtcp_mux else _next_port(addr)
            self._events.append(RemoteLatched(remote_rtp=addr, remote_rtcp=self.remote_rtcp))
        for p in deliver:
            self._events.append(
                RtpReceived(
                    packet=p,
                    source=addr,
                    extended_sequence=source.extended_sequence(p.sequence_number),
                )
            )

    def _new_source(self, ssrc: int) -> ReceivedSource | None:
        cfg = self.config
        if len(self._sources) >= cfg.max_sources:
            return None
        source = ReceivedSource(
            ssrc,
            clock_rate=cfg.clock_rate,
            max_dropout=cfg.max_dropout,
            max_misorder=cfg.max_misorder,
            min_sequential=cfg.min_sequential,
        )
        self._sources[ssrc] = source
        return source

    def _collided(self, addr: Endpoint, now: float) -> bool:
        """Our SSRC arrived from ``addr`` (RFC 3550 §8.2). True: go on processing
        the packet as another participant's, under the SSRC we just gave up."""
        if addr in (self.local_rtp, self.local_rtcp) or addr in self._conflicts:
            return False  # our own packets looped back, or a collision already handled
        self._conflicts[addr] = None
        while len(self._conflicts) > _MAX_CONFLICTS:
            self._conflicts.popitem(last=False)
        old = self._ssrc
        self._send_report(now, bye=True, bye_reason="SSRC collision")
        new = old
        while new == old or new in self._sources:
            new = self.config.rng.getrandbits(32)
        self._ssrc = new
        self._sr_packets = self._sr_octets = 0
        self._events.append(SsrcChanged(old_ssrc=old, new_ssrc=new, conflicting_source=addr))
        return True

    # -- receiving RTCP ------------------------------------------------------------------

    def _receive_rtcp(self, data: bytes, addr: Endpoint, now: float) -> None:
        try:
            if self._srtp_receive is not None:
                data = self._srtp_receive.unprotect_rtcp(data)
            packets = parse_rtcp(data, allow_reduced_size=self.config.accept_reduced_size)
        except MalformedMessageError:
            self._malformed += 1
            return
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        if self.config.latch and not self.config.rtcp_mux and addr != self.remote_rtcp:
            self.remote_rtcp = addr
            if self.remote_rtp is not None:
                self._events.append(RemoteLatched(remote_rtp=self.remote_rtp, remote_rtcp=addr))
        reported = False
        for packet in packets:
            match packet:
                case SenderReport() | ReceiverReport():
                    if packet.ssrc == self._ssrc and not self._collided(addr, now):
                        continue
                    source = self._member(packet.ssrc, addr, now)
                    if source is not None and isinstance(packet, SenderReport):
                        source.last_sr_ntp = ntp_middle32(packet.ntp_timestamp)
                        source.last_sr_arrival = now
                    reported |= self._reports_about_us(packet.reports, now)
                case SourceDescription():
                    for chunk in packet.chunks:
                        if chunk.ssrc == self._ssrc:
                            continue
                        source = self._member(chunk.ssrc, addr, now)
                        cname = chunk.get(SdesItemType.CNAME)
                        if source is not None and cname is not None:
                            source.cname = cname
                case Bye():
                    for ssrc in packet.ssrcs:
                        self._bye(ssrc, packet.reason, addr, now)
                case _:
                    pass
        self._events.append(RtcpReceived(packets=tuple(packets), source=addr))
        if reported:
            self._events.append(StatisticsUpdated(statistics=self.statistics))

    def _member(self, ssrc: int, addr: Endpoint, now: float) -> ReceivedSource | None:
        """The source ``ssrc``, made a member by an RTCP packet (§6.2.1)."""
        source = self._sources.get(ssrc) or self._new_source(ssrc)
        if source is None:
            return None
        source.last_heard = now
        if not source.is_member:
            source.rtcp_heard = True
            self._events.append(SourceAdded(ssrc=ssrc, source=addr))
        source.rtcp_heard = True
        return source

    def _reports_about_us(self, reports: tuple[ReportBlock, ...], now: float) -> bool:
        """Note what a peer reports about our stream; RTT from LSR/DLSR (§6.4.1)."""
        found = False
        for block in reports:
            if block.ssrc != self._ssrc:
                continue
            found = True
            self._remote_lost = block.cumulative_lost
            self._remote_fraction = block.fraction_lost / 256
            self._remote_jitter = block.jitter * 1000 / self.config.clock_rate
            if block.last_sr:
                arrival = ntp_middle32(self._ntp(now))
                rtt = (arrival - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
                if rtt < 0x80000000:  # negative means clock trouble: keep the old value
                    self._rtt = rtt / 65536
        return found

    def _bye(self, ssrc: int, reason: str | None, addr: Endpoint, now: float) -> None:
        source = self._sources.pop(ssrc, None)
        if source is None:
            return
        if source.is_member:
            self._events.append(ByeReceived(ssrc=ssrc, reason=reason, source=addr))
            self._reverse_reconsider(now)

    def _reverse_reconsider(self, now: float) -> None:
        """§6.3.4: members left, so bring the next report forward in proportion."""
        members = self._members()
        if members < self._pmembers:
            ratio = members / self._pmembers
            self._tn = now + ratio * (self._tn - now)
            self._tp = now - ratio * (now - self._tp)
            self._pmembers = members

    def _expire_sources(self, now: float) -> None:
        timeout = self.config.timeout_intervals * deterministic_interval(
            members=self._members(),
            senders=self._senders(),
            rtcp_bandwidth=self._rtcp_bandwidth(),
            we_sent=self._we_sent(),
            avg_rtcp_size=self._avg_rtcp_size,
            minimum=self.config.t_min,
            sender_fraction=self.config.sender_fraction,
        )
        gone = [s for s in self._sources.values() if now - s.last_heard > timeout]
        for source in gone:
            del self._sources[source.ssrc]
            if source.is_member:
                self._events.append(SourceTimedOut(ssrc=source.ssrc))
        if gone:
            self._reverse_reconsider(now)

    # -- sending RTCP --------------------------------------------------------------------

    def _ntp(self, now: float) -> int:
        clock = self.config.wallclock
        seconds = clock() if clock is not None else now
        return ntp_timestamp(seconds + NTP_UNIX_OFFSET)

    def _members(self) -> int:
        return 1 + sum(1 for s in self._sources.values() if s.is_member)

    def _senders(self) -> int:
        senders = sum(
            1
            for s in self._sources.values()
            if s.validated and s.last_rtp > self._report_before_last
        )
        return senders + (1 if self._we_sent() else 0)

    def _we_sent(self) -> bool:
        """§6.4: we sent RTP since the report before last."""
        return self._last_sent_time is not None and self._last_sent_time > self._report_before_last

    def _rtcp_bandwidth(self) -> float:
        return self.config.session_bandwidth * self.config.rtcp_fraction / 8

    def _interval(self) -> float:
        return rtcp_interval(
            members=self._members(),
            senders=self._senders(),
            rtcp_bandwidth=self._rtcp_bandwidth(),
            we_sent=self._we_sent(),
            avg_rtcp_size=self._avg_rtcp_size,
            minimum=self._minimum,
            initial=self._initial,
            rng=self.config.rng,
            sender_fraction=self.config.sender_fraction,
        )

    def _build_report(
        self, now: float, *, peek: bool = False, bye: bool = False, bye_reason: str | None = None
    ) -> bytes:
        blocks: list[ReportBlock] = []
        if not peek:
            blocks = [
                s.report_block(now=now)
                for s in self._sources.values()
                if s.validated and s.sent_since_report
            ][:_MAX_REPORT_BLOCKS]
            if blocks:
                self._fraction_lost = max(b.fraction_lost for b in blocks) / 256
        packets: list[RtcpPacket] = []
        if not peek and self._we_sent() and self._last_sent_time is not None:
            elapsed = round((now - self._last_sent_time) * self.config.clock_rate)
            packets.append(
                SenderReport(
                    ssrc=self._ssrc,
                    ntp_timestamp=self._ntp(now),
                    rtp_timestamp=(self._last_sent_timestamp + elapsed) & 0xFFFFFFFF,
                    packet_count=self._sr_packets & 0xFFFFFFFF,
                    octet_count=self._sr_octets & 0xFFFFFFFF,
                    reports=tuple(blocks),
                )
            )
        else:
            packets.append(ReceiverReport(ssrc=self._ssrc, reports=tuple(blocks)))
        cname = self.cname.encode()[:255]
        packets.append(
            SourceDescription((SdesChunk(self._ssrc, (SdesItem(SdesItemType.CNAME, cname),)),))
        )
        if bye:
            if bye_reason is not None:
                bye_reason = bye_reason.encode()[:255].decode("utf-8", "ignore")
            packets.append(Bye((self._ssrc,), bye_reason))
        return serialize_rtcp(packets)

    def _send_report(self, now: float, *, bye: bool = False, bye_reason: str | None = None) -> None:
        data = self._build_report(now, bye=bye, bye_reason=bye_reason)
        if self.remote_rtcp is not None:
            wire = data if self._srtp_send is None else self._srtp_send.protect_rtcp(data)
            self._out.append(Datagram(wire, self.remote_rtcp, self.local_rtcp))
        self._avg_rtcp_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_rtcp_size) / 16
        self._report_before_last, self._last_report = self._last_report, now
        self._tp = now
        self._initial = False
        self._pmembers = self._members()
        self._events.append(StatisticsUpdated(statistics=self.statistics))


def _next_port(endpoint: Endpoint) -> Endpoint:
    """RFC 3550 §11: RTCP on the next (odd) port up."""
    return endpoint.with_port(min(endpoint.port + 1, 0xFFFF))
