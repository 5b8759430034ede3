"""SRTP and SRTCP with SDES keys (RFC 3711, RFC 4568 §6.2) through libsrtp.

Theory of operation
-------------------
The cryptography is libsrtp's (via ``pylibsrtp``); this module makes it fit
natkit. :meth:`SrtpContext.from_sdes` takes what an SDP ``a=crypto`` line
carries (RFC 4568 §9.1): a suite name and the ``inline:`` key parameter, the
base64 of a 16-byte master key followed by a 14-byte master salt (30 bytes,
§6.2 for the AES_CM_128 suites), optionally ``|lifetime``; master key
identifiers (``|MKI:length``) are refused because nothing in natkit
negotiates them.

In SDES each direction has its own key: a context built from *our* key
protects what we send, one built from the *peer's* key unprotects what we
receive. A context holds two libsrtp sessions made lazily from its one key,
an outbound one for :meth:`~SrtpContext.protect_rtp` /
:meth:`~SrtpContext.protect_rtcp` and an inbound one for the
``unprotect_*`` methods, each for any SSRC.

Received packets that fail - a wrong authentication tag, a replayed or too
old index (RFC 3711 §3.3.2), a packet libsrtp cannot parse - raise
:class:`SrtpError` (:class:`SrtpAuthenticationError`,
:class:`SrtpReplayError`), a :class:`~natkit.errors.MalformedMessageError`
with ``error_code`` ``None``:
the caller drops the packet and the stream goes on.

:func:`generate_sdes_key` makes a fresh inline key from ``secrets`` or an
injected rng (tests, the lab).
"""

from __future__ import annotations

import base64
import binascii
import enum
import secrets

import pylibsrtp

from natkit.errors import LocalProtocolError, MalformedMessageError
from natkit.rng import Rng

__all__ = [
    "SDES_KEY_LENGTH",
    "SrtpAuthenticationError",
    "SrtpContext",
    "SrtpError",
    "SrtpReplayError",
    "SrtpSuite",
    "generate_sdes_key",
    "parse_sdes_key",
]

SDES_KEY_LENGTH = 30  # RFC 4568 §6.2: 128-bit master key || 112-bit master salt
_REPLAY_ERRORS = frozenset(
    {
        "replay check failed (bad index)",
        "replay check failed (index too old)",
        "packet index is too old to consider",
    }
)


class SrtpSuite(enum.StrEnum):
    """SDES crypto suites (RFC 4568 §6.2) that libsrtp implements for us."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"

    @property
    def libsrtp_profile(self) -> int:
        """The suite's ``pylibsrtp.Policy`` profile constant."""
        if self is SrtpSuite.AES_CM_128_HMAC_SHA1_80:
            return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return int(pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32)


class SrtpError(MalformedMessageError):
    """A received SRTP/SRTCP packet could not be unprotected: drop it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=None)


class SrtpAuthenticationError(SrtpError):
    """The authentication tag did not match (RFC 3711 §3.3.2 step 5)."""


class SrtpReplayError(SrtpError):
    """A replayed packet, or one older than the replay window (RFC 3711 §3.3.2)."""


def parse_sdes_key(key_params: str) -> bytes:
    """The 30-byte master key || salt of an RFC 4568 key parameter.

    Accepts ``inline:BASE64[|lifetime]`` or the bare base64. Raises
    :class:`~natkit.errors.MalformedMessageError` (488: the SDP offer is
    not acceptable) for anything else, including an MKI.
    """
    text = key_params.strip()
    text = text.removeprefix("inline:")
    key_text, *rest = text.split("|")
    if len(rest) > 1 or any(":" in part for part in rest):
        raise MalformedMessageError("SDES master key identifiers are not supported", error_code=488)
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedMessageError("SDES key is not base64", error_code=488) from None
    if len(key) != SDES_KEY_LENGTH:
        raise MalformedMessageError(
            f"SDES key is {len(key)} bytes, not {SDES_KEY_LENGTH}", error_code=488
        )
    return key


def generate_sdes_key(*, rng: Rng | None = None) -> str:
    """A new random key parameter value (base64 of 30 bytes, RFC 4568 §6.2).

    Drawn from :mod:`secrets` unless an ``rng`` is injected.
    """
    if rng is None:
        key = secrets.token_bytes(SDES_KEY_LENGTH)
    else:
        key = rng.getrandbits(8 * SDES_KEY_LENGTH).to_bytes(SDES_KEY_LENGTH, "big")
    return base64.b64encode(key).decode()


def _receive_error(exc: Exception) -> SrtpError:
    reason = str(exc)
    if reason in _REPLAY_ERRORS:
        return SrtpReplayError(reason)
    if reason == "authentication failure":
        return SrtpAuthenticationError(reason)
    return SrtpError(reason)


class SrtpContext:
    """SRTP/SRTCP protection under one master key (RFC 3711 §3.3, §3.4)."""

    def __init__(self, suite: SrtpSuite, key: bytes) -> None:
        if len(key) != SDES_KEY_LENGTH:
            raise LocalProtocolError(f"SRTP master key||salt must be {SDES_KEY_LENGTH} bytes")
        self.suite = suite
        self._key = key
        self._outbound: pylibsrtp.Session | None = None
        self._inbound: pylibsrtp.Session | None = None

    @classmethod
    def from_sdes(cls, suite: SrtpSuite | str, key_b64: str) -> SrtpContext:
        """A context from an ``a=crypto`` suite name and key parameter (RFC 4568 §9.1).

        An unknown suite or a bad key raises
        :class:`~natkit.errors.MalformedMessageError` with code 488.
        """
        try:
            chosen = SrtpSuite(suite)
        except ValueError:
            raise MalformedMessageError(
                f"unsupported SRTP suite {suite!r}", error_code=488
            ) from None
        return cls(chosen, parse_sdes_key(key_b64))

    @property
    def key_b64(self) -> str:
        """The key as RFC 4568's inline parameter carries it (without ``inline:``)."""
        return base64.b64encode(self._key).decode()

    def _session(self, ssrc_type: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(
            key=self._key, ssrc_type=ssrc_type, srtp_profile=self.suite.libsrtp_profile
        )
        return pylibsrtp.Session(policy)

    @property
    def _tx(self) -> pylibsrtp.Session:
        if self._outbound is None:
            self._outbound = self._session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        return self._outbound

    @property
    def _rx(self) -> pylibsrtp.Session:
        if self._inbound is None:
            self._inbound = self._session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
        return self._inbound

    def protect_rtp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTP packet (RFC 3711 §3.3).

        Protecting the same sequence number twice, or a packet that is not
        RTP, raises :class:`~natkit.errors.LocalProtocolError`.
        """
        try:
            return bytes(self._tx.protect(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise LocalProtocolError(f"SRTP protect failed: {exc}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate a compound RTCP packet (RFC 3711 §3.4)."""
        try:
            return bytes(self._tx.protect_rtcp(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise LocalProtocolError(f"SRTCP protect failed: {exc}") from None

    def unprotect_rtp(self, packet: bytes) -> bytes:
        """Authenticate and decrypt an SRTP packet (RFC 3711 §3.3).

        Raises :class:`SrtpError`: :class:`SrtpReplayError`,
        :class:`SrtpAuthenticationError` or another failure.
        """
        try:
            return bytes(self._rx.unprotect(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise _receive_error(exc) from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        """Authenticate and decrypt an SRTCP packet (RFC 3711 §3.4)."""
        try:
            return bytes(self._rx.unprotect_rtcp(packet))
        except (pylibsrtp.Error, ValueError) as exc:
            raise _receive_error(exc) from None
