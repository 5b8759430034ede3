"""What a port mapping is once obtained, and whether it is public.

The public verdict (ECC report §6.1, "ask the NAT")
---------------------------------------------------
Asking the NAT for a mapping only helps if that NAT is the last one before
the Internet. Behind NATs in tandem (a home router behind a carrier-grade
NAT, a lab router behind another) the nearest gateway hands out a mapping
on its *own* external address, which is itself private: peers on the
Internet cannot reach it. natkit reports this as ``public=False``.

:func:`is_public_address` decides from the external address alone:

* private (RFC 1918), shared (100.64.0.0/10, RFC 6598 carrier-grade NAT),
  loopback, link-local, unique-local, unspecified, multicast and reserved
  ranges are **not public**;
* global unicast addresses are public;
* the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
  2001:db8::/32) are **treated as public**. They are not routed on the real
  Internet, but natkit's lab (simulated and namespace) uses exactly these
  ranges as its Internet, and a mapping on them is reachable by every lab
  host on that Internet. Treating them as private would make every lab
  mapping look cascaded. No real gateway hands them out, so the choice
  costs nothing outside the lab.

Note that miniupnpd is stricter: it refuses to map at all when its own WAN
address is in any reserved range, documentation ranges included (see
``/work/shared/PEERS.md``); that shows up as a failed method, not as a
non-public mapping.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.addr import AddressClass, Endpoint, address_class
from natkit.packet import IpProto

__all__ = ["PUBLIC_CLASSES", "PortMapMethod", "PortMapping", "is_public_address"]

PUBLIC_CLASSES = frozenset({AddressClass.GLOBAL, AddressClass.DOCUMENTATION})


def is_public_address(ip: str) -> bool:
    """Whether a mapping on ``ip`` is reachable from the Internet (see the
    module docstring for why documentation ranges count as public)."""
    return address_class(ip) in PUBLIC_CLASSES


class PortMapMethod(enum.StrEnum):
    """How a mapping was obtained."""

    PCP = "pcp"  # RFC 6887
    NATPMP = "natpmp"  # RFC 6886
    UPNP = "upnp"  # UPnP IGD 1/2 WANIPConnection


@dataclass(frozen=True, slots=True, kw_only=True)
class PortMapping:
    """A mapping granted by a gateway: packets sent to ``external`` reach
    ``internal`` for ``lifetime`` seconds (0: until deleted, UPnP IGD:1
    permanent leases).

    ``gateway`` is the server that granted it (the PCP/NAT-PMP server, or the
    IGD's control URL host and port); ``nonce`` (PCP) and ``control_url`` /
    ``service_type`` (UPnP) are what deleting or renewing it needs.
    """

    proto: IpProto
    internal: Endpoint
    external: Endpoint
    lifetime: float
    method: PortMapMethod
    gateway: Endpoint
    public: bool
    nonce: bytes | None = None
    control_url: str | None = None
    service_type: str | None = None
