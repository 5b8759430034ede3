"""The server's fast path for bare Binding requests must answer exactly as
the general path does (same bytes), and must step aside for anything else."""

from __future__ import annotations

import random

import pytest

from natkit.addr import Endpoint
from natkit.stun.constants import Method
from natkit.stun.message import StunMessage, parse_message, serialize_message
from natkit.stun.server import StunServer, StunServerConfig

LOCAL = Endpoint("192.0.2.1", 3478)


def _answer(server: StunServer, data: bytes, src: Endpoint) -> list[bytes]:
    server.receive_datagram(data, src, local=LOCAL, now=0.0)
    return [d.data for d in server.datagrams_to_send(now=0.0)]


def _servers(software: str | None) -> tuple[StunServer, StunServer]:
    fast = StunServer(StunServerConfig(primary=LOCAL, software=software))
    slow = StunServer(StunServerConfig(primary=LOCAL, software=software))
    slow._fast = False  # force the general path for comparison
    return fast, slow


@pytest.mark.parametrize("software", [None, "natkit", "odd-len"], ids=["no-sw", "sw", "padded-sw"])
@pytest.mark.parametrize("fingerprint", [False, True], ids=["plain", "fingerprint"])
@pytest.mark.parametrize(
    "src",
    [Endpoint("198.51.100.9", 1), Endpoint("203.0.113.200", 65535), Endpoint("2001:db8::9", 4242)],
    ids=["v4", "v4-high-port", "v6"],
)
def test_fast_path_matches_general_path(
    software: str | None, fingerprint: bool, src: Endpoint
) -> None:
    rng = random.Random(5)
    fast, slow = _servers(software)
    for _ in range(20):
        tid = rng.randbytes(12)
        req = serialize_message(StunMessage.request(Method.BINDING, tid), fingerprint=fingerprint)
        got = _answer(fast, req, src)
        assert got == _answer(slow, req, src)
        assert parse_message(got[0]).transaction_id == tid


def test_bad_fingerprint_is_not_answered_by_the_fast_path() -> None:
    fast, _ = _servers("natkit")
    req = bytearray(
        serialize_message(StunMessage.request(Method.BINDING, bytes(12)), fingerprint=True)
    )
    req[-1] ^= 1
    assert _answer(fast, bytes(req), Endpoint("198.51.100.9", 1)) == []


def test_fast_path_is_off_with_rfc5780() -> None:
    server = StunServer(
        StunServerConfig(primary=LOCAL, alternate=Endpoint("192.0.2.2", 3479), rfc5780=True)
    )
    req = serialize_message(StunMessage.request(Method.BINDING, bytes(12)))
    (resp,) = _answer(server, req, Endpoint("198.51.100.9", 1))
    assert parse_message(resp).has(0x802C)  # OTHER-ADDRESS: the general path ran
