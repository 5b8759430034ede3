"""The ready-made lab behind ``natkit lab``: a STUN server pair, a NAT, a host.

:func:`build_nat_lab` lays out, in an open :class:`~natkit.net.netns.Lab`:

* ``stun``: a public host with 203.0.113.10 and 203.0.113.11;
* ``nat``: the NAT under test (kernel or TUN, see :func:`parse_nat`), with
  ``cgn`` (a carrier-grade NAT) in front of it on request;
* ``client``: a host behind it.

:func:`start_stun_server` runs natkit's own STUN server there as a
subprocess (RFC 5780 + RFC 3489: 203.0.113.10:3478, alternate
203.0.113.11:3479) and waits, by polling with bounded Binding requests from
the lab internet, until all four of its sockets answer.
:func:`run_natcheck` runs ``natkit natcheck --json`` on the client and
:func:`run_stun_client` Debian's ``stun`` client; :func:`expected_for`
says what a correct detector reports behind each NAT.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError
from natkit.nat.presets import PRESETS, classic_nat_type
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.net.netns.errors import LabError, LabUnavailable
from natkit.net.netns.system import socket_in_namespace, tool
from natkit.net.netns.topology import Host, KernelNat, Lab, Nat, NatEngine, TunNat
from natkit.stun.constants import MessageClass, Method
from natkit.stun.message import StunMessage, parse_message, serialize_message

__all__ = [
    "KERNEL_NATS",
    "NatDiscoveryReport",
    "NAT_CHOICES",
    "Expectation",
    "NatLab",
    "StunClientReport",
    "Comparison",
    "build_nat_lab",
    "compare",
    "expected_for",
    "natkit_argv",
    "parse_nat",
    "run_natcheck",
    "run_natdiscovery",
    "run_stun_client",
    "start_stun_server",
    "wait_for_stun",
]

STUN_PORT = 3478
ALTERNATE_PORT = 3479
KERNEL_NATS = {
    "kernel-masquerade": KernelNat(),
    "kernel-random-fully": KernelNat(random_fully=True),
}
NAT_CHOICES: tuple[str, ...] = (*KERNEL_NATS, *PRESETS)
"""What ``--nat`` accepts: the two kernel NATs, then every natkit preset (TUN NAT)."""

READY_TRIES = 200
READY_TRY_TIMEOUT = 0.05
"""Readiness polling: at most 200 rounds of Binding requests, each waiting up
to 50 ms for answers, so a server that never answers fails within ~10 s."""


def parse_nat(
    name: str, *, delay_inside: float = 0.0, delay_outside: float = 0.0, seed: int = 0
) -> NatEngine:
    """``kernel-masquerade`` / ``kernel-random-fully`` are the kernel's NAT;
    every other name is a preset of natkit's NAT box on TUN devices."""
    if name in KERNEL_NATS:
        if delay_inside or delay_outside:
            raise ValueError("delays need natkit's TUN NAT (the kernel here has no netem)")
        return KERNEL_NATS[name]
    if name not in PRESETS:
        raise ValueError(f"unknown NAT {name!r}; choose one of: {', '.join(NAT_CHOICES)}")
    return TunNat(name, delay_inside=delay_inside, delay_outside=delay_outside, seed=seed)


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a correct detector reports behind a NAT."""

    classic: NatType
    mapping: Mapping | None
    filtering: Filtering | None
    stun_client: str
    """The type in the words of Debian's ``stun`` client."""

    def to_json(self) -> dict[str, Any]:
        return {
            "classic": self.classic.value,
            "mapping": self.mapping.value if self.mapping else None,
            "filtering": self.filtering.value if self.filtering else None,
            "stun_client": self.stun_client,
        }


_STUN_CLIENT_WORDS = {
    NatType.OPEN_INTERNET: "Open",
    NatType.FULL_CONE: "Independent Mapping, Independent Filter",
    NatType.RESTRICTED_CONE: "Independent Mapping, Address Dependent Filter",
    NatType.PORT_RESTRICTED_CONE: "Independent Mapping, Port Dependent Filter",
    NatType.SYMMETRIC: "Dependent Mapping",
    NatType.SYMMETRIC_UDP_FIREWALL: "Firewall",
    NatType.UDP_BLOCKED: "Blocked or could not reach STUN server",
}


def expected_for(engine: NatEngine) -> Expectation:
    """The emulated type: the kernel's NATs as measured (PEERS.md, docs/lab.md),
    natkit's presets from their behaviour (:func:`classic_nat_type`)."""
    if isinstance(engine, KernelNat):
        apdf = Filtering.ADDRESS_AND_PORT_DEPENDENT
        if engine.random_fully:
            words = _STUN_CLIENT_WORDS[NatType.SYMMETRIC]
            return Expectation(NatType.SYMMETRIC, Mapping.ADDRESS_AND_PORT_DEPENDENT, apdf, words)
        # A port-restricted cone; docs/lab.md explains why a one-socket
        # classic test would call it symmetric (natcheck uses two).
        words = _STUN_CLIENT_WORDS[NatType.PORT_RESTRICTED_CONE]
        return Expectation(NatType.PORT_RESTRICTED_CONE, Mapping.ENDPOINT_INDEPENDENT, apdf, words)
    behavior = engine.behavior
    classic = classic_nat_type(behavior)
    found_mapping: Mapping | None
    if classic is NatType.UDP_BLOCKED:
        found_mapping, filtering = None, None
    elif not behavior.translate:
        # No NAT: the mapped address is the local one (RFC 5780 §4.3).
        found_mapping = Mapping.ENDPOINT_INDEPENDENT
        filtering = behavior.filtering or Filtering.ENDPOINT_INDEPENDENT
    else:
        found_mapping, filtering = behavior.mapping, behavior.filtering
    return Expectation(classic, found_mapping, filtering, _STUN_CLIENT_WORDS[classic])


@dataclass(frozen=True, slots=True)
class NatLab:
    """The hosts of :func:`build_nat_lab`."""

    lab: Lab
    stun: Host
    nat: Nat
    client: Host
    cgn: Nat | None = None

    @property
    def primary(self) -> Endpoint:
        return Endpoint(self.stun.addresses[0], STUN_PORT)

    @property
    def alternate(self) -> Endpoint:
        return Endpoint(self.stun.addresses[1], ALTERNATE_PORT)


def build_nat_lab(
    lab: Lab,
    engine: NatEngine,
    *,
    cgn: NatEngine | None = None,
    name: str = "nat",
    client: str = "client",
    stun: str = "stun",
) -> NatLab:
    """Add the STUN host (if missing), the NAT (behind ``cgn`` when given)
    and a client host behind it to ``lab``."""
    stun_host = lab.hosts.get(stun) or lab.add_public_host(stun, addresses=2)
    cgn_nat: Nat | None = None
    if cgn is not None:
        cgn_nat = lab.add_nat(f"{name}-cgn", cgn, carrier_grade=True)
    nat = lab.add_nat(name, engine, behind=cgn_nat.name if cgn_nat else "inet")
    client_host = lab.add_host(client, behind=nat)
    return NatLab(lab, stun_host, nat, client_host, cgn_nat)


def natkit_argv(*args: str) -> list[str]:
    """``natkit ARGS...`` with this interpreter (works in a virtualenv)."""
    return [sys.executable, "-m", "natkit.cli.main", *args]


def start_stun_server(nat_lab: NatLab) -> subprocess.Popen[Any]:
    """natkit's STUN server (RFC 5780, with the alternate) on the ``stun``
    host; returns once every socket answers."""
    lab = nat_lab.lab
    p, a = nat_lab.primary, nat_lab.alternate
    log_name = f"stun-server-{nat_lab.stun.name}"
    proc = lab.exec(
        nat_lab.stun,
        natkit_argv("stun-server", "--listen", str(p), "--alternate", str(a), "--no-tcp"),
        log_name=log_name,
    )
    endpoints = [p, Endpoint(p.host, a.port), Endpoint(a.host, p.port), a]
    wait_for_stun(lab, lab.netns_name("inet"), endpoints, proc=proc, log_name=log_name)
    return proc


def wait_for_stun(
    lab: Lab,
    netns: str,
    endpoints: Sequence[Endpoint],
    *,
    proc: subprocess.Popen[Any] | None = None,
    log_name: str = "",
) -> None:
    """Send Binding requests from ``netns`` until each endpoint answered once
    (bounded: :data:`READY_TRIES` rounds of :data:`READY_TRY_TIMEOUT`)."""
    answered: set[Endpoint] = set()
    with socket_in_namespace(netns) as sock:
        sock.settimeout(READY_TRY_TIMEOUT)
        for attempt in range(READY_TRIES):
            pending = [ep for ep in endpoints if ep not in answered]
            if not pending:
                return
            if proc is not None and proc.poll() is not None:
                raise LabError(
                    f"the STUN server exited with {proc.returncode}: {lab.log_text(log_name)}"
                )
            expected: dict[bytes, Endpoint] = {}
            for index, ep in enumerate(pending):
                tid = struct.pack("!4sII", b"nkrd", attempt, index)
                expected[tid] = ep
                request = serialize_message(StunMessage.request(Method.BINDING, tid))
                sock.sendto(request, (ep.host, ep.port))
            for _ in range(2 * len(pending)):
                try:
                    data = sock.recv(2048)
                except (TimeoutError, ConnectionRefusedError):
                    break
                try:
                    msg = parse_message(data)
                except MalformedMessageError:
                    continue
                answerer = expected.get(msg.transaction_id)
                if answerer is not None and msg.message_class == MessageClass.SUCCESS:
                    answered.add(answerer)
    missing = [str(ep) for ep in endpoints if ep not in answered]
    if missing:
        raise LabError(f"no STUN answer from {', '.join(missing)} after {READY_TRIES} tries")


def run_natcheck(nat_lab: NatLab, *, timeout: float = 30.0) -> dict[str, Any]:
    """``natkit natcheck --json`` on the client against the lab's STUN server."""
    result = nat_lab.lab.run(
        nat_lab.client, natkit_argv("natcheck", "--json", str(nat_lab.primary)), timeout=timeout
    )
    if result.returncode != 0:
        raise LabError(f"natcheck failed ({result.returncode}): {result.stderr.strip()}")
    try:
        answer: dict[str, Any] = json.loads(result.stdout)
    except ValueError as exc:
        raise LabError(f"natcheck printed no JSON: {result.stdout[:200]!r}") from exc
    return answer


@dataclass(frozen=True, slots=True)
class StunClientReport:
    """What Debian's ``stun`` client (stun-client 0.97, RFC 3489) said."""

    primary: str
    """The text after ``Primary:``, e.g. ``Independent Mapping, Port
    Dependent Filter, preserves ports, no hairpin``."""
    return_value: int
    stdout: str
    stderr: str

    @property
    def nat_type(self) -> str:
        """The type alone, without the port and hairpin remarks."""
        parts = [p.strip() for p in self.primary.split(",")]
        keep = [p for p in parts if p and not p.endswith(("port", "ports", "hairpin"))]
        return ", ".join(keep)

    @property
    def preserves_ports(self) -> bool:
        return "preserves ports" in self.primary

    @property
    def hairpins(self) -> bool:
        return "will hairpin" in self.primary


def run_stun_client(nat_lab: NatLab, *, timeout: float = 30.0) -> StunClientReport:
    """Debian's ``stun`` client (stun-client package) on the client host."""
    program = tool("stun")
    if program is None:
        raise LabUnavailable("Debian's stun client is missing: apt-get install stun-client")
    result = nat_lab.lab.run(nat_lab.client, [program, str(nat_lab.primary), "-v"], timeout=timeout)
    match = re.search(r"^Primary: (.*)$", result.stdout, re.MULTILINE)
    value = re.search(r"Return value is 0x([0-9a-fA-F]+)", result.stdout)
    if match is None or value is None:
        raise LabError(f"unexpected output of stun: {result.stdout!r} {result.stderr[-500:]!r}")
    return StunClientReport(
        match.group(1).strip(), int(value.group(1), 16), result.stdout, result.stderr
    )


@dataclass(frozen=True, slots=True)
class Comparison:
    """One row of "emulated vs detected"."""

    what: str
    emulated: str | None
    detected: str | None
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "emulated": self.emulated,
            "detected": self.detected,
            "ok": self.ok,
        }


def compare(
    expected: Expectation, detected: dict[str, Any], stun_client: StunClientReport | None = None
) -> list[Comparison]:
    """Rows for the NAT type, mapping, filtering (and the ``stun`` client)."""
    rows: list[Comparison] = []
    pairs = [
        ("classic", expected.classic.value),
        ("mapping", expected.mapping.value if expected.mapping else None),
        ("filtering", expected.filtering.value if expected.filtering else None),
    ]
    for key, want in pairs:
        got = detected.get(key)
        ok = got == want
        rows.append(Comparison(key, want, got, ok))
    if stun_client is not None:
        rows.append(
            Comparison(
                "stun-client",
                expected.stun_client,
                stun_client.primary,
                stun_client.nat_type == expected.stun_client,
            )
        )
    return rows


_NATDISCOVERY_WORDS = {
    "Endpoint Independent": 0,
    "Address Dependent": 1,
    "Address and Port Dependent": 2,
}


@dataclass(frozen=True, slots=True)
class NatDiscoveryReport:
    """What coturn's ``turnutils_natdiscovery`` (RFC 5780) said."""

    mapping: Mapping | None
    filtering: Filtering | None
    stdout: str


def run_natdiscovery(nat_lab: NatLab, *, timeout: float = 60.0) -> NatDiscoveryReport:
    """coturn's ``turnutils_natdiscovery -m -f`` on the client host."""
    program = tool("turnutils_natdiscovery")
    if program is None:
        raise LabUnavailable("turnutils_natdiscovery is missing: apt-get install coturn")
    primary = nat_lab.primary
    result = nat_lab.lab.run(
        nat_lab.client,
        [program, "-m", "-f", "-p", str(primary.port), primary.host],
        timeout=timeout,
    )
    mappings = list(Mapping)
    filterings = list(Filtering)
    mapping = filtering = None
    for words, index in _NATDISCOVERY_WORDS.items():
        if f"NAT with {words} Mapping!" in result.stdout:
            mapping = mappings[index]
        if f"NAT with {words} Filtering!" in result.stdout:
            filtering = filterings[index]
    return NatDiscoveryReport(mapping, filtering, result.stdout)
