"""UDP packets/s through natkit's TUN NAT and the kernel's nftables NAT, side by side.

One namespace lab holds both NATs, each on the lab internet with a host
behind it, and one public ``sink`` host:

```
sink 203.0.113.10 ── inet ─┬─ tun-nat (natkit's NAT box on TUN, --preset) ── tun-client
                           └─ kernel-nat (nftables masquerade)             ── kernel-client
```

Traffic is one UDP flow of ``--payload``-byte datagrams (default 112: an
audio frame with its RTP header) from a client to the sink. The sender and
the receiver are bench/udprate.c, compiled with ``cc -O2`` into a temporary
directory: the sender paces on a schedule with ``sendmmsg`` and sleeps
between ticks (it never busy-waits, so it leaves the CPU to the NAT), the
receiver counts unique sequence numbers with ``recvmmsg`` and reports the
growth of its namespace's UDP ``RcvbufErrors``. Both are bounded in count
and time.

For each offered rate (``--rates``), and for an unpaced blast (the maximum
delivered rate), the two NATs take turns (tun, kernel, then kernel, tun on
the next rate, ...) for ``--rounds`` rounds. Per run: datagrams sent, the
sender's achieved rate and CPU, unique datagrams delivered, loss, delivered
rate, and for the TUN NAT the forwarder's CPU utilisation and the packets
its inside TUN dropped because the forwarder did not read them in time
(``tx_dropped`` of ``tin``: the kernel's queue toward the forwarder was
full). The kernel NAT forwards in the sender's own softirq, so what it
delivers in the blast is bounded by the sender: ``kernel/tun`` for the
blast is a lower bound of the true ratio, flagged by ``sender_bound``.

Prints one JSON object; ``--smoke`` is a seconds-long run for CI. Needs root
(the namespace lab); without it, prints ``{"skipped": reason}`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import select
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import BenchError, compile_c, emit, fail, machine, ratio, summary

ENGINES = ("tun", "kernel")
DEFAULT_RATES = (10_000, 20_000, 30_000, 40_000)
BLAST_CAP = 500_000
"""Datagrams per second of blast duration the sender may send at most."""
FLOOR = 20_000
"""issue 3: the TUN NAT must carry >= 20k packets/s (media)."""
MAX_LOSS_AT_FLOOR = 0.01
SINK_PORT_BASE = 20_000
IDLE_MS = 300
READY_TIMEOUT = 10.0
TICK_US = 200


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def _json_line(text: str, what: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise BenchError(f"{what} printed no JSON: {text[-300:]!r}")


class Bench:
    """The lab, the programs and one measured run at a time."""

    def __init__(self, lab: Any, exe: Path, args: argparse.Namespace) -> None:
        from natkit.net.netns import KernelNat, TunNat

        self.lab = lab
        self.exe = exe
        self.args = args
        self.sink = lab.add_public_host("sink")
        self.nats = {
            "tun": lab.add_nat("tun-nat", TunNat(args.preset, seed=1)),
            "kernel": lab.add_nat("kernel-nat", KernelNat()),
        }
        self.clients = {
            name: lab.add_host(f"{name}-client", behind=nat) for name, nat in self.nats.items()
        }
        self.next_port = SINK_PORT_BASE
        self.hz = os.sysconf("SC_CLK_TCK")

    def _tin_dropped(self) -> int | None:
        result = self.lab.run(
            self.nats["tun"], ["cat", "/sys/class/net/tin/statistics/tx_dropped"], timeout=10
        )
        text = result.stdout.strip()
        return int(text) if result.returncode == 0 and text.isdigit() else None

    def run(self, engine: str, rate: int, duration: float) -> dict[str, Any]:
        """One flow at ``rate`` datagrams/s (0: unpaced) for ``duration`` s."""
        args = self.args
        count = int(rate * duration) if rate else int(BLAST_CAP * duration)
        port = self.next_port
        self.next_port += 1
        tag = secrets.randbits(62)
        deadline_s = duration + 5.0
        receiver = self.lab.exec(
            self.sink,
            [str(self.exe), "recv", str(port), str(count), str(int(deadline_s * 1000)),
             str(IDLE_MS), str(tag)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert receiver.stdout is not None
            ready, _, _ = select.select([receiver.stdout], [], [], READY_TIMEOUT)
            line = receiver.stdout.readline() if ready else ""
            if line.strip() != "ready":
                raise BenchError(f"the receiver did not start: {line!r}")
            nat = self.nats[engine]
            pid = nat.pid
            dropped0 = self._tin_dropped() if engine == "tun" else None
            cpu0 = _cpu_ticks(pid) if pid else None
            t0 = time.monotonic()
            # Paced runs stop at their count; the time bound is a safety net.
            limit_ms = int((duration if not rate else duration + 1.0) * 1000)
            sent = self.lab.run(
                self.clients[engine],
                [str(self.exe), "send", self.sink.address, str(port), str(rate), str(count),
                 str(limit_ms), str(args.payload), str(tag), str(TICK_US)],
                timeout=duration + 10.0,
            )  # fmt: skip
            wall = time.monotonic() - t0
            cpu1 = _cpu_ticks(pid) if pid else None
            if sent.returncode != 0:
                raise BenchError(f"udprate send failed: {sent.stderr.strip()}")
            out, err = receiver.communicate(timeout=deadline_s + 5.0)
        finally:
            if receiver.poll() is None:
                self.lab.stop(receiver)
        if receiver.returncode != 0:
            raise BenchError(f"udprate recv failed: {err.strip()}")
        dropped1 = self._tin_dropped() if engine == "tun" else None
        send = _json_line(sent.stdout, "udprate send")
        recv = _json_line(out, "udprate recv")
        delivered = recv["unique"]
        return {
            "engine": engine,
            "offered_rate": rate or None,
            "sent": send["sent"],
            "send_rate": round(send["rate"], 1),
            "sender_cpu_util": round(send["cpu_s"] / send["elapsed_s"], 3)
            if send["elapsed_s"]
            else None,
            "delivered": delivered,
            "loss": round(1 - delivered / send["sent"], 5) if send["sent"] else None,
            "delivered_rate": round(recv["rate"], 1),
            "duplicates": recv["duplicates"],
            "reordered": recv["reordered"],
            "receiver_rcvbuf_errors": recv["rcvbuf_errors"],
            "tin_tx_dropped": dropped1 - dropped0
            if dropped0 is not None and dropped1 is not None
            else None,
            "forwarder_cpu_util": round((cpu1 - cpu0) / self.hz / wall, 3)
            if cpu0 is not None and cpu1 is not None
            else None,
        }


def _summarise(runs: list[dict[str, Any]], key: str, digits: int = 5) -> dict[str, Any]:
    return summary([r[key] for r in runs if r[key] is not None], digits)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from natkit.net.netns import Lab, LabUnavailable
    from natkit.net.netns.system import check_available, lab_namespaces

    try:
        check_available(tun=True, nft=True)
    except LabUnavailable as exc:
        return {"benchmark": "tun_nat", "smoke": args.smoke, "skipped": str(exc)}
    before = machine()
    rates: list[int] = args.rates
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        exe = compile_c("udprate.c", Path(tmp))
        lab = Lab(workdir=Path(tmp) / "lab")
        (Path(tmp) / "lab").mkdir()
        forwarder_pid: int | None = None
        try:
            lab.open()
            bench = Bench(lab, exe, args)
            forwarder_pid = bench.nats["tun"].pid
            for engine in ENGINES:  # ARP, routes, first mappings: not measured
                bench.run(engine, 1000, 0.2)
            plan = [(rate, args.duration) for rate in rates] + [(0, args.blast_duration)]
            turn = 0
            for round_index in range(args.rounds):
                for rate, duration in plan:
                    order = ENGINES if turn % 2 == 0 else ENGINES[::-1]
                    turn += 1
                    for engine in order:
                        result = bench.run(engine, rate, duration)
                        result["round"] = round_index
                        runs.append(result)
        finally:
            lab.close()
        stats_path = Path(tmp) / "lab" / "tun-nat.stats.json"
        forwarder_stats = json.loads(stats_path.read_text()) if stats_path.exists() else None
        left = lab_namespaces(lab.prefix)

    per_engine: dict[str, Any] = {}
    for engine in ENGINES:
        mine = [r for r in runs if r["engine"] == engine]
        by_rate: dict[str, Any] = {}
        for rate in rates:
            at = [r for r in mine if r["offered_rate"] == rate]
            by_rate[str(rate)] = {
                "loss": _summarise(at, "loss"),
                "delivered_rate": _summarise(at, "delivered_rate", 1),
                "send_rate": _summarise(at, "send_rate", 1),
            }
        blast = [r for r in mine if r["offered_rate"] is None]
        per_engine[engine] = {
            "offered": by_rate,
            "max_delivered_rate": _summarise(blast, "delivered_rate", 1),
            "blast_send_rate": _summarise(blast, "send_rate", 1),
            "blast_loss": _summarise(blast, "loss"),
        }
    tun, kernel = per_engine["tun"], per_engine["kernel"]
    tun_max = tun["max_delivered_rate"]["median"]
    kernel_max = kernel["max_delivered_rate"]["median"]
    kernel_blast = [r for r in runs if r["engine"] == "kernel" and r["offered_rate"] is None]
    sender_bound = bool(kernel_blast) and all(r["loss"] < 0.01 for r in kernel_blast)
    ratios: dict[str, Any] = {
        "kernel/tun_max_delivered": ratio(kernel_max, tun_max),
        "kernel/tun_max_delivered_per_round": [
            ratio(k["delivered_rate"], t["delivered_rate"])
            for t, k in zip(
                [r for r in runs if r["engine"] == "tun" and r["offered_rate"] is None],
                kernel_blast,
                strict=False,
            )
        ],
        "sender_bound": sender_bound,
    }
    for rate in rates:
        ratios[f"kernel/tun_delivered_at_{rate}"] = ratio(
            kernel["offered"][str(rate)]["delivered_rate"]["median"],
            tun["offered"][str(rate)]["delivered_rate"]["median"],
        )
    floor_loss = tun["offered"].get(str(FLOOR), {}).get("loss", {}).get("median")
    met = tun_max is not None and tun_max >= FLOOR
    if floor_loss is not None:
        met = met and floor_loss <= MAX_LOSS_AT_FLOOR
    return {
        "benchmark": "tun_nat",
        "unit": "UDP datagrams per second, one flow, client behind the NAT -> public sink",
        "smoke": args.smoke,
        "engines": {
            "tun": f"natkit TUN NAT, preset {args.preset} (python -m natkit.net.netns.tun_nat)",
            "kernel": "nftables masquerade (KernelNat())",
        },
        "params": {
            "rates": rates,
            "duration_s": args.duration,
            "blast_duration_s": args.blast_duration,
            "rounds": args.rounds,
            "payload_bytes": args.payload,
            "preset": args.preset,
            "sender_tick_us": TICK_US,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "per_engine": per_engine,
        "ratio": ratios,
        "target": {
            "tun_packets_per_s_at_least": FLOOR,
            "max_loss_at_floor": MAX_LOSS_AT_FLOOR,
            "tun_max_delivered_median": tun_max,
            "tun_loss_at_floor_median": floor_loss,
            "met": met,
        },
        "forwarder": {"pid": forwarder_pid, "stats": forwarder_stats},
        "run_id": lab.run_id,
        "namespaces_left": left,
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rates",
        default=",".join(str(r) for r in DEFAULT_RATES),
        help="offered datagrams/s, comma-separated (default 10000,20000,30000,40000)",
    )
    p.add_argument("--duration", type=float, default=2.0, help="seconds per paced run")
    p.add_argument("--blast-duration", type=float, default=2.0, help="seconds per unpaced run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--payload", type=int, default=112, help="UDP payload bytes (default 112)")
    p.add_argument("--preset", default="port-restricted-cone", help="natkit NAT preset")
    p.add_argument("--smoke", action="store_true", help="one short round at 10k/s (CI)")
    args = p.parse_args(argv)
    try:
        args.rates = [int(r) for r in args.rates.split(",") if r]
    except ValueError:
        p.error("--rates takes integers")
    if args.smoke:
        args.rates, args.duration, args.blast_duration, args.rounds = [10_000], 0.3, 0.3, 1
    if not (
        args.rates
        and all(1 <= r <= 1_000_000 for r in args.rates)
        and 0.1 <= args.duration <= 30
        and 0.1 <= args.blast_duration <= 30
        and 1 <= args.rounds <= 20
        and 16 <= args.payload <= 1400
    ):
        p.error("--rates 1..1e6, --duration/--blast-duration 0.1..30, --rounds 1..20, --payload")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        from natkit.nat.presets import preset

        preset(args.preset)
    except ValueError as exc:
        fail(str(exc))
    try:
        result = benchmark(args)
    except BenchError as exc:
        fail(str(exc))
    emit(result)
    if result.get("namespaces_left"):
        fail(f"namespaces left behind: {result['namespaces_left']}", code=1)


if __name__ == "__main__":
    main()
