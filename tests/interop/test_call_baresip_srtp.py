"""SRTP between baresip (its srtp module, ``mediaenc=srtp-mand``: RTP/SAVP
with SDES keys, RFC 4568) and natkit's user agent with SRTP required,
through natkit sip-server, both directions, two-way audio verified by
content: each side can only hear the other if it decrypts what it gets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.sdp.offer_answer import SrtpPolicy
from natkit.ua.aio.agent import Call, UserAgent

from . import call_peers as cp
from . import sip_peers as sp
from .conftest import LOOPBACK, free_ports, require_program
from .test_sip_natkit import natkit_sip_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

DOMAIN = sp.DOMAIN


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_program("baresip", "baresip-core")


@pytest.mark.parametrize("natkit_calls", [True, False], ids=["natkit-calls", "baresip-calls"])
def test_srtp_calls_between_baresip_and_natkit_carry_both_tones(
    tmp_path: Path, natkit_calls: bool
) -> None:
    with natkit_sip_server(tmp_path / "natkit", "--no-auth") as server:
        peer = cp.baresip_registered(tmp_path, server, "bob", srtp=True)
        try:
            (ua_port,) = free_ports(1, hosts=(LOOPBACK,))
            settings = cp.natkit_settings(
                "alice",
                Endpoint(LOOPBACK, server.port),
                sip_port=ua_port,
                register=not natkit_calls,
                srtp=SrtpPolicy.REQUIRED,
            )

            async def scenario(ua: UserAgent) -> Call:
                if natkit_calls:
                    call = await ua.call(f"sip:bob@{DOMAIN}")
                else:
                    await asyncio.to_thread(peer.control.command, "dial", f"sip:alice@{DOMAIN}")
                    async with asyncio.timeout(10):
                        call = await ua.incoming.get()
                await cp.talk(call, hang_up=ua)
                return call

            result = cp.run_natkit_ua(settings, scenario)
            assert any("SRTP AES_CM_128_HMAC_SHA1" in line for line in result.history), (
                result.history
            )
            peer.control.wait_event("CALL_CLOSED", timeout=5)
            heard_by_baresip = cp.baresip_recording(peer)
            cp.assert_heard(result.recording, far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit")
            cp.assert_heard(heard_by_baresip, far_hz=cp.NATKIT_HZ, own_hz=cp.PEER_HZ, who="baresip")
        finally:
            peer.stop()
