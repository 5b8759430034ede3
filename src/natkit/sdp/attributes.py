"""SDP attributes: the raw ``a=`` line and typed views of the ones natkit uses.

Theory of operation
-------------------
The codec keeps every ``a=`` line as an :class:`Attribute` (name, optional
value) in the order it arrived, so unknown attributes (ICE, ``ssrc``,
``extmap``, vendor ones) survive a parse/serialize round trip untouched.
Typed values are decoded on demand by the ``parse_*`` functions here and
encoded back by their ``format`` methods:

- ``a=rtpmap`` and ``a=fmtp`` (RFC 8866 §6.6, §6.15), ``a=ptime`` and
  ``a=maxptime`` (§6.4, §6.5);
- direction ``a=sendrecv/sendonly/recvonly/inactive`` (§6.7);
- ``a=rtcp`` (RFC 3605 §2.1) and ``a=rtcp-mux`` (RFC 5761 §5.1.1);
- ``a=crypto`` (RFC 4568 §9.1): tag, suite, inline key parameters with
  base64 ``key || salt``, lifetime and MKI, and session parameters;
- ``a=setup`` and ``a=connection`` (RFC 4145 §4, §5);
- ``a=mid`` (RFC 5888 §4).

A malformed typed value raises :class:`~natkit.errors.MalformedMessageError`
with ``error_code=488``: the body parsed as SDP, but what it says cannot be
used (a SIP UA answers 488 Not Acceptable Here, RFC 3261 §21.4.26).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass

from natkit.errors import MalformedMessageError

__all__ = [
    "CRYPTO_KEY_SALT_LENGTHS",
    "DIRECTION_NAMES",
    "Attribute",
    "ConnectionMode",
    "Crypto",
    "CryptoKey",
    "Direction",
    "Fmtp",
    "Rtcp",
    "RtpMap",
    "Setup",
    "parse_crypto",
    "parse_fmtp",
    "parse_packet_time",
    "parse_rtcp",
    "parse_rtpmap",
]

UNUSABLE = 488  # the SIP status a UA answers for SDP it can parse but not use

# RFC 4568 §6.2 and RFC 6188 §7: master key || master salt, in bytes.
# RFC 7714 §12 (AEAD_AES_*_GCM): 16/32-byte keys with a 12-byte salt.
CRYPTO_KEY_SALT_LENGTHS: dict[str, int] = {
    "AES_CM_128_HMAC_SHA1_80": 30,
    "AES_CM_128_HMAC_SHA1_32": 30,
    "F8_128_HMAC_SHA1_80": 30,
    "AES_192_CM_HMAC_SHA1_80": 38,
    "AES_192_CM_HMAC_SHA1_32": 38,
    "AES_256_CM_HMAC_SHA1_80": 46,
    "AES_256_CM_HMAC_SHA1_32": 46,
    "AEAD_AES_128_GCM": 28,
    "AEAD_AES_256_GCM": 44,
}

_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+\Z")
_DIGITS = re.compile(r"[0-9]{1,10}\Z")
_DECIMAL = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?\Z")


def _unusable(text: str) -> MalformedMessageError:
    return MalformedMessageError(text, error_code=UNUSABLE)


def _int(text: str, what: str, low: int, high: int) -> int:
    if not _DIGITS.match(text):
        raise _unusable(f"{what} is not a number: {text!r}")
    value = int(text)
    if not low <= value <= high:
        raise _unusable(f"{what} out of range: {value}")
    return value


@dataclass(frozen=True, slots=True)
class Attribute:
    """One ``a=`` line (RFC 8866 §5.13): ``a=name`` or ``a=name:value``."""

    name: str
    value: str | None = None

    def format(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


class Direction(enum.StrEnum):
    """Media direction attributes (RFC 8866 §6.7); ``SENDRECV`` is the default."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, *, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end (RFC 3264 §6.1)."""
        return Direction.of(sends=self.receives, receives=self.sends)


DIRECTION_NAMES = frozenset(d.value for d in Direction)


class Setup(enum.StrEnum):
    """``a=setup`` roles of connection-oriented media (RFC 4145 §4)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"

    def answer(self) -> Setup:
        """The answerer's role for this offered role (RFC 4145 §4.1).

        ``actpass`` is answered ``active``: the answerer opens the connection,
        which is what works when the answerer is the one behind a NAT.
        """
        return _SETUP_ANSWERS[self]


_SETUP_ANSWERS = {
    Setup.ACTIVE: Setup.PASSIVE,
    Setup.PASSIVE: Setup.ACTIVE,
    Setup.ACTPASS: Setup.ACTIVE,
    Setup.HOLDCONN: Setup.HOLDCONN,
}


class ConnectionMode(enum.StrEnum):
    """``a=connection`` (RFC 4145 §5): open a new connection or reuse one."""

    NEW = "new"
    EXISTING = "existing"


def parse_setup(value: str | None) -> Setup:
    try:
        return Setup((value or "").strip().lower())
    except ValueError:
        raise _unusable(f"bad a=setup value {value!r}") from None


def parse_connection_mode(value: str | None) -> ConnectionMode:
    try:
        return ConnectionMode((value or "").strip().lower())
    except ValueError:
        raise _unusable(f"bad a=connection value {value!r}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding name>/<clock rate>[/<channels>]`` (RFC 8866 §6.6)."""

    payload_type: int
    encoding_name: str
    clock_rate: int
    channels: int | None = None

    def format(self) -> str:
        tail = "" if self.channels is None else f"/{self.channels}"
        return f"{self.payload_type} {self.encoding_name}/{self.clock_rate}{tail}"

    def same_codec(self, other: RtpMap) -> bool:
        """Same encoding, clock rate and channel count (channels default to 1)."""
        return (
            self.encoding_name.lower() == other.encoding_name.lower()
            and self.clock_rate == other.clock_rate
            and (self.channels or 1) == (other.channels or 1)
        )


def parse_rtpmap(value: str | None) -> RtpMap:
    """Decode an ``a=rtpmap`` value (RFC 8866 §6.6)."""
    pt_text, _, encoding = (value or "").strip().partition(" ")
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0] or not _TOKEN.match(parts[0]):
        raise _unusable(f"bad a=rtpmap {value!r}")
    return RtpMap(
        payload_type=_int(pt_text, "rtpmap payload type", 0, 127),
        encoding_name=parts[0],
        clock_rate=_int(parts[1], "rtpmap clock rate", 1, 10_000_000),
        channels=_int(parts[2], "rtpmap channels", 1, 255) if len(parts) == 3 else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (RFC 8866 §6.15)."""

    format: str
    parameters: str

    def format_value(self) -> str:
        return f"{self.format} {self.parameters}"

    @property
    def params(self) -> dict[str, str]:
        """The common ``key=value;key=value`` form; a bare item maps to ``""``."""
        out: dict[str, str] = {}
        for item in self.parameters.split(";"):
            key, _, val = item.strip().partition("=")
            if key:
                out[key.strip().lower()] = val.strip()
        return out


def parse_fmtp(value: str | None) -> Fmtp:
    fmt, _, params = (value or "").strip().partition(" ")
    if not fmt:
        raise _unusable(f"bad a=fmtp {value!r}")
    return Fmtp(format=fmt, parameters=params.strip())


def parse_packet_time(value: str | None) -> float:
    """``a=ptime`` / ``a=maxptime`` in milliseconds (RFC 8866 §6.4-6.5)."""
    text = (value or "").strip()
    if not _DECIMAL.match(text) or float(text) <= 0:
        raise _unusable(f"bad packet time {value!r}")
    return float(text)


def format_packet_time(ms: float) -> str:
    return str(int(ms)) if ms == int(ms) else repr(ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rtcp:
    """``a=rtcp:<port> [IN IP4|IP6 <address>]`` (RFC 3605 §2.1)."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None

    def format(self) -> str:
        if self.address is None:
            return str(self.port)
        return f"{self.port} {self.nettype or 'IN'} {self.addrtype or 'IP4'} {self.address}"


def parse_rtcp(value: str | None) -> Rtcp:
    parts = (value or "").split()
    if len(parts) not in (1, 4):
        raise _unusable(f"bad a=rtcp {value!r}")
    port = _int(parts[0], "a=rtcp port", 0, 0xFFFF)
    if len(parts) == 1:
        return Rtcp(port=port)
    return Rtcp(port=port, nettype=parts[1], addrtype=parts[2], address=parts[3])


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptoKey:
    """One ``inline:`` key parameter of ``a=crypto`` (RFC 4568 §6.1, §9.2).

    ``key_salt`` is the master key followed by the master salt. ``lifetime``
    is in packets (``2^20`` is decoded as 1048576); ``mki`` is the MKI value
    and its length in bytes.
    """

    key_salt: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def format(self) -> str:
        text = "inline:" + base64.b64encode(self.key_salt).decode("ascii")
        if self.lifetime is not None:
            lifetime = self.lifetime
            exponent = lifetime.bit_length() - 1
            text += f"|2^{exponent}" if lifetime == 1 << exponent else f"|{lifetime}"
        if self.mki is not None:
            text += f"|{self.mki[0]}:{self.mki[1]}"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Crypto:
    """``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]`` (RFC 4568 §9.1)."""

    tag: int
    suite: str
    keys: tuple[CryptoKey, ...]
    session_params: tuple[str, ...] = ()

    def format(self) -> str:
        parts = [str(self.tag), self.suite, ";".join(k.format() for k in self.keys)]
        parts.extend(self.session_params)
        return " ".join(parts)


def _parse_crypto_key(text: str, suite: str) -> CryptoKey:
    method, sep, info = text.partition(":")
    if not sep or method.lower() != "inline":
        raise _unusable(f"unsupported a=crypto key method {method!r}")
    fields = info.split("|")
    if len(fields) > 3:
        raise _unusable(f"bad a=crypto key info {info!r}")
    try:
        key_salt = base64.b64decode(fields[0], validate=True)
    except (binascii.Error, ValueError):
        raise _unusable("a=crypto key is not base64") from None
    expected = CRYPTO_KEY_SALT_LENGTHS.get(suite.upper())
    if expected is not None and len(key_salt) != expected:
        raise _unusable(f"a=crypto key for {suite} is {len(key_salt)} bytes, not {expected}")
    if not key_salt:
        raise _unusable("empty a=crypto key")
    lifetime: int | None = None
    mki: tuple[int, int] | None = None
    for extra in fields[1:]:
        if ":" in extra:  # MKI: value ":" length (§9.2); the only field with a colon
            if mki is not None:
                raise _unusable("two MKIs in one a=crypto key")
            mki_value, _, mki_length = extra.partition(":")
            mki = (_int(mki_value, "MKI", 0, 2**32 - 1), _int(mki_length, "MKI length", 1, 128))
        elif lifetime is None and mki is None:
            if extra.startswith("2^"):
                lifetime = 1 << _int(extra[2:], "key lifetime exponent", 0, 64)
            else:
                lifetime = _int(extra, "key lifetime", 1, 2**64)
        else:
            raise _unusable(f"bad a=crypto key field {extra!r}")
    return CryptoKey(key_salt=key_salt, lifetime=lifetime, mki=mki)


def parse_crypto(value: str | None) -> Crypto:
    """Decode an ``a=crypto`` value (RFC 4568 §9.1).

    Several keys are separated by ``;`` (§9.1's key-params); only the
    ``inline`` method exists for SRTP (§6.1).
    """
    parts = (value or "").split()
    if len(parts) < 3 or not _TOKEN.match(parts[1]):
        raise _unusable(f"bad a=crypto {value!r}")
    tag = _int(parts[0], "a=crypto tag", 0, 999_999_999)
    suite = parts[1]
    keys = tuple(_parse_crypto_key(k, suite) for k in parts[2].split(";"))
    return Crypto(tag=tag, suite=suite, keys=keys, session_params=tuple(parts[3:]))
