"""asyncio drivers for port mapping on any stack: :func:`map_port`,
:func:`unmap_port`, the pieces they use, and a runner for the NAT box's
NAT-PMP/PCP service.

Every protocol decision is made by a sans-IO core (:mod:`.client`,
:mod:`.ssdp`, :mod:`.igd`); this module moves bytes between those cores and
the stack with the :class:`~natkit.net.driver.CoreDriver` pattern, and bounds
each method's wall time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from natkit.addr import Endpoint
from natkit.errors import NatkitError, TransactionError, TransportError
from natkit.nat.portmap import natpmp
from natkit.nat.portmap.client import (
    NatPmpClient,
    NatPmpClientConfig,
    PcpClient,
    PcpClientConfig,
)
from natkit.nat.portmap.events import (
    ExternalAddressFailed,
    MappingDeleted,
    MappingFailed,
    MappingGranted,
    PortMapEvent,
)
from natkit.nat.portmap.http import HttpExchange, HttpRequest, HttpResponse, split_http_url
from natkit.nat.portmap.igd import (
    IgdMapped,
    IgdPortMapper,
    IgdPortUnmapper,
    IgdService,
    SoapCall,
    SoapResult,
    build_soap_request,
    parse_description,
    parse_soap_response,
)
from natkit.nat.portmap.mapping import PortMapMethod, PortMapping, is_public_address
from natkit.nat.portmap.ssdp import (
    SSDP_MULTICAST,
    DeviceFound,
    SearchFinished,
    SsdpEvent,
    SsdpSearch,
    SsdpSearchConfig,
)
from natkit.net.driver import CoreDriver, DatagramCore
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.packet import IpProto

__all__ = [
    "PortMapServerCore",
    "PortMapServerRunner",
    "PortMappingError",
    "default_gateway",
    "http_exchange",
    "map_port",
    "search_igd",
    "ssdp_destinations_for",
    "unmap_port",
]

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

DEFAULT_METHODS: tuple[str, ...] = ("pcp", "natpmp", "upnp")


class PortMappingError(TransactionError):
    """No method obtained (or deleted) a mapping; ``attempts`` says why, per method."""

    def __init__(self, message: str, attempts: Sequence[tuple[PortMapMethod, str]]) -> None:
        detail = "; ".join(f"{method}: {reason}" for method, reason in attempts)
        super().__init__(f"{message} ({detail})" if detail else message)
        self.attempts = tuple(attempts)


# /proc/net is the namespace of the process's main thread; a thread that entered
# another namespace with setns(2), as the namespace lab's do, reads its own from
# /proc/thread-self (Linux 3.17+).
_ROUTE_TABLES = (Path("/proc/thread-self/net/route"), Path("/proc/net/route"))


def default_gateway(route_table: Path | None = None) -> str | None:
    """The IPv4 default gateway of the calling thread's network namespace
    (Linux), read from ``route_table`` if given, or ``None``."""
    for table in (route_table,) if route_table is not None else _ROUTE_TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
            break
        except OSError:
            continue
    else:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            try:
                raw = bytes.fromhex(fields[2])[::-1]
            except ValueError:
                continue
            if len(raw) == 4:
                return ".".join(str(b) for b in raw)
    return None


# -- running a datagram core until it says something ------------------------------------


class _ClientCore(DatagramCore[PortMapEvent], Protocol):
    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None: ...


_Outcome = MappingGranted | MappingFailed | MappingDeleted | ExternalAddressFailed


async def _run_until_outcome(
    stack: Stack,
    local_ip: str,
    core: _ClientCore,
    command: Callable[[float], None],
    timeout: float,
) -> _Outcome:
    """Bind a UDP socket on ``local_ip``, run ``command(now)``, and drive
    ``core`` until it reports an outcome (``TimeoutError`` after ``timeout``)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_Outcome] = loop.create_future()
    drivers: list[CoreDriver[PortMapEvent]] = []

    def on_event(event: PortMapEvent) -> None:
        if not done.done() and isinstance(event, _Outcome):
            done.set_result(event)

    def on_datagram(data: bytes, addr: Endpoint) -> None:
        if drivers:
            core.receive_datagram(data, addr, now=loop.time())
            drivers[0].flush()

    ep = await stack.open_udp(Endpoint(local_ip, 0), on_datagram)
    try:
        driver = CoreDriver(core, {None: ep}, on_event)
        drivers.append(driver)
        command(loop.time())
        driver.flush()
        async with asyncio.timeout(timeout):
            return await done
    finally:
        if drivers:
            drivers[0].close()
        ep.close()


def _reason(outcome: _Outcome) -> str:
    # Failures carry a reason; a grant or deletion is never "why not".
    return str(getattr(outcome, "reason", f"unexpected {outcome}"))


def _fell_back(core: PcpClient | NatPmpClient) -> bool:
    return isinstance(core, PcpClient) and core.natpmp is not None


# -- NAT-PMP and PCP --------------------------------------------------------------------


async def _map_pcp_or_natpmp(
    stack: Stack,
    server: Endpoint,
    method: PortMapMethod,
    proto: IpProto,
    internal_port: int,
    *,
    local_ip: str,
    lifetime: int,
    external_port: int | None,
    timeout: float,
    pcp_config: PcpClientConfig,
    natpmp_config: NatPmpClientConfig,
    previous: PortMapping | None,
) -> tuple[PortMapping | None, str, bool]:
    """One method's attempt: (mapping or None, why not, whether PCP fell back)."""
    core: PcpClient | NatPmpClient
    if method == PortMapMethod.PCP:
        core = PcpClient(server, local_ip=local_ip, config=pcp_config)
        if previous is not None and previous.nonce is not None:
            core.adopt(proto, internal_port, previous.nonce, previous.external)
    else:
        core = NatPmpClient(server, local_ip=local_ip, config=natpmp_config)

    def command(now: float) -> None:
        core.map(proto, internal_port, now=now, external_port=external_port, lifetime=lifetime)

    try:
        outcome = await _run_until_outcome(stack, local_ip, core, command, timeout)
    except TimeoutError:
        return None, f"no answer within {timeout:g} s", _fell_back(core)
    if not isinstance(outcome, MappingGranted):
        return None, _reason(outcome), _fell_back(core)
    nonce = core.nonce_for(proto, internal_port) if isinstance(core, PcpClient) else None
    mapping = PortMapping(
        proto=proto,
        internal=outcome.internal,
        external=outcome.external,
        lifetime=outcome.lifetime,
        method=outcome.method,
        gateway=server,
        public=is_public_address(outcome.external.host),
        nonce=nonce,
    )
    return mapping, "", _fell_back(core)


# -- UPnP IGD ---------------------------------------------------------------------------


async def http_exchange(
    stack: Stack, request: HttpRequest, *, timeout: float = 5.0, max_body: int = 65536
) -> HttpResponse:
    """Perform one HTTP request on a connection of its own (see :mod:`.http`)."""
    loop = asyncio.get_running_loop()
    exchange = HttpExchange(request, max_body=max_body)
    done: asyncio.Future[HttpResponse] = loop.create_future()

    def on_data(data: bytes) -> None:
        if done.done():
            return
        try:
            exchange.receive_data(data)
        except NatkitError as exc:
            done.set_exception(exc)
            return
        if exchange.response is not None:
            done.set_result(exchange.response)

    async with asyncio.timeout(timeout):
        conn = await stack.connect_stream(exchange.server, timeout=timeout)
        try:
            conn.set_handler(on_data)
            conn.write(exchange.data_to_send())
            return await done
        finally:
            conn.close()


async def _soap(stack: Stack, service: IgdService, call: SoapCall, *, timeout: float) -> SoapResult:
    response = await http_exchange(stack, build_soap_request(service, call), timeout=timeout)
    return parse_soap_response(response, call.action)


async def search_igd(
    stack: Stack,
    destinations: Sequence[Endpoint] = (SSDP_MULTICAST,),
    config: SsdpSearchConfig | None = None,
    *,
    on_device: Callable[[DeviceFound], None] | None = None,
) -> list[DeviceFound]:
    """Run one SSDP search (see :mod:`.ssdp`) and return every IGD that
    answered, after the search window closes."""
    loop = asyncio.get_running_loop()
    core = SsdpSearch(destinations, config)
    found: list[DeviceFound] = []
    done: asyncio.Future[None] = loop.create_future()
    drivers: list[CoreDriver[SsdpEvent]] = []

    def on_event(event: SsdpEvent) -> None:
        if isinstance(event, DeviceFound):
            found.append(event)
            if on_device is not None:
                on_device(event)
        elif isinstance(event, SearchFinished) and not done.done():
            done.set_result(None)

    def on_datagram(data: bytes, addr: Endpoint) -> None:
        if drivers:
            core.receive_datagram(data, addr, now=loop.time())
            drivers[0].flush()

    family_any = "::" if any(":" in d.host for d in destinations) else "0.0.0.0"
    ep = await stack.open_udp(Endpoint(family_any, 0), on_datagram)
    try:
        driver: CoreDriver[SsdpEvent] = CoreDriver(core, {None: ep}, on_event)
        drivers.append(driver)
        core.start(now=loop.time())
        driver.flush()
        await done
        return found
    finally:
        if drivers:
            drivers[0].close()
        ep.close()


async def _upnp_services(stack: Stack, device: DeviceFound, *, timeout: float) -> list[IgdService]:
    location = device.response.location
    response = await http_exchange(stack, HttpRequest(method="GET", url=location), timeout=timeout)
    if response.status != 200:
        raise TransportError(f"description {location}: HTTP {response.status}")
    return parse_description(response.body, location)


async def _map_upnp(
    stack: Stack,
    destinations: Sequence[Endpoint],
    proto: IpProto,
    internal_port: int,
    *,
    lifetime: int,
    external_port: int | None,
    timeout: float,
    ssdp_config: SsdpSearchConfig | None,
    description: str,
) -> tuple[PortMapping | None, str]:
    loop = asyncio.get_running_loop()
    devices: asyncio.Queue[DeviceFound | None] = asyncio.Queue()
    reasons: list[str] = []

    async def search() -> None:
        try:
            await search_igd(stack, destinations, ssdp_config, on_device=devices.put_nowait)
        finally:
            devices.put_nowait(None)

    searching = loop.create_task(search())
    try:
        async with asyncio.timeout(timeout):
            tried: set[str] = set()
            while (device := await devices.get()) is not None:
                if device.response.location in tried:
                    continue  # the same device, answering another search target
                tried.add(device.response.location)
                mapping = await _map_on_device(
                    stack,
                    device,
                    proto,
                    internal_port,
                    lifetime=lifetime,
                    external_port=external_port,
                    description=description,
                    timeout=timeout,
                    reasons=reasons,
                )
                if mapping is not None:
                    return mapping, ""
    except TimeoutError:
        reasons.append(f"no gateway mapped within {timeout:g} s")
    finally:
        searching.cancel()
        await asyncio.gather(searching, return_exceptions=True)
    return None, "; ".join(reasons) or "no Internet Gateway Device answered"


async def _map_on_device(
    stack: Stack,
    device: DeviceFound,
    proto: IpProto,
    internal_port: int,
    *,
    lifetime: int,
    external_port: int | None,
    description: str,
    timeout: float,
    reasons: list[str],
) -> PortMapping | None:
    location = device.response.location
    try:
        services = await _upnp_services(stack, device, timeout=timeout)
    except (NatkitError, OSError) as exc:
        reasons.append(f"{location}: {exc}")
        return None
    if not services:
        reasons.append(f"{location}: no WAN connection service")
    for service in services:
        control, _ = split_http_url(service.control_url)
        local_ip = await stack.source_address_for(control)
        mapper = IgdPortMapper(
            service,
            proto,
            Endpoint(local_ip, internal_port),
            external_port=external_port,
            lifetime=lifetime,
            description=description,
        )
        try:
            while (call := mapper.next_call()) is not None:
                mapper.receive_result(await _soap(stack, service, call, timeout=timeout))
        except (NatkitError, OSError) as exc:
            reasons.append(f"{service.control_url}: {exc}")
            continue
        result = mapper.result
        if isinstance(result, IgdMapped):
            return PortMapping(
                proto=proto,
                internal=Endpoint(local_ip, internal_port),
                external=result.external,
                lifetime=float(result.lifetime),
                method=PortMapMethod.UPNP,
                gateway=control,
                public=is_public_address(result.external.host),
                control_url=service.control_url,
                service_type=service.service_type,
            )
        if result is not None:
            code = f" (UPnP error {result.code})" if result.code is not None else ""
            reasons.append(f"{result.reason}{code}")
    return None


def ssdp_destinations_for(
    gateway: Endpoint | None, given: Sequence[Endpoint] | None
) -> list[Endpoint]:
    """Where :func:`map_port` sends M-SEARCH: ``given``, or else the SSDP
    multicast group and the gateway's port 1900 (miniupnpd answers unicast too)."""
    if given is not None:
        return list(given)
    dests = [SSDP_MULTICAST]
    if gateway is not None:
        dests.append(Endpoint(gateway.host, SSDP_MULTICAST.port))
    return dests


# -- the front --------------------------------------------------------------------------


async def map_port(
    stack: Stack,
    gateway: Endpoint | None,
    proto: IpProto,
    internal_port: int,
    *,
    lifetime: int = 7200,
    methods: Sequence[str] = DEFAULT_METHODS,
    external_port: int | None = None,
    timeout: float = 10.0,
    local_ip: str | None = None,
    pcp_config: PcpClientConfig | None = None,
    natpmp_config: NatPmpClientConfig | None = None,
    ssdp_destinations: Sequence[Endpoint] | None = None,
    ssdp_config: SsdpSearchConfig | None = None,
    description: str = "natkit",
    previous: PortMapping | None = None,
) -> PortMapping:
    """Ask the NAT for a mapping of ``internal_port`` (ECC report §6.1).

    Tries ``methods`` in order ("pcp", "natpmp", "upnp"), each for at most
    ``timeout`` seconds, and returns the first mapping obtained: its
    external endpoint, method, lifetime and whether it is public (see
    :mod:`.mapping`: ``public=False`` is how a cascaded NAT shows). PCP and
    NAT-PMP talk to ``gateway`` (an endpoint, normally the default
    gateway's port 5351; ``None``: the namespace's default gateway, port
    5351). A PCP server that answers "NAT-PMP only" is spoken to in NAT-PMP
    within the PCP attempt (RFC 6887 §9), which then counts for both. UPnP
    searches ``ssdp_destinations`` (default: the SSDP multicast group and
    the gateway's port 1900).

    The mapping is not renewed in the background: to renew it, call again
    before ``lifetime`` ends with ``previous`` set to it (a PCP server only
    lets the mapping's nonce renew it, RFC 6887 §11.3; NAT-PMP and UPnP
    renew by repeating the request), and call :func:`unmap_port` when done.
    Raises :class:`PortMappingError` listing each method's failure.
    """
    if gateway is None:
        gw_ip = default_gateway()
        gateway = Endpoint(gw_ip, natpmp.SERVER_PORT) if gw_ip else None
    wanted = [PortMapMethod(m) for m in methods]
    attempts: list[tuple[PortMapMethod, str]] = []
    natpmp_done = False
    for method in wanted:
        if method == PortMapMethod.UPNP:
            mapping, reason = await _map_upnp(
                stack,
                ssdp_destinations_for(gateway, ssdp_destinations),
                proto,
                internal_port,
                lifetime=lifetime,
                external_port=external_port or (previous.external.port if previous else None),
                timeout=timeout,
                ssdp_config=ssdp_config,
                description=description,
            )
        elif gateway is None:
            mapping, reason = None, "no gateway known"
        elif method == PortMapMethod.NATPMP and natpmp_done:
            continue
        else:
            source = local_ip or await stack.source_address_for(gateway)
            pcp_cfg = pcp_config or PcpClientConfig()
            if PortMapMethod.NATPMP not in wanted:
                pcp_cfg = dataclasses.replace(pcp_cfg, natpmp_fallback=False)
            mapping, reason, fell_back = await _map_pcp_or_natpmp(
                stack,
                gateway,
                method,
                proto,
                internal_port,
                local_ip=source,
                lifetime=lifetime,
                external_port=external_port,
                timeout=timeout,
                pcp_config=pcp_cfg,
                natpmp_config=natpmp_config or NatPmpClientConfig(),
                previous=previous,
            )
            natpmp_done = natpmp_done or fell_back or method == PortMapMethod.NATPMP
        if mapping is not None:
            log.info(
                "mapped %s %s -> %s by %s (public=%s)",
                proto.name,
                mapping.internal,
                mapping.external,
                mapping.method,
                mapping.public,
            )
            return mapping
        attempts.append((method, reason))
    raise PortMappingError("no port mapping obtained", attempts)


async def unmap_port(stack: Stack, mapping: PortMapping, *, timeout: float = 10.0) -> None:
    """Delete ``mapping`` the way it was made; raises :class:`PortMappingError`."""
    if mapping.method == PortMapMethod.UPNP:
        if mapping.control_url is None or mapping.service_type is None:
            raise PortMappingError("UPnP mapping without its control URL", [])
        service = IgdService(service_type=mapping.service_type, control_url=mapping.control_url)
        unmapper = IgdPortUnmapper(service, mapping.proto, mapping.external.port)
        try:
            while (call := unmapper.next_call()) is not None:
                unmapper.receive_result(await _soap(stack, service, call, timeout=timeout))
        except (NatkitError, OSError) as exc:
            raise PortMappingError("deletion failed", [(mapping.method, str(exc))]) from exc
        if unmapper.result is not True:
            raise PortMappingError("deletion refused", [(mapping.method, str(unmapper.result))])
        return
    core: PcpClient | NatPmpClient
    if mapping.method == PortMapMethod.PCP:
        pcp_client = PcpClient(mapping.gateway, local_ip=mapping.internal.host)
        if mapping.nonce is not None:
            pcp_client.adopt(mapping.proto, mapping.internal.port, mapping.nonce, mapping.external)
        core = pcp_client
    else:
        core = NatPmpClient(mapping.gateway, local_ip=mapping.internal.host)

    def command(now: float) -> None:
        core.unmap(mapping.proto, mapping.internal.port, now=now)

    try:
        outcome = await _run_until_outcome(stack, mapping.internal.host, core, command, timeout)
    except TimeoutError as exc:
        raise PortMappingError("deletion unanswered", [(mapping.method, "timeout")]) from exc
    if not isinstance(outcome, MappingDeleted):
        raise PortMappingError("deletion refused", [(mapping.method, _reason(outcome))])


# -- the NAT box's service --------------------------------------------------------------


class PortMapServerCore(DatagramCore[None], Protocol):
    """What :class:`PortMapServerRunner` drives: a NAT-PMP or PCP server core."""

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None: ...


class PortMapServerRunner:
    """Serves a :class:`~natkit.nat.portmap.server.NatPmpServer` or
    :class:`~natkit.nat.portmap.server.PcpServer` core on ``local`` (the NAT
    box's inside address, normally port 5351). ``start()``, ``close()``,
    ``wait_closed()``, or ``async with``."""

    def __init__(self, stack: Stack, core: PortMapServerCore, local: Endpoint) -> None:
        self.stack = stack
        self.core = core
        self.local = local
        self.endpoint: DatagramEndpoint | None = None
        self._driver: CoreDriver[None] | None = None

    @property
    def local_endpoint(self) -> Endpoint:
        if self.endpoint is None:
            raise TransportError("server not started")
        return self.endpoint.local_endpoint

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core

        def on_datagram(data: bytes, addr: Endpoint) -> None:
            core.receive_datagram(data, addr, now=loop.time())
            if self._driver is not None:
                self._driver.flush()

        self.endpoint = await self.stack.open_udp(self.local, on_datagram)
        # Server cores report no events.
        self._driver = CoreDriver(core, {None: self.endpoint}, lambda _event: None)

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
        if self.endpoint is not None:
            self.endpoint.close()

    async def wait_closed(self) -> None:
        if self.endpoint is not None:
            await self.endpoint.wait_closed()

    async def __aenter__(self) -> PortMapServerRunner:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()
