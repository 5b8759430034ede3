"""The namespace lab: an internet, public hosts, NATs and hosts behind them.

Theory of operation
-------------------
A :class:`Lab` is a set of Linux network namespaces named
``natkit-<run id>-<role>``, joined by veth links and TUN devices, and
nothing else: no link reaches the root namespace and no namespace has a
route to anything outside the lab, so lab traffic cannot leave it.

Every router (the ``inet`` namespace, and each NAT) has a bridge ``lan``
holding its gateway address(es); what sits below it attaches there:

* a *host* gets a veth whose router end is a bridge port, one or more
  addresses on its ``eth0`` and a default route to the gateway;
* a *kernel NAT* (:class:`KernelNat`) is a router namespace with a veth
  ``wan`` on the upstream bridge (its public address as a /32, default route
  to the upstream gateway, so traffic between NATs always crosses the
  upstream router), ``ip_forward=1`` and an nftables ``masquerade`` rule;
* a *TUN NAT* (:class:`TunNat`) is a router namespace whose default route
  is the TUN device ``tin``; its forwarder (:mod:`natkit.net.netns.tun_nat`)
  also owns a TUN in the upstream namespace, where the NAT's public address
  (or, for a firewall, its whole inside network) is routed.

The ``inet`` namespace is the public internet: a router with the
documentation networks 203.0.113.0/24 (public hosts) and 198.51.100.0/24
(NAT outsides) on its bridge and no default route. NATs below a NAT form
tandems (a carrier-grade NAT with 100.64.0.0/10 inside, a home NAT behind
it). A NAT may take its public address from a *WAN network* of its own
choosing instead (``add_nat(..., wan_network="100.128.77.0/24")``): the
upstream router then holds that network's first address on its bridge too.
miniupnpd needs this, as it refuses to forward on a reserved (documentation,
private, shared) WAN address; the network still exists only on the lab's
veths, and nothing routes it anywhere else. Firewall presets (no
translation) get a slice of 192.0.2.0/24 as their inside network, since the
hosts behind them hold public addresses.

Teardown (:meth:`Lab.close`) always runs: on leaving the ``with`` block, on
exceptions, on SIGINT/SIGTERM/SIGHUP while the lab is open (turned into
exceptions so ``finally`` blocks run), at interpreter exit, and for anything
left behind by a killed process, ``natkit lab clean``. It stops the
processes the lab started (by PID), then every process still inside a lab
namespace, then deletes the namespaces.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from natkit.nat.box import NatBehavior
from natkit.nat.types import Filtering
from natkit.nat.types import Mapping as NatMapping
from natkit.net.netns.errors import LabError
from natkit.net.netns.system import (
    PREFIX,
    WORKDIR_PREFIX,
    check_available,
    create_namespace,
    delete_namespace,
    lab_namespaces,
    namespace_pids,
    netns_exec_argv,
    stop_pids,
    tool,
    write_sysctl,
)

__all__ = [
    "Host",
    "KernelNat",
    "Lab",
    "LabInterrupted",
    "Nat",
    "NatEngine",
    "TunNat",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

INET = "inet"
PUBLIC_HOSTS = ipaddress.IPv4Network("203.0.113.0/24")
NAT_OUTSIDES = ipaddress.IPv4Network("198.51.100.0/24")
FIREWALL_INSIDES = ipaddress.IPv4Network("192.0.2.0/24")
CGN_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
READY_TIMEOUT = 15.0
"""Seconds a TUN forwarder gets to open its devices (it imports natkit first)."""


class LabInterrupted(BaseException):
    """A termination signal arrived while a lab was open. It derives from
    :class:`BaseException`, like :class:`KeyboardInterrupt`, so that only
    ``finally`` blocks and context managers (the lab's teardown) see it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signal.Signals(signum).name}")
        self.signum = signum


@dataclass(frozen=True, slots=True)
class KernelNat:
    """The kernel's NAT: nftables ``masquerade`` on the router's ``wan``.

    ``random_fully`` adds ``fully-random`` (iptables' ``--random-fully``):
    every new flow gets a random source port.
    """

    random_fully: bool = False

    @property
    def label(self) -> str:
        return "kernel-random-fully" if self.random_fully else "kernel-masquerade"

    @property
    def translates(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class TunNat:
    """natkit's NAT box (a preset of :mod:`natkit.nat.presets`) on TUN devices,
    with optional one-way delays (seconds) added to packets leaving on each side.

    ``mapping``, ``filtering`` and ``hairpinning`` override the preset's, so any
    RFC 4787 combination exists with real packets (e.g. the nine RFC 5780
    mapping x filtering cases)."""

    preset: str
    delay_inside: float = 0.0
    delay_outside: float = 0.0
    seed: int = 0
    mapping: NatMapping | None = None
    filtering: Filtering | None = None
    hairpinning: bool | None = None

    def __post_init__(self) -> None:
        from natkit.nat.presets import preset

        preset(self.preset)  # ValueError listing the valid names
        if self.delay_inside < 0 or self.delay_outside < 0:
            raise ValueError("delays must not be negative")

    @property
    def behavior(self) -> NatBehavior:
        """The preset with this engine's overrides applied."""
        from natkit.nat.presets import preset

        changes: dict[str, object] = {}
        if self.mapping is not None:
            changes["mapping"] = self.mapping
        if self.filtering is not None:
            changes["filtering"] = self.filtering
        if self.hairpinning is not None:
            changes["hairpinning"] = self.hairpinning
        return dataclasses.replace(preset(self.preset), **changes)  # type: ignore[arg-type]

    def forwarder_args(self) -> list[str]:
        """The overrides as ``python -m natkit.net.netns.tun_nat`` options."""
        args = ["--preset", self.preset]
        if self.mapping is not None:
            args += ["--mapping", self.mapping.value]
        if self.filtering is not None:
            args += ["--filtering", self.filtering.value]
        if self.hairpinning is not None:
            args.append("--hairpinning" if self.hairpinning else "--no-hairpinning")
        return args

    @property
    def label(self) -> str:
        parts = [self.preset]
        if self.mapping is not None:
            parts.append(f"mapping={self.mapping.value}")
        if self.filtering is not None:
            parts.append(f"filtering={self.filtering.value}")
        if self.hairpinning is not None:
            parts.append("hairpinning" if self.hairpinning else "no-hairpinning")
        return " ".join(parts)

    @property
    def translates(self) -> bool:
        return self.behavior.translate


NatEngine = KernelNat | TunNat


@dataclass(frozen=True, slots=True)
class Host:
    """A lab host: a namespace with addresses and a default route."""

    name: str
    netns: str
    addresses: tuple[str, ...]
    gateway: str

    @property
    def address(self) -> str:
        return self.addresses[0]


@dataclass(frozen=True, slots=True)
class Nat:
    """A NAT (or firewall) router of the lab."""

    name: str
    netns: str
    engine: NatEngine
    public_ips: tuple[str, ...]
    """Addresses mappings are made on (empty for a firewall)."""
    inside_network: str
    gateway: str
    """The router's own address on its inside network."""
    upstream: str
    """The router this NAT hangs below (``inet`` or another NAT's name)."""
    pid: int | None = None
    """The TUN forwarder's PID (TUN NATs only)."""


@dataclass
class _Router:
    """A namespace with a ``lan`` bridge that hosts and NATs attach to."""

    name: str
    netns: str
    networks: list[ipaddress.IPv4Network]
    gateway: str
    wan_networks: list[ipaddress.IPv4Network] = field(default_factory=list)
    """Extra networks on the bridge that NATs below take addresses from."""
    next_port: int = 0
    next_tun: int = 0
    used: set[str] = field(default_factory=set)


class Lab:
    """A namespace lab; use it as a context manager (see the module docstring).

    ``run_id`` (default: 6 random hex digits) goes into every namespace name;
    ``workdir`` (default: a fresh directory under /tmp, removed on close)
    holds logs of the processes the lab starts.
    """

    def __init__(self, *, run_id: str | None = None, workdir: Path | None = None) -> None:
        self.run_id = run_id or secrets.token_hex(3)
        self.prefix = f"{PREFIX}{self.run_id}-"
        if not self.run_id.isalnum() or len(self.run_id) > 12:
            raise ValueError("run_id must be 1-12 letters or digits")
        self._own_workdir = workdir is None
        self._workdir = workdir
        self._namespaces: list[str] = []
        self._handles: dict[str, Any] = {}
        self._routers: dict[str, _Router] = {}
        self.hosts: dict[str, Host] = {}
        self.nats: dict[str, Nat] = {}
        self._procs: list[subprocess.Popen[Any]] = []
        self._logs: list[IO[bytes]] = []
        self._old_handlers: dict[int, Any] = {}
        self._opened = False
        self._closed = False
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()

    @property
    def workdir(self) -> Path:
        """Where the lab keeps logs (exists once the lab is open)."""
        if self._workdir is None:
            raise LabError("the lab has no work directory before it is opened")
        return self._workdir

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> Lab:
        """Check the machine, install signal handlers and build ``inet``."""
        if self._opened:
            return self
        check_available()
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{self.run_id}-"))
        self._opened = True
        self._install_signal_handlers()
        atexit.register(self.close)
        try:
            inet = self._new_namespace(INET, router=True)
            self._make_bridge(inet, [PUBLIC_HOSTS, NAT_OUTSIDES])
            write_sysctl(inet, "net.ipv4.ip_forward", 1)
            self._routers[INET] = _Router(
                INET, inet, [PUBLIC_HOSTS, NAT_OUTSIDES], str(PUBLIC_HOSTS[1])
            )
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Lab:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Tear everything down; safe to call more than once, never raises
        for a part that is already gone."""
        if os.getpid() != self._owner_pid:
            return  # a forked child never tears down its parent's lab
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._hold_signals()
        try:
            pids = [p.pid for p in self._procs if p.poll() is None]
            stop_pids(pids)
            for proc in self._procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
            for handle in self._handles.values():
                with contextlib.suppress(Exception):
                    handle.close()
            self._handles.clear()
            stray: list[int] = []
            for name in self._existing_namespaces():
                with contextlib.suppress(LabError):
                    stray.extend(namespace_pids(name))
            if stray:
                log.info("stopping %d more processes inside the lab", len(stray))
                stop_pids(stray)
            for name in reversed(self._existing_namespaces()):
                try:
                    delete_namespace(name)
                except LabError as exc:
                    log.warning("%s", exc)
        finally:
            for f in self._logs:
                with contextlib.suppress(OSError):
                    f.close()
            self._restore_signal_handlers()
            atexit.unregister(self.close)
            if self._own_workdir and self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)

    def _existing_namespaces(self) -> list[str]:
        present = set(lab_namespaces(self.prefix))
        ordered = [n for n in self._namespaces if n in present]
        return ordered + sorted(present - set(ordered))

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        owner = self._owner_pid

        def interrupted(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != owner:
                # A forked helper (pyroute2 forks to open netlink sockets in a
                # namespace) must die as usual, not unwind the lab's stack.
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            raise LabInterrupted(signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                self._old_handlers[sig] = signal.signal(sig, interrupted)
        # SIGINT already raises KeyboardInterrupt unless someone changed that.
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
            self._old_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, interrupted)

    def _hold_signals(self) -> None:
        """Teardown must finish: a second Ctrl-C must not cut it short."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(ValueError, OSError):
                old = signal.signal(sig, signal.SIG_IGN)
                self._old_handlers.setdefault(sig, old)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._old_handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, handler)
        self._old_handlers.clear()

    def _require_open(self) -> None:
        if not self._opened or self._closed:
            raise LabError("the lab is not open (use it as a context manager)")

    # -- namespaces and links ------------------------------------------------------------

    def netns_name(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def _new_namespace(self, role: str, *, router: bool = False) -> str:
        name = self.netns_name(role)
        if name in self._namespaces:
            raise LabError(f"the lab already has a {role!r}")
        create_namespace(name)
        self._namespaces.append(name)
        # Quiet, predictable namespaces: IPv4 only, no reverse-path filter.
        for key, value in (
            ("net.ipv6.conf.all.disable_ipv6", 1),
            ("net.ipv6.conf.default.disable_ipv6", 1),
            ("net.ipv4.conf.all.rp_filter", 0),
            ("net.ipv4.conf.default.rp_filter", 0),
        ):
            write_sysctl(name, key, value)
        if router:
            # Routers forward back out of the bridge they heard from; that
            # is the topology, not a misconfiguration to be redirected.
            write_sysctl(name, "net.ipv4.conf.all.send_redirects", 0)
            write_sysctl(name, "net.ipv4.conf.default.send_redirects", 0)
        ipr = self._ipr(name)
        ipr.link("set", index=self._index(name, "lo"), state="up")
        return name

    def _ipr(self, netns: str) -> Any:
        handle = self._handles.get(netns)
        if handle is None:
            from pyroute2 import IPRoute

            # flags=0: never create a namespace by accident; groups=0: no
            # event subscriptions piling up in the socket.
            handle = IPRoute(netns=netns, flags=0, groups=0)
            self._handles[netns] = handle
        return handle

    def _index(self, netns: str, ifname: str) -> int:
        found = self._ipr(netns).link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no interface {ifname} in {netns}")
        return int(found[0])

    def _make_bridge(self, netns: str, networks: Sequence[ipaddress.IPv4Network]) -> None:
        ipr = self._ipr(netns)
        ipr.link("add", ifname="lan", kind="bridge")
        index = self._index(netns, "lan")
        for net in networks:
            ipr.addr("add", index=index, address=str(net[1]), prefixlen=net.prefixlen)
        ipr.link("set", index=index, state="up")

    def _veth_to(self, router: _Router, child_ns: str, child_if: str) -> None:
        """A veth from ``router``'s bridge to ``child_if`` in ``child_ns``."""
        port = f"p{router.next_port}"
        router.next_port += 1
        ipr = self._ipr(router.netns)
        ipr.link(
            "add",
            ifname=port,
            kind="veth",
            peer={"ifname": child_if, "net_ns_fd": child_ns},
        )
        index = self._index(router.netns, port)
        ipr.link("set", index=index, master=self._index(router.netns, "lan"))
        ipr.link("set", index=index, state="up")

    def _allocate(self, router: _Router, network: ipaddress.IPv4Network, count: int) -> list[str]:
        """``count`` consecutive free addresses of ``network`` from .10 on
        (.2-.9 go to NATs, see :meth:`_allocate_nat_address`)."""
        hosts = list(network.hosts())
        start = 9 if network.num_addresses > 32 else 1
        for first in range(start, len(hosts) - count + 1):
            chunk = [str(h) for h in hosts[first : first + count]]
            if not any(a in router.used for a in chunk):
                router.used.update(chunk)
                return chunk
        raise LabError(f"no {count} free addresses left in {network} of {router.name}")

    def _router(self, name: str) -> _Router:
        try:
            return self._routers[name]
        except KeyError:
            have = ", ".join(self._routers)
            raise LabError(f"no router {name!r} in the lab (have: {have})") from None

    # -- building ------------------------------------------------------------------------

    def add_public_host(self, name: str, *, addresses: int = 1) -> Host:
        """A host on the lab internet with ``addresses`` consecutive addresses
        in 203.0.113.0/24 (a STUN server pair wants two)."""
        return self.add_host(name, behind=INET, addresses=addresses)

    def add_host(self, name: str, *, behind: str | Nat, addresses: int = 1) -> Host:
        """A host on the inside network of ``behind`` (a NAT, or ``"inet"``)."""
        self._require_open()
        if not 1 <= addresses <= 8:
            raise ValueError("a host has 1 to 8 addresses")
        router = self._router(behind.name if isinstance(behind, Nat) else behind)
        netns = self._new_namespace(name)
        network = router.networks[0]
        ips = self._allocate(router, network, addresses)
        self._veth_to(router, netns, "eth0")
        ipr = self._ipr(netns)
        index = self._index(netns, "eth0")
        for ip in ips:
            ipr.addr("add", index=index, address=ip, prefixlen=network.prefixlen)
        ipr.link("set", index=index, state="up")
        gateway = str(network[1])
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)
        host = Host(name, netns, tuple(ips), gateway)
        self.hosts[name] = host
        return host

    def add_nat(
        self,
        name: str,
        engine: NatEngine,
        *,
        behind: str | Nat = INET,
        inside_network: str | None = None,
        carrier_grade: bool = False,
        wan_network: str | None = None,
    ) -> Nat:
        """A NAT router below ``behind`` (``"inet"`` or another NAT: tandems).

        Its inside network defaults to 192.168.N.0/24, or 100.64.N.0/24 with
        ``carrier_grade``, or a /28 of 192.0.2.0/24 for a firewall preset
        (no translation: the hosts behind it hold public addresses). Its
        public address comes from the upstream's NAT-outside network
        (198.51.100.0/24 on ``inet``), or from ``wan_network`` (at most a /30,
        overlapping no other lab network), whose first address the upstream
        router then also holds on its bridge.
        """
        self._require_open()
        upstream = self._router(behind.name if isinstance(behind, Nat) else behind)
        if wan_network is not None and not engine.translates:
            raise ValueError("a firewall preset has no public address to take from wan_network")
        wan = self._wan_network(upstream, wan_network)
        if isinstance(engine, KernelNat):
            check_available(nft=True)
        else:
            check_available(tun=True)
        network = ipaddress.IPv4Network(inside_network or self._next_inside(engine, carrier_grade))
        netns = self._new_namespace(name, router=True)
        write_sysctl(netns, "net.ipv4.ip_forward", 1)
        self._make_bridge(netns, [network])
        router = _Router(name, netns, [network], str(network[1]))
        self._routers[name] = router
        public_ips: tuple[str, ...] = ()
        pid: int | None = None
        if engine.translates:
            public_ips = (self._allocate_nat_address(upstream, wan),)
        if isinstance(engine, KernelNat):
            self._setup_kernel_nat(netns, upstream, public_ips[0], str(wan[1]), engine)
        else:
            pid = self._setup_tun_nat(name, netns, upstream, network, public_ips, engine)
        nat = Nat(name, netns, engine, public_ips, str(network), router.gateway, upstream.name, pid)
        self.nats[name] = nat
        return nat

    def _next_inside(self, engine: NatEngine, carrier_grade: bool) -> str:
        taken = {n for r in self._routers.values() for n in [r.networks[0], *r.wan_networks]}
        candidates: Iterable[ipaddress.IPv4Network]
        if carrier_grade:
            candidates = (ipaddress.IPv4Network(f"100.64.{i}.0/24") for i in range(1, 255))
        elif not engine.translates:
            candidates = FIREWALL_INSIDES.subnets(new_prefix=28)
        else:
            candidates = (ipaddress.IPv4Network(f"192.168.{i}.0/24") for i in range(1, 255))
        for net in candidates:
            if net not in taken and not any(net.overlaps(t) for t in taken):
                return str(net)
        raise LabError("no inside network left")

    def _wan_network(self, upstream: _Router, wanted: str | None) -> ipaddress.IPv4Network:
        """The network a NAT below ``upstream`` takes its public address
        from: the upstream's last network, or ``wanted``, which is put on
        the upstream's bridge the first time it is asked for."""
        if wanted is None:
            return upstream.networks[-1]
        network = ipaddress.IPv4Network(wanted)
        if network.prefixlen > 30:
            raise ValueError(f"wan_network {network} is too small (at most a /30)")
        if network in upstream.wan_networks:
            return network
        for router in self._routers.values():
            for other in [*router.networks, *router.wan_networks]:
                if network.overlaps(other):
                    raise LabError(f"wan_network {network} overlaps {other} of {router.name}")
        ipr = self._ipr(upstream.netns)
        index = self._index(upstream.netns, "lan")
        ipr.addr("add", index=index, address=str(network[1]), prefixlen=network.prefixlen)
        upstream.wan_networks.append(network)
        return network

    def _allocate_nat_address(self, upstream: _Router, network: ipaddress.IPv4Network) -> str:
        """A NAT's public address in ``network`` (see :meth:`_wan_network`)
        from .2 on."""
        for host in list(network.hosts())[1:]:
            ip = str(host)
            if ip not in upstream.used:
                upstream.used.add(ip)
                return ip
        raise LabError(f"no address left in {network} of {upstream.name}")

    def _setup_kernel_nat(
        self, netns: str, upstream: _Router, public_ip: str, gateway: str, engine: KernelNat
    ) -> None:
        self._veth_to(upstream, netns, "wan")
        ipr = self._ipr(netns)
        wan = self._index(netns, "wan")
        ipr.addr("add", index=wan, address=public_ip, prefixlen=32)
        ipr.link("set", index=wan, state="up")
        # A /32 and an on-link gateway: everything crosses the upstream router.
        ipr.route("add", dst=f"{gateway}/32", oif=wan, scope=253)
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway, oif=wan)
        from natkit.net.netns.kernel_nat import masquerade_ruleset

        self.run_in(netns, [tool("nft") or "nft", "-f", "-"], input=masquerade_ruleset(engine))

    def _setup_tun_nat(
        self,
        name: str,
        netns: str,
        upstream: _Router,
        network: ipaddress.IPv4Network,
        public_ips: tuple[str, ...],
        engine: TunNat,
    ) -> int:
        outside_dev = f"tn{upstream.next_tun}"
        upstream.next_tun += 1
        argv = [
            sys.executable,
            "-m",
            "natkit.net.netns.tun_nat",
            *engine.forwarder_args(),
            "--name",
            name,
            "--inside-network",
            str(network),
            "--inside-dev",
            "tin",
            "--outside-netns",
            upstream.netns,
            "--outside-dev",
            outside_dev,
            "--delay-inside",
            repr(engine.delay_inside),
            "--delay-outside",
            repr(engine.delay_outside),
            "--seed",
            str(engine.seed),
            "--stats-file",
            str(self.workdir / f"{name}.stats.json"),
        ]
        for ip in public_ips:
            argv += ["--public-ip", ip]
        proc = self._popen(netns, argv, log_name=f"{name}.tun_nat", stdout=subprocess.PIPE)
        self._wait_ready(proc, name)
        ipr = self._ipr(netns)
        tin = self._index(netns, "tin")
        ipr.link("set", index=tin, state="up")
        ipr.route("add", dst="0.0.0.0/0", oif=tin)
        up = self._ipr(upstream.netns)
        tout = self._index(upstream.netns, outside_dev)
        up.link("set", index=tout, state="up")
        for dst in [f"{ip}/32" for ip in public_ips] or [str(network)]:
            up.route("add", dst=dst, oif=tout)
        return proc.pid

    def _wait_ready(self, proc: subprocess.Popen[bytes], name: str) -> None:
        """Bounded wait for the forwarder's ``ready`` line."""
        if proc.stdout is None:
            raise LabError(f"the TUN NAT {name} has no stdout pipe")
        fd = proc.stdout.fileno()
        line = b""
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], READY_TIMEOUT)
            if not ready:
                raise LabError(f"the TUN NAT {name} did not start within {READY_TIMEOUT} s")
            chunk = os.read(fd, 256)
            if not chunk:
                proc.wait(timeout=READY_TIMEOUT)
                raise LabError(
                    f"the TUN NAT {name} exited with {proc.returncode}: {self.log_text(name)}"
                )
            line += chunk
        proc.stdout.close()
        if not line.startswith(b"ready"):
            raise LabError(f"the TUN NAT {name} said {line!r}")

    # -- running programs ----------------------------------------------------------------

    def _netns_of(self, where: str | Host | Nat) -> str:
        if isinstance(where, Host | Nat):
            return where.netns
        if where in self.hosts:
            return self.hosts[where].netns
        if where in self.nats:
            return self.nats[where].netns
        if where == INET:
            return self._routers[INET].netns
        if where.startswith(self.prefix):
            return where
        known = [*self.hosts, *self.nats, INET]
        raise LabError(f"no host {where!r} in the lab (have: {', '.join(known)})")

    def _popen(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        log_name: str | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        self._require_open()
        if log_name is not None:
            log_file = (self.workdir / f"{log_name}.log").open("wb")
            self._logs.append(log_file)
            kwargs.setdefault("stderr", log_file)
            kwargs.setdefault("stdout", log_file)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        try:
            proc: subprocess.Popen[Any] = subprocess.Popen(netns_exec_argv(netns, argv), **kwargs)
        except OSError as exc:
            raise LabError(f"cannot start {argv[0]} in {netns}: {exc}") from exc
        self._procs.append(proc)
        return proc

    def log_text(self, log_name: str) -> str:
        """The output of a process started with ``log_name`` (see :meth:`exec`)."""
        for suffix in (".log", ".tun_nat.log"):
            path = self.workdir / f"{log_name}{suffix}"
            if path.exists():
                for f in self._logs:
                    with contextlib.suppress(OSError, ValueError):
                        f.flush()
                return path.read_text(errors="replace")
        return ""

    def exec(
        self,
        where: str | Host | Nat,
        argv: Sequence[str],
        *,
        log_name: str | None = None,
        env: Mapping[str, str] | None = None,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` on a lab host (or NAT router, or ``"inet"``) with
        ``ip netns exec``; the lab keeps the process and stops it by PID on
        close. ``log_name`` sends stdout and stderr to ``workdir/NAME.log``;
        other keyword arguments go to :class:`subprocess.Popen` (stdin
        defaults to ``/dev/null``)."""
        if env is not None:
            popen_kwargs["env"] = {**os.environ, **env}
        return self._popen(self._netns_of(where), argv, log_name=log_name, **popen_kwargs)

    def run(
        self,
        where: str | Host | Nat,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on a lab host to completion (text output captured);
        killed by PID if it overruns ``timeout``."""
        return self.run_in(self._netns_of(where), argv, timeout=timeout, input=input, check=check)

    def run_in(
        self,
        netns: str,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        proc = self._popen(
            netns,
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.communicate()
            raise LabError(f"{' '.join(argv)} in {netns} ran over {timeout} s") from exc
        finally:
            with contextlib.suppress(ValueError):
                self._procs.remove(proc)
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and result.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} in {netns} exited with {result.returncode}: {err.strip()}"
            )
        return result

    def stop(self, proc: subprocess.Popen[Any]) -> int | None:
        """Stop a process started with :meth:`exec` (SIGTERM, then SIGKILL)."""
        stop_pids([proc.pid] if proc.poll() is None else [])
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        return proc.returncode

    def namespaces(self) -> list[str]:
        """The lab's namespaces that exist now."""
        return self._existing_namespaces()

    def describe(self) -> Iterator[str]:
        """One line per namespace: what it is and its addresses."""
        for host in self.hosts.values():
            yield f"host {host.name:<10} {', '.join(host.addresses):<32} ({host.netns})"
        for nat in self.nats.values():
            public = ", ".join(nat.public_ips) or "(no translation)"
            yield (
                f"nat  {nat.name:<10} {nat.engine.label}: {public} -> {nat.inside_network}"
                f" below {nat.upstream} ({nat.netns})"
            )
