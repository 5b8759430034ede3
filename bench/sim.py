"""Simulated internet speed: packets per wall second through a NAT box, and
the wall time of a 10-minute virtual STUN keepalive scenario.

Prints one JSON object. ``--smoke`` runs a tiny version (CI).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

from natkit.addr import Endpoint
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, run_virtual
from natkit.rng import seeded_rng
from natkit.stun.aio import AsyncStunClient, StunServerRunner
from natkit.stun.server import StunServerConfig


def packets_through_nat(count: int, preset: str) -> dict[str, float]:
    """Send ``count`` datagrams from behind a NAT to a public sink; every one
    crosses the client's link, the NAT box and the sink's link."""

    async def main() -> dict[str, float]:
        net = Internet(seed=1, default_link=Link(delay=0.001))
        box = NatBox(
            PRESETS[preset],
            ["198.51.100.1"],
            inside_networks=["192.168.1.0/24"],
            rng=seeded_rng(1),
            trace=False,
        )
        nat = net.add_middlebox("nat", box, ["198.51.100.1"], inside="192.168.1.0/24")
        client = net.add_host("client", behind=nat)
        sink = net.add_host("sink", "203.0.113.20")
        received = 0

        def on_datagram(data: bytes, addr: Endpoint) -> None:
            nonlocal received
            received += 1

        await sink.stack.open_udp(Endpoint("0.0.0.0", 9), on_datagram)
        ep = await client.stack.open_udp(Endpoint("0.0.0.0", 0), lambda d, r: None)
        target = Endpoint("203.0.113.20", 9)
        payload = bytes(120)
        loop = asyncio.get_running_loop()
        wall = time.perf_counter()
        batch = 1000
        for i in range(0, count, batch):
            for _ in range(min(batch, count - i)):
                ep.send(payload, target)
            await asyncio.sleep(0.02)  # virtual: lets the batch drain
        await asyncio.sleep(1)
        elapsed = time.perf_counter() - wall
        assert received == count, (received, count)
        return {
            "packets": count,
            "wall_s": round(elapsed, 4),
            "packets_per_s": round(count / elapsed),
            "virtual_s": round(loop.time(), 3),
        }

    return run_virtual(main)


def keepalive_scenario(minutes: float) -> dict[str, float]:
    """A client behind a port-restricted NAT sends a STUN Binding every 15 s."""

    async def main() -> dict[str, float]:
        net = Internet(seed=2, default_link=Link(delay=0.025, jitter=0.005))
        stun = net.add_host("stun", "203.0.113.10")
        runner = StunServerRunner(
            stun.stack, StunServerConfig(primary=Endpoint("203.0.113.10", 3478))
        )
        await runner.start()
        box = NatBox(
            PRESETS["port-restricted-cone"],
            ["198.51.100.1"],
            inside_networks=["192.168.1.0/24"],
            rng=seeded_rng(2),
            trace=False,
        )
        nat = net.add_middlebox("nat", box, ["198.51.100.1"], inside="192.168.1.0/24")
        client = net.add_host("client", behind=nat)
        loop = asyncio.get_running_loop()
        wall = time.perf_counter()
        mapped = set()
        async with await AsyncStunClient.open_udp(client.stack, Endpoint("0.0.0.0", 0)) as c:
            while loop.time() < minutes * 60:
                mapped.add(await c.binding(Endpoint("203.0.113.10", 3478)))
                await asyncio.sleep(15)
        elapsed = time.perf_counter() - wall
        runner.close()
        return {
            "virtual_minutes": minutes,
            "wall_s": round(elapsed, 4),
            "bindings": runner.core.stats.responses,
            "distinct_mappings": len(mapped),
        }

    return run_virtual(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    packets, runs, minutes = (args.packets, args.runs, 10.0)
    if args.smoke:
        packets, runs, minutes = 5_000, 1, 1.0
    by_preset = {}
    for preset in ("port-restricted-cone", "symmetric"):
        results = [packets_through_nat(packets, preset) for _ in range(runs)]
        rates = [r["packets_per_s"] for r in results]
        by_preset[preset] = {"runs": rates, "median_packets_per_s": statistics.median(rates)}
    keepalive = [keepalive_scenario(minutes) for _ in range(runs)]
    out = {
        "packets_through_nat": by_preset,
        "target_packets_per_s": 200_000,
        "keepalive": {
            "runs": keepalive,
            "median_wall_s": statistics.median(k["wall_s"] for k in keepalive),
        },
        "smoke": args.smoke,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
