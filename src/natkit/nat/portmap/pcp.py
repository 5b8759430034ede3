"""Port Control Protocol messages (RFC 6887 §7, §11, §13, §14), a codec of
pure functions.

Layout
------
Every message is a 24-octet common header, opcode-specific data and a list
of options, at most 1100 octets in all and a multiple of 4 (§7, §8.3)::

    request  (§7.1): version(8)=2  R=0|opcode(7)  reserved(16)
                     requested lifetime(32)  PCP client's IP address(128)
    response (§7.2): version(8)=2  R=1|opcode(7)  reserved(8)  result code(8)
                     lifetime(32)  epoch time(32)  reserved(96)

    MAP data  (§11.1): mapping nonce(96)  protocol(8)  reserved(24)
                       internal port(16)  suggested/assigned external port(16)
                       suggested/assigned external IP address(128)
    PEER data (§12.1): MAP data, then remote peer port(16)  reserved(16)
                       remote peer IP address(128)
    ANNOUNCE  (§14.1): no opcode-specific data
    option    (§7.3):  code(8)  reserved(8)  length(16)  data, padded to 4 octets

Every address field is 128 bits; IPv4 addresses travel as IPv4-mapped IPv6
addresses (``::ffff:a.b.c.d``, §5). This module speaks text: an IPv4-mapped
address decodes to its dotted IPv4 form and dotted forms encode mapped, so
``0.0.0.0`` is "any IPv4 address" (``::ffff:0.0.0.0``) and ``::`` is "any
IPv6 address" (§11.1).

Errors
------
Parsers raise :class:`~natkit.errors.MalformedMessageError` whose
``error_code`` is the result a server answers with: MALFORMED_REQUEST for a
bad header or opcode data, MALFORMED_OPTION for a bad option, and ``None``
(drop silently, §8.3) for what is not a request at all (fewer than 2
octets, the R bit set). Error responses copy the request's opcode data
(§8.3: "fields from the request copied into the response"), which may be
shorter than the opcode's layout when the request was malformed: such data
is kept as raw bytes.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass

from natkit.errors import MalformedMessageError

__all__ = [
    "ANY_IPV4",
    "ANY_IPV6",
    "HEADER_LEN",
    "MAP_DATA_LEN",
    "MAX_MESSAGE_LEN",
    "NONCE_LEN",
    "PEER_DATA_LEN",
    "RESPONSE_BIT",
    "VERSION",
    "FilterOption",
    "MapData",
    "OpcodeData",
    "PcpOpcode",
    "PcpOption",
    "PcpOptionCode",
    "PcpRequest",
    "PcpResponse",
    "PcpResult",
    "PeerData",
    "decode_ip",
    "encode_ip",
    "filter_option",
    "is_long_lifetime_error",
    "opcode_data_length",
    "parse_filter",
    "parse_request",
    "parse_response",
    "prefer_failure",
    "result_code",
    "serialize_request",
    "serialize_response",
    "third_party",
]

VERSION = 2
HEADER_LEN = 24
MAX_MESSAGE_LEN = 1100
NONCE_LEN = 12
MAP_DATA_LEN = 36
PEER_DATA_LEN = 56
ANY_IPV4 = "0.0.0.0"  # encoded ::ffff:0.0.0.0
ANY_IPV6 = "::"
RESPONSE_BIT = 0x80


class PcpOpcode(enum.IntEnum):
    ANNOUNCE = 0  # §14.1
    MAP = 1  # §11
    PEER = 2  # §12


class PcpResult(enum.IntEnum):
    """Result codes (§7.4)."""

    SUCCESS = 0
    UNSUPP_VERSION = 1
    NOT_AUTHORIZED = 2
    MALFORMED_REQUEST = 3
    UNSUPP_OPCODE = 4
    UNSUPP_OPTION = 5
    MALFORMED_OPTION = 6
    NETWORK_FAILURE = 7
    NO_RESOURCES = 8
    UNSUPP_PROTOCOL = 9
    USER_EX_QUOTA = 10
    CANNOT_PROVIDE_EXTERNAL = 11
    ADDRESS_MISMATCH = 12
    EXCESSIVE_REMOTE_PEERS = 13


# §7.4 calls each error "long lifetime" (the condition will not go away by
# itself: configuration, a malformed request) or "short lifetime" (it may
# clear soon: resources, the network); the response's lifetime field says
# how long the client should take the answer to stand.
_SHORT_LIFETIME_ERRORS = frozenset(
    {
        PcpResult.NETWORK_FAILURE,
        PcpResult.NO_RESOURCES,
        PcpResult.USER_EX_QUOTA,
        PcpResult.CANNOT_PROVIDE_EXTERNAL,
    }
)


def is_long_lifetime_error(result: int) -> bool:
    """Whether ``result`` is one of §7.4's long-lifetime errors."""
    return result != PcpResult.SUCCESS and result not in _SHORT_LIFETIME_ERRORS


class PcpOptionCode(enum.IntEnum):
    """Options (§13). Codes 0-127 are mandatory to process, 128-255 optional (§7.3)."""

    THIRD_PARTY = 1
    PREFER_FAILURE = 2
    FILTER = 3


def result_code(value: int) -> PcpResult | int:
    """The enum member for a known result, the number for one defined later."""
    try:
        return PcpResult(value)
    except ValueError:
        return value


def encode_ip(text: str) -> bytes:
    """16 octets for an address field: IPv6 as is, IPv4 mapped (§5)."""
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + ip.packed
    return ip.packed


def decode_ip(raw: bytes) -> str:
    """Text of a 16-octet address field; IPv4-mapped addresses as dotted IPv4."""
    ip = ipaddress.IPv6Address(raw)
    mapped = ip.ipv4_mapped
    return str(mapped) if mapped is not None else str(ip)


@dataclass(frozen=True, slots=True)
class PcpOption:
    """One option: its code and its data without padding (§7.3)."""

    code: int
    data: bytes = b""

    @property
    def mandatory(self) -> bool:
        return self.code < 128


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterOption:
    """The FILTER option's data (§13.3)."""

    prefix_length: int
    remote_peer_port: int
    remote_peer_ip: str


def prefer_failure() -> PcpOption:
    """PREFER_FAILURE (§13.2): fail rather than assign another port or address."""
    return PcpOption(PcpOptionCode.PREFER_FAILURE)


def third_party(ip: str) -> PcpOption:
    """THIRD_PARTY (§13.1): the mapping is for ``ip``, not for the sender."""
    return PcpOption(PcpOptionCode.THIRD_PARTY, encode_ip(ip))


def filter_option(prefix_length: int, remote_peer_port: int, remote_peer_ip: str) -> PcpOption:
    """FILTER (§13.3): only let these remote peers in."""
    return PcpOption(
        PcpOptionCode.FILTER,
        struct.pack("!xBH", prefix_length, remote_peer_port) + encode_ip(remote_peer_ip),
    )


def parse_filter(option: PcpOption) -> FilterOption:
    if option.code != PcpOptionCode.FILTER or len(option.data) != 20:
        raise MalformedMessageError("not a FILTER option", error_code=PcpResult.MALFORMED_OPTION)
    prefix, port = struct.unpack_from("!xBH", option.data)
    return FilterOption(
        prefix_length=prefix, remote_peer_port=port, remote_peer_ip=decode_ip(option.data[4:])
    )


_OPTION_DATA_LEN = {
    PcpOptionCode.THIRD_PARTY: 16,
    PcpOptionCode.PREFER_FAILURE: 0,
    PcpOptionCode.FILTER: 20,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class MapData:
    """MAP opcode data (§11.1 request, §11.2 response). ``protocol`` is an
    IANA protocol number, 0 meaning "all protocols"; in a request the port
    and address are suggestions (0 and ``0.0.0.0``/``::`` for "any"), in a
    response what was assigned."""

    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerData:
    """PEER opcode data (§12.1, §12.2): a MAP plus the remote peer."""

    nonce: bytes
    protocol: int
    internal_port: int
    external_port: int
    external_ip: str
    remote_peer_port: int
    remote_peer_ip: str


OpcodeData = MapData | PeerData | bytes
"""Opcode-specific data; ``bytes`` for an unknown opcode, ANNOUNCE (empty),
or the truncated copy of a malformed request in an error response."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PcpRequest:
    opcode: int
    lifetime: int
    client_ip: str
    data: OpcodeData = b""
    options: tuple[PcpOption, ...] = ()

    def option(self, code: int) -> PcpOption | None:
        return next((o for o in self.options if o.code == code), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class PcpResponse:
    opcode: int
    result: PcpResult | int
    lifetime: int
    epoch: int
    data: OpcodeData = b""
    options: tuple[PcpOption, ...] = ()

    def option(self, code: int) -> PcpOption | None:
        return next((o for o in self.options if o.code == code), None)


_DATA_LEN: dict[int, int] = {PcpOpcode.MAP: MAP_DATA_LEN, PcpOpcode.PEER: PEER_DATA_LEN}
_KNOWN_OPCODES = frozenset(int(op) for op in PcpOpcode)
_REQUEST_HEADER = struct.Struct("!BBHI16s")
_RESPONSE_HEADER = struct.Struct("!BBxBII12x")
_MAP = struct.Struct("!12sB3xHH16s")
_PEER_TAIL = struct.Struct("!H2x16s")
_OPTION_HEADER = struct.Struct("!BxH")


def opcode_data_length(opcode: int) -> int | None:
    """Octets of opcode-specific data of a known opcode (ANNOUNCE 0, MAP 36,
    PEER 56); ``None`` for an opcode this module does not know."""
    if opcode == PcpOpcode.ANNOUNCE:
        return 0
    return _DATA_LEN.get(opcode)


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _check(value: int, bits: int, what: str) -> None:
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what} out of range: {value}")


def _encode_data(opcode: int, data: OpcodeData) -> bytes:
    if isinstance(data, bytes):
        if len(data) % 4:
            raise ValueError("raw opcode data must be a multiple of 4 octets")
        return data
    if len(data.nonce) != NONCE_LEN:
        raise ValueError("a mapping nonce is 12 octets")
    _check(data.protocol, 8, "protocol")
    _check(data.internal_port, 16, "internal port")
    _check(data.external_port, 16, "external port")
    out = _MAP.pack(
        data.nonce,
        data.protocol,
        data.internal_port,
        data.external_port,
        encode_ip(data.external_ip),
    )
    if isinstance(data, PeerData):
        if opcode != PcpOpcode.PEER:
            raise ValueError("PEER data needs the PEER opcode")
        _check(data.remote_peer_port, 16, "remote peer port")
        out += _PEER_TAIL.pack(data.remote_peer_port, encode_ip(data.remote_peer_ip))
    elif opcode != PcpOpcode.MAP:
        raise ValueError("MAP data needs the MAP opcode")
    return out


def _encode_options(options: tuple[PcpOption, ...]) -> bytes:
    out = bytearray()
    for opt in options:
        _check(opt.code, 8, "option code")
        _check(len(opt.data), 16, "option length")
        out += _OPTION_HEADER.pack(opt.code, len(opt.data))
        out += opt.data + b"\x00" * (_pad4(len(opt.data)) - len(opt.data))
    return bytes(out)


def _finish(msg: bytes) -> bytes:
    if len(msg) > MAX_MESSAGE_LEN:
        raise ValueError(f"PCP message of {len(msg)} octets exceeds {MAX_MESSAGE_LEN}")
    return msg


def serialize_request(msg: PcpRequest) -> bytes:
    """Encode a request (§7.1). Raises ``ValueError`` for out-of-range fields."""
    _check(msg.opcode, 7, "opcode")
    _check(msg.lifetime, 32, "lifetime")
    head = _REQUEST_HEADER.pack(VERSION, msg.opcode, 0, msg.lifetime, encode_ip(msg.client_ip))
    return _finish(head + _encode_data(msg.opcode, msg.data) + _encode_options(msg.options))


def serialize_response(msg: PcpResponse) -> bytes:
    """Encode a response (§7.2)."""
    _check(msg.opcode, 7, "opcode")
    _check(msg.result, 8, "result code")
    _check(msg.lifetime, 32, "lifetime")
    _check(msg.epoch, 32, "epoch")
    head = _RESPONSE_HEADER.pack(
        VERSION, RESPONSE_BIT | msg.opcode, msg.result, msg.lifetime, msg.epoch
    )
    return _finish(head + _encode_data(msg.opcode, msg.data) + _encode_options(msg.options))


def _malformed(
    reason: str, code: int | None = PcpResult.MALFORMED_REQUEST
) -> MalformedMessageError:
    return MalformedMessageError(reason, error_code=code)


def _check_frame(data: bytes) -> None:
    # §8.3 checks the version before the length: a 2-octet NAT-PMP request
    # sent to a PCP-only server must learn UNSUPP_VERSION, not MALFORMED_REQUEST.
    if data and data[0] != VERSION:
        raise _malformed(f"PCP version {data[0]}", PcpResult.UNSUPP_VERSION)
    if len(data) < HEADER_LEN:
        raise _malformed(f"PCP message of {len(data)} octets is shorter than its header")
    if len(data) > MAX_MESSAGE_LEN:
        raise _malformed(f"PCP message of {len(data)} octets exceeds {MAX_MESSAGE_LEN}")
    if len(data) % 4:
        raise _malformed("PCP message length is not a multiple of 4")


def _decode_data(opcode: int, body: bytes, *, strict: bool) -> tuple[OpcodeData, int]:
    """Opcode data and its length; ``strict`` (requests, successes) rejects
    known opcodes whose data is short instead of keeping it raw."""
    if opcode == PcpOpcode.ANNOUNCE:
        return b"", 0
    want = _DATA_LEN[opcode]  # callers keep unknown opcodes raw themselves
    if len(body) < want:
        if strict:
            raise _malformed(f"opcode {opcode} data needs {want} octets, got {len(body)}")
        return body, len(body)
    nonce, protocol, internal, external, ext_ip = _MAP.unpack_from(body)
    if opcode == PcpOpcode.MAP:
        return (
            MapData(
                nonce=nonce,
                protocol=protocol,
                internal_port=internal,
                external_port=external,
                external_ip=decode_ip(ext_ip),
            ),
            want,
        )
    peer_port, peer_ip = _PEER_TAIL.unpack_from(body, MAP_DATA_LEN)
    return (
        PeerData(
            nonce=nonce,
            protocol=protocol,
            internal_port=internal,
            external_port=external,
            external_ip=decode_ip(ext_ip),
            remote_peer_port=peer_port,
            remote_peer_ip=decode_ip(peer_ip),
        ),
        want,
    )


def _decode_options(raw: bytes) -> tuple[PcpOption, ...]:
    options: list[PcpOption] = []
    pos = 0
    # The message and every option are multiples of 4 octets, so an option
    # header always fits in what is left.
    while pos < len(raw):
        code, length = _OPTION_HEADER.unpack_from(raw, pos)
        pos += _OPTION_HEADER.size
        if pos + _pad4(length) > len(raw):
            raise _malformed(f"option {code} overruns the message", PcpResult.MALFORMED_OPTION)
        want = _OPTION_DATA_LEN.get(code)
        if want is not None and length != want:
            raise _malformed(
                f"option {code} has {length} octets, not {want}", PcpResult.MALFORMED_OPTION
            )
        options.append(PcpOption(code, raw[pos : pos + length]))
        pos += _pad4(length)
    return tuple(options)


def parse_request(data: bytes) -> PcpRequest:
    """Decode a request, checking it as a server must (§8.3): length 24 to
    1100 and a multiple of 4, version 2, R bit clear, opcode data complete,
    options well formed. Unknown opcodes keep their data raw (the server
    answers UNSUPP_OPCODE)."""
    if len(data) < 2 or data[1] & RESPONSE_BIT:
        raise _malformed("not a PCP request", None)
    _check_frame(data)
    _, opcode, _, lifetime, client_ip = _REQUEST_HEADER.unpack_from(data)
    body = data[HEADER_LEN:]
    if opcode not in _KNOWN_OPCODES:
        return PcpRequest(
            opcode=opcode, lifetime=lifetime, client_ip=decode_ip(client_ip), data=body
        )
    payload, used = _decode_data(opcode, body, strict=True)
    return PcpRequest(
        opcode=opcode,
        lifetime=lifetime,
        client_ip=decode_ip(client_ip),
        data=payload,
        options=_decode_options(body[used:]),
    )


def parse_response(data: bytes) -> PcpResponse:
    """Decode a response (§7.2). Error responses may carry short or no
    opcode data (kept raw); a SUCCESS must be complete."""
    _check_frame(data)
    _, opcode, result, lifetime, epoch = _RESPONSE_HEADER.unpack_from(data)
    if not opcode & RESPONSE_BIT:
        raise _malformed("not a PCP response", None)
    opcode &= ~RESPONSE_BIT
    code = result_code(result)
    body = data[HEADER_LEN:]
    if opcode not in _KNOWN_OPCODES:
        return PcpResponse(opcode=opcode, result=code, lifetime=lifetime, epoch=epoch, data=body)
    payload, used = _decode_data(opcode, body, strict=code == PcpResult.SUCCESS)
    # A raw (truncated) copy of a malformed request has no options we could find.
    raw = isinstance(payload, bytes) and opcode != PcpOpcode.ANNOUNCE
    options = () if raw else _decode_options(body[used:])
    return PcpResponse(
        opcode=opcode, result=code, lifetime=lifetime, epoch=epoch, data=payload, options=options
    )
