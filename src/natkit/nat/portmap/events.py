"""Events of the port-mapping client cores (past tense, frozen, keyword-only).

NAT-PMP and PCP clients report the same events, so a caller (or a PCP
client that fell back to NAT-PMP) handles both with one ``match``; each
event names the :class:`~natkit.nat.portmap.mapping.PortMapMethod` that
produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.nat.portmap.mapping import PortMapMethod
from natkit.packet import IpProto

__all__ = [
    "ExternalAddressFailed",
    "ExternalAddressReceived",
    "FellBackToNatPmp",
    "MappingDeleted",
    "MappingExpired",
    "MappingFailed",
    "MappingGranted",
    "PortMapEvent",
    "ServerStateLost",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAddressReceived:
    """NAT-PMP (RFC 6886 §3.2): the gateway's external IPv4 address, asked
    for or announced. ``epoch`` is the server's seconds since start of epoch."""

    address: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAddressFailed:
    """NAT-PMP: the address request was refused (``code``) or went
    unanswered after every retransmission (``code`` is ``None``)."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingGranted:
    """The server created or renewed a mapping: packets to ``external``
    reach ``internal`` for ``lifetime`` seconds. Reported again after each
    renewal (``renewed=True``) and when the external address changes."""

    proto: IpProto
    internal: Endpoint
    external: Endpoint
    lifetime: float
    method: PortMapMethod
    renewed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingFailed:
    """The server refused the mapping (``code`` is its result code: a
    :class:`~natkit.nat.portmap.natpmp.NatPmpResult` or
    :class:`~natkit.nat.portmap.pcp.PcpResult`), or no answer came after
    every retransmission (``code`` is ``None``). The client forgets the
    mapping."""

    proto: IpProto
    internal: Endpoint
    code: int | None
    method: PortMapMethod
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingDeleted:
    """The server confirmed the deletion of a mapping (lifetime 0)."""

    proto: IpProto
    internal: Endpoint
    method: PortMapMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingExpired:
    """A granted mapping reached the end of its lifetime before a renewal
    was answered; the client forgets it."""

    proto: IpProto
    internal: Endpoint
    method: PortMapMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStateLost:
    """The server's epoch shows it lost its mappings (a reboot: RFC 6886
    §3.6, RFC 6887 §8.5), or it sent an ANNOUNCE; the client is renewing
    every mapping it holds."""

    epoch: int
    method: PortMapMethod


@dataclass(frozen=True, slots=True, kw_only=True)
class FellBackToNatPmp:
    """A PCP client met a NAT-PMP-only server (UNSUPP_VERSION with version
    0, RFC 6887 §9) and speaks NAT-PMP to it from now on."""

    server: Endpoint


PortMapEvent = (
    ExternalAddressReceived
    | ExternalAddressFailed
    | MappingGranted
    | MappingFailed
    | MappingDeleted
    | MappingExpired
    | ServerStateLost
    | FellBackToNatPmp
)
