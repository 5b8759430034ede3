"""Port mapping: ask the NAT (ECC report §6.1).

Clients of the three ways a host can ask its gateway for an inbound
mapping, and the NAT box's own service:

* NAT-PMP (RFC 6886) and PCP (RFC 6887): codecs (:mod:`.natpmp`,
  :mod:`.pcp`), sans-IO clients with retransmission, renewal and PCP's
  fallback to NAT-PMP (:mod:`.client`), and sans-IO servers answering for a
  NAT box (:mod:`.server`);
* UPnP IGD 1/2: SSDP discovery (:mod:`.ssdp`), HTTP over h11
  (:mod:`.http`), device descriptions and SOAP (:mod:`.igd`);
* :func:`natkit.nat.portmap.aio.map_port`, the asyncio front that tries
  them in turn and says whether the mapping is public (:mod:`.mapping`).
"""

from natkit.nat.portmap.client import (
    NatPmpClient,
    NatPmpClientConfig,
    PcpClient,
    PcpClientConfig,
)
from natkit.nat.portmap.events import (
    ExternalAddressFailed,
    ExternalAddressReceived,
    FellBackToNatPmp,
    MappingDeleted,
    MappingExpired,
    MappingFailed,
    MappingGranted,
    PortMapEvent,
    ServerStateLost,
)
from natkit.nat.portmap.mapping import PortMapMethod, PortMapping, is_public_address
from natkit.nat.portmap.server import (
    NatPmpServer,
    NatPmpServerConfig,
    PcpServer,
    PcpServerConfig,
    PortMappingBox,
)

__all__ = [
    "ExternalAddressFailed",
    "ExternalAddressReceived",
    "FellBackToNatPmp",
    "MappingDeleted",
    "MappingExpired",
    "MappingFailed",
    "MappingGranted",
    "NatPmpClient",
    "NatPmpClientConfig",
    "NatPmpServer",
    "NatPmpServerConfig",
    "PcpClient",
    "PcpClientConfig",
    "PcpServer",
    "PcpServerConfig",
    "PortMapEvent",
    "PortMapMethod",
    "PortMapping",
    "PortMappingBox",
    "ServerStateLost",
    "is_public_address",
]
