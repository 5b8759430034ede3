"""natkit.net.loop.tune_gc: the servers' garbage-collector settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from natkit.net.loop import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_freezes_start_up_objects_and_raises_thresholds() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc()
    assert gc.get_freeze_count() > 0  # what was alive is out of the collector's passes
    assert gc.get_threshold() == (50_000, 20, 100)


@pytest.mark.usefixtures("restored_gc")
def test_keeps_thresholds_already_higher() -> None:
    gc.set_threshold(100_000, 30, 200)
    tune_gc()
    assert gc.get_threshold() == (100_000, 30, 200)


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() > 0
