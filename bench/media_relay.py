"""Media relaying: simultaneous G.711 calls through natkit, rtpengine and a plain forwarder.

Three relays, each its own process on 127.0.0.1, loaded the same way:

* ``natkit``: :class:`natkit.mediarelay.aio.MediaRelayServer` on the OS
  stack (uvloop), latching and strict source on (its defaults), started by
  this script's ``--serve natkit`` with a small JSON-over-UDP control
  socket (the bench's own; the proxy drives the relay in-process);
* ``rtpengine``: Debian's ``rtpengine`` daemon in userspace mode
  (``--table=-1``), one interface 127.0.0.1, driven over its ng control
  protocol (bencode over UDP: ``offer`` with A's SDP, ``answer`` with B's,
  ``delete``), ``--num-threads`` from ``--rtpengine-threads`` (1: one core,
  like natkit's one process);
* ``plain``: the floor, ``--serve plain``: a Python (uvloop) UDP forwarder
  with two sockets per call and fixed destinations, no latching, no
  statistics, nothing but ``datagram_received`` -> ``sendto``.

A call is two streams of 50 packets/s of 172-byte RTP (20 ms of G.711: 12
bytes of header, 160 of payload), one each way. The load generator is
bench/rtpload.c (compiled with ``cc`` at each run), a separate process. It
holds two sockets, made here and passed to it: the A and the B side of every
call (a relay latches per call, on the source of that call's packets, so
calls can share a source; each call still has its own relay ports per leg,
announced to the relay as SDP addresses / in the control message, and the
relay's ports handed back). Sharing lets the generator batch its system
calls (sendmmsg/recvmmsg) and leave the CPU to the relay. It wakes every
1 ms (no busy-waiting) to send what is due and read what arrived, times
each packet's one-way trip (A -> relay -> B) from the kernel's receive
timestamp (SO_TIMESTAMPNS), and checks every packet arrived at the right
socket (``misdelivered``). ``other_cpu_util`` is what the rest of the
machine used meanwhile; steps above 0.25 count as ``contended_steps``.

Per round, each relay in turn (natkit, rtpengine, plain, natkit, ...) runs
the ladder of ``--calls`` counts: fresh calls per step, ``--warmup`` (which
is also when the relays latch) then ``--duration`` measured seconds, then the
calls are deleted. A relay's round stops climbing after a step that lost
more than ``--give-up-loss``. ``max_lossless_calls`` is the highest step
that lost at most ``--max-loss`` with nothing misdelivered. A direct run
(each socket sending straight to its peer) at ``--reference-calls`` gives
the added latency at that load: relayed minus direct, median and p99.

Prints one JSON object; ``--smoke`` is a seconds-long run for CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from benchlib import (
    BenchError,
    Server,
    compile_c,
    emit,
    fail,
    free_udp_ports,
    machine,
    ratio,
    summary,
)

HOST = "127.0.0.1"
RELAYS = ("natkit", "rtpengine", "plain")
PORT_RANGES = {"natkit": (10000, 19999), "rtpengine": (20000, 29999)}
PACKET_BYTES = 172  # RTP header 12 + 160 bytes of G.711 (20 ms at 8 kHz)
PPS_PER_STREAM = 50.0
CONTROL_BATCH = 200  # calls per control datagram (natkit, plain)
SETTLE_S = 0.2
CONTENDED_ABOVE = 0.25  # CPU (of 2) taken by other processes during a step: contended
SRC = Path(__file__).resolve().parent.parent / "src"


# -- the relays' own processes (--serve) --------------------------------------------------


async def _serve(kind: str, control_port: int, port_min: int, port_max: int) -> None:
    """Run one relay with a JSON-over-UDP control socket until SIGTERM."""
    import signal

    from natkit.addr import Endpoint
    from natkit.mediarelay import MediaRelayConfig
    from natkit.mediarelay.aio import LegOffer, MediaRelayServer
    from natkit.net.os_stack import OsStack

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def on_sigterm() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    stack = OsStack()
    relay: MediaRelayServer | None = None
    plain: dict[str, list[asyncio.DatagramTransport]] = {}
    if kind == "natkit":
        relay = MediaRelayServer(
            stack, MediaRelayConfig(port_min=port_min, port_max=port_max), ipv4=HOST
        )
        await relay.start()

    class Forward(asyncio.DatagramProtocol):
        """The floor: what arrives goes to a fixed destination from the twin socket."""

        def __init__(self) -> None:
            self.transport: asyncio.DatagramTransport | None = None
            self.twin: Forward | None = None
            self.dest: tuple[str, int] = (HOST, 0)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: Any) -> None:
            twin = self.twin
            twin.transport.sendto(data, twin.dest)  # type: ignore[union-attr]

    async def create(call_id: str, a_port: int, b_port: int) -> list[int]:
        if relay is not None:
            ends = await relay.create_call(
                call_id,
                a=LegOffer(remote_rtp=Endpoint(HOST, a_port)),
                b=LegOffer(remote_rtp=Endpoint(HOST, b_port)),
            )
            return [ends.a.rtp.port, ends.b.rtp.port]
        fa, fb = Forward(), Forward()
        fa.twin, fb.twin = fb, fa
        fa.dest, fb.dest = (HOST, a_port), (HOST, b_port)
        ta, _ = await loop.create_datagram_endpoint(lambda: fa, local_addr=(HOST, 0))
        tb, _ = await loop.create_datagram_endpoint(lambda: fb, local_addr=(HOST, 0))
        plain[call_id] = [ta, tb]
        return [ta.get_extra_info("sockname")[1], tb.get_extra_info("sockname")[1]]

    def delete_all() -> dict[str, Any]:
        out: dict[str, Any] = {"calls": 0, "forwarded": 0, "dropped": 0, "lost": 0}
        if relay is not None:
            for call_id in relay.core.call_ids():
                stats = relay.delete_call(call_id)
                out["calls"] += 1
                for d in (stats.a_to_b, stats.b_to_a):
                    out["forwarded"] += d.forwarded
                    out["dropped"] += d.dropped_foreign + d.dropped_malformed
                    out["dropped"] += d.dropped_no_destination
                    out["lost"] += max(d.rtp_lost, 0)
        for transports in plain.values():
            out["calls"] += 1
            for t in transports:
                t.close()
        plain.clear()
        return out

    async def handle(data: bytes, remote: Endpoint) -> None:
        try:
            request = json.loads(data)
            op = request["op"]
            if op == "ping":
                answer: dict[str, Any] = {"ok": True}
            elif op == "create":
                ports = [await create(str(c), int(a), int(b)) for c, a, b in request["calls"]]
                answer = {"ok": True, "ports": ports}
                gc.collect()
                gc.freeze()  # the calls' state is long-lived: keep it out of collections
            elif op == "delete_all":
                answer = {"ok": True, **delete_all()}
                gc.unfreeze()
            else:
                answer = {"ok": False, "error": f"unknown op {op!r}"}
        except Exception as exc:  # the bench's own protocol: report, keep serving
            answer = {"ok": False, "error": repr(exc)}
        control.send(json.dumps(answer).encode(), remote)

    tasks: set[asyncio.Task[None]] = set()

    def on_control(data: bytes, remote: Endpoint) -> None:
        task = loop.create_task(handle(data, remote))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    control = await stack.open_udp(Endpoint(HOST, control_port), on_control)
    try:
        await stop
    finally:
        delete_all()
        control.close()
        if relay is not None:
            relay.close()
            await relay.wait_closed()


def serve_main(args: argparse.Namespace) -> None:
    from natkit.net.loop import run

    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 100))
    run(_serve(args.serve, args.control, args.port_min, args.port_max))


# -- control clients ----------------------------------------------------------------------


def _bencode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return _bencode(value.encode())
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, list):
        return b"l" + b"".join(_bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(_bencode(k) + _bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(type(value))


def _bdecode(data: bytes, i: int = 0) -> tuple[Any, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items: list[Any] = []
        while data[i : i + 1] != b"e":
            item, i = _bdecode(data, i)
            items.append(item)
        if c == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


class Control:
    """A blocking request/answer client over UDP (a cookie per request, retried)."""

    def __init__(self, port: int) -> None:
        self.addr = (HOST, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))

    def ask(self, payload: bytes, timeout: float = 2.0, tries: int = 3) -> bytes:
        cookie = secrets.token_hex(6).encode()
        for _ in range(tries):
            self.sock.settimeout(timeout)
            self.sock.sendto(cookie + b" " + payload, self.addr)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    data, _ = self.sock.recvfrom(65536)
                except TimeoutError:
                    break
                head, _, body = data.partition(b" ")
                if head == cookie:
                    return body
        raise BenchError(f"no answer from the control socket at {self.addr[0]}:{self.addr[1]}")

    def close(self) -> None:
        self.sock.close()


class JsonControl(Control):
    """The bench's own control protocol for --serve natkit / plain."""

    def ask(self, payload: bytes, timeout: float = 10.0, tries: int = 1) -> bytes:
        # (no cookie: the server answers the request it got; one request at a time)
        self.sock.settimeout(timeout)
        self.sock.sendto(payload, self.addr)
        try:
            data, _ = self.sock.recvfrom(65536)
        except TimeoutError as exc:
            raise BenchError(f"no answer from {self.addr}") from exc
        return data

    def request(self, **body: Any) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.ask(json.dumps(body).encode()))
        if not answer.get("ok"):
            raise BenchError(f"relay control refused {body.get('op')}: {answer.get('error')}")
        return answer

    def ping(self) -> bool:
        try:
            self.sock.settimeout(0.2)
            self.sock.sendto(b'{"op": "ping"}', self.addr)
            data, _ = self.sock.recvfrom(65536)
            return bool(json.loads(data).get("ok"))
        except (OSError, ValueError):
            return False

    def create(self, calls: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
        ports: list[tuple[int, int]] = []
        for i in range(0, len(calls), CONTROL_BATCH):
            answer = self.request(op="create", calls=calls[i : i + CONTROL_BATCH])
            ports.extend((int(a), int(b)) for a, b in answer["ports"])
        return ports

    def delete_all(self, calls: list[str]) -> dict[str, Any]:
        return self.request(op="delete_all")


def _sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


_M_AUDIO = re.compile(rb"^m=audio (\d+) ", re.MULTILINE)


class NgControl(Control):
    """rtpengine's ng protocol: ``cookie bencoded-dictionary`` over UDP."""

    def request(self, **body: Any) -> dict[str, Any]:
        answer, _ = _bdecode(self.ask(_bencode(body)))
        if not isinstance(answer, dict) or answer.get("result") not in (b"ok", b"pong"):
            raise BenchError(f"rtpengine refused {body.get('command')}: {answer!r}")
        return answer

    def ping(self) -> bool:
        try:
            return self.request(command="ping").get("result") == b"pong"
        except (BenchError, OSError, ValueError):
            return False

    def create(self, calls: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
        ports: list[tuple[int, int]] = []
        for call_id, a_port, b_port in calls:
            offer = self.request(
                command="offer", **{"call-id": call_id, "from-tag": "a"}, sdp=_sdp(a_port)
            )
            answer = self.request(
                command="answer",
                **{"call-id": call_id, "from-tag": "a", "to-tag": "b"},
                sdp=_sdp(b_port),
            )
            # The offer's rewritten SDP goes to B: its port faces B. The answer's faces A.
            b_relay = _M_AUDIO.search(offer["sdp"])
            a_relay = _M_AUDIO.search(answer["sdp"])
            if a_relay is None or b_relay is None:
                raise BenchError("rtpengine's SDP has no m=audio line")
            ports.append((int(a_relay.group(1)), int(b_relay.group(1))))
        return ports

    def delete_all(self, calls: list[str]) -> dict[str, Any]:
        for call_id in calls:
            self.request(command="delete", **{"call-id": call_id, "from-tag": "a"})
        return {"calls": len(calls)}


class RelayServer(Server):
    """A relay child process, ready once its control socket answers a ping."""

    probe = "ping"

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path) -> None:
        super().__init__(name, argv, HOST, port, workdir)
        self.control: JsonControl | NgControl = (
            NgControl(port) if name == "rtpengine" else JsonControl(port)
        )

    def is_ready(self) -> bool:
        return self.control.ping()

    def stop(self) -> None:
        super().stop()
        self.control.close()


def _rtpengine() -> str | None:
    return shutil.which("rtpengine", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin"]))


def make_relay(name: str, control: int, workdir: Path, threads: int) -> RelayServer:
    if name == "rtpengine":
        exe = _rtpengine()
        if exe is None:
            raise BenchError("rtpengine not found (Debian rtpengine-daemon; scripts/setup.sh)")
        low, high = PORT_RANGES[name]
        argv = [
            exe,
            "--config-file=none",
            "--foreground",
            "--table=-1",  # no kernel forwarding: userspace mode
            f"--interface={HOST}",
            f"--listen-ng={HOST}:{control}",
            f"--port-min={low}",
            f"--port-max={high}",
            f"--num-threads={threads}",
            "--log-stderr",
            "--log-level=4",
            "--timeout=60",
            "--delete-delay=0",
            f"--pidfile={workdir / 'rtpengine.pid'}",
        ]
    else:
        low, high = PORT_RANGES.get(name, (0, 0))
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            name,
            "--control",
            str(control),
            "--port-min",
            str(low or 40000),
            "--port-max",
            str(high or 40001),
        ]
    return RelayServer(name, argv, control, workdir / name)


# -- the load -----------------------------------------------------------------------------


def _generator_sockets() -> list[socket.socket]:
    """The A and the B side of every call: two sockets with room for bursts."""
    socks: list[socket.socket] = []
    try:
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for opt, forced in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE
                try:
                    s.setsockopt(socket.SOL_SOCKET, forced, 8 << 20)
                except OSError:  # not privileged: as much as net.core.[rw]mem_max allows
                    s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            s.bind((HOST, 0))
            socks.append(s)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (all processes)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def run_step(
    exe: Path,
    workdir: Path,
    relay: RelayServer | None,
    calls: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One bounded run of ``calls`` calls through ``relay`` (None: direct)."""
    socks = _generator_sockets()
    call_ids = [f"c{secrets.token_hex(4)}-{i}" for i in range(calls)]
    created = False
    try:
        port_a, port_b = (s.getsockname()[1] for s in socks)
        setup_s = 0.0
        if relay is None:
            targets = [(port_b, port_a)] * calls
        else:
            t_setup = time.monotonic()
            targets = relay.control.create([(c, port_a, port_b) for c in call_ids])
            setup_s = time.monotonic() - t_setup
            created = True
        spec = workdir / "spec.txt"
        spec.write_text("".join(f"{ta} {tb}\n" for ta, tb in targets))
        proc = psutil.Process(relay.pid) if relay is not None else None
        cpu0, busy0 = _cpu(proc), _busy_cpu_s()
        out = subprocess.run(
            [
                str(exe),
                str(spec),
                str(socks[0].fileno()),
                str(socks[1].fileno()),
                str(PACKET_BYTES),
                str(PPS_PER_STREAM),
                str(int(args.duration * 1000)),
                str(int(args.warmup * 1000)),
                str(args.drain_ms),
                str(secrets.randbits(31)),
            ],
            capture_output=True,
            text=True,
            timeout=args.duration + args.warmup + args.drain_ms / 1000 + 30,
            check=False,
            pass_fds=[s.fileno() for s in socks],
        )
        cpu, busy = _cpu(proc) - cpu0, _busy_cpu_s() - busy0
        if out.returncode != 0:
            raise BenchError(f"rtpload failed: {out.stderr.strip()}")
        run: dict[str, Any] = json.loads(out.stdout)
        elapsed = run["elapsed_s"] or 1.0
        run["generator_cpu_util"] = round(run["generator_cpu_s"] / elapsed, 3)
        # Everything else the machine ran meanwhile (other processes, our control plane):
        # a relay that lost packets while this was high was starved, not at its limit.
        run["other_cpu_util"] = round(max(busy - cpu - run["generator_cpu_s"], 0.0) / elapsed, 3)
        if relay is not None:
            run["setup_s"] = round(setup_s, 4)
            run["relay_cpu_s"] = round(cpu, 4)
            run["relay_cpu_util"] = round(cpu / elapsed, 3)
            relayed = run["received_total"]
            run["relayed_per_relay_cpu_s"] = round(relayed / cpu, 1) if cpu > 0 else None
            run["relay_report"] = relay.control.delete_all(call_ids)
            created = False
        return run
    finally:
        if created and relay is not None:
            with contextlib.suppress(BenchError):
                relay.control.delete_all(call_ids)
        for s in socks:
            s.close()
        time.sleep(SETTLE_S)


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def lossless(run: dict[str, Any], max_loss: float) -> bool:
    return bool(run["loss"] <= max_loss and run["misdelivered"] == 0)


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    names = [n for n in args.relays.split(",") if n]
    for n in names:
        if n not in RELAYS:
            raise BenchError(f"unknown relay {n!r} (choose from {', '.join(RELAYS)})")
    skipped: dict[str, str] = {}
    if "rtpengine" in names and _rtpengine() is None:
        if not args.smoke:
            raise BenchError("rtpengine not found (Debian rtpengine-daemon; scripts/setup.sh)")
        names.remove("rtpengine")
        skipped["rtpengine"] = "not installed"
    before = machine()
    rounds: dict[str, list[list[dict[str, Any]]]] = {n: [] for n in names}
    direct_runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="natkit-bench-") as tmp:
        workdir = Path(tmp)
        exe = compile_c("rtpload.c", workdir)
        ports = free_udp_ports([HOST], len(names))
        relays = [
            make_relay(n, p, workdir, args.rtpengine_threads)
            for n, p in zip(names, ports, strict=True)
        ]
        try:
            for relay in relays:
                relay.start()
            for _ in range(args.rounds):
                direct_runs.append(run_step(exe, workdir, None, args.reference_calls, args))
                for relay in relays:  # interleaved: A B C A B C ...
                    ladder: list[dict[str, Any]] = []
                    for calls in args.calls:
                        step = run_step(exe, workdir, relay, calls, args)
                        ladder.append(step)
                        if step["loss"] > args.give_up_loss:
                            break
                    rounds[relay.name].append(ladder)
            pids = {r.name: r.pid for r in relays}
            rss = {
                r.name: round(psutil.Process(r.pid).memory_info().rss / 2**20, 1) for r in relays
            }
        finally:
            for relay in relays:
                relay.stop()
        commands = {r.name: r.argv for r in relays}

    ref = args.reference_calls
    direct_p50 = summary([d["latency_us"]["p50"] for d in direct_runs], 1)
    direct_p99 = summary([d["latency_us"]["p99"] for d in direct_runs], 1)
    results: dict[str, Any] = {}
    for n in names:
        rs = rounds[n]
        steps: dict[str, Any] = {}
        for calls in args.calls:
            runs = [s for ladder in rs for s in ladder if s["calls"] == calls]
            if not runs:
                continue
            steps[str(calls)] = {
                "loss": summary([r["loss"] for r in runs], 6),
                "delivered_pps": summary([r["delivered_pps"] for r in runs], 1),
                "latency_p50_us": summary([r["latency_us"]["p50"] for r in runs], 1),
                "latency_p99_us": summary([r["latency_us"]["p99"] for r in runs], 1),
                "relay_cpu_util": summary([r["relay_cpu_util"] or 0.0 for r in runs], 3),
                "relayed_per_relay_cpu_s": summary(
                    [r["relayed_per_relay_cpu_s"] or 0.0 for r in runs], 1
                ),
                "setup_s": summary([r["setup_s"] for r in runs], 4),
                "generator_cpu_util": summary([r["generator_cpu_util"] for r in runs], 3),
                "other_cpu_util": summary([r["other_cpu_util"] for r in runs], 3),
                "misdelivered": sum(r["misdelivered"] for r in runs),
            }
        at_ref = [s for ladder in rs for s in ladder if s["calls"] == ref]
        best = [
            max((s["calls"] for s in ladder if lossless(s, args.max_loss)), default=0)
            for ladder in rs
        ]
        results[n] = {
            "command": commands[n],
            "pid": pids[n],
            "rss_mb": rss[n],
            "calls": steps,
            "max_lossless_calls": summary([float(b) for b in best], 1),
            "max_lossless_pps": summary([b * 2 * PPS_PER_STREAM for b in best], 1),
            "max_delivered_pps": summary(
                [max(s["delivered_pps"] for s in ladder) for ladder in rs], 1
            ),
            "latency": {
                "calls": ref,
                "p50_us": summary([s["latency_us"]["p50"] for s in at_ref], 1) if at_ref else None,
                "p99_us": summary([s["latency_us"]["p99"] for s in at_ref], 1) if at_ref else None,
                "added_p50_us": summary(
                    [
                        s["latency_us"]["p50"] - d["latency_us"]["p50"]
                        for s, d in zip(at_ref, direct_runs, strict=False)
                    ],
                    1,
                )
                if at_ref
                else None,
                "added_p99_us": summary(
                    [
                        s["latency_us"]["p99"] - d["latency_us"]["p99"]
                        for s, d in zip(at_ref, direct_runs, strict=False)
                    ],
                    1,
                )
                if at_ref
                else None,
            },
            "contended_steps": sum(
                1 for ladder in rs for s in ladder if s["other_cpu_util"] > CONTENDED_ABOVE
            ),
            "errors": {
                "misdelivered": sum(s["misdelivered"] for ladder in rs for s in ladder),
                "send_errors": sum(s["send_errors"] for ladder in rs for s in ladder),
            },
            "rounds": rs,
        }
    ratios: dict[str, Any] = {}
    for other in ("rtpengine", "plain"):
        if "natkit" in results and other in results:
            nk, ot = results["natkit"], results[other]
            ratios[f"natkit/{other}_max_lossless_calls"] = ratio(
                nk["max_lossless_calls"]["median"], ot["max_lossless_calls"]["median"]
            )
            ratios[f"natkit/{other}_max_delivered_pps"] = ratio(
                nk["max_delivered_pps"]["median"], ot["max_delivered_pps"]["median"]
            )
            if str(ref) in nk["calls"] and str(ref) in ot["calls"]:
                ratios[f"natkit/{other}_per_cpu_s_at_{ref}"] = ratio(
                    nk["calls"][str(ref)]["relayed_per_relay_cpu_s"]["median"],
                    ot["calls"][str(ref)]["relayed_per_relay_cpu_s"]["median"],
                )
            if nk["latency"]["added_p50_us"] and ot["latency"]["added_p50_us"]:
                ratios[f"natkit/{other}_added_p50"] = ratio(
                    nk["latency"]["added_p50_us"]["median"], ot["latency"]["added_p50_us"]["median"]
                )
    natkit_best = results.get("natkit", {}).get("max_lossless_calls", {}).get("median")
    return {
        "benchmark": "media_relay",
        "unit": "simultaneous G.711 calls (2 x 50 packets/s of 172-byte RTP each)",
        "smoke": args.smoke,
        "params": {
            "rounds": args.rounds,
            "calls": args.calls,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "drain_ms": args.drain_ms,
            "packet_bytes": PACKET_BYTES,
            "pps_per_stream": PPS_PER_STREAM,
            "max_loss": args.max_loss,
            "give_up_loss": args.give_up_loss,
            "reference_calls": ref,
            "rtpengine_threads": args.rtpengine_threads,
        },
        "machine": {**before, "loadavg_after": machine()["loadavg"]},
        "skipped": skipped,
        "direct": {
            "calls": ref,
            "p50_us": direct_p50,
            "p99_us": direct_p99,
            "runs": direct_runs,
        },
        "relays": results,
        "median_max_lossless_calls": {n: results[n]["max_lossless_calls"]["median"] for n in names},
        "ratio": ratios,
        "target": {
            "natkit_calls_at_least": 500,
            "met": None if natkit_best is None else natkit_best >= 500,
        },
    }


def parse_calls(text: str) -> list[int]:
    calls = sorted({int(x) for x in text.split(",") if x})
    if not calls or calls[0] < 1 or calls[-1] > 4000:
        raise argparse.ArgumentTypeError("call counts must be in 1..4000")
    return calls


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--calls",
        type=parse_calls,
        default=parse_calls("100,250,500,750,1000,1250,1500,2000,2500,3000"),
        help="simultaneous calls per step, comma-separated",
    )
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per step")
    p.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds first")
    p.add_argument("--drain-ms", type=int, default=300, help="wait for late packets (ms)")
    p.add_argument("--max-loss", type=float, default=0.001, help="loss still called lossless")
    p.add_argument("--give-up-loss", type=float, default=0.05, help="stop a ladder above this")
    p.add_argument("--reference-calls", type=int, default=250, help="load of the latency runs")
    p.add_argument("--relays", default=",".join(RELAYS), help="comma-separated subset")
    p.add_argument("--rtpengine-threads", type=int, default=1, help="rtpengine --num-threads")
    p.add_argument("--smoke", action="store_true", help="one short round (CI)")
    p.add_argument("--serve", choices=("natkit", "plain"), help=argparse.SUPPRESS)
    p.add_argument("--control", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port-min", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--port-max", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.rounds, args.calls, args.duration, args.warmup, args.drain_ms = 1, [20], 0.6, 0.3, 200
        args.reference_calls = 20
    if args.reference_calls not in args.calls and not args.serve:
        args.calls = sorted({*args.calls, args.reference_calls})
    if not (1 <= args.rounds <= 20 and 0 < args.duration <= 30 and 0.1 <= args.warmup <= 5):
        p.error("--rounds 1..20, --duration 0..30 s, --warmup 0.1..5 s")
    if not (0 <= args.drain_ms <= 5000 and 1 <= args.rtpengine_threads <= 16):
        p.error("--drain-ms 0..5000, --rtpengine-threads 1..16")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        sys.path.insert(0, str(SRC))
        serve_main(args)
        return
    try:
        emit(benchmark(args))
    except BenchError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
