"""natkit's NAT box on TUN devices: real packets through the sans-IO NAT core.

Theory of operation
-------------------
The forwarder is one process inside a lab router namespace. It owns two TUN
devices (``IFF_TUN | IFF_NO_PI``: each read or write is one bare IPv4
datagram): the *inside* one lives in the router namespace, whose kernel
routes everything from the LAN into it; the *outside* one lives in the
upstream namespace (the lab internet, or the carrier-grade NAT in front),
whose kernel routes the NAT's public address(es) into it. No ARP, no policy
routing: each TUN is the NAT's link to one side.

Packets read from a TUN are decoded with :func:`natkit.packet.decode_ipv4`
and fed to a :class:`~natkit.nat.box.NatBox` with the side they came from;
whatever the box queues is encoded with :func:`natkit.packet.encode_ipv4` and
written to the TUN of its side, after an optional one-way delay per side (the
lab's kernel has no netem, so this is how lab links get latency). The box's
timer (mapping expiry, held SYNs) is one ``loop.call_at``. Nothing else
decides anything: the protocol logic is the same core the simulator runs.

Run it as ``python -m natkit.net.netns.tun_nat`` (the lab does, through
``ip netns exec``); it prints ``ready`` on stdout once both devices are open
and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import struct
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from natkit.errors import MalformedMessageError
from natkit.ipfrag import Ipv4Reassembler, fragment_ipv4, is_ipv4_fragment
from natkit.nat.box import NatBox
from natkit.nat.events import PacketDropped, Side
from natkit.nat.presets import preset
from natkit.nat.types import Filtering, Mapping
from natkit.packet import decode_ipv4, encode_ipv4
from natkit.rng import seeded_rng

__all__ = ["ForwarderStats", "TunForwarder", "main", "open_tun"]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
LINK_MTU = 1500
"""The lab's links (TUN and veth defaults): larger datagrams leave in fragments."""
READ_BATCH = 256
"""Datagrams read per readiness callback before the box's output is flushed."""


def open_tun(name: str) -> int:
    """Create (or attach to) TUN device ``name`` in the calling thread's
    network namespace; returns a non-blocking fd (closing it removes a
    device that was not made persistent)."""
    if not 0 < len(name.encode()) < 16:
        raise ValueError(f"interface name {name!r} must have 1-15 bytes")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except BaseException:
        os.close(fd)
        raise
    return fd


@dataclass
class ForwarderStats:
    """Counters of one forwarder run (written as JSON on exit)."""

    read_inside: int = 0
    read_outside: int = 0
    written_inside: int = 0
    written_outside: int = 0
    undecodable: int = 0
    reassembled: int = 0  # datagrams put back together from fragments
    fragmented: int = 0  # datagrams that left in fragments
    dropped_by_nat: int = 0
    write_errors: int = 0


class TunForwarder:
    """Moves datagrams between two TUN fds through a :class:`NatBox`.

    ``delay_inside``/``delay_outside`` are added one-way to packets leaving
    on that side; order within a side is kept. Fragments are reassembled
    before the box sees them and a datagram larger than ``mtu`` leaves in
    fragments, as Linux's conntrack NAT does (:mod:`natkit.ipfrag`): only
    the first fragment has the ports a NAT translates.
    """

    def __init__(
        self,
        box: NatBox,
        inside_fd: int,
        outside_fd: int,
        *,
        delay_inside: float = 0.0,
        delay_outside: float = 0.0,
        mtu: int = LINK_MTU,
    ) -> None:
        if delay_inside < 0 or delay_outside < 0:
            raise ValueError("delays must not be negative")
        self.box = box
        self.mtu = mtu
        self._reassembler = Ipv4Reassembler()
        self.stats = ForwarderStats()
        self._fds = {Side.INSIDE: inside_fd, Side.OUTSIDE: outside_fd}
        self._delay = {Side.INSIDE: delay_inside, Side.OUTSIDE: delay_outside}
        self._queues: dict[Side, deque[tuple[float, bytes]]] = {
            Side.INSIDE: deque(),
            Side.OUTSIDE: deque(),
        }
        self._drains: dict[Side, asyncio.TimerHandle | None] = {
            Side.INSIDE: None,
            Side.OUTSIDE: None,
        }
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._ident = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Begin reading both devices on the running loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        for side, fd in self._fds.items():
            loop.add_reader(fd, self._readable, side)

    def close(self) -> None:
        """Stop reading; pending delayed packets are dropped."""
        loop = self._loop
        if loop is None:
            return
        for fd in self._fds.values():
            loop.remove_reader(fd)
        for handle in (*self._drains.values(), self._timer):
            if handle is not None:
                handle.cancel()
        self._loop = None

    # -- the packet path ---------------------------------------------------------------

    def _readable(self, side: Side) -> None:
        loop = self._loop
        if loop is None:
            return
        fd = self._fds[side]
        box = self.box
        now = loop.time()
        count = 0
        for _ in range(READ_BATCH):
            try:
                data = os.read(fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            try:
                if is_ipv4_fragment(data):
                    whole = self._reassembler.add(data, now=now)
                    if whole is None:
                        continue
                    data = whole
                    self.stats.reassembled += 1
                packet = decode_ipv4(data)
            except MalformedMessageError:
                self.stats.undecodable += 1
                continue
            box.receive_packet(packet, side=side, now=now)
        if side is Side.INSIDE:
            self.stats.read_inside += count
        else:
            self.stats.read_outside += count
        self._flush(now)

    def _flush(self, now: float) -> None:
        for side, packet in self.box.packets_to_send(now=now):
            self._ident = (self._ident + 1) & 0xFFFF
            fits = packet.size <= self.mtu
            data = encode_ipv4(packet, ident=self._ident, dont_fragment=fits)
            pieces = [data] if fits else fragment_ipv4(data, self.mtu)
            if not fits:
                self.stats.fragmented += 1
            delay = self._delay[side]
            for piece in pieces:
                if delay > 0:
                    queue = self._queues[side]
                    queue.append((now + delay, piece))
                    if self._drains[side] is None and self._loop is not None:
                        self._drains[side] = self._loop.call_at(now + delay, self._drain, side)
                else:
                    self._write(side, piece)
        while (event := self.box.next_event()) is not None:
            if isinstance(event, PacketDropped):
                self.stats.dropped_by_nat += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s", event)
        self._arm_timer()

    def _write(self, side: Side, data: bytes) -> None:
        try:
            os.write(self._fds[side], data)
        except OSError:
            # A TUN write fails only when the kernel cannot take the packet
            # (device down, no buffer): that is a lost datagram, as on a wire.
            self.stats.write_errors += 1
            return
        if side is Side.INSIDE:
            self.stats.written_inside += 1
        else:
            self.stats.written_outside += 1

    def _drain(self, side: Side) -> None:
        loop = self._loop
        self._drains[side] = None
        if loop is None:
            return
        queue = self._queues[side]
        now = loop.time()
        while queue and queue[0][0] <= now:
            self._write(side, queue.popleft()[1])
        if queue:
            self._drains[side] = loop.call_at(queue[0][0], self._drain, side)

    def _arm_timer(self) -> None:
        loop = self._loop
        deadline = self.box.get_timer()
        if deadline == self._timer_at or loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        loop = self._loop
        self._timer = None
        self._timer_at = None
        if loop is None:
            return
        now = loop.time()
        self.box.handle_timer(now=now)
        self._flush(now)


# -- the process -----------------------------------------------------------------------


def _open_outside(netns: str | None, name: str) -> int:
    if netns is None:
        return open_tun(name)
    from natkit.net.netns.system import in_namespace

    return in_namespace(netns, lambda: open_tun(name))


async def _serve(args: argparse.Namespace) -> ForwarderStats:
    behavior = preset(args.preset)
    changes: dict[str, object] = {}
    if args.mapping is not None:
        changes["mapping"] = Mapping(args.mapping)
    if args.filtering is not None:
        changes["filtering"] = Filtering(args.filtering)
    if args.hairpinning is not None:
        changes["hairpinning"] = args.hairpinning
    behavior = dataclasses.replace(behavior, **changes)  # type: ignore[arg-type]
    box = NatBox(
        behavior,
        args.public_ip or [],
        inside_networks=args.inside_network,
        rng=seeded_rng(args.seed),
        name=args.name,
        trace=False,
    )
    inside_fd = open_tun(args.inside_dev)
    outside_fd = -1
    try:
        outside_fd = _open_outside(args.outside_netns, args.outside_dev)
        forwarder = TunForwarder(
            box,
            inside_fd,
            outside_fd,
            delay_inside=args.delay_inside,
            delay_outside=args.delay_outside,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        forwarder.start()
        sys.stdout.write(f"ready {os.getpid()}\n")
        sys.stdout.flush()
        # Nobody reads stdout after the handshake: never block on a full pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        try:
            await stop.wait()
        finally:
            forwarder.close()
        return forwarder.stats
    finally:
        os.close(inside_fd)
        if outside_fd >= 0:
            os.close(outside_fd)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m natkit.net.netns.tun_nat",
        description="natkit's NAT box between two TUN devices (run inside a lab namespace).",
    )
    p.add_argument("--preset", required=True, help="NAT preset (natkit.nat.presets)")
    p.add_argument("--mapping", choices=[m.value for m in Mapping], help="override the preset's")
    p.add_argument(
        "--filtering", choices=[f.value for f in Filtering], help="override the preset's"
    )
    p.add_argument(
        "--hairpinning",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="override the preset's hairpinning",
    )
    p.add_argument("--name", default="nat")
    p.add_argument("--public-ip", action="append", help="public address (repeatable)")
    p.add_argument(
        "--inside-network", action="append", required=True, help="inside CIDR (repeatable)"
    )
    p.add_argument("--inside-dev", default="tin", help="inside TUN (this namespace)")
    p.add_argument("--outside-dev", default="tout", help="outside TUN name")
    p.add_argument("--outside-netns", help="namespace of the outside TUN (default: this one)")
    p.add_argument("--delay-inside", type=float, default=0.0, help="one-way s, to the inside")
    p.add_argument("--delay-outside", type=float, default=0.0, help="one-way s, to the outside")
    p.add_argument("--seed", type=int, default=0, help="seed of the box's port choices")
    p.add_argument("--stats-file", type=Path, help="write counters as JSON here on exit")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(levelname)s tun_nat: %(message)s",
    )
    from natkit.net.loop import run

    try:
        stats = run(_serve(args))
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"tun_nat: {exc}\n")
        return 1
    if args.stats_file is not None:
        with contextlib.suppress(OSError):
            args.stats_file.write_text(json.dumps(asdict(stats)) + "\n")
    log.info("stopped: %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
