"""STUN (RFC 8489, with RFC 5780 and RFC 3489 compatibility): sans-IO cores.

* :mod:`natkit.stun.message` - the codec; :mod:`natkit.stun.attributes` - typed attributes
* :mod:`natkit.stun.credentials`, :mod:`natkit.stun.auth` - keys, nonces, server-side checks
* :mod:`natkit.stun.transaction` - client transactions; :mod:`natkit.stun.server` - the server
* :mod:`natkit.stun.aio` - asyncio drivers for any stack
"""

from natkit.stun.constants import AttributeType, ErrorCode, MessageClass, Method
from natkit.stun.message import StunMessage, parse_message, serialize_message

__all__ = [
    "AttributeType",
    "ErrorCode",
    "MessageClass",
    "Method",
    "StunMessage",
    "parse_message",
    "serialize_message",
]
