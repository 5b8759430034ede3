"""What candidate gathering is told: local bases, servers, deadlines, filters.

:class:`GatherConfig` is the one frozen configuration of
:class:`~natkit.ice.gather.Gatherer` (STYLE.md "Configuration"): the STUN
servers (RFC 8445 §5.1.1.2) and TURN servers (each over UDP, TCP or TLS,
with its own long-term credentials) to ask, how long each may take before it
is given up (a dead server never delays the others), the pacing of new
transactions (Ta, RFC 8445 §14.2), which interfaces and addresses are used
for host candidates (§5.1.1.1) and the local port range the driver binds in.
:class:`LocalBase` is one socket the driver opened: a host candidate's
transport address and its component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from natkit.addr import Endpoint, Family, Transport
from natkit.rng import Rng, default_rng
from natkit.stun.transaction import LongTermCredentials

__all__ = ["GatherConfig", "HostAddress", "IPNetwork", "LocalBase", "TurnServerSpec"]

IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnServerSpec:
    """One TURN server (RFC 8656) to allocate a relayed candidate on.

    ``transport`` is how the client reaches the server (UDP, TCP or TLS,
    RFC 8656 §3.1); the relayed candidate itself is UDP either way.
    ``server_hostname`` is the name a TLS certificate must carry. ``family``
    is the relayed address family asked for (RFC 8656 §7.1
    REQUESTED-ADDRESS-FAMILY; IPv4 is the default without the attribute).
    """

    address: Endpoint
    credentials: LongTermCredentials = field(repr=False)
    transport: Transport = Transport.UDP
    server_hostname: str | None = None
    family: Family = Family.IPV4

    def __post_init__(self) -> None:
        if self.transport not in (Transport.UDP, Transport.TCP, Transport.TLS):
            raise ValueError(f"TURN over {self.transport} is not supported")


@dataclass(frozen=True, slots=True)
class HostAddress:
    """One address of one interface, as the driver's stack lists it (the
    input of :func:`~natkit.ice.gather.select_host_addresses`)."""

    interface: str
    ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalBase:
    """A local UDP socket the driver opened for gathering: the host
    candidate's transport address (RFC 8445 §5.1.1.1), its component, and
    the interface it belongs to (for the record)."""

    address: Endpoint
    component: int = 1
    interface: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatherConfig:
    """Defaults: RFC 8445 §14.2 Ta = 50 ms between new transactions; RFC 8489
    §6.2.1 RTO 500 ms; each server given ``server_timeout`` seconds (the
    RFC's 39.5 s transaction timeout would hold gathering for ever: browsers
    give up on a server after a few seconds too)."""

    stun_servers: tuple[Endpoint, ...] = ()
    turn_servers: tuple[TurnServerSpec, ...] = ()
    server_timeout: float = 3.0
    ta: float = 0.05
    rto: float = 0.5
    # Host candidates (RFC 8445 §5.1.1.1): interface names matched with
    # fnmatch; an empty include list means every interface.
    include_interfaces: tuple[str, ...] = ()
    exclude_interfaces: tuple[str, ...] = ()
    exclude_addresses: tuple[IPNetwork, ...] = ()
    ipv4: bool = True
    ipv6: bool = True
    # Loopback and link-local addresses are used only when nothing else is
    # left (RFC 8445 §5.1.1.1: loopback "MUST NOT" be included normally;
    # RFC 8421 §4: link-local only as a last resort), unless asked for.
    allow_loopback: bool = False
    allow_link_local: bool = False
    port_range: tuple[int, int] | None = None  # the driver binds in [low, high]
    components: int = 1  # the driver opens one socket per address and component
    # Port-mapped candidates (ECC report §6.1; RFC 6887 PCP, RFC 6886
    # NAT-PMP, UPnP IGD): the driver asks the NAT itself to map each private
    # IPv4 base, trying these methods in order ("pcp", "natpmp", "upnp";
    # empty: never), each for ``port_mapping_timeout`` seconds, from
    # ``port_mapping_gateway`` (None: the default gateway, port 5351).
    port_mapping: tuple[str, ...] = ()
    port_mapping_gateway: Endpoint | None = None
    port_mapping_timeout: float = 2.0
    port_mapping_lifetime: int = 7200
    software: str | None = "natkit"
    rng: Rng = field(default_factory=default_rng)

    def __post_init__(self) -> None:
        unknown = set(self.port_mapping) - {"pcp", "natpmp", "upnp"}
        if unknown:
            raise ValueError(f"port_mapping methods are pcp, natpmp, upnp: not {sorted(unknown)}")
        if self.port_mapping_timeout <= 0 or self.port_mapping_lifetime < 1:
            raise ValueError("port_mapping_timeout > 0 and port_mapping_lifetime >= 1")
        if self.server_timeout <= 0 or self.ta < 0 or self.rto <= 0:
            raise ValueError("server_timeout and rto must be positive, ta not negative")
        if not 1 <= self.components <= 256:
            raise ValueError("components must be 1-256")
        if self.port_range is not None:
            low, high = self.port_range
            if not 0 < low <= high <= 0xFFFF:
                raise ValueError("port_range must satisfy 0 < low <= high <= 65535")
