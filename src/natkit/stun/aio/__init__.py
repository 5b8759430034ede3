"""asyncio drivers for the STUN cores (they run on any :class:`~natkit.net.stack.Stack`)."""

from natkit.stun.aio.client import AsyncStunClient
from natkit.stun.aio.server import StunServerRunner

__all__ = ["AsyncStunClient", "StunServerRunner"]
