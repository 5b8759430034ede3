"""Calls with real peers: baresip playing a WAV tone and recording what it
hears, natkit's UserAgent in-process, and sipp streaming RTP.

Theory of operation. baresip 1.0.0's ``aufile`` module is an audio *source*
only (it reads a WAV file at ``ausrc_srate``/``ausrc_channels``, 8 kHz mono
here); what baresip hears is recorded by the ``sndfile`` audio filter, which
dumps each call's decoded audio to ``dump-<peer>-dec.wav`` in ``snd_path``
(and the encoded side to ``-enc.wav``); the WAV header is completed when the
call closes. baresip runs headless from :func:`start_baresip_caller` with the
config below, PIDs kept and stopped by PID (sip_peers.py).

natkit's side is a :class:`natkit.ua.aio.agent.UserAgent` on an
:class:`~natkit.net.os_stack.OsStack`, run in the test's own event loop
(:func:`run_natkit_ua`), playing a tone and returning what it recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from natkit.addr import Endpoint
from natkit.media.g711 import encode_ulaw
from natkit.media.pcm import PcmArray
from natkit.media.tone import RecordingCheck, check_recording, sine_tone
from natkit.media.wav import read_wav, write_wav
from natkit.net.netns.system import in_namespace, netns_exec_argv
from natkit.net.os_stack import OsStack
from natkit.sdp.offer_answer import SrtpPolicy
from natkit.sip.uri import SipUri
from natkit.ua.aio.agent import Call, UserAgent, UserAgentSettings
from natkit.ua.aio.media import MediaSource

from . import sip_peers as sp
from .conftest import LOOPBACK, ManagedProcess, require_program, start_process

if TYPE_CHECKING:
    from .test_sip_natkit import NatkitSip

NATKIT_HZ = 440.0
"""The tone natkit's UA plays."""
PEER_HZ = 1000.0
"""The tone the third-party peer plays."""
TALK_SECONDS = 3.0
"""How long each call carries audio before it is hung up."""

BARESIP_CALL_CONFIG = """\
# natkit interop: baresip plays a WAV file (aufile) and records (sndfile)
poll_method epoll
sip_listen {host}:{sip_port}
net_interface {host}
audio_source aufile,{source}
audio_player aubridge,nowhere
audio_alert aubridge,nowhere
ausrc_srate 8000
ausrc_channels 1
auplay_srate 8000
auplay_channels 1
rtp_ports {rtp_low}-{rtp_high}
module_path /usr/lib/baresip/modules
module g711.so
module aufile.so
module aubridge.so
module sndfile.so
module ctrl_tcp.so
module_tmp uuid.so
module_app account.so
module_app menu.so
ctrl_tcp_listen {host}:{ctrl_port}
snd_path {dir}
"""


def write_tone_wav(path: Path, frequency: float, seconds: float = 20.0) -> Path:
    """An 8 kHz mono 16-bit WAV file holding a sine of ``frequency``."""
    write_wav(path, sine_tone(frequency, duration=seconds, amplitude=0.5))
    return path


def start_baresip_caller(
    workdir: Path,
    accounts: Sequence[str],
    *,
    host: str = LOOPBACK,
    tone_hz: float = PEER_HZ,
    lifetime_s: int = 40,
    netns: str | None = None,
    srtp: bool = False,
) -> sp.BaresipPeer:
    """baresip playing a tone file through aufile and dumping calls with sndfile.

    ``netns``: run it inside that network namespace (``ip netns exec``);
    ``srtp``: load its srtp module (accounts choose ``mediaenc=srtp-mand``)."""
    baresip = require_program("baresip", "baresip-core")
    config_dir = workdir / "baresip"
    config_dir.mkdir(parents=True, exist_ok=True)
    source = write_tone_wav(workdir / "baresip-tone.wav", tone_hz)
    sip_port, _tls, ctrl_port = sp._port_run(3)
    rtp_low = 40000 + (sip_port % 1000) * 10
    (config_dir / "config").write_text(
        BARESIP_CALL_CONFIG.format(
            host=host,
            sip_port=sip_port,
            ctrl_port=ctrl_port,
            dir=config_dir,
            source=source,
            rtp_low=rtp_low,
            rtp_high=rtp_low + 9,
        )
    )
    if srtp:
        with (config_dir / "config").open("a") as config:
            config.write("module srtp.so\n")
    (config_dir / "accounts").write_text("".join(f"{line}\n" for line in accounts))
    (config_dir / "contacts").write_text("")
    argv = [baresip, "-4", "-f", str(config_dir), "-t", str(lifetime_s)]
    if netns is not None:
        argv = netns_exec_argv(netns, argv)
    proc = start_process("baresip", argv, workdir)
    try:
        sock = _connect_ctrl(proc, host, ctrl_port, netns)
    except BaseException:
        proc.stop()
        raise
    return sp.BaresipPeer(sip_port, proc, sp.BaresipControl(sock), config_dir)


def _connect_ctrl(proc: ManagedProcess, host: str, port: int, netns: str | None) -> socket.socket:
    """A connection to baresip's ctrl_tcp, made from ``netns`` when given (bounded retries)."""

    def connect() -> socket.socket:
        return socket.create_connection((host, port), timeout=0.5)

    deadline = time.monotonic() + sp.READY_TIMEOUT
    while True:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"baresip exited with {proc.popen.returncode}:\n{proc.log()}")
        try:
            return connect() if netns is None else in_namespace(netns, connect)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"baresip ctrl_tcp never listened:\n{proc.log()}") from None
            time.sleep(0.05)


def baresip_recording(peer: sp.BaresipPeer, timeout: float = 5.0) -> PcmArray:
    """What baresip heard: its sndfile ``*-dec.wav`` dump (8 kHz mono; empty
    when baresip received no audio and left only the WAV header)."""
    found: list[Path] = []

    def complete() -> bool:
        found[:] = sorted(peer.config_dir.glob("dump-*-dec.wav"))
        return bool(found) and found[-1].stat().st_size > 44

    if not sp.wait_until(complete, timeout) and not found:
        names = sorted(p.name for p in peer.config_dir.iterdir())
        raise AssertionError(f"baresip wrote no decoded dump (files: {names})")
    return read_wav(found[-1])


def natkit_settings(
    user: str,
    proxy: Endpoint | None,
    *,
    sip_port: int,
    register: bool,
    tone_hz: float = NATKIT_HZ,
    domain: str = sp.DOMAIN,
    local_ip: str = LOOPBACK,
    srtp: SrtpPolicy = SrtpPolicy.NONE,
) -> UserAgentSettings:
    return UserAgentSettings(
        aor=SipUri(scheme="sip", host=domain, user=user),
        local_ip=local_ip,
        sip_port=sip_port,
        proxy=proxy,
        register=register,
        source=MediaSource(tone_hz=tone_hz),
        srtp=srtp,
    )


@dataclass
class NatkitCallResult:
    """natkit's side of one call: its recording and the media path chosen."""

    recording: PcmArray
    path: str | None
    history: list[str]


async def talk(call: Call, seconds: float = TALK_SECONDS, *, hang_up: UserAgent | None) -> None:
    """Wait for the call to be established, let audio flow, hang up if asked."""
    async with asyncio.timeout(10.0):
        await call.established.wait()
    await asyncio.sleep(seconds)
    if hang_up is not None:
        await hang_up.hangup(call)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3.0):
                await call.ended.wait()


def run_natkit_ua(
    settings: UserAgentSettings,
    scenario: Callable[[UserAgent], Awaitable[Call]],
    *,
    timeout: float = 30.0,
) -> NatkitCallResult:
    """Run a UserAgent in a fresh event loop through ``scenario``; returns its call."""

    async def main() -> NatkitCallResult:
        async with asyncio.timeout(timeout):
            async with UserAgent(OsStack(), settings) as ua:
                call = await scenario(ua)
                return NatkitCallResult(
                    np.array(call.recording(), copy=True),
                    None if call.path is None else str(call.path),
                    list(call.history),
                )

    return asyncio.run(main())


def assert_heard(samples: PcmArray, *, far_hz: float, own_hz: float, who: str) -> RecordingCheck:
    """The far tone is in ``who``'s recording (two-way audio by content)."""
    check = check_recording(samples, far_hz=far_hz, own_hz=own_hz)
    assert check.heard_far, f"{who} did not hear {far_hz:g} Hz: {check}"
    return check


# -- sipp with RTP ----------------------------------------------------------------------

SIPP_RTP_SCENARIO = "uac_rtp_stream.xml"
SIPP_STREAM_FILE = "sipp_tone.ulaw"
"""The file ``uac_rtp_stream.xml`` streams (relative to sipp's working directory)."""


def write_sipp_stream(workdir: Path, frequency: float = PEER_HZ, seconds: float = 4.0) -> Path:
    """Raw G.711 u-law (payload type 0) of a sine: what sipp's rtp_stream sends as is."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / SIPP_STREAM_FILE
    path.write_bytes(encode_ulaw(sine_tone(frequency, duration=seconds, amplitude=0.5)))
    return path


def baresip_registered(
    workdir: Path, server: NatkitSip, user: str, *, srtp: bool = False
) -> sp.BaresipPeer:
    """baresip registered with Outbound at natkit sip-server ``server`` as
    ``user``; with ``srtp``, SRTP mandatory
    (``mediaenc=srtp-mand``)."""
    outbound = f"sip:{server.target};transport=udp"
    account = sp.account_line(user, sp.DOMAIN, outbound=outbound)
    if srtp:
        account += ";mediaenc=srtp-mand"
    peer = start_baresip_caller(workdir, [account], srtp=srtp)
    try:
        aor = f"sip:{user}@{sp.DOMAIN}"
        assert sp.wait_until(lambda: bool(server.bindings(aor)), 8), peer.process.log()
    except BaseException:
        peer.stop()
        raise
    return peer
