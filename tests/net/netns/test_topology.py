"""The lab's namespaces and links: built, isolated, and always torn down."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from natkit.net.netns import KernelNat, Lab, LabError, TunNat, lab_namespaces
from natkit.net.netns.system import PREFIX, namespace_pids, process_alive

from .conftest import assert_gone

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def _root_interfaces() -> list[tuple[int, str]]:
    return sorted(socket.if_nameindex())


def test_lab_names_every_namespace_with_prefix_and_run_id(lab: Lab) -> None:
    lab.add_public_host("stun", addresses=2)
    nat = lab.add_nat("nat", KernelNat())
    lab.add_host("client", behind=nat)
    names = lab.namespaces()
    assert sorted(names) == sorted(
        f"{PREFIX}{lab.run_id}-{role}" for role in ("inet", "stun", "nat", "client")
    )
    assert set(names) <= set(lab_namespaces())


def test_addresses_follow_the_plan(lab: Lab) -> None:
    stun = lab.add_public_host("stun", addresses=2)
    cgn = lab.add_nat("cgn", KernelNat(), carrier_grade=True)
    home = lab.add_nat("home", TunNat("port-restricted-cone"), behind=cgn)
    client = lab.add_host("client", behind=home)
    firewall = lab.add_nat("fw", TunNat("symmetric-udp-firewall"))
    guarded = lab.add_host("guarded", behind=firewall)
    assert stun.addresses == ("203.0.113.10", "203.0.113.11")
    assert cgn.public_ips == ("198.51.100.2",)
    assert cgn.inside_network == "100.64.1.0/24"
    assert home.public_ips == ("100.64.1.2",)
    assert home.inside_network == "192.168.1.0/24"
    assert client.addresses == ("192.168.1.10",)
    assert firewall.public_ips == ()
    assert guarded.address.startswith("192.0.2.")


def test_a_nat_can_take_its_public_address_from_a_wan_network(lab: Lab) -> None:
    """A non-reserved WAN prefix (what miniupnpd needs) lives on the lab
    internet's bridge only; NATs on it route through its first address."""
    first = lab.add_nat("first", KernelNat(), wan_network="100.128.77.0/24")
    second = lab.add_nat("second", KernelNat(), wan_network="100.128.77.0/24")
    assert first.public_ips == ("100.128.77.2",)
    assert second.public_ips == ("100.128.77.3",)
    with IPRoute(netns=lab.netns_name("inet"), flags=0) as ipr:
        held = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)}
    assert "100.128.77.1" in held
    with IPRoute(netns=first.netns, flags=0) as ipr:
        route = ipr.route("get", dst="203.0.113.10")[0]
    assert route.get_attr("RTA_GATEWAY") == "100.128.77.1"


@pytest.mark.parametrize(
    ("engine", "wan_network", "error", "match"),
    [
        pytest.param(KernelNat(), "203.0.113.0/25", LabError, "overlaps", id="overlap"),
        pytest.param(KernelNat(), "100.128.77.0/31", ValueError, "too small", id="too-small"),
        pytest.param(
            TunNat("symmetric-udp-firewall"),
            "100.128.77.0/24",
            ValueError,
            "firewall",
            id="firewall",
        ),
    ],
)
def test_a_bad_wan_network_is_refused_before_anything_is_built(
    lab: Lab, engine: KernelNat | TunNat, wan_network: str, error: type[Exception], match: str
) -> None:
    before = lab.namespaces()
    with pytest.raises(error, match=match):
        lab.add_nat("nat", engine, wan_network=wan_network)
    assert lab.namespaces() == before


def test_closing_removes_namespaces_and_stops_processes(tmp_path: Path) -> None:
    lab = Lab(workdir=tmp_path)
    try:
        lab.open()
        nat = lab.add_nat("nat", TunNat("full-cone"))
        host = lab.add_host("client", behind=nat)
        sleeper = lab.exec(host, ["sleep", "600"])
        assert nat.pid is not None
        assert nat.pid in namespace_pids(nat.netns)
        assert sleeper.pid in namespace_pids(host.netns)
    finally:
        lab.close()
    assert_gone(lab.prefix)
    assert sleeper.poll() is not None
    assert not process_alive(nat.pid)


def test_teardown_happens_when_the_body_raises(tmp_path: Path) -> None:
    lab = Lab(workdir=tmp_path)
    with pytest.raises(RuntimeError, match="boom"), lab:
        lab.add_nat("nat", TunNat("symmetric"))
        assert lab.namespaces()
        raise RuntimeError("boom")
    assert_gone(lab.prefix)


def test_lab_leaves_the_root_namespace_alone(tmp_path: Path) -> None:
    before = _root_interfaces()
    with Lab(workdir=tmp_path) as lab:
        nat = lab.add_nat("nat", KernelNat())
        lab.add_host("client", behind=nat)
        tun = lab.add_nat("tnat", TunNat("full-cone"))
        lab.add_host("client2", behind=tun)
        assert _root_interfaces() == before
    assert _root_interfaces() == before


def test_nothing_routes_outside_the_lab(lab: Lab) -> None:
    """Route lookups only, no packet is sent: the internet namespace has no
    default route (so no address outside the lab is reachable from it), and
    every other namespace's default route points into the lab."""
    nat = lab.add_nat("nat", KernelNat())
    lab.add_host("client", behind=nat)
    tun = lab.add_nat("tnat", TunNat("full-cone"))
    lab.add_host("client2", behind=tun)
    for netns in lab.namespaces():
        with IPRoute(netns=netns, flags=0) as ipr:
            defaults = [
                r for r in ipr.get_routes(family=socket.AF_INET, table=254) if r["dst_len"] == 0
            ]
            if netns == lab.netns_name("inet"):
                assert not defaults
                with pytest.raises(NetlinkError):
                    ipr.route("get", dst="9.9.9.9")
                continue
            assert len(defaults) == 1, netns
            gateway = defaults[0].get_attr("RTA_GATEWAY")
            if gateway is None:  # a TUN NAT's default route: its own TUN device
                oif = defaults[0].get_attr("RTA_OIF")
                assert ipr.get_links(oif)[0].get_attr("IFLA_IFNAME") == "tin"
            else:
                assert gateway.startswith(("192.168.", "198.51.100.", "203.0.113.")), gateway


def test_veth_peers_live_in_lab_namespaces(lab: Lab) -> None:
    nat = lab.add_nat("nat", KernelNat())
    lab.add_host("client", behind=nat)
    for netns in lab.namespaces():
        out = subprocess.run(
            ["ip", "-n", netns, "-o", "-d", "link", "show", "type", "veth"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            assert "link-netns natkit-" in line, line


def test_unknown_host_is_a_clear_error(lab: Lab) -> None:
    with pytest.raises(LabError, match="no host 'nobody'"):
        lab.run("nobody", ["true"])


def test_unknown_preset_is_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="valid presets"):
        TunNat("no-such-nat")
