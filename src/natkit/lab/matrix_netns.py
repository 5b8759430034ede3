"""The traversal matrix with real packets (``--mode netns``, root): the ECC
report's 4x4 NAT grid (Annex A types as natkit's TUN NAT presets), each
ordered pair as a real call between two natkit user agents (RFC 6314
§5.2.2.3: ICE with natkit's STUN and TURN servers, signalling through
natkit's SIP server, two-way audio proven by the tones in both recordings),
in network namespaces (:meth:`natkit.lab.ice_netns.IceNamespaceLab.call`).

One lab serves the 16 calls: eight TUN NATs (the four presets on either
side, one host behind each), the STUN, TURN and SIP servers, built once;
each call gets fresh user agents, hence fresh sockets and NAT mappings.

Every packet of a call is recorded as it enters the lab internet's router
(:class:`InternetCapture`: an ``AF_PACKET`` socket in the ``inet``
namespace), so each packet that crosses the internet is seen once, with
the public (translated) addresses; the report writes it to the call's pcap
and draws the ladder from it.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from natkit.errors import MalformedMessageError
from natkit.lab.ice_netns import ECC_TYPES, CallOutcome, IceNamespaceLab, expected_netns_path
from natkit.lab.matrix import Scenario as _Scenario
from natkit.lab.matrix import ScenarioResult, Sent
from natkit.lab.matrix import select as select_scenarios
from natkit.lab.report import WireCapture
from natkit.net.netns import Lab, TunNat
from natkit.net.netns.system import in_namespace
from natkit.packet import decode_ipv4

__all__ = [
    "CLAIM",
    "GROUP",
    "InternetCapture",
    "chosen_pairs",
    "netns_names",
    "run_netns_grid",
]

CLAIM = (
    "RFC 6314 §5.2.2.3 with real packets: a call with ICE on both sides has two-way "
    "audio for every ECC pair, relayed only for symmetric-symmetric and "
    "symmetric-port-restricted"
)
GROUP = "call-netns"
CALL_SECONDS = 2.0
"""Seconds of tone each call plays; each recording must hold the far tone
for half of it."""

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4


def netns_names() -> list[str]:
    return [f"{GROUP}/{a}+{b}" for a in ECC_TYPES for b in ECC_TYPES]


@dataclass(frozen=True, slots=True)
class Captured:
    """One IP datagram as it entered the internet router (epoch seconds)."""

    time: float
    interface: str
    data: bytes


class InternetCapture:
    """Every IP packet entering the lab internet's router: from a public host
    (over its bridge ``lan``) or from a NAT (over the NAT's TUN device
    ``tnN``). Outgoing copies and the bridge ports are skipped, so a packet
    crossing the internet is recorded once. :meth:`take` hands over what
    arrived since the last call."""

    def __init__(self, netns: str, *, limit: int = 200_000) -> None:
        self.netns = netns
        self.limit = limit
        self._packets: list[Captured] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> InternetCapture:
        def open_socket() -> socket.socket:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            return sock

        self._sock = in_namespace(self.netns, open_socket)
        self._thread = threading.Thread(target=self._read, name="inet-capture", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([sock], [], [], 0.1)
            if not ready:
                continue
            try:
                data, address = sock.recvfrom(65535)
            except OSError:
                return
            interface, proto, pkttype = address[0], address[1], address[2]
            if pkttype == PACKET_OUTGOING or proto not in (ETH_P_IP, ETH_P_IPV6):
                continue
            if interface != "lan" and not interface.startswith("tn"):
                continue
            with self._lock:
                if len(self._packets) < self.limit:
                    self._packets.append(Captured(time.time(), interface, data))

    def take(self) -> list[Captured]:
        """What arrived since the last :meth:`take` (after a short drain)."""
        time.sleep(0.05)
        with self._lock:
            packets, self._packets = self._packets, []
        return packets

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> InternetCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def address_names(lab: Lab, chosen: dict[str, str]) -> dict[str, str]:
    """Ladder column names for the lab's public addresses: servers by host
    name, NATs as ``nat-a (full-cone)``; ``chosen`` maps NAT names to that label."""
    names = {h.address: name for name, h in lab.hosts.items() if h.address.startswith("203.")}
    for name, nat in lab.nats.items():
        for ip in nat.public_ips:
            names[ip] = chosen.get(name, name)
    return names


def wire_capture(packets: list[Captured], names: dict[str, str]) -> WireCapture:
    """The report's capture of one call: every datagram for the pcap, the
    decodable IPv4 ones for the ladder (times from the first packet on)."""
    capture = WireCapture(names=names)
    start = packets[0].time if packets else 0.0
    for item in packets:
        capture.raw.append((item.time, item.data))
        with contextlib.suppress(MalformedMessageError, ValueError):
            packet = decode_ipv4(item.data, verify=False)
            origin = names.get(packet.src.host, packet.src.host)
            capture.sent.append(Sent(item.time - start, origin, packet, 0))
    return capture


def chosen_pairs(only: str | None = None) -> list[tuple[str, tuple[str, str]]]:
    """The scenarios ``--only`` picks (all 16 without it), with their NAT
    presets, in grid order (rows: the caller's NAT)."""
    names = dict(zip(netns_names(), ((a, b) for a in ECC_TYPES for b in ECC_TYPES), strict=True))
    stand_ins = [_Scenario(n, GROUP, CLAIM, "", lambda _s: "") for n in names]
    wanted = {s.name for s in select_scenarios(stand_ins, only)}
    return [(n, ab) for n, ab in names.items() if n in wanted]


def run_netns_grid(
    *,
    seed: int = 0,
    only: str | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
    seconds: float = CALL_SECONDS,
    run_id: str | None = None,
    calls: dict[str, CallOutcome] | None = None,
) -> list[ScenarioResult]:
    """Every ordered pair of the grid (or those matching ``only``) as a call,
    in one lab (named ``run_id`` when given); each result carries the
    call's packets, and ``calls`` (when given) gets each call's details
    by scenario name."""
    chosen = chosen_pairs(only)
    results: list[ScenarioResult] = []
    if not chosen:
        return results
    engines_a = {a: TunNat(a) for _, (a, _b) in chosen}
    engines_b = {b: TunNat(b) for _, (_a, b) in chosen}
    with (
        Lab(run_id=run_id) as lab,
        IceNamespaceLab(
            lab, list(engines_a.values()), list(engines_b.values()), seed=seed
        ) as ice_lab,
    ):
        ice_lab.open_sip()
        labels = {}
        for nat in lab.nats.values():
            side = "a" if nat.name.startswith("na") else "b"
            labels[nat.name] = f"nat-{side} ({nat.engine.label})"
        column = address_names(lab, labels)
        with InternetCapture(lab.netns_name("inet")) as capture:
            for name, (preset_a, preset_b) in chosen:
                a, b = engines_a[preset_a], engines_b[preset_b]
                capture.take()  # whatever the previous call left in flight
                started = time.perf_counter()
                try:
                    outcome = ice_lab.call(a, b, seconds=seconds)
                    observed = outcome.observed
                    if calls is not None:
                        calls[name] = outcome
                except Exception as exc:  # a row that says so, as run_scenario does
                    observed = f"error: {type(exc).__name__}: {exc}"
                packets = capture.take()
                result = ScenarioResult(
                    name,
                    GROUP,
                    CLAIM,
                    expected_netns_path(a, b),
                    observed,
                    time.perf_counter() - started,
                    wire_capture(packets, column),
                )
                results.append(result)
                if on_result is not None:
                    on_result(result)
    return results
