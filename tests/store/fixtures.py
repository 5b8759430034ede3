"""Store fixtures shared with other test packages: a fake wall clock and
``store_factory``, parametrized over the three backends.

``store_factory.open()`` returns a new handle on the same data each call: a
second SQLite connection to the same file, a second Redis client on the same
database (two servers sharing one view); the memory store has only one
handle, the same object each time. Every handle is closed in teardown.
Import the ``*_fixture`` functions (and the Redis ones) to use them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from natkit.store import MemoryStore, Store, open_store

BACKENDS = ["memory", "sqlite", "redis"]


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StoreFactory:
    def __init__(self, kind: str, url: str, clock: FakeClock) -> None:
        self.kind = kind
        self.url = url
        self.clock = clock
        self.handles: list[Store] = []
        self._memory: MemoryStore | None = None

    async def open(self) -> Store:
        if self.kind == "memory":
            if self._memory is None:
                self._memory = MemoryStore(clock=self.clock)
                self.handles.append(self._memory)
            return self._memory
        store = await open_store(self.url, clock=self.clock)
        self.handles.append(store)
        return store

    async def close(self) -> None:
        for store in self.handles:
            await store.close()


@pytest.fixture(name="fake_clock")
def fake_clock_fixture() -> FakeClock:
    return FakeClock()


@pytest.fixture(name="store_factory", params=BACKENDS)
async def store_factory_fixture(
    request: pytest.FixtureRequest, tmp_path: Path, fake_clock: FakeClock
) -> AsyncIterator[StoreFactory]:
    kind = str(request.param)
    if kind == "memory":
        url = "memory:"
    elif kind == "sqlite":
        url = f"sqlite:{tmp_path / 'store.db'}"
    else:
        url = str(request.getfixturevalue("redis_url"))
    factory = StoreFactory(kind, url, fake_clock)
    try:
        yield factory
    finally:
        await factory.close()


@pytest.fixture(name="store")
async def store_fixture(store_factory: StoreFactory) -> Store:
    return await store_factory.open()
