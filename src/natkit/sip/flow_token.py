"""Flow tokens: a flow's identity, signed, carried in Path and Record-Route (RFC 5626 §5.2).

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

Tokens are self-contained and signed, as §5.2 suggests: no table is needed
to decode them, and any edge proxy that holds the shared secret can tell a
genuine token from a forged one, so a cluster of edges behind one name can
validate each other's tokens. A token is the base64url text (no padding) of::

    version (1) | transport (1)
      | local IP length (1) | local IP (4|16) | local port (2)
      | remote IP length (1) | remote IP (4|16) | remote port (2)
      | flow id (utf-8, the rest) | HMAC-SHA256(secret, everything before)[:10]

base64url's alphabet (``A-Z a-z 0-9 - _``) is all ``unreserved`` in the
SIP-URI user part (RFC 3261 §25.1), so the token needs no escaping. An
80-bit truncated MAC is far beyond what an attacker can forge online.
Several secrets may be configured: the first signs, all verify (rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from natkit.addr import Endpoint
from natkit.sip.flow import FlowId, SipTransport, Source

__all__ = ["FlowTokenSigner", "MAX_FLOW_ID_BYTES"]

_VERSION = 1
_MAC_LENGTH = 10
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
# version, transport, two IPv4 endpoints, no flow id, the MAC.
_MIN_LENGTH = 2 + 7 + 7 + _MAC_LENGTH


@dataclass(frozen=True, slots=True)
class FlowTokenSigner:
    """Encodes :class:`~natkit.sip.flow.Source` values as tokens and back.

    ``secrets``: the first signs new tokens; every one is accepted when
    verifying, so a new secret can be rolled out before the old one goes.
    """

    secrets: Sequence[bytes]

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError("a flow token signer needs at least one secret")
        if any(len(secret) < 16 for secret in self.secrets):
            raise ValueError("flow token secrets must be at least 16 bytes")

    def encode(self, flow: Source) -> str:
        """The token for ``flow`` (RFC 5626 §5.2), signed with the first secret."""
        flow_id = flow.flow.encode()
        if len(flow_id) > MAX_FLOW_ID_BYTES:
            raise ValueError(f"flow id longer than {MAX_FLOW_ID_BYTES} bytes: {flow.flow!r}")
        payload = b"".join(
            (
                bytes((_VERSION, _TRANSPORT_CODES[flow.transport])),
                _pack_endpoint(flow.local),
                _pack_endpoint(flow.remote),
                flow_id,
            )
        )
        mac = _mac(self.secrets[0], payload)
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> Source | None:
        """The flow a genuine token names, or None for anything else: a token
        that is malformed, of another version, or signed with no known secret.
        Never raises: tokens come from the network."""
        if not token or len(token) > 200 or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _MIN_LENGTH or raw[0] != _VERSION:
            return None
        payload, mac = raw[:-_MAC_LENGTH], raw[-_MAC_LENGTH:]
        if not any(hmac.compare_digest(_mac(secret, payload), mac) for secret in self.secrets):
            return None
        transport = _TRANSPORTS_BY_CODE.get(payload[1])
        if transport is None:
            return None
        local, offset = _unpack_endpoint(payload, 2)
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


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_LENGTH]


def _pack_endpoint(endpoint: Endpoint) -> bytes:
    packed = ipaddress.ip_address(endpoint.host.partition("%")[0]).packed
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
    ip = ipaddress.ip_address(data[offset + 1 : offset + 1 + size])
    port = int.from_bytes(data[end - 2 : end], "big")
    return Endpoint(str(ip), port), end
