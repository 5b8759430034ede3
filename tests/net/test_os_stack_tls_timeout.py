"""OsStack's TLS listeners give up on a handshake that does not finish within
``tls_handshake_timeout`` (not asyncio's 60 s): a connection that never
speaks TLS costs a socket for seconds, not a minute, before any server sees it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from natkit.addr import Endpoint
from natkit.net.os_stack import OsStack

LO = "127.0.0.1"


async def _silent_client_is_dropped(tls: ssl.SSLContext) -> None:
    accepted: list[object] = []
    listener = await OsStack(tls_handshake_timeout=0.2).listen_stream(
        Endpoint(LO, 0), accepted.append, tls=tls
    )
    try:
        conn = await OsStack().connect_stream(listener.local_endpoint)  # plain TCP, no ClientHello
        conn.set_handler(lambda data: None)
        await asyncio.wait_for(conn.wait_closed(), 3)
        assert accepted == []
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_tls_handshake_that_never_comes_is_aborted(
    tls_server_context: ssl.SSLContext,
) -> None:
    await _silent_client_is_dropped(tls_server_context)


def test_a_tls_handshake_that_never_comes_is_aborted_on_uvloop(
    tls_server_context: ssl.SSLContext,
) -> None:
    uvloop = pytest.importorskip("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_silent_client_is_dropped(tls_server_context))


def test_the_default_handshake_timeout_is_short_and_must_be_positive() -> None:
    assert OsStack().tls_handshake_timeout == 10.0
    with pytest.raises(ValueError, match="tls_handshake_timeout"):
        OsStack(tls_handshake_timeout=0)
