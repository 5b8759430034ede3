"""Reception state of one remote source (RFC 3550 Appendix A.1, A.3, A.8).

Theory of operation
-------------------
:class:`ReceivedSource` follows one SSRC's sequence numbers exactly as
Appendix A.1 does: a new source is on probation until ``min_sequential``
packets arrive in sequence; a jump forward of less than ``max_dropout`` is
accepted (counting a wrap of the 16-bit number as a new cycle); a jump of
more than that, or back by more than ``max_misorder``, is dropped unless the
very next packet follows it, which means the sender restarted; anything
just behind the highest number is a late (reordered) packet and counts.

Two things go beyond the appendix's code. Packets held back during probation
are not lost: they are handed back when the source validates, and they
count as received from the first of them. And exact duplicates are
recognised through a bitmap of the sequence numbers just below the highest,
and dropped without counting, so they neither reach the application nor
mask losses.

Loss follows A.3 (expected minus received, fraction per report interval as
an 8-bit fixed-point value); interarrival jitter follows A.8 with the
arrival time converted to timestamp units (``clock_rate``), both
differences taken modulo their wrap, so a 32-bit timestamp wrap is not a
spike.
"""

from __future__ import annotations

import enum

from natkit.addr import Endpoint
from natkit.rtp.packet import RtpPacket
from natkit.rtp.rtcp import ReportBlock

__all__ = ["ReceivedSource", "SequenceVerdict"]

RTP_SEQ_MOD = 1 << 16
_DUPLICATE_WINDOW = 1024  # sequence numbers below the highest whose arrival is remembered
_WINDOW_MASK = (1 << _DUPLICATE_WINDOW) - 1


class SequenceVerdict(enum.Enum):
    """What :meth:`ReceivedSource.update` decided about one packet."""

    ACCEPTED = "accepted"  # valid: deliver it (with any packets held in probation)
    PROBATION = "probation"  # held until the source validates
    DUPLICATE = "duplicate"  # an exact copy of one already accepted: dropped
    BAD_SEQUENCE = "bad-sequence"  # a wild jump: dropped, unless the next one confirms it


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


class ReceivedSource:
    """One remote SSRC as a receiver sees it."""

    def __init__(
        self,
        ssrc: int,
        *,
        clock_rate: int,
        max_dropout: int = 3000,
        max_misorder: int = 100,
        min_sequential: int = 2,
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.min_sequential = min_sequential
        # A.1 state
        self.max_seq = 0
        self.cycles = 0
        self.base_seq = 0
        self.bad_seq = RTP_SEQ_MOD + 1
        self.probation = min_sequential
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.started = False
        self.validated = False
        self._seen = 0  # bit i: extended sequence number (highest - i) arrived
        self._held: list[RtpPacket] = []
        # A.8 state
        self.jitter = 0.0
        self._last_arrival: float | None = None
        self._last_timestamp = 0
        # counters and RTCP state
        self.octets_received = 0
        self.duplicates = 0
        self.last_heard = 0.0
        self.last_rtp = -1.0
        self.rtp_source: Endpoint | None = None
        self.last_sr_ntp = 0  # middle 32 bits of the last SR's NTP timestamp
        self.last_sr_arrival = 0.0
        self.cname: str | None = None
        self.sent_since_report = False
        self.rtcp_heard = False

    @property
    def is_member(self) -> bool:
        """A session member (§6.2.1): validated by RTP, or heard over RTCP."""
        return self.validated or self.rtcp_heard

    # -- A.1 -------------------------------------------------------------------------------

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.received_prior = 0
        self.expected_prior = 0
        self._seen = 1

    @property
    def extended_max(self) -> int:
        """The extended highest sequence number received (A.1: cycles + max_seq)."""
        return self.cycles + self.max_seq

    def extended_sequence(self, seq: int) -> int:
        """The extended number of ``seq``, taken as the nearest to the highest."""
        delta = (seq - self.max_seq) & 0xFFFF
        if delta >= RTP_SEQ_MOD // 2:
            delta -= RTP_SEQ_MOD
        return self.extended_max + delta

    def update(self, packet: RtpPacket, *, now: float) -> tuple[SequenceVerdict, list[RtpPacket]]:
        """Account for one packet (A.1 ``update_seq``, A.8 jitter).

        Returns the verdict and the packets now deliverable, in arrival
        order: the packet itself when accepted, preceded by those held in
        probation when this one validated the source.
        """
        seq = packet.sequence_number
        if not self.started:
            self.started = True
            self._init_seq(seq)
            self.max_seq = (seq - 1) & 0xFFFF
            self.probation = self.min_sequential
        udelta = (seq - self.max_seq) & 0xFFFF
        deliver: list[RtpPacket] = [packet]
        if self.probation:
            if seq == (self.max_seq + 1) & 0xFFFF:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    held = self._held
                    self._held = []
                    self._init_seq(seq)
                    # Held packets were in sequence: they count from the first of them,
                    # which may lie before a wrap: then this packet starts cycle 1, so
                    # extended numbers never go negative.
                    self.base_seq = seq - len(held)
                    if self.base_seq < 0:
                        self.cycles = RTP_SEQ_MOD
                        self.base_seq += RTP_SEQ_MOD
                    self.received = len(held) + 1
                    self._seen = (1 << (len(held) + 1)) - 1
                    self.validated = True
                    self._account(packet, now)
                    return SequenceVerdict.ACCEPTED, [*held, packet]
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
                self._held = []
            self._held.append(packet)
            self._account(packet, now)
            return SequenceVerdict.PROBATION, []
        if udelta == 0:
            self.duplicates += 1
            return SequenceVerdict.DUPLICATE, []
        if udelta < self.max_dropout:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD
            self.max_seq = seq
            self._seen = ((self._seen << udelta) | 1) & _WINDOW_MASK
        elif udelta <= RTP_SEQ_MOD - self.max_misorder:
            if seq == self.bad_seq:
                # Two sequential packets after a jump: the sender restarted (A.1).
                # Its timestamps restart too, so the A.8 transit baseline goes:
                # one transit difference across the restart would be a spike.
                self._init_seq(seq)
                self._last_arrival = None
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return SequenceVerdict.BAD_SEQUENCE, []
        else:
            behind = self.extended_max - self.extended_sequence(seq)
            if behind < _DUPLICATE_WINDOW:
                bit = 1 << behind
                if self._seen & bit:
                    self.duplicates += 1
                    return SequenceVerdict.DUPLICATE, []
                self._seen |= bit
        self.received += 1
        self._account(packet, now)
        return SequenceVerdict.ACCEPTED, deliver

    def _account(self, packet: RtpPacket, now: float) -> None:
        """A.8 interarrival jitter, on every packet that is not a duplicate."""
        arrival = now * self.clock_rate
        if self._last_arrival is not None:
            transit_change = (arrival - self._last_arrival) - _signed32(
                packet.timestamp - self._last_timestamp
            )
            self.jitter += (abs(transit_change) - self.jitter) / 16.0
        self._last_arrival = arrival
        self._last_timestamp = packet.timestamp
        self.octets_received += len(packet.payload)
        self.last_rtp = now
        self.last_heard = now
        self.sent_since_report = True

    # -- A.3 -------------------------------------------------------------------------------

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.validated else 0

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3), clamped to the 24-bit signed field."""
        return max(-0x800000, min(0x7FFFFF, self.expected - self.received))

    def report_block(self, *, now: float) -> ReportBlock:
        """The reception report about this source (RFC 3550 §6.4.1, A.3).

        Starts a new loss interval: the next block's fraction lost counts
        from here.
        """
        expected = self.expected
        expected_interval = expected - self.expected_prior
        self.expected_prior = expected
        received_interval = self.received - self.received_prior
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        self.sent_since_report = False
        dlsr = 0
        if self.last_sr_ntp:
            dlsr = min(0xFFFFFFFF, int((now - self.last_sr_arrival) * 65536))
        return ReportBlock(
            ssrc=self.ssrc,
            fraction_lost=min(255, fraction),
            cumulative_lost=self.lost,
            highest_sequence=self.extended_max & 0xFFFFFFFF,
            jitter=min(0xFFFFFFFF, int(self.jitter)),
            last_sr=self.last_sr_ntp,
            delay_since_last_sr=dlsr,
        )
