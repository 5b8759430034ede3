"""Named STUN probes from several local sockets at once (sans-IO).

NAT discovery needs several local transport addresses (one per independent
test, so that one test's packets cannot open a filter another test is
measuring) and many concurrent transactions. :class:`Prober` keeps one
:class:`~natkit.stun.transaction.StunClient` per local endpoint, tags each
transaction with a probe name, and reports a :class:`ProbeOutcome` per probe:
the response and where it came from, or a timeout. It also notices STUN
requests arriving at a socket (hairpinning probes travel that way).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass

from natkit.addr import Datagram, Endpoint
from natkit.errors import MalformedMessageError
from natkit.stun import attributes as at
from natkit.stun.attributes import ChangeRequest
from natkit.stun.constants import MessageClass, Method
from natkit.stun.events import ResponseReceived, TransactionFailed, TransactionTimedOut
from natkit.stun.message import StunMessage, parse_message
from natkit.stun.transaction import StunClient, StunClientConfig

__all__ = ["ProbeOutcome", "Prober", "RequestSeen"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeOutcome:
    """A probe ended: ``response`` is ``None`` when it timed out."""

    name: str
    local: Endpoint
    server: Endpoint
    response: StunMessage | None
    source: Endpoint | None
    at: float
    arrived_at: Endpoint | None = None
    """The socket the response reached (RESPONSE-PORT sends it elsewhere)."""
    rtt: float | None = None
    """Seconds since the request's last (re)send, when answered."""

    @property
    def mapped(self) -> Endpoint | None:
        """The reflexive address reported, if the probe succeeded."""
        if self.response is None or self.response.message_class != MessageClass.SUCCESS:
            return None
        try:
            return self.response.get(at.XOR_MAPPED_ADDRESS) or self.response.get(at.MAPPED_ADDRESS)
        except MalformedMessageError:
            return None

    @property
    def succeeded(self) -> bool:
        return self.mapped is not None

    @property
    def other_address(self) -> Endpoint | None:
        """OTHER-ADDRESS (RFC 5780) or CHANGED-ADDRESS (RFC 3489)."""
        if self.response is None:
            return None
        try:
            return self.response.get(at.OTHER_ADDRESS) or self.response.get(at.CHANGED_ADDRESS)
        except MalformedMessageError:
            return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestSeen:
    """A STUN request arrived at one of our sockets (e.g. a hairpinned probe)."""

    local: Endpoint
    source: Endpoint
    transaction_id: bytes


class Prober:
    """Probes from ``locals``; ``now`` for every call, outputs via buffers."""

    def __init__(self, locals: list[Endpoint], config: StunClientConfig) -> None:
        self.config = config
        self.clients = {local: StunClient(config) for local in locals}
        self._names: dict[bytes, tuple[str, Endpoint, Endpoint]] = {}
        self._arrived: dict[bytes, Endpoint] = {}
        self.outcomes: deque[ProbeOutcome] = deque()
        self.requests_seen: deque[RequestSeen] = deque()

    def probe(
        self,
        name: str,
        local: Endpoint,
        server: Endpoint,
        *,
        now: float,
        change: ChangeRequest | None = None,
        response_port: int | None = None,
        transaction_id: bytes = b"",
    ) -> bytes:
        """Start a Binding transaction from ``local`` to ``server``."""
        req = StunMessage.request(Method.BINDING, transaction_id)
        if change is not None and (change.change_ip or change.change_port):
            req.add(at.CHANGE_REQUEST, change)
        if response_port is not None:
            req.add(at.RESPONSE_PORT, response_port)
        tid = self.clients[local].send_request(req, server, now=now)
        self._names[tid] = (name, local, server)
        self._collect(local, now)
        return tid

    def receive_datagram(self, data: bytes, addr: Endpoint, *, local: Endpoint, now: float) -> None:
        client = self.clients.get(local)
        if client is None:
            return
        if len(data) >= 20 and data[0] < 0x40 and (data[0] & 0x01) == 0 and (data[1] & 0x10) == 0:
            # Request class (C1=C0=0): someone probing us, not a response.
            try:
                msg = parse_message(data)
            except MalformedMessageError:
                return
            if msg.message_class == MessageClass.REQUEST:
                self.requests_seen.append(
                    RequestSeen(local=local, source=addr, transaction_id=msg.transaction_id)
                )
                return
        # A response may belong to a transaction of another socket (RESPONSE-PORT).
        owner = local
        if len(data) >= 20:
            entry = self._names.get(bytes(data[8:20]))
            if entry is not None:
                owner = entry[1]
                self._arrived[bytes(data[8:20])] = local
        self.clients[owner].receive_datagram(data, addr, now=now)
        self._collect(owner, now)

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out: list[Datagram] = []
        for local, client in self.clients.items():
            out.extend(Datagram(d.data, d.remote, local) for d in client.datagrams_to_send(now=now))
        return out

    def get_timer(self) -> float | None:
        timers = [t for c in self.clients.values() if (t := c.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, *, now: float) -> None:
        for local, client in self.clients.items():
            t = client.get_timer()
            if t is not None and t <= now:
                client.handle_timer(now=now)
                self._collect(local, now)

    def cancel(self, transaction_id: bytes) -> None:
        entry = self._names.pop(transaction_id, None)
        self._arrived.pop(transaction_id, None)
        if entry is not None:
            self.clients[entry[1]].cancel(transaction_id)

    def cancel_all(self) -> None:
        for tid in list(self._names):
            self.cancel(tid)

    @property
    def pending(self) -> int:
        return len(self._names)

    def _collect(self, local: Endpoint, now: float) -> None:
        client = self.clients[local]
        while (event := client.next_event()) is not None:
            entry = self._names.pop(event.transaction_id, None)
            if entry is None:
                continue
            name, loc, server = entry
            arrived = self._arrived.pop(event.transaction_id, None)
            match event:
                case ResponseReceived(response=resp, source=src, rtt=rtt):
                    self.outcomes.append(
                        ProbeOutcome(
                            name=name,
                            local=loc,
                            server=server,
                            response=resp,
                            source=src,
                            at=now,
                            arrived_at=arrived,
                            rtt=rtt,
                        )
                    )
                case TransactionTimedOut() | TransactionFailed():
                    self.outcomes.append(
                        ProbeOutcome(
                            name=name, local=loc, server=server, response=None, source=None, at=now
                        )
                    )


def probe_config(
    rto: float, rc: int, rm: int, base: StunClientConfig | None = None
) -> StunClientConfig:
    """Discovery wants short transactions: a lost probe is an answer, not an error."""
    return dataclasses.replace(
        base or StunClientConfig(), rto=rto, rc=rc, rm=rm, rto_min=rto, rto_max=rto
    )
