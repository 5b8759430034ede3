"""An ICE connection with SDP signalling: :class:`IceConnection`.

:class:`~natkit.ice.aio.agent.AsyncIceAgent` already owns the gatherer, the
sockets, the TURN allocations and one datagram channel per component; what an
application still has to write is the signalling glue and a way to follow
path changes. :class:`IceConnection` adds both:

- the SDP side of RFC 8839: :meth:`IceConnection.local_description` is the
  media section's ICE attributes (ufrag/pwd, ``ice-options:trickle``, the
  candidates gathered so far, ``end-of-candidates`` once gathering is done),
  ready for :func:`~natkit.ice.sdp.serialize_ice_description`;
  :meth:`IceConnection.apply_remote_description` takes the peer's parsed
  section (credentials, ice-lite, candidates, end-of-candidates), and
  :meth:`IceConnection.add_remote_candidate_line` one trickled
  ``candidate:`` line (RFC 8840);
- :meth:`IceConnection.path_changes`: an async iterator of the events an
  application reacts to - the selected pair changed (hot-spare failover,
  upgrade, re-nomination), consent lost, ICE failed.

mDNS (``.local``) candidates of the peer are skipped here: resolving them is
:mod:`natkit.ice.aio.mdns`'s job, before the line is applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.ice.aio.agent import AsyncIceAgent, DataCallback
from natkit.ice.candidate import Candidate
from natkit.ice.config import IceConfig
from natkit.ice.events import ConsentLost, IceEvent, IceFailed, SelectedPairChanged
from natkit.ice.gather_config import GatherConfig
from natkit.ice.sdp import CandidateLine, IceDescription, parse_candidate
from natkit.net.stack import Stack

__all__ = ["DEFAULT_TA", "IceConnection", "PathEvent"]

DEFAULT_TA = IceConfig().ta
"""RFC 8445 §14.2's default Ta (50 ms), assumed for a peer that signals no
``ice-pacing``."""

PathEvent = SelectedPairChanged | ConsentLost | IceFailed

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class IceConnection:
    """One ICE media stream with its SDP attributes (see the module docstring)."""

    def __init__(
        self,
        stack: Stack,
        *,
        controlling: bool,
        gather_config: GatherConfig | None = None,
        config: IceConfig | None = None,
        components: int = 1,
        tls: ssl.SSLContext | None = None,
        on_data: DataCallback | None = None,
    ) -> None:
        self.agent = AsyncIceAgent(
            stack,
            controlling=controlling,
            config=config,
            gather_config=gather_config,
            components=components,
            tls=tls,
            on_event=self._on_event,
            on_data=on_data,
        )
        self._proposed_ta = self.agent.core.config.ta
        self._gathered: list[Candidate] = []
        self._gathering_done = False
        self._paths: asyncio.Queue[PathEvent | None] = asyncio.Queue()
        self.agent.on_candidate = self._on_candidate

    # -- signalling ----------------------------------------------------------------

    async def start(self) -> None:
        """Start gathering (host candidates are in :meth:`local_description` at once)."""
        await self.agent.start()

    async def gathered(self) -> IceDescription:
        """Wait until gathering is done; the complete description (no trickle)."""
        async for _ in self.agent.local_candidates():
            pass
        return self.local_description()

    def local_description(self) -> IceDescription:
        """ufrag/pwd, ``trickle``, the candidates so far, end-of-candidates
        when gathering is over (RFC 8839 §5, RFC 8840 §4.1.1), and
        ``ice-pacing`` when the configured Ta is not the default (RFC 8445
        §14.2: an agent using another Ta MUST tell its peer; RFC 8839 §5.5)."""
        creds = self.agent.local_credentials
        pacing = None
        if self._proposed_ta != DEFAULT_TA:
            pacing = max(1, round(self._proposed_ta * 1000))
        return IceDescription(
            ufrag=creds.ufrag,
            pwd=creds.pwd,
            options=("trickle",),
            pacing=pacing,
            candidates=tuple(CandidateLine.from_candidate(c) for c in self._gathered),
            end_of_candidates=self._gathering_done,
        )

    def apply_remote_description(self, description: IceDescription) -> None:
        """The peer's ICE attributes of this media section. Checks are paced
        by the higher of both agents' proposed Ta, a peer that proposes none
        counting as the default 50 ms (RFC 8445 §14.2, ``a=ice-pacing``)."""
        self._agree_pacing(description.pacing)
        if description.ufrag is not None and description.pwd is not None:
            self.agent.set_remote_credentials(description.ufrag, description.pwd)
        if description.lite:
            self.agent.core.set_remote_lite(True)
        for line in description.candidates:
            self._add_line(line)
        if description.end_of_candidates:
            self.agent.end_of_remote_candidates()

    def add_remote_candidate_line(self, text: str) -> bool:
        """A trickled ``candidate:...`` line (``a=`` optional); False when it
        is malformed or an unresolved mDNS name (dropped)."""
        try:
            line = parse_candidate(text.removeprefix("a="))
        except MalformedMessageError:
            return False
        return self._add_line(line)

    def _add_line(self, line: CandidateLine) -> bool:
        """One remote candidate line; False when it is dropped: a name, a
        malformed line, or a component this stream does not have (an RTCP
        candidate from a peer that offered both while we use one component,
        RFC 8839 §5.1; the other lines still apply)."""
        if line.is_fqdn:
            return False
        try:
            candidate = line.to_candidate()
        except (ValueError, MalformedMessageError):
            return False
        try:
            self.agent.add_remote_candidate(candidate)
        except LocalProtocolError as exc:
            log.info("ignoring remote candidate %s: %s", candidate, exc)
            return False
        return True

    # -- media -------------------------------------------------------------------

    async def connect(self) -> None:
        """See :meth:`AsyncIceAgent.connect`."""
        await self.agent.connect()

    def send(self, component: int, data: bytes) -> bool:
        return self.agent.send(component, data)

    async def recv(self) -> tuple[int, bytes]:
        return await self.agent.recv()

    async def path_changes(self) -> AsyncIterator[PathEvent]:
        """Selected-pair changes, consent losses and ICE failure, as they
        happen, until :meth:`close`."""
        while True:
            event = await self._paths.get()
            if event is None:
                self._paths.put_nowait(None)
                return
            yield event

    async def close(self) -> None:
        await self.agent.close()
        self._paths.put_nowait(None)

    # -- internals ---------------------------------------------------------------

    def _agree_pacing(self, remote_ms: int | None) -> None:
        remote = DEFAULT_TA if remote_ms is None else remote_ms / 1000
        ta = max(self._proposed_ta, remote)
        core = self.agent.core
        if core.config.ta != ta:
            core.config = dataclasses.replace(core.config, ta=ta)

    def _on_candidate(self, candidate: Candidate | None) -> None:
        if candidate is None:
            self._gathering_done = True
        else:
            self._gathered.append(candidate)

    def _on_event(self, event: IceEvent) -> None:
        if isinstance(event, SelectedPairChanged | ConsentLost | IceFailed):
            self._paths.put_nowait(event)
