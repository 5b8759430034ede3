"""The media relay's asyncio driver."""

from natkit.mediarelay.aio.server import CallEndpoints, LegOffer, MediaRelayServer

__all__ = ["CallEndpoints", "LegOffer", "MediaRelayServer"]
