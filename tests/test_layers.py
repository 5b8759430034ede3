"""STYLE.md "Layers": protocol cores import no asyncio, socket, threading,
time or module-level random; imports point down only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "natkit"
CORE_PACKAGES = ("stun", "nat", "turn", "ice", "sip", "sdp", "rtp", "media", "mediarelay", "ua")
SHARED_CORE_MODULES = ("addr.py", "errors.py", "ratelimit.py", "packet.py", "srv.py")
FORBIDDEN = {"asyncio", "socket", "threading", "time", "random", "selectors", "uvloop"}
DRIVER_MARKERS = ("aio",)  # stun/aio/, nat/aio.py: asyncio drivers live here


def _core_modules() -> list[Path]:
    mods = [SRC / name for name in SHARED_CORE_MODULES]
    for pkg in CORE_PACKAGES:
        root = SRC / pkg
        if not root.is_dir():
            continue
        for path in root.rglob("*.py"):
            rel = path.relative_to(root)
            if any(part.removesuffix(".py") in DRIVER_MARKERS for part in rel.parts):
                continue
            mods.append(path)
    return sorted(mods)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_module_does_no_io(path: Path) -> None:
    bad = {name for name in _imports(path) if name.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _core_modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_core_module_does_not_import_drivers_or_cli(path: Path) -> None:
    upward = {
        name
        for name in _imports(path)
        if name.startswith(("natkit.net", "natkit.cli", "natkit.lab"))
        or any(f".{m}" in name for m in DRIVER_MARKERS)
    }
    assert not upward, f"{path.relative_to(SRC)} imports upward: {sorted(upward)}"


def test_there_are_core_modules_to_check() -> None:
    assert len(_core_modules()) >= 10
