"""asyncio driver for :class:`natkit.rtp.session.RtpSession` on any stack."""

from natkit.rtp.aio.session import AsyncRtpSession

__all__ = ["AsyncRtpSession"]
