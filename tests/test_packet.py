"""IPv4/UDP/TCP/ICMP encoding of lab packets, checked against the RFC 1071
checksum and by round trips."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.packet import (
    IcmpError,
    IpProto,
    Packet,
    TcpFlags,
    decode_ipv4,
    encode_ipv4,
    internet_checksum,
)

A = Endpoint("10.0.0.2", 40000)
B = Endpoint("203.0.113.9", 3478)


def test_rfc1071_checksum_example() -> None:
    # RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (before complement).
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == (~0xDDF2) & 0xFFFF


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(Packet(IpProto.UDP, A, B, b"stun!"), id="udp"),
        pytest.param(Packet(IpProto.UDP, A, B, b""), id="udp-empty"),
        pytest.param(Packet(IpProto.TCP, A, B, b"", TcpFlags.SYN, seq=1), id="tcp-syn"),
        pytest.param(
            Packet(IpProto.TCP, A, B, b"data", TcpFlags.ACK | TcpFlags.PSH, 7, 9), id="tcp-data"
        ),
        pytest.param(
            Packet(
                IpProto.ICMP,
                B.with_port(0),
                A.with_port(0),
                b"\x45" + bytes(27),
                icmp=IcmpError.PORT_UNREACHABLE,
            ),
            id="icmp",
        ),
    ],
)
def test_round_trip(packet: Packet) -> None:
    wire = encode_ipv4(packet)
    assert internet_checksum(wire[:20]) == 0
    back = decode_ipv4(wire)
    assert back == packet


def test_bad_checksums_are_rejected() -> None:
    wire = bytearray(encode_ipv4(Packet(IpProto.UDP, A, B, b"x")))
    wire[-1] ^= 0xFF
    with pytest.raises(MalformedMessageError):
        decode_ipv4(bytes(wire))
    assert decode_ipv4(bytes(wire), verify=False).payload != b"x"


def test_ipv6_addresses_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_ipv4(Packet(IpProto.UDP, Endpoint("::1", 1), B))


@settings(max_examples=300, derandomize=True, database=None)
@given(st.binary(max_size=80))
def test_garbage_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(MalformedMessageError):
        decode_ipv4(data)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.binary(max_size=64), st.integers(0, 65535), st.integers(0, 65535))
def test_every_truncation_is_rejected(payload: bytes, sport: int, dport: int) -> None:
    wire = encode_ipv4(Packet(IpProto.UDP, A.with_port(sport), B.with_port(dport), payload))
    for cut in range(len(wire)):
        with pytest.raises(MalformedMessageError):
            decode_ipv4(wire[:cut])


def _reference_checksum(data: bytes) -> int:
    """RFC 1071 §4.1 as written: add 16-bit words, fold the carries, complement."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize(
    "data",
    [b"", b"\x00\x00", b"\xff\xff", b"\xff\xff\xff\xff", b"\x00\x01", b"\x80"],
    ids=["empty", "zero", "ones", "two-ones", "one", "odd"],
)
def test_checksum_edge_cases_match_rfc1071(data: bytes) -> None:
    assert internet_checksum(data) == _reference_checksum(data)


@settings(max_examples=500, derandomize=True, database=None)
@given(st.binary(max_size=200))
def test_checksum_matches_the_word_by_word_sum(data: bytes) -> None:
    assert internet_checksum(data) == _reference_checksum(data)
