"""The driver base classes' context-manager life cycle (natkit.net.driver)."""

from __future__ import annotations

import pytest

from natkit.net.driver import StartedAndClosedOnExit


class _HalfStarted(StartedAndClosedOnExit):
    """Opens one resource, then fails on the second, as a server with two
    listen addresses does when the second will not bind."""

    def __init__(self, *, fail: bool) -> None:
        self.fail = fail
        self.opened = 0
        self.closed = 0
        self.waited = 0

    async def start(self) -> None:
        self.opened += 1
        if self.fail:
            raise OSError("address in use")

    def close(self) -> None:
        self.closed += 1

    async def wait_closed(self) -> None:
        self.waited += 1


async def test_a_start_that_fails_half_way_closes_what_it_opened() -> None:
    server = _HalfStarted(fail=True)
    with pytest.raises(OSError, match="address in use"):
        async with server:
            pytest.fail("the block must not run")
    assert (server.opened, server.closed, server.waited) == (1, 1, 1)


async def test_a_started_block_is_closed_once_on_exit() -> None:
    server = _HalfStarted(fail=False)
    async with server:
        assert server.closed == 0
    assert (server.closed, server.waited) == (1, 1)
