"""An adaptive jitter buffer for fixed-frame audio (sans-IO; RFC 3550 §6.4.1, A.1, A.8).

Theory of operation
-------------------
Packets go in with :meth:`JitterBuffer.push` as they arrive; the audio
device (or a recorder's 20 ms tick) takes one frame per call of
:meth:`JitterBuffer.pop`. Both take the current time, so the buffer never
reads a clock.

*Numbering.* Sequence numbers and timestamps are extended past their 16-
and 32-bit wraparound as in RFC 3550 Appendix A.1: a sequence number is
placed relative to the highest seen so far, within ``max_dropout`` ahead
or ``max_misorder`` behind; anything further away means the source
restarted, and so does a new SSRC. Either resets the buffer (counted).

*Playout clock.* The first packet anchors the timeline: its frame is due
``initial_delay`` after it arrived (pop returns None until then). From
then on the frame at ``next_timestamp`` is due one frame duration after
the previous pop, and every later timestamp in proportion, so a packet's
*slack* — how long before its due time it arrived — is known on arrival.
Because the timeline follows the sender's clock, silence suppression
needs no special case: the first packet of a talkspurt arrives about when
it is due. A packet whose slack disagrees with the buffer's running
average by more than ``max_timestamp_jump`` has a timestamp that jumped:
the buffer resets and re-anchors on it.

*Each pop* plays the buffered packet whose timestamp is the next one due.
When it is missing (lost, or not yet arrived) the pop conceals: a frame of
``silence_payload``, or with :attr:`Concealment.REPEAT_LAST` the last
payload played (at most ``max_repeats`` times in a row, then silence; the
classic G.711 packet-loss concealment of repetition). A packet arriving
after its frame was concealed is *late*: dropped and counted.

*Adaptation.* The target for the average slack is ``frame_duration +
jitter_multiplier * J``, ``J`` the RFC 3550 §6.4.1 interarrival jitter,
bounded by ``min_delay`` and ``max_delay`` (and no lower than
``initial_delay`` for the first ``warmup_packets``, while J is still a
guess). When the average slack is more than two frames above target, a
pop skips one frame (time compression); when it is half a frame below
target, or a packet was late, a pop inserts one concealment frame without
advancing (time expansion). The change is a
frame at a time, and slack-driven changes are at least ``adapt_interval``
pops apart so that the noisy average does not make the delay oscillate; a
late packet grows the delay at once.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Final

__all__ = [
    "Concealment",
    "FrameKind",
    "JitterBuffer",
    "JitterBufferConfig",
    "JitterBufferStats",
    "PlayoutFrame",
]

_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32
_SLACK_GAIN: Final = 1 / 16  # the same 1/16 smoothing RFC 3550 A.8 uses for J


class Concealment(enum.Enum):
    """What a pop plays for a missing frame."""

    SILENCE = "silence"
    REPEAT_LAST = "repeat-last"


class FrameKind(enum.Enum):
    MEDIA = "media"
    """A received packet's payload."""
    SILENCE = "silence"
    """Concealment: ``silence_payload``."""
    REPEAT = "repeat"
    """Concealment: the previous payload again."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayoutFrame:
    """One frame to play. ``timestamp`` is the RTP timestamp (32-bit) the
    frame stands for; ``sequence`` the RTP sequence number of a played
    packet, None for concealment."""

    kind: FrameKind
    timestamp: int
    payload: bytes
    sequence: int | None = None

    @property
    def concealed(self) -> bool:
        return self.kind is not FrameKind.MEDIA


@dataclass(frozen=True, slots=True, kw_only=True)
class JitterBufferConfig:
    """Defaults suit G.711 µ-law at 20 ms; for A-law pass
    ``silence_payload=PCMA.silence_payload()``. ``max_dropout`` and
    ``max_misorder`` are RFC 3550 A.1's ``MAX_DROPOUT`` and ``MAX_MISORDER``.
    """

    clock_rate: int = 8000
    frame_samples: int = 160
    min_delay: float = 0.02
    max_delay: float = 0.3
    initial_delay: float = 0.06
    jitter_multiplier: float = 4.0
    concealment: Concealment = Concealment.SILENCE
    silence_payload: bytes = b"\xff" * 160
    max_repeats: int = 3
    capacity: int = 64
    max_dropout: int = 3000
    max_misorder: int = 100
    max_timestamp_jump: float = 1.0
    warmup_packets: int = 50
    adapt_interval: int = 25

    @property
    def frame_duration(self) -> float:
        return self.frame_samples / self.clock_rate


@dataclass(frozen=True, slots=True, kw_only=True)
class JitterBufferStats:
    """Counters since creation (resets do not clear them) and the current
    estimates: ``jitter`` (RFC 3550 J, seconds), ``target_delay`` and
    ``playout_delay`` (the average slack, seconds)."""

    received: int
    played: int
    concealed: int
    late: int
    duplicates: int
    overflowed: int
    skipped: int
    inserted: int
    resets: int
    buffered: int
    jitter: float
    target_delay: float
    playout_delay: float


@dataclass(slots=True)
class _Packet:
    sequence: int
    timestamp: int
    payload: bytes


class JitterBuffer:
    """Reorders, times and conceals one RTP audio stream (see module docs)."""

    def __init__(self, config: JitterBufferConfig | None = None) -> None:
        self.config = config or JitterBufferConfig()
        self._received = self._played = self._concealed = self._late = 0
        self._duplicates = self._overflowed = self._skipped = self._inserted = 0
        self._resets = 0
        self._clear()
        self._ssrc: int | None = None

    # -- state ---------------------------------------------------------------

    def _clear(self) -> None:
        self._buffer: dict[int, _Packet] = {}
        self._anchored = False
        self._playing = False
        self._max_seq = 0  # extended
        self._ref_timestamp_raw = 0
        self._ref_timestamp = 0  # extended timestamp of the highest sequence number
        self._next_timestamp = 0  # extended
        self._next_due = 0.0  # when the frame at _next_timestamp is due
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._jitter = 0.0  # RFC 3550 J, in timestamp units
        self._last_transit: float | None = None
        self._arrivals = 0  # packets that fed the jitter estimate since the last reset
        self._slack = self.config.initial_delay
        self._grow = False
        self._cooldown = 0  # pops before the next slack-driven adjustment
        self._last_payload: bytes | None = None
        self._repeats = 0

    def reset(self) -> None:
        """Forget the stream (buffer, timeline, estimates); counters stay."""
        self._resets += 1
        self._clear()

    # -- input ---------------------------------------------------------------

    def push(
        self, seq: int, timestamp: int, payload: bytes, *, now: float, ssrc: int | None = None
    ) -> None:
        """Add a packet that arrived at ``now`` (RFC 3550 header fields).

        A new ``ssrc`` (when given) or a sequence number or timestamp that
        jumped resets the buffer first; duplicates, late packets and packets
        beyond ``capacity`` are dropped and counted.
        """
        cfg = self.config
        seq %= _SEQ_MOD
        timestamp %= _TS_MOD
        if ssrc is not None:
            if self._ssrc is not None and ssrc != self._ssrc:
                self.reset()
            self._ssrc = ssrc
        self._received += 1
        placed = self._place(seq, timestamp, now=now)
        if placed is None:
            self._duplicates += 1
            return
        ext_seq, ext_ts, slack = placed
        self._remember(ext_seq)
        if ext_seq > self._max_seq:
            self._max_seq = ext_seq
            self._ref_timestamp_raw = timestamp
            self._ref_timestamp = ext_ts
        self._update_jitter(ext_ts, now=now)
        if ext_ts < self._next_timestamp:
            if self._playing:
                # Not averaged into the slack: one very late packet would drag it
                # down for many frames; growing by one frame now is the answer.
                self._late += 1
                self._grow = True
                return
            # Reordered ahead of the anchor before playout began: start earlier.
            self._next_due -= (self._next_timestamp - ext_ts) / cfg.clock_rate
            self._next_timestamp = ext_ts
        self._slack += (slack - self._slack) * _SLACK_GAIN
        if len(self._buffer) >= cfg.capacity:
            self._overflowed += 1
            return
        self._buffer[ext_ts] = _Packet(sequence=seq, timestamp=timestamp, payload=payload)

    def _place(self, seq: int, timestamp: int, *, now: float) -> tuple[int, int, float] | None:
        """Extended sequence number, extended timestamp and slack of a packet,
        resetting the buffer first when the packet starts a new run; None for
        a duplicate."""
        if not self._anchored:
            self._anchor(seq, timestamp, now=now)
        extended = self._extend(seq, timestamp)
        if extended is not None:
            ext_seq, ext_ts = extended
            if ext_seq in self._seen or ext_ts in self._buffer:
                return None
            slack = self._due_time(ext_ts) - now
            jumped = abs(slack - self._slack) > self.config.max_timestamp_jump
            if not (jumped and ext_seq > self._max_seq):
                return ext_seq, ext_ts, slack
        self.reset()
        self._anchor(seq, timestamp, now=now)
        return seq, timestamp, self.config.initial_delay

    def _anchor(self, seq: int, timestamp: int, *, now: float) -> None:
        self._anchored = True
        self._max_seq = seq
        self._ref_timestamp_raw = timestamp
        self._ref_timestamp = timestamp
        self._next_timestamp = timestamp
        self._next_due = now + self.config.initial_delay
        self._slack = self.config.initial_delay

    def _extend(self, seq: int, timestamp: int) -> tuple[int, int] | None:
        """RFC 3550 A.1: place ``seq`` near the highest sequence number seen;
        None when it is too far away to belong to the same run."""
        cfg = self.config
        delta = (seq - self._max_seq + _SEQ_MOD // 2) % _SEQ_MOD - _SEQ_MOD // 2
        ts_delta = (timestamp - self._ref_timestamp_raw + _TS_MOD // 2) % _TS_MOD - _TS_MOD // 2
        if delta > cfg.max_dropout or delta < -cfg.max_misorder:
            return None
        return self._max_seq + delta, self._ref_timestamp + ts_delta

    def _remember(self, ext_seq: int) -> None:
        self._seen.add(ext_seq)
        self._seen_order.append(ext_seq)
        while len(self._seen_order) > 2 * self.config.max_misorder:
            self._seen.discard(self._seen_order.popleft())

    def _due_time(self, ext_ts: int) -> float:
        return self._next_due + (ext_ts - self._next_timestamp) / self.config.clock_rate

    def _update_jitter(self, ext_ts: int, *, now: float) -> None:
        """RFC 3550 §6.4.1 / A.8: J += (|D(i-1,i)| - J) / 16, in timestamp units."""
        transit = now * self.config.clock_rate - ext_ts
        if self._last_transit is not None:
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16
        self._last_transit = transit
        self._arrivals += 1

    # -- output --------------------------------------------------------------

    @property
    def target_delay(self) -> float:
        """The average slack the buffer steers towards, in seconds."""
        cfg = self.config
        wanted = cfg.frame_duration + cfg.jitter_multiplier * self._jitter / cfg.clock_rate
        if self._arrivals < cfg.warmup_packets:
            wanted = max(wanted, cfg.initial_delay)
        return min(max(wanted, cfg.min_delay), cfg.max_delay)

    def pop(self, *, now: float) -> PlayoutFrame | None:
        """The frame to play at ``now``: a packet's payload or concealment.

        None before the first packet's playout delay has passed. Each call
        consumes one frame of the timeline (or, when the buffer grows its
        delay, none: see module docs).
        """
        cfg = self.config
        if not self._anchored:
            return None
        if not self._playing:
            if now < self._next_due:
                return None
            self._playing = True
        frame_duration = cfg.frame_duration
        target = self.target_delay
        settled = self._cooldown == 0
        self._cooldown = max(0, self._cooldown - 1)
        wants_more = self._grow or (settled and self._slack < target - frame_duration / 2)
        self._grow = False
        if wants_more and self._slack + frame_duration <= cfg.max_delay:
            self._inserted += 1
            self._cooldown = cfg.adapt_interval
            self._slack += frame_duration
            self._next_due = now + frame_duration
            return self._conceal(self._next_timestamp)
        if settled and self._slack > target + 2 * frame_duration:
            self._skipped += 1
            self._cooldown = cfg.adapt_interval
            self._slack -= frame_duration
            skipped = self._take_due()
            self._next_timestamp = (
                skipped[0] if skipped is not None else self._next_timestamp
            ) + cfg.frame_samples
        due = self._take_due()
        self._next_due = now + frame_duration
        if due is None:
            frame = self._conceal(self._next_timestamp)
            self._next_timestamp += cfg.frame_samples
            return frame
        ext_ts, packet = due
        self._next_timestamp = ext_ts + cfg.frame_samples
        self._played += 1
        self._last_payload = packet.payload
        self._repeats = 0
        return PlayoutFrame(
            kind=FrameKind.MEDIA,
            timestamp=packet.timestamp,
            payload=packet.payload,
            sequence=packet.sequence,
        )

    def _take_due(self) -> tuple[int, _Packet] | None:
        """Remove and return the packet for the frame at ``next_timestamp``:
        the earliest buffered one, if it starts within that frame."""
        if not self._buffer:
            return None
        earliest = min(self._buffer)
        if earliest >= self._next_timestamp + self.config.frame_samples:
            return None
        return earliest, self._buffer.pop(earliest)

    def _conceal(self, ext_ts: int) -> PlayoutFrame:
        cfg = self.config
        self._concealed += 1
        timestamp = ext_ts % _TS_MOD
        if (
            cfg.concealment is Concealment.REPEAT_LAST
            and self._last_payload is not None
            and self._repeats < cfg.max_repeats
        ):
            self._repeats += 1
            return PlayoutFrame(
                kind=FrameKind.REPEAT, timestamp=timestamp, payload=self._last_payload
            )
        return PlayoutFrame(
            kind=FrameKind.SILENCE, timestamp=timestamp, payload=cfg.silence_payload
        )

    # -- statistics ----------------------------------------------------------

    def stats(self) -> JitterBufferStats:
        """A snapshot of the counters and estimates."""
        return JitterBufferStats(
            received=self._received,
            played=self._played,
            concealed=self._concealed,
            late=self._late,
            duplicates=self._duplicates,
            overflowed=self._overflowed,
            skipped=self._skipped,
            inserted=self._inserted,
            resets=self._resets,
            buffered=len(self._buffer),
            jitter=self._jitter / self.config.clock_rate,
            target_delay=self.target_delay,
            playout_delay=self._slack,
        )
