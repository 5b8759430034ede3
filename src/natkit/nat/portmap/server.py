"""The NAT box's port-mapping service: NAT-PMP (RFC 6886) and PCP (RFC 6887)
servers, sans-IO.

Theory of operation
-------------------
A server core answers requests that reach the NAT box's inside address on
port 5351 (its driver binds only there, so outside hosts cannot ask). It
holds no mappings itself: it asks the box, through the three calls of
:class:`PortMappingBox`, and remembers only what the protocols need on
top (which client owns which mapping, until when, and PCP's nonce), in a
grant table both servers may share. Expired grants are forgotten lazily;
the box expires the mappings themselves. A server has no timers.

The internal address of a mapping is always the request's source address:
NAT-PMP has no other (RFC 6886 §3.3), and a PCP request whose "PCP client
IP address" differs from its source crossed another NAT and is refused with
ADDRESS_MISMATCH (RFC 6887 §8.3); THIRD_PARTY is not supported.

The epoch (RFC 6886 §3.6, RFC 6887 §8.5) counts seconds from the ``now`` the
server was built with; a new server (a "reboot") starts again from 0, which
is how clients learn to renew.

Decisions where the RFCs leave room
-----------------------------------
* NAT-PMP answers an unsupported version or opcode with the 8-byte form
  (version 0, 128 + opcode, result, epoch), as miniupnpd does; a PCP client
  reads that as "fall back to NAT-PMP" (RFC 6887 §9).
* The box refusing a mapping is NAT-PMP OUT_OF_RESOURCES (4) / PCP
  NO_RESOURCES (8); no public address at all is NETWORK_FAILURE (3 / 7).
* A suggested port is a hint: if the box cannot give it, any port is asked
  for, unless PCP's PREFER_FAILURE says to fail with CANNOT_PROVIDE_EXTERNAL.
  Re-requesting an existing mapping refreshes it and keeps its port.
* PCP lifetimes are clamped to [``min_lifetime``, ``max_lifetime``]
  (§15: 120 s minimum, 24 h maximum by default); NAT-PMP's only to the
  maximum. A PCP mapping belongs to its nonce (§11.3): another nonce may
  neither renew nor delete it (NOT_AUTHORIZED).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from natkit.addr import Datagram, Endpoint, ip_of
from natkit.errors import MalformedMessageError
from natkit.nat.portmap import natpmp, pcp
from natkit.packet import IpProto

__all__ = [
    "NatPmpServer",
    "NatPmpServerConfig",
    "PcpServer",
    "PcpServerConfig",
    "PortMappingBox",
]


class PortMappingBox(Protocol):
    """What a server needs from the NAT box (:class:`natkit.nat.box.NatBox`)."""

    def add_port_mapping(
        self,
        proto: IpProto,
        internal: Endpoint,
        *,
        external_port: int | None,
        lifetime: float,
        now: float,
    ) -> Endpoint | None: ...

    def remove_port_mapping(self, proto: IpProto, internal: Endpoint, *, now: float) -> bool: ...

    @property
    def public_ips(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class NatPmpServerConfig:
    """``max_lifetime`` caps granted lifetimes (RFC 6886 §3.3 lets the
    gateway grant less than asked); ``max_mappings_per_client`` bounds what
    one inside host may hold."""

    max_lifetime: int = 86400
    max_mappings_per_client: int = 128


@dataclass(frozen=True, slots=True)
class PcpServerConfig:
    """RFC 6887 §15 lifetime bounds, §7.4 error lifetimes, and whether
    version-0 (NAT-PMP) requests are answered on the same port (§9,
    Appendix A) by an embedded :class:`NatPmpServer` sharing the mappings."""

    min_lifetime: int = 120
    max_lifetime: int = 86400
    short_error_lifetime: int = 30
    long_error_lifetime: int = 1800
    natpmp: bool = True
    max_mappings_per_client: int = 128


@dataclass(slots=True)
class _Grant:
    external: Endpoint
    expires_at: float
    nonce: bytes | None  # PCP's; None when NAT-PMP made it


_GrantKey = tuple[IpProto, Endpoint]
_SWEEP_INTERVAL = 60.0


class _Grants:
    """Mappings made through the service, keyed by protocol and internal endpoint."""

    def __init__(self) -> None:
        self.grants: dict[_GrantKey, _Grant] = {}
        self._next_sweep = 0.0

    def get(self, key: _GrantKey, now: float) -> _Grant | None:
        self._sweep(now)
        grant = self.grants.get(key)
        if grant is not None and grant.expires_at <= now:
            del self.grants[key]
            return None
        return grant

    def count_for(self, host: str) -> int:
        return sum(1 for (_, internal) in self.grants if internal.host == host)

    def keys_for(self, host: str, proto: IpProto | None) -> list[_GrantKey]:
        return [
            key for key in self.grants if key[1].host == host and (proto is None or key[0] == proto)
        ]

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        for key in [k for k, g in self.grants.items() if g.expires_at <= now]:
            del self.grants[key]


def _public_ipv4(box: PortMappingBox) -> str | None:
    return next((ip for ip in box.public_ips if ip_of(ip).version == 4), None)


def _epoch(start: float, now: float) -> int:
    return max(0, int(now - start)) & 0xFFFFFFFF


class NatPmpServer:
    """Answers NAT-PMP requests (RFC 6886 §3) for ``box``."""

    def __init__(
        self, box: PortMappingBox, config: NatPmpServerConfig | None = None, *, now: float
    ) -> None:
        self.box = box
        self.config = config or NatPmpServerConfig()
        self.start = now
        self._grants = _Grants()
        self._out: list[Datagram] = []

    # -- sans-IO surface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Answer one request from ``addr`` (§3.5 order: not a request, then
        version, then opcode, then the request itself)."""
        if len(data) < 2 or data[1] & natpmp.RESPONSE_BIT:
            return  # §3.5: responses (and runts) are silently ignored
        if data[0] != natpmp.VERSION:
            self._short(data[1], natpmp.NatPmpResult.UNSUPPORTED_VERSION, addr, now)
            return
        if data[1] not in (
            natpmp.NatPmpOpcode.EXTERNAL_ADDRESS,
            natpmp.NatPmpOpcode.MAP_UDP,
            natpmp.NatPmpOpcode.MAP_TCP,
        ):
            self._short(data[1], natpmp.NatPmpResult.UNSUPPORTED_OPCODE, addr, now)
            return
        try:
            req = natpmp.parse_request(data)
        except MalformedMessageError:
            return
        if isinstance(req, natpmp.ExternalAddressRequest):
            public = _public_ipv4(self.box)
            resp: natpmp.NatPmpResponse = natpmp.ExternalAddressResponse(
                result=natpmp.NatPmpResult.SUCCESS
                if public
                else natpmp.NatPmpResult.NETWORK_FAILURE,
                epoch=self._epoch(now),
                address=public or "0.0.0.0",
            )
        else:
            resp = self._map(req, addr, now)
        self._out.append(Datagram(natpmp.serialize_response(resp), addr))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        del now
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now

    def next_event(self) -> None:
        return None

    # -- internals ---------------------------------------------------------------

    def _epoch(self, now: float) -> int:
        return _epoch(self.start, now)

    def _short(self, opcode: int, result: natpmp.NatPmpResult, addr: Endpoint, now: float) -> None:
        resp = natpmp.NatPmpErrorResponse(opcode=opcode, result=result, epoch=self._epoch(now))
        self._out.append(Datagram(natpmp.serialize_response(resp), addr))

    def _map(self, req: natpmp.MapRequest, addr: Endpoint, now: float) -> natpmp.MapResponse:
        result, port, lifetime = self._map_result(req, addr, now)
        return natpmp.MapResponse(
            proto=req.proto,
            result=result,
            epoch=self._epoch(now),
            internal_port=req.internal_port,
            external_port=port,
            lifetime=lifetime,
        )

    def _map_result(
        self, req: natpmp.MapRequest, addr: Endpoint, now: float
    ) -> tuple[natpmp.NatPmpResult, int, int]:
        grants = self._grants
        internal = Endpoint(addr.host, req.internal_port)
        if req.lifetime == 0:
            # §3.4: delete one mapping, or with internal port 0 all of this
            # client's mappings of the protocol.
            keys = (
                grants.keys_for(addr.host, req.proto)
                if req.internal_port == 0
                else [(req.proto, internal)]
            )
            for key in keys:
                grants.grants.pop(key, None)
                self.box.remove_port_mapping(key[0], key[1], now=now)
            return natpmp.NatPmpResult.SUCCESS, 0, 0
        if req.internal_port == 0:
            return natpmp.NatPmpResult.NOT_AUTHORIZED, 0, 0
        if _public_ipv4(self.box) is None:
            return natpmp.NatPmpResult.NETWORK_FAILURE, 0, 0
        lifetime = min(req.lifetime, self.config.max_lifetime)
        grant = grants.get((req.proto, internal), now)
        if grant is None and grants.count_for(addr.host) >= self.config.max_mappings_per_client:
            return natpmp.NatPmpResult.OUT_OF_RESOURCES, 0, 0
        hint = grant.external.port if grant else req.suggested_external_port or None
        external = _add(self.box, req.proto, internal, hint, lifetime, now, insist=False)
        if external is None:
            return natpmp.NatPmpResult.OUT_OF_RESOURCES, 0, 0
        grants.grants[(req.proto, internal)] = _Grant(
            external, now + lifetime, grant.nonce if grant else None
        )
        return natpmp.NatPmpResult.SUCCESS, external.port, lifetime


def _add(
    box: PortMappingBox,
    proto: IpProto,
    internal: Endpoint,
    hint: int | None,
    lifetime: float,
    now: float,
    *,
    insist: bool,
) -> Endpoint | None:
    """Ask the box for a mapping on ``hint``, then (unless ``insist``) on any port."""
    external = box.add_port_mapping(proto, internal, external_port=hint, lifetime=lifetime, now=now)
    if external is None and hint is not None and not insist:
        external = box.add_port_mapping(
            proto, internal, external_port=None, lifetime=lifetime, now=now
        )
    return external


class _PcpError(Exception):
    """Ends request processing with an error result (internal control flow)."""

    def __init__(self, result: pcp.PcpResult) -> None:
        super().__init__(result.name)
        self.result = result


class PcpServer:
    """Answers PCP requests (RFC 6887): ANNOUNCE and MAP; PEER and other
    opcodes get UNSUPP_OPCODE. With ``config.natpmp`` it also answers NAT-PMP
    on the same port, sharing the mappings."""

    def __init__(
        self, box: PortMappingBox, config: PcpServerConfig | None = None, *, now: float
    ) -> None:
        self.box = box
        self.config = config or PcpServerConfig()
        self.start = now
        self._out: list[Datagram] = []
        self.natpmp = NatPmpServer(
            box,
            NatPmpServerConfig(
                max_lifetime=self.config.max_lifetime,
                max_mappings_per_client=self.config.max_mappings_per_client,
            ),
            now=now,
        )
        self._grants = self.natpmp._grants  # one table: a mapping is a mapping

    # -- sans-IO surface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Endpoint, *, now: float) -> None:
        """Answer one request from ``addr`` (§8.3)."""
        if len(data) < 2 or data[1] & pcp.RESPONSE_BIT:
            return  # §8.3: silently dropped
        if data[0] == natpmp.VERSION and self.config.natpmp:
            self.natpmp.receive_datagram(data, addr, now=now)
            return
        try:
            req = pcp.parse_request(data)
        except MalformedMessageError as exc:
            if exc.error_code is not None:
                self._raw_error(data, pcp.PcpResult(exc.error_code), addr, now)
            return
        try:
            resp = self._answer(req, addr, now)
        except _PcpError as err:
            resp = self._error(req, err.result, now)
        self._out.append(Datagram(pcp.serialize_response(resp), addr))

    def datagrams_to_send(self, *, now: float) -> list[Datagram]:
        out, self._out = self._out, []
        out.extend(self.natpmp.datagrams_to_send(now=now))
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        del now

    def next_event(self) -> None:
        return None

    # -- internals ---------------------------------------------------------------

    def _epoch(self, now: float) -> int:
        return _epoch(self.start, now)

    def _error_lifetime(self, result: int) -> int:
        cfg = self.config
        if pcp.is_long_lifetime_error(result):
            return cfg.long_error_lifetime
        return cfg.short_error_lifetime

    def _raw_error(self, data: bytes, result: pcp.PcpResult, addr: Endpoint, now: float) -> None:
        # A request that did not parse: echo its opcode and (§8.3) as much of
        # its opcode data as there is, but never what might be its options,
        # which could not be parsed back; cut to a multiple of 4 octets.
        opcode = data[1] & ~pcp.RESPONSE_BIT
        body = data[pcp.HEADER_LEN : pcp.MAX_MESSAGE_LEN]
        known = pcp.opcode_data_length(opcode)
        if known is not None:
            body = body[:known]
        body = body[: len(body) & ~3]
        resp = pcp.PcpResponse(
            opcode=opcode,
            result=result,
            lifetime=self._error_lifetime(result),
            epoch=self._epoch(now),
            data=body,
        )
        self._out.append(Datagram(pcp.serialize_response(resp), addr))

    def _error(self, req: pcp.PcpRequest, result: pcp.PcpResult, now: float) -> pcp.PcpResponse:
        return pcp.PcpResponse(
            opcode=req.opcode,
            result=result,
            lifetime=self._error_lifetime(result),
            epoch=self._epoch(now),
            data=req.data,
            options=req.options,
        )

    def _answer(self, req: pcp.PcpRequest, addr: Endpoint, now: float) -> pcp.PcpResponse:
        if ip_of(req.client_ip) != ip_of(addr.host):
            raise _PcpError(pcp.PcpResult.ADDRESS_MISMATCH)
        if req.opcode == pcp.PcpOpcode.ANNOUNCE:
            self._check_options(req, supported=frozenset())
            return pcp.PcpResponse(
                opcode=pcp.PcpOpcode.ANNOUNCE,
                result=pcp.PcpResult.SUCCESS,
                lifetime=0,
                epoch=self._epoch(now),
            )
        if req.opcode != pcp.PcpOpcode.MAP or not isinstance(req.data, pcp.MapData):
            raise _PcpError(pcp.PcpResult.UNSUPP_OPCODE)
        options = self._check_options(req, supported=frozenset({pcp.PcpOptionCode.PREFER_FAILURE}))
        return self._map(req, req.data, addr, options, now)

    @staticmethod
    def _check_options(
        req: pcp.PcpRequest, *, supported: frozenset[int]
    ) -> tuple[pcp.PcpOption, ...]:
        """The options processed; §7.3: an unknown mandatory one fails the
        request, an unknown optional one is ignored; §13.2: PREFER_FAILURE once."""
        used: list[pcp.PcpOption] = []
        for opt in req.options:
            if opt.code not in supported:
                if opt.mandatory:
                    raise _PcpError(pcp.PcpResult.UNSUPP_OPTION)
                continue
            if any(u.code == opt.code for u in used):
                raise _PcpError(pcp.PcpResult.MALFORMED_OPTION)
            used.append(opt)
        return tuple(used)

    def _map(
        self,
        req: pcp.PcpRequest,
        d: pcp.MapData,
        addr: Endpoint,
        options: tuple[pcp.PcpOption, ...],
        now: float,
    ) -> pcp.PcpResponse:
        grants = self._grants
        if req.lifetime == 0 and d.internal_port == 0:
            return self._delete_all(req, d, addr, now)
        if d.protocol not in (IpProto.UDP, IpProto.TCP):
            raise _PcpError(pcp.PcpResult.UNSUPP_PROTOCOL)
        if d.internal_port == 0:
            raise _PcpError(pcp.PcpResult.MALFORMED_REQUEST)
        proto = IpProto(d.protocol)
        internal = Endpoint(addr.host, d.internal_port)
        grant = grants.get((proto, internal), now)
        if grant is not None and grant.nonce is not None and grant.nonce != d.nonce:
            raise _PcpError(pcp.PcpResult.NOT_AUTHORIZED)
        if req.lifetime == 0:
            grants.grants.pop((proto, internal), None)
            self.box.remove_port_mapping(proto, internal, now=now)
            return self._success(req, d, 0, now)
        public = _public_ipv4(self.box)
        if public is None:
            raise _PcpError(pcp.PcpResult.NETWORK_FAILURE)
        cfg = self.config
        lifetime = min(max(req.lifetime, cfg.min_lifetime), cfg.max_lifetime)
        prefer = bool(options)  # PREFER_FAILURE is the only option accepted here
        if grant is None:
            if grants.count_for(addr.host) >= cfg.max_mappings_per_client:
                raise _PcpError(pcp.PcpResult.USER_EX_QUOTA)
            external = self._new_mapping(proto, internal, d, lifetime, prefer, now)
        else:
            renewed = _add(
                self.box, proto, internal, grant.external.port, lifetime, now, insist=False
            )
            if renewed is None:
                grants.grants.pop((proto, internal), None)
                raise _PcpError(pcp.PcpResult.NO_RESOURCES)
            external = renewed
        grants.grants[(proto, internal)] = _Grant(external, now + lifetime, d.nonce)
        assigned = pcp.MapData(
            nonce=d.nonce,
            protocol=d.protocol,
            internal_port=d.internal_port,
            external_port=external.port,
            external_ip=external.host,
        )
        return pcp.PcpResponse(
            opcode=pcp.PcpOpcode.MAP,
            result=pcp.PcpResult.SUCCESS,
            lifetime=lifetime,
            epoch=self._epoch(now),
            data=assigned,
            options=options,
        )

    def _new_mapping(
        self,
        proto: IpProto,
        internal: Endpoint,
        d: pcp.MapData,
        lifetime: int,
        prefer: bool,
        now: float,
    ) -> Endpoint:
        wanted_ip = d.external_ip not in (pcp.ANY_IPV4, pcp.ANY_IPV6)
        if prefer and wanted_ip and d.external_ip not in self.box.public_ips:
            raise _PcpError(pcp.PcpResult.CANNOT_PROVIDE_EXTERNAL)
        external = _add(
            self.box, proto, internal, d.external_port or None, lifetime, now, insist=prefer
        )
        if external is None:
            raise _PcpError(
                pcp.PcpResult.CANNOT_PROVIDE_EXTERNAL if prefer else pcp.PcpResult.NO_RESOURCES
            )
        if prefer and (
            (d.external_port and external.port != d.external_port)
            or (wanted_ip and external.host != d.external_ip)
        ):
            self.box.remove_port_mapping(proto, internal, now=now)
            raise _PcpError(pcp.PcpResult.CANNOT_PROVIDE_EXTERNAL)
        return external

    def _delete_all(
        self, req: pcp.PcpRequest, d: pcp.MapData, addr: Endpoint, now: float
    ) -> pcp.PcpResponse:
        """Internal port 0, lifetime 0: delete this client's mappings of the
        protocol (0: all) that carry this nonce."""
        proto = IpProto(d.protocol) if d.protocol in (IpProto.UDP, IpProto.TCP) else None
        if d.protocol != 0 and proto is None:
            raise _PcpError(pcp.PcpResult.UNSUPP_PROTOCOL)
        for key in self._grants.keys_for(addr.host, proto):
            if self._grants.grants[key].nonce == d.nonce:
                del self._grants.grants[key]
                self.box.remove_port_mapping(key[0], key[1], now=now)
        return self._success(req, d, 0, now)

    def _success(
        self, req: pcp.PcpRequest, d: pcp.MapData, lifetime: int, now: float
    ) -> pcp.PcpResponse:
        return pcp.PcpResponse(
            opcode=req.opcode,
            result=pcp.PcpResult.SUCCESS,
            lifetime=lifetime,
            epoch=self._epoch(now),
            data=d,
        )
