"""Debian's miniupnpd on a kernel-NAT lab router, natkit's port-mapping client
on a host behind it (issue 3: UPnP IGD, NAT-PMP and PCP against a real
gateway, and ECC §6.1's cascaded NAT).

The lab (docs/lab.md, "A real gateway: miniupnpd")::

    server  203.0.113.10                     the lab internet
    inet    ... and 100.128.77.1/24
    router  wan 100.128.77.2, lan 192.168.1.1: masquerade + miniupnpd
    client  192.168.1.10                     natkit's map_port, upnpc, natpmpc

miniupnpd refuses to forward on a reserved WAN address (private,
100.64.0.0/10, the documentation TEST-NETs), so the router's WAN side is
100.128.77.0/24: not reserved, and it exists only on the lab's veths. For
the cascaded case a second kernel NAT takes that address and the router
hangs behind it, on 100.64.1.2.

miniupnpd runs in the foreground (``-d``) in the router's namespace, from a
config, PID file and lease file in the test's temporary directory, with the
nftables chains it expects loaded beforehand (Debian's nft_init.sh needs
iptables). It is stopped by PID in ``finally``; so is every namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from natkit.addr import Endpoint
from natkit.nat.portmap import natpmp
from natkit.nat.portmap.aio import PortMappingError, map_port, unmap_port
from natkit.nat.portmap.igd import WANIP2
from natkit.nat.portmap.mapping import PortMapMethod
from natkit.net.netns import Host, KernelNat, Lab, Nat
from natkit.net.netns.system import in_namespace, socket_in_namespace
from natkit.net.os_stack import OsStack
from natkit.packet import IpProto

from .conftest import assert_gone, require_program, unavailable

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(60)]

T = TypeVar("T")

WAN_NETWORK = "100.128.77.0/24"
"""Not reserved (100.64.0.0/10 ends at 100.127.255.255), so miniupnpd maps on it."""
HTTP_PORT = 2869
TIMEOUT = 5.0
"""Bound on every wait: a socket read, one map_port method, a client program."""
READY_TRIES = 200
READY_TRY_TIMEOUT = 0.05
"""miniupnpd is polled with NAT-PMP address requests, at most 200 x 50 ms."""
UUID = "5d0a1c2e-6f3b-4e8a-9c71-2b4d6e8f0a13"

# The layout miniupnpd 2.3.1's nftables backend writes into: table "filter"
# (family inet) for both filtering and NAT, chains "miniupnpd",
# "prerouting_miniupnpd" and "postrouting_miniupnpd" (its defaults, as in
# Debian's nft_init.sh), reached from base chains of our own. The forward
# policy is a router's: drop, except replies, the LAN going out, and what
# miniupnpd lets in.
NFT_RULESET = """\
table inet filter {
  chain miniupnpd {
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" accept
    jump miniupnpd
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
  }
}
"""

_LISTED = re.compile(r"^\s*\d+\s+(TCP|UDP)\s+(\d+)->([\d.]+):(\d+)\s", re.MULTILINE)


def miniupnpd_config(router: Nat, workdir: Path) -> str:
    """A config with nothing outside ``workdir``: LAN listening address, NAT-PMP
    and PCP (one switch in miniupnpd), secure mode, and permission rules
    for the lab LAN only."""
    prefix = router.inside_network.split("/")[1]
    return (
        "ext_ifname=wan\n"
        f"listening_ip={router.gateway}/{prefix}\n"
        f"http_port={HTTP_PORT}\n"
        "enable_upnp=yes\n"
        "enable_natpmp=yes\n"
        "ipv6_disable=yes\n"
        "secure_mode=yes\n"
        "system_uptime=yes\n"
        f"uuid={UUID}\n"
        f"lease_file={workdir / 'upnp.leases'}\n"
        f"minissdpdsocket={workdir / 'minissdpd.sock'}\n"
        f"allow 1024-65535 {router.inside_network} 1024-65535\n"
        "deny 0-65535 0.0.0.0/0 0-65535\n"
    )


@dataclass
class Gateway:
    """A lab whose ``router`` runs miniupnpd, with ``client`` behind it and
    ``server`` on the lab internet."""

    lab: Lab
    router: Nat
    client: Host
    server: Host
    proc: subprocess.Popen[Any]

    @property
    def wan_ip(self) -> str:
        return self.router.public_ips[0]

    @property
    def root_desc(self) -> str:
        return f"http://{self.router.gateway}:{HTTP_PORT}/rootDesc.xml"

    def log(self) -> str:
        return self.lab.log_text("miniupnpd")

    def run_client(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.client, argv, timeout=TIMEOUT * 2)

    def listed(self) -> set[tuple[str, int, str, int]]:
        """miniupnpd's own list of mappings (``upnpc -l``, given the IGD's URL
        so that it skips discovery): (protocol, external port, internal IP,
        internal port)."""
        out = self.run_client(["upnpc", "-u", self.root_desc, "-l"]).stdout
        return {(p, int(e), ip, int(i)) for p, e, ip, i in _LISTED.findall(out)}

    def natkit(self, work: Callable[[OsStack], Coroutine[Any, Any, T]]) -> T:
        """Run ``work`` on an OS stack on a thread inside the client's namespace."""
        return in_namespace(
            self.client.netns, lambda: asyncio.run(work(OsStack())), timeout=TIMEOUT * 4
        )


def _require_miniupnpd() -> str:
    path = require_program("miniupnpd", "miniupnpd-nftables")
    require_program("upnpc", "miniupnpc")
    require_program("natpmpc", "natpmpc")
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if "nftables" not in version.stdout + version.stderr:
        unavailable("miniupnpd is not the nftables build: apt-get install miniupnpd-nftables")
    return path


def _wait_ready(gateway: Gateway) -> None:
    """Bounded poll: a NAT-PMP external-address answer (also a refusal)
    means miniupnpd's main loop runs, its HTTP and SSDP sockets open."""
    request = natpmp.serialize_request(natpmp.ExternalAddressRequest())
    with socket_in_namespace(gateway.client.netns) as probe:
        probe.settimeout(READY_TRY_TIMEOUT)
        for _ in range(READY_TRIES):
            if gateway.proc.poll() is not None:
                pytest.fail(f"miniupnpd exited with {gateway.proc.returncode}:\n{gateway.log()}")
            probe.sendto(request, (gateway.router.gateway, natpmp.SERVER_PORT))
            with contextlib.suppress(TimeoutError):
                answer = natpmp.parse_response(probe.recv(64))
                if isinstance(answer, natpmp.ExternalAddressResponse):
                    return
    pytest.fail(f"miniupnpd did not answer NAT-PMP:\n{gateway.log()}")


@contextlib.contextmanager
def miniupnpd_lab(tmp_path: Path, *, cascaded: bool) -> Iterator[Gateway]:
    program = _require_miniupnpd()
    lab = Lab(workdir=tmp_path)
    proc: subprocess.Popen[Any] | None = None
    try:
        lab.open()
        server = lab.add_public_host("server")
        if cascaded:
            outer = lab.add_nat("cgn", KernelNat(), carrier_grade=True, wan_network=WAN_NETWORK)
            router = lab.add_nat("router", KernelNat(), behind=outer)
        else:
            router = lab.add_nat("router", KernelNat(), wan_network=WAN_NETWORK)
        client = lab.add_host("client", behind=router)
        lab.run(router, ["nft", "-f", "-"], input=NFT_RULESET, check=True)
        config = tmp_path / "miniupnpd.conf"
        config.write_text(miniupnpd_config(router, tmp_path))
        argv = [program, "-f", str(config), "-d", "-P", str(tmp_path / "miniupnpd.pid")]
        proc = lab.exec(router, argv, log_name="miniupnpd")
        gateway = Gateway(lab, router, client, server, proc)
        _wait_ready(gateway)
        yield gateway
    finally:
        if proc is not None:
            lab.stop(proc)
        lab.close()
        assert_gone(lab.prefix)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with miniupnpd_lab(tmp_path, cascaded=False) as gw:
        yield gw


@pytest.fixture
def cascaded(tmp_path: Path) -> Iterator[Gateway]:
    with miniupnpd_lab(tmp_path, cascaded=True) as gw:
        yield gw


METHODS = [
    pytest.param(PortMapMethod.UPNP, 6001, id="upnp"),
    pytest.param(PortMapMethod.NATPMP, 6002, id="natpmp"),
    pytest.param(PortMapMethod.PCP, 6003, id="pcp"),
]


@pytest.mark.parametrize(("method", "port"), METHODS)
def test_natkit_maps_a_port_the_lab_internet_reaches(
    gateway: Gateway, method: PortMapMethod, port: int
) -> None:
    """map_port (gateway found from the client's route table) gets a public
    mapping on the router's WAN address; a datagram from the lab internet
    reaches the client through it and the answer goes back out from the
    external endpoint; after unmap_port miniupnpd lists nothing and a new
    flow to the external endpoint ends at the router (ICMP port
    unreachable). miniupnpd 2.3.1 is an IGD:2, so UPnP maps on
    WANIPConnection:2 (AddAnyPortMapping)."""
    client, server = gateway.client, gateway.server
    with (
        socket_in_namespace(client.netns) as inside,
        socket_in_namespace(server.netns) as outside,
        socket_in_namespace(server.netns) as latecomer,
    ):
        inside.bind((client.address, port))
        inside.settimeout(TIMEOUT)
        mapping = gateway.natkit(
            lambda stack: map_port(
                stack, None, IpProto.UDP, port, lifetime=600, methods=(method,), timeout=TIMEOUT
            )
        )
        assert mapping.method == method
        assert mapping.internal == Endpoint(client.address, port)
        assert mapping.external.host == gateway.wan_ip
        assert mapping.public
        assert mapping.gateway.host == gateway.router.gateway
        if method == PortMapMethod.UPNP:
            assert mapping.service_type == WANIP2
        external = (mapping.external.host, mapping.external.port)
        assert ("UDP", mapping.external.port, client.address, port) in gateway.listed()

        outside.bind((server.address, 0))
        outside.settimeout(TIMEOUT)
        outside.sendto(b"hello through miniupnpd", external)
        data, source = inside.recvfrom(2048)
        assert data == b"hello through miniupnpd"
        assert source == outside.getsockname()
        inside.sendto(b"and back", source)
        back, seen = outside.recvfrom(2048)
        assert (back, seen) == (b"and back", external)

        gateway.natkit(lambda stack: unmap_port(stack, mapping, timeout=TIMEOUT))
        assert not {m for m in gateway.listed() if m[1] == mapping.external.port}
        # A new flow (the old one's conntrack entry still translates) now
        # meets no DNAT rule and ends at the router's own stack.
        latecomer.settimeout(TIMEOUT)
        latecomer.connect(external)
        latecomer.send(b"after unmap")
        with pytest.raises(ConnectionRefusedError):
            latecomer.recv(2048)
        inside.setblocking(False)
        with pytest.raises(BlockingIOError):
            inside.recv(2048)


def test_behind_a_second_nat_miniupnpd_refuses_and_natkit_says_why(cascaded: Gateway) -> None:
    """What miniupnpd 2.3.1 does on a reserved WAN address (100.64.1.2, behind
    the carrier-grade NAT): it logs "Reserved / private IP address ... Port
    forwarding is impossible" at start; GetExternalIPAddress answers an empty
    address (so natkit's UPnP attempt stops there, before AddPortMapping),
    NAT-PMP answers result 3 (NETWORK_FAILURE), PCP answers result 8
    (NO_RESOURCES). No method grants a mapping, so there is none for natkit
    to call non-public: map_port raises PortMappingError naming each
    method's reason, and miniupnpd holds no mapping."""
    with pytest.raises(PortMappingError) as refused:
        cascaded.natkit(
            lambda stack: map_port(stack, None, IpProto.UDP, 6004, lifetime=600, timeout=TIMEOUT)
        )
    reasons = dict(refused.value.attempts)
    assert list(reasons) == [PortMapMethod.PCP, PortMapMethod.NATPMP, PortMapMethod.UPNP]
    assert reasons[PortMapMethod.PCP] == "PCP NO_RESOURCES"
    assert reasons[PortMapMethod.NATPMP] == "NAT-PMP NETWORK_FAILURE"
    assert "GetExternalIPAddress gave no address ('')" in reasons[PortMapMethod.UPNP]
    assert cascaded.wan_ip == "100.64.1.2"
    assert f"Reserved / private IP address {cascaded.wan_ip}" in cascaded.log()
    assert not cascaded.listed()


def test_debian_clients_map_through_the_same_miniupnpd(gateway: Gateway) -> None:
    """The fixture, proven without natkit: upnpc (SSDP discovery, then SOAP)
    and natpmpc each get a mapping on the WAN address, and miniupnpd lists both."""
    lan_ip, wan_ip = gateway.client.address, gateway.wan_ip
    upnpc = gateway.run_client(["upnpc", "-a", lan_ip, "5000", "5000", "UDP"])
    assert upnpc.returncode == 0, upnpc.stdout + upnpc.stderr
    assert f"external {wan_ip}:5000 UDP is redirected to internal {lan_ip}:5000" in upnpc.stdout
    pmp = gateway.run_client(["natpmpc", "-a", "5001", "5001", "udp"])
    assert pmp.returncode == 0, pmp.stdout + pmp.stderr
    assert f"Public IP address : {wan_ip}" in pmp.stdout
    assert "Mapped public port 5001 protocol UDP to local port 5001" in pmp.stdout
    assert gateway.listed() == {("UDP", 5000, lan_ip, 5000), ("UDP", 5001, lan_ip, 5001)}


def test_debian_clients_are_refused_behind_a_second_nat(cascaded: Gateway) -> None:
    """PEERS.md's refusal, as Debian's clients see it: upnpc finds the IGD but
    calls it not connected; told its URL, AddPortMapping fails with 501;
    natpmpc gets -52 (network failure, NAT-PMP result 3)."""
    lan_ip = cascaded.client.address
    found = cascaded.run_client(["upnpc", "-a", lan_ip, "5000", "5000", "UDP"])
    assert found.returncode != 0
    assert "Found a (not connected?) IGD" in found.stdout
    assert "No valid UPNP Internet Gateway Device found" in found.stderr
    forced = cascaded.run_client(
        ["upnpc", "-u", cascaded.root_desc, "-a", lan_ip, "5000", "5000", "UDP"]
    )
    assert "failed with code 501 (Action Failed)" in forced.stdout
    pmp = cascaded.run_client(["natpmpc", "-a", "5001", "5001", "udp"])
    assert pmp.returncode != 0
    assert "returned -52 (FAILED)" in pmp.stdout
    assert "network failure" in pmp.stderr
    assert not cascaded.listed()


@pytest.mark.parametrize("method", ["upnp", "pcp"])
def test_ice_gathering_asks_miniupnpd_for_a_port_mapped_candidate(
    gateway: Gateway, method: str
) -> None:
    """The ICE gatherer with port mapping on (GatherConfig.port_mapping):
    miniupnpd maps the host candidate's port, the mapped address on the
    router's WAN side is offered as a server-reflexive candidate, and
    closing the gatherer deletes the mapping."""
    from natkit.ice.aio.gatherer import AsyncGatherer
    from natkit.ice.candidate import CandidateType
    from natkit.ice.gather_config import GatherConfig, HostAddress

    client = gateway.client

    async def gather(stack: OsStack) -> tuple[list[tuple[str, Endpoint]], int, int]:
        config = GatherConfig(port_mapping=(method,), port_mapping_timeout=TIMEOUT)
        async with AsyncGatherer(stack, config) as gatherer:
            await gatherer.open([HostAddress("lan", client.address)])
            candidates = await gatherer.gather()
            held = len(gatherer.mappings)
            listed = len(gateway.listed())
        found = [(c.type.value, c.address) for c in candidates]
        return found, held, listed

    found, held, listed_open = gateway.natkit(gather)
    srflx = [addr for kind, addr in found if kind == CandidateType.SERVER_REFLEXIVE.value]
    assert held == 1 and listed_open == 1
    assert len(srflx) == 1 and srflx[0].host == gateway.wan_ip
    assert not gateway.listed()  # deleted on close
