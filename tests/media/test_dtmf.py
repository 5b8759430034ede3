"""RFC 4733 telephone events: payload codec, sender schedule, receiver."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.errors import MalformedMessageError
from natkit.media.dtmf import (
    DtmfPacket,
    DtmfReceiver,
    DtmfReceiverConfig,
    DtmfSender,
    DtmfSenderConfig,
    TelephoneEventPayload,
    decode_telephone_event,
    digit_for_event,
    digit_packets,
    encode_telephone_event,
    event_for_digit,
)
from natkit.media.events import DigitReceived, DigitStarted, DtmfEvent


def drain(receiver: DtmfReceiver) -> list[DtmfEvent]:
    events = []
    while (event := receiver.next_event()) is not None:
        events.append(event)
    return events


def feed(receiver: DtmfReceiver, packets: list[DtmfPacket]) -> None:
    for packet in packets:
        receiver.receive_packet(packet.payload, timestamp=packet.timestamp, now=packet.send_at)


def test_payload_layout_follows_rfc_4733_section_2_3() -> None:
    # event 5, E=1, volume 10, duration 800: 05 8a 03 20
    data = encode_telephone_event(TelephoneEventPayload(event=5, end=True, volume=10, duration=800))
    assert data == bytes.fromhex("058a0320")
    assert decode_telephone_event(data) == TelephoneEventPayload(
        event=5, end=True, volume=10, duration=800
    )


def test_reserved_bit_is_ignored_on_receipt() -> None:
    assert decode_telephone_event(bytes.fromhex("0bca00a0")) == TelephoneEventPayload(
        event=11, end=True, volume=10, duration=160
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(TelephoneEventPayload(event=256), id="event"),
        pytest.param(TelephoneEventPayload(event=1, volume=64), id="volume"),
        pytest.param(TelephoneEventPayload(event=1, duration=65536), id="duration"),
    ],
)
def test_encode_rejects_out_of_range_fields(payload: TelephoneEventPayload) -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_telephone_event(payload)


@given(
    event=st.integers(0, 255),
    end=st.booleans(),
    volume=st.integers(0, 63),
    duration=st.integers(0, 0xFFFF),
)
@settings(derandomize=True, database=None)
def test_payload_round_trips(event: int, end: bool, volume: int, duration: int) -> None:
    payload = TelephoneEventPayload(event=event, end=end, volume=volume, duration=duration)
    assert decode_telephone_event(encode_telephone_event(payload)) == payload


@given(st.binary(max_size=12))
@settings(derandomize=True, database=None)
def test_random_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        payload = decode_telephone_event(data)
    except MalformedMessageError as exc:
        assert exc.error_code is None
        assert len(data) != 4
    else:
        assert encode_telephone_event(payload)[1:] == bytes([data[1] & 0xBF]) + data[2:]


@given(st.lists(st.tuples(st.binary(max_size=8), st.integers(0, 2**32 - 1)), max_size=30))
@settings(derandomize=True, database=None)
def test_receiver_never_raises_on_random_packets(packets: list[tuple[bytes, int]]) -> None:
    receiver = DtmfReceiver()
    for i, (payload, timestamp) in enumerate(packets):
        receiver.receive_packet(payload, timestamp=timestamp, now=i * 0.02)
        receiver.handle_timer(now=i * 0.02)
    events = drain(receiver)
    received = [e for e in events if isinstance(e, DigitReceived)]
    started = [e for e in events if isinstance(e, DigitStarted)]
    assert len(received) <= len(started)
    assert receiver.malformed == sum(len(p) != 4 for p, _ in packets)


@pytest.mark.parametrize(
    ("digit", "event"),
    [("0", 0), ("9", 9), ("*", 10), ("#", 11), ("A", 12), ("d", 15), ("!", 16)],
)
def test_digit_event_codes_follow_table_7(digit: str, event: int) -> None:
    assert event_for_digit(digit) == event
    assert digit_for_event(event) == digit.upper()


@pytest.mark.parametrize("digit", ["", "E", "12", " "])
def test_non_digits_are_rejected(digit: str) -> None:
    with pytest.raises(ValueError, match="DTMF"):
        event_for_digit(digit)


def test_non_dtmf_events_have_no_digit() -> None:
    assert digit_for_event(17) is None
    assert digit_for_event(255) is None


def test_digit_schedule_has_marker_updates_and_three_end_packets() -> None:
    packets = digit_packets("5", timestamp=12345, start=10.0, duration=0.2, interval=0.05)
    decoded = [decode_telephone_event(p.payload) for p in packets]
    # Each packet leaves once the time it reports has passed (RFC 4733 §2.5.1.2).
    assert [p.send_at for p in packets] == pytest.approx([10.0 + 0.05 * k for k in range(1, 7)])
    assert {p.timestamp for p in packets} == {12345}
    assert [p.marker for p in packets] == [True] + [False] * 5
    assert [d.duration for d in decoded] == [400, 800, 1200, 1600, 1600, 1600]
    assert [d.end for d in decoded] == [False, False, False, True, True, True]
    assert {d.event for d in decoded} == {5}
    assert packets[3].payload == packets[4].payload == packets[5].payload


def test_event_shorter_than_an_interval_is_only_end_packets_the_first_marked() -> None:
    packets = digit_packets("#", timestamp=0, start=0.0, duration=0.04, interval=0.05)
    assert [p.marker for p in packets] == [True, False, False]
    assert all(decode_telephone_event(p.payload).end for p in packets)


def test_timestamp_is_kept_in_32_bits() -> None:
    packets = digit_packets("1", timestamp=2**32 + 7, start=0.0)
    assert {p.timestamp for p in packets} == {7}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"duration": 0.0}, id="zero-duration"),
        pytest.param({"interval": 0.0}, id="zero-interval"),
        pytest.param({"duration": 9.0}, id="needs-segments"),
        pytest.param({"end_repeats": 0}, id="no-end"),
    ],
)
def test_impossible_schedules_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        digit_packets("1", timestamp=0, start=0.0, **kwargs)  # type: ignore[arg-type]


def test_sender_releases_packets_when_due() -> None:
    sender = DtmfSender(DtmfSenderConfig(duration=0.1, interval=0.05))
    assert sender.get_timer() is None
    sender.send_digits("1", timestamp=1000, now=5.0)
    assert sender.get_timer() == pytest.approx(5.05)
    assert sender.packets_to_send(now=5.04) == []
    assert len(sender.packets_to_send(now=5.05)) == 1
    assert sender.get_timer() == pytest.approx(5.1)
    assert sender.packets_to_send(now=5.09) == []
    rest = sender.packets_to_send(now=6.0)
    assert len(rest) == 3 and sender.busy is False and sender.get_timer() is None


def test_sender_spaces_digits_on_both_clocks() -> None:
    sender = DtmfSender(DtmfSenderConfig(duration=0.1, gap=0.1, clock_rate=8000))
    sender.send_digits("12", timestamp=0, now=0.0)
    sender.send_digits("3", timestamp=999_999, now=0.05)  # queued behind "12"
    packets = sender.packets_to_send(now=10.0)
    starts = sorted({(p.timestamp, round(p.send_at, 6)) for p in packets if p.marker})
    assert starts == [(0, 0.05), (1600, 0.25), (3200, 0.45)]


def test_sender_rejects_a_bad_digit_without_queueing_any() -> None:
    sender = DtmfSender()
    with pytest.raises(ValueError):
        sender.send_digits("12x", timestamp=0, now=0.0)
    assert not sender.busy


def test_receiver_reports_one_digit_despite_end_retransmissions() -> None:
    receiver = DtmfReceiver()
    feed(receiver, digit_packets("7", timestamp=4000, start=1.0, duration=0.2))
    assert drain(receiver) == [
        DigitStarted(digit="7", event=7, timestamp=4000),
        DigitReceived(
            digit="7",
            event=7,
            timestamp=4000,
            duration=1600,
            seconds=0.2,
            volume=10,
            end_seen=True,
        ),
    ]
    assert receiver.ignored == 2
    assert receiver.get_timer() is None


def test_receiver_decodes_a_sent_sequence_of_digits() -> None:
    sender = DtmfSender()
    sender.send_digits("*31#", timestamp=0, now=0.0)
    receiver = DtmfReceiver()
    feed(receiver, sender.packets_to_send(now=10.0))
    digits = [e.digit for e in drain(receiver) if isinstance(e, DigitReceived)]
    assert digits == list("*31#")


def test_lost_first_packet_still_starts_the_event() -> None:
    receiver = DtmfReceiver()
    feed(receiver, digit_packets("2", timestamp=0, start=0.0, duration=0.2)[1:])
    assert [type(e) for e in drain(receiver)] == [DigitStarted, DigitReceived]


def test_lost_end_packets_end_the_event_at_the_next_one() -> None:
    receiver = DtmfReceiver()
    packets = digit_packets("1", timestamp=0, start=0.0, duration=0.2)
    first = [p for p in packets if p.send_at < 0.12]
    feed(receiver, first)
    feed(receiver, digit_packets("2", timestamp=3200, start=0.4, duration=0.2))
    received = [e for e in drain(receiver) if isinstance(e, DigitReceived)]
    assert [(e.digit, e.end_seen, e.duration) for e in received] == [
        ("1", False, 800),
        ("2", True, 1600),
    ]


def test_lost_end_packets_end_the_event_after_the_timeout() -> None:
    receiver = DtmfReceiver(DtmfReceiverConfig(end_timeout=0.5))
    feed(receiver, digit_packets("9", timestamp=0, start=0.0, duration=0.2)[:2])
    drain(receiver)
    assert receiver.get_timer() == pytest.approx(0.6)
    receiver.handle_timer(now=0.55)
    assert drain(receiver) == []
    receiver.handle_timer(now=0.6)
    (event,) = drain(receiver)
    assert isinstance(event, DigitReceived) and not event.end_seen and event.digit == "9"


def test_late_update_after_the_end_is_ignored() -> None:
    receiver = DtmfReceiver()
    packets = digit_packets("4", timestamp=0, start=0.0, duration=0.2)
    feed(receiver, [packets[0], packets[3], packets[1]])
    assert len([e for e in drain(receiver) if isinstance(e, DigitReceived)]) == 1
    assert receiver.ignored == 1


def test_non_dtmf_events_produce_no_digits() -> None:
    receiver = DtmfReceiver()
    payload = encode_telephone_event(TelephoneEventPayload(event=70, end=True, duration=800))
    receiver.receive_packet(payload, timestamp=0, now=0.0)
    assert drain(receiver) == []


def test_malformed_payloads_are_dropped_and_counted() -> None:
    receiver = DtmfReceiver()
    receiver.receive_packet(b"\x01\x02", timestamp=0, now=0.0)
    assert drain(receiver) == [] and receiver.malformed == 1
