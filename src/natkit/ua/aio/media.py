"""One call's media on a stack: an RTP socket, STUN on it, G.711 in and out.

Theory of operation
-------------------
:meth:`CallMedia.open` binds the call's RTP socket and, when a STUN server
is configured, sends a Binding request *from that socket* (ECC §6.2): the
XOR-MAPPED-ADDRESS is the address the NAT gave it, which the SDP then
names. Datagrams on the socket are told apart by their first byte (RFC 7983
§7): 0-3 is STUN (only answers from our STUN server are taken), 128-191
RTP/RTCP, anything else is dropped.

:meth:`CallMedia.start` runs an :class:`~natkit.rtp.aio.AsyncRtpSession` on
that same socket, so what we send leaves from where we receive (symmetric
RTP, RFC 4961), with ``a=rtcp-mux`` (RFC 5761). Every 20 ms a frame of the
source (a tone or a WAV file) is G.711-encoded and sent, and one frame is
taken from the :class:`~natkit.media.jitter.JitterBuffer`, decoded and
appended to the recording (silence while nothing plays).

Media from unexpected places: RTP and RTCP are accepted from the SDP's
address, else from the first source that sent valid RTP, and afterwards
only from there - garbage and packets from elsewhere are counted in
:attr:`CallMedia.dropped` and dropped, the call goes on (no RTP-bleed
hijacking; a latching UA, ``latch``, follows a new source instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from natkit.addr import Endpoint
from natkit.errors import NatkitError
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.media.g711 import PCMA, PCMU, G711Codec
from natkit.media.jitter import JitterBuffer, JitterBufferConfig
from natkit.media.pcm import PcmArray
from natkit.net.stack import DatagramEndpoint, Stack
from natkit.rng import Rng
from natkit.rtp.aio import AsyncRtpSession
from natkit.rtp.events import RtpEvent, RtpReceived
from natkit.rtp.session import RtpSession, RtpSessionConfig
from natkit.rtp.srtp import SrtpContext, SrtpSuite
from natkit.sdp.attributes import Direction
from natkit.sdp.offer_answer import NegotiatedStream, SrtpKeys
from natkit.stun.aio.client import AsyncStunClient
from natkit.stun.transaction import StunClient, StunClientConfig

__all__ = ["CallMedia", "IceChannel", "MediaSource"]

_log = logging.getLogger(__name__)

FRAME = 160
FRAME_SECONDS = 0.02
RATE = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaSource:
    """What a call plays: a tone of ``tone_hz``, the frames of a WAV file
    (``frames``, 8 kHz mono, looped), or silence when neither is given."""

    tone_hz: float | None = None
    frames: Sequence[PcmArray] = ()
    amplitude: float = 0.5

    def frame(self, index: int) -> PcmArray:
        """Frame ``index`` (20 ms) of the source; phase-continuous for a tone."""
        if self.tone_hz is not None:
            n = np.arange(index * FRAME, (index + 1) * FRAME)
            wave = self.amplitude * 32767.0 * np.sin(2 * math.pi * self.tone_hz * n / RATE)
            return np.round(wave).astype(np.int16)
        if self.frames:
            return self.frames[index % len(self.frames)]
        return np.zeros(FRAME, np.int16)


class IceChannel:
    """A :class:`~natkit.net.stack.DatagramEndpoint` over component 1 of an
    ICE agent (RTP and RTCP muxed, RFC 5761): what the RTP session sends goes
    over the selected pair (RFC 8445 §12), whatever address it names."""

    def __init__(self, agent: AsyncIceAgent, local: Endpoint, remote: Endpoint) -> None:
        self.agent = agent
        self.remote = remote
        self._local = local
        self._closed = False

    @property
    def local_endpoint(self) -> Endpoint:
        return self._local

    def send(self, data: bytes, remote: Endpoint) -> None:
        if not self._closed:
            self.agent.send(1, data)

    def close(self) -> None:
        self._closed = True  # the agent is closed by its owner

    async def wait_closed(self) -> None:
        return None

    @property
    def closed(self) -> bool:
        return self._closed


def _codec_for(name: str) -> G711Codec | None:
    return {"PCMU": PCMU, "PCMA": PCMA}.get(name.upper())


class CallMedia:
    """The media of one call; see the module docstring."""

    def __init__(
        self,
        endpoint: DatagramEndpoint,
        *,
        source: MediaSource,
        rng: Rng,
        stun_server: Endpoint | None = None,
        latch: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.source = source
        self.rng = rng
        self.latch = latch
        self.stun_server = stun_server
        self.server_reflexive: Endpoint | None = None
        self.session: AsyncRtpSession | None = None
        self.codec: G711Codec | None = None
        self.stream: NegotiatedStream | None = None
        self.dropped = 0
        self.received_packets = 0
        self.first_received_at: float | None = None  # loop time of the first audio packet
        self._stun: AsyncStunClient | None = None
        self._peer: Endpoint | None = None  # where RTP is accepted from, once known
        self._jitter = JitterBuffer()
        self._recording: list[PcmArray] = []
        self._task: asyncio.Task[None] | None = None
        self._receive_pt = 0
        self._send_pt = 0
        self._ice: IceChannel | None = None
        self._srtp_keys: SrtpKeys | None = None

    @classmethod
    async def open(
        cls,
        stack: Stack,
        local: Endpoint,
        *,
        source: MediaSource,
        rng: Rng,
        stun_server: Endpoint | None = None,
        stun_timeout: float = 3.0,
        latch: bool = False,
    ) -> CallMedia:
        """Bind the RTP socket on ``local`` (port 0: any) and learn its
        server-reflexive address from ``stun_server`` (None when it does not
        answer within ``stun_timeout``: the SDP then names the local one)."""
        holder: list[CallMedia] = []
        endpoint = await stack.open_udp(
            local, lambda data, remote: holder[0]._on_datagram(data, remote) if holder else None
        )
        media = cls(endpoint, source=source, rng=rng, stun_server=stun_server, latch=latch)
        holder.append(media)
        if stun_server is not None:
            media._stun = AsyncStunClient(
                StunClient(StunClientConfig(rng=rng)), endpoint, server=stun_server
            )
            try:
                async with asyncio.timeout(stun_timeout):
                    media.server_reflexive = await media._stun.binding()
            except (TimeoutError, NatkitError) as exc:
                _log.info("no server-reflexive address from %s: %s", stun_server, exc)
        return media

    # -- queries ---------------------------------------------------------------------

    @property
    def local(self) -> Endpoint:
        return self.endpoint.local_endpoint

    @property
    def advertised(self) -> Endpoint:
        """What our SDP names: the STUN-learned address, else the socket's."""
        return self.server_reflexive or self.local

    def recording(self) -> PcmArray:
        """Everything played out so far (8 kHz, 16-bit), silence included."""
        if not self._recording:
            return np.zeros(0, np.int16)
        return np.concatenate(self._recording)

    # -- use -------------------------------------------------------------------------

    def start(self, stream: NegotiatedStream, *, ice: IceChannel | None = None) -> None:
        """Start sending and receiving as ``stream`` says (RFC 3264 §6, §8),
        over the RTP socket, or with ``ice`` over the ICE agent's selected
        pair (then the pair, not ``c=``/``m=``, says where media goes)."""
        if self.session is None:
            self._ice = ice
            if ice is not None:
                stream = dataclasses.replace(stream, remote_rtp=ice.remote, remote_rtcp=ice.remote)
            config = RtpSessionConfig(rtcp_mux=True, latch=self.latch, rng=self.rng)
            endpoint: DatagramEndpoint = ice if ice is not None else self.endpoint
            send, receive = _srtp_contexts(stream)
            core = RtpSession(
                config,
                local_rtp=endpoint.local_endpoint,
                now=asyncio.get_running_loop().time(),
                remote_rtp=stream.remote_rtp,
                srtp_send=send,
                srtp_receive=receive,
            )
            self._srtp_keys = stream.srtp
            self.session = AsyncRtpSession(core, endpoint, on_event=self._on_rtp_event)
        self.update(stream)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def update(self, stream: NegotiatedStream) -> None:
        """A new offer/answer moved the stream (re-INVITE, UPDATE)."""
        if self._ice is not None:  # ICE decides where media goes (RFC 8445 §12)
            stream = dataclasses.replace(
                stream, remote_rtp=self._ice.remote, remote_rtcp=self._ice.remote
            )
        self.stream = stream
        codec = stream.codec
        self.codec = _codec_for(codec.name) if codec is not None else None
        if codec is not None:
            self._send_pt = codec.send_payload_type
            self._receive_pt = codec.receive_payload_type
        if self.codec is not None:
            self._jitter = JitterBuffer(
                JitterBufferConfig(silence_payload=self.codec.silence_payload())
            )
        if self.session is not None and stream.srtp != self._srtp_keys:
            self.session.core.set_srtp(*_srtp_contexts(stream))  # RFC 4568 §7.1.4: new keys
            self._srtp_keys = stream.srtp
        if self.session is not None and stream.remote_rtp is not None:
            if stream.remote_rtp != self.session.core.remote_rtp:
                self._peer = None  # the peer moved: learn its source again
            self.session.set_remote(stream.remote_rtp, stream.remote_rtp)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.session is not None:
            self.session.close()
            await self.session.wait_closed()
        if self._stun is not None:
            self._stun.close()
        elif not self.endpoint.closed:
            self.endpoint.close()

    # -- internals -------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        index = 0
        while True:
            self._tick(index, loop.time())
            index += 1
            await asyncio.sleep(max(0.0, start + index * FRAME_SECONDS - loop.time()))

    def _tick(self, index: int, now: float) -> None:
        session, codec, stream = self.session, self.codec, self.stream
        if session is None or codec is None or stream is None:
            return
        sending = stream.direction in (Direction.SENDRECV, Direction.SENDONLY)
        if sending and not stream.remote_hold and session.core.remote_rtp is not None:
            payload = codec.encode(self.source.frame(index))
            try:
                session.send_frame(payload, pt=self._send_pt, timestamp_increment=FRAME)
            except NatkitError as exc:
                _log.debug("frame not sent: %s", exc)
        played = self._jitter.pop(now=now)
        if played is None:
            self._recording.append(np.zeros(FRAME, np.int16))
        else:
            self._recording.append(codec.decode(played.payload))

    def _on_datagram(self, data: bytes, remote: Endpoint) -> None:
        if not data:
            self.dropped += 1
            return
        first = data[0]
        if first < 4:
            if self._stun is not None and remote == self.stun_server:
                self._stun.receive(data, remote)
            else:
                self.dropped += 1
            return
        if self._ice is not None:
            self.dropped += 1  # media goes over ICE now
            return
        self._receive_media(data, remote)

    def receive_ice(self, data: bytes) -> None:
        """Application data the ICE agent received on component 1."""
        if self._ice is None or not data:
            self.dropped += 1
            return
        self._receive_media(data, self._ice.remote)

    def _receive_media(self, data: bytes, remote: Endpoint) -> None:
        if not 128 <= data[0] <= 191 or self.session is None:
            self.dropped += 1
            return
        if not self.latch and remote == self.session.core.remote_rtp:
            self._peer = remote  # what the SDP named always wins
        elif not self.latch and self._peer is not None and remote != self._peer:
            self.dropped += 1  # RFC 4961: a symmetric peer sends from one place
            return
        self.session.receive(data, remote)

    def _on_rtp_event(self, event: RtpEvent) -> None:
        if not isinstance(event, RtpReceived):
            return
        if not self.latch:
            if self._peer is None:
                self._peer = event.source  # the first valid RTP names the peer
            elif event.source != self._peer:
                self.dropped += 1
                return
        packet = event.packet
        if packet.payload_type != self._receive_pt or self.codec is None:
            return  # telephone-event and others are not played
        self.received_packets += 1
        now = asyncio.get_running_loop().time()
        if self.first_received_at is None:
            self.first_received_at = now
        self._jitter.push(
            packet.sequence_number, packet.timestamp, packet.payload, now=now, ssrc=packet.ssrc
        )


def _srtp_contexts(stream: NegotiatedStream) -> tuple[SrtpContext | None, SrtpContext | None]:
    """SRTP for what we send (our key) and what we receive (the peer's), as
    the offer/answer keyed ``stream`` (RFC 4568 §6.1); plain RTP without keys."""
    keys = stream.srtp
    if keys is None:
        return None, None
    suite = SrtpSuite(keys.suite)
    return SrtpContext(suite, keys.local_key_salt), SrtpContext(suite, keys.remote_key_salt)
