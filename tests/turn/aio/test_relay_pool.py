"""The runner's pool of parked relay sockets: bounded, the oldest kept when full,
everything closed at shutdown (the idle timer: test_runner_sim.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from natkit.addr import Endpoint
from natkit.turn.aio.relay_pool import RelaySocketPool, open_file_limit, pool_capacity


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def ep(port: int) -> Endpoint:
    return Endpoint("192.0.2.1", port)


async def test_a_full_pool_keeps_its_oldest_sockets_and_refuses_the_new_one() -> None:
    pool = RelaySocketPool(asyncio.get_running_loop(), capacity=2)
    socks: list[Any] = [FakeSocket() for _ in range(4)]
    assert pool.park(ep(0), socks[0]) and pool.park(ep(1), socks[1])
    assert not pool.park(ep(2), socks[2])  # full: the caller closes it
    assert not socks[2].closed and ep(2) not in pool and len(pool) == 2
    assert pool.take(ep(0)) is socks[0] and ep(0) not in pool
    assert pool.park(ep(3), socks[3])  # room again
    assert pool.close() == [socks[1], socks[3]] and socks[1].closed and socks[3].closed
    assert len(pool) == 0 and not socks[0].closed  # the taken one: the caller's


async def test_parking_a_relay_again_replaces_its_old_socket() -> None:
    pool = RelaySocketPool(asyncio.get_running_loop(), capacity=1)
    old: Any = FakeSocket()
    new: Any = FakeSocket()
    assert pool.park(ep(1), old) and pool.park(ep(1), new)
    assert old.closed and pool.take(ep(1)) is new


async def test_a_pool_of_zero_keeps_nothing() -> None:
    pool = RelaySocketPool(asyncio.get_running_loop(), capacity=0)
    sock: Any = FakeSocket()
    assert not pool.park(ep(1), sock)
    assert len(pool) == 0 and not sock.closed  # the caller closes it
    with pytest.raises(ValueError):
        RelaySocketPool(asyncio.get_running_loop(), capacity=-1)


def test_parked_sockets_keep_to_a_quarter_of_the_open_file_limit() -> None:
    assert pool_capacity(4096, 1024) == 256
    assert pool_capacity(4096, 1 << 20) == 4096
    assert pool_capacity(4096, None) == 4096 and pool_capacity(0, 1024) == 0
    limit = open_file_limit()
    assert limit is None or limit > 0
