"""natkit's exceptions: one tree for every protocol.

::

    NatkitError
    ├── MalformedMessageError   bytes that are not a valid message; carries the
    │                           protocol's error code (STUN 400, SIP 400, ...)
    ├── LocalProtocolError      the caller asked a core for something the
    │                           protocol does not allow in its current state
    ├── TransactionError        a request got no usable answer
    │   └── TransactionTimeout  ... because every retransmission went unanswered
    ├── TransportError          the network below failed (bind, connect, TLS)
    └── ConfigError             an operator setting that cannot be used

Outcomes that the protocol itself handles (a 401 challenge, 438 stale nonce,
487 role conflict, SIP 4xx-6xx, ICE failure) are events, not exceptions.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LocalProtocolError",
    "MalformedMessageError",
    "NatkitError",
    "TransactionError",
    "TransactionTimeout",
    "TransportError",
]


class NatkitError(Exception):
    """Base class of every error natkit raises on purpose."""


class MalformedMessageError(NatkitError):
    """Bytes that do not form a valid protocol message.

    ``error_code`` is what a server answers with when it answers at all
    (STUN 400 Bad Request, SIP 400, 505, ...); ``None`` means "drop silently".
    """

    def __init__(self, message: str, *, error_code: int | None = 400) -> None:
        super().__init__(message)
        self.error_code = error_code


class LocalProtocolError(NatkitError):
    """The local application asked for something the protocol forbids."""


class TransactionError(NatkitError):
    """A request did not get a usable answer."""


class TransactionTimeout(TransactionError):
    """Every retransmission of a request went unanswered."""


class TransportError(NatkitError):
    """The transport below failed: bind, connect, TLS handshake, reset."""


class ConfigError(NatkitError, ValueError):
    """An operator setting (flag or config file key) that cannot be used; the
    message names the key."""
