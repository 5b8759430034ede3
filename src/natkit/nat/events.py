"""Events of the NAT behaviour core (:mod:`natkit.nat.box`): a structured trace.

A :class:`~natkit.nat.box.NatBox` reports what it did with each packet and
each mapping through ``next_event()``. Mapping lifecycle events and drops are
always reported; the per-packet success events (:class:`PacketTranslated`,
:class:`PacketHairpinned`) only when the box was built with ``trace=True``,
because a simulator pushing hundreds of thousands of packets per second does
not want an event object for each of them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.packet import IpProto, Packet

__all__ = [
    "Direction",
    "DropReason",
    "MappingCreated",
    "MappingExpired",
    "MappingRemoved",
    "NatEvent",
    "PacketDropped",
    "PacketHairpinned",
    "PacketTranslated",
    "Side",
]


class Side(enum.StrEnum):
    """The interface of the box a packet arrives on or leaves by."""

    INSIDE = "inside"
    OUTSIDE = "outside"


class Direction(enum.StrEnum):
    """Which way a translated packet went (RFC 4787 §3 terminology)."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


class DropReason(enum.StrEnum):
    """Why the box did not forward a packet."""

    NO_MAPPING = "no-mapping"
    """Inbound: no mapping owns the destination. Outbound TCP: no mapping and
    the packet is not a SYN (RFC 5382: only a SYN creates a mapping)."""
    NO_CONNECTION = "no-connection"
    """TCP: the mapping exists but no tracked connection with this remote, and
    the packet is not a SYN that could start one."""
    FILTERED = "filtered"
    """The mapping exists but its filter (RFC 4787 §5) refuses this remote."""
    EXPIRED = "expired"
    """The mapping it would use had timed out (found before the timer ran)."""
    BLOCKED = "blocked"
    """Policy: UDP blocked, or not on the outbound allow-list."""
    HAIRPIN_DISABLED = "hairpin-disabled"
    """Addressed from the inside to the box's own public address, and the box
    does not hairpin (RFC 4787 §6)."""
    FOREIGN_SOURCE = "foreign-source"
    """From the inside with a source outside the inside networks, or from the
    outside with an inside or own source (spoofed)."""
    FOREIGN_DESTINATION = "foreign-destination"
    """From the outside to an address this box does not serve, or from the
    inside to an inside address (the LAN delivers those, not the NAT)."""
    UNSUPPORTED = "unsupported"
    """Not IPv4 UDP or TCP (IPv6, ICMP, other protocols)."""
    MALFORMED = "malformed"
    """A source port no mapping can be made for (0 or out of range)."""
    PORTS_EXHAUSTED = "ports-exhausted"
    """A new mapping was needed and no external port was free."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingCreated:
    """A mapping (RFC 4787 §4) now exists from ``internal`` to ``external``.

    ``remote`` is the destination of the packet that created it (``None`` for
    an explicit port mapping). For a box that does not translate (a firewall)
    ``external == internal``: the mapping is the firewall's state for that
    endpoint. An explicit mapping that takes over a dynamic endpoint-independent
    one reports ``MappingCreated`` again, with the same external endpoint.
    """

    proto: IpProto
    internal: Endpoint
    external: Endpoint
    remote: Endpoint | None
    explicit: bool
    expires: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingExpired:
    """A mapping timed out (RFC 4787 §4.3, RFC 5382 §5) and was forgotten."""

    proto: IpProto
    internal: Endpoint
    external: Endpoint
    explicit: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MappingRemoved:
    """An explicit port mapping was deleted before it expired."""

    proto: IpProto
    internal: Endpoint
    external: Endpoint


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketTranslated:
    """A packet crossed the box (only with ``trace=True``). For a box that
    does not translate, ``before`` and ``after`` are the same packet."""

    direction: Direction
    before: Packet
    after: Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketHairpinned:
    """A packet from the inside to the box's own public address went back
    inside (RFC 4787 §6, only with ``trace=True``). ``after.src`` is the
    sender's external mapping (REQ-9)."""

    before: Packet
    after: Packet


@dataclass(frozen=True, slots=True, kw_only=True)
class PacketDropped:
    """A packet that arrived on ``side`` was not forwarded."""

    side: Side
    packet: Packet
    reason: DropReason


NatEvent = (
    MappingCreated
    | MappingExpired
    | MappingRemoved
    | PacketTranslated
    | PacketHairpinned
    | PacketDropped
)
