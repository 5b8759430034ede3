"""Packets per wall second through natkit's NAT behaviour core (natkit.nat.box).

No peer to compare with yet: this measures the sans-IO core alone, the part
the simulated internet (target >= 200k packets/s end to end) and the TUN NAT
spend their per-packet time in. Packets are built before the clock starts;
the timed loop only calls ``receive_packet``, drains ``packets_to_send`` and
``next_event`` every 64 packets, and checks the timer as a driver would.

Scenarios (each a fresh box, seeded):

* ``udp-cone``: 64 inside hosts each exchanging datagrams with one server
  through a port-restricted cone (outbound, then the reply inbound);
  ``trace=False`` as the simulator runs it.
* ``udp-cone-trace``: the same with ``trace=True`` (a PacketTranslated event
  per packet).
* ``udp-symmetric``: the same through the symmetric preset (address-and-port-
  dependent mapping, random ports).
* ``udp-new-mappings``: every outbound packet from a new inside endpoint
  (the mapping-creation path, with its MappingCreated events); each inside
  host is paired with its own public address, so ports never run out.
* ``tcp-established``: ACKs both ways on 64 established connections.

Prints one JSON object; ``--smoke`` is a sub-second run for CI.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from benchlib import emit, machine, summary
from natkit.addr import Endpoint
from natkit.nat.box import NatBox, Side
from natkit.nat.presets import preset
from natkit.packet import IpProto, Packet, TcpFlags

PUBLIC = "203.0.113.5"
LAN = "192.168.0.0/16"
SERVER = Endpoint("198.51.100.1", 3478)
HOSTS = 64
DRAIN_EVERY = 64

Work = list[tuple[Packet, Side]]


def _box(name: str, *, trace: bool, seed: int) -> NatBox:
    return NatBox(
        preset(name), [PUBLIC], inside_networks=[LAN], rng=random.Random(seed), trace=trace
    )


def _hosts() -> list[Endpoint]:
    return [Endpoint(f"192.168.{i // 200}.{2 + i % 200}", 5000 + i) for i in range(HOSTS)]


def _exchange(box: NatBox, count: int, proto: IpProto, flags: TcpFlags) -> Work:
    """``count`` packets: each host sends, and the server answers its mapping."""
    hosts = _hosts()
    mapped: dict[Endpoint, Endpoint] = {}
    for host in hosts:  # learn each host's mapping before the clock starts
        first = TcpFlags.SYN if proto is IpProto.TCP else flags
        box.receive_packet(Packet(proto, host, SERVER, b"", first), side=Side.INSIDE, now=0.0)
        [(_, sent)] = box.packets_to_send(now=0.0)
        mapped[host] = sent.src
        if proto is IpProto.TCP:
            reply = Packet(proto, SERVER, sent.src, b"", TcpFlags.SYN | TcpFlags.ACK)
            box.receive_packet(reply, side=Side.OUTSIDE, now=0.0)
            box.packets_to_send(now=0.0)
    while box.next_event() is not None:
        pass
    payload = b"\x00" * 172  # a 20 ms G.711 RTP packet
    work: Work = []
    for i in range(count // 2):
        host = hosts[i % HOSTS]
        work.append((Packet(proto, host, SERVER, payload, flags), Side.INSIDE))
        work.append((Packet(proto, SERVER, mapped[host], payload, flags), Side.OUTSIDE))
    return work


def _new_mappings(count: int) -> Work:
    """Every packet from a new inside endpoint: 50,000 ports on each of as many
    inside hosts as needed, each host paired with its own public address."""
    per_host = 50_000
    return [
        (
            Packet(
                IpProto.UDP, Endpoint(f"192.168.1.{2 + i // per_host}", 1024 + i % per_host), SERVER
            ),
            Side.INSIDE,
        )
        for i in range(count)
    ]


SCENARIOS: dict[str, Callable[[int, int], tuple[NatBox, Work]]] = {}


def _scenario(name: str) -> Callable[[Callable[[int, int], tuple[NatBox, Work]]], None]:
    def register(build: Callable[[int, int], tuple[NatBox, Work]]) -> None:
        SCENARIOS[name] = build

    return register


@_scenario("udp-cone")
def _udp_cone(count: int, seed: int) -> tuple[NatBox, Work]:
    box = _box("port-restricted-cone", trace=False, seed=seed)
    return box, _exchange(box, count, IpProto.UDP, TcpFlags(0))


@_scenario("udp-cone-trace")
def _udp_cone_trace(count: int, seed: int) -> tuple[NatBox, Work]:
    box = _box("port-restricted-cone", trace=True, seed=seed)
    return box, _exchange(box, count, IpProto.UDP, TcpFlags(0))


@_scenario("udp-symmetric")
def _udp_symmetric(count: int, seed: int) -> tuple[NatBox, Work]:
    box = _box("symmetric", trace=False, seed=seed)
    return box, _exchange(box, count, IpProto.UDP, TcpFlags(0))


@_scenario("udp-new-mappings")
def _udp_new(count: int, seed: int) -> tuple[NatBox, Work]:
    work = _new_mappings(count)
    public = [f"203.0.113.{10 + i}" for i in range(len({p.src.host for p, _ in work}))]
    box = NatBox(
        preset("port-restricted-cone"),
        public,
        inside_networks=[LAN],
        rng=random.Random(seed),
        trace=False,
    )
    return box, work


@_scenario("tcp-established")
def _tcp(count: int, seed: int) -> tuple[NatBox, Work]:
    box = _box("port-restricted-cone", trace=False, seed=seed)
    return box, _exchange(box, count, IpProto.TCP, TcpFlags.ACK)


def run_once(box: NatBox, work: Work) -> tuple[float, int]:
    """Push ``work`` through ``box``; return (seconds, packets forwarded)."""
    receive = box.receive_packet
    drain = box.packets_to_send
    next_event = box.next_event
    forwarded = 0
    now = 1.0
    step = 1e-5
    start = time.perf_counter()
    for i, (packet, side) in enumerate(work):
        receive(packet, side=side, now=now)
        if i % DRAIN_EVERY == 0:
            now += step * DRAIN_EVERY
            forwarded += len(drain(now=now))
            while next_event() is not None:
                pass
            timer = box.get_timer()
            if timer is not None and timer <= now:
                box.handle_timer(now=now)
    forwarded += len(drain(now=now))
    while next_event() is not None:
        pass
    return time.perf_counter() - start, forwarded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a sub-second run for CI")
    parser.add_argument("--packets", type=int, default=400_000, help="packets per run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per scenario")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    packets = 20_000 if args.smoke else args.packets
    rounds = 1 if args.smoke else args.rounds

    results: dict[str, Any] = {}
    for name, build in SCENARIOS.items():
        rates: list[float] = []
        forwarded = 0
        for r in range(rounds):
            box, work = build(packets, args.seed + r)
            seconds, forwarded = run_once(box, work)
            rates.append(len(work) / seconds)
        results[name] = {
            "packets_per_run": len(work),
            "forwarded_last_run": forwarded,
            "packets_per_s": summary(rates, digits=0),
        }
    emit(
        {
            "benchmark": "nat_box",
            "smoke": args.smoke,
            "machine": machine(),
            "scenarios": results,
            "median_packets_per_s": {
                name: r["packets_per_s"]["median"] for name, r in results.items()
            },
        }
    )


if __name__ == "__main__":
    main()
