"""TURN attributes and their codecs (RFC 8656 §18, RFC 6062 §6.2, RFC 6156).

The address attributes TURN shares with STUN (XOR-PEER-ADDRESS,
XOR-RELAYED-ADDRESS, LIFETIME, DATA) live in :mod:`natkit.stun.attributes`;
this module adds the ones only TURN uses, as typed
:class:`~natkit.stun.attributes.AttrSpec` values. Every decoder checks the
value's length before use and raises :class:`MalformedMessageError` with
code 400, which a server turns into 400 Bad Request (RFC 8656 §7.2, step 1).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from natkit.addr import Family
from natkit.errors import MalformedMessageError
from natkit.stun.attributes import (
    DATA,
    ERROR_CODE,
    LIFETIME,
    XOR_PEER_ADDRESS,
    XOR_RELAYED_ADDRESS,
    AttrSpec,
    ErrorCodeValue,
    _decode_empty,
    _decode_u32,
    _encode_empty,
    _encode_raw,
    _encode_u32,
)
from natkit.stun.constants import AttributeType

__all__ = [
    "ADDITIONAL_ADDRESS_FAMILY",
    "ADDRESS_ERROR_CODE",
    "CHANNEL_NUMBER",
    "CONNECTION_ID",
    "DATA",
    "DONT_FRAGMENT",
    "EVEN_PORT",
    "ICMP",
    "LIFETIME",
    "REQUESTED_ADDRESS_FAMILY",
    "REQUESTED_TRANSPORT",
    "RESERVATION_TOKEN",
    "XOR_PEER_ADDRESS",
    "XOR_RELAYED_ADDRESS",
    "AddressErrorCode",
    "IcmpValue",
    "TransportProtocol",
]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


def _bad(what: str) -> MalformedMessageError:
    return MalformedMessageError(what, error_code=400)


class TransportProtocol(enum.IntEnum):
    """REQUESTED-TRANSPORT values: IANA protocol numbers (RFC 8656 §18.7, RFC 6062)."""

    TCP = 6
    UDP = 17


def _decode_channel_number(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise _bad("CHANNEL-NUMBER must be 4 bytes")
    return int(_U16.unpack_from(value)[0])


def _encode_channel_number(number: int, _tid: bytes) -> bytes:
    return _U16.pack(number) + b"\x00\x00"


def _decode_even_port(value: bytes, _tid: bytes) -> bool:
    """EVEN-PORT (§18.8): one byte whose top bit R asks to reserve port + 1."""
    if len(value) != 1:
        raise _bad("EVEN-PORT must be 1 byte")
    return bool(value[0] & 0x80)


def _encode_even_port(reserve: bool, _tid: bytes) -> bytes:
    return b"\x80" if reserve else b"\x00"


def _decode_protocol_byte(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise _bad("REQUESTED-TRANSPORT must be 4 bytes")
    return value[0]


def _encode_protocol_byte(protocol: int, _tid: bytes) -> bytes:
    return bytes((protocol, 0, 0, 0))


def _decode_family(value: bytes, _tid: bytes) -> int:
    """(REQUESTED|ADDITIONAL)-ADDRESS-FAMILY (§18.10, §18.11): family byte + 3
    reserved. The raw number is returned: an unknown family is the server's
    440 to give, not the codec's 400."""
    if len(value) != 4:
        raise _bad("address family attribute must be 4 bytes")
    return value[0]


def _encode_family(family: int, _tid: bytes) -> bytes:
    return bytes((family, 0, 0, 0))


def _decode_token(value: bytes, _tid: bytes) -> bytes:
    if len(value) != 8:
        raise _bad("RESERVATION-TOKEN must be 8 bytes")
    return value


@dataclass(frozen=True, slots=True)
class AddressErrorCode:
    """ADDRESS-ERROR-CODE (RFC 8656 §18.12): why one family of a dual
    allocation could not be had."""

    family: int
    code: int
    reason: str = ""


def _decode_address_error(value: bytes, tid: bytes) -> AddressErrorCode:
    """ERROR-CODE's layout with the family in the first reserved byte."""
    err = ERROR_CODE.decode(value, tid)
    return AddressErrorCode(value[0], err.code, err.reason)


def _encode_address_error(err: AddressErrorCode, tid: bytes) -> bytes:
    value = ERROR_CODE.encode(ErrorCodeValue(err.code, err.reason), tid)
    return bytes((err.family,)) + value[1:]


@dataclass(frozen=True, slots=True)
class IcmpValue:
    """ICMP (RFC 8656 §18.13): an ICMP error the relay received for a peer."""

    icmp_type: int
    icmp_code: int
    error_data: int = 0


def _decode_icmp(value: bytes, _tid: bytes) -> IcmpValue:
    if len(value) != 8:
        raise _bad("ICMP attribute must be 8 bytes")
    return IcmpValue(value[2], value[3], int(_U32.unpack_from(value, 4)[0]))


def _encode_icmp(icmp: IcmpValue, _tid: bytes) -> bytes:
    return b"\x00\x00" + bytes((icmp.icmp_type, icmp.icmp_code)) + _U32.pack(icmp.error_data)


A = AttributeType
CHANNEL_NUMBER: AttrSpec[int] = AttrSpec(
    A.CHANNEL_NUMBER, _decode_channel_number, _encode_channel_number
)
EVEN_PORT: AttrSpec[bool] = AttrSpec(A.EVEN_PORT, _decode_even_port, _encode_even_port)
REQUESTED_TRANSPORT: AttrSpec[int] = AttrSpec(
    A.REQUESTED_TRANSPORT, _decode_protocol_byte, _encode_protocol_byte
)
DONT_FRAGMENT: AttrSpec[bool] = AttrSpec(A.DONT_FRAGMENT, _decode_empty, _encode_empty)
RESERVATION_TOKEN: AttrSpec[bytes] = AttrSpec(A.RESERVATION_TOKEN, _decode_token, _encode_raw)
REQUESTED_ADDRESS_FAMILY: AttrSpec[int] = AttrSpec(
    A.REQUESTED_ADDRESS_FAMILY, _decode_family, _encode_family
)
ADDITIONAL_ADDRESS_FAMILY: AttrSpec[int] = AttrSpec(
    A.ADDITIONAL_ADDRESS_FAMILY, _decode_family, _encode_family
)
ADDRESS_ERROR_CODE: AttrSpec[AddressErrorCode] = AttrSpec(
    A.ADDRESS_ERROR_CODE, _decode_address_error, _encode_address_error
)
ICMP: AttrSpec[IcmpValue] = AttrSpec(A.ICMP, _decode_icmp, _encode_icmp)
CONNECTION_ID: AttrSpec[int] = AttrSpec(A.CONNECTION_ID, _decode_u32, _encode_u32)

FAMILIES = frozenset({int(Family.IPV4), int(Family.IPV6)})
