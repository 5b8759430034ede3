"""Reading operator settings: the parts the servers' command lines and TOML
files share (``natkit sip-server``, ``natkit serve``; ``natkit turn-server``
has the same shape in :mod:`natkit.turn.aio.config`).

Theory of operation
-------------------
A server's settings are one set of dashed keys, given as flags or in a TOML
file (TOML 1.0, read with :mod:`tomllib`). :class:`KeyKinds` says which type
each key has; :func:`read_toml` reads a file, :func:`file_keys` takes a
server's keys from it (top level or under its table), :func:`typed` checks a
value's type and :func:`merge_flags` lets a flag given replace the file's
value. Every failure raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natkit.errors import ConfigError

__all__ = ["ConfigError", "KeyKinds", "file_keys", "merge_flags", "norm", "read_toml", "typed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyKinds:
    """The dashed keys of one server's settings, by type; a key in none of
    the sets but ``strings`` is a string too."""

    lists: frozenset[str] = frozenset()
    port_lists: frozenset[str] = frozenset()
    ints: frozenset[str] = frozenset()
    floats: frozenset[str] = frozenset()
    strings: frozenset[str] = frozenset()
    nullable_strings: frozenset[str] = frozenset()
    bools: frozenset[str] = frozenset()

    @property
    def all(self) -> frozenset[str]:
        """Every key (and every flag), dashed."""
        return (
            self.lists
            | self.port_lists
            | self.ints
            | self.floats
            | self.strings
            | self.nullable_strings
            | self.bools
        )


def norm(key: str) -> str:
    """A key as the flags spell it: dashed, lower case."""
    return key.replace("_", "-").lower()


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at ``path``; an unreadable or invalid file is a
    :class:`ConfigError` naming it."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc


def file_keys(
    doc: Mapping[str, Any], tables: Iterable[str], keys: frozenset[str], path: Path
) -> dict[str, Any]:
    """The keys of ``doc`` (the first of ``tables`` present, else the top
    level), dashed. Unknown keys are errors: a typo must not be silently
    ignored on a server."""
    for table in tables:
        if isinstance(doc.get(table), dict):
            doc = doc[table]
            break
    out: dict[str, Any] = {}
    for key, value in doc.items():
        k = norm(key)
        if k not in keys:
            raise ConfigError(f"config: unknown key {key!r} in {path}")
        out[k] = value
    return out


def typed(key: str, value: Any, kinds: KeyKinds) -> Any:
    """Check a TOML value's type for ``key`` (flags arrive already typed)."""
    if key in kinds.lists:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return value
    if key in kinds.port_lists:
        return _ports(key, value)
    if key in kinds.ints:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if key in kinds.floats:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if key in kinds.bools:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if key in kinds.nullable_strings:
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _ports(key: str, value: Any) -> list[int]:
    """A port or a list of ports (integers or digit strings), each 1-65535."""
    if isinstance(value, int | str):
        value = [value]
    ports: list[int] = []
    for item in value if isinstance(value, list) else [None]:
        port = -1
        if isinstance(item, int) and not isinstance(item, bool):
            port = item
        elif isinstance(item, str) and item.strip().isascii() and item.strip().isdigit():
            port = int(item)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{key}: expected ports (1-65535), got {value!r}")
        ports.append(port)
    return ports


def merge_flags(
    file: Mapping[str, Any], flags: Mapping[str, Any], kinds: KeyKinds
) -> dict[str, Any]:
    """The file's keys with the flags given laid over them, every value
    type-checked. ``None`` or an empty list means "not given"; a bool flag's
    ``False`` (``--no-...``) is given, so it can turn off a file's ``true``."""
    keys = kinds.all
    merged: dict[str, Any] = {}
    for key, value in file.items():
        k = norm(key)
        if k not in keys:
            raise ConfigError(f"unknown setting {key!r}")
        merged[k] = typed(k, value, kinds)
    for key, value in flags.items():
        k = norm(key)
        if k not in keys:
            raise ConfigError(f"unknown setting {key!r}")
        listed = k in kinds.lists or k in kinds.port_lists
        if value is None or (listed and not value):
            continue
        merged[k] = typed(k, list(value) if listed else value, kinds)
    return merged
