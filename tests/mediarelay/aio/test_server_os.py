"""MediaRelayServer on the OS stack, over loopback: media both ways, symmetric
(each phone hears the other from the relay port it sends to)."""

from __future__ import annotations

import asyncio
import random

import pytest

from natkit.addr import Endpoint
from natkit.mediarelay import MediaRelayConfig
from natkit.mediarelay.aio import MediaRelayServer
from natkit.net.os_stack import OsStack

from ..helpers import rtp


async def _loopback_call(
    inline: bool,
) -> tuple[list[tuple[int, Endpoint]], list[tuple[int, Endpoint]], int]:
    stack = OsStack()
    cfg = MediaRelayConfig(port_min=47000, port_max=47999, rng=random.Random(5))
    got_a: list[tuple[int, Endpoint]] = []
    got_b: list[tuple[int, Endpoint]] = []
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def receiver(into: list[tuple[int, Endpoint]]):  # type: ignore[no-untyped-def]
        def on_datagram(data: bytes, remote: Endpoint) -> None:
            into.append((int.from_bytes(data[2:4], "big"), remote))
            if len(got_a) >= 10 and len(got_b) >= 10 and not done.done():
                done.set_result(None)

        return on_datagram

    async with MediaRelayServer(stack, cfg, ipv4="127.0.0.1", inline_sockets=inline) as server:
        a = await stack.open_udp(Endpoint("127.0.0.1", 0), receiver(got_a))
        b = await stack.open_udp(Endpoint("127.0.0.1", 0), receiver(got_b))
        try:
            ends = await server.create_call("os-1")
            async with asyncio.timeout(5):
                b.send(rtp(0, 0xB), ends.b.rtp)  # latch B first: A's media has somewhere to go
                while server.call_stats("os-1").b_to_a.packets == 0:
                    await asyncio.sleep(0.001)
                for seq in range(1, 11):
                    a.send(rtp(seq, 0xA), ends.a.rtp)
                    b.send(rtp(seq, 0xB), ends.b.rtp)
                    await asyncio.sleep(0)
                await done
            forwarded = server.call_stats("os-1").a_to_b.forwarded
        finally:
            a.close()
            b.close()
    return got_a, got_b, forwarded


@pytest.mark.parametrize("inline", [False, True], ids=["transports", "inline-sockets"])
def test_media_is_relayed_both_ways_over_loopback(inline: bool) -> None:
    got_a, got_b, forwarded = asyncio.run(_loopback_call(inline))
    assert [seq for seq, _ in got_b] == list(range(1, 11))
    assert [seq for seq, _ in got_a][-10:] == list(range(1, 11))
    assert forwarded == 10
    assert len({src for _, src in got_b}) == 1 and len({src for _, src in got_a}) == 1
    assert {src for _, src in got_b} != {src for _, src in got_a}  # each leg's own port
