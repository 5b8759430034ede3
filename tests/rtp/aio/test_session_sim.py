"""AsyncRtpSession on the simulated internet, under virtual time: two-way media
between public hosts, and symmetric RTP through a NAT - with latching the
public side answers the NAT's mapping and media flows both ways; without it,
it answers the private address the signalling named and the NATed side hears
nothing (ECC §6.2/6.3: one-way audio)."""

from __future__ import annotations

import asyncio
import random

from natkit.addr import Endpoint
from natkit.nat.box import NatBox
from natkit.nat.presets import PORT_RESTRICTED_CONE
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.rtp.aio import AsyncRtpSession
from natkit.rtp.events import ByeReceived, RemoteLatched, RtpEvent, RtpReceived, SourceAdded
from natkit.rtp.session import RtpSessionConfig

PUBLIC_B = "198.51.100.20"
NAT_IP = "203.0.113.50"


def _config(seed: int, *, rtcp_mux: bool = False, latch: bool = False) -> RtpSessionConfig:
    return RtpSessionConfig(rng=random.Random(seed), rtcp_mux=rtcp_mux, latch=latch)


async def _talk(a: AsyncRtpSession, b: AsyncRtpSession, frames: int) -> None:
    for _ in range(frames):
        a.send_frame(b"A" * 160, pt=0, timestamp_increment=160)
        b.send_frame(b"B" * 160, pt=0, timestamp_increment=160)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)


def _payloads(events: list[RtpEvent]) -> set[bytes]:
    return {e.packet.payload[:1] for e in events if isinstance(e, RtpReceived)}


def _hosts(*, nat: bool) -> tuple[SimHost, SimHost]:
    net = Internet(seed=1, default_link=Link(delay=0.02))
    if not nat:
        return net.add_host("a", ["198.51.100.10"]), net.add_host("b", [PUBLIC_B])
    box = NatBox(
        PORT_RESTRICTED_CONE, [NAT_IP], inside_networks=["192.168.1.0/24"], rng=seeded_rng(3),
        trace=False,
    )  # fmt: skip
    middlebox = net.add_middlebox("nat", box, [NAT_IP], inside="192.168.1.0/24")
    return net.add_host("a", behind=middlebox), net.add_host("b", [PUBLIC_B])


def test_two_way_media_and_bye_between_public_hosts() -> None:
    async def main() -> tuple[list[RtpEvent], list[RtpEvent], float | None]:
        host_a, host_b = _hosts(nat=False)
        got_a: list[RtpEvent] = []
        got_b: list[RtpEvent] = []
        a = await AsyncRtpSession.open(
            host_a.stack, Endpoint(host_a.ip, 4000), config=_config(1),
            remote_rtp=Endpoint(PUBLIC_B, 6000), on_event=got_a.append,
        )  # fmt: skip
        b = await AsyncRtpSession.open(
            host_b.stack, Endpoint(PUBLIC_B, 6000), config=_config(2),
            remote_rtp=Endpoint(host_a.ip, 4000), on_event=got_b.append,
        )  # fmt: skip
        assert (a.local_rtcp.port, b.local_rtcp.port) == (4001, 6001)
        await _talk(a, b, 500)  # 10 s: a few RTCP reports each way
        rtt = a.statistics.rtt_ms
        a.close("done")
        await asyncio.sleep(0.1)
        b.close()
        await a.wait_closed()
        await b.wait_closed()
        return got_a, got_b, rtt

    got_a, got_b, rtt = run_virtual(main)
    assert _payloads(got_a) == {b"B"} and _payloads(got_b) == {b"A"}
    assert sum(isinstance(e, RtpReceived) for e in got_b) == 500
    assert rtt is not None and abs(rtt - 80.0) < 0.5  # 2 access links x 20 ms, each way
    assert any(isinstance(e, ByeReceived) and e.reason == "done" for e in got_b)


def _nat_call(*, latch: bool) -> tuple[list[RtpEvent], list[RtpEvent], Endpoint | None]:
    async def main() -> tuple[list[RtpEvent], list[RtpEvent], Endpoint | None]:
        host_a, host_b = _hosts(nat=True)
        got_a: list[RtpEvent] = []
        got_b: list[RtpEvent] = []
        private_a = Endpoint(host_a.ip, 4000)
        a = await AsyncRtpSession.open(
            host_a.stack, private_a, config=_config(1, rtcp_mux=True),
            remote_rtp=Endpoint(PUBLIC_B, 6000), on_event=got_a.append,
        )  # fmt: skip
        # B only knows what A's SDP said: its private address.
        b = await AsyncRtpSession.open(
            host_b.stack, Endpoint(PUBLIC_B, 6000), config=_config(2, rtcp_mux=True, latch=latch),
            remote_rtp=private_a, on_event=got_b.append,
        )  # fmt: skip
        await _talk(a, b, 100)
        remote = b.core.remote_rtp
        a.close()
        b.close()
        return got_a, got_b, remote

    return run_virtual(main)


def test_latching_gives_two_way_media_through_a_nat() -> None:
    got_a, got_b, remote = _nat_call(latch=True)
    assert remote is not None and remote.host == NAT_IP
    assert any(isinstance(e, RemoteLatched) for e in got_b)
    assert _payloads(got_b) == {b"A"}
    assert _payloads(got_a) == {b"B"}


def test_without_latching_media_through_a_nat_is_one_way() -> None:
    got_a, got_b, remote = _nat_call(latch=False)
    assert remote is not None and remote.host.startswith("192.168.1.")
    assert _payloads(got_b) == {b"A"}
    assert _payloads(got_a) == set()


def test_rtcp_port_falls_back_when_the_next_one_is_taken_and_events_queue() -> None:
    async def main() -> tuple[int, RtpEvent, int]:
        host_a, host_b = _hosts(nat=False)
        squatter = await host_b.stack.open_udp(Endpoint(PUBLIC_B, 6001), lambda d, r: None)
        b = await AsyncRtpSession.open(host_b.stack, Endpoint(PUBLIC_B, 6000), config=_config(2))
        a = await AsyncRtpSession.open(
            host_a.stack, Endpoint(host_a.ip, 4000), config=_config(1),
            remote_rtp=Endpoint(PUBLIC_B, 6000),
        )  # fmt: skip
        for _ in range(2):
            a.send_frame(b"A" * 160, pt=0, timestamp_increment=160)
        first = await asyncio.wait_for(b.next_event(), 1.0)
        for _ in range(1100):
            a.send_frame(b"A" * 160, pt=0, timestamp_increment=160)
        await asyncio.sleep(0.2)
        a.close()
        b.close()
        squatter.close()
        return b.local_rtcp.port, first, b.dropped_events

    rtcp_port, first, dropped = run_virtual(main)
    assert rtcp_port not in (6000, 6001)
    assert isinstance(first, SourceAdded)
    assert dropped > 0  # the queue holds 1024 events; the oldest went
