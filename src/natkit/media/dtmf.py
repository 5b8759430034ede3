"""DTMF over RTP: the RFC 4733 telephone-event payload, a sender and a receiver.

Theory of operation
-------------------
A telephone event travels as a 4-byte payload (RFC 4733 §2.3): the event
code, the E(nd) bit, a reserved bit, the volume in -dBm0 and the duration
so far in RTP clock units. Every packet of one event carries the same RTP
timestamp, the event's start (§2.5.1.1).

:class:`DtmfSender` turns a digit into its packet schedule (§2.5.1): a
first packet with the marker bit set, updates every ``interval`` with a
growing duration, then the end packet (E bit, final duration) sent three
times (§2.5.1.4, retransmission for reliability). It is sans-IO: the
caller passes ``now`` and the RTP timestamp of the event's start and asks
for the packets that are due (:meth:`DtmfSender.packets_to_send`); the RTP
layer adds sequence numbers, SSRC and payload type.

:class:`DtmfReceiver` turns packets back into events (§2.5.2): a
:class:`~natkit.media.events.DigitStarted` on the first packet of an event
(keyed by its timestamp), one :class:`~natkit.media.events.DigitReceived`
when it ends, and nothing for the end packet's retransmissions or for
updates that arrive late. An event whose end packets were all lost ends
when the next event starts or after ``end_timeout`` without updates.
Malformed payloads are dropped and counted.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from typing import Final

from natkit.errors import MalformedMessageError
from natkit.media.events import DigitReceived, DigitStarted, DtmfEvent

__all__ = [
    "DTMF_DIGITS",
    "PAYLOAD_LENGTH",
    "DtmfPacket",
    "DtmfReceiver",
    "DtmfReceiverConfig",
    "DtmfSender",
    "DtmfSenderConfig",
    "TelephoneEventPayload",
    "decode_telephone_event",
    "digit_for_event",
    "digit_packets",
    "encode_telephone_event",
    "event_for_digit",
]

PAYLOAD_LENGTH: Final = 4
"""Bytes in one telephone-event payload (RFC 4733 §2.3)."""
DTMF_DIGITS: Final = "0123456789*#ABCD"
"""DTMF digits in event-code order: events 0-15 (RFC 4733 §3.2, Table 7)."""
FLASH_EVENT: Final = 16
"""Hook flash (RFC 4733 §3.2, Table 7); reported as the digit ``"!"``."""
_FLASH_DIGIT: Final = "!"
MAX_VOLUME: Final = 63
MAX_DURATION: Final = 0xFFFF


def event_for_digit(digit: str) -> int:
    """The event code of a DTMF digit (``0-9 * # A-D``, ``!`` for flash), §3.2."""
    if digit == _FLASH_DIGIT:
        return FLASH_EVENT
    index = DTMF_DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


def digit_for_event(event: int) -> str | None:
    """The digit for a DTMF event code, or None for other telephone events."""
    if 0 <= event < len(DTMF_DIGITS):
        return DTMF_DIGITS[event]
    return _FLASH_DIGIT if event == FLASH_EVENT else None


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEventPayload:
    """One RFC 4733 §2.3 payload. ``volume`` is -dBm0 (0 loudest, 63 quietest);
    ``duration`` is in RTP clock units since the event's timestamp."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0


def encode_telephone_event(payload: TelephoneEventPayload) -> bytes:
    """Serialise a payload (RFC 4733 §2.3); the reserved bit is sent as zero."""
    if not 0 <= payload.event <= 255:
        raise ValueError(f"event code out of range: {payload.event}")
    if not 0 <= payload.volume <= MAX_VOLUME:
        raise ValueError(f"volume out of range 0-63: {payload.volume}")
    if not 0 <= payload.duration <= MAX_DURATION:
        raise ValueError(f"duration out of range 0-65535: {payload.duration}")
    flags = (0x80 if payload.end else 0) | payload.volume
    return struct.pack("!BBH", payload.event, flags, payload.duration)


def decode_telephone_event(data: bytes) -> TelephoneEventPayload:
    """Parse a payload (RFC 4733 §2.3); the reserved bit is ignored (§2.3.3).

    Raises :class:`MalformedMessageError` (``error_code=None``: RTP drops, it
    does not answer) unless ``data`` is exactly 4 bytes.
    """
    if len(data) != PAYLOAD_LENGTH:
        raise MalformedMessageError(
            f"telephone-event payload is {len(data)} bytes, not 4", error_code=None
        )
    event, flags, duration = struct.unpack("!BBH", data)
    return TelephoneEventPayload(
        event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfPacket:
    """One telephone-event packet to send at ``send_at``: the RTP layer adds
    the sequence number; ``timestamp`` and ``marker`` go in the RTP header."""

    send_at: float
    timestamp: int
    marker: bool
    payload: bytes


def digit_packets(
    digit: str,
    *,
    timestamp: int,
    start: float,
    duration: float = 0.1,
    interval: float = 0.05,
    volume: int = 10,
    clock_rate: int = 8000,
    end_repeats: int = 3,
) -> list[DtmfPacket]:
    """The packet schedule of one digit (RFC 4733 §2.5.1).

    Like an audio packet, an event packet leaves when the time it describes
    has passed: packet *k* leaves at ``start + (k + 1) * interval`` and
    reports the event's duration so far, ``(k + 1) * interval`` (§2.5.1.2:
    the duration of the event to date, never ahead of it). At ``start +
    duration`` the first of ``end_repeats`` identical end packets leaves,
    the others one interval apart (§2.5.1.4).
    Durations beyond 65535 clock units need segments (§2.5.1.3), which this
    sender does not produce.
    """
    event = event_for_digit(digit)
    total = round(duration * clock_rate)
    step = round(interval * clock_rate)
    if total <= 0 or step <= 0:
        raise ValueError("duration and interval must be positive")
    if total > MAX_DURATION:
        raise ValueError(f"a {duration} s event exceeds the 16-bit duration field")
    if end_repeats < 1:
        raise ValueError("at least one end packet is needed")
    timestamp &= 0xFFFFFFFF
    packets: list[DtmfPacket] = []
    elapsed = step
    while elapsed < total:
        body = TelephoneEventPayload(event=event, volume=volume, duration=elapsed)
        packets.append(
            DtmfPacket(
                send_at=start + elapsed / clock_rate,
                timestamp=timestamp,
                marker=not packets,
                payload=encode_telephone_event(body),
            )
        )
        elapsed += step
    end = encode_telephone_event(
        TelephoneEventPayload(event=event, end=True, volume=volume, duration=total)
    )
    for repeat in range(end_repeats):
        packets.append(
            DtmfPacket(
                send_at=start + total / clock_rate + repeat * interval,
                timestamp=timestamp,
                marker=not packets,
                payload=end,
            )
        )
    return packets


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfSenderConfig:
    """Sender timing: ``duration`` of each tone, ``gap`` of silence between
    tones, ``interval`` between packets (50 ms, RFC 4733 §2.5.1.2), volume
    in -dBm0 and the telephone-event clock rate (that of the audio, §2.4)."""

    duration: float = 0.1
    gap: float = 0.1
    interval: float = 0.05
    volume: int = 10
    clock_rate: int = 8000
    end_repeats: int = 3


class DtmfSender:
    """Queues digits and releases their packets when due (RFC 4733 §2.5.1)."""

    def __init__(self, config: DtmfSenderConfig | None = None) -> None:
        self.config = config or DtmfSenderConfig()
        self._queue: deque[DtmfPacket] = deque()
        self._busy_until: float | None = None
        self._next_timestamp = 0

    def send_digits(self, digits: str, *, timestamp: int, now: float) -> None:
        """Queue ``digits``; the first starts at ``now`` with RTP ``timestamp``
        (the media clock at ``now``), or after digits still being sent.

        Each following digit starts ``duration + gap`` later on both clocks.
        """
        cfg = self.config
        for digit in digits:
            event_for_digit(digit)  # reject the whole string before queueing any of it
        start = now
        if self._busy_until is not None and self._busy_until > now:
            timestamp = self._next_timestamp
            start = self._busy_until
        for digit in digits:
            self._queue.extend(
                digit_packets(
                    digit,
                    timestamp=timestamp,
                    start=start,
                    duration=cfg.duration,
                    interval=cfg.interval,
                    volume=cfg.volume,
                    clock_rate=cfg.clock_rate,
                    end_repeats=cfg.end_repeats,
                )
            )
            start += cfg.duration + cfg.gap
            timestamp = (timestamp + round((cfg.duration + cfg.gap) * cfg.clock_rate)) & 0xFFFFFFFF
        self._busy_until = start
        self._next_timestamp = timestamp

    def packets_to_send(self, *, now: float) -> list[DtmfPacket]:
        """The packets due at ``now``, in order, removed from the queue."""
        due: list[DtmfPacket] = []
        while self._queue and self._queue[0].send_at <= now:
            due.append(self._queue.popleft())
        return due

    def get_timer(self) -> float | None:
        """When the next packet is due, or None when nothing is queued."""
        return self._queue[0].send_at if self._queue else None

    @property
    def busy(self) -> bool:
        """True while packets are still queued."""
        return bool(self._queue)


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfReceiverConfig:
    """``end_timeout``: an event with no packet for this long has ended
    (its end packets were lost). ``remembered_events`` bounds how many ended
    events are kept to recognise late retransmissions."""

    clock_rate: int = 8000
    end_timeout: float = 0.5
    remembered_events: int = 32


@dataclass(slots=True)
class _OpenEvent:
    event: int
    timestamp: int
    duration: int
    volume: int
    last_heard: float


class DtmfReceiver:
    """Telephone-event packets in, digit events out (RFC 4733 §2.5.2)."""

    def __init__(self, config: DtmfReceiverConfig | None = None) -> None:
        self.config = config or DtmfReceiverConfig()
        self._open: _OpenEvent | None = None
        self._ended: deque[int] = deque(maxlen=self.config.remembered_events)
        self._events: deque[DtmfEvent] = deque()
        self.malformed = 0
        """Payloads dropped because they did not parse."""
        self.ignored = 0
        """Packets dropped as retransmissions or late updates of ended events."""

    def receive_packet(self, payload: bytes, *, timestamp: int, now: float) -> None:
        """Feed one telephone-event RTP payload with its RTP timestamp.

        The marker bit is not needed: an event is identified by its
        timestamp (§2.5.2.1), which also survives a lost first packet.
        """
        try:
            body = decode_telephone_event(payload)
        except MalformedMessageError:
            self.malformed += 1
            return
        timestamp &= 0xFFFFFFFF
        if timestamp in self._ended:
            self.ignored += 1
            return
        current = self._open
        if current is not None and current.timestamp != timestamp:
            self._finish(current, end_seen=False)
            current = None
        if current is None:
            current = _OpenEvent(
                event=body.event,
                timestamp=timestamp,
                duration=body.duration,
                volume=body.volume,
                last_heard=now,
            )
            self._open = current
            digit = digit_for_event(body.event)
            if digit is not None:
                self._events.append(
                    DigitStarted(digit=digit, event=body.event, timestamp=timestamp)
                )
        else:
            current.duration = max(current.duration, body.duration)
            current.volume = body.volume
            current.last_heard = now
        if body.end:
            self._finish(current, end_seen=True)

    def get_timer(self) -> float | None:
        """When an event without an end packet will be declared over."""
        return self._open.last_heard + self.config.end_timeout if self._open else None

    def handle_timer(self, *, now: float) -> None:
        """End the open event if it has been silent for ``end_timeout``."""
        deadline = self.get_timer()
        if self._open is not None and deadline is not None and now >= deadline:
            self._finish(self._open, end_seen=False)

    def next_event(self) -> DtmfEvent | None:
        return self._events.popleft() if self._events else None

    def _finish(self, event: _OpenEvent, *, end_seen: bool) -> None:
        self._open = None
        self._ended.append(event.timestamp)
        digit = digit_for_event(event.event)
        if digit is None:
            return
        self._events.append(
            DigitReceived(
                digit=digit,
                event=event.event,
                timestamp=event.timestamp,
                duration=event.duration,
                seconds=event.duration / self.config.clock_rate,
                volume=event.volume,
                end_seen=end_seen,
            )
        )
