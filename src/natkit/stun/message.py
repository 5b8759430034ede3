"""STUN messages: the codec (RFC 8489 §5, §14; RFC 3489 §11).

Theory of operation
-------------------
:func:`parse_message` checks the fixed header (two zero bits, a length that is
a multiple of 4 and fits the datagram, the magic cookie), walks the
attributes with every length checked before use, and returns a
:class:`StunMessage` whose attributes stay raw until asked for through a
typed :class:`~natkit.stun.attributes.AttrSpec`. Integrity rules of RFC 8489
§14.5-14.7 are applied while walking: attributes after MESSAGE-INTEGRITY are
ignored except MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, attributes after
MESSAGE-INTEGRITY-SHA256 are ignored except FINGERPRINT, nothing may follow
FINGERPRINT, and a wrong FINGERPRINT makes the message invalid. The message
keeps its raw bytes so that MESSAGE-INTEGRITY can be checked later, once the
caller knows the key (:func:`verify_integrity`).

A message without the magic cookie is a classic RFC 3489 message; it is
accepted only with ``allow_classic=True`` and then carries a 16-byte
transaction ID.

:func:`serialize_message` appends MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT
itself, patching the header length exactly as §14.5-14.7 prescribe. The pad
byte is a parameter because RFC 5769 vector 2.1 pads with spaces.
"""

from __future__ import annotations

import enum
import hmac
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from natkit.errors import MalformedMessageError
from natkit.stun.attributes import ERROR_CODE, AttrSpec, ErrorCodeValue
from natkit.stun.constants import (
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    REASON_PHRASES,
    AttributeType,
    MessageClass,
    Method,
    is_comprehension_required,
)
from natkit.stun.keyed_mac import keyed_digest

__all__ = [
    "MAX_ATTRIBUTES",
    "Attribute",
    "Integrity",
    "StunMessage",
    "encode_attribute",
    "encode_message",
    "is_stun_message",
    "message_type",
    "parse_message",
    "serialize_message",
    "split_message_type",
    "verify_integrity",
]

T = TypeVar("T")

MAX_ATTRIBUTES = 256  # bounds the work one datagram can cause
_HEADER = struct.Struct("!HHI")
_ATTR_HEAD = struct.Struct("!HH")
_TYPE_COOKIE = struct.Struct("!HHI")
_TYPE = struct.Struct("!HH")
_A = AttributeType
_ZERO_PADS = (b"", b"\x00", b"\x00\x00", b"\x00\x00\x00")  # by pad length
_FINGERPRINT = int(_A.FINGERPRINT)
_ERROR_CODE = int(_A.ERROR_CODE)
_ERROR_VALUES: dict[int, bytes] = {}  # ERROR-CODE values with the default reason, by code
_CLASSES = tuple(MessageClass(c) for c in range(4))
_new_attribute = tuple.__new__  # Attribute(t, v) without the NamedTuple's Python __new__
_MI = int(_A.MESSAGE_INTEGRITY)
_MI256 = int(_A.MESSAGE_INTEGRITY_SHA256)
_MI_HEAD = _ATTR_HEAD.pack(_A.MESSAGE_INTEGRITY, 20)
_MI256_HEAD = _ATTR_HEAD.pack(_A.MESSAGE_INTEGRITY_SHA256, 32)
_FP_HEAD = _ATTR_HEAD.pack(_A.FINGERPRINT, 4)


class Integrity(enum.Enum):
    """Which MESSAGE-INTEGRITY attribute(s) to append (RFC 8489 §14.5-14.6)."""

    SHA1 = "sha1"
    SHA256 = "sha256"
    BOTH = "both"


class Attribute(NamedTuple):
    """One attribute as it was on the wire: its type and unpadded value."""

    type: int
    value: bytes


def message_type(method: int, message_class: MessageClass) -> int:
    """Interleave method and class bits into the 14-bit type (RFC 8489 §5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def split_message_type(msg_type: int) -> tuple[int, MessageClass]:
    """Undo :func:`message_type`: return ``(method, class)``."""
    method = (msg_type & 0x000F) | ((msg_type >> 1) & 0x0070) | ((msg_type >> 2) & 0x0F80)
    cls = ((msg_type >> 7) & 0b10) | ((msg_type >> 4) & 0b01)
    return method, _CLASSES[cls]


@dataclass(slots=True, eq=False)
class StunMessage:
    """A STUN message: header fields plus raw attributes.

    ``transaction_id`` is 12 bytes (16 for a classic RFC 3489 message, whose
    first four bytes take the cookie's place). Build outgoing messages with
    :meth:`add`; read incoming ones with :meth:`get`.
    """

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: list[Attribute] = field(default_factory=list)
    # Filled in by parse_message:
    raw: bytes = b""
    integrity_offset: int = -1
    integrity_sha256_offset: int = -1
    has_fingerprint: bool = False

    @property
    def classic(self) -> bool:
        """True for an RFC 3489 message (no magic cookie)."""
        return len(self.transaction_id) == 16

    @property
    def xor_tid(self) -> bytes:
        return self.transaction_id[-12:]

    def get(self, spec: AttrSpec[T]) -> T | None:
        """Decode the first attribute of ``spec``'s type, or ``None`` if absent.

        Raises :class:`MalformedMessageError` (400) if its value is malformed.
        """
        t = spec.type
        for attr in self.attributes:
            if attr.type == t:
                return spec.decode(attr.value, self.xor_tid)
        return None

    def get_all(self, spec: AttrSpec[T]) -> list[T]:
        """Decode every attribute of ``spec``'s type, in message order."""
        return [spec.decode(a.value, self.xor_tid) for a in self.attributes if a.type == spec.type]

    def get_raw(self, attr_type: int) -> bytes | None:
        for attr in self.attributes:
            if attr.type == attr_type:
                return attr.value
        return None

    def has(self, attr_type: int) -> bool:
        return any(attr.type == attr_type for attr in self.attributes)

    def add(self, spec: AttrSpec[T], value: T) -> StunMessage:
        """Append an attribute (encoded now); returns ``self`` for chaining."""
        self.attributes.append(Attribute(spec.type, spec.encode(value, self.xor_tid)))
        return self

    def add_raw(self, attr_type: int, value: bytes) -> StunMessage:
        self.attributes.append(Attribute(attr_type, value))
        return self

    def unknown_required(self, understood: frozenset[int]) -> tuple[int, ...]:
        """Comprehension-required attribute types not in ``understood`` (§6.3.1)."""
        return tuple(
            a.type
            for a in self.attributes
            if is_comprehension_required(a.type) and a.type not in understood
        )

    @property
    def error(self) -> ErrorCodeValue | None:
        return self.get(ERROR_CODE)

    def __repr__(self) -> str:
        try:
            method = Method(self.method).name
        except ValueError:
            method = hex(self.method)
        names = []
        for a in self.attributes:
            try:
                names.append(AttributeType(a.type).name)
            except ValueError:
                names.append(hex(a.type))
        return (
            f"<StunMessage {method} {self.message_class.name} tid={self.transaction_id.hex()} "
            f"attrs={names}>"
        )

    # -- builders ------------------------------------------------------------

    @classmethod
    def request(cls, method: int, transaction_id: bytes) -> StunMessage:
        return cls(method, MessageClass.REQUEST, transaction_id)

    def success(self) -> StunMessage:
        """A success response skeleton to this request (same method and ID)."""
        return StunMessage(self.method, MessageClass.SUCCESS, self.transaction_id)

    def error_response(self, code: int, reason: str | None = None) -> StunMessage:
        """An error response to this request with ERROR-CODE (RFC 8489 §14.8)."""
        resp = StunMessage(self.method, MessageClass.ERROR, self.transaction_id)
        if reason is None:
            value = _ERROR_VALUES.get(code)
            if value is None:
                value = ERROR_CODE.encode(ErrorCodeValue(code, REASON_PHRASES.get(code, "")), b"")
                if len(_ERROR_VALUES) < 1024:  # codes are 300-699: bounded anyway
                    _ERROR_VALUES[code] = value
            return resp.add_raw(_ERROR_CODE, value)
        return resp.add(ERROR_CODE, ErrorCodeValue(code, reason))


def is_stun_message(data: bytes) -> bool:
    """Cheap demultiplexing test (RFC 7983 §7, RFC 8489 §7): first two bits
    zero, cookie present, length consistent. Use before handing a datagram
    that might be RTP, DTLS or ChannelData to :func:`parse_message`."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 0x40
        and data[4:8] == MAGIC_COOKIE_BYTES
        and (data[2] << 8 | data[3]) + HEADER_LENGTH == len(data)
    )


def parse_message(data: bytes, *, allow_classic: bool = False) -> StunMessage:
    """Parse one complete STUN message (RFC 8489 §5-6, §14).

    Raises :class:`MalformedMessageError`; its ``error_code`` is 400 when the
    header was intact enough to answer, ``None`` when the bytes should be
    dropped silently (not STUN at all, bad FINGERPRINT).
    """
    n = len(data)
    if n < HEADER_LENGTH:
        raise MalformedMessageError("shorter than a STUN header", error_code=None)
    msg_type, length, cookie = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise MalformedMessageError("first two bits are not zero", error_code=None)
    if length & 3:
        raise MalformedMessageError("length is not a multiple of 4", error_code=None)
    if HEADER_LENGTH + length != n:
        raise MalformedMessageError(
            f"header length {length} does not match {n - HEADER_LENGTH} bytes", error_code=None
        )
    if cookie == MAGIC_COOKIE:
        tid = data[8:20]
    elif allow_classic:
        tid = data[4:20]
    else:
        raise MalformedMessageError("magic cookie missing", error_code=None)
    method, cls = split_message_type(msg_type)

    attrs: list[Attribute] = []
    mi_off = mi256_off = -1
    has_fp = False
    pos = HEADER_LENGTH
    count = 0
    while pos < n:
        if has_fp:
            raise MalformedMessageError("attribute after FINGERPRINT", error_code=None)
        # n - pos is a multiple of 4 here, so a whole attribute header fits.
        atype, alen = _ATTR_HEAD.unpack_from(data, pos)
        end = pos + 4 + alen
        if end > n:
            raise MalformedMessageError(f"attribute 0x{atype:04x} overruns the message")
        count += 1
        if count > MAX_ATTRIBUTES:
            raise MalformedMessageError("too many attributes")
        if atype == _FINGERPRINT:
            if alen != 4 or len(tid) == 16:
                raise MalformedMessageError("bad FINGERPRINT", error_code=None)
            expected = (zlib.crc32(data[:pos]) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(data[pos + 4 : end], "big") != expected:
                raise MalformedMessageError("FINGERPRINT mismatch", error_code=None)
            has_fp = True
        elif atype == _MI256:
            if mi256_off >= 0:
                pos = end + (-alen & 3)
                continue
            if alen < 16 or alen > 32 or alen & 3:
                raise MalformedMessageError("bad MESSAGE-INTEGRITY-SHA256 length")
            mi256_off = pos
        elif mi_off >= 0 or mi256_off >= 0:
            # RFC 8489 §14.5-14.6: ignore anything else after an integrity attribute.
            pos = end + (-alen & 3)
            continue
        elif atype == _MI:
            if alen != 20:
                raise MalformedMessageError("bad MESSAGE-INTEGRITY length")
            mi_off = pos
        attrs.append(_new_attribute(Attribute, (atype, data[pos + 4 : end])))
        pos = end + (-alen & 3)
    return StunMessage(
        method,
        cls,
        tid,
        attrs,
        raw=data,
        integrity_offset=mi_off,
        integrity_sha256_offset=mi256_off,
        has_fingerprint=has_fp,
    )


def _append_attrs(out: bytearray, attrs: Iterable[Attribute], pad: int) -> None:
    head = _ATTR_HEAD.pack
    pads = _ZERO_PADS if pad == 0 else tuple(bytes((pad,)) * k for k in range(4))
    parts: list[bytes] = []
    append = parts.append
    for atype, value in attrs:
        n = len(value)
        append(head(atype, n))
        append(value)
        if n & 3:
            append(pads[-n & 3])
    out += b"".join(parts)


def _set_length(out: bytearray, length: int) -> None:
    out[2] = (length >> 8) & 0xFF
    out[3] = length & 0xFF


def serialize_message(
    msg: StunMessage,
    *,
    key: bytes | None = None,
    integrity: Integrity = Integrity.SHA1,
    fingerprint: bool = False,
    padding: int = 0x00,
) -> bytes:
    """Encode ``msg``; with ``key``, append MESSAGE-INTEGRITY(-SHA256) computed
    over the message so far (RFC 8489 §14.5-14.6), then FINGERPRINT (§14.7).

    Attributes already in ``msg`` named MESSAGE-INTEGRITY or FINGERPRINT are
    written as they are; pass them only to reproduce captured messages.
    """
    tid = msg.transaction_id
    if len(tid) == 12:
        out = bytearray(
            _TYPE_COOKIE.pack(message_type(msg.method, msg.message_class), 0, MAGIC_COOKIE)
        )
        out += tid
    elif len(tid) == 16:
        if fingerprint:
            raise ValueError("RFC 3489 messages cannot carry FINGERPRINT")
        out = bytearray(_TYPE.pack(message_type(msg.method, msg.message_class), 0))
        out += tid
    else:
        raise ValueError("transaction ID must be 12 bytes (16 for RFC 3489)")
    _append_attrs(out, msg.attributes, padding)
    return _sign(out, key, integrity, fingerprint)


def encode_attribute(spec: AttrSpec[T], value: T, transaction_id: bytes) -> bytes:
    """One attribute as it goes on the wire: type, length, value, zero padding."""
    data = spec.encode(value, transaction_id)
    n = len(data)
    return _ATTR_HEAD.pack(spec.type, n) + data + _ZERO_PADS[-n & 3]


def encode_message(
    msg_type: int,
    transaction_id: bytes,
    attributes: bytes,
    *,
    key: bytes | None = None,
    integrity: Integrity = Integrity.SHA1,
    fingerprint: bool = False,
) -> bytes:
    """:func:`serialize_message` for a message whose attributes are already
    encoded (``attributes``: the concatenated output of
    :func:`encode_attribute`), with the same integrity and FINGERPRINT
    handling; for answers a server writes many times a second, without a
    :class:`StunMessage` in between. ``transaction_id``: 12 bytes."""
    if len(transaction_id) != 12:
        raise ValueError("transaction ID must be 12 bytes")
    out = bytearray(_TYPE_COOKIE.pack(msg_type, 0, MAGIC_COOKIE))
    out += transaction_id
    out += attributes
    return _sign(out, key, integrity, fingerprint)


def _sign(out: bytearray, key: bytes | None, integrity: Integrity, fingerprint: bool) -> bytes:
    """Append MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT to ``out`` (a header
    and attributes), each over what precedes it (RFC 8489 §14.5-14.7), and
    set the header's length."""
    if key is not None:
        if integrity is Integrity.SHA1 or integrity is Integrity.BOTH:
            _set_length(out, len(out) - HEADER_LENGTH + 24)
            out += _MI_HEAD
            out += keyed_digest(key, out[:-4], "sha1")
        if integrity is Integrity.SHA256 or integrity is Integrity.BOTH:
            _set_length(out, len(out) - HEADER_LENGTH + 36)
            out += _MI256_HEAD
            out += keyed_digest(key, out[:-4], "sha256")
    if fingerprint:
        _set_length(out, len(out) - HEADER_LENGTH + 8)
        crc = (zlib.crc32(out) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
        out += _FP_HEAD
        out += crc.to_bytes(4, "big")
    _set_length(out, len(out) - HEADER_LENGTH)
    return bytes(out)


def _mac_input(raw: bytes, offset: int, attr_len: int) -> bytes:
    # The header length must count up to and including the integrity attribute.
    patched = offset - HEADER_LENGTH + 4 + attr_len
    return raw[:2] + patched.to_bytes(2, "big") + raw[4:offset]


def verify_integrity(msg: StunMessage, key: bytes) -> bool:
    """Check the message's integrity attribute against ``key``.

    MESSAGE-INTEGRITY-SHA256 is preferred when present (RFC 8489 §9.1.3,
    §9.2.4); a truncated SHA-256 MAC is compared on its length. Returns False
    when the message carries no integrity attribute at all.
    """
    raw = msg.raw
    if msg.integrity_sha256_offset >= 0:
        off = msg.integrity_sha256_offset
        alen = int.from_bytes(raw[off + 2 : off + 4], "big")
        mac = keyed_digest(key, _mac_input(raw, off, alen), "sha256")[:alen]
        return hmac.compare_digest(mac, raw[off + 4 : off + 4 + alen])
    if msg.integrity_offset >= 0:
        off = msg.integrity_offset
        mac = keyed_digest(key, _mac_input(raw, off, 20), "sha1")
        return hmac.compare_digest(mac, raw[off + 4 : off + 24])
    return False
