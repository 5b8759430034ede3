"""natkit's SIP user agent.

- :mod:`natkit.ua.call`: :class:`UserAgentCore`, the sans-IO INVITE/BYE/
  CANCEL/OPTIONS/re-INVITE/UPDATE state machine over natkit's transaction
  and dialog cores (RFC 3261 §8, §9, §12-§15, RFC 3311, RFC 3264);
- :mod:`natkit.ua.events`: what it reports;
- :mod:`natkit.ua.media`: the media path choice (ICE, STUN + symmetric RTP,
  or the SDP as given; ECC report §6.2-6.4, RFC 6314 §5.2.2);
- :mod:`natkit.ua.aio`: the asyncio :class:`~natkit.ua.aio.UserAgent` that
  registers, calls, answers and runs the RTP media of each call.
"""

from natkit.ua.call import CallState, UserAgentConfig, UserAgentCore
from natkit.ua.media import MediaPath, MediaPlan, choose_media_path

__all__ = [
    "CallState",
    "MediaPath",
    "MediaPlan",
    "UserAgentConfig",
    "UserAgentCore",
    "choose_media_path",
]
