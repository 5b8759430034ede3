"""asyncio driver for :class:`~natkit.nat.natcheck.NatCheck` on any stack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from natkit.addr import Endpoint
from natkit.nat.natcheck import (
    NatCheck,
    NatCheckConfig,
    NatCheckEvent,
    NatCheckFinished,
    NatCheckResult,
)
from natkit.net.driver import CoreDriver
from natkit.net.stack import DatagramEndpoint, Stack

__all__ = ["natcheck"]


async def natcheck(
    stack: Stack,
    server: Endpoint,
    config: NatCheckConfig | None = None,
    *,
    bind_ip: str | None = None,
    on_event: Callable[[NatCheckEvent], None] | None = None,
) -> NatCheckResult:
    """Run NAT type detection against ``server`` (an RFC 5780 / RFC 3489
    server with two addresses) and return the verdict.

    Sockets are bound to ``bind_ip`` (default: the wildcard of the server's
    family); the local address compared with the mapped one is the source
    address the route to the server would use.
    """
    config = config or NatCheckConfig()
    loop = asyncio.get_running_loop()
    family_any = "::" if ":" in server.host else "0.0.0.0"
    source_ip = bind_ip or await stack.source_address_for(server)
    endpoints: dict[Endpoint | None, DatagramEndpoint] = {}
    locals_: list[Endpoint] = []
    core_box: list[NatCheck] = []
    driver_box: list[CoreDriver[NatCheckEvent]] = []
    done: asyncio.Future[NatCheckResult] = loop.create_future()

    def make_handler(local_holder: list[Endpoint]) -> Callable[[bytes, Endpoint], None]:
        def on_datagram(data: bytes, addr: Endpoint) -> None:
            if core_box and driver_box:
                core_box[0].receive_datagram(data, addr, local=local_holder[0], now=loop.time())
                driver_box[0].flush()

        return on_datagram

    def handle_event(event: NatCheckEvent) -> None:
        if on_event is not None:
            on_event(event)
        if isinstance(event, NatCheckFinished) and not done.done():
            done.set_result(event.result)

    try:
        for _ in range(NatCheck.sockets_needed(config)):
            holder: list[Endpoint] = []
            ep = await stack.open_udp(Endpoint(bind_ip or family_any, 0), make_handler(holder))
            local = Endpoint(source_ip, ep.local_endpoint.port)
            holder.append(local)
            endpoints[local] = ep
            locals_.append(local)
        core = NatCheck(server, locals_, config)
        driver: CoreDriver[NatCheckEvent] = CoreDriver(core, endpoints, handle_event)
        core_box.append(core)
        driver_box.append(driver)
        core.start(now=loop.time())
        driver.flush()
        return await done
    finally:
        if driver_box:
            driver_box[0].close()
        for ep in endpoints.values():
            ep.close()
