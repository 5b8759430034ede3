"""The runner's pool of parked relay sockets: bounded, oldest closed first,
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


async def test_the_pool_is_bounded_and_closes_its_oldest_socket_first() -> None:
    pool = RelaySocketPool(asyncio.get_running_loop(), capacity=2)
    socks: list[Any] = [FakeSocket() for _ in range(3)]
    for i, sock in enumerate(socks):
        assert pool.park(ep(i), sock)
    assert [s.closed for s in socks] == [True, False, False] and len(pool) == 2
    assert ep(0) not in pool and pool.take(ep(0)) is None
    assert pool.take(ep(2)) is socks[2] and ep(2) not in pool
    assert pool.close() == [socks[1]] and socks[1].closed and len(pool) == 0
    assert [s.closed for s in socks] == [True, True, False]  # the taken one: the caller's


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
