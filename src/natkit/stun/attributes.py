"""Typed STUN attribute values and their codecs.

Each attribute is described by an :class:`AttrSpec`: its wire type and a pair
of functions between the value bytes (unpadded) and a Python value. Messages
keep attributes raw and decode on access, so a server that only needs one
attribute never pays for the others, and a malformed attribute it never reads
cannot hurt it. Decoding failures raise :class:`MalformedMessageError` with
code 400 (RFC 8489 §6.3: malformed requests get 400 Bad Request).

Address attributes (RFC 8489 §14.1-14.2, RFC 5780 §7, RFC 3489 §11.2):
``family`` 0x01 (IPv4, 4 bytes) or 0x02 (IPv6, 16 bytes); the XOR variants
xor the port with the top 16 bits of the magic cookie and the address with
the cookie (and, for IPv6, the transaction ID).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from natkit.addr import Endpoint, Family, ip_of
from natkit.errors import MalformedMessageError
from natkit.stun.constants import MAGIC_COOKIE, MAGIC_COOKIE_BYTES, AttributeType, PasswordAlgorithm

__all__ = [
    "AttrSpec",
    "ChangeRequest",
    "ErrorCodeValue",
    "PasswordAlgorithmParams",
]

T = TypeVar("T")

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_ADDR_HEAD = struct.Struct("!BBH")
_XOR_V4 = struct.Struct("!xBHBBBB")  # XOR-MAPPED-ADDRESS, IPv4: octets XOR the cookie's


@dataclass(frozen=True, slots=True)
class AttrSpec(Generic[T]):
    """How one attribute type maps to a Python value.

    ``decode(value, transaction_id)`` and ``encode(obj, transaction_id)``: the
    transaction ID is the 12 bytes after the cookie (XOR-address codecs need it).
    """

    type: AttributeType
    decode: Callable[[bytes, bytes], T]
    encode: Callable[[T, bytes], bytes]


def _bad(what: str) -> MalformedMessageError:
    return MalformedMessageError(what, error_code=400)


# -- addresses -------------------------------------------------------------


def _decode_address(value: bytes, _tid: bytes) -> Endpoint:
    if len(value) < 4:
        raise _bad("address attribute too short")
    _, family, port = _ADDR_HEAD.unpack_from(value)
    raw = value[4:]
    if family == Family.IPV4 and len(raw) == 4:
        return Endpoint("{}.{}.{}.{}".format(*raw), port)
    if family == Family.IPV6 and len(raw) == 16:
        return Endpoint(str(ipaddress.IPv6Address(raw)), port)
    raise _bad(f"bad address family {family} or length {len(value)}")


def _encode_address(ep: Endpoint, _tid: bytes) -> bytes:
    family = Family.IPV4 if ":" not in ep.host else Family.IPV6
    return _ADDR_HEAD.pack(0, family, ep.port) + ip_of(ep.host).packed


def _xor_bytes(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _decode_xor_address(value: bytes, tid: bytes) -> Endpoint:
    if len(value) < 4:
        raise _bad("address attribute too short")
    _, family, xport = _ADDR_HEAD.unpack_from(value)
    raw = value[4:]
    port = xport ^ (MAGIC_COOKIE >> 16)
    if family == Family.IPV4 and len(raw) == 4:
        n = int.from_bytes(raw, "big") ^ MAGIC_COOKIE
        return Endpoint(f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}", port)
    if family == Family.IPV6 and len(raw) == 16:
        return Endpoint(
            str(ipaddress.IPv6Address(_xor_bytes(raw, MAGIC_COOKIE_BYTES + tid[-12:]))), port
        )
    raise _bad(f"bad address family {family} or length {len(value)}")


def _encode_xor_address(ep: Endpoint, tid: bytes) -> bytes:
    host = ep.host
    xport = ep.port ^ (MAGIC_COOKIE >> 16)
    if ":" not in host:
        # Endpoint hosts are canonical literals: a dotted quad is split here
        # (a server answers a new client IP per Allocate, and parsing it with
        # ipaddress costs more than this whole encoding); the struct's B
        # fields refuse an octet outside 0-255, as XOR with a byte keeps 0-255.
        a, b, c, d = host.split(".")
        try:
            return _XOR_V4.pack(
                Family.IPV4, xport, int(a) ^ 0x21, int(b) ^ 0x12, int(c) ^ 0xA4, int(d) ^ 0x42
            )
        except struct.error:
            raise ValueError(f"not an IPv4 address: {host!r}") from None
    packed = ip_of(host).packed
    return _ADDR_HEAD.pack(0, Family.IPV6, xport) + _xor_bytes(
        packed, MAGIC_COOKIE_BYTES + tid[-12:]
    )


# -- scalars and text --------------------------------------------------------


def _text_codec(limit: int) -> tuple[Callable[[bytes, bytes], str], Callable[[str, bytes], bytes]]:
    def decode(value: bytes, _tid: bytes) -> str:
        if len(value) > limit:
            raise _bad(f"text attribute longer than {limit} bytes")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad("text attribute is not UTF-8") from exc

    def encode(text: str, _tid: bytes) -> bytes:
        data = text.encode("utf-8")
        if len(data) > limit:
            raise ValueError(f"text attribute longer than {limit} bytes")
        return data

    return decode, encode


def _decode_u32(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise _bad("32-bit attribute of wrong length")
    return int(_U32.unpack(value)[0])


def _encode_u32(n: int, _tid: bytes) -> bytes:
    return _U32.pack(n)


def _decode_u64(value: bytes, _tid: bytes) -> int:
    if len(value) != 8:
        raise _bad("64-bit attribute of wrong length")
    return int(_U64.unpack(value)[0])


def _encode_u64(n: int, _tid: bytes) -> bytes:
    return _U64.pack(n)


def _decode_raw(value: bytes, _tid: bytes) -> bytes:
    return value


def _encode_raw(value: bytes, _tid: bytes) -> bytes:
    return value


def _decode_empty(value: bytes, _tid: bytes) -> bool:
    if value:
        raise _bad("flag attribute must be empty")
    return True


def _encode_empty(_flag: bool, _tid: bytes) -> bytes:
    return b""


# -- structured values -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorCodeValue:
    """ERROR-CODE (RFC 8489 §14.8): a 3-digit code 300-699 and a reason phrase."""

    code: int
    reason: str = ""


def _decode_error_code(value: bytes, _tid: bytes) -> ErrorCodeValue:
    if len(value) < 4:
        raise _bad("ERROR-CODE too short")
    cls = value[2] & 0x07
    number = value[3]
    if not 3 <= cls <= 6 or number > 99:
        raise _bad(f"ERROR-CODE class {cls} number {number} out of range")
    try:
        reason = value[4:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("ERROR-CODE reason is not UTF-8") from exc
    return ErrorCodeValue(cls * 100 + number, reason)


def _encode_error_code(err: ErrorCodeValue, _tid: bytes) -> bytes:
    if not 300 <= err.code <= 699:
        raise ValueError(f"STUN error code out of range: {err.code}")
    # Cut at a character boundary: a split UTF-8 sequence would make our own
    # message one that every receiver (this codec included) rejects.
    reason = err.reason.encode("utf-8")[:763].decode("utf-8", "ignore").encode("utf-8")
    return bytes((0, 0, err.code // 100, err.code % 100)) + reason


def _decode_unknown(value: bytes, _tid: bytes) -> tuple[int, ...]:
    # RFC 3489 servers repeat the last type to pad to 4 bytes; tolerate odd sizes.
    return tuple(_U16.unpack_from(value, i)[0] for i in range(0, len(value) - 1, 2))


def _encode_unknown(types: tuple[int, ...], _tid: bytes) -> bytes:
    return b"".join(_U16.pack(t) for t in types)


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """CHANGE-REQUEST (RFC 5780 §7.2): answer from the other IP and/or port."""

    change_ip: bool = False
    change_port: bool = False


def _decode_change_request(value: bytes, tid: bytes) -> ChangeRequest:
    flags = _decode_u32(value, tid)
    return ChangeRequest(change_ip=bool(flags & 0x4), change_port=bool(flags & 0x2))


def _encode_change_request(req: ChangeRequest, _tid: bytes) -> bytes:
    return _U32.pack((0x4 if req.change_ip else 0) | (0x2 if req.change_port else 0))


def _decode_response_port(value: bytes, _tid: bytes) -> int:
    if len(value) != 4:
        raise _bad("RESPONSE-PORT of wrong length")
    return int(_U16.unpack_from(value)[0])


def _encode_response_port(port: int, _tid: bytes) -> bytes:
    return _U16.pack(port) + b"\x00\x00"


@dataclass(frozen=True, slots=True)
class PasswordAlgorithmParams:
    """One entry of PASSWORD-ALGORITHM(S) (RFC 8489 §14.11-14.12)."""

    algorithm: int
    parameters: bytes = b""


def _decode_algorithms(value: bytes, _tid: bytes) -> tuple[PasswordAlgorithmParams, ...]:
    out: list[PasswordAlgorithmParams] = []
    i = 0
    while i < len(value):
        if i + 4 > len(value):
            raise _bad("PASSWORD-ALGORITHMS entry truncated")
        alg, plen = struct.unpack_from("!HH", value, i)
        i += 4
        if i + plen > len(value):
            raise _bad("PASSWORD-ALGORITHMS parameters overrun")
        out.append(PasswordAlgorithmParams(alg, value[i : i + plen]))
        i += (plen + 3) & ~3
    return tuple(out)


def _encode_algorithm(entry: PasswordAlgorithmParams) -> bytes:
    pad = b"\x00" * (-len(entry.parameters) % 4)
    return struct.pack("!HH", entry.algorithm, len(entry.parameters)) + entry.parameters + pad


def _encode_algorithms(entries: tuple[PasswordAlgorithmParams, ...], _tid: bytes) -> bytes:
    return b"".join(_encode_algorithm(e) for e in entries)


def _decode_algorithm(value: bytes, tid: bytes) -> PasswordAlgorithmParams:
    entries = _decode_algorithms(value, tid)
    if len(entries) != 1:
        raise _bad("PASSWORD-ALGORITHM must hold exactly one algorithm")
    return entries[0]


def _encode_single_algorithm(entry: PasswordAlgorithmParams, _tid: bytes) -> bytes:
    return _encode_algorithm(entry)


def _decode_userhash(value: bytes, _tid: bytes) -> bytes:
    if len(value) != 32:
        raise _bad("USERHASH must be 32 bytes")
    return value


_username = _text_codec(513)
_long_text = _text_codec(763)
_domain = _text_codec(255)

A = AttributeType
MAPPED_ADDRESS: AttrSpec[Endpoint] = AttrSpec(A.MAPPED_ADDRESS, _decode_address, _encode_address)
XOR_MAPPED_ADDRESS: AttrSpec[Endpoint] = AttrSpec(
    A.XOR_MAPPED_ADDRESS, _decode_xor_address, _encode_xor_address
)
RESPONSE_ADDRESS: AttrSpec[Endpoint] = AttrSpec(
    A.RESPONSE_ADDRESS, _decode_address, _encode_address
)
SOURCE_ADDRESS: AttrSpec[Endpoint] = AttrSpec(A.SOURCE_ADDRESS, _decode_address, _encode_address)
CHANGED_ADDRESS: AttrSpec[Endpoint] = AttrSpec(A.CHANGED_ADDRESS, _decode_address, _encode_address)
RESPONSE_ORIGIN: AttrSpec[Endpoint] = AttrSpec(A.RESPONSE_ORIGIN, _decode_address, _encode_address)
OTHER_ADDRESS: AttrSpec[Endpoint] = AttrSpec(A.OTHER_ADDRESS, _decode_address, _encode_address)
ALTERNATE_SERVER: AttrSpec[Endpoint] = AttrSpec(
    A.ALTERNATE_SERVER, _decode_address, _encode_address
)
XOR_PEER_ADDRESS: AttrSpec[Endpoint] = AttrSpec(
    A.XOR_PEER_ADDRESS, _decode_xor_address, _encode_xor_address
)
XOR_RELAYED_ADDRESS: AttrSpec[Endpoint] = AttrSpec(
    A.XOR_RELAYED_ADDRESS, _decode_xor_address, _encode_xor_address
)
USERNAME: AttrSpec[str] = AttrSpec(A.USERNAME, *_username)
REALM: AttrSpec[str] = AttrSpec(A.REALM, *_long_text)
NONCE: AttrSpec[str] = AttrSpec(A.NONCE, *_long_text)
SOFTWARE: AttrSpec[str] = AttrSpec(A.SOFTWARE, *_long_text)
ALTERNATE_DOMAIN: AttrSpec[str] = AttrSpec(A.ALTERNATE_DOMAIN, *_domain)
USERHASH: AttrSpec[bytes] = AttrSpec(A.USERHASH, _decode_userhash, _encode_raw)
ERROR_CODE: AttrSpec[ErrorCodeValue] = AttrSpec(
    A.ERROR_CODE, _decode_error_code, _encode_error_code
)
UNKNOWN_ATTRIBUTES: AttrSpec[tuple[int, ...]] = AttrSpec(
    A.UNKNOWN_ATTRIBUTES, _decode_unknown, _encode_unknown
)
CHANGE_REQUEST: AttrSpec[ChangeRequest] = AttrSpec(
    A.CHANGE_REQUEST, _decode_change_request, _encode_change_request
)
RESPONSE_PORT: AttrSpec[int] = AttrSpec(
    A.RESPONSE_PORT, _decode_response_port, _encode_response_port
)
PADDING: AttrSpec[bytes] = AttrSpec(A.PADDING, _decode_raw, _encode_raw)
PASSWORD_ALGORITHMS: AttrSpec[tuple[PasswordAlgorithmParams, ...]] = AttrSpec(
    A.PASSWORD_ALGORITHMS, _decode_algorithms, _encode_algorithms
)
PASSWORD_ALGORITHM: AttrSpec[PasswordAlgorithmParams] = AttrSpec(
    A.PASSWORD_ALGORITHM, _decode_algorithm, _encode_single_algorithm
)
PRIORITY: AttrSpec[int] = AttrSpec(A.PRIORITY, _decode_u32, _encode_u32)
USE_CANDIDATE: AttrSpec[bool] = AttrSpec(A.USE_CANDIDATE, _decode_empty, _encode_empty)
ICE_CONTROLLED: AttrSpec[int] = AttrSpec(A.ICE_CONTROLLED, _decode_u64, _encode_u64)
ICE_CONTROLLING: AttrSpec[int] = AttrSpec(A.ICE_CONTROLLING, _decode_u64, _encode_u64)
LIFETIME: AttrSpec[int] = AttrSpec(A.LIFETIME, _decode_u32, _encode_u32)
DATA: AttrSpec[bytes] = AttrSpec(A.DATA, _decode_raw, _encode_raw)
MESSAGE_INTEGRITY: AttrSpec[bytes] = AttrSpec(A.MESSAGE_INTEGRITY, _decode_raw, _encode_raw)
MESSAGE_INTEGRITY_SHA256: AttrSpec[bytes] = AttrSpec(
    A.MESSAGE_INTEGRITY_SHA256, _decode_raw, _encode_raw
)
FINGERPRINT: AttrSpec[int] = AttrSpec(A.FINGERPRINT, _decode_u32, _encode_u32)

SUPPORTED_PASSWORD_ALGORITHMS = (PasswordAlgorithm.MD5, PasswordAlgorithm.SHA256)
