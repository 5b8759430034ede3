"""Operator settings of ``natkit turn-server``: one set of keys for the
command line and the TOML file.

Theory of operation
-------------------
:class:`TurnServerSettings` holds what an operator configures, spelled as
the command's flags (``listen``, ``realm``, ``user``, ``auth-secret``,
``external-ip``, ``relay-ip``, ``min-port`` ...). :func:`load_toml` reads a
file written with those keys (dashes or underscores, either works) and
:func:`build_settings` merges it with the flags given on the command line:
a flag given replaces the file's value (lists too: ``--user`` on the command
line replaces the file's ``user`` list instead of adding to it, so what a
command line says is what runs). Every value is checked here, once, and a
bad one raises :class:`ConfigError` naming the key; nothing downstream has
to validate again.

:meth:`TurnServerSettings.core_config` turns the settings into the core's
frozen :class:`~natkit.turn.server.TurnServerConfig`, and
:meth:`TurnServerSettings.listeners` into the runner's ``(Transport,
Endpoint)`` list. :func:`resolve_relay_ips` picks relay addresses when none
are configured (the listening IPs, or the host's default-route source
address when it listens on a wildcard).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natkit.addr import Endpoint, Transport, canonical_ip, parse_endpoint
from natkit.errors import ConfigError, TransportError
from natkit.net.stack import Stack
from natkit.settings_common import KeyKinds, file_keys, merge_flags, read_toml
from natkit.turn.server import IPNetwork, TurnServerConfig

__all__ = [
    "ADMIN_DEFAULT",
    "ConfigError",
    "TurnServerSettings",
    "build_settings",
    "load_toml",
    "parse_external_ip",
    "parse_listen",
    "resolve_relay_ips",
]

ADMIN_DEFAULT = Endpoint("127.0.0.1", 9641)
TURN_PORT = 3478
TURNS_PORT = 5349
WILDCARDS = ("0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class TurnServerSettings:
    """Everything ``natkit turn-server`` can be told. Field names are the
    flags' names with underscores; see docs/turn-server.md for each."""

    realm: str
    listen: tuple[tuple[Transport, Endpoint], ...] = (
        (Transport.UDP, Endpoint("0.0.0.0", TURN_PORT)),
        (Transport.TCP, Endpoint("0.0.0.0", TURN_PORT)),
    )  # (the same as _DEFAULT_LISTEN)
    users: tuple[tuple[str, str], ...] = ()
    auth_secrets: tuple[str, ...] = ()
    store: str | None = None
    external_ips: tuple[tuple[str | None, str], ...] = ()  # (private or None, public)
    relay_ips: tuple[str, ...] = ()
    min_port: int = 49152
    max_port: int = 65535
    relay_socket_pool: int = 16384
    relay_port_quarantine: float = 1.0
    allow_peers: tuple[IPNetwork, ...] = ()
    deny_peers: tuple[IPNetwork, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    alternate_server: Endpoint | None = None
    max_allocations: int = 0
    user_quota: int = 0
    max_bps: int = 0
    bps_capacity: int = 0
    default_lifetime: float = 600.0
    max_lifetime: float = 3600.0
    tcp_relay: bool = True
    admin: Endpoint | None = ADMIN_DEFAULT
    admin_token: str | None = None
    admin_insecure: bool = False  # serve a non-loopback admin endpoint without a token
    max_connections: int = 4096
    idle_timeout: float = 300.0
    max_unauthenticated_per_ip: int = 256
    unauthenticated_timeout: float = 30.0
    max_permissions: int = 1000
    max_channels: int = 1000
    max_peer_connections: int = 100
    deny_connect_ports: tuple[int, ...] = (25,)
    binding_rate: float = 50.0
    binding_burst: float = 100.0
    software: str | None = "natkit"
    workers: int = 1

    @property
    def needs_tls(self) -> bool:
        return any(t is Transport.TLS for t, _ in self.listen)

    def listeners(self) -> list[tuple[Transport, Endpoint]]:
        return list(self.listen)

    def external_map(self, relay_ips: Sequence[str]) -> dict[str, str]:
        """Relay IP -> advertised IP. A bare ``PUBLIC`` applies to every relay
        IP of its family that has no explicit ``PRIVATE=PUBLIC`` entry."""
        out: dict[str, str] = {}
        for private, public in self.external_ips:
            if private is not None:
                if private not in relay_ips:
                    raise ConfigError(
                        f"external-ip: {private} is not a relay IP ({', '.join(relay_ips)})"
                    )
                out[private] = public
        for private, public in self.external_ips:
            if private is None:
                for ip in relay_ips:
                    if (":" in ip) == (":" in public) and ip not in out:
                        out[ip] = public
        return out

    def for_worker(self, index: int) -> TurnServerSettings:
        """The settings worker ``index`` of :attr:`workers` runs with (``--workers``).

        Every worker listens on the same UDP endpoints (SO_REUSEPORT: the
        kernel hashes each client 5-tuple to one worker, so an allocation's
        packets all reach the worker that holds it). Worker 0 alone has the
        TCP/TLS listeners, hence every stream client and every RFC 6062
        allocation with its data connections. Each worker relays from its own
        slice of ``min-port``..``max-port``; the total ``max-allocations`` and
        ``bps-capacity`` are split evenly (rounded up), and so is
        ``relay-socket-pool``. What stays per worker:
        the per-source-IP limits on unauthenticated answers (401, Binding),
        so one IP may get up to ``workers`` times as many."""
        n = self.workers
        if not 0 <= index < n:
            raise ValueError(f"worker {index} of {n}")
        if n == 1:
            return self
        span = self.max_port - self.min_port + 1
        low = self.min_port + index * span // n
        high = self.min_port + (index + 1) * span // n - 1
        listen = (
            self.listen
            if index == 0
            else tuple((t, ep) for t, ep in self.listen if t is Transport.UDP)
        )
        return dataclasses.replace(
            self,
            listen=listen,
            min_port=low,
            max_port=high,
            max_allocations=-(-self.max_allocations // n),
            relay_socket_pool=-(-self.relay_socket_pool // n),
            bps_capacity=-(-self.bps_capacity // n),
        )

    def core_config(self, relay_ips: Sequence[str], **extra: Any) -> TurnServerConfig:
        """The core's config for relays on ``relay_ips`` (``extra``: rng, wallclock)."""
        return TurnServerConfig(
            realm=self.realm,
            relay_ips=tuple(relay_ips),
            external_ips=self.external_map(relay_ips),
            min_port=self.min_port,
            max_port=self.max_port,
            relay_socket_pool=self.relay_socket_pool,
            relay_port_quarantine=self.relay_port_quarantine,
            default_lifetime=self.default_lifetime,
            max_lifetime=self.max_lifetime,
            allowed_peers=self.allow_peers,
            denied_peers=self.deny_peers,
            max_allocations_per_user=self.user_quota,
            max_allocations=self.max_allocations,
            max_bps_per_allocation=self.max_bps,
            max_bps_total=self.bps_capacity,
            alternate_server=self.alternate_server,
            software=self.software,
            tcp_relay=self.tcp_relay,
            max_permissions=self.max_permissions,
            max_channels=self.max_channels,
            max_peer_connections=self.max_peer_connections,
            denied_connect_ports=self.deny_connect_ports,
            binding_rate=self.binding_rate,
            binding_burst=self.binding_burst,
            **extra,
        )


# -- parsing single values -----------------------------------------------------------


def parse_listen(text: str) -> list[tuple[Transport, Endpoint]]:
    """``udp:IP:PORT``, ``tcp:...``, ``tls:...`` (``tls`` defaults to port
    5349, the others to 3478), or a plain ``IP[:PORT]`` for UDP and TCP both."""
    scheme, sep, rest = text.partition(":")
    kinds: tuple[Transport, ...]
    if sep and scheme.lower() in ("udp", "tcp", "tls"):
        kinds = (Transport(scheme.lower()),)
    else:
        kinds, rest = (Transport.UDP, Transport.TCP), text
    default = TURNS_PORT if kinds == (Transport.TLS,) else TURN_PORT
    try:
        ep = parse_endpoint(rest, default)
    except ValueError as exc:
        raise ConfigError(
            f"listen: {text!r} is not [udp:|tcp:|tls:]ADDR[:PORT] (host names are not accepted)"
        ) from exc
    return [(kind, ep) for kind in kinds]


def parse_external_ip(text: str) -> tuple[str | None, str]:
    """``PUBLIC``, ``PRIVATE=PUBLIC``, or coturn's ``PUBLIC/PRIVATE``."""
    private: str | None
    if "=" in text:
        private, _, public = text.partition("=")
    elif "/" in text:
        public, _, private = text.partition("/")
    else:
        private, public = None, text
    try:
        pub = canonical_ip(public.strip())
        priv = canonical_ip(private.strip()) if private is not None else None
    except ValueError as exc:
        raise ConfigError(f"external-ip: {text!r} is not PUBLIC or PRIVATE=PUBLIC") from exc
    if priv is not None and (":" in priv) != (":" in pub):
        raise ConfigError(f"external-ip: {text!r} mixes IPv4 and IPv6")
    return priv, pub


def _user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise ConfigError(f"user: {text!r} is not NAME:PASSWORD")
    return name, password


def _network(key: str, text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as exc:
        raise ConfigError(f"{key}: {text!r} is not an IP or CIDR") from exc


def _endpoint(key: str, text: str, default_port: int) -> Endpoint:
    try:
        return parse_endpoint(text, default_port)
    except ValueError as exc:
        raise ConfigError(f"{key}: {text!r} is not ADDR:PORT") from exc


def _ip(key: str, text: str) -> str:
    try:
        return canonical_ip(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{key}: {text!r} is not an IP address") from exc


# -- the file and the merge -----------------------------------------------------------

_LIST_KEYS = frozenset(
    {"listen", "user", "auth-secret", "external-ip", "relay-ip", "allow-peer", "deny-peer"}
)
_PORT_LIST_KEYS = frozenset({"deny-connect-port"})
_INT_KEYS = frozenset(
    {
        "min-port",
        "max-port",
        "max-allocations",
        "user-quota",
        "max-bps",
        "bps-capacity",
        "max-connections",
        "max-unauthenticated-per-ip",
        "max-permissions",
        "max-channels",
        "max-peer-connections",
        "relay-socket-pool",
        "workers",
    }
)
_FLOAT_KEYS = frozenset(
    {
        "default-lifetime",
        "max-lifetime",
        "idle-timeout",
        "unauthenticated-timeout",
        "binding-rate",
        "binding-burst",
        "relay-port-quarantine",
    }
)
_STR_KEYS = frozenset(
    {"realm", "store", "tls-cert", "tls-key", "alternate-server", "admin", "admin-token"}
)
_BOOL_KEYS = frozenset({"no-admin", "no-tcp-relay", "admin-insecure"})
_NULLABLE_STR_KEYS = frozenset({"software"})
_KINDS = KeyKinds(
    lists=_LIST_KEYS,
    port_lists=_PORT_LIST_KEYS,
    ints=_INT_KEYS,
    floats=_FLOAT_KEYS,
    strings=_STR_KEYS,
    nullable_strings=_NULLABLE_STR_KEYS,
    bools=_BOOL_KEYS,
)
KEYS = _KINDS.all
"""Every key of the file (and every flag), dashed."""


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file of ``turn-server`` keys (top level, or under a
    ``[turn-server]`` table). Unknown keys are errors: a typo must not be
    silently ignored on a server."""
    return file_keys(read_toml(path), ("turn-server", "turn_server"), KEYS, path)


def build_settings(file: Mapping[str, Any], flags: Mapping[str, Any]) -> TurnServerSettings:
    """Merge the file's keys with the flags given (``None`` or an empty list:
    not given; ``False`` from a ``--no-...`` flag is given) and check
    everything. Keys are the flags' names, dashed."""
    return _settings(merge_flags(file, flags, _KINDS))


def _settings(m: dict[str, Any]) -> TurnServerSettings:
    realm = m.get("realm")
    if not realm:
        raise ConfigError("realm: required (e.g. --realm example.org)")
    kw: dict[str, Any] = {"realm": realm}
    if "listen" in m:
        listen: list[tuple[Transport, Endpoint]] = []
        for text in m["listen"]:
            for item in parse_listen(text):
                if item in listen:
                    raise ConfigError(f"listen: {item[0]}:{item[1]} given twice")
                listen.append(item)
        if not listen:
            raise ConfigError("listen: at least one listener is needed")
        kw["listen"] = tuple(listen)
    kw["users"] = tuple(_user(u) for u in m.get("user", ()))
    names = [u for u, _ in kw["users"]]
    if len(set(names)) != len(names):
        raise ConfigError("user: a name is given twice")
    secrets = m.get("auth-secret", ())
    if any(not s for s in secrets):
        raise ConfigError("auth-secret: empty secret")
    kw["auth_secrets"] = tuple(secrets)
    kw["store"] = m.get("store") or None
    kw["external_ips"] = tuple(parse_external_ip(x) for x in m.get("external-ip", ()))
    kw["relay_ips"] = tuple(_ip("relay-ip", x) for x in m.get("relay-ip", ()))
    for ip in kw["relay_ips"]:
        if ip in WILDCARDS:
            raise ConfigError(f"relay-ip: {ip} is a wildcard; give the address to relay from")
    families = [":" in ip for ip in kw["relay_ips"]]
    if len(set(families)) != len(families):
        raise ConfigError("relay-ip: at most one IPv4 and one IPv6 address")
    for key in ("min-port", "max-port"):
        if key in m and not 1 <= m[key] <= 65535:
            raise ConfigError(f"{key}: {m[key]} is not a port (1-65535)")
    kw["min_port"] = m.get("min-port", 49152)
    kw["max_port"] = m.get("max-port", 65535)
    if kw["min_port"] > kw["max_port"]:
        raise ConfigError(f"min-port {kw['min_port']} is above max-port {kw['max_port']}")
    kw["allow_peers"] = tuple(_network("allow-peer", x) for x in m.get("allow-peer", ()))
    kw["deny_peers"] = tuple(_network("deny-peer", x) for x in m.get("deny-peer", ()))
    cert, pem_key = m.get("tls-cert"), m.get("tls-key")
    if bool(cert) != bool(pem_key):
        raise ConfigError("tls-cert and tls-key go together")
    kw["tls_cert"] = Path(cert) if cert else None
    kw["tls_key"] = Path(pem_key) if pem_key else None
    if "alternate-server" in m:
        kw["alternate_server"] = _endpoint("alternate-server", m["alternate-server"], TURN_PORT)
        if kw["alternate_server"].host in WILDCARDS:
            raise ConfigError("alternate-server: a wildcard address cannot be advertised")
    for k in ("max-allocations", "user-quota", "max-bps", "bps-capacity"):
        if m.get(k, 0) < 0:
            raise ConfigError(f"{k}: must be 0 (no limit) or more")
        kw[k.replace("-", "_")] = m.get(k, 0)
    kw["default_lifetime"] = m.get("default-lifetime", 600.0)
    kw["max_lifetime"] = m.get("max-lifetime", 3600.0)
    if kw["default_lifetime"] <= 0 or kw["max_lifetime"] < kw["default_lifetime"]:
        raise ConfigError("lifetimes: need 0 < default-lifetime <= max-lifetime")
    kw["tcp_relay"] = not m.get("no-tcp-relay", False)
    if m.get("no-admin"):
        kw["admin"] = None
    elif "admin" in m:
        kw["admin"] = _endpoint("admin", m["admin"], ADMIN_DEFAULT.port)
    kw["admin_token"] = m.get("admin-token") or None
    kw["admin_insecure"] = m.get("admin-insecure", False)
    admin = kw.get("admin", ADMIN_DEFAULT)
    open_admin = admin is not None and not admin.ip.is_loopback and not kw["admin_token"]
    if open_admin and not kw["admin_insecure"]:
        # Sessions and kick for anyone who can reach it: only when asked for by name.
        raise ConfigError(
            f"admin: {admin} is not loopback; give --admin-token (or $NATKIT_ADMIN_TOKEN), "
            "or --admin-insecure to serve it without one"
        )
    if "max-connections" in m:
        if m["max-connections"] < 1:
            raise ConfigError("max-connections: must be at least 1")
        kw["max_connections"] = m["max-connections"]
    for k in ("idle-timeout", "unauthenticated-timeout"):
        if k in m:
            if m[k] <= 0:
                raise ConfigError(f"{k}: must be positive")
            kw[k.replace("-", "_")] = m[k]
    if "max-unauthenticated-per-ip" in m:
        if m["max-unauthenticated-per-ip"] < 0:
            raise ConfigError("max-unauthenticated-per-ip: must be 0 (no limit) or more")
        kw["max_unauthenticated_per_ip"] = m["max-unauthenticated-per-ip"]
    for k in ("max-permissions", "max-channels", "max-peer-connections"):
        if k in m:
            if m[k] < 0:
                raise ConfigError(f"{k}: must be 0 (no limit) or more")
            kw[k.replace("-", "_")] = m[k]
    for k in ("relay-socket-pool", "relay-port-quarantine"):
        if k in m:
            if m[k] < 0:
                raise ConfigError(f"{k}: must be 0 (none) or more")
            kw[k.replace("-", "_")] = m[k]
    for k in ("binding-rate", "binding-burst"):
        if k in m:
            if m[k] < 0:
                raise ConfigError(f"{k}: must be 0 (no limit) or more")
            kw[k.replace("-", "_")] = m[k]
    if "deny-connect-port" in m:
        kw["deny_connect_ports"] = tuple(sorted(set(m["deny-connect-port"])))
    if "software" in m:
        kw["software"] = m["software"] or None
    workers = m.get("workers", 1)
    if workers > 1:
        _check_workers(workers, kw)
    elif workers < 1:
        raise ConfigError("workers: must be at least 1")
    kw["workers"] = workers
    settings = TurnServerSettings(**kw)
    if settings.needs_tls and settings.tls_cert is None:
        raise ConfigError("a tls: listener needs --tls-cert and --tls-key")
    if settings.tls_cert is not None and not settings.needs_tls:
        # A certificate without a TLS listener: listen on TLS at the usual port.
        host = settings.listen[0][1].host
        settings = dataclasses.replace(
            settings, listen=(*settings.listen, (Transport.TLS, Endpoint(host, TURNS_PORT)))
        )
    return settings


_DEFAULT_LISTEN = TurnServerSettings(realm="-").listen


def _check_workers(workers: int, kw: Mapping[str, Any]) -> None:
    """What ``workers > 1`` cannot do (yet): see docs/turn-server.md, Workers."""
    if workers > 64:
        raise ConfigError("workers: at most 64")
    listen = kw.get("listen", _DEFAULT_LISTEN)
    if not any(t is Transport.UDP for t, _ in listen):
        raise ConfigError("workers: more than one needs a udp: listener (the others serve UDP)")
    if kw.get("admin", ADMIN_DEFAULT) is not None:
        # One process would answer for all: sessions, kick and metrics would be partial.
        raise ConfigError(
            "workers: more than one needs --no-admin (the admin endpoint is per process)"
        )
    if kw.get("user_quota"):
        # The kernel, not the user, decides which worker an allocation lands on.
        raise ConfigError(
            "workers: user-quota cannot be kept across workers; give one or the other"
        )
    if kw["max_port"] - kw["min_port"] + 1 < 2 * workers:
        raise ConfigError(f"workers: {workers} workers need at least {2 * workers} relay ports")


async def resolve_relay_ips(stack: Stack, settings: TurnServerSettings) -> list[str]:
    """The relay IPs to use: the configured ones; else each family's first
    concrete listening IP; else (wildcard listeners) the address the host
    sends from on its default route, for IPv4."""
    if settings.relay_ips:
        return list(settings.relay_ips)
    out: list[str] = []
    for _, ep in settings.listen:
        if ep.host not in WILDCARDS and all((":" in ip) != (":" in ep.host) for ip in out):
            out.append(ep.host)
    if out:
        return out
    try:
        return [await stack.source_address_for(Endpoint("198.51.100.1", 9))]
    except TransportError as exc:
        raise ConfigError(
            f"relay-ip: cannot pick one ({exc}); give --relay-ip with this host's address"
        ) from exc
