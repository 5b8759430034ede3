"""Real packets from a host, through a NAT (or two), to the lab internet and back."""

from __future__ import annotations

import socket
import time

import pytest

from natkit.net.netns import Host, KernelNat, Lab, NatEngine, TunNat
from natkit.net.netns.system import socket_in_namespace

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

TIMEOUT = 5.0
SERVER_PORT = 4000

ENGINES = [
    pytest.param(KernelNat(), id="kernel-masquerade"),
    pytest.param(KernelNat(random_fully=True), id="kernel-random-fully"),
    pytest.param(TunNat("full-cone"), id="tun-full-cone"),
    pytest.param(TunNat("symmetric"), id="tun-symmetric"),
    pytest.param(TunNat("linux-masquerade"), id="tun-linux-masquerade"),
]


def _udp_round_trip(client: Host, server: Host, payload: bytes) -> tuple[str, int]:
    """Send from ``client`` to ``server`` and back; returns the source the server saw."""
    with (
        socket_in_namespace(server.netns) as srv,
        socket_in_namespace(client.netns) as cli,
    ):
        srv.bind((server.address, SERVER_PORT))
        srv.settimeout(TIMEOUT)
        cli.bind(("0.0.0.0", 0))
        cli.settimeout(TIMEOUT)
        cli.sendto(payload, (server.address, SERVER_PORT))
        data, seen = srv.recvfrom(65535)
        assert data == payload
        srv.sendto(data[::-1], seen)
        back, source = cli.recvfrom(65535)
        assert back == payload[::-1]
        assert source == (server.address, SERVER_PORT)
        return seen[0], seen[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_udp_goes_out_translated_and_the_answer_comes_back(lab: Lab, engine: NatEngine) -> None:
    server = lab.add_public_host("server")
    nat = lab.add_nat("nat", engine)
    client = lab.add_host("client", behind=nat)
    seen_ip, _ = _udp_round_trip(client, server, b"natkit lab " * 100)
    assert seen_ip == nat.public_ips[0]


@pytest.mark.parametrize("engine", ENGINES)
def test_tcp_connects_through_the_nat(lab: Lab, engine: NatEngine) -> None:
    server = lab.add_public_host("server")
    nat = lab.add_nat("nat", engine)
    client = lab.add_host("client", behind=nat)
    payload = bytes(range(256)) * 64  # several segments each way
    with (
        socket_in_namespace(server.netns, kind=socket.SOCK_STREAM) as listener,
        socket_in_namespace(client.netns, kind=socket.SOCK_STREAM) as conn,
    ):
        listener.bind((server.address, SERVER_PORT))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        conn.settimeout(TIMEOUT)
        conn.connect((server.address, SERVER_PORT))
        accepted, peer = listener.accept()
        with accepted:
            accepted.settimeout(TIMEOUT)
            assert peer[0] == nat.public_ips[0]
            conn.sendall(payload)
            received = b""
            while len(received) < len(payload):
                received += accepted.recv(65536)
            accepted.sendall(received[::-1])
            accepted.shutdown(socket.SHUT_WR)
            echoed = b""
            while chunk := conn.recv(65536):
                echoed += chunk
        assert received == payload
        assert echoed == payload[::-1]


@pytest.mark.parametrize(
    ("home", "cgn"),
    [
        pytest.param(TunNat("port-restricted-cone"), KernelNat(), id="tun-home-behind-kernel-cgn"),
        pytest.param(KernelNat(), TunNat("carrier-grade"), id="kernel-home-behind-tun-cgn"),
    ],
)
def test_nats_in_tandem_show_the_carrier_grade_address(
    lab: Lab, home: NatEngine, cgn: NatEngine
) -> None:
    server = lab.add_public_host("server")
    outer = lab.add_nat("cgn", cgn, carrier_grade=True)
    inner = lab.add_nat("home", home, behind=outer)
    client = lab.add_host("client", behind=inner)
    assert inner.public_ips[0].startswith("100.64.")
    seen_ip, _ = _udp_round_trip(client, server, b"cascade")
    assert seen_ip == outer.public_ips[0]


def test_hosts_behind_one_nat_reach_each_other_directly(lab: Lab) -> None:
    nat = lab.add_nat("nat", TunNat("symmetric"))
    first = lab.add_host("first", behind=nat)
    second = lab.add_host("second", behind=nat)
    seen_ip, _ = _udp_round_trip(first, second, b"same lan")
    assert seen_ip == first.address


def test_tun_nat_delays_add_up_to_the_round_trip(lab: Lab) -> None:
    server = lab.add_public_host("server")
    nat = lab.add_nat("nat", TunNat("full-cone", delay_inside=0.03, delay_outside=0.02))
    client = lab.add_host("client", behind=nat)
    started = time.monotonic()
    _udp_round_trip(client, server, b"timed")
    assert time.monotonic() - started >= 0.05


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(TunNat("symmetric"), id="tun-symmetric"),
        pytest.param(TunNat("port-restricted-cone"), id="tun-port-restricted"),
    ],
)
def test_a_datagram_larger_than_the_mtu_crosses_the_tun_nat_in_fragments(
    lab: Lab, engine: NatEngine
) -> None:
    # A SIP INVITE with ICE candidates easily passes 1500 bytes: the sender's
    # kernel fragments it, and the NAT must reassemble, translate and
    # fragment again (only the first fragment carries the ports).
    server = lab.add_public_host("server")
    nat = lab.add_nat("nat", engine)
    client = lab.add_host("client", behind=nat)
    seen_ip, _ = _udp_round_trip(client, server, bytes(i % 251 for i in range(4000)))
    assert seen_ip == nat.public_ips[0]
