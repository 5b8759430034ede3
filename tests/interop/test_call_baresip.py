"""Calls between baresip and natkit's user agent through ``natkit sip-server``,
with two-way G.711 audio verified by content.

baresip plays a 1000 Hz WAV file through its aufile module and records what
it hears with sndfile; natkit's UserAgent (in-process) plays 440 Hz and
records. Each recording must hold the far side's tone (check_recording).
Both UAs register to natkit's registrar (baresip with SIP Outbound), so
the INVITE goes through natkit's proxy in both directions. The last test
runs the ``natkit call`` command (``--play``/``--record`` WAV files).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.media.wav import read_wav
from natkit.ua.aio.agent import Call, UserAgent

from . import call_peers as cp
from . import sip_peers as sp
from .conftest import LOOPBACK, free_ports, natkit_command, require_program, run_program
from .test_sip_natkit import natkit_sip_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

DOMAIN = sp.DOMAIN


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_program("baresip", "baresip-core")


def _check_both(result: cp.NatkitCallResult, peer: sp.BaresipPeer) -> None:
    peer.control.wait_event("CALL_CLOSED", timeout=5)
    heard_by_baresip = cp.baresip_recording(peer)
    cp.assert_heard(result.recording, far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit")
    cp.assert_heard(heard_by_baresip, far_hz=cp.NATKIT_HZ, own_hz=cp.PEER_HZ, who="baresip")


def test_baresip_calls_natkit_ua_through_natkit_proxy(tmp_path: Path) -> None:
    with natkit_sip_server(tmp_path / "natkit", "--no-auth") as server:
        peer = cp.baresip_registered(tmp_path, server, "bob")
        try:
            (ua_port,) = free_ports(1, hosts=(LOOPBACK,))
            settings = cp.natkit_settings(
                "alice", Endpoint(LOOPBACK, server.port), sip_port=ua_port, register=True
            )

            async def scenario(ua: UserAgent) -> Call:
                await asyncio.to_thread(peer.control.command, "dial", f"sip:alice@{DOMAIN}")
                async with asyncio.timeout(10):
                    call = await ua.incoming.get()
                await cp.talk(call, hang_up=ua)
                return call

            result = cp.run_natkit_ua(settings, scenario)
            _check_both(result, peer)
        finally:
            peer.stop()


def test_natkit_ua_calls_baresip_through_natkit_proxy(tmp_path: Path) -> None:
    with natkit_sip_server(tmp_path / "natkit", "--no-auth") as server:
        peer = cp.baresip_registered(tmp_path, server, "bob")
        try:
            (ua_port,) = free_ports(1, hosts=(LOOPBACK,))
            settings = cp.natkit_settings(
                "alice", Endpoint(LOOPBACK, server.port), sip_port=ua_port, register=False
            )

            async def scenario(ua: UserAgent) -> Call:
                call = await ua.call(f"sip:bob@{DOMAIN}")
                await cp.talk(call, hang_up=ua)
                return call

            result = cp.run_natkit_ua(settings, scenario)
            _check_both(result, peer)
        finally:
            peer.stop()


def test_natkit_call_command_calls_baresip(tmp_path: Path) -> None:
    """``natkit call`` (the command) through the proxy to baresip, playing a
    WAV file and recording to one."""
    tone = cp.write_tone_wav(tmp_path / "natkit-tone.wav", cp.NATKIT_HZ)
    record = tmp_path / "heard.wav"
    with natkit_sip_server(tmp_path / "natkit", "--no-auth") as server:
        peer = cp.baresip_registered(tmp_path, server, "bob")
        try:
            argv = [*natkit_command(), "call", f"sip:bob@{DOMAIN}", "--proxy", server.target]
            argv += ["--user", f"sip:alice@{DOMAIN}", "--play", str(tone)]
            argv += ["--record", str(record), "--duration", str(cp.TALK_SECONDS)]
            argv += ["--bind", LOOPBACK, "--timeout", "10", "--json"]
            result = run_program(argv, timeout=30)
            assert result.returncode == 0, result.stdout + result.stderr
            peer.control.wait_event("CALL_CLOSED", timeout=5)
            heard_by_baresip = cp.baresip_recording(peer)
        finally:
            peer.stop()
    cp.assert_heard(read_wav(record), far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit call")
    cp.assert_heard(heard_by_baresip, far_hz=cp.NATKIT_HZ, own_hz=cp.PEER_HZ, who="baresip")
