"""Packets and a two-legged call for the media relay tests."""

from __future__ import annotations

import random

from natkit.addr import Endpoint
from natkit.mediarelay import LegSetup, MediaRelay, MediaRelayConfig

RELAY = "203.0.113.5"
RELAY6 = "2001:db8::5"
A_SDP = Endpoint("192.168.1.10", 4000)  # what A's SDP says (its private address)
A_NAT = Endpoint("198.51.100.1", 61000)  # where A's packets really come from
B_SDP = Endpoint("192.168.2.20", 5000)
B_NAT = Endpoint("198.51.100.2", 62000)
ATTACKER = Endpoint("198.51.100.66", 9999)

A_RTP = Endpoint(RELAY, 30000)
A_RTCP = Endpoint(RELAY, 30001)
B_RTP = Endpoint(RELAY, 30002)
B_RTCP = Endpoint(RELAY, 30003)

SSRC_A = 0x11111111
SSRC_B = 0x22222222


def rtp(seq: int, ssrc: int = SSRC_A, *, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    """An RTP packet (RFC 3550 §5.1): V=2, PT ``pt``, 160 bytes of G.711 by default."""
    return (
        bytes([0x80, pt])
        + (seq & 0xFFFF).to_bytes(2, "big")
        + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
        + ssrc.to_bytes(4, "big")
        + payload
    )


def rtcp(ssrc: int = SSRC_A, packet_type: int = 201) -> bytes:
    """An RTCP receiver report (RFC 3550 §6.4.2) with no report blocks."""
    return bytes([0x80, packet_type, 0, 1]) + ssrc.to_bytes(4, "big")


def config(**overrides: object) -> MediaRelayConfig:
    base: dict[str, object] = {
        "learning_packets": 3,
        "learning_time": 2.0,
        "relatch_silence": 1.0,
        "idle_timeout": 60.0,
        "rng": random.Random(1),
    }
    base.update(overrides)
    return MediaRelayConfig(**base)  # type: ignore[arg-type]


def call(
    relay: MediaRelay | None = None,
    *,
    mux_a: bool = False,
    mux_b: bool = False,
    seed: bool = True,
    now: float = 0.0,
    **overrides: object,
) -> MediaRelay:
    """A relay with call ``c1``: leg A on 30000/30001, leg B on 30002/30003."""
    relay = relay or MediaRelay(config(**overrides))
    relay.create_call(
        "c1",
        a=LegSetup(
            rtp_local=A_RTP,
            rtcp_local=None if mux_a else A_RTCP,
            remote_rtp=A_SDP if seed else None,
        ),
        b=LegSetup(
            rtp_local=B_RTP,
            rtcp_local=None if mux_b else B_RTCP,
            remote_rtp=B_SDP if seed else None,
        ),
        now=now,
    )
    return relay


def events(relay: MediaRelay) -> list[object]:
    out: list[object] = []
    while (event := relay.next_event()) is not None:
        out.append(event)
    return out


Sent = list[tuple[bytes, Endpoint, Endpoint | None]]


def send(relay: MediaRelay, data: bytes, source: Endpoint, local: Endpoint, now: float) -> Sent:
    """Feed one datagram through the generic path; what the relay sent for it."""
    relay.receive_datagram(data, source, local=local, now=now)
    return [(d.data, d.remote, d.local) for d in relay.datagrams_to_send(now=now)]
