"""The asyncio user agent: registers, places and answers calls, runs their media.

Theory of operation
-------------------
:class:`UserAgent` drives a :class:`~natkit.ua.call.UserAgentCore` on a
:class:`~natkit.sip.aio.transport.SipTransportLayer` with STYLE.md's driver
pattern: after every call into the core it drains the core's events, sends
what the core queued (a failed send goes back as ``send_failed``) and
re-arms one ``loop.call_at`` at the core's timer.

With ``register`` the UA registers through a
:class:`~natkit.sip.aio.registration.RegistrationAgent` (RFC 5626 Outbound,
its keepalives) and shares its transport: REGISTER responses go to the
registration client, every other message to the UA core, and calls go out
through the registrar as outbound proxy over the registered flow.

Each call gets a :class:`~natkit.ua.aio.media.CallMedia` before its SDP is
written (the RTP socket, and the STUN-learned address when a STUN server is
configured), and the media path is chosen with
:func:`~natkit.ua.media.choose_media_path`: ICE when both sides do it, else
STUN + symmetric RTP when STUN answered, else plain RTP to what the SDP says
(direct, or a media relay that rewrote it).

ICE (``settings.ice``): the caller gathers with an
:class:`~natkit.ice.aio.agent.AsyncIceAgent` (controlling) and offers every
candidate (no trickle); a callee that gets an ICE offer gathers (controlled)
and answers with its own. Once the 2xx/ACK exchange is done the agents run
their checks, RTP goes over the selected pair (an
:class:`~natkit.ua.aio.media.IceChannel`), and the caller sends the updated
offer of RFC 6314 §5.2.1.2 (a re-INVITE whose c=/m= name the selected
candidate). ``c=``/``m=`` of the first offer and answer name the call's RTP
socket (its STUN-learned address) rather than an ICE candidate, so a peer
without ICE still gets media there; ICE failing falls back to it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from natkit.addr import Endpoint
from natkit.errors import TransportError
from natkit.ice.aio.agent import AsyncIceAgent, IceConnectionFailed
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.ice.sdp import IceDescription
from natkit.media.pcm import PcmArray
from natkit.net.stack import Stack
from natkit.rng import Rng, default_rng
from natkit.sdp.attributes import Attribute
from natkit.sdp.model import SessionDescription
from natkit.sdp.offer_answer import (
    Codec,
    LocalCapabilities,
    NegotiatedStream,
    SrtpPolicy,
    answer,
    build_offer,
)
from natkit.sip.aio.registration import RegistrationAgent
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage
from natkit.sip.registration import FlowConfig, RegistrationConfig
from natkit.sip.uri import SipUri, Uri, parse_uri
from natkit.ua.aio.media import CallMedia, IceChannel, MediaSource
from natkit.ua.call import UserAgentConfig, UserAgentCore
from natkit.ua.events import (
    CallEnded,
    CallEstablished,
    CallOffered,
    CallProgressed,
    CallRole,
    MediaUpdated,
    OfferRejected,
    OptionsAnswered,
    UserAgentEvent,
)
from natkit.ua.media import (
    DEFAULT_CODECS,
    MediaPath,
    MediaPlan,
    choose_media_path,
    first_audio,
    ice_attributes,
    local_capabilities,
    offers_ice,
    remote_ice,
    with_media_attributes,
)

__all__ = ["Call", "CallPhase", "UserAgent", "UserAgentSettings"]

_log = logging.getLogger(__name__)


class CallPhase(enum.StrEnum):
    """What ``natkit call`` shows as the call goes on."""

    DIALLING = "dialling"
    TRYING = "trying"
    RINGING = "ringing"
    INCOMING = "incoming"
    ESTABLISHED = "established"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class UserAgentSettings:
    """One UA: ``aor`` its address of record; ``local_ip`` the address it
    binds SIP (``sip_port``, 0 = any) and RTP (``rtp_port``, 0 = any) to;
    ``proxy`` the outbound proxy / registrar every request goes to (None:
    straight to the URI's host); ``register`` registers ``aor`` there with
    Outbound first; ``username``/``password`` answer challenges;
    ``stun_server`` learns each call's server-reflexive RTP address;
    ``latch`` follows the peer's actual RTP source (comedia, off: a natkit UA
    is symmetric itself); ``auto_answer`` answers every incoming call;
    ``ice`` (the STUN/TURN servers to gather from) offers ICE on our calls
    and answers ICE offers with ICE, ``ice_timeout`` bounds the checks;
    ``srtp`` protects media with SDES-keyed SRTP (RFC 4568, RFC 3711):
    ``NONE`` plain RTP, ``OPTIONAL`` offers keys on RTP/AVP and uses SRTP
    when the peer answers with keys, ``REQUIRED`` offers RTP/SAVP and
    refuses (488) an offer without a usable ``a=crypto``."""

    aor: SipUri
    local_ip: str
    sip_port: int = 5060
    rtp_port: int = 0
    transport: SipTransport = SipTransport.UDP
    proxy: Endpoint | None = None
    register: bool = False
    expires: int = 600
    username: str | None = None
    password: str | None = None
    stun_server: Endpoint | None = None
    latch: bool = False
    auto_answer: bool = True
    source: MediaSource = field(default_factory=MediaSource)
    codecs: tuple[Codec, ...] = DEFAULT_CODECS
    ice: GatherConfig | None = None
    ice_config: IceConfig | None = None
    ice_timeout: float = 10.0
    srtp: SrtpPolicy = SrtpPolicy.NONE
    rng: Rng = field(default_factory=default_rng)


@dataclass(eq=False)
class Call:
    """One call as the driver sees it: its phases, media plan and media."""

    call_id: str
    role: CallRole
    remote: str
    phase: CallPhase = CallPhase.DIALLING
    history: list[str] = field(default_factory=list)
    plan: MediaPlan | None = None
    media: CallMedia | None = None
    end: CallEnded | None = None
    offer: SessionDescription | None = None
    ice: AsyncIceAgent | None = None
    established: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self) -> MediaPath | None:
        return None if self.plan is None else self.plan.path

    def recording(self) -> PcmArray:
        """What this side heard so far (empty before media started)."""
        from numpy import int16, zeros

        return self.media.recording() if self.media is not None else zeros(0, int16)


ProgressHandler = Callable[[Call, str], None]


class UserAgent:
    """``async with UserAgent(stack, settings) as ua: call = await ua.call(uri)``."""

    def __init__(
        self,
        stack: Stack,
        settings: UserAgentSettings,
        *,
        on_progress: ProgressHandler | None = None,
    ) -> None:
        self.stack = stack
        self.settings = settings
        self._on_progress = on_progress
        self.registration: RegistrationAgent | None = None
        self.transport: SipTransportLayer | None = None
        self.core: UserAgentCore | None = None
        self.calls: dict[str, Call] = {}
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self.options_answers: dict[str, OptionsAnswered] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Listen (and register, waiting for the first 2xx)."""
        self._loop = asyncio.get_running_loop()
        s = self.settings
        local = Endpoint(s.local_ip, s.sip_port)
        contact_host = s.local_ip
        if s.register:
            if s.proxy is None:
                raise ValueError("registering needs a registrar (proxy)")
            if s.sip_port == 0:
                raise ValueError("a registering UA needs a fixed SIP port")
            target = Target(s.transport, s.proxy)
            registrar = SipUri(scheme="sip", host=s.aor.host)
            reg = RegistrationConfig(
                aor=s.aor,
                registrar=registrar,
                contact=SipUri(scheme="sip", host=contact_host, user=s.aor.user, port=s.sip_port),
                sent_by=local,
                flows=(FlowConfig(target=target),),
                expires=s.expires,
                username=s.username,
                password=s.password,
                rng=s.rng,
            )
            # The UA's calls share the registered flows (RFC 5626 §4.3): what is
            # not a REGISTER response comes to the UA.
            self.registration = RegistrationAgent(
                self.stack, reg, on_other_message=self._on_message
            )
            self.transport = self.registration.transport
            self._make_core(local)
            await self.registration.start()
            await self.registration.registered()
            return
        self.transport = SipTransportLayer(self.stack, self._on_message, rng=s.rng)
        bound = await self.transport.listen(s.transport, local)
        self._make_core(bound)

    def _make_core(self, sent_by: Endpoint) -> None:
        s = self.settings
        outbound = Target(s.transport, s.proxy) if s.proxy is not None else None
        contact = SipUri(scheme="sip", host=sent_by.host, user=s.aor.user, port=sent_by.port)
        self.core = UserAgentCore(
            UserAgentConfig(
                aor=s.aor,
                contact=contact,
                sent_by=sent_by,
                transport=s.transport,
                outbound=outbound,
                username=s.username,
                password=s.password,
                rng=s.rng,
            )
        )

    @property
    def sip_endpoint(self) -> Endpoint:
        assert self.core is not None
        return self.core.config.sent_by

    async def close(self) -> None:
        """Hang up every call, unregister, close the sockets."""
        for call in list(self.calls.values()):
            if call.end is None:
                await self.hangup(call)
        for call in list(self.calls.values()):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await call.ended.wait()
            if call.media is not None:
                await call.media.close()
        if self.registration is not None:
            with contextlib.suppress(Exception):
                await self.registration.unregister(timeout=2.0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self.registration is not None:
            await self.registration.close()
        elif self.transport is not None:
            self.transport.close()
            await self.transport.wait_closed()

    async def __aenter__(self) -> UserAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- calls ---------------------------------------------------------------------

    async def call(self, uri: Uri | str) -> Call:
        """Call ``uri``: open the media (STUN first), send the INVITE; the
        returned :class:`Call` sets ``established`` and ``ended``."""
        core = self._core()
        target = parse_uri(uri) if isinstance(uri, str) else uri
        media = await self._open_media()
        caps = self._caps(media)
        holder: list[Call] = []
        ice: AsyncIceAgent | None = None
        attributes: tuple[Attribute, ...] = ()
        offer = None
        if self.settings.ice is not None:
            ice, attributes = await self._gather(holder, controlling=True)
            offer = with_media_attributes(build_offer(caps), attributes)
        call_id = core.invite(target, caps, now=self._now(), offer=offer)
        call = Call(call_id=call_id, role=CallRole.CALLER, remote=str(target), media=media)
        call.ice = ice
        holder.append(call)
        if attributes:
            core.set_media_attributes(call_id, attributes)
        self.calls[call_id] = call
        self._progress(call, CallPhase.DIALLING, f"calling {target}")
        self._pump()
        return call

    async def hangup(self, call: Call) -> None:
        self._core().hangup(call.call_id, now=self._now())
        self._pump()

    def options(self, uri: Uri | str) -> str:
        target = parse_uri(uri) if isinstance(uri, str) else uri
        request_id = self._core().options(target, now=self._now())
        self._pump()
        return request_id

    def _caps(self, media: CallMedia) -> LocalCapabilities:
        s = self.settings
        return local_capabilities(media.advertised, rng=s.rng, codecs=s.codecs, srtp=s.srtp)

    async def _open_media(self) -> CallMedia:
        s = self.settings
        return await CallMedia.open(
            self.stack,
            Endpoint(s.local_ip, s.rtp_port),
            source=s.source,
            rng=s.rng,
            stun_server=s.stun_server,
            latch=s.latch,
        )

    # -- the pump ------------------------------------------------------------------

    def _core(self) -> UserAgentCore:
        if self.core is None:
            raise RuntimeError("the user agent is not started")
        return self.core

    def _now(self) -> float:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    def _pump(self) -> None:
        core = self.core
        transport = self.transport
        if core is None or transport is None:
            return
        while (event := core.next_event()) is not None:
            self._handle(event)
        for message, target in core.messages_to_send():
            transport.send_soon(message, target, on_failed=self._failed_for(message))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = core.get_timer()
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _failed_for(self, message: SipMessage) -> Callable[[Target, TransportError], None]:
        def failed(target: Target, exc: TransportError) -> None:
            _log.info("sending to %s failed: %s", target.remote, exc)
            if self.core is not None:
                self.core.send_failed(message, now=self._now())
                self._pump()

        return failed

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is not None:
            self.core.handle_timer(now=self._now())
        self._pump()

    def _on_message(self, message: SipMessage, source: Source) -> None:
        if self.core is None:
            return
        self.core.receive_message(message, source, now=self._now())
        self._pump()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _progress(self, call: Call, phase: CallPhase, text: str) -> None:
        call.phase = phase
        call.history.append(text)
        _log.info("%s %s: %s", call.call_id[:8], phase, text)
        if self._on_progress is not None:
            self._on_progress(call, text)

    # -- core events ---------------------------------------------------------------

    def _handle(self, event: UserAgentEvent) -> None:
        match event:
            case CallOffered(call_id=call_id, caller=caller, offer=offer):
                call = Call(call_id=call_id, role=CallRole.CALLEE, remote=str(caller))
                call.offer = offer
                self.calls[call_id] = call
                self._progress(call, CallPhase.INCOMING, f"incoming call from {caller}")
                self.incoming.put_nowait(call)
                if self.settings.auto_answer:
                    self._spawn(self._answer(call))
            case CallProgressed(call_id=call_id, status=status, reason=reason):
                call = self.calls[call_id]
                phase = CallPhase.TRYING if status == 100 else CallPhase.RINGING
                self._progress(call, phase, f"{status} {reason}")
            case CallEstablished(call_id=call_id, streams=streams, remote_sdp=remote):
                call = self.calls[call_id]
                stream = first_audio(streams)
                media = call.media
                if media is None or stream is None:
                    self._core().hangup(call_id, now=self._now())
                    return
                path = choose_media_path(
                    remote,
                    ice_capable=call.ice is not None,
                    server_reflexive=media.server_reflexive,
                )
                if path is MediaPath.ICE and self._start_ice(call, stream, remote):
                    return
                if path is MediaPath.ICE:  # the peer's ICE lines are unusable
                    path = MediaPath.STUN if media.server_reflexive else MediaPath.SDP
                if call.ice is not None:
                    self._spawn(call.ice.close())
                    call.ice = None
                self._media_up(call, media, stream, path, None)
            case MediaUpdated(call_id=call_id, streams=streams, method=method):
                call = self.calls[call_id]
                stream = first_audio(streams)
                if call.media is not None and stream is not None and call.plan is not None:
                    call.media.update(stream)
                    call.plan = MediaPlan.of(
                        call.plan.path, call.plan.local, call.plan.advertised, stream
                    )
                    self._progress(
                        call, call.phase, f"{method} moved media: {call.plan.describe()}"
                    )
            case OfferRejected(call_id=call_id, method=method, status=status):
                call = self.calls[call_id]
                self._progress(call, call.phase, f"{method} refused with {status}")
            case CallEnded(call_id=call_id):
                ended = self.calls.get(call_id)
                if ended is None:
                    return
                call = ended
                call.end = event
                failed = event.status is not None and not call.established.is_set()
                phase = CallPhase.FAILED if failed else CallPhase.ENDED
                self._progress(call, phase, f"ended: {event.reason}")
                if call.media is not None:
                    self._spawn(call.media.close())
                if call.ice is not None:
                    self._spawn(call.ice.close())
                    call.ice = None
                call.ended.set()
            case OptionsAnswered(request_id=request_id):
                self.options_answers[request_id] = event

    async def _answer(self, call: Call) -> None:
        try:
            media = await self._open_media()
        except (OSError, TransportError) as exc:
            _log.warning("no media socket for %s: %s", call.call_id, exc)
            self._core().reject(call.call_id, 500, now=self._now())
            self._pump()
            return
        call.media = media
        caps = self._caps(media)
        core = self._core()
        sdp = None
        if self.settings.ice is not None and call.offer is not None and offers_ice(call.offer):
            call.ice, attributes = await self._gather([call], controlling=False)
            sdp = with_media_attributes(answer(call.offer, caps), attributes)
            core.set_media_attributes(call.call_id, attributes)
        if not core.accept(call.call_id, caps, now=self._now(), sdp=sdp):
            await media.close()
            call.media = None
            if call.ice is not None:
                await call.ice.close()
                call.ice = None
        self._pump()

    # -- ICE (RFC 8445, RFC 8839, RFC 6314 §5.2.1.2) ----------------------------------

    async def _gather(
        self, holder: list[Call], *, controlling: bool
    ) -> tuple[AsyncIceAgent, tuple[Attribute, ...]]:
        """An ICE agent with every candidate gathered (no trickle: the
        offer/answer carries them all, RFC 8839 §4.4)."""

        def on_data(component: int, data: bytes) -> None:
            if holder and holder[0].media is not None:
                holder[0].media.receive_ice(data)

        agent = AsyncIceAgent(
            self.stack,
            controlling=controlling,
            config=self.settings.ice_config,
            gather_config=self.settings.ice,
            on_data=on_data,
        )
        await agent.start()
        candidates = [c async for c in agent.local_candidates()]
        creds = agent.local_credentials
        return agent, ice_attributes(creds.ufrag, creds.pwd, candidates)

    def _start_ice(self, call: Call, stream: NegotiatedStream, remote: SessionDescription) -> bool:
        """Feed the peer's ICE attributes to our agent and run the checks;
        False when they are unusable (our agent is closed then)."""
        agent = call.ice
        description = remote_ice(remote)
        if agent is None or description is None:
            return False
        self._spawn(self._connect_ice(call, agent, stream, description))
        return True

    async def _connect_ice(
        self, call: Call, agent: AsyncIceAgent, stream: NegotiatedStream, desc: IceDescription
    ) -> None:
        assert desc.ufrag is not None and desc.pwd is not None
        agent.set_remote_credentials(desc.ufrag, desc.pwd)
        for line in desc.candidates:
            if line.component == 1 and not line.is_fqdn:
                agent.add_remote_candidate(line.to_candidate())
        agent.end_of_remote_candidates()
        self._progress(call, call.phase, f"ICE: checking {len(desc.candidates)} remote candidates")
        media = call.media
        pair = None
        try:
            async with asyncio.timeout(self.settings.ice_timeout):
                await agent.connect()
            pair = agent.selected_pair(1)
        except (TimeoutError, IceConnectionFailed) as exc:
            self._progress(call, call.phase, f"ICE failed ({exc or 'timeout'}); using the SDP")
        if media is None or call.end is not None:
            return
        if pair is None:
            call.ice = None
            self._spawn(agent.close())
            path = MediaPath.STUN if media.server_reflexive is not None else MediaPath.SDP
            self._media_up(call, media, stream, path, None)
            return
        local, remote = pair
        channel = IceChannel(agent, local.address, remote.address)
        self._media_up(call, media, stream, MediaPath.ICE, channel)
        if call.role is CallRole.CALLER:  # the caller's agent is the controlling one
            # RFC 6314 §5.2.1.2, RFC 8839 §4.4.1.2.2: the controlling agent
            # sends an updated offer whose c=/m= name the selected candidate.
            s = self.settings
            caps = local_capabilities(local.address, rng=s.rng, codecs=s.codecs)
            self._core().reinvite(call.call_id, caps, now=self._now())
            self._pump()

    def _media_up(
        self,
        call: Call,
        media: CallMedia,
        stream: NegotiatedStream,
        path: MediaPath,
        channel: IceChannel | None,
    ) -> None:
        if channel is not None:
            call.plan = MediaPlan(
                path=path,
                local=channel.local_endpoint,
                advertised=channel.local_endpoint,
                remote_rtp=channel.remote,
                remote_rtcp=channel.remote,
                rtcp_mux=True,
            )
        else:
            call.plan = MediaPlan.of(path, media.local, media.advertised, stream)
        media.start(stream, ice=channel)
        codec = stream.codec.name if stream.codec is not None else "?"
        secure = f", SRTP {stream.srtp.suite}" if stream.srtp is not None else ""
        text = f"established ({codec}{secure}); media {call.plan.describe()}"
        self._progress(call, CallPhase.ESTABLISHED, text)
        call.established.set()
