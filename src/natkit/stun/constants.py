"""STUN wire codes: methods, classes, attribute types, error codes.

Numbers are those of the IANA "STUN Parameters" registry (RFC 8489 §18),
including the TURN (RFC 8656, 6062, 6156), ICE (RFC 8445), NAT behaviour
discovery (RFC 5780) and classic STUN (RFC 3489) additions, so that every
natkit protocol speaks from one table.
"""

from __future__ import annotations

import enum

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E
NONCE_COOKIE = "obMatJos2"  # RFC 8489 §9.2, the prefix announcing security features


class Method(enum.IntEnum):
    """STUN methods (12 bits)."""

    BINDING = 0x001
    SHARED_SECRET = 0x002  # RFC 3489 only, reserved since RFC 5389
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class MessageClass(enum.IntEnum):
    """The two class bits of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class AttributeType(enum.IntEnum):
    """STUN attribute types. Below 0x8000: comprehension-required."""

    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489, obsolete
    CHANGE_REQUEST = 0x0003  # RFC 5780 (and 3489)
    SOURCE_ADDRESS = 0x0004  # RFC 3489
    CHANGED_ADDRESS = 0x0005  # RFC 3489
    USERNAME = 0x0006
    PASSWORD = 0x0007  # RFC 3489, obsolete
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REFLECTED_FROM = 0x000B  # RFC 3489, obsolete
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026
    RESPONSE_PORT = 0x0027
    CONNECTION_ID = 0x002A
    ADDITIONAL_ADDRESS_FAMILY = 0x8000
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


def is_comprehension_required(attr_type: int) -> bool:
    """RFC 8489 §14: types 0x0000-0x7FFF must be understood by the receiver."""
    return attr_type < 0x8000


class ErrorCode(enum.IntEnum):
    """STUN error codes (RFC 8489 §14.8, RFC 8656 §18, RFC 5780, RFC 8445)."""

    TRY_ALTERNATE = 300
    BAD_REQUEST = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNKNOWN_ATTRIBUTE = 420
    MOBILITY_FORBIDDEN = 405
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    CONNECTION_ALREADY_EXISTS = 446
    CONNECTION_TIMEOUT_OR_FAILURE = 447
    ALLOCATION_QUOTA_REACHED = 486
    ROLE_CONFLICT = 487
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508


REASON_PHRASES: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    405: "Mobility Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    446: "Connection Already Exists",
    447: "Connection Timeout or Failure",
    486: "Allocation Quota Reached",
    487: "Role Conflict",
    500: "Server Error",
    508: "Insufficient Capacity",
}


class PasswordAlgorithm(enum.IntEnum):
    """Key derivation for long-term credentials (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


class SecurityFeature(enum.IntFlag):
    """The 24 bits after the nonce cookie (RFC 8489 §9.2, §18.1); bit 0 is the MSB."""

    PASSWORD_ALGORITHMS = 1 << 23
    USERNAME_ANONYMITY = 1 << 22
