"""IPv4 fragmentation and reassembly for the TUN NAT (natkit.ipfrag; RFC 791 §3.2)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.ipfrag import Ipv4Reassembler, ReassemblyConfig, fragment_ipv4, is_ipv4_fragment
from natkit.packet import IpProto, Packet, decode_ipv4, encode_ipv4, internet_checksum

SRC = Endpoint("10.0.0.2", 5060)
DST = Endpoint("203.0.113.5", 5060)


def datagram(size: int, *, ident: int = 7, df: bool = False) -> bytes:
    payload = bytes(i % 251 for i in range(size))
    raw = encode_ipv4(Packet(IpProto.UDP, SRC, DST, payload), ident=ident)
    if df:
        return raw
    head = bytearray(raw[:20])
    head[6:8] = b"\x00\x00"  # the sender's stack leaves DF clear for a large UDP datagram
    head[10:12] = b"\x00\x00"
    head[10:12] = internet_checksum(bytes(head)).to_bytes(2, "big")
    return bytes(head) + raw[20:]


def test_a_datagram_that_fits_is_not_fragmented() -> None:
    raw = datagram(1000)
    assert fragment_ipv4(raw, 1500) == [raw]
    assert not is_ipv4_fragment(raw)


def test_a_large_invite_is_split_on_8_byte_boundaries_with_valid_headers() -> None:
    raw = datagram(3000)
    pieces = fragment_ipv4(raw, 1500)
    assert [len(p) for p in pieces] == [1500, 1500, 20 + 3008 - 2 * 1480]
    assert all(is_ipv4_fragment(p) and internet_checksum(p[:20]) == 0 for p in pieces)
    offsets = [int.from_bytes(p[6:8], "big") & 0x1FFF for p in pieces]
    assert offsets == [0, 185, 370]
    more = [bool(int.from_bytes(p[6:8], "big") & 0x2000) for p in pieces]
    assert more == [True, True, False]
    with pytest.raises(MalformedMessageError):
        decode_ipv4(pieces[0])  # a NAT cannot translate a fragment by itself


def test_fragments_in_any_order_give_back_the_datagram_once() -> None:
    raw = datagram(4000)
    pieces = fragment_ipv4(raw, 576)
    reassembler = Ipv4Reassembler()
    outputs = [reassembler.add(p, now=1.0) for p in reversed(pieces)]
    assert outputs[:-1] == [None] * (len(pieces) - 1)
    whole = outputs[-1]
    assert whole is not None
    assert decode_ipv4(whole) == decode_ipv4(raw)
    assert reassembler.pending == 0


def test_a_datagram_with_df_set_that_does_not_fit_is_refused() -> None:
    with pytest.raises(MalformedMessageError, match="DF"):
        fragment_ipv4(datagram(2000, df=True), 1500)


def test_overlapping_fragments_drop_the_whole_datagram() -> None:
    pieces = fragment_ipv4(datagram(3000), 1500)
    forged = bytearray(pieces[1])
    forged[6:8] = (0x2000 | 100).to_bytes(2, "big")  # overlaps the first fragment
    forged[10:12] = b"\x00\x00"
    forged[10:12] = internet_checksum(bytes(forged[:20])).to_bytes(2, "big")
    reassembler = Ipv4Reassembler()
    assert reassembler.add(pieces[0], now=0.0) is None
    with pytest.raises(MalformedMessageError, match="overlapping"):
        reassembler.add(bytes(forged), now=0.0)
    assert reassembler.pending == 0 and reassembler.dropped == 1
    assert reassembler.add(pieces[2], now=0.0) is None  # the rest starts over and never completes


def test_a_duplicate_fragment_is_harmless() -> None:
    pieces = fragment_ipv4(datagram(3000), 1500)
    reassembler = Ipv4Reassembler()
    assert reassembler.add(pieces[0], now=0.0) is None
    assert reassembler.add(pieces[0], now=0.0) is None
    assert reassembler.add(pieces[1], now=0.0) is None
    assert reassembler.add(pieces[2], now=0.0) is not None


def test_incomplete_datagrams_expire_and_their_number_is_bounded() -> None:
    reassembler = Ipv4Reassembler(ReassemblyConfig(timeout=30.0, max_datagrams=4))
    for ident in range(6):
        reassembler.add(fragment_ipv4(datagram(3000, ident=ident), 1500)[0], now=float(ident))
    assert reassembler.pending == 4 and reassembler.dropped == 2
    last = fragment_ipv4(datagram(3000, ident=5), 1500)
    reassembler.expire(now=34.5)  # idents 2-4 started at 2-4 s: gone; 5 (at 5 s) stays
    assert reassembler.pending == 1
    assert reassembler.add(last[1], now=34.5) is None
    assert reassembler.add(last[2], now=34.5) is not None
    reassembler.add(fragment_ipv4(datagram(3000, ident=9), 1500)[0], now=40.0)
    reassembler.expire(now=70.0)
    assert reassembler.pending == 0


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=9000),
    mtu=st.integers(min_value=68, max_value=1500),
    order=st.randoms(use_true_random=False),
)
def test_fragmenting_then_reassembling_in_any_order_is_the_identity(
    size: int, mtu: int, order: object
) -> None:
    raw = datagram(size)
    pieces = fragment_ipv4(raw, mtu)
    assert all(len(p) <= mtu for p in pieces)
    if len(pieces) == 1:
        return
    order.shuffle(pieces)  # type: ignore[attr-defined]
    reassembler = Ipv4Reassembler()
    results = [reassembler.add(p, now=0.0) for p in pieces]
    whole = results[-1]
    assert whole is not None and results[:-1] == [None] * (len(pieces) - 1)
    assert decode_ipv4(whole) == decode_ipv4(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=120), max_size=8))
def test_random_bytes_never_raise_anything_but_a_drop(chunks: list[bytes]) -> None:
    reassembler = Ipv4Reassembler()
    for chunk in chunks:
        with contextlib.suppress(MalformedMessageError):
            reassembler.add(chunk, now=0.0)
        with contextlib.suppress(MalformedMessageError):
            fragment_ipv4(chunk, 68)
