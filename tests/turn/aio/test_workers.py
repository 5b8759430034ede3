"""``natkit turn-server --workers N``: how settings split between workers,
what more than one worker refuses, and the SO_REUSEPORT socket group the
workers share (bound before any is read, so each remote endpoint keeps
reaching one socket)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from natkit.addr import Endpoint, Transport
from natkit.net.os_stack import OsStack
from natkit.turn.aio.config import ConfigError, build_settings

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS
BASE = {"realm": "r", "user": ["a:b"], "no-admin": True}


def _settings(**flags: object) -> object:
    return build_settings({}, {**BASE, **flags})


def test_workers_default_to_one_and_one_worker_is_the_settings_themselves() -> None:
    settings = build_settings({}, BASE)
    assert settings.workers == 1
    assert settings.for_worker(0) is settings


def test_workers_split_the_port_range_without_overlap_or_gap() -> None:
    settings = build_settings({}, {**BASE, "workers": 3, "min-port": 1000, "max-port": 1010})
    ranges = [(w.min_port, w.max_port) for w in map(settings.for_worker, range(3))]
    assert ranges == [(1000, 1002), (1003, 1006), (1007, 1010)]


def test_only_worker_0_has_the_stream_listeners() -> None:
    settings = build_settings(
        {}, {**BASE, "workers": 2, "listen": ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"]}
    )
    assert [t for t, _ in settings.for_worker(0).listen] == [UDP, TCP]
    assert [t for t, _ in settings.for_worker(1).listen] == [UDP]


def test_total_quotas_are_split_between_workers_rounding_up() -> None:
    settings = build_settings(
        {}, {**BASE, "workers": 2, "max-allocations": 5, "bps-capacity": 1001}
    )
    for worker in map(settings.for_worker, range(2)):
        assert (worker.max_allocations, worker.bps_capacity) == (3, 501)
    unlimited = build_settings({}, {**BASE, "workers": 2}).for_worker(1)
    assert (unlimited.max_allocations, unlimited.bps_capacity) == (0, 0)


def test_workers_come_from_the_config_file_too() -> None:
    assert build_settings({"workers": 2}, BASE).workers == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param({"workers": 0}, "at least 1", id="zero"),
        pytest.param({"workers": 65}, "at most 64", id="too-many"),
        pytest.param({"workers": 2, "no-admin": False}, "--no-admin", id="admin"),
        pytest.param({"workers": 2, "user-quota": 3}, "user-quota", id="user-quota"),
        pytest.param(
            {"workers": 2, "min-port": 5000, "max-port": 5002}, "relay ports", id="few-ports"
        ),
        pytest.param(
            {"workers": 2, "listen": ["tcp:127.0.0.1:3478"]}, "udp: listener", id="no-udp"
        ),
    ],
)
def test_what_more_than_one_worker_refuses(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _settings(**flags)


def test_a_worker_index_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="worker 2 of 2"):
        build_settings({}, {**BASE, "workers": 2}).for_worker(2)


def test_a_udp_group_keeps_each_remote_endpoint_on_one_socket() -> None:
    group = OsStack().bind_udp_group(Endpoint("127.0.0.1", 0), 2)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    try:
        port = group[0].getsockname()[1]
        assert [s.getsockname() for s in group] == [("127.0.0.1", port)] * 2
        for s in group:
            s.settimeout(2)
        for sender in senders:
            sender.bind(("127.0.0.1", 0))
        where: dict[int, set[int]] = {}
        for _ in range(3):
            for sender in senders:
                sender.sendto(b"x", ("127.0.0.1", port))
            for i, s in enumerate(group):
                s.setblocking(False)
                while True:
                    try:
                        _, addr = s.recvfrom(16)
                    except BlockingIOError:
                        break
                    where.setdefault(addr[1], set()).add(i)
                s.settimeout(2)
        assert len(where) == len(senders)
        assert all(len(sockets) == 1 for sockets in where.values())
    finally:
        for s in [*group, *senders]:
            s.close()


def test_a_udp_group_on_a_port_in_use_is_a_transport_error() -> None:
    from natkit.errors import TransportError

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        with pytest.raises(TransportError, match="cannot bind"):
            OsStack().bind_udp_group(Endpoint("127.0.0.1", busy.getsockname()[1]), 2)


async def test_open_udp_takes_the_socket_bound_beforehand_once() -> None:
    local = Endpoint("127.0.0.1", 0)
    (sock,) = OsStack().bind_udp_group(local, 1)
    port = sock.getsockname()[1]
    got: list[bytes] = []
    stack = OsStack(bound_udp={local: sock})
    ep = await stack.open_udp(local, lambda data, _: got.append(data))
    try:
        assert ep.local_endpoint == Endpoint("127.0.0.1", port)
        other = await stack.open_udp(local, lambda data, _: None)  # the next one binds anew
        assert other.local_endpoint.port != port
        other.close()
    finally:
        ep.close()
        await ep.wait_closed()


async def test_a_relay_socket_opened_now_relays_and_frees_its_port_on_close() -> None:
    from natkit.errors import TransportError

    stack = OsStack()
    got: list[tuple[bytes, Endpoint]] = []
    ep = stack.open_udp_now(Endpoint("127.0.0.1", 0), lambda d, r: got.append((d, r)))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(2)
        ep.send(b"out", Endpoint(*peer.getsockname()))
        data, addr = peer.recvfrom(16)
        assert (data, addr) == (b"out", tuple(ep.local_endpoint))
        peer.sendto(b"in", tuple(ep.local_endpoint))
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0)  # a loop turn (no timing): the reader runs
        assert got == [(b"in", Endpoint(*peer.getsockname()))]
    with pytest.raises(TransportError, match="cannot bind"):
        stack.open_udp_now(ep.local_endpoint, lambda d, r: None)
    ep.close()
    assert ep.closed
    again = stack.open_udp_now(ep.local_endpoint, lambda d, r: None)  # free at once
    again.close()
