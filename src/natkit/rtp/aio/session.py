"""An RTP session on a stack: one RTP socket (and one RTCP socket, or none
with rtcp-mux), driven by :class:`~natkit.net.driver.CoreDriver`.

The sockets are the session's local endpoints, so what it sends leaves from
where it receives (RFC 4961). Events go to an ``on_event`` callback when
given (a jitter buffer wants them at once), else into a bounded queue read
with :meth:`AsyncRtpSession.next_event`; when that queue is full the oldest
event is dropped, so a reader that falls behind costs memory only up to the
bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from natkit.addr import Endpoint
from natkit.errors import NatkitError
from natkit.net.driver import ClosedOnExit, CoreDriver
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.rtp.events import RtpEvent, RtpStatistics
from natkit.rtp.packet import ExtensionElement, RtpPacket
from natkit.rtp.session import RtpSession, RtpSessionConfig
from natkit.rtp.srtp import SrtpContext

__all__ = ["AsyncRtpSession"]


class AsyncRtpSession(ClosedOnExit):
    """:class:`RtpSession` over a stack's UDP sockets."""

    def __init__(
        self,
        core: RtpSession,
        rtp_endpoint: DatagramEndpoint,
        rtcp_endpoint: DatagramEndpoint | None = None,
        *,
        on_event: Callable[[RtpEvent], None] | None = None,
        max_queued_events: int = 1024,
    ) -> None:
        self.core = core
        self.rtp_endpoint = rtp_endpoint
        self.rtcp_endpoint = rtcp_endpoint
        self._on_event = on_event
        self._queue: asyncio.Queue[RtpEvent] = asyncio.Queue(max_queued_events)
        self.dropped_events = 0
        endpoints: dict[Endpoint | None, DatagramEndpoint] = {
            core.local_rtp: rtp_endpoint,
            None: rtp_endpoint,
        }
        if rtcp_endpoint is not None:
            endpoints[core.local_rtcp] = rtcp_endpoint
        self.driver: CoreDriver[RtpEvent] = CoreDriver(core, endpoints, self._deliver)
        self.driver.flush()  # arms the first RTCP timer

    @classmethod
    async def open(
        cls,
        stack: Stack,
        local_rtp: Endpoint,
        *,
        config: RtpSessionConfig | None = None,
        remote_rtp: Endpoint | None = None,
        local_rtcp: Endpoint | None = None,
        remote_rtcp: Endpoint | None = None,
        srtp_send: SrtpContext | None = None,
        srtp_receive: SrtpContext | None = None,
        on_event: Callable[[RtpEvent], None] | None = None,
    ) -> AsyncRtpSession:
        """Bind the RTP socket on ``local_rtp`` (port 0: any) and, without
        rtcp-mux, the RTCP socket on ``local_rtcp`` - by default the next
        port up (RFC 3550 §11), or any free port when that one is taken (the
        SDP then names it with ``a=rtcp``, RFC 3605)."""
        config = config or RtpSessionConfig()
        holder: list[AsyncRtpSession] = []

        def on_rtp(data: bytes, remote: Endpoint) -> None:
            if holder:
                holder[0].receive(data, remote, rtcp=False)

        def on_rtcp(data: bytes, remote: Endpoint) -> None:
            if holder:
                holder[0].receive(data, remote, rtcp=True)

        rtp_ep = await stack.open_udp(local_rtp, on_rtp)
        rtcp_ep: DatagramEndpoint | None = None
        try:
            if not config.rtcp_mux:
                bound = rtp_ep.local_endpoint
                wanted = local_rtcp or bound.with_port(min(bound.port + 1, 0xFFFF))
                try:
                    rtcp_ep = await stack.open_udp(wanted, on_rtcp)
                except (OSError, NatkitError):
                    if local_rtcp is not None:
                        raise
                    rtcp_ep = await stack.open_udp(bound.with_port(0), on_rtcp)
        except BaseException:
            rtp_ep.close()
            raise
        core = RtpSession(
            config,
            local_rtp=rtp_ep.local_endpoint,
            local_rtcp=None if rtcp_ep is None else rtcp_ep.local_endpoint,
            remote_rtp=remote_rtp,
            remote_rtcp=remote_rtcp,
            now=asyncio.get_running_loop().time(),
            srtp_send=srtp_send,
            srtp_receive=srtp_receive,
        )
        session = cls(core, rtp_ep, rtcp_ep, on_event=on_event)
        holder.append(session)
        return session

    # -- use -------------------------------------------------------------------------

    @property
    def local_rtp(self) -> Endpoint:
        return self.core.local_rtp

    @property
    def local_rtcp(self) -> Endpoint:
        return self.core.local_rtcp

    @property
    def statistics(self) -> RtpStatistics:
        return self.core.statistics

    def receive(self, data: bytes, remote: Endpoint, *, rtcp: bool = False) -> None:
        """Feed a datagram that arrived on the RTP (or RTCP) socket."""
        local = self.core.local_rtcp if rtcp else self.core.local_rtp
        self.core.receive_datagram(data, remote, now=self.driver.now(), local=local)
        self.driver.flush()

    def set_remote(self, rtp: Endpoint, rtcp: Endpoint | None = None) -> None:
        self.core.set_remote(rtp, rtcp)

    def send_frame(
        self,
        payload: bytes,
        *,
        pt: int,
        timestamp_increment: int = 0,
        media_timestamp: int | None = None,
        marker: bool = False,
        csrcs: tuple[int, ...] = (),
        extension_profile: int | None = None,
        extensions: tuple[ExtensionElement, ...] = (),
    ) -> RtpPacket:
        """:meth:`RtpSession.send_frame` now, and send it."""
        packet = self.core.send_frame(
            payload,
            pt=pt,
            now=self.driver.now(),
            timestamp_increment=timestamp_increment,
            media_timestamp=media_timestamp,
            marker=marker,
            csrcs=csrcs,
            extension_profile=extension_profile,
            extensions=extensions,
        )
        self.driver.flush()
        return packet

    async def next_event(self) -> RtpEvent:
        """The next event (only when no ``on_event`` callback was given)."""
        return await self._queue.get()

    def close(self, reason: str | None = None) -> None:
        """Send BYE (RFC 3550 §6.6) and close the sockets."""
        if not self.core.closed:
            self.core.close(now=self.driver.now(), reason=reason)
            self.driver.flush()
        self.driver.close()
        self.rtp_endpoint.close()
        if self.rtcp_endpoint is not None:
            self.rtcp_endpoint.close()

    async def wait_closed(self) -> None:
        await self.rtp_endpoint.wait_closed()
        if self.rtcp_endpoint is not None:
            await self.rtcp_endpoint.wait_closed()

    # -- internals -------------------------------------------------------------------

    def _deliver(self, event: RtpEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped_events += 1
        self._queue.put_nowait(event)
