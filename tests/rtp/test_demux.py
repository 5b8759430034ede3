"""Shared-port demultiplexing (RFC 7983 §7, RFC 5761 §4)."""

from __future__ import annotations

import pytest

from natkit.rtp.demux import DatagramKind, classify_datagram, is_rtcp


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        pytest.param(0, DatagramKind.STUN, id="stun-0"),
        pytest.param(3, DatagramKind.STUN, id="stun-3"),
        pytest.param(4, DatagramKind.UNKNOWN, id="gap-4"),
        pytest.param(15, DatagramKind.UNKNOWN, id="gap-15"),
        pytest.param(16, DatagramKind.ZRTP, id="zrtp-16"),
        pytest.param(19, DatagramKind.ZRTP, id="zrtp-19"),
        pytest.param(20, DatagramKind.DTLS, id="dtls-20"),
        pytest.param(63, DatagramKind.DTLS, id="dtls-63"),
        pytest.param(64, DatagramKind.TURN_CHANNEL, id="channel-64"),
        pytest.param(79, DatagramKind.TURN_CHANNEL, id="channel-79"),
        pytest.param(80, DatagramKind.UNKNOWN, id="gap-80"),
        pytest.param(127, DatagramKind.UNKNOWN, id="gap-127"),
        pytest.param(128, DatagramKind.RTP, id="rtp-128"),
        pytest.param(191, DatagramKind.RTP, id="rtp-191"),
        pytest.param(192, DatagramKind.UNKNOWN, id="gap-192"),
        pytest.param(255, DatagramKind.UNKNOWN, id="gap-255"),
    ],
)
def test_first_byte_ranges_of_rfc_7983(first: int, kind: DatagramKind) -> None:
    assert classify_datagram(bytes([first, 0]) + bytes(10)) is kind


@pytest.mark.parametrize(
    ("second", "kind"),
    [
        pytest.param(0x00, DatagramKind.RTP, id="pcmu"),
        pytest.param(0x80, DatagramKind.RTP, id="pcmu-marker"),
        pytest.param(64, DatagramKind.RTP, id="pt64-no-marker"),
        pytest.param(95, DatagramKind.RTP, id="pt95-no-marker"),
        pytest.param(0x80 | 64, DatagramKind.RTCP, id="pt64-marker-is-rtcp-192"),
        pytest.param(200, DatagramKind.RTCP, id="sr"),
        pytest.param(201, DatagramKind.RTCP, id="rr"),
        pytest.param(206, DatagramKind.RTCP, id="psfb"),
        pytest.param(223, DatagramKind.RTCP, id="223"),
        pytest.param(224, DatagramKind.RTP, id="pt96-marker"),
        pytest.param(0x80 | 111, DatagramKind.RTP, id="opus-marker"),
    ],
)
def test_rtp_and_rtcp_by_second_byte_of_rfc_5761(second: int, kind: DatagramKind) -> None:
    assert classify_datagram(bytes([0x80, second]) + bytes(10)) is kind


def test_short_and_empty_datagrams_are_unknown() -> None:
    assert classify_datagram(b"") is DatagramKind.UNKNOWN
    assert classify_datagram(b"\x80") is DatagramKind.UNKNOWN
    assert not is_rtcp(b"\x80")
