"""``natkit call SIP-URI`` and ``natkit answer``: natkit's user agent on the command line.

``natkit call`` places one call (:class:`natkit.ua.aio.UserAgent`): it
learns its RTP address from ``--stun`` when given, sends the INVITE to
``--proxy`` (or the URI's host), plays ``--tone``/``--play`` for
``--duration`` seconds once the call is up, records what it hears to
``--record``, hangs up and prints the outcome. ``natkit answer`` registers
``--register`` (Outbound) and answers calls, playing and recording the same
way, hanging up after ``--duration`` (or when the caller does), and exits
after ``--calls`` calls (0: until SIGINT/SIGTERM).

Each call's phases (dialling, 100/180, established with the media path,
re-offers, ended) are printed as they happen (JSON lines with ``--json``).
Exit codes: 0 the call was established and ended; 1 it failed or was
refused (the status is printed); 2 bad arguments; 3 no answer in
``--timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from natkit.addr import Endpoint, parse_endpoint
from natkit.errors import NatkitError
from natkit.media.tone import dominant_frequencies
from natkit.media.wav import WavFormatError, read_wav_frames, write_wav
from natkit.net.loop import run
from natkit.net.os_stack import OsStack
from natkit.sdp.offer_answer import SrtpPolicy
from natkit.sip.aio.resolve import SipResolver
from natkit.sip.aio.server import literal_target
from natkit.sip.flow import SipTransport, Target
from natkit.sip.uri import SipUri, parse_uri
from natkit.ua.aio import Call, CallPhase, MediaSource, UserAgent, UserAgentSettings

__all__ = ["EXIT_FAILED", "EXIT_NO_ANSWER", "answer_command", "call_command"]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_ANSWER = 3

_console = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True)

_STYLE = {
    CallPhase.DIALLING: "cyan",
    CallPhase.TRYING: "cyan",
    CallPhase.RINGING: "yellow",
    CallPhase.INCOMING: "yellow",
    CallPhase.ESTABLISHED: "green",
    CallPhase.ENDED: "blue",
    CallPhase.FAILED: "red",
}


def _usage(message: str) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}")
    return typer.Exit(EXIT_USAGE)


def _sip_uri(text: str, what: str) -> SipUri:
    try:
        uri = parse_uri(text if ":" in text and not text[0].isdigit() else f"sip:{text}")
    except NatkitError as exc:
        raise _usage(f"{what}: {exc}") from None
    if not isinstance(uri, SipUri):
        raise _usage(f"{what} must be a sip: URI")
    return uri


def _source(play: Path | None, tone: float | None) -> MediaSource:
    if play is not None and tone is not None:
        raise _usage("--play and --tone exclude each other")
    if tone is not None:
        if not 0 < tone < 4000:
            raise _usage("--tone must be between 0 and 4000 Hz (8 kHz sampling)")
        return MediaSource(tone_hz=tone)
    if play is not None:
        try:
            return MediaSource(frames=read_wav_frames(play))
        except (OSError, WavFormatError) as exc:
            raise _usage(f"--play: {exc}") from None
    return MediaSource()


def _endpoint(text: str | None, default_port: int, what: str) -> Endpoint | None:
    if text is None:
        return None
    try:
        return parse_endpoint(text, default_port)
    except ValueError as exc:
        raise _usage(f"{what}: {exc}") from None


def _free_port(ip: str) -> int:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port


async def _target_of(uri: SipUri) -> Target:
    literal = literal_target(uri)
    if literal is not None:
        return literal
    targets = SipResolver().targets_for_uri(uri)
    try:
        first = await targets.__anext__()
    except StopAsyncIteration:
        raise NatkitError(f"no SIP server found for {uri}") from None
    finally:
        await targets.aclose()
    return first.target


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def progress(self, call: Call, text: str) -> None:
        if self.as_json:
            self.line(
                {"event": "progress", "call_id": call.call_id, "phase": call.phase, "text": text}
            )
        else:
            style = _STYLE.get(call.phase, "white")
            _console.print(f"[{style}]{call.phase.value:>11}[/{style}]  {text}")

    def line(self, fields: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(fields, default=str) + "\n")
        sys.stdout.flush()

    def info(self, text: str) -> None:
        if not self.as_json:
            _console.print(f"[dim]{text}[/dim]")


def _result(call: Call, record: Path | None) -> dict[str, Any]:
    recording = call.recording()
    heard = dominant_frequencies(recording) if len(recording) else []
    media = call.media
    return {
        "event": "result",
        "call_id": call.call_id,
        "remote": call.remote,
        "established": call.established.is_set(),
        "path": None if call.path is None else call.path.value,
        "media": None if call.plan is None else call.plan.describe(),
        "srtp": _srtp_suite(call),
        "status": None if call.end is None else call.end.status,
        "reason": None if call.end is None else call.end.reason,
        "recorded_seconds": round(len(recording) / 8000, 2),
        "received_packets": 0 if media is None else media.received_packets,
        "dropped_datagrams": 0 if media is None else media.dropped,
        "heard_hz": [round(float(f)) for f in heard][:3],
        "record": None if record is None else str(record),
    }


class SrtpMode(enum.StrEnum):
    """``--srtp``: how media is protected (RFC 4568 SDES keys, RFC 3711)."""

    OFF = "off"
    OPTIONAL = "optional"
    MANDATORY = "mandatory"

    @property
    def policy(self) -> SrtpPolicy:
        return {
            SrtpMode.OFF: SrtpPolicy.NONE,
            SrtpMode.OPTIONAL: SrtpPolicy.OPTIONAL,
            SrtpMode.MANDATORY: SrtpPolicy.REQUIRED,
        }[self]


SrtpOption = Annotated[
    SrtpMode,
    typer.Option(
        "--srtp",
        help="SRTP with SDES keys (RFC 4568): off, optional (offer keys, fall back to "
        "RTP) or mandatory (RTP/SAVP; refuse calls without keys).",
    ),
]


def _srtp_suite(call: Call) -> str | None:
    """The SRTP suite the call's media used, or None (plain RTP)."""
    media = call.media
    stream = media.stream if media is not None else None
    return stream.srtp.suite if stream is not None and stream.srtp is not None else None


def _print_result(printer: _Printer, result: dict[str, Any]) -> None:
    if printer.as_json:
        printer.line(result)
        return
    keys = ("path", "media", "srtp", "status", "reason", "received_packets", "heard_hz", "record")
    for key in keys:
        if result.get(key) is not None:
            _console.print(f"  {key.replace('_', ' ')}: {result[key]}")


def _save(call: Call, record: Path | None) -> None:
    if record is not None:
        write_wav(record, call.recording())


def call_command(
    uri: Annotated[str, typer.Argument(help="Whom to call: sip:bob@example.org or sip:bob@IP.")],
    play: Annotated[
        Path | None, typer.Option("--play", help="A WAV file to play (looped).")
    ] = None,
    tone: Annotated[float | None, typer.Option("--tone", help="Play a sine of HZ.")] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Record what we hear to this WAV file.")
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Seconds to stay in the call once it is up.")
    ] = 5.0,
    proxy: Annotated[
        str | None, typer.Option("--proxy", help="Outbound proxy (sip:IP[:PORT] or IP[:PORT]).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="Our AoR or user name (default: natkit).")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Digest password for 401/407.")
    ] = None,
    stun: Annotated[
        str | None, typer.Option("--stun", help="STUN server HOST:PORT for the RTP address.")
    ] = None,
    srtp: SrtpOption = SrtpMode.OFF,
    bind: Annotated[
        str | None, typer.Option("--bind", help="Local IP[:PORT] for SIP (default: the route's).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Call SIP-URI, play a tone or WAV, record, hang up after --duration."""
    target_uri = _sip_uri(uri, "SIP-URI")
    source = _source(play, tone)
    proxy_uri = _sip_uri(proxy, "--proxy") if proxy else None
    stun_ep = _endpoint(stun, 3478, "--stun")
    local = _endpoint(bind, 0, "--bind")
    if duration < 0 or timeout <= 0:
        raise _usage("--duration and --timeout must be positive")
    aor = _sip_uri(user or "natkit@invalid", "--user")
    if aor.user is None:
        aor = SipUri(scheme="sip", host="invalid", user=aor.host)
    printer = _Printer(as_json)
    try:
        code = run(
            _call(
                target_uri,
                aor=aor,
                source=source,
                record=record,
                duration=duration,
                proxy=proxy_uri,
                password=password,
                stun=stun_ep,
                srtp=srtp.policy,
                local=local,
                timeout=timeout,
                printer=printer,
            )
        )
    except (NatkitError, OSError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(code)


async def _call(
    uri: SipUri,
    *,
    aor: SipUri,
    source: MediaSource,
    record: Path | None,
    duration: float,
    proxy: SipUri | None,
    password: str | None,
    stun: Endpoint | None,
    srtp: SrtpPolicy,
    local: Endpoint | None,
    timeout: float,
    printer: _Printer,
) -> int:
    stack = OsStack()
    target = await _target_of(proxy or uri)
    ip = local.host if local is not None else await stack.source_address_for(target.remote)
    port = local.port if local is not None and local.port else _free_port(ip)
    settings = UserAgentSettings(
        aor=aor,
        local_ip=ip,
        sip_port=port,
        transport=target.transport,
        proxy=target.remote if proxy is not None or literal_target(uri) is None else None,
        username=aor.user if password is not None else None,
        password=password,
        stun_server=stun,
        srtp=srtp,
        source=source,
    )
    async with UserAgent(stack, settings, on_progress=printer.progress) as ua:
        call = await ua.call(uri)
        established = asyncio.ensure_future(call.established.wait())
        ended = asyncio.ensure_future(call.ended.wait())
        done, _ = await asyncio.wait(
            {established, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            await ua.hangup(call)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await call.ended.wait()
            established.cancel()
            ended.cancel()
            _print_result(printer, _result(call, record))
            return EXIT_NO_ANSWER
        if call.established.is_set() and not call.ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    await call.ended.wait()
            if not call.ended.is_set():
                await ua.hangup(call)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        await call.ended.wait()
        established.cancel()
        ended.cancel()
        _save(call, record)
        _print_result(printer, _result(call, record))
        return 0 if call.established.is_set() else EXIT_FAILED


def answer_command(
    register: Annotated[
        str, typer.Option("--register", help="The AoR to register and answer, sip:bob@domain.")
    ],
    password: Annotated[str, typer.Option("--password", help="Digest password.")],
    registrar: Annotated[
        str | None,
        typer.Option("--registrar", help="Registrar IP[:PORT] (default: the AoR's domain)."),
    ] = None,
    play: Annotated[
        Path | None, typer.Option("--play", help="A WAV file to play (looped).")
    ] = None,
    tone: Annotated[float | None, typer.Option("--tone", help="Play a sine of HZ.")] = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Record what we hear to this WAV file.")
    ] = None,
    duration: Annotated[
        float, typer.Option("--duration", help="Hang up this many seconds after answering.")
    ] = 30.0,
    calls: Annotated[
        int, typer.Option("--calls", help="Exit after this many calls (0: run until stopped).")
    ] = 1,
    stun: Annotated[
        str | None, typer.Option("--stun", help="STUN server HOST:PORT for the RTP address.")
    ] = None,
    srtp: SrtpOption = SrtpMode.OFF,
    bind: Annotated[
        str | None, typer.Option("--bind", help="Local IP[:PORT] for SIP (default: the route's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Register --register and auto-answer calls, playing and recording."""
    aor = _sip_uri(register, "--register")
    if aor.user is None:
        raise _usage("--register needs a user part (sip:bob@example.org)")
    source = _source(play, tone)
    registrar_ep = _endpoint(registrar, 5060, "--registrar")
    stun_ep = _endpoint(stun, 3478, "--stun")
    local = _endpoint(bind, 0, "--bind")
    if calls < 0 or duration < 0:
        raise _usage("--calls and --duration must not be negative")
    printer = _Printer(as_json)
    try:
        code = run(
            _answer(
                aor,
                password=password,
                registrar=registrar_ep,
                source=source,
                record=record,
                duration=duration,
                calls=calls,
                stun=stun_ep,
                srtp=srtp.policy,
                local=local,
                printer=printer,
            )
        )
    except (NatkitError, OSError) as exc:
        _err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAILED) from None
    raise typer.Exit(code)


async def _answer(
    aor: SipUri,
    *,
    password: str,
    registrar: Endpoint | None,
    source: MediaSource,
    record: Path | None,
    duration: float,
    calls: int,
    stun: Endpoint | None,
    srtp: SrtpPolicy,
    local: Endpoint | None,
    printer: _Printer,
) -> int:
    stack = OsStack()
    if registrar is None:
        registrar = (await _target_of(SipUri(scheme="sip", host=aor.host))).remote
    ip = local.host if local is not None else await stack.source_address_for(registrar)
    port = local.port if local is not None and local.port else _free_port(ip)
    settings = UserAgentSettings(
        aor=aor,
        local_ip=ip,
        sip_port=port,
        transport=SipTransport.UDP,
        proxy=registrar,
        register=True,
        username=aor.user,
        password=password,
        stun_server=stun,
        srtp=srtp,
        source=source,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    ua = UserAgent(stack, settings, on_progress=printer.progress)
    await ua.start()
    if printer.as_json:
        printer.line({"event": "registered", "aor": str(aor), "sip": str(ua.sip_endpoint)})
    else:
        _console.print(f"[green]registered[/green] {aor} at {registrar}, SIP on {ua.sip_endpoint}")
    served = 0
    failed = False
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while calls == 0 or served < calls:
            getter = asyncio.ensure_future(ua.incoming.get())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            call = getter.result()
            await _serve(ua, call, duration, stop)
            served += 1
            _save(call, record)
            result = _result(call, record)
            _print_result(printer, result)
            failed = failed or not call.established.is_set()
    finally:
        stopper.cancel()
        await ua.close()
    return EXIT_FAILED if failed else 0


async def _serve(ua: UserAgent, call: Call, duration: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(30.0):
            await asyncio.wait(
                {
                    asyncio.ensure_future(call.established.wait()),
                    asyncio.ensure_future(call.ended.wait()),
                },
                return_when=asyncio.FIRST_COMPLETED,
            )
    if not call.ended.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                ender = asyncio.ensure_future(call.ended.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait({ender, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    ender.cancel()
                    stopper.cancel()
    if not call.ended.is_set():
        await ua.hangup(call)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await call.ended.wait()
