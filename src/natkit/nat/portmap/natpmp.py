"""NAT-PMP messages (RFC 6886 §3), a codec of pure functions.

Every NAT-PMP message starts with a version octet (0) and an opcode octet;
responses set the opcode's top bit (128 + the request's opcode) and carry a
16-bit result code and the server's "seconds since start of epoch" (§3.6).

========================  ======  ============================================
message                   length  layout after version and opcode
========================  ======  ============================================
external address request       2  (nothing)
map request (op 1 UDP,        12  reserved(16) internal port(16)
op 2 TCP)                         suggested external port(16) lifetime(32)
external address response     12  result(16) epoch(32) external IPv4(32)
map response                  16  result(16) epoch(32) internal port(16)
                                  mapped external port(16) lifetime(32)
short error response           8  result(16) epoch(32)
========================  ======  ============================================

The 8-byte form is what a server sends for an unsupported version or
opcode (§3.5), where it cannot know the layout of the request; it is also
what a NAT-PMP server answers to a PCP request, which is how a PCP client
learns that it must fall back (RFC 6887 §9). Parsers check every length
before reading and raise :class:`~natkit.errors.MalformedMessageError` with
``error_code=None``: NAT-PMP has no "malformed" result, so a server drops
what it cannot parse.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from natkit.errors import MalformedMessageError
from natkit.packet import IpProto

__all__ = [
    "CLIENT_PORT",
    "RESPONSE_BIT",
    "SERVER_PORT",
    "VERSION",
    "ExternalAddressRequest",
    "ExternalAddressResponse",
    "MapRequest",
    "MapResponse",
    "NatPmpErrorResponse",
    "NatPmpOpcode",
    "NatPmpRequest",
    "NatPmpResponse",
    "NatPmpResult",
    "opcode_for",
    "parse_request",
    "parse_response",
    "proto_for",
    "result_code",
    "serialize_request",
    "serialize_response",
]

VERSION = 0
SERVER_PORT = 5351  # §3: requests go to the gateway's port 5351
CLIENT_PORT = 5350  # §3.2.1: address-change announcements are multicast to 224.0.0.1:5350
RESPONSE_BIT = 0x80


class NatPmpOpcode(enum.IntEnum):
    """Request opcodes (§3.2, §3.3); a response's opcode is 128 + these."""

    EXTERNAL_ADDRESS = 0
    MAP_UDP = 1
    MAP_TCP = 2


class NatPmpResult(enum.IntEnum):
    """Result codes (§3.5)."""

    SUCCESS = 0
    UNSUPPORTED_VERSION = 1
    NOT_AUTHORIZED = 2  # "Not Authorized/Refused": the mapping feature is turned off
    NETWORK_FAILURE = 3  # e.g. the gateway has no external address yet
    OUT_OF_RESOURCES = 4  # no more mappings, or the port cannot be had
    UNSUPPORTED_OPCODE = 5


def result_code(value: int) -> NatPmpResult | int:
    """The enum member for a known result code, the bare number otherwise
    (a newer server may send codes this module does not know)."""
    try:
        return NatPmpResult(value)
    except ValueError:
        return value


def opcode_for(proto: IpProto) -> NatPmpOpcode:
    if proto == IpProto.UDP:
        return NatPmpOpcode.MAP_UDP
    if proto == IpProto.TCP:
        return NatPmpOpcode.MAP_TCP
    raise ValueError(f"NAT-PMP maps only UDP and TCP, not {proto!r}")


def proto_for(opcode: int) -> IpProto:
    return IpProto.UDP if opcode == NatPmpOpcode.MAP_UDP else IpProto.TCP


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAddressRequest:
    """§3.2: ask for the gateway's external IPv4 address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MapRequest:
    """§3.3: create, renew (same request again) or delete (``lifetime=0``)
    the mapping of ``internal_port``. ``suggested_external_port`` 0 means
    "any"; for a deletion it must be 0 (§3.4)."""

    proto: IpProto
    internal_port: int
    suggested_external_port: int
    lifetime: int


NatPmpRequest = ExternalAddressRequest | MapRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class ExternalAddressResponse:
    """§3.2. With a non-zero result the address is meaningless (sent as 0.0.0.0)."""

    result: NatPmpResult | int
    epoch: int
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MapResponse:
    """§3.3. ``external_port`` and ``lifetime`` are 0 for a deletion and
    meaningless when ``result`` is not SUCCESS."""

    proto: IpProto
    result: NatPmpResult | int
    epoch: int
    internal_port: int
    external_port: int
    lifetime: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NatPmpErrorResponse:
    """The 8-byte answer to a request whose version or opcode the server
    does not support (§3.5); ``opcode`` is the request's (without the
    response bit), whatever it was."""

    opcode: int
    result: NatPmpResult | int
    epoch: int


NatPmpResponse = ExternalAddressResponse | MapResponse | NatPmpErrorResponse

_MAP_REQUEST = struct.Struct("!BBHHHI")
_ADDR_RESPONSE = struct.Struct("!BBHI4s")
_MAP_RESPONSE = struct.Struct("!BBHIHHI")
_SHORT_RESPONSE = struct.Struct("!BBHI")


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")


def _check_u32(value: int, what: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{what} out of range: {value}")


def serialize_request(msg: NatPmpRequest) -> bytes:
    """Encode a request (§3.2, §3.3). Raises ``ValueError`` for out-of-range fields."""
    if isinstance(msg, ExternalAddressRequest):
        return bytes((VERSION, NatPmpOpcode.EXTERNAL_ADDRESS))
    _check_port(msg.internal_port)
    _check_port(msg.suggested_external_port)
    _check_u32(msg.lifetime, "lifetime")
    return _MAP_REQUEST.pack(
        VERSION,
        opcode_for(msg.proto),
        0,
        msg.internal_port,
        msg.suggested_external_port,
        msg.lifetime,
    )


def parse_request(data: bytes) -> NatPmpRequest:
    """Decode a version-0 request of a known opcode.

    A server checks version and opcode itself first (they have result codes
    of their own, §3.5); anything else that does not fit raises
    :class:`MalformedMessageError` (``error_code=None``: drop it).
    """
    if len(data) < 2:
        raise MalformedMessageError("NAT-PMP request shorter than 2 bytes", error_code=None)
    version, opcode = data[0], data[1]
    if version != VERSION:
        raise MalformedMessageError(f"NAT-PMP version {version}", error_code=None)
    if opcode == NatPmpOpcode.EXTERNAL_ADDRESS:
        if len(data) != 2:
            raise MalformedMessageError("external address request is 2 bytes", error_code=None)
        return ExternalAddressRequest()
    if opcode in (NatPmpOpcode.MAP_UDP, NatPmpOpcode.MAP_TCP):
        if len(data) != _MAP_REQUEST.size:
            raise MalformedMessageError("map request is 12 bytes", error_code=None)
        # The reserved field "MUST be ignored on reception" (§3.3).
        _, _, _, internal, external, lifetime = _MAP_REQUEST.unpack(data)
        return MapRequest(
            proto=proto_for(opcode),
            internal_port=internal,
            suggested_external_port=external,
            lifetime=lifetime,
        )
    raise MalformedMessageError(f"NAT-PMP opcode {opcode}", error_code=None)


def serialize_response(msg: NatPmpResponse) -> bytes:
    """Encode a response (§3.2, §3.3, §3.5)."""
    _check_u32(msg.epoch, "epoch")
    if not 0 <= msg.result <= 0xFFFF:
        raise ValueError(f"result code out of range: {msg.result}")
    if isinstance(msg, ExternalAddressResponse):
        packed = ipaddress.IPv4Address(msg.address).packed
        return _ADDR_RESPONSE.pack(
            VERSION, RESPONSE_BIT | NatPmpOpcode.EXTERNAL_ADDRESS, msg.result, msg.epoch, packed
        )
    if isinstance(msg, MapResponse):
        _check_port(msg.internal_port)
        _check_port(msg.external_port)
        _check_u32(msg.lifetime, "lifetime")
        return _MAP_RESPONSE.pack(
            VERSION,
            RESPONSE_BIT | opcode_for(msg.proto),
            msg.result,
            msg.epoch,
            msg.internal_port,
            msg.external_port,
            msg.lifetime,
        )
    if not 0 <= msg.opcode < RESPONSE_BIT:
        raise ValueError(f"request opcode out of range: {msg.opcode}")
    return _SHORT_RESPONSE.pack(VERSION, RESPONSE_BIT | msg.opcode, msg.result, msg.epoch)


def parse_response(data: bytes) -> NatPmpResponse:
    """Decode a response; lengths are exact (§3.2, §3.3: 12 and 16 bytes,
    §3.5: 8 bytes for a short error). A success must come in full form."""
    if len(data) < _SHORT_RESPONSE.size:
        raise MalformedMessageError("NAT-PMP response shorter than 8 bytes", error_code=None)
    version, opcode, result, epoch = _SHORT_RESPONSE.unpack_from(data)
    if version != VERSION:
        raise MalformedMessageError(f"NAT-PMP version {version}", error_code=None)
    if not opcode & RESPONSE_BIT:
        raise MalformedMessageError("not a NAT-PMP response", error_code=None)
    op = opcode & ~RESPONSE_BIT
    code = result_code(result)
    if op == NatPmpOpcode.EXTERNAL_ADDRESS and len(data) == _ADDR_RESPONSE.size:
        packed = _ADDR_RESPONSE.unpack(data)[4]
        return ExternalAddressResponse(
            result=code, epoch=epoch, address=str(ipaddress.IPv4Address(packed))
        )
    if op in (NatPmpOpcode.MAP_UDP, NatPmpOpcode.MAP_TCP) and len(data) == _MAP_RESPONSE.size:
        _, _, _, _, internal, external, lifetime = _MAP_RESPONSE.unpack(data)
        return MapResponse(
            proto=proto_for(op),
            result=code,
            epoch=epoch,
            internal_port=internal,
            external_port=external,
            lifetime=lifetime,
        )
    if len(data) != _SHORT_RESPONSE.size or code == NatPmpResult.SUCCESS:
        raise MalformedMessageError(
            f"NAT-PMP response of {len(data)} bytes for opcode {op}", error_code=None
        )
    return NatPmpErrorResponse(opcode=op, result=code, epoch=epoch)
