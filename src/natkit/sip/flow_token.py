"""Flow tokens: a flow's identity, sealed, carried in Path and Record-Route (RFC 5626 §5.2).

Theory of operation
-------------------
An edge proxy that forwards a REGISTER from a user agent puts a URI of its
own in the Path header (RFC 3327) whose user part is a *flow token*: it names
the flow (the connection, or for UDP the local and remote endpoints) the
REGISTER arrived on. Requests for that user agent later come back to the edge
with the Path URI as their top Route; the edge reads the token and sends the
request over the flow it names, or answers 430 Flow Failed when that flow is
gone (RFC 5626 §5.3). The same token goes into Record-Route of dialog-forming
requests so that mid-dialog requests follow the flow too.

Tokens are self-contained, as §5.2 suggests: no table is needed to decode
them, and any edge proxy that holds the shared secret can read a token and
tell a genuine one from a forged one, so a cluster of edges behind one name
can serve each other's tokens. They are also *encrypted*: a token travels in
Record-Route to the far end of every call, and a plain encoding would tell
anyone the user agent's private and public addresses. A token is the
base64url text (no padding) of::

    version (1) | AES-256-SIV(key, plaintext, associated data = version)

with the plaintext::

    transport (1)
      | local IP length (1) | local IP (4|16) | local port (2)
      | remote IP length (1) | remote IP (4|16) | remote port (2)
      | flow id (utf-8, the rest)

AES-SIV (RFC 5297) is deterministic authenticated encryption: the same flow
always gives the same token (no nonce to store or repeat), and its 128-bit
tag makes forging one hopeless. The key is HKDF-SHA256 (RFC 5869) of the
configured secret. base64url's alphabet (``A-Z a-z 0-9 - _``) is all
``unreserved`` in the SIP-URI user part (RFC 3261 §25.1), so the token needs
no escaping. Several secrets may be configured: the first seals, all open
(rotation). Compare tokens after decoding, never as text: base64 decoding
accepts more than one spelling of the same bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from natkit.addr import Endpoint, host_of_packed
from natkit.sip.flow import FlowId, SipTransport, Source

__all__ = ["FlowTokenSigner", "MAX_FLOW_ID_BYTES"]

_VERSION = 2
_VERSION_BYTE = bytes((_VERSION,))
_TAG_LENGTH = 16
_KDF_INFO = b"natkit sip flow token v2"
MAX_FLOW_ID_BYTES = 64
"""Longest flow id a token may carry (drivers mint short ones)."""

_TRANSPORT_CODES: dict[SipTransport, int] = {
    SipTransport.UDP: 1,
    SipTransport.TCP: 2,
    SipTransport.TLS: 3,
    SipTransport.WS: 4,
    SipTransport.WSS: 5,
}
_TRANSPORTS_BY_CODE = {code: transport for transport, code in _TRANSPORT_CODES.items()}
# version, the SIV tag, transport, two IPv4 endpoints, no flow id.
_MIN_LENGTH = 1 + _TAG_LENGTH + 1 + 7 + 7


@dataclass(frozen=True, slots=True)
class FlowTokenSigner:
    """Encodes :class:`~natkit.sip.flow.Source` values as sealed tokens and back.

    ``secrets``: the first seals new tokens; every one is tried when
    opening, so a new secret can be rolled out before the old one goes.
    """

    secrets: Sequence[bytes]
    _ciphers: tuple[AESSIV, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a flow token signer needs at least one secret")
        if any(len(secret) < 16 for secret in self.secrets):
            raise ValueError("flow token secrets must be at least 16 bytes")
        ciphers = tuple(AESSIV(_derive_key(secret)) for secret in self.secrets)
        object.__setattr__(self, "_ciphers", ciphers)

    def encode(self, flow: Source) -> str:
        """The token for ``flow`` (RFC 5626 §5.2), sealed with the first secret."""
        flow_id = flow.flow.encode()
        if len(flow_id) > MAX_FLOW_ID_BYTES:
            raise ValueError(f"flow id longer than {MAX_FLOW_ID_BYTES} bytes: {flow.flow!r}")
        plaintext = b"".join(
            (
                bytes((_TRANSPORT_CODES[flow.transport],)),
                _pack_endpoint(flow.local),
                _pack_endpoint(flow.remote),
                flow_id,
            )
        )
        sealed = self._ciphers[0].encrypt(plaintext, [_VERSION_BYTE])
        return base64.urlsafe_b64encode(_VERSION_BYTE + sealed).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> Source | None:
        """The flow a genuine token names, or None for anything else: a token
        that is malformed, of another version, or sealed with no known secret.
        Never raises: tokens come from the network."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _MIN_LENGTH or raw[0] != _VERSION:
            return None
        payload = _open(self._ciphers, raw[1:])
        if payload is None:
            return None
        transport = _TRANSPORTS_BY_CODE.get(payload[0])
        if transport is None:
            return None
        local, offset = _unpack_endpoint(payload, 1)
        if local is None:
            return None
        remote, offset = _unpack_endpoint(payload, offset)
        if remote is None:
            return None
        try:
            flow_id: FlowId = payload[offset:].decode()
        except UnicodeDecodeError:
            return None
        return Source(transport=transport, remote=remote, local=local, flow=flow_id)


def _derive_key(secret: bytes) -> bytes:
    """A 512-bit AES-256-SIV key from a secret (HKDF-SHA256, RFC 5869)."""
    return HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=_KDF_INFO).derive(secret)


def _open(ciphers: Sequence[AESSIV], sealed: bytes) -> bytes | None:
    for cipher in ciphers:
        try:
            return cipher.decrypt(sealed, [_VERSION_BYTE])
        except InvalidTag:
            continue
    return None


def _pack_endpoint(endpoint: Endpoint) -> bytes:
    packed = endpoint.packed
    return bytes((len(packed),)) + packed + endpoint.port.to_bytes(2, "big")


def _unpack_endpoint(data: bytes, offset: int) -> tuple[Endpoint | None, int]:
    if offset >= len(data):
        return None, offset
    size = data[offset]
    if size not in (4, 16):
        return None, offset
    end = offset + 1 + size + 2
    if end > len(data):
        return None, offset
    host = host_of_packed(data[offset + 1 : offset + 1 + size])
    port = int.from_bytes(data[end - 2 : end], "big")
    return Endpoint(host, port), end
