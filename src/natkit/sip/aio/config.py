"""Operator settings of ``natkit sip-server``: one set of keys for the
command line and the TOML file (the same pattern as
:mod:`natkit.turn.aio.config`).

Theory of operation
-------------------
:class:`SipServerSettings` holds what an operator configures, spelled as the
command's flags (``listen``, ``domain``, ``store``, ``edge-only``,
``registrar``, ``flow-timer``, ``admin`` ...). :func:`load_toml` reads a file
written with those keys (dashes or underscores, top level or under a
``[sip-server]`` table) and :func:`build_settings` merges it with the flags
given: a flag given replaces the file's value (lists too). Every value is
checked here, once; a bad one raises :class:`ConfigError` naming the key.

:meth:`SipServerSettings.core_config` turns the settings into the element's
:class:`~natkit.sip.aio.server.SipServerConfig` once the server secret (from
the store, RFC 5626 §5.2 flow tokens need one shared by a cluster) and the
TLS context are known.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natkit.addr import Endpoint, canonical_ip, parse_endpoint
from natkit.errors import NatkitError
from natkit.settings_common import ConfigError, KeyKinds, file_keys, merge_flags, read_toml
from natkit.sip.aio.server import SipServerConfig, literal_target
from natkit.sip.digest import DigestAlgorithm
from natkit.sip.flow import SipTransport, Target
from natkit.sip.uri import SipUri, parse_uri
from natkit.store.base import StoreError
from natkit.store.url import parse_store_url

__all__ = [
    "ADMIN_PORT",
    "KEYS",
    "ConfigError",
    "SipServerSettings",
    "build_settings",
    "load_toml",
    "parse_sip_listen",
]

ADMIN_PORT = 9642
"""The admin endpoint's port when ``admin`` gives an address only (TURN's is 9641)."""

DEFAULT_PORTS = {
    SipTransport.UDP: 5060,
    SipTransport.TCP: 5060,
    SipTransport.TLS: 5061,
    SipTransport.WS: 80,
    SipTransport.WSS: 443,
}


@dataclass(frozen=True, slots=True)
class SipServerSettings:
    """Everything ``natkit sip-server`` can be told. Field names are the
    flags' names with underscores; see docs/sip-server.md for each."""

    listen: tuple[tuple[SipTransport, Endpoint], ...] = (
        (SipTransport.UDP, Endpoint("0.0.0.0", 5060)),
        (SipTransport.TCP, Endpoint("0.0.0.0", 5060)),
    )
    domains: frozenset[str] = frozenset()
    store: str | None = None
    edge_upstream: Target | None = None
    host: str | None = None
    realm: str | None = None
    authenticate: bool = True
    digest_algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5)
    secret: bytes | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    flow_timer: int = 120
    alias_peers: frozenset[str] = frozenset()
    connection_reuse: bool = False
    record_route: bool = True
    nat_pings: bool = True
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    admin: Endpoint | None = None
    admin_token: str | None = None
    admin_insecure: bool = False

    @property
    def needs_tls(self) -> bool:
        return any(t.secure for t, _ in self.listen)

    def core_config(self, secret: bytes, **extra: Any) -> SipServerConfig:
        """The element's config with the server ``secret`` (``extra``: ``tls``)."""
        return SipServerConfig(
            listen=self.listen,
            domains=self.domains,
            secret=self.secret if self.secret is not None else secret,
            host=self.host,
            realm=self.realm,
            authenticate=self.authenticate,
            digest_algorithms=self.digest_algorithms,
            record_route=self.record_route,
            flow_timer=self.flow_timer,
            min_expires=self.min_expires,
            max_expires=self.max_expires,
            default_expires=self.default_expires,
            edge_upstream=self.edge_upstream,
            nat_pings=self.nat_pings,
            alias_peers=self.alias_peers,
            connection_reuse=self.connection_reuse,
            **extra,
        )


def parse_sip_listen(text: str) -> list[tuple[SipTransport, Endpoint]]:
    """``udp:|tcp:|tls:|ws:|wss:ADDR[:PORT]``; a bare ``ADDR[:PORT]`` means UDP and TCP."""
    scheme, sep, rest = text.partition(":")
    kinds: tuple[SipTransport, ...]
    if sep and scheme.lower() in {t.value for t in SipTransport}:
        kinds = (SipTransport(scheme.lower()),)
    else:
        kinds, rest = (SipTransport.UDP, SipTransport.TCP), text
    try:
        endpoint = parse_endpoint(rest, DEFAULT_PORTS[kinds[0]])
    except ValueError as exc:
        raise ConfigError(
            f"listen: {text!r} is not [udp:|tcp:|tls:|ws:|wss:]ADDR[:PORT] ({exc})"
        ) from None
    return [(kind, endpoint) for kind in kinds]


# -- the keys ---------------------------------------------------------------------------

_LIST_KEYS = frozenset({"listen", "domain", "alias-peer"})
_INT_KEYS = frozenset({"flow-timer", "min-expires", "max-expires", "default-expires"})
_STR_KEYS = frozenset(
    {"store", "registrar", "host", "realm", "secret", "tls-cert", "tls-key", "admin"}
)
_NULLABLE_STR_KEYS = frozenset({"admin-token"})
_BOOL_KEYS = frozenset(
    {
        "edge-only",
        "no-auth",
        "md5-first",
        "connection-reuse",
        "no-record-route",
        "no-nat-pings",
        "no-admin",
        "admin-insecure",
    }
)
_KINDS = KeyKinds(
    lists=_LIST_KEYS,
    ints=_INT_KEYS,
    strings=_STR_KEYS,
    nullable_strings=_NULLABLE_STR_KEYS,
    bools=_BOOL_KEYS,
)
KEYS = _KINDS.all
"""Every key of the file (and every flag), dashed."""


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file of ``sip-server`` keys (top level, or under a
    ``[sip-server]`` table). Unknown keys are errors: a typo must not be
    silently ignored on a server."""
    return file_keys(read_toml(path), ("sip-server", "sip_server"), KEYS, path)


def build_settings(file: Mapping[str, Any], flags: Mapping[str, Any]) -> SipServerSettings:
    """Merge the file's keys with the flags given (``None`` or an empty list:
    not given; ``False`` from a ``--no-...`` flag is given) and check
    everything. Keys are the flags' names."""
    return settings_from(merge_flags(file, flags, _KINDS))


def settings_from(m: Mapping[str, Any]) -> SipServerSettings:
    """Check merged, typed keys and build the settings (also used by ``natkit serve``)."""
    kw: dict[str, Any] = {}
    if "listen" in m:
        listen: list[tuple[SipTransport, Endpoint]] = []
        for text in m["listen"]:
            for item in parse_sip_listen(text):
                if item in listen:
                    raise ConfigError(f"listen: {item[0].value}:{item[1]} given twice")
                listen.append(item)
        if not listen:
            raise ConfigError("listen: at least one listener is needed")
        kw["listen"] = tuple(listen)
    domains = frozenset(d.strip().lower() for d in m.get("domain", ()))
    if any(not d or any(c in d for c in " \t;:@<>") for d in domains):
        raise ConfigError(f"domain: not a domain name in {sorted(domains)!r}")
    kw["domains"] = domains
    store = m.get("store") or None
    if store is not None:
        try:
            parse_store_url(store)
        except StoreError as exc:
            raise ConfigError(f"store: {exc}") from None
    kw["store"] = store
    edge_only = m.get("edge-only", False)
    registrar = m.get("registrar")
    if edge_only:
        if not registrar:
            raise ConfigError("registrar: edge-only needs registrar = sip:ADDRESS[:PORT]")
        try:
            uri = parse_uri(registrar)
        except NatkitError as exc:
            raise ConfigError(f"registrar: {exc}") from None
        upstream = literal_target(uri) if isinstance(uri, SipUri) else None
        if upstream is None:
            raise ConfigError(f"registrar: {registrar!r} is not a sip: URI with an IP address")
        kw["edge_upstream"] = upstream
    elif registrar:
        raise ConfigError("registrar: only an edge-only server sends to a registrar")
    elif not domains:
        raise ConfigError("domain: a registrar needs at least one (or run edge-only)")
    kw["host"] = m.get("host") or None
    kw["realm"] = m.get("realm") or None
    kw["authenticate"] = not m.get("no-auth", False)
    if m.get("md5-first", False):
        kw["digest_algorithms"] = (DigestAlgorithm.MD5, DigestAlgorithm.SHA256)
    if m.get("secret"):
        try:
            secret = bytes.fromhex(m["secret"])
        except ValueError:
            raise ConfigError("secret: expected hex digits") from None
        if len(secret) < 16:
            raise ConfigError("secret: at least 16 bytes (32 hex digits)")
        kw["secret"] = secret
    cert, pem_key = m.get("tls-cert"), m.get("tls-key")
    if bool(cert) != bool(pem_key):
        raise ConfigError("tls-cert and tls-key go together")
    kw["tls_cert"] = Path(cert) if cert else None
    kw["tls_key"] = Path(pem_key) if pem_key else None
    flow_timer = m.get("flow-timer", 120)
    if not 1 <= flow_timer <= 86400:
        raise ConfigError(f"flow-timer: {flow_timer} is not 1..86400 seconds")
    kw["flow_timer"] = flow_timer
    for key in ("min-expires", "max-expires", "default-expires"):
        if key in m:
            if m[key] < 1:
                raise ConfigError(f"{key}: must be at least 1 second")
            kw[key.replace("-", "_")] = m[key]
    low = kw.get("min_expires", 60)
    high = kw.get("max_expires", 7200)
    default = kw.get("default_expires", 3600)
    if not low <= default <= high:
        raise ConfigError(
            f"default-expires: {default} is not within min-expires {low} .. max-expires {high}"
        )
    peers: set[str] = set()
    for peer in m.get("alias-peer", ()):
        try:
            peers.add(canonical_ip(peer.strip()))
        except ValueError:
            raise ConfigError(f"alias-peer: {peer!r} is not an IP address") from None
    kw["alias_peers"] = frozenset(peers)
    kw["connection_reuse"] = m.get("connection-reuse", False)
    kw["record_route"] = not m.get("no-record-route", False)
    kw["nat_pings"] = not m.get("no-nat-pings", False)
    if m.get("no-admin"):
        kw["admin"] = None
    elif m.get("admin"):
        try:
            kw["admin"] = parse_endpoint(m["admin"], ADMIN_PORT)
        except ValueError:
            raise ConfigError(f"admin: {m['admin']!r} is not ADDR[:PORT]") from None
    kw["admin_token"] = m.get("admin-token") or None
    kw["admin_insecure"] = m.get("admin-insecure", False)
    admin = kw.get("admin")
    open_admin = admin is not None and not admin.ip.is_loopback and not kw["admin_token"]
    if open_admin and not kw["admin_insecure"]:
        raise ConfigError(
            f"admin: {admin} is not loopback; give admin-token (or $NATKIT_ADMIN_TOKEN), "
            "or admin-insecure to serve it without one"
        )
    settings = SipServerSettings(**kw)
    if settings.needs_tls and settings.tls_cert is None:
        raise ConfigError("tls-cert: tls: and wss: listeners need tls-cert and tls-key")
    return settings
