"""Call setup: calls per second from INVITE to two-way media, natkit user
agents across the simulated internet.

Two natkit UAs behind NATs register at natkit's SIP element (registrar and
home proxy) on the lab internet, then Alice calls Bob ``--calls`` times,
one call after the other. A call's setup time runs from ``UserAgent.call()``
to the moment *both* sides have heard the other's first audio packet
(``CallMedia.first_received_at``, to the millisecond): INVITE, 100, 180,
200, ACK, ICE checks where used, and the first RTP each way. Then it hangs
up and the next call starts. Three media paths, each in its own world:

- ``stun``: port-restricted cone NATs, STUN-learned addresses with symmetric
  RTP (ECC §6.2, RFC 6314 §5.2.2.1);
- ``ice``: the same NATs, ICE with STUN on both sides (RFC 6314 §5.2.2.3:
  the checks, then media on the selected pair);
- ``relay``: symmetric NATs, no STUN or ICE, through ``natkit serve`` whose
  media relay anchors the call (ECC §6.4; the relay latches onto both).

One-way delay 20 ms between any two hosts. Reported per path: the setup
time in virtual seconds (median, min, max of the calls), calls per virtual
second (calls / total setup time: what one caller achieves back to back),
and calls per wall second (how fast the simulator runs them: the cost of
natkit's SIP, SDP, ICE and RTP code, all of it in one process).

No third-party peer takes part: the issue names none for call setup (sipp
runs against ``natkit answer`` in tests/interop/test_call_sipp.py). Prints
one JSON object: per path the median of ``--runs`` runs (5; seeds 0..4).
``--smoke`` runs 2 runs of 2 calls per path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import emit, machine, summary
from natkit.addr import Endpoint
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP, SIP_PORT, lab_registrar
from natkit.nat.box import NatBox
from natkit.nat.presets import PRESETS
from natkit.net.sim import Internet, Link, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.serve.runner import ServeRunner
from natkit.serve.settings import build_serve_settings
from natkit.sip.uri import SipUri
from natkit.stun.aio.server import StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.ua.aio import Call, MediaSource, UserAgent, UserAgentSettings

STUN = Endpoint("198.51.100.30", 3478)
ONE_WAY = 0.02
POLL = 0.001  # virtual seconds between looks at the media counters
CALL_TIMEOUT = 20.0  # virtual seconds a call may take to set up
PATHS: dict[str, tuple[str, bool, bool]] = {
    # path: (NAT preset, ICE, through natkit serve's relay)
    "stun": ("port-restricted-cone", False, False),
    "ice": ("port-restricted-cone", True, False),
    "relay": ("symmetric", False, True),
}
SERVE: dict[str, dict[str, Any]] = {
    "store": {"url": "memory:"},
    "stun": {"listen": [f"{REGISTRAR_IP}:3479"]},
    "turn": {"enabled": False},
    "sip": {"listen": [f"udp:{REGISTRAR_IP}:{SIP_PORT}"], "domain": [DOMAIN], "no-auth": True},
    "media-relay": {"ipv4": REGISTRAR_IP},
    "admin": {"enabled": False},
}


def _behind(net: Internet, name: str, preset: str, index: int) -> SimHost:
    public = f"203.0.113.{50 + index}"
    inside = f"192.168.{index}.0/24"
    box = NatBox(PRESETS[preset], [public], inside_networks=[inside], rng=seeded_rng(index),
                 trace=False)  # fmt: skip
    return net.add_host(name, behind=net.add_middlebox(f"nat-{name}", box, [public], inside=inside))


def _ua_settings(host: SimHost, user: str, tone: float, *, ice: bool, stun: bool, seed: int) -> (
    UserAgentSettings
):  # fmt: skip
    return UserAgentSettings(
        aor=SipUri(scheme="sip", host=DOMAIN, user=user),
        local_ip=host.ip,
        sip_port=SIP_PORT,
        proxy=Endpoint(REGISTRAR_IP, SIP_PORT),
        register=True,
        stun_server=STUN if stun else None,
        ice=GatherConfig(stun_servers=(STUN,), rng=random.Random(seed + 10)) if ice else None,
        ice_config=IceConfig(rng=random.Random(seed + 20)) if ice else None,
        source=MediaSource(tone_hz=tone),
        rng=random.Random(seed),
    )


@contextlib.asynccontextmanager
async def _servers(server: SimHost, stun_host: SimHost, *, relay: bool) -> AsyncIterator[None]:
    async with StunServerRunner(stun_host.stack, StunServerConfig(primary=STUN), tcp=False):
        if relay:
            async with ServeRunner(server.stack, build_serve_settings(SERVE)):
                yield
        else:
            async with lab_registrar(server):
                yield


async def _heard(call: Call) -> float:
    while call.media is None or call.media.first_received_at is None:
        await asyncio.sleep(POLL)
    return call.media.first_received_at


async def run_path(path: str, calls: int, *, seed: int = 0) -> dict[str, Any]:
    """``calls`` back-to-back calls on ``path``; setup times in virtual s."""
    preset, ice, relay = PATHS[path]
    loop = asyncio.get_running_loop()
    net = Internet(seed=seed, default_link=Link(delay=ONE_WAY))
    server = net.add_host("natkit", [REGISTRAR_IP])
    stun_host = net.add_host("stun", [STUN.host])
    host_a, host_b = _behind(net, "alice", preset, 1), _behind(net, "bob", preset, 2)
    setups: list[float] = []
    walls: list[float] = []
    paths_seen: set[str] = set()
    async with _servers(server, stun_host, relay=relay):
        stun = not relay
        ua_a = UserAgent(host_a.stack, _ua_settings(host_a, "alice", 440.0, ice=ice, stun=stun,
                                                    seed=seed + 1))  # fmt: skip
        ua_b = UserAgent(host_b.stack, _ua_settings(host_b, "bob", 1000.0, ice=ice, stun=stun,
                                                    seed=seed + 2))  # fmt: skip
        async with ua_a, ua_b:
            for _ in range(calls):
                wall = time.perf_counter()
                started = loop.time()
                call_a = await ua_a.call(f"sip:bob@{DOMAIN}")
                call_b = await asyncio.wait_for(ua_b.incoming.get(), CALL_TIMEOUT)
                async with asyncio.timeout(CALL_TIMEOUT):
                    heard = await asyncio.gather(_heard(call_a), _heard(call_b))
                setups.append(max(heard) - started)
                walls.append(time.perf_counter() - wall)
                paths_seen.add(str(call_a.path))
                await ua_a.hangup(call_a)
                await asyncio.wait_for(call_b.ended.wait(), CALL_TIMEOUT)
    total = sum(setups)
    return {
        "calls": calls,
        "nat": preset,
        "media_path": sorted(paths_seen),
        "setup_virtual_s": summary(setups, 4),
        "calls_per_virtual_s": round(calls / total, 2) if total else None,
        "setup_wall_s": summary(walls, 4),
        "calls_per_wall_s": round(calls / sum(walls), 2) if sum(walls) else None,
    }


def _median_of_runs(path: str, calls: int, runs: int) -> dict[str, Any]:
    """``runs`` runs of ``path`` (seeds 0..runs-1), each in a fresh world.

    The result is the run whose wall calls/s is the median one (its setup
    summaries), with ``calls_per_virtual_s`` and ``calls_per_wall_s``
    replaced by the medians over the runs and each run's two rates listed.
    """
    done: list[dict[str, Any]] = []
    for seed in range(runs):
        run: Callable[[], Any] = functools.partial(run_path, path, calls, seed=seed)
        done.append(run_virtual(run, time_limit=calls * CALL_TIMEOUT * 3))
    by_wall = sorted(done, key=lambda r: r["calls_per_wall_s"] or 0.0)
    result = dict(by_wall[len(by_wall) // 2])
    virtual = [r["calls_per_virtual_s"] or 0.0 for r in done]
    wall = [r["calls_per_wall_s"] or 0.0 for r in done]
    result["runs"] = runs
    result["calls_per_virtual_s"] = round(statistics.median(virtual), 2)
    result["calls_per_wall_s"] = round(statistics.median(wall), 2)
    result["calls_per_virtual_s_runs"] = virtual
    result["calls_per_wall_s_runs"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per media path")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated media paths")
    parser.add_argument("--runs", type=int, default=5, help="runs per path (median reported)")
    parser.add_argument("--smoke", action="store_true", help="2 runs of 2 calls per path (CI)")
    args = parser.parse_args(argv)
    calls = 2 if args.smoke else args.calls
    if not 1 <= calls <= 1000:
        parser.error("--calls must be 1-1000")
    wanted = [p for p in args.paths.split(",") if p]
    unknown = set(wanted) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; choose from {sorted(PATHS)}")
    runs = 2 if args.smoke else args.runs
    if not 1 <= runs <= 50:
        parser.error("--runs must be 1-50")
    results = {path: _median_of_runs(path, calls, runs) for path in wanted}
    emit(
        {
            "benchmark": "call_setup",
            "smoke": args.smoke,
            "params": {"calls": calls, "runs": runs, "one_way_delay_s": ONE_WAY, "poll_s": POLL},
            "paths": results,
            "machine": machine(),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
