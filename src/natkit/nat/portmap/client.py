"""Port-mapping clients: NAT-PMP (RFC 6886) and PCP (RFC 6887), sans-IO.

Theory of operation
-------------------
A client talks to one server (the default gateway, port 5351) from one
local address. :meth:`map` and :meth:`unmap` only queue work; every request
is retransmitted until answered, by the schedule of its RFC:

* NAT-PMP (RFC 6886 §3.1): 250 ms, then doubling after each send, nine
  sends in all; if the wait after the ninth (64 s) also passes, the server
  is taken not to speak NAT-PMP. Sends go out at 0, 0.25, 0.75, 1.75, 3.75,
  7.75, 15.75, 31.75 and 63.75 s and failure comes at 127.75 s.
* PCP (RFC 6887 §8.1.1): RT = (1 + RAND) x IRT, then RT = (1 + RAND) x
  min(2 x RT, MRT), RAND uniform in [-0.1, +0.1]; MRC (sends) and MRD
  (seconds) bound the exchange, 0 meaning "no bound" (the RFC's default:
  a PCP client never gives up). IRT 3 s, MRT 1024 s.

A granted mapping is renewed before it expires by sending the same request
again: NAT-PMP halfway through its lifetime (RFC 6886 §3.3), PCP at a
random point between 1/2 and 5/8 of it (RFC 6887 §11.2.1). A renewal that
goes unanswered is retried until the mapping's lifetime ends, and then
:class:`MappingExpired` is reported. :meth:`unmap` sends the request with
lifetime 0 (RFC 6886 §3.4, RFC 6887 §15).

Only datagrams from the server's transport address are considered (RFC 6886
§3.1: "MUST check the source IP address"); a response must match a request
in flight (NAT-PMP: opcode and internal port; PCP also the mapping nonce,
§11.3). Each response carries the server's epoch; a jump back in it means
the server lost its state (RFC 6886 §3.6, RFC 6887 §8.5), and the client
then renews every mapping at once. NAT-PMP maps give only a port, so a
NAT-PMP client also asks for the external address (§3.2) and reports a
grant once it knows both.

PCP version negotiation (RFC 6887 §9): a NAT-PMP-only server answers a PCP
request with NAT-PMP's "unsupported version" (version 0). A
:class:`PcpClient` built with ``natpmp_fallback=True`` then creates a
:class:`NatPmpClient` for the same server, moves every pending request to
it, reports :class:`FellBackToNatPmp` and forwards its events from then on.
It stays on NAT-PMP for its lifetime: a driver that wants to probe for PCP
again (the RFC suggests after a while) builds a new client.
"""

from __future__ import annotations

import abc
from collections import deque
from dataclasses import dataclass, field

from natkit.addr import Datagram, Endpoint
from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.nat.portmap import natpmp, pcp
from natkit.nat.portmap.events import (
    ExternalAddressFailed,
    ExternalAddressReceived,
    FellBackToNatPmp,
    MappingDeleted,
    MappingExpired,
    MappingFailed,
    MappingGranted,
    PortMapEvent,
    ServerStateLost,
)
from natkit.nat.portmap.mapping import PortMapMethod
from natkit.packet import IpProto
from natkit.rng import Rng, default_rng

__all__ = ["NatPmpClient", "NatPmpClientConfig", "PcpClient", "PcpClientConfig"]

_Key = tuple[IpProto, int]


@dataclass(frozen=True, slots=True)
class NatPmpClientConfig:
    """RFC 6886 timers and defaults.

    ``initial_interval`` and ``max_tries`` are §3.1's 250 ms and nine
    attempts; ``lifetime`` is §3.3's recommended 7200 s; ``renew_fraction``
    is when renewal starts (§3.3: "halfway to expiry time")."""

    initial_interval: float = 0.25
    max_tries: int = 9
    lifetime: int = 7200
    renew_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class PcpClientConfig:
    """RFC 6887 §8.1.1 retransmission (IRT, MRT, MRC, MRD; 0 is "no limit")
    and §11.2.1 renewal, plus the NAT-PMP fallback of §9."""

    irt: float = 3.0
    mrt: float = 1024.0
    mrc: int = 0
    mrd: float = 0.0
    lifetime: int = 7200
    natpmp_fallback: bool = True
    natpmp: NatPmpClientConfig = field(default_factory=NatPmpClientConfig)
    rng: Rng = field(default_factory=default_rng)


@dataclass(slots=True, eq=False)
class _Attempt:
    """One request in flight and its retransmission state."""

    data: bytes
    started: float
    sends: int = 0
    rt: float = 0.0
    next_at: float = 0.0


@dataclass(slots=True, eq=False)
class _Mapping:
    proto: IpProto
    internal_port: int
    lifetime: int
    suggested_port: int = 0
    suggested_ip: str = pcp.ANY_IPV4
    prefer_failure: bool = False
    nonce: bytes = b""
    deleting: bool = False
    external_port: int | None = None  # granted (NAT-PMP: possibly before the address is known)
    external: Endpoint | None = None  # reported
    granted_lifetime: float = 0.0
    expires_at: float | None = None
    renew_at: float | None = None
    attempt: _Attempt | None = None


class _ClientBase(abc.ABC):
    """Mapping table, retransmission, renewal and expiry shared by both clients."""

    method: PortMapMethod

    def __init__(self, server: Endpoint, local_ip: str) -> None:
        self.server = server
        self.local_ip = local_ip
        self._mappings: dict[_Key, _Mapping] = {}
        self._out: list[Datagram] = []
        self._events: deque[PortMapEvent] = deque()
        self._epoch: tuple[int, float] | None = None  # (server epoch, our clock)

    # -- hooks -------------------------------------------------------------------

    @abc.abstractmethod
    def _encode(self, m: _Mapping) -> bytes:
        """The request for ``m`` as it stands (map, renewal or deletion)."""

    @abc.abstractmethod
    def _wait(self, attempt: _Attempt) -> float:
        """The wait after ``attempt``'s latest send."""

    @abc.abstractmethod
    def _exhausted(self, attempt: _Attempt, now: float) -> bool:
        """Whether ``attempt`` is over (asked when its wait ends)."""

    @abc.abstractmethod
    def _renew_delay(self, lifetime: float) -> float:
        """How long after a grant of ``lifetime`` seconds to renew it."""

    @abc.abstractmethod
    def _epoch_lost(self, epoch: int, now: float) -> bool:
        """Whether the server's ``epoch`` at ``now`` shows it lost its state."""

    # -- sans-IO surface ---------------------------------------------------------

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def next_event(self) -> PortMapEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [d for m in self._mappings.values() for d in self._deadlines(m)]
        deadlines.extend(self._extra_deadlines())
        return min(deadlines, default=None)

    def handle_timer(self, *, now: float) -> None:
        for key, m in list(self._mappings.items()):
            if m.attempt is not None and m.attempt.next_at <= now:
                if self._exhausted(m.attempt, now):
                    m.attempt = None
                    self._on_attempt_exhausted(key, m, now)
                else:
                    self._send(m.attempt, now)
            if key not in self._mappings:
                continue
            if m.expires_at is not None and m.expires_at <= now and not m.deleting:
                del self._mappings[key]
                self._events.append(
                    MappingExpired(proto=m.proto, internal=self._internal(m), method=self.method)
                )
            elif m.renew_at is not None and m.renew_at <= now and m.attempt is None:
                m.renew_at = None
                self._start(m, now)

    # -- queries -----------------------------------------------------------------

    def external_for(self, proto: IpProto, internal_port: int) -> Endpoint | None:
        """The external endpoint of a granted mapping, if any."""
        m = self._mappings.get((proto, internal_port))
        return m.external if m is not None else None

    # -- internals ---------------------------------------------------------------

    def _extra_deadlines(self) -> list[float]:
        return []

    @staticmethod
    def _deadlines(m: _Mapping) -> list[float]:
        out = []
        if m.attempt is not None:
            out.append(m.attempt.next_at)
        elif m.renew_at is not None:
            out.append(m.renew_at)
        if m.expires_at is not None and not m.deleting:
            out.append(m.expires_at)
        return out

    def _internal(self, m: _Mapping) -> Endpoint:
        return Endpoint(self.local_ip, m.internal_port)

    def _start(self, m: _Mapping, now: float) -> None:
        m.attempt = _Attempt(self._encode(m), now)
        self._send(m.attempt, now)

    def _send(self, attempt: _Attempt, now: float) -> None:
        self._out.append(Datagram(attempt.data, self.server))
        attempt.sends += 1
        attempt.rt = self._wait(attempt)
        attempt.next_at = now + attempt.rt

    def _queue(self, proto: IpProto, internal_port: int, now: float, **fields: object) -> _Mapping:
        """Create or update the mapping for ``(proto, internal_port)`` and
        (re)start its request now."""
        if proto not in (IpProto.UDP, IpProto.TCP):
            raise LocalProtocolError(f"only UDP and TCP ports can be mapped, not {proto!r}")
        if not 0 < internal_port <= 0xFFFF:
            raise LocalProtocolError(f"internal port out of range: {internal_port}")
        m = self._mappings.get((proto, internal_port))
        if m is None:
            m = _Mapping(proto, internal_port, lifetime=0)
            self._mappings[(proto, internal_port)] = m
        for name, value in fields.items():
            setattr(m, name, value)
        m.renew_at = None
        self._start(m, now)
        return m

    def _on_attempt_exhausted(self, key: _Key, m: _Mapping, now: float) -> None:
        if m.external is not None and not m.deleting:
            # A renewal went unanswered: keep trying while the mapping lives.
            m.renew_at = now
            return
        del self._mappings[key]
        self._events.append(
            MappingFailed(
                proto=m.proto,
                internal=self._internal(m),
                code=None,
                method=self.method,
                reason="no response from the server",
            )
        )

    def _observe_epoch(self, epoch: int, now: float) -> None:
        lost = self._epoch is not None and self._epoch_lost(epoch, now)
        self._epoch = (epoch, now)
        if lost:
            self._state_lost(epoch, now)

    def _state_lost(self, epoch: int, now: float) -> None:
        self._events.append(ServerStateLost(epoch=epoch, method=self.method))
        for m in self._mappings.values():
            if m.external_port is not None and m.attempt is None and not m.deleting:
                self._start(m, now)

    def _set_granted(self, m: _Mapping, port: int, lifetime: float, now: float) -> None:
        m.external_port = port
        m.granted_lifetime = lifetime
        m.expires_at = now + lifetime
        m.renew_at = now + self._renew_delay(lifetime)

    def _report(self, m: _Mapping, external: Endpoint) -> None:
        renewed = m.external is not None
        m.external = external
        self._events.append(
            MappingGranted(
                proto=m.proto,
                internal=self._internal(m),
                external=external,
                lifetime=m.granted_lifetime,
                method=self.method,
                renewed=renewed,
            )
        )

    def _refused(self, m: _Mapping, code: int | None, reason: str) -> None:
        del self._mappings[(m.proto, m.internal_port)]
        self._events.append(
            MappingFailed(
                proto=m.proto,
                internal=self._internal(m),
                code=code,
                method=self.method,
                reason=reason,
            )
        )

    def _deleted(self, m: _Mapping) -> None:
        del self._mappings[(m.proto, m.internal_port)]
        self._events.append(
            MappingDeleted(proto=m.proto, internal=self._internal(m), method=self.method)
        )


class NatPmpClient(_ClientBase):
    """A NAT-PMP client of the gateway ``server`` (RFC 6886), sending from
    ``local_ip`` (used only to name internal endpoints in events)."""

    method = PortMapMethod.NATPMP

    def __init__(
        self, server: Endpoint, *, local_ip: str, config: NatPmpClientConfig | None = None
    ) -> None:
        super().__init__(server, local_ip)
        self.config = config or NatPmpClientConfig()
        self.external_address: str | None = None
        self._address_attempt: _Attempt | None = None

    # -- commands ----------------------------------------------------------------

    def request_external_address(self, *, now: float) -> None:
        """Ask for the external address (§3.2) unless a request is in flight."""
        if self._address_attempt is None:
            self._address_attempt = _Attempt(
                natpmp.serialize_request(natpmp.ExternalAddressRequest()), now
            )
            self._send(self._address_attempt, now)

    def map(
        self,
        proto: IpProto,
        internal_port: int,
        *,
        now: float,
        external_port: int | None = None,
        lifetime: int | None = None,
    ) -> None:
        """Request (or re-request) a mapping of ``internal_port`` (§3.3);
        ``external_port`` is only a suggestion. Reported by
        :class:`MappingGranted` or :class:`MappingFailed`."""
        life = self.config.lifetime if lifetime is None else lifetime
        if not 0 < life <= 0xFFFFFFFF:
            raise LocalProtocolError("lifetime must be positive; use unmap() to delete")
        self._queue(
            proto,
            internal_port,
            now,
            lifetime=life,
            suggested_port=external_port or 0,
            deleting=False,
        )
        if self.external_address is None:
            self.request_external_address(now=now)

    def unmap(self, proto: IpProto, internal_port: int, *, now: float) -> None:
        """Delete a mapping (§3.4: lifetime 0, suggested port 0)."""
        self._queue(proto, internal_port, now, lifetime=0, suggested_port=0, deleting=True)

    # -- sans-IO surface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Feed a datagram; anything not a response from the server is ignored."""
        if addr != self.server:
            return
        try:
            msg = natpmp.parse_response(data)
        except MalformedMessageError:
            return
        self._on_response(msg, now)

    def handle_timer(self, *, now: float) -> None:
        attempt = self._address_attempt
        if attempt is not None and attempt.next_at <= now:
            if self._exhausted(attempt, now):
                self._address_failed(None, "no response from the server")
            else:
                self._send(attempt, now)
        super().handle_timer(now=now)

    # -- internals ---------------------------------------------------------------

    def _on_response(self, msg: natpmp.NatPmpResponse, now: float) -> None:
        if isinstance(msg, natpmp.NatPmpErrorResponse):
            self._on_short_error(msg, now)
            return
        if isinstance(msg, natpmp.ExternalAddressResponse):
            self._observe_epoch(msg.epoch, now)
            self._on_address(msg)
            return
        m = self._mappings.get((msg.proto, msg.internal_port))
        if m is None or m.attempt is None:
            return  # a late duplicate, or never ours
        self._observe_epoch(msg.epoch, now)
        m.attempt = None
        if msg.result != natpmp.NatPmpResult.SUCCESS:
            self._refused(m, msg.result, _natpmp_reason(msg.result))
        elif m.deleting:
            self._deleted(m)
        elif msg.lifetime == 0 or msg.external_port == 0:
            self._refused(m, msg.result, "the server granted no port or no lifetime")
        else:
            self._set_granted(m, msg.external_port, msg.lifetime, now)
            if self.external_address is not None:
                self._report(m, Endpoint(self.external_address, msg.external_port))
            else:
                self.request_external_address(now=now)

    def _on_short_error(self, msg: natpmp.NatPmpErrorResponse, now: float) -> None:
        self._observe_epoch(msg.epoch, now)
        if msg.opcode == natpmp.NatPmpOpcode.EXTERNAL_ADDRESS:
            if self._address_attempt is not None:
                self._address_failed(msg.result, _natpmp_reason(msg.result))
            return
        # The short form names no internal port: it answers every mapping
        # request of that opcode in flight (the server refuses them all alike).
        for m in list(self._mappings.values()):
            if m.attempt is not None and natpmp.opcode_for(m.proto) == msg.opcode:
                m.attempt = None
                self._refused(m, msg.result, _natpmp_reason(msg.result))

    def _on_address(self, msg: natpmp.ExternalAddressResponse) -> None:
        asked = self._address_attempt is not None
        if msg.result != natpmp.NatPmpResult.SUCCESS:
            if asked:
                self._address_failed(msg.result, _natpmp_reason(msg.result))
            return
        self._address_attempt = None
        changed = msg.address != self.external_address
        self.external_address = msg.address
        if asked or changed:
            self._events.append(ExternalAddressReceived(address=msg.address, epoch=msg.epoch))
        for m in self._mappings.values():
            if m.external_port is None or m.deleting:
                continue
            external = Endpoint(msg.address, m.external_port)
            if m.external != external:
                self._report(m, external)

    def _address_failed(self, code: int | None, reason: str) -> None:
        self._address_attempt = None
        self._events.append(ExternalAddressFailed(code=code, reason=reason))
        # Mappings granted but never reported cannot be: their address is unknown.
        for m in list(self._mappings.values()):
            if m.external_port is not None and m.external is None and m.attempt is None:
                self._refused(m, code, f"external address: {reason}")

    def _extra_deadlines(self) -> list[float]:
        return [self._address_attempt.next_at] if self._address_attempt is not None else []

    def _encode(self, m: _Mapping) -> bytes:
        return natpmp.serialize_request(
            natpmp.MapRequest(
                proto=m.proto,
                internal_port=m.internal_port,
                suggested_external_port=m.external_port or m.suggested_port,
                lifetime=m.lifetime,
            )
            if not m.deleting
            else natpmp.MapRequest(
                proto=m.proto, internal_port=m.internal_port, suggested_external_port=0, lifetime=0
            )
        )

    def _wait(self, attempt: _Attempt) -> float:
        return float(self.config.initial_interval * (1 << (attempt.sends - 1)))

    def _exhausted(self, attempt: _Attempt, now: float) -> bool:
        return attempt.sends >= self.config.max_tries

    def _renew_delay(self, lifetime: float) -> float:
        return lifetime * self.config.renew_fraction

    def _epoch_lost(self, epoch: int, now: float) -> bool:
        # §3.6: expect at least 7/8 of our elapsed time to have passed on the
        # server; more than 2 s short of that means it restarted.
        assert self._epoch is not None  # checked by the caller
        prev_epoch, prev_now = self._epoch
        return epoch < prev_epoch + (now - prev_now) * 7 / 8 - 2


class PcpClient(_ClientBase):
    """A PCP client (RFC 6887) of ``server``, sending from ``local_ip`` (the
    PCP client IP address field, §7.1, and the internal address of mappings)."""

    method = PortMapMethod.PCP

    def __init__(
        self, server: Endpoint, *, local_ip: str, config: PcpClientConfig | None = None
    ) -> None:
        super().__init__(server, local_ip)
        self.config = config or PcpClientConfig()
        self.natpmp: NatPmpClient | None = None

    # -- commands ----------------------------------------------------------------

    def map(
        self,
        proto: IpProto,
        internal_port: int,
        *,
        now: float,
        external_port: int | None = None,
        external_ip: str | None = None,
        lifetime: int | None = None,
        prefer_failure: bool = False,
    ) -> None:
        """Request (or re-request) a MAP mapping (§11.1). ``external_port``
        and ``external_ip`` are suggestions unless ``prefer_failure`` (§13.2).
        The mapping keeps its nonce across renewals and re-requests."""
        life = self.config.lifetime if lifetime is None else lifetime
        if not 0 < life <= 0xFFFFFFFF:
            raise LocalProtocolError("lifetime must be positive; use unmap() to delete")
        if self.natpmp is not None:
            self.natpmp.map(
                proto, internal_port, now=now, external_port=external_port, lifetime=life
            )
            return
        m = self._mappings.get((proto, internal_port))
        nonce = m.nonce if m is not None else self._new_nonce()
        self._queue(
            proto,
            internal_port,
            now,
            lifetime=life,
            suggested_port=external_port or 0,
            suggested_ip=external_ip or pcp.ANY_IPV4,
            prefer_failure=prefer_failure,
            nonce=nonce,
            deleting=False,
        )

    def unmap(self, proto: IpProto, internal_port: int, *, now: float) -> None:
        """Delete a mapping: the MAP request with lifetime 0 and the
        mapping's nonce (§15). An unknown mapping is deleted with a new nonce,
        which a server that checks nonces refuses (NOT_AUTHORIZED)."""
        if self.natpmp is not None:
            self.natpmp.unmap(proto, internal_port, now=now)
            return
        m = self._mappings.get((proto, internal_port))
        nonce = m.nonce if m is not None else self._new_nonce()
        self._queue(proto, internal_port, now, lifetime=0, nonce=nonce, deleting=True)

    def nonce_for(self, proto: IpProto, internal_port: int) -> bytes | None:
        m = self._mappings.get((proto, internal_port))
        return m.nonce if m is not None else None

    def adopt(
        self, proto: IpProto, internal_port: int, nonce: bytes, external: Endpoint | None = None
    ) -> None:
        """Take over a mapping made earlier (by another client instance) so
        that :meth:`unmap` or :meth:`map` use its nonce; no request is sent."""
        if len(nonce) != pcp.NONCE_LEN:
            raise LocalProtocolError("a PCP mapping nonce is 12 octets")
        self._mappings[(proto, internal_port)] = _Mapping(
            proto,
            internal_port,
            lifetime=0,
            nonce=nonce,
            external=external,
            external_port=external.port if external else None,
        )

    # -- sans-IO surface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Feed a datagram; anything not a response from the server is ignored."""
        if self.natpmp is not None:
            self.natpmp.receive_datagram(data, addr, now=now)
            return
        if addr != self.server or not data:
            return
        if data[0] == natpmp.VERSION:
            self._on_natpmp(data, now)
            return
        try:
            msg = pcp.parse_response(data)
        except MalformedMessageError:
            return
        if msg.opcode == pcp.PcpOpcode.ANNOUNCE:
            if msg.result == pcp.PcpResult.SUCCESS:
                # §14.1.3: an ANNOUNCE means "renew your mappings now".
                self._epoch = (msg.epoch, now)
                self._state_lost(msg.epoch, now)
            return
        if not isinstance(msg.data, pcp.MapData):
            return
        if msg.data.protocol not in (IpProto.UDP, IpProto.TCP):
            return
        m = self._mappings.get((IpProto(msg.data.protocol), msg.data.internal_port))
        if m is None or m.attempt is None or msg.data.nonce != m.nonce:
            return
        self._observe_epoch(msg.epoch, now)
        m.attempt = None
        if msg.result != pcp.PcpResult.SUCCESS:
            self._refused(m, msg.result, _pcp_reason(msg.result))
        elif m.deleting:
            self._deleted(m)
        elif msg.lifetime == 0 or msg.data.external_port == 0:
            self._refused(m, msg.result, "the server granted no port or no lifetime")
        else:
            self._set_granted(m, msg.data.external_port, msg.lifetime, now)
            self._report(m, Endpoint(msg.data.external_ip, msg.data.external_port))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out = super().datagrams_to_send(now=now)
        if self.natpmp is not None:
            out.extend(self.natpmp.datagrams_to_send(now=now))
        return out

    def next_event(self) -> PortMapEvent | None:
        event = super().next_event()
        if event is None and self.natpmp is not None:
            event = self.natpmp.next_event()
        return event

    def get_timer(self) -> float | None:
        if self.natpmp is not None:
            return self.natpmp.get_timer()
        return super().get_timer()

    def handle_timer(self, *, now: float) -> None:
        if self.natpmp is not None:
            self.natpmp.handle_timer(now=now)
            return
        super().handle_timer(now=now)

    def external_for(self, proto: IpProto, internal_port: int) -> Endpoint | None:
        if self.natpmp is not None:
            return self.natpmp.external_for(proto, internal_port)
        return super().external_for(proto, internal_port)

    # -- internals ---------------------------------------------------------------

    def _on_natpmp(self, data: bytes, now: float) -> None:
        """A version-0 answer: a NAT-PMP server refusing our version (§9)."""
        try:
            msg = natpmp.parse_response(data)
        except MalformedMessageError:
            return
        if msg.result != natpmp.NatPmpResult.UNSUPPORTED_VERSION:
            return
        pending = [m for m in self._mappings.values() if m.attempt is not None]
        if not pending:
            return
        if not self.config.natpmp_fallback:
            for m in pending:
                m.attempt = None
                self._refused(m, pcp.PcpResult.UNSUPP_VERSION, "the server speaks only NAT-PMP")
            return
        self._events.append(FellBackToNatPmp(server=self.server))
        client = NatPmpClient(self.server, local_ip=self.local_ip, config=self.config.natpmp)
        for m in self._mappings.values():
            if m.deleting:
                client.unmap(m.proto, m.internal_port, now=now)
            elif m.attempt is not None:
                client.map(
                    m.proto,
                    m.internal_port,
                    now=now,
                    external_port=m.suggested_port or None,
                    lifetime=m.lifetime,
                )
        self._mappings.clear()
        self.natpmp = client

    def _new_nonce(self) -> bytes:
        return self.config.rng.getrandbits(8 * pcp.NONCE_LEN).to_bytes(pcp.NONCE_LEN, "big")

    def _encode(self, m: _Mapping) -> bytes:
        options = (pcp.prefer_failure(),) if m.prefer_failure and not m.deleting else ()
        # A renewal asks for what it has (§11.2.1); a first request, what was suggested.
        port = m.external_port or m.suggested_port
        ip = m.external.host if m.external is not None else m.suggested_ip
        if m.deleting:
            port, ip = 0, pcp.ANY_IPV4 if ":" not in self.local_ip else pcp.ANY_IPV6
        return pcp.serialize_request(
            pcp.PcpRequest(
                opcode=pcp.PcpOpcode.MAP,
                lifetime=m.lifetime,
                client_ip=self.local_ip,
                data=pcp.MapData(
                    nonce=m.nonce,
                    protocol=m.proto,
                    internal_port=m.internal_port,
                    external_port=port,
                    external_ip=ip,
                ),
                options=options,
            )
        )

    def _rand(self) -> float:
        return 1.0 + self.config.rng.uniform(-0.1, 0.1)

    def _wait(self, attempt: _Attempt) -> float:
        cfg = self.config
        return self._rand() * (cfg.irt if attempt.sends == 1 else min(2 * attempt.rt, cfg.mrt))

    def _send(self, attempt: _Attempt, now: float) -> None:
        super()._send(attempt, now)
        if self.config.mrd > 0:
            # MRD ends the exchange at started + MRD, even in mid-wait.
            attempt.next_at = min(attempt.next_at, attempt.started + self.config.mrd)

    def _exhausted(self, attempt: _Attempt, now: float) -> bool:
        cfg = self.config
        return (cfg.mrc > 0 and attempt.sends >= cfg.mrc) or (
            cfg.mrd > 0 and now >= attempt.started + cfg.mrd
        )

    def _renew_delay(self, lifetime: float) -> float:
        return lifetime * self.config.rng.uniform(0.5, 0.625)

    def _epoch_lost(self, epoch: int, now: float) -> bool:
        # §8.5: the epoch went back, or the two clocks drifted apart by more
        # than 1/16 plus 2 s either way since the last response.
        assert self._epoch is not None  # checked by the caller
        prev_epoch, prev_now = self._epoch
        if epoch < prev_epoch - 1:
            return True
        client_delta = now - prev_now
        server_delta = epoch - prev_epoch
        return (
            client_delta + 2 < server_delta - server_delta / 16
            or server_delta + 2 < client_delta - client_delta / 16
        )


def _natpmp_reason(code: int) -> str:
    try:
        return f"NAT-PMP {natpmp.NatPmpResult(code).name}"
    except ValueError:
        return f"NAT-PMP result {code}"


def _pcp_reason(code: int) -> str:
    try:
        return f"PCP {pcp.PcpResult(code).name}"
    except ValueError:
        return f"PCP result {code}"
