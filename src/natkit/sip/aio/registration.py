"""An asyncio driver for :class:`~natkit.sip.registration.RegistrationClient`
on the SIP transport layer (:mod:`natkit.sip.aio.transport`).

Theory of operation
-------------------
:class:`RegistrationAgent` owns a :class:`SipTransportLayer` on a Stack and a
registration client that owns its transaction layer. After every call into
the client it drains the client's events, sends what the transaction layer
queued (a send that fails is reported with ``transport_failed_for``, which
fails that flow, RFC 5626 §4.5) and re-arms one ``loop.call_at`` at the
client's timer (STYLE.md's driver pattern).

Keepalives (RFC 5626 §4.4.1): a :class:`KeepaliveDue` over a stream flow
becomes a CRLFCRLF ping (``send_ping``); the transport's ``on_pong`` reports
``keepalive_answered``, ``on_flow_closed`` reports ``flow_closed``; a ping
over a flow already gone fails it at once. Over UDP the STUN Binding
request is a :class:`~natkit.stun.transaction.StunClient` transaction sent
from the SIP socket (retransmitted per RFC 8489 §6.2.1, timing out after
39.5 s); its response, handed up by the transport's ``on_stun_response``,
reports ``keepalive_answered`` with the XOR-MAPPED-ADDRESS (a changed one
fails the flow, RFC 5626 §4.4.1), and a timeout reports
``keepalive_failed``: a UDP flow whose edge stopped answering, or whose
NAT rebound it, fails at its next keepalive, not at the next refresh.
Requests arriving for the UA are not served here (the UA core will share
the transaction layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from natkit.addr import Endpoint
from natkit.errors import MalformedMessageError, TransportError
from natkit.net.stack import Stack
from natkit.sip.aio.transport import FlowGoneError, SipTransportLayer
from natkit.sip.flow import FlowId, SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipResponse
from natkit.sip.registration import RegistrationClient, RegistrationConfig
from natkit.sip.registration_events import (
    FlowFailed,
    KeepaliveDue,
    KeepaliveMethod,
    RegistrationEvent,
    RegistrationSucceeded,
)
from natkit.sip.uri import SipUri
from natkit.stun import attributes as stun_attributes
from natkit.stun.constants import Method
from natkit.stun.events import ResponseReceived as StunResponseReceived
from natkit.stun.message import StunMessage
from natkit.stun.transaction import StunClient, StunClientConfig

__all__ = ["RegistrationAgent"]

_log = logging.getLogger(__name__)


class RegistrationAgent:
    """``async with RegistrationAgent(stack, config) as agent: await agent.registered()``."""

    def __init__(
        self,
        stack: Stack,
        config: RegistrationConfig,
        *,
        on_other_message: Callable[[SipMessage, Source], None] | None = None,
    ) -> None:
        """``on_other_message`` gets every message on this agent's transport
        that is not a REGISTER response (requests for the registered
        contact, responses to the application's own requests), so a user
        agent can share the flows it registered (RFC 5626 §4.3); without it
        they are dropped."""
        self.config = config
        self._on_other_message = on_other_message
        self.client = RegistrationClient(config)
        self.transport = SipTransportLayer(
            stack,
            self._on_message,
            on_flow_closed=self._on_flow_closed,
            on_pong=self._on_pong,
            on_stun_response=self._on_stun,
            rng=config.rng,
        )
        self.stun = StunClient(StunClientConfig(rng=config.rng, fingerprint=True))
        self._stun_flows: dict[bytes, int] = {}  # keepalive transaction -> flow
        self.events: asyncio.Queue[RegistrationEvent] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._registered: set[int] = set()
        self._changed = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the sent-by endpoint for every transport the flows use, register."""
        self._loop = asyncio.get_running_loop()
        for transport in self._transports():
            await self.transport.listen(transport, self.config.sent_by)
        self.client.register(now=self._now())
        self._pump()

    async def unregister(self, timeout: float = 40.0) -> None:
        """Remove the bindings and wait (at most ``timeout``) until every flow is idle."""
        self.client.unregister(now=self._now())
        self._pump()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._registered:
                    await self._wait_change()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        self.transport.close()
        await self.transport.wait_closed()

    async def __aenter__(self) -> RegistrationAgent:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- conveniences --------------------------------------------------------------

    @property
    def registered_flows(self) -> frozenset[int]:
        return frozenset(self._registered)

    async def registered(self, count: int = 1) -> None:
        """Wait until at least ``count`` flows are registered."""
        while len(self._registered) < count:
            await self._wait_change()

    async def local_address_changed(
        self, *, sent_by: Endpoint | None = None, contact: SipUri | None = None
    ) -> None:
        """Re-register every flow now, over new connections; a new ``sent_by``
        is listened on first (for each transport the flows use)."""
        if sent_by is not None:
            for transport in self._transports():
                await self.transport.listen(transport, sent_by)
        self.client.local_address_changed(now=self._now(), sent_by=sent_by, contact=contact)
        self._pump()

    def _transports(self) -> list[SipTransport]:
        transports: list[SipTransport] = []
        for flow in self.config.flows:
            if flow.target.transport not in transports:
                transports.append(flow.target.transport)
        return transports

    async def _wait_change(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    # -- the pump ------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop if self._loop is not None else asyncio.get_running_loop()
        return loop.time()

    def _pump(self) -> None:
        # STUN outcomes feed the client, whose events may start keepalives:
        # go round until both are drained.
        while True:
            self._drain_client()
            if not self._drain_stun():
                break
        self._arm()

    def _drain_client(self) -> None:
        while (event := self.client.next_event()) is not None:
            match event:
                case KeepaliveDue():
                    self._keepalive(event)
                    continue
                case RegistrationSucceeded(flow=flow):
                    self._registered.add(flow)
                case FlowFailed(flow=flow):
                    self._registered.discard(flow)
                    self._drop_connections(flow)
                    self._cancel_keepalives(flow)
                case _:
                    self._registered.discard(event.flow)
                    self._cancel_keepalives(event.flow)
            self.events.put_nowait(event)
            self._changed.set()
        for message, target in self.client.messages_to_send():
            self._spawn(self._send(message, target))

    def _drain_stun(self) -> bool:
        """STUN keepalive outcomes to the client (True if there were any),
        the STUN client's datagrams to the SIP socket."""
        now = self._now()
        fed = False
        while (event := self.stun.next_event()) is not None:
            flow = self._stun_flows.pop(event.transaction_id, None)
            if flow is None:
                continue
            fed = True
            match event:
                case StunResponseReceived(response=response) if event.is_success:
                    mapped = response.get(stun_attributes.XOR_MAPPED_ADDRESS)
                    self.client.keepalive_answered(flow, now=now, mapped=mapped)
                case StunResponseReceived():
                    self.client.keepalive_failed(flow, now=now, reason="STUN error response")
                case _:
                    self.client.keepalive_failed(flow, now=now, reason="STUN keepalive timed out")
        for datagram in self.stun.datagrams_to_send(now=now):
            self.transport.send_soon(datagram.data, Target(SipTransport.UDP, datagram.remote))
        return fed

    def _drop_connections(self, flow: int) -> None:
        """RFC 5626 §4.5: recovery needs a *new* flow. Close the failed flow's
        stream connections, or the retry would be written onto the dead one
        (the transport reuses an open connection to the same peer)."""
        target = self.config.flows[flow - 1].target
        if not target.transport.reliable:
            return
        for source in self.transport.flows():
            if source.transport is target.transport and source.remote == target.remote:
                self.transport.close_flow(source.flow)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.client.get_timer()
        stun_at = self.stun.get_timer()
        if stun_at is not None and (deadline is None or stun_at < deadline):
            deadline = stun_at
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.stun.handle_timer(now=self._now())
        self.client.handle_timer(now=self._now())
        self._pump()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: SipMessage, target: Target) -> None:
        try:
            await self.transport.send(message, target)
        except TransportError as exc:
            _log.info("REGISTER to %s failed: %s", target.remote, exc)
            self.client.send_failed(message, now=self._now())
            self._pump()

    def _cancel_keepalives(self, flow: int) -> None:
        """Forget the STUN keepalive of ``flow`` still under way: its outcome
        would concern a flow that has failed or been registered anew."""
        for tid, owner in list(self._stun_flows.items()):
            if owner == flow:
                self.stun.cancel(tid)
                del self._stun_flows[tid]

    def _keepalive(self, event: KeepaliveDue) -> None:
        now = self._now()
        target = event.target
        if event.method is KeepaliveMethod.CRLF:
            if target.flow is None:
                self.client.flow_closed(event.flow, now=now)
                return
            try:
                self.transport.send_ping(target.flow)
            except FlowGoneError:
                self.client.flow_closed(event.flow, now=now)
            return
        self._cancel_keepalives(event.flow)  # one keepalive per flow at a time
        request = StunMessage.request(Method.BINDING, self.stun.new_transaction_id())
        tid = self.stun.send_request(request, target.remote, now=now)
        self._stun_flows[tid] = event.flow

    # -- transport callbacks -------------------------------------------------------

    def _on_message(self, message: SipMessage, source: Source) -> None:
        if isinstance(message, SipResponse) and _cseq_method(message) == "REGISTER":
            self.client.receive_message(message, source, now=self._now())
            self._pump()
        elif self._on_other_message is not None:
            self._on_other_message(message, source)

    def _on_stun(self, data: bytes, source: Source) -> None:
        self.stun.receive_datagram(data, source.remote, now=self._now())
        self._pump()

    def _on_flow_closed(self, flow: FlowId) -> None:
        self.client.flow_closed(flow, now=self._now())
        self._pump()

    def _on_pong(self, flow: FlowId) -> None:
        for index in range(1, self.client.flow_count + 1):
            if self.client.flow_target(index).flow == flow:
                self.client.keepalive_answered(index, now=self._now())
        self._pump()


def _cseq_method(response: SipResponse) -> str | None:
    try:
        return response.cseq.method
    except MalformedMessageError:
        return None
