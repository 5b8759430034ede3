"""sipp with RTP against natkit's user agent as UAS.

sipp (3.6.1, built with RTPSTREAM) calls natkit's UserAgent (in-process,
auto-answer) with ``data/sipp/uac_rtp_stream.xml``: INVITE offering PCMU on
its rtpstream port, ACK, then ``<exec rtp_stream="sipp_tone.ulaw,-1,0"/>``
streams a 1000 Hz tone (raw u-law written by the test) for 3 s, BYE.
natkit records it and the test finds the tone by spectrum. The second test
does the same through ``natkit sip-server`` (digest registration) to the
``natkit answer`` command, which writes its recording with ``--record``.

One direction only: sipp 3.6.1 cannot record or check what it receives
(no rtpcheck; ``-rtp_echo`` echoes on the [media_port] socket, not the
rtpstream one, and an echo would prove nothing about sipp's side). natkit's
tone back to a real peer is checked by content in test_call_baresip.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from natkit.media.wav import read_wav
from natkit.ua.aio.agent import Call, UserAgent

from . import call_peers as cp
from . import sip_peers as sp
from .conftest import LOOPBACK, free_ports, natkit_command, require_program, start_process
from .test_sip_natkit import PASSWORD, natkit_sip_server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _programs() -> None:
    require_program("sipp", "sip-tester")


def test_sipp_rtp_stream_call_to_natkit_ua_is_recorded(tmp_path: Path) -> None:
    workdir = tmp_path / "sipp"
    cp.write_sipp_stream(workdir)
    (ua_port,) = free_ports(1, hosts=(LOOPBACK,))
    # no proxy: sipp sends straight to the UA, which answers on its own socket
    settings = cp.natkit_settings("alice", None, sip_port=ua_port, register=False)
    results: list[sp.SippResult] = []

    async def scenario(ua: UserAgent) -> Call:
        sipp = asyncio.ensure_future(
            asyncio.to_thread(
                sp.run_sipp,
                cp.SIPP_RTP_SCENARIO,
                workdir,
                target=f"{LOOPBACK}:{ua_port}",
                calls=1,
                service="alice",
                timeout_s=15,
            )
        )
        async with asyncio.timeout(10):
            call = await ua.incoming.get()
        await cp.talk(call, seconds=0, hang_up=None)
        results.append(await sipp)
        async with asyncio.timeout(5):
            await call.ended.wait()
        return call

    result = cp.run_natkit_ua(settings, scenario)
    (sipp,) = results
    assert sipp.ok, sipp.stdout[-3000:] + sipp.stderr[-3000:]
    check = cp.assert_heard(result.recording, far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit")
    assert check.far_seconds >= 2.0, check  # most of sipp's 3 s stream


def test_sipp_rtp_stream_call_to_natkit_answer_through_proxy(tmp_path: Path) -> None:
    """The same through ``natkit sip-server`` to the ``natkit answer`` command
    (registered with digest), which records to a WAV file and exits after one call."""
    workdir = tmp_path / "sipp"
    cp.write_sipp_stream(workdir)
    record = tmp_path / "heard.wav"
    tone = cp.write_tone_wav(tmp_path / "natkit-tone.wav", cp.NATKIT_HZ)
    with natkit_sip_server(tmp_path / "natkit", users=["alice"]) as server:
        (ua_port,) = free_ports(1, hosts=(LOOPBACK,))
        argv = [*natkit_command(), "answer", "--register", f"sip:alice@{sp.DOMAIN}"]
        argv += ["--password", PASSWORD, "--registrar", server.target, "--calls", "1"]
        argv += ["--play", str(tone), "--record", str(record), "--duration", "10"]
        argv += ["--bind", f"{LOOPBACK}:{ua_port}", "--json"]
        answer = start_process("natkit-answer", argv, tmp_path)
        try:
            aor = f"sip:alice@{sp.DOMAIN}"
            assert sp.wait_until(lambda: bool(server.bindings(aor)), 8), answer.log()
            sipp = sp.run_sipp(
                cp.SIPP_RTP_SCENARIO,
                workdir,
                target=server.target,
                calls=1,
                service="alice",
                timeout_s=15,
            )
            assert sipp.ok, sipp.stdout[-3000:] + sipp.stderr[-3000:] + answer.log()[-3000:]
            answer.popen.wait(10)  # --calls 1: it exits once the call ended
        finally:
            status = answer.stop()
        assert status == 0, answer.log()[-3000:]
    check = cp.assert_heard(read_wav(record), far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit")
    assert check.far_seconds >= 2.0, check
