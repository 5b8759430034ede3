"""MediaRelayServer on the simulated internet: two phones behind NATs (each
announcing its private address in SDP, as a UA that cannot do ICE does)
talk through the relay; an attacker on the internet sprays the relay ports."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from natkit.addr import Endpoint, Family
from natkit.errors import LocalProtocolError
from natkit.mediarelay import (
    CallDeleted,
    CallTimedOut,
    DeleteReason,
    LatchReason,
    LegSide,
    MediaRelayConfig,
    MediaRelayEvent,
    SourceLatched,
)
from natkit.mediarelay.aio import LegOffer, MediaRelayServer
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, run_virtual
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.rng import seeded_rng

from ..helpers import rtcp, rtp

RELAY_IP = "203.0.113.5"
RELAY_IP6 = "2001:db8::5"
ATTACKER_IP = "203.0.113.66"


@dataclass
class Phone:
    """A UA's media socket: sends RTP to the relay, records what comes back."""

    sock: DatagramEndpoint
    ssrc: int
    received: list[tuple[bytes, Endpoint]] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: Stack, host: str, port: int, ssrc: int) -> Phone:
        phone: Phone
        received: list[tuple[bytes, Endpoint]] = []
        sock = await stack.open_udp(Endpoint(host, port), lambda d, r: received.append((d, r)))
        phone = cls(sock, ssrc, received)
        return phone

    def talk(self, relay: Endpoint, first: int, count: int) -> None:
        for seq in range(first, first + count):
            self.sock.send(rtp(seq, self.ssrc), relay)

    def heard(self, ssrc: int) -> list[int]:
        return [
            int.from_bytes(d[2:4], "big")
            for d, _ in self.received
            if int.from_bytes(d[8:12], "big") == ssrc
        ]


def _nat(net: Internet, name: str, preset: str, public: str, inside: str, seed: int) -> object:
    box = NatBox(
        PRESETS[preset], [public], inside_networks=[inside], rng=seeded_rng(seed), trace=False
    )
    return net.add_middlebox(name, box, [public], inside=inside)


async def _two_phones_behind(preset_a: str, preset_b: str, **config: object) -> dict[str, object]:
    net = Internet(seed=1, default_link=Link(delay=0.01))
    relay_host = net.add_host("relay", [RELAY_IP, RELAY_IP6])
    attacker = net.add_host("attacker", ATTACKER_IP)
    nat_a = _nat(net, "nat-a", preset_a, "198.51.100.1", "192.168.1.0/24", 10)
    nat_b = _nat(net, "nat-b", preset_b, "198.51.100.2", "192.168.2.0/24", 20)
    host_a = net.add_host("alice", "192.168.1.10", behind=nat_a)  # type: ignore[arg-type]
    host_b = net.add_host("bob", "192.168.2.20", behind=nat_b)  # type: ignore[arg-type]
    seen: list[MediaRelayEvent] = []
    cfg = MediaRelayConfig(port_min=40000, port_max=40099, rng=seeded_rng(3), **config)  # type: ignore[arg-type]
    async with MediaRelayServer(
        relay_host.stack, cfg, ipv4=RELAY_IP, ipv6=RELAY_IP6, on_event=seen.append
    ) as server:
        alice = await Phone.open(host_a.stack, "192.168.1.10", 4000, 0xA1)
        bob = await Phone.open(host_b.stack, "192.168.2.20", 5000, 0xB2)
        eve = await Phone.open(attacker.stack, ATTACKER_IP, 6666, 0xEE)
        ends = await server.create_call(
            "call-1",
            a=LegOffer(remote_rtp=Endpoint("192.168.1.10", 4000)),  # private: useless
            b=LegOffer(remote_rtp=Endpoint("192.168.2.20", 5000)),
        )
        # Both phones talk (symmetric RTP); 20 ms packets for a second.
        for i in range(50):
            alice.talk(ends.a.rtp, i, 1)
            bob.talk(ends.b.rtp, i, 1)
            await asyncio.sleep(0.02)
        # RTP bleed: the attacker sprays every relay port with its own stream.
        for port in range(40000, 40100):
            eve.talk(Endpoint(RELAY_IP, port), 0, 3)
        for i in range(50, 100):
            alice.talk(ends.a.rtp, i, 1)
            bob.talk(ends.b.rtp, i, 1)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        stats = server.call_stats("call-1")
        return {
            "alice": alice,
            "bob": bob,
            "eve": eve,
            "stats": stats,
            "events": seen,
            "ends": ends,
        }


@pytest.mark.parametrize(
    ("preset_a", "preset_b"),
    [
        pytest.param("symmetric", "symmetric", id="symmetric-symmetric"),
        pytest.param("port-restricted-cone", "symmetric", id="port-restricted-symmetric"),
        pytest.param("linux-masquerade", "carrier-grade", id="masquerade-cgn"),
    ],
)
def test_media_flows_both_ways_through_nats_and_the_attacker_gets_nothing(
    preset_a: str, preset_b: str
) -> None:
    out = run_virtual(_two_phones_behind(preset_a, preset_b))
    alice, bob, eve = out["alice"], out["bob"], out["eve"]
    assert isinstance(alice, Phone) and isinstance(bob, Phone) and isinstance(eve, Phone)
    # The first packets go to the private SDP address (lost) until the other side latched;
    # from then on, everything arrives, in order, and only from the relay.
    heard_by_bob, heard_by_alice = bob.heard(0xA1), alice.heard(0xB2)
    assert heard_by_bob[-60:] == list(range(40, 100))
    assert heard_by_alice[-60:] == list(range(40, 100))
    assert bob.heard(0xEE) == [] and alice.heard(0xEE) == []
    assert eve.received == []
    assert {src.host for _, src in alice.received + bob.received} == {RELAY_IP}
    stats = out["stats"]
    assert stats.a_to_b.dropped_foreign == 3 and stats.b_to_a.dropped_foreign == 3  # type: ignore[attr-defined]
    assert stats.a_to_b.source.host == "198.51.100.1"  # type: ignore[attr-defined]
    assert stats.b_to_a.source.host == "198.51.100.2"  # type: ignore[attr-defined]
    assert stats.a_to_b.rtp_lost == 0 and stats.a_to_b.packets == 100  # type: ignore[attr-defined]


async def _bridged_and_timed_out() -> tuple[list[int], list[MediaRelayEvent], int]:
    net = Internet(seed=2, default_link=Link(delay=0.005))
    relay_host = net.add_host("relay", [RELAY_IP, RELAY_IP6])
    v4 = net.add_host("v4", "192.0.2.10")
    v6 = net.add_host("v6", "2001:db8:1::10")
    seen: list[MediaRelayEvent] = []
    cfg = MediaRelayConfig(port_min=40000, port_max=40009, idle_timeout=5.0, rng=seeded_rng(1))
    server = MediaRelayServer(
        relay_host.stack, cfg, ipv4=RELAY_IP, ipv6=RELAY_IP6, on_event=seen.append
    )
    async with server:
        a = await Phone.open(v4.stack, "192.0.2.10", 4000, 0xA1)
        b = await Phone.open(v6.stack, "2001:db8:1::10", 5000, 0xB2)
        ends = await server.create_call(
            "c", a=LegOffer(rtcp_mux=True), b=LegOffer(family=Family.IPV6, rtcp_mux=True)
        )
        assert ends.a.rtcp is None and ends.b.rtp.host == RELAY_IP6
        b.talk(ends.b.rtp, 0, 1)  # B speaks first: latched, nowhere to go yet
        await asyncio.sleep(0.05)
        a.talk(ends.a.rtp, 0, 5)
        a.sock.send(rtcp(0xA1), ends.a.rtp)
        await asyncio.sleep(0.05)
        b.talk(ends.b.rtp, 1, 3)
        await asyncio.sleep(10.0)  # silence: the call times out
        left = server.call_count
        return [*b.heard(161), -1, *a.heard(178)], seen, left


def test_ipv4_and_ipv6_legs_are_bridged_with_mux_and_an_idle_call_times_out() -> None:
    heard, seen, left = run_virtual(_bridged_and_timed_out())
    assert heard == [0, 1, 2, 3, 4, -1, 1, 2, 3]
    kinds = [type(e) for e in seen if isinstance(e, CallTimedOut | CallDeleted)]
    assert kinds == [CallTimedOut, CallDeleted]
    deleted = next(e for e in seen if isinstance(e, CallDeleted))
    assert deleted.reason is DeleteReason.TIMED_OUT
    assert deleted.stats.a_to_b.rtcp_packets == 1
    assert left == 0
    assert any(isinstance(e, SourceLatched) for e in seen)


async def _ports_are_reused_and_errors_are_clear() -> list[str]:
    net = Internet(seed=3)
    relay_host = net.add_host("relay", RELAY_IP)
    cfg = MediaRelayConfig(port_min=40000, port_max=40003, rng=seeded_rng(1))  # two pairs
    notes: list[str] = []
    async with MediaRelayServer(relay_host.stack, cfg, ipv4=RELAY_IP) as server:
        ends = await server.create_call("c1")
        notes.append(f"{ends.a.rtp.port % 2}{ends.a.rtcp.port - ends.a.rtp.port}")  # type: ignore[union-attr]
        with pytest.raises(LocalProtocolError):
            await server.create_call("c1")
        with pytest.raises(LocalProtocolError, match="exhausted"):
            await server.create_call("c2")
        with pytest.raises(LocalProtocolError, match="IPV6"):
            await server.create_call("c3", a=LegOffer(family=Family.IPV6))
        server.delete_call("c1")
        await server.create_call("c4")  # the freed ports serve again
        notes.append(str(server.call_count))
    notes.append(str(server.call_count))
    return notes


def test_ports_come_back_after_a_call_and_errors_leave_nothing_bound() -> None:
    assert run_virtual(_ports_are_reused_and_errors_are_clear()) == ["01", "1", "0"]


async def _rebinding_after_hold() -> dict[str, object]:
    net = Internet(seed=4, default_link=Link(delay=0.01))
    relay_host = net.add_host("relay", RELAY_IP)
    nat_a = _nat(net, "nat-a", "symmetric", "198.51.100.1", "192.168.1.0/24", 11)
    nat_b = _nat(net, "nat-b", "symmetric", "198.51.100.2", "192.168.2.0/24", 21)
    host_a = net.add_host("alice", "192.168.1.10", behind=nat_a)  # type: ignore[arg-type]
    host_b = net.add_host("bob", "192.168.2.20", behind=nat_b)  # type: ignore[arg-type]
    seen: list[MediaRelayEvent] = []
    cfg = MediaRelayConfig(port_min=40000, port_max=40099, idle_timeout=600.0, rng=seeded_rng(5))
    async with MediaRelayServer(
        relay_host.stack, cfg, ipv4=RELAY_IP, on_event=seen.append
    ) as server:
        alice = await Phone.open(host_a.stack, "192.168.1.10", 4000, 0xA1)
        bob = await Phone.open(host_b.stack, "192.168.2.20", 5000, 0xB2)
        ends = await server.create_call("call-1")
        for i in range(50):
            alice.talk(ends.a.rtp, i, 1)
            bob.talk(ends.b.rtp, i, 1)
            await asyncio.sleep(0.02)
        before = server.call_stats("call-1")
        await asyncio.sleep(200.0)  # on hold: both NATs' 120 s mappings expire
        for i in range(50, 100):
            alice.talk(ends.a.rtp, i, 1)
            bob.talk(ends.b.rtp, i, 1)
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        return {
            "alice": alice.heard(0xB2),
            "bob": bob.heard(0xA1),
            "before": before,
            "after": server.call_stats("call-1"),
            "events": seen,
        }


def test_media_survives_a_nat_rebinding_after_a_hold_by_ssrc_handover() -> None:
    out = run_virtual(_rebinding_after_hold())
    before, after = out["before"], out["after"]
    # Both NATs gave their phone a new mapping after the hold...
    assert after.a_to_b.source != before.a_to_b.source  # type: ignore[attr-defined]
    assert after.b_to_a.source != before.b_to_a.source  # type: ignore[attr-defined]
    handovers = [
        e
        for e in out["events"]  # type: ignore[attr-defined]
        if isinstance(e, SourceLatched) and e.reason is LatchReason.SSRC_HANDOVER
    ]
    assert {e.leg for e in handovers} == {LegSide.A, LegSide.B}
    # ...and after the first packet or two the media flows again, both ways.
    assert out["alice"][-45:] == list(range(55, 100))  # type: ignore[index]
    assert out["bob"][-45:] == list(range(55, 100))  # type: ignore[index]


class _GatedStack:
    """A stack whose second UDP bind waits for ``gate``: a create_call caught
    half way through binding its ports."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()
        self.opened: list[DatagramEndpoint] = []

    async def open_udp(self, local: Endpoint, handler: object) -> DatagramEndpoint:
        if len(self.opened) == 1:
            self.waiting.set()
            await self.gate.wait()
        sock = await self.stack.open_udp(local, handler)  # type: ignore[arg-type]
        self.opened.append(sock)
        return sock

    def __getattr__(self, name: str) -> object:
        return getattr(self.stack, name)


async def _half_bound(how: str) -> tuple[list[bool], int, int]:
    net = Internet(seed=4)
    stack = _GatedStack(net.add_host("relay", RELAY_IP).stack)
    cfg = MediaRelayConfig(port_min=40000, port_max=40007, rng=seeded_rng(1))
    server = MediaRelayServer(stack, cfg, ipv4=RELAY_IP)  # type: ignore[arg-type]
    await server.start()
    free_before = server.ports.available
    task = asyncio.ensure_future(server.create_call("c1"))
    await stack.waiting.wait()  # the RTP socket is bound, the RTCP one not yet
    if how == "cancel":
        task.cancel()
    else:
        server.close()
        stack.gate.set()
    with pytest.raises((asyncio.CancelledError, LocalProtocolError)):
        await task
    stack.gate.set()
    free_after = server.ports.available
    server.close()
    await server.wait_closed()
    return [sock.closed for sock in stack.opened], free_before, free_after


@pytest.mark.parametrize("how", ["cancel", "close"])
def test_a_create_cancelled_or_closed_half_way_leaves_nothing_bound(how: str) -> None:
    closed, free_before, free_after = run_virtual(_half_bound(how))
    assert closed and all(closed), closed
    assert free_after == free_before  # the port pair went back to the pool
