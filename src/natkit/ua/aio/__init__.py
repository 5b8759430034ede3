"""The asyncio user agent (:class:`UserAgent`) and per-call media (:class:`CallMedia`)."""

from natkit.ua.aio.agent import Call, CallPhase, UserAgent, UserAgentSettings
from natkit.ua.aio.media import CallMedia, MediaSource

__all__ = ["Call", "CallMedia", "CallPhase", "MediaSource", "UserAgent", "UserAgentSettings"]
