"""RTCP codec (RFC 3550 §6, §A.2; RFC 5506) with hand-built wire bytes."""

from __future__ import annotations

import pytest

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rtp.rtcp import (
    App,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    RtcpUnknown,
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

# RR from SSRC 1 with one block about SSRC 2: fraction 0x40, cumulative lost -2 (0xFFFFFE),
# highest 0x00010005, jitter 7, LSR 0x11112222, DLSR 0x00008000.
RR_BYTES = bytes.fromhex(
    "81c90007" "00000001"
    "00000002" "40fffffe" "00010005" "00000007" "11112222" "00008000"
)  # fmt: skip
RR = RR_BYTES
hx = bytes.fromhex
LOST = 1 << 23  # one past the 24-bit signed maximum
SDES_BYTES = bytes.fromhex("81ca0003000000010103616263000000")  # CNAME "abc"


def test_receiver_report_with_negative_cumulative_loss() -> None:
    [rr] = parse_rtcp(RR_BYTES)
    assert rr == ReceiverReport(
        ssrc=1,
        reports=(
            ReportBlock(
                ssrc=2,
                fraction_lost=0x40,
                cumulative_lost=-2,
                highest_sequence=0x00010005,
                jitter=7,
                last_sr=0x11112222,
                delay_since_last_sr=0x8000,
            ),
        ),
    )
    assert serialize_rtcp([rr]) == RR_BYTES


def test_compound_rr_and_sdes_cname() -> None:
    rr, sdes = parse_rtcp(RR_BYTES + SDES_BYTES)
    assert isinstance(sdes, SourceDescription)
    assert sdes.chunks[0].get(SdesItemType.CNAME) == "abc"
    assert sdes.chunks[0].get(SdesItemType.NAME) is None
    assert serialize_rtcp([rr, sdes]) == RR_BYTES + SDES_BYTES


def test_sender_report_round_trip_with_profile_extension() -> None:
    sr = SenderReport(
        ssrc=9,
        ntp_timestamp=0x0123456789ABCDEF,
        rtp_timestamp=160,
        packet_count=2,
        octet_count=320,
        extension=b"\x00\x01\x02\x03",
    )
    data = serialize_rtcp([sr])
    assert data[:4] == bytes.fromhex("80c80007")
    assert parse_rtcp(data) == [sr]


def test_bye_with_reason_and_app() -> None:
    packets: list[RtcpPacket] = [
        ReceiverReport(ssrc=1),
        Bye((1, 2), "shutting down"),
        App(subtype=3, ssrc=1, name=b"TEST", data=b"\x00" * 8),
    ]
    assert parse_rtcp(serialize_rtcp(packets)) == packets


def test_bye_without_reason() -> None:
    data = serialize_rtcp([ReceiverReport(ssrc=1), Bye((5,))])
    assert data[8:] == bytes.fromhex("81cb000100000005")
    assert parse_rtcp(data)[1] == Bye((5,), None)


def test_unknown_types_are_kept_opaque() -> None:
    nack = RtcpUnknown(packet_type=205, count=1, body=bytes.fromhex("000000010000000200050000"))
    packets = parse_rtcp(RR_BYTES + serialize_rtcp([nack]))
    assert packets[1] == nack


def test_padding_on_the_last_packet_is_removed() -> None:
    padded = bytes.fromhex("a1ca000400000001010361626300000000000004")
    _, sdes = parse_rtcp(RR_BYTES + padded)
    assert sdes == SourceDescription((SdesChunk(1, (SdesItem(SdesItemType.CNAME, b"abc"),)),))


def test_reduced_size_rtcp_needs_permission() -> None:
    data = SDES_BYTES
    with pytest.raises(MalformedMessageError):
        parse_rtcp(data)
    assert parse_rtcp(data, allow_reduced_size=True)[0] == parse_rtcp(RR_BYTES + data)[1]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(RR_BYTES[:3], id="short-header"),
        pytest.param(b"\x41" + RR_BYTES[1:], id="version-1"),
        pytest.param(RR_BYTES[:-4], id="length-overruns"),
        pytest.param(RR_BYTES + b"\x81", id="trailing-byte"),
        pytest.param(bytes.fromhex("a1c90000") + b"" + RR_BYTES, id="padding-not-last"),
        pytest.param(RR + hx("a0cb000000000000"), id="zero-padding-count"),
        pytest.param(RR + hx("a0cb000100000009"), id="padding-count-too-big"),
        pytest.param(bytes.fromhex("82c90001") + b"\x00" * 4, id="rr-short-of-its-count"),
        pytest.param(bytes.fromhex("81c80001") + b"\x00" * 4, id="sr-short"),
        pytest.param(RR + hx("81ca0000"), id="sdes-chunk-cut"),
        pytest.param(RR + hx("81ca0001" "00000001"), id="sdes-no-null"),
        pytest.param(RR + hx("81ca0002" "00000001" "010a6162"), id="sdes-overrun"),
        pytest.param(RR + hx("81ca0002" "00000001" "01016101"), id="sdes-item-cut"),
        pytest.param(RR + hx("82cb0001" "00000001"), id="bye-short"),
        pytest.param(RR + hx("81cb0002" "00000001" "09616263"), id="bye-reason-overrun"),
        pytest.param(RR + hx("80cc0001" "00000001"), id="app-short"),
        pytest.param(RR + hx("80cf0000") * 70, id="too-many-packets"),
        pytest.param(RR + hx("a1ca0003" "00000001" "01026162" "00000003"), id="sdes-pad-unaligned"),
    ],
)  # fmt: skip
def test_invalid_compounds_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_rtcp(data)
    assert info.value.error_code is None


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(ReceiverReport(ssrc=1, reports=(ReportBlock(ssrc=2),) * 32), id="32-blocks"),
        pytest.param(ReceiverReport(ssrc=1, reports=(ReportBlock(ssrc=2, cumulative_lost=LOST),)),
                     id="lost"),
        pytest.param(ReceiverReport(ssrc=1 << 32), id="ssrc"),
        pytest.param(Bye((1,), "x" * 256), id="bye-reason"),
        pytest.param(App(subtype=0, ssrc=1, name=b"LONGER"), id="app-name"),
        pytest.param(App(subtype=0, ssrc=1, name=b"NAME", data=b"odd"), id="app-data"),
        pytest.param(SourceDescription((SdesChunk(1, (SdesItem(0, b"x"),)),)), id="sdes-type"),
        pytest.param(RtcpUnknown(packet_type=256, count=0, body=b""), id="type"),
        pytest.param(RtcpUnknown(packet_type=207, count=0, body=bytes(4 << 16)), id="too-long"),
    ],
)  # fmt: skip
def test_unencodable_values_raise_local_protocol_error(packet: RtcpPacket) -> None:
    with pytest.raises(LocalProtocolError):
        serialize_rtcp([packet])


def test_ntp_timestamp_and_middle_bits() -> None:
    ntp = ntp_timestamp(3_000_000_000.5)
    assert ntp == 3_000_000_000 << 32 | 1 << 31
    assert ntp_middle32(ntp) == (3_000_000_000 & 0xFFFF) << 16 | 0x8000


def test_sdes_item_text_replaces_bad_utf8() -> None:
    assert SdesItem(SdesItemType.NOTE, b"\xff").text == "\ufffd"
