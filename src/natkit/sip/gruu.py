"""Globally Routable User Agent URIs: public and temporary GRUUs (RFC 5627).

Theory of operation
-------------------
A registrar hands a user agent that registers with ``Supported: gruu`` and a
``+sip.instance`` two URIs that reach exactly that instance (RFC 5627 §3):

* the **public GRUU** is the AoR with a ``gr`` URI parameter holding the
  instance ID (§3.1; for ``<urn:uuid:...>`` the URN itself, so it is stable
  across registrations and restarts without any state);
* a **temporary GRUU** hides the AoR (§3.2). natkit makes it stateless: the
  user part is ``tgruu.`` followed by the base64url text of the AoR, the
  instance, a hash of the registration's Call-ID and the issue time, with an
  HMAC-SHA256 tag (80 bits) keyed by the registrar's secret. Any registrar
  holding the secret maps it back (:meth:`GruuSigner.resolve`) without a
  table, and a forged or altered token resolves to nothing. A temporary
  GRUU stays valid while the instance is registered with the Call-ID it was
  issued under (§5.1: a UA that reboots, and so changes Call-ID, loses its
  old temporary GRUUs); :meth:`GruuTarget.matches` checks that against a
  binding. A new one is minted on every registration (§6), the old ones
  stay valid under the same rule.

Sans-IO: the issue time is passed in (``now``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from natkit.sip.uri import SipUri

__all__ = ["TEMP_GRUU_PREFIX", "GruuSigner", "GruuTarget", "instance_urn"]

TEMP_GRUU_PREFIX = "tgruu."
_MAC_LENGTH = 10
_CALL_ID_HASH_LENGTH = 6
_VERSION = b"\x01"


def instance_urn(instance: str) -> str:
    """The instance ID without its ``<>`` (``<urn:uuid:X>`` -> ``urn:uuid:X``)."""
    text = instance.strip()
    if text.startswith("<") and text.endswith(">"):
        return text[1:-1]
    return text


def call_id_hash(call_id: str) -> str:
    """Short hex digest of a Call-ID: what a temporary GRUU remembers of it."""
    return hashlib.sha256(call_id.encode()).hexdigest()[: 2 * _CALL_ID_HASH_LENGTH]


@dataclass(frozen=True, slots=True)
class GruuTarget:
    """What a GRUU names: an AoR's instance (RFC 5627 §3)."""

    aor: str
    instance: str  # with <>, as in +sip.instance
    temporary: bool
    call_id_hash: str | None = None  # temporary GRUUs only

    def matches(self, instance: str | None, call_id: str) -> bool:
        """Whether a binding (its instance and Call-ID) is one this GRUU reaches."""
        if instance is None or instance_urn(instance) != instance_urn(self.instance):
            return False
        return self.call_id_hash is None or self.call_id_hash == call_id_hash(call_id)


class GruuSigner:
    """Mints and resolves GRUUs with shared secrets (the first one signs, all verify)."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets or any(not s for s in secrets):
            raise ValueError("a GRUU signer needs at least one non-empty secret")
        self._secrets = tuple(secrets)

    @staticmethod
    def public(aor: SipUri, instance: str) -> SipUri:
        """The public GRUU of ``instance`` at ``aor`` (RFC 5627 §3.1, §6)."""
        return aor.replace(params=(), headers=(), password=None).with_param(
            "gr", instance_urn(instance)
        )

    def temporary(self, aor: SipUri, instance: str, call_id: str, *, now: float) -> SipUri:
        """A new temporary GRUU for ``instance`` registered under ``call_id`` (§3.2)."""
        body = "\n".join(
            (aor.aor, instance_urn(instance), call_id_hash(call_id), str(int(now)))
        ).encode()
        payload = _VERSION + body
        tag = hmac.new(self._secrets[0], payload, hashlib.sha256).digest()[:_MAC_LENGTH]
        token = base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode()
        return SipUri(
            scheme=aor.scheme,
            host=aor.host,
            port=aor.port,
            user=TEMP_GRUU_PREFIX + token,
            params=(("gr", None),),
        )

    def resolve(self, uri: SipUri) -> GruuTarget | None:
        """The AoR and instance a GRUU of ours names, or None if ``uri`` is no
        GRUU, or a temporary one not signed by any of our secrets."""
        if not uri.has_param("gr"):
            return None
        value = uri.param("gr")
        if value:
            if uri.user is None:
                return None
            return GruuTarget(
                aor=uri.replace(params=(), headers=(), password=None).aor,
                instance=f"<{value}>",
                temporary=False,
            )
        user = uri.user or ""
        if not user.startswith(TEMP_GRUU_PREFIX):
            return None
        token = user[len(TEMP_GRUU_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= _MAC_LENGTH + 1 or raw[:1] != _VERSION:
            return None
        payload, tag = raw[:-_MAC_LENGTH], raw[-_MAC_LENGTH:]
        if not any(
            hmac.compare_digest(hmac.new(s, payload, hashlib.sha256).digest()[:_MAC_LENGTH], tag)
            for s in self._secrets
        ):
            return None
        try:
            aor, instance, digest, _issued = payload[1:].decode().split("\n")
        except (UnicodeDecodeError, ValueError):
            return None
        return GruuTarget(aor=aor, instance=f"<{instance}>", temporary=True, call_id_hash=digest)
