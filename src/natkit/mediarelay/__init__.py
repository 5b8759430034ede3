"""The latching media relay (ECC report §6.4 "NAT proxy"; what rtpengine does
for Kamailio): sans-IO core here, asyncio driver in :mod:`natkit.mediarelay.aio`."""

from natkit.mediarelay.config import MediaRelayConfig
from natkit.mediarelay.events import (
    CallCreated,
    CallDeleted,
    CallTimedOut,
    CallUpdated,
    DeleteReason,
    LatchReason,
    MediaRelayEvent,
    SourceConfirmed,
    SourceLatched,
)
from natkit.mediarelay.legs import Component, LegEndpoints, LegSetup, LegSide, LegUpdate
from natkit.mediarelay.ports import PortAllocator
from natkit.mediarelay.relay import MediaRelay, RelayPort
from natkit.mediarelay.stats import CallStats, DirectionStats

__all__ = [
    "CallCreated",
    "CallDeleted",
    "CallStats",
    "CallTimedOut",
    "CallUpdated",
    "Component",
    "DeleteReason",
    "DirectionStats",
    "LatchReason",
    "LegEndpoints",
    "LegSetup",
    "LegSide",
    "LegUpdate",
    "MediaRelay",
    "MediaRelayConfig",
    "MediaRelayEvent",
    "PortAllocator",
    "RelayPort",
    "SourceConfirmed",
    "SourceLatched",
]
