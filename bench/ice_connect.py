"""Time to an ICE connection: natkit's agent against aioice, and across the
simulated internet.

Loopback (real sockets, one process, one uvloop loop): two agents of one
kind, started together, gathering included (host candidates only: natkit
with ``GatherConfig(allow_loopback=True)``, aioice's host gathering on the
same addresses), signalled in-process as soon as gathering ends, timed until
*both* report a connection (natkit: ``AsyncIceAgent.connect()``; aioice:
``Connection.connect()``), with the connectivity checks sent until then
(natkit's ``checks_sent``, retransmissions included; aioice's counted as
the Binding requests its peer received). Runs alternate natkit / aioice
(A B A B ...), ``--runs`` of each, for one pair (127.0.0.1 each side) and
for 8 host candidates a side (127.0.0.1-8 against 127.0.1.1-8: 64 pairs).

natkit runs three times per round: with its defaults (RFC 8445 §14.2's Ta
of 50 ms), with its fast profile (``natkit-fast``:
``natkit.ice.aio.agent.fast_ice_config()``, Ta = 5 ms, the smallest §14.2
allows, regular nomination) and with aggressive nomination (RFC 5245, as
aioice). Regular nomination (§8.1.1) puts the USE-CANDIDATE check in the
next pacing slot after the first success, so natkit's time on loopback is
the first check's time plus one Ta plus one round trip.

Simulated internet (virtual clock): natkit only, two agents behind a
symmetric and a port-restricted cone NAT (no direct path: RFC 6314
§5.2.2.3), natkit's STUN and TURN servers on the lab internet, 50 ms one
way between any two hosts (+1 ms per NAT's inside link); time from start
(gathering included) to both connected, in virtual seconds, over seeds.

Prints one JSON object. ``--smoke`` runs 2 rounds and 1 simulated seed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import emit, fail, machine, ratio, summary
from natkit.addr import Endpoint, Family
from natkit.ice.aio.agent import AsyncIceAgent, fast_ice_config
from natkit.ice.config import IceConfig
from natkit.ice.events import CandidatePairSucceeded, IceEvent
from natkit.ice.gather_config import GatherConfig, TurnServerSpec
from natkit.net.loop import loop_factory
from natkit.net.os_stack import OsStack
from natkit.net.stack import InterfaceAddress
from natkit.rng import seeded_rng

try:
    from aioice.ice import Connection
except ImportError:
    fail("aioice is not installed (pip install aioice; scripts/setup.sh does)")

CONNECT_TIMEOUT = 10.0
ONE_PAIR = (["127.0.0.1"], ["127.0.0.2"])
SIXTY_FOUR = ([f"127.0.0.{i}" for i in range(1, 9)], [f"127.0.1.{i}" for i in range(1, 9)])
VARIANT_CONFIG: dict[str, Callable[[int], IceConfig]] = {  # name: seed -> config
    "natkit": lambda seed: IceConfig(rng=seeded_rng(seed)),
    "natkit-fast": lambda seed: fast_ice_config(rng=seeded_rng(seed)),
    "natkit-aggressive": lambda seed: IceConfig(aggressive_nomination=True, rng=seeded_rng(seed)),
}
VARIANT_DESCRIPTION = {
    "natkit": "IceConfig() defaults: Ta 50 ms, regular nomination",
    "natkit-fast": (
        "fast_ice_config(): Ta 5 ms (RFC 8445 §14.2 minimum, signalled as "
        "a=ice-pacing:5), regular nomination"
    ),
    "natkit-aggressive": "Ta 50 ms, aggressive nomination (RFC 5245 §8.1.1.2, as aioice)",
}
NATKIT_VARIANTS = tuple(VARIANT_CONFIG)
TARGET_ONE_PAIR_RATIO = 0.25
TARGET_64_PAIRS_S = 0.010
TARGET_SIM_S = 1.0


# -- natkit on loopback ----------------------------------------------------------------


class LoopbackStack(OsStack):
    """The OS stack listing only the given loopback addresses as local."""

    def __init__(self, ips: Sequence[str]) -> None:
        super().__init__()
        self.ips = tuple(ips)

    def local_addresses(self) -> list[InterfaceAddress]:
        return [
            InterfaceAddress(
                interface="lo", ip=ip, prefix_len=8, family=Family.IPV4, is_loopback=True
            )
            for ip in self.ips
        ]


async def trickle(src: AsyncIceAgent, dst: AsyncIceAgent) -> float:
    """Signal ``src``'s candidates to ``dst`` as they come, then
    end-of-candidates; returns the loop time gathering ended. Candidate
    objects are handed over as they are (aioice's side gets its own objects
    too: no SDP text in either timing)."""
    async for cand in src.local_candidates():
        dst.add_remote_candidate(cand)
    dst.end_of_remote_candidates()
    return asyncio.get_running_loop().time()


async def natkit_once(ips: tuple[list[str], list[str]], variant: str, seed: int) -> dict[str, Any]:
    first_valid: list[float] = []

    def on_event(event: IceEvent) -> None:
        if isinstance(event, CandidatePairSucceeded) and not first_valid:
            first_valid.append(time.perf_counter())

    agents = [
        AsyncIceAgent(
            LoopbackStack(side_ips),
            controlling=index == 0,
            config=VARIANT_CONFIG[variant](seed + index),
            gather_config=GatherConfig(
                allow_loopback=True, ipv6=False, rng=seeded_rng(seed + 10 + index)
            ),
            on_event=on_event if index == 0 else None,
        )
        for index, side_ips in enumerate(ips)
    ]
    a, b = agents
    try:
        started = time.perf_counter()
        await asyncio.gather(a.start(), b.start())
        a.set_remote_credentials(*b.local_credentials)
        b.set_remote_credentials(*a.local_credentials)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.gather(trickle(a, b), trickle(b, a), a.connect(), b.connect())
        elapsed = time.perf_counter() - started
        checks = a.checks_sent + b.checks_sent
        pairs = len(a.core.pairs(a.stream))
        selected = a.selected_pair()
        assert selected is not None
        return {
            "connect_s": elapsed,
            "first_valid_s": first_valid[0] - started,
            "checks": checks,
            "pairs": pairs,
            "selected": [selected[0].address.host, selected[1].address.host],
        }
    finally:
        await asyncio.gather(a.close(), b.close())


# -- aioice on loopback -------------------------------------------------------------


class CountingAioice(Connection):
    """aioice's Connection gathering host candidates on the given addresses
    (its ``gather_candidates()`` skips 127.0.0.1) and counting the Binding
    requests it receives (the peer's checks: nothing is lost on loopback)."""

    def __init__(self, addresses: Sequence[str], **kwargs: Any) -> None:
        super().__init__(use_ipv6=False, **kwargs)
        self.addresses = list(addresses)
        self.requests_received = 0

    async def gather_candidates(self) -> None:
        self._local_candidates_start = True
        for component in sorted(self._components):
            self._local_candidates += await self.get_component_candidates(
                component=component, addresses=self.addresses
            )
        self._local_candidates_end = True

    def request_received(self, message: Any, addr: Any, protocol: Any) -> None:
        self.requests_received += 1
        super().request_received(message, addr, protocol)


async def aioice_once(ips: tuple[list[str], list[str]]) -> dict[str, Any]:
    a = CountingAioice(ips[0], ice_controlling=True)
    b = CountingAioice(ips[1], ice_controlling=False)
    try:
        started = time.perf_counter()
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
        for x, y in ((a, b), (b, a)):
            x.remote_username, x.remote_password = y.local_username, y.local_password
            for cand in y.local_candidates:
                await x.add_remote_candidate(cand)
            await x.add_remote_candidate(None)
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await asyncio.gather(a.connect(), b.connect())
        elapsed = time.perf_counter() - started
        return {
            "connect_s": elapsed,
            "checks": a.requests_received + b.requests_received,
            "pairs": len(a._check_list),
        }
    finally:
        await asyncio.gather(a.close(), b.close())


# -- the loopback rounds ----------------------------------------------------------------


async def run_variant(name: str, ips: tuple[list[str], list[str]], index: int) -> dict[str, Any]:
    """One timed connection of ``name`` (a natkit variant or ``aioice``)."""
    if name == "aioice":
        return await aioice_once(ips)
    return await natkit_once(ips, name, 100 + 7 * index)


async def loopback_case(ips: tuple[list[str], list[str]], runs: int) -> dict[str, Any]:
    variants = [*NATKIT_VARIANTS, "aioice"]
    # One untimed warm-up of each (imports, first sockets), then A B C D A B C D ...
    for name in variants:
        await run_variant(name, ips, 0)
    per_run: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(runs):
        for name in variants:
            per_run[name].append(await run_variant(name, ips, i + 1))
    out: dict[str, Any] = {"pairs": len(ips[0]) * len(ips[1])}
    for name, results in per_run.items():
        entry: dict[str, Any] = {
            "connect_s": summary([r["connect_s"] for r in results]),
            "checks": summary([float(r["checks"]) for r in results], 1),
        }
        if "selected" in results[0]:
            entry["selected"] = sorted({tuple(r["selected"]) for r in results})
            entry["first_valid_s"] = summary([r["first_valid_s"] for r in results])
        out[name] = entry
    aioice_median = out["aioice"]["connect_s"]["median"]
    out["ratio"] = {
        f"{name}/aioice": ratio(out[name]["connect_s"]["median"], aioice_median)
        for name in NATKIT_VARIANTS
    }
    out["ratio_per_round"] = {
        f"{name}/aioice": summary(
            [
                n["connect_s"] / x["connect_s"]
                for n, x in zip(per_run[name], per_run["aioice"], strict=True)
            ],
            4,
        )
        for name in NATKIT_VARIANTS
    }
    return out


# -- the simulated internet ---------------------------------------------------------


async def sim_once(
    seed: int, nat_a: str, nat_b: str, one_way: float, variant: str
) -> dict[str, Any]:
    from natkit.lab.turn import lab_credentials, start_turn_server
    from natkit.nat.box import NatBox
    from natkit.nat.presets import PRESETS
    from natkit.net.sim import Internet, Link
    from natkit.stun.aio import StunServerRunner
    from natkit.stun.server import StunServerConfig

    half = Link(delay=one_way / 2)
    net = Internet(seed=seed, default_link=half)
    stun_ep = Endpoint("203.0.113.1", 3478)
    turn_ip = "203.0.113.3"
    stun_host = net.add_host("stun", stun_ep.host)
    turn_host = net.add_host("turn", turn_ip)
    hosts = []
    for index, preset in enumerate((nat_a, nat_b), start=1):
        public = f"198.51.100.{index}"
        inside = f"192.168.{index}.0/24"
        box = NatBox(
            PRESETS[preset],
            [public],
            inside_networks=[inside],
            rng=seeded_rng(seed * 10 + index),
            trace=False,
        )
        mb = net.add_middlebox(f"nat{index}", box, [public], inside=inside, link=half)
        hosts.append(net.add_host(f"agent{index}", behind=mb, link=Link(delay=0.0)))
    stun = StunServerRunner(stun_host.stack, StunServerConfig(primary=stun_ep), tcp=False)
    await stun.start()
    turn = await start_turn_server(turn_host.stack, turn_ip, seed=seed)
    _, creds = lab_credentials()
    gather = GatherConfig(
        stun_servers=(stun_ep,),
        turn_servers=(TurnServerSpec(address=Endpoint(turn_ip, 3478), credentials=creds),),
        rng=seeded_rng(seed + 1),
    )
    loop = asyncio.get_running_loop()
    first_valid: list[float] = []

    def on_event(event: IceEvent) -> None:
        if isinstance(event, CandidatePairSucceeded) and not first_valid:
            first_valid.append(loop.time())

    agents = [
        AsyncIceAgent(
            host.stack,
            controlling=index == 0,
            config=VARIANT_CONFIG[variant](seed + 2 + index),
            gather_config=gather,
            on_event=on_event,
        )
        for index, host in enumerate(hosts)
    ]
    a, b = agents
    try:
        started = loop.time()
        await asyncio.gather(a.start(), b.start())
        a.set_remote_credentials(*b.local_credentials)
        b.set_remote_credentials(*a.local_credentials)
        async with asyncio.timeout(30.0):
            gathered_a, gathered_b, _, _ = await asyncio.gather(
                trickle(a, b), trickle(b, a), a.connect(), b.connect()
            )
        elapsed = loop.time() - started
        selected = a.selected_pair()
        assert selected is not None
        local, remote = selected
        return {
            "connect_virtual_s": elapsed,
            "gathered_virtual_s": max(gathered_a, gathered_b) - started,
            "first_valid_virtual_s": first_valid[0] - started,
            "checks": a.checks_sent + b.checks_sent,
            "local_type": str(local.type),
            "remote_type": str(remote.type),
            "path": "relay" if "relay" in (local.type, remote.type) else "direct",
        }
    finally:
        await asyncio.gather(a.close(), b.close())
        stun.close()
        turn.close()
        await turn.wait_closed()


def sim_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "connect_virtual_s": summary([r["connect_virtual_s"] for r in runs]),
        "gathered_virtual_s": summary([r["gathered_virtual_s"] for r in runs]),
        "first_valid_virtual_s": summary([r["first_valid_virtual_s"] for r in runs]),
        "checks": summary([float(r["checks"]) for r in runs], 1),
        "paths": sorted({r["path"] for r in runs}),
        "types": sorted({f"{r['local_type']}/{r['remote_type']}" for r in runs}),
    }


def sim_case(seeds: int, nat_a: str, nat_b: str, one_way: float) -> dict[str, Any]:
    """This script's topology (STUN and one TURN server over UDP) for natkit's
    defaults and with aggressive nomination, and the lab scenario that
    ``natkit lab connect`` runs (TURN over UDP, TCP and TLS 443 gathered)."""
    from natkit.lab.ice_connect import run_connect_sim
    from natkit.net.sim import run_virtual

    out: dict[str, Any] = {"nat_a": nat_a, "nat_b": nat_b, "one_way_delay_s": one_way}
    for name in VARIANT_CONFIG:
        runs = [
            run_virtual(sim_once(seed, nat_a, nat_b, one_way, name)) for seed in range(1, seeds + 1)
        ]
        out[name] = sim_summary(runs)
    lab = [run_connect_sim(nat_a, nat_b, seed=seed, latency=one_way) for seed in range(seeds)]
    out["lab_connect"] = {
        "connect_virtual_s": summary([r.elapsed_s for r in lab]),
        "checks": summary([float(r.checks_sent) for r in lab], 1),
        "paths": sorted({str(r.path) for r in lab}),
        "types": sorted({f"{r.local_type}/{r.remote_type}" for r in lab}),
        "connected": all(r.connected and r.data_ok for r in lab),
    }
    return out


# -- main ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each variant")
    parser.add_argument("--sim-seeds", type=int, default=10, help="simulated runs (seeds)")
    parser.add_argument("--one-way", type=float, default=0.05, help="simulated one-way delay, s")
    parser.add_argument("--smoke", action="store_true", help="2 rounds, 1 seed (CI)")
    args = parser.parse_args(argv)
    runs = 2 if args.smoke else args.runs
    seeds = 1 if args.smoke else args.sim_seeds
    if runs < 1 or seeds < 1:
        fail("--runs and --sim-seeds must be at least 1")
    before = machine()

    async def loopback() -> dict[str, Any]:
        return {
            "1-pair": await loopback_case(ONE_PAIR, runs),
            "64-pairs": await loopback_case(SIXTY_FOUR, runs),
        }

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        looped = runner.run(loopback())
    sim = sim_case(seeds, "symmetric", "port-restricted-cone", args.one_way)
    one = looped["1-pair"]
    many = looped["64-pairs"]
    met = {
        name: {
            "one_pair_ratio": one["ratio"][f"{name}/aioice"] is not None
            and one["ratio"][f"{name}/aioice"] <= TARGET_ONE_PAIR_RATIO,
            "sixty_four_pairs": many[name]["connect_s"]["median"] < TARGET_64_PAIRS_S,
            "sim": sim[name]["connect_virtual_s"]["max"] < TARGET_SIM_S
            and sim[name]["paths"] == ["relay"],
        }
        for name in NATKIT_VARIANTS
    }
    result = {
        "benchmark": "ice_connect",
        "smoke": args.smoke,
        "params": {
            "runs": runs,
            "sim_seeds": seeds,
            "one_way_delay_s": args.one_way,
            "loop": "uvloop" if loop_factory() is not None else "asyncio",
            "natkit_variants": VARIANT_DESCRIPTION,
        },
        "loopback": looped,
        "sim": sim,
        "target": {
            "one_pair_ratio_at_most": TARGET_ONE_PAIR_RATIO,
            "sixty_four_pairs_under_s": TARGET_64_PAIRS_S,
            "sim_under_virtual_s": TARGET_SIM_S,
            "met_by_variant": met,
            "met_by": [name for name, checks in met.items() if all(checks.values())],
            "met": all(met["natkit"].values()),
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
    }
    emit(result)


if __name__ == "__main__":
    main()
