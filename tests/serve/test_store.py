"""natkit serve's store: SQLite in the data directory by default (a
registration survives a restart), Redis when [store] url says so (two serve
processes' runners share one view of the registrations)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from natkit.net.os_stack import OsStack
from natkit.serve.runner import ServeRunner
from natkit.serve.settings import build_serve_settings
from natkit.sip.message import SipResponse, parse_message
from tests.serve.test_runner_os import _register, _udp_exchange

SIP_ONLY: dict[str, dict[str, Any]] = {
    "stun": {"enabled": False},
    "turn": {"enabled": False},
    "media-relay": {"enabled": False},
    "admin": {"enabled": False},
    "sip": {"listen": ["udp:127.0.0.1:0"], "no-auth": True},
}


async def _register_at(runner: ServeRunner, local_port: int) -> None:
    answer = parse_message(
        await _udp_exchange(runner.endpoint("sip", "udp"), _register(local_port))
    )
    assert isinstance(answer, SipResponse) and answer.status == 200


async def test_registrations_survive_a_restart_with_the_default_sqlite_store(
    tmp_path: Path,
) -> None:
    settings = build_serve_settings({"": {"data-dir": str(tmp_path)}, **SIP_ONLY})
    assert settings.store_url == f"sqlite:{tmp_path / 'natkit.db'}"
    async with asyncio.timeout(30):
        async with ServeRunner(OsStack(), settings) as first:
            await _register_at(first, 40998)
        async with ServeRunner(OsStack(), settings) as second:
            assert second.sip_view is not None
            await second.sip_view.refresh()
            assert [r["aor"] for r in second.status()["registrations"]] == ["sip:alice@localhost"]


async def test_two_runners_on_one_redis_store_share_registrations(redis_url: str) -> None:
    settings = build_serve_settings({"store": {"url": redis_url}, **SIP_ONLY})
    async with asyncio.timeout(30):
        async with ServeRunner(OsStack(), settings) as one, ServeRunner(OsStack(), settings) as two:
            await _register_at(one, 40997)
            assert two.sip_view is not None
            await two.sip_view.refresh()
            assert two.status()["counts"]["registrations"] == 1
            assert two.status()["store"].startswith("redis://")
