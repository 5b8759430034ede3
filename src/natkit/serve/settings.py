"""The settings of ``natkit serve``: every server of one process from one TOML file.

Theory of operation
-------------------
``natkit.toml`` has one table per server plus the shared ones::

    data-dir = "~/.local/state/natkit"   # where the SQLite store lives
    [store]        url = "sqlite:..." | "redis://..." | "memory:"
    [stun]         a STUN server (RFC 8489; RFC 5780 with ``alternate``)
    [turn]         the TURN server: the keys of ``natkit turn-server``
    [sip]          the SIP registrar/edge/home proxy: the keys of ``natkit sip-server``
    [media_relay]  the latching media relay and when calls use it
    [admin]        one HTTP endpoint: /metrics, /healthz, /status.json, /sessions, /

Every table is optional and has embedded defaults that listen on loopback
only (:data:`DEFAULT_TOML`), so ``natkit serve`` with no file runs every
server safely. Each server table takes ``enabled = false``. ``[turn]`` and
``[sip]`` are checked by the same code as ``natkit turn-server`` and
``natkit sip-server`` (:mod:`natkit.turn.aio.config`,
:mod:`natkit.sip.aio.config`), minus the keys ``serve`` owns once for all
(``store``, ``admin*``, ``workers``). Keys take dashes or underscores.

:func:`build_serve_settings` merges the file with the command line's
overrides (``--set section.key=value`` and the named flags, which win), and
checks everything once: a bad value raises :class:`ConfigError` naming
``section.key``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from natkit.addr import Endpoint, canonical_ip, parse_endpoint
from natkit.settings_common import ConfigError, norm, read_toml
from natkit.sip.aio import config as sip_config
from natkit.sip.aio.config import SipServerSettings
from natkit.store.base import StoreError
from natkit.store.url import default_sqlite_path, parse_store_url
from natkit.turn.aio import config as turn_config
from natkit.turn.aio.config import TurnServerSettings

__all__ = [
    "ADMIN_DEFAULT",
    "DEFAULT_TOML",
    "SECTIONS",
    "AdminSettings",
    "ConfigError",
    "MediaRelaySettings",
    "RelayPolicy",
    "ServeSettings",
    "StunSettings",
    "build_serve_settings",
    "load_serve_toml",
    "parse_override",
]

ADMIN_DEFAULT = Endpoint("127.0.0.1", 9640)
SECTIONS = ("store", "stun", "turn", "sip", "media-relay", "admin")

DEFAULT_TOML = """\
# natkit serve's embedded defaults: everything on loopback.
[store]
# url = "sqlite:<data-dir>/natkit.db" (default), "redis://HOST:6379/0", "memory:"

[stun]
listen = ["127.0.0.1:3479"]

[turn]
realm = "natkit"
listen = ["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"]

[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
domain = ["localhost"]

[media_relay]
ipv4 = "127.0.0.1"

[admin]
listen = "127.0.0.1:9640"
"""


class RelayPolicy:
    """When a call's media goes through the relay (``[media_relay] policy``)."""

    AUTO = "auto"  # a party behind NAT that offers no ICE
    ALWAYS = "always"  # every party that offers no ICE

    ALL = (AUTO, ALWAYS)


@dataclass(frozen=True, slots=True)
class StunSettings:
    """``[stun]``: UDP (and TCP) on ``listen``; RFC 5780 with ``alternate``."""

    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 3479),)
    alternate: Endpoint | None = None
    tcp: bool = True
    software: str | None = "natkit"


@dataclass(frozen=True, slots=True)
class MediaRelaySettings:
    """``[media_relay]``: the relay's addresses and ports, its latching
    knobs (:class:`~natkit.mediarelay.config.MediaRelayConfig`) and the
    ``policy`` for which calls use it (:class:`RelayPolicy`)."""

    ipv4: str | None = "127.0.0.1"
    ipv6: str | None = None
    advertised_ipv4: str | None = None
    advertised_ipv6: str | None = None
    min_port: int = 30000
    max_port: int = 39999
    learning_packets: int = 5
    learning_time: float = 3.0
    strict_source: bool = True
    idle_timeout: float = 60.0
    max_calls: int = 10000
    policy: str = RelayPolicy.AUTO


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """``[admin]``: the one HTTP endpoint of the process."""

    listen: Endpoint | None = ADMIN_DEFAULT
    token: str | None = None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """The whole process; ``None`` for a server that is not enabled."""

    data_dir: Path
    store_url: str
    stun: StunSettings | None = field(default_factory=StunSettings)
    turn: TurnServerSettings | None = None
    sip: SipServerSettings | None = None
    media_relay: MediaRelaySettings | None = field(default_factory=MediaRelaySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)

    @property
    def default_store(self) -> bool:
        return self.store_url == f"sqlite:{self.data_dir / 'natkit.db'}"


# -- reading ----------------------------------------------------------------------------


def _tables(doc: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """``doc`` as ``{section: {key: value}}`` with dashed names; top-level
    keys go under section ``""``."""
    out: dict[str, dict[str, Any]] = {"": {}}
    for key, value in doc.items():
        k = norm(key)
        if isinstance(value, dict):
            if k not in SECTIONS:
                raise ConfigError(f"config: unknown table [{key}] in {where}")
            out.setdefault(k, {}).update({norm(n): v for n, v in value.items()})
        elif k == "data-dir":
            out[""][k] = value
        else:
            raise ConfigError(f"config: unknown key {key!r} in {where} (outside a table)")
    return out


def load_serve_toml(path: Path) -> dict[str, dict[str, Any]]:
    """Read ``natkit.toml``: ``{section: {key: value}}`` (keys dashed)."""
    return _tables(read_toml(path), str(path))


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` (``--set``): the value is read as a TOML value
    (``30``, ``true``, ``["a", "b"]``, ``"text"``), else taken as a string."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().rpartition(".")
    if not sep or not key:
        raise ConfigError(f"--set: {text!r} is not SECTION.KEY=VALUE")
    section = norm(section) if dot else ""
    if section and section not in SECTIONS:
        raise ConfigError(f"--set: unknown section {section!r} in {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, norm(key), value


def _merge(
    file: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    defaults = _tables(tomllib.loads(DEFAULT_TOML), "the embedded defaults")
    merged: dict[str, dict[str, Any]] = {s: dict(v) for s, v in defaults.items()}
    for layer in (file, overrides):
        for section, keys in layer.items():
            merged.setdefault(norm(section), {}).update({norm(k): v for k, v in keys.items()})
    return merged


def build_serve_settings(
    file: Mapping[str, Mapping[str, Any]],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServeSettings:
    """The file's tables over the embedded defaults, the command line's
    ``overrides`` (same shape) over both; everything checked."""
    m = _merge(file, overrides or {})
    top = m.get("", {})
    data_dir_value = top.get("data-dir")
    if data_dir_value is None:
        data_dir = default_sqlite_path().parent
    elif isinstance(data_dir_value, str) and data_dir_value:
        data_dir = Path(data_dir_value).expanduser()
    else:
        raise ConfigError(f"data-dir: expected a directory path, got {data_dir_value!r}")
    store_url = _store(m.get("store", {}), data_dir)
    return ServeSettings(
        data_dir=data_dir,
        store_url=store_url,
        stun=_stun(m.get("stun", {})),
        turn=_turn(m.get("turn", {})),
        sip=_sip(m.get("sip", {})),
        media_relay=_media_relay(m.get("media-relay", {})),
        admin=_admin(m.get("admin", {})),
    )


# -- the sections -----------------------------------------------------------------------


def _only(section: str, keys: Mapping[str, Any], known: set[str]) -> None:
    for key in keys:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key")


def _bool(section: str, key: str, keys: Mapping[str, Any], default: bool) -> bool:
    value = keys.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{section}.{key}: expected true or false, got {value!r}")
    return value


def _str(section: str, key: str, keys: Mapping[str, Any]) -> str | None:
    value = keys.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{section}.{key}: expected a string, got {value!r}")
    return value


def _int(section: str, key: str, keys: Mapping[str, Any], default: int, low: int) -> int:
    value = keys.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{section}.{key}: expected an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{section}.{key}: must be at least {low}, got {value}")
    return value


def _float(section: str, key: str, keys: Mapping[str, Any], default: float, low: float) -> float:
    value = keys.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{section}.{key}: expected a number, got {value!r}")
    if value < low:
        raise ConfigError(f"{section}.{key}: must be at least {low}, got {value}")
    return float(value)


def _endpoint(section: str, key: str, text: Any, default_port: int) -> Endpoint:
    if not isinstance(text, str):
        raise ConfigError(f"{section}.{key}: expected ADDR[:PORT], got {text!r}")
    try:
        return parse_endpoint(text, default_port)
    except ValueError:
        raise ConfigError(f"{section}.{key}: {text!r} is not ADDR[:PORT]") from None


def _ip(section: str, key: str, keys: Mapping[str, Any], family_v6: bool) -> str | None:
    text = _str(section, key, keys)
    if text is None:
        return None
    try:
        ip = canonical_ip(text.strip())
    except ValueError:
        raise ConfigError(f"{section}.{key}: {text!r} is not an IP address") from None
    if (":" in ip) != family_v6:
        raise ConfigError(f"{section}.{key}: {ip} is not an IPv{6 if family_v6 else 4} address")
    return ip


def _store(keys: Mapping[str, Any], data_dir: Path) -> str:
    _only("store", keys, {"url"})
    url = _str("store", "url", keys) or f"sqlite:{data_dir / 'natkit.db'}"
    try:
        parse_store_url(url)
    except StoreError as exc:
        raise ConfigError(f"store.url: {exc}") from None
    return url


def _stun(keys: Mapping[str, Any]) -> StunSettings | None:
    _only("stun", keys, {"enabled", "listen", "alternate", "tcp", "software"})
    if not _bool("stun", "enabled", keys, True):
        return None
    listen = keys.get("listen", ["127.0.0.1:3479"])
    if isinstance(listen, str):
        listen = [listen]
    if not isinstance(listen, list) or not listen:
        raise ConfigError(f"stun.listen: expected a list of ADDR[:PORT], got {listen!r}")
    endpoints = tuple(_endpoint("stun", "listen", text, 3478) for text in listen)
    if len(set(endpoints)) != len(endpoints):
        raise ConfigError("stun.listen: an address is given twice")
    alternate = None
    if keys.get("alternate"):
        alternate = _endpoint("stun", "alternate", keys["alternate"], 3479)
        primary = endpoints[0]
        if alternate.host == primary.host or alternate.port == primary.port:
            raise ConfigError(
                "stun.alternate: needs another IP and another port than the first listen address"
            )
        if 0 in (primary.port, alternate.port) or primary.ip.is_unspecified:
            raise ConfigError("stun.alternate: RFC 5780 needs explicit IPs and ports")
    software = keys.get("software", "natkit")
    if software is not None and not isinstance(software, str):
        raise ConfigError(f"stun.software: expected a string, got {software!r}")
    return StunSettings(
        listen=endpoints,
        alternate=alternate,
        tcp=_bool("stun", "tcp", keys, True),
        software=software or None,
    )


_SERVE_OWNS = {
    "store": "[store] url",
    "admin": "[admin]",
    "no-admin": "[admin]",
    "admin-token": "[admin]",
    "admin-insecure": "[admin]",
    "workers": "natkit turn-server",
}


def _section_keys(section: str, keys: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in keys.items():
        if key == "enabled":
            continue
        if key in _SERVE_OWNS:
            raise ConfigError(f"{section}.{key}: natkit serve sets this in {_SERVE_OWNS[key]}")
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown key")
        out[key] = value
    return out


def _prefixed(section: str, exc: ConfigError) -> ConfigError:
    return ConfigError(f"{section}.{exc}")


_Settings = TypeVar("_Settings")


def _turn(keys: Mapping[str, Any]) -> TurnServerSettings | None:
    return _server_section("turn", keys, turn_config.KEYS, turn_config.build_settings)


def _sip(keys: Mapping[str, Any]) -> SipServerSettings | None:
    return _server_section("sip", keys, sip_config.KEYS, sip_config.build_settings)


def _server_section(
    section: str,
    keys: Mapping[str, Any],
    known: frozenset[str],
    build: Callable[[Mapping[str, Any], Mapping[str, Any]], _Settings],
) -> _Settings | None:
    """A server's settings from its section (``None``: ``enabled = false``),
    with its own admin endpoint off (``natkit serve`` runs one for all);
    errors name the section."""
    if not _bool(section, "enabled", keys, True):
        return None
    file = _section_keys(section, keys, known)
    try:
        return build(file, {"no-admin": True})
    except ConfigError as exc:
        raise _prefixed(section, exc) from None


_RELAY_KEYS = {
    "enabled",
    "ipv4",
    "ipv6",
    "advertised-ipv4",
    "advertised-ipv6",
    "min-port",
    "max-port",
    "learning-packets",
    "learning-time",
    "strict-source",
    "idle-timeout",
    "max-calls",
    "policy",
}


def _media_relay(keys: Mapping[str, Any]) -> MediaRelaySettings | None:
    s = "media_relay"
    _only(s, keys, _RELAY_KEYS)
    if not _bool(s, "enabled", keys, True):
        return None
    ipv4 = _ip(s, "ipv4", keys, False)
    ipv6 = _ip(s, "ipv6", keys, True)
    if ipv4 is None and ipv6 is None:
        raise ConfigError(f"{s}.ipv4: the relay needs an IPv4 or an IPv6 address")
    for name, ip in (("ipv4", ipv4), ("ipv6", ipv6)):
        if ip in turn_config.WILDCARDS:
            raise ConfigError(f"{s}.{name}: {ip} is a wildcard; give the address to relay from")
    low = _int(s, "min-port", keys, 30000, 1)
    high = _int(s, "max-port", keys, 39999, 1)
    if not low < high <= 65535:
        raise ConfigError(f"{s}.min-port: need min-port < max-port <= 65535 ({low}, {high})")
    policy = keys.get("policy", RelayPolicy.AUTO)
    if policy not in RelayPolicy.ALL:
        raise ConfigError(f"{s}.policy: {policy!r} is not one of {', '.join(RelayPolicy.ALL)}")
    idle = _float(s, "idle-timeout", keys, 60.0, 0.0)
    if idle <= 0:
        raise ConfigError(f"{s}.idle-timeout: must be positive")
    return MediaRelaySettings(
        ipv4=ipv4,
        ipv6=ipv6,
        advertised_ipv4=_ip(s, "advertised-ipv4", keys, False),
        advertised_ipv6=_ip(s, "advertised-ipv6", keys, True),
        min_port=low,
        max_port=high,
        learning_packets=_int(s, "learning-packets", keys, 5, 1),
        learning_time=_float(s, "learning-time", keys, 3.0, 0.0),
        strict_source=_bool(s, "strict-source", keys, True),
        idle_timeout=idle,
        max_calls=_int(s, "max-calls", keys, 10000, 1),
        policy=policy,
    )


def _admin(keys: Mapping[str, Any]) -> AdminSettings:
    _only("admin", keys, {"enabled", "listen", "token", "insecure"})
    token = _str("admin", "token", keys)
    insecure = _bool("admin", "insecure", keys, False)
    if not _bool("admin", "enabled", keys, True):
        return AdminSettings(listen=None, token=token, insecure=insecure)
    listen = _endpoint("admin", "listen", keys.get("listen", str(ADMIN_DEFAULT)), 9640)
    if not listen.ip.is_loopback and token is None and not insecure:
        raise ConfigError(
            f"admin.listen: {listen} is not loopback; give admin.token "
            "(or $NATKIT_ADMIN_TOKEN), or admin.insecure = true to serve it without one"
        )
    return AdminSettings(listen=listen, token=token, insecure=insecure)
