"""Running natkit's asyncio code on the fastest loop available.

uvloop roughly quintuples datagram throughput over the default loop, so
servers and commands use it when it is installed (it is a dependency on
Linux and macOS). Long-running servers also call :func:`tune_gc` once
they are up.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run", "tune_gc"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or ``None`` for asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when available."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def tune_gc() -> None:
    """Keep full garbage collections off a server's hot paths.

    Under churn (TURN allocations, SIP transactions) CPython's generational
    collector runs gen-2 passes over every live object, 75-160 ms each on a
    heap of allocation or transaction state, freeing nothing: they stalled
    the TURN server (retransmissions seen by turnutils_uclient) and cost the
    SIP server a quarter of its REGISTER rate. Objects alive after start-up
    are frozen out of collection, and collections start less often; what
    reference counting leaves (cycles) is still collected, later.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 100))
