"""Lab scenario, namespace lab: two ICE agents behind real NATs, with real packets.

The same scenario as :mod:`natkit.lab.ice_connect`, in an open
:class:`~natkit.net.netns.Lab`: natkit's STUN server and TURN server(s)
(UDP/TCP 3478, TLS 443) on public hosts of the lab internet (203.0.113.0/24),
and for each NAT named on either side a NAT router (natkit's NAT box on TUN
devices, or the kernel's masquerade) with one host behind it. Each server
and each agent runs on an asyncio loop of its own inside its host's
namespace (:class:`~natkit.lab.turn.NamespaceLoop`) on the OS stack;
signalling hands candidates from one loop to the other
(``call_soon_threadsafe``), so the only path between the agents is the lab's
network.

One lab serves many pairs (:meth:`IceNamespaceLab.connect`): the 4x4 grid of
the ECC report's NAT types needs eight NATs and two servers, built once. Each
pair gets fresh agents, hence fresh sockets and fresh NAT mappings.

:meth:`IceNamespaceLab.call` is the same pair as a real call (RFC 6314
§5.2.2.3): two natkit user agents (:class:`~natkit.ua.aio.UserAgent`, ICE
with the lab's STUN and TURN servers) register through their NATs at
natkit's SIP server (:func:`~natkit.lab.sip_phone.lab_registrar`, started on
a public host ``sip`` the first time a call is made), the one behind NAT a
calls the one behind NAT b, each plays its own tone for ``seconds`` and the
other's recording must hold it (:func:`~natkit.media.tone.check_recording`);
the path is what the caller's ICE agent selected when the call ended.

:meth:`IceNamespaceLab.relay_failover` is the relay case of issue 6's
failover: mid-session the TURN server in use is killed (its loop closes
every socket and connection) and media, 20 ms datagrams both ways, must
resume over the hot spare; it reports the longest silence each side saw.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from natkit.addr import Endpoint
from natkit.errors import NatkitError
from natkit.ice.aio.agent import AsyncIceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.config import IceConfig
from natkit.ice.gather_config import GatherConfig
from natkit.lab.ice_connect import (
    ConnectResult,
    describe_pair,
    expected_path_for,
    fill_result,
    ice_servers,
    path_of,
    start_relay,
    start_stun_server,
    stop_turn_server,
)
from natkit.lab.matrix_media import TONE_A, TONE_B, verdict
from natkit.lab.sip_phone import DOMAIN, SIP_PORT, OnStack, lab_registrar
from natkit.lab.turn import NamespaceLoop
from natkit.media.tone import RecordingCheck, check_recording
from natkit.nat.box import NatBehavior, PortAssignment
from natkit.nat.presets import LINUX_MASQUERADE
from natkit.nat.types import Mapping
from natkit.net.netns import Host, Lab, NatEngine, TunNat
from natkit.net.os_stack import OsStack
from natkit.rng import seeded_rng
from natkit.sip.uri import SipUri
from natkit.stun.aio import StunServerRunner
from natkit.turn.aio.server import TurnServerRunner
from natkit.ua.aio import MediaSource, UserAgent, UserAgentSettings
from natkit.ua.aio.agent import Call
from natkit.ua.media import MediaPath

__all__ = [
    "ECC_TYPES",
    "CallOutcome",
    "FailoverOutcome",
    "IceNamespaceLab",
    "engine_behavior",
    "expected_netns_path",
    "grid",
]

T = TypeVar("T")

ECC_TYPES = ("full-cone", "restricted-cone", "port-restricted-cone", "symmetric")
"""The ECC report's four NAT types (Annex A), as natkit presets."""

STUN_PORT = 3478


def engine_behavior(engine: NatEngine) -> NatBehavior:
    """What a NAT engine does, in RFC 4787 terms (the kernel's masquerade is
    :data:`~natkit.nat.presets.LINUX_MASQUERADE`; ``random-fully`` gives each
    new flow a random port: endpoint-dependent mapping)."""
    if isinstance(engine, TunNat):
        return engine.behavior
    if engine.random_fully:
        return dataclasses.replace(
            LINUX_MASQUERADE,
            mapping=Mapping.ADDRESS_AND_PORT_DEPENDENT,
            port_assignment=PortAssignment.RANDOM,
        )
    return LINUX_MASQUERADE


def expected_netns_path(a: NatEngine, b: NatEngine) -> str:
    """DESIGN.md's matrix for two engines (see :func:`expected_path_for`)."""
    return expected_path_for(engine_behavior(a), engine_behavior(b))


@dataclass(slots=True)
class FailoverOutcome:
    """The relay failover run: the pair before and after, and the silences."""

    result: ConnectResult
    killed: str | None = None
    """The IP of the TURN server that was killed (the one the selected pair used)."""
    survivor: str | None = None
    """The TURN server the selected pair used afterwards (None: not relayed)."""
    gap_a: float = 0.0
    gap_b: float = 0.0
    """The longest silence (s) each agent saw from the kill on."""
    received_a: int = 0
    received_b: int = 0
    flowing: bool = False
    """Media still arrived at both sides in the last 100 ms of the run."""

    def to_json(self) -> dict[str, Any]:
        return {
            "connect": self.result.to_json(),
            "killed": self.killed,
            "survivor": self.survivor,
            "gap_a_s": round(self.gap_a, 3),
            "gap_b_s": round(self.gap_b, 3),
            "received_a": self.received_a,
            "received_b": self.received_b,
            "flowing": self.flowing,
        }


@dataclass(slots=True)
class CallOutcome:
    """One call of :meth:`IceNamespaceLab.call`.

    ``observed`` is the word the matrix compares: the ICE path (``direct`` or
    ``relay``) when both recordings hold the far tone over ICE, else what
    went wrong (``one-way (b hears a) (direct)``, ``no audio (relay)``,
    ``no ICE (stun+symmetric-rtp)``, ``failed: ...``)."""

    nat_a: str
    nat_b: str
    observed: str = "failed"
    path: str | None = None
    """``direct`` or ``relay``: the caller's selected pair when the call ended."""
    local_type: str | None = None
    remote_type: str | None = None
    media_a: str | None = None
    media_b: str | None = None
    """Each side's media path (``ice`` when the checks succeeded)."""
    check_a: RecordingCheck | None = None
    check_b: RecordingCheck | None = None
    setup_s: float = 0.0
    """From the INVITE to media flowing at both sides (gathering and checks included)."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        def heard(check: RecordingCheck | None) -> float | None:
            return None if check is None else round(check.far_seconds, 2)

        return {
            "nat_a": self.nat_a,
            "nat_b": self.nat_b,
            "observed": self.observed,
            "path": self.path,
            "pair": f"{self.local_type}/{self.remote_type}" if self.local_type else None,
            "media_a": self.media_a,
            "media_b": self.media_b,
            "a_heard_b_s": heard(self.check_a),
            "b_heard_a_s": heard(self.check_b),
            "setup_s": round(self.setup_s, 3),
            "error": self.error,
        }


@dataclass(slots=True)
class _Side:
    label: str
    engine: NatEngine
    host: Host
    loop: NamespaceLoop
    aio: asyncio.AbstractEventLoop | None = None


@dataclass(slots=True)
class _Pump:
    """Media at one agent: a sender every ``period`` and the arrival times."""

    agent: AsyncIceAgent
    period: float
    arrivals: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.agent.on_data = lambda _component, _data: self.arrivals.append(loop.time())
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        payload = b"\x80" + b"\x00" * 171
        while True:
            self.agent.send(1, payload)
            await asyncio.sleep(self.period)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class IceNamespaceLab:
    """Servers and NATs in an open lab (see the module docstring).

    ``sides_a``/``sides_b``: the NAT engines agent a (controlling) and agent b
    may sit behind, each built once. ``turn_servers=2`` adds a second TURN
    server (the hot spare's); agent a then gathers from the first only and
    agent b from the second only.
    """

    def __init__(
        self,
        lab: Lab,
        sides_a: Sequence[NatEngine],
        sides_b: Sequence[NatEngine],
        *,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        turn_servers: int = 1,
        seed: int = 0,
        limit: float = 1800.0,
    ) -> None:
        self.lab = lab
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.seed = seed
        self.limit = limit
        self.turn_count = turn_servers
        self._engines = {"a": list(sides_a), "b": list(sides_b)}
        self._sides: dict[tuple[str, str], _Side] = {}
        self._server_loops: list[NamespaceLoop] = []
        self._stun: StunServerRunner | None = None
        self._turns: list[TurnServerRunner] = []
        self._turn_loops: list[NamespaceLoop] = []
        self.stun_endpoint: Endpoint | None = None
        self.turn_ips: list[str] = []
        self.sip_endpoint: Endpoint | None = None
        self._sip_loop: NamespaceLoop | None = None
        self._sip_stack: contextlib.AsyncExitStack | None = None
        self._runs = 0

    # -- building -------------------------------------------------------------------

    def open(self) -> IceNamespaceLab:
        lab = self.lab
        stun_host = lab.add_public_host("stun")
        turn_hosts = [lab.add_public_host(f"turn{i + 1}") for i in range(self.turn_count)]
        self.stun_endpoint = Endpoint(stun_host.address, STUN_PORT)
        self.turn_ips = [h.address for h in turn_hosts]
        for label, engines in self._engines.items():
            for i, engine in enumerate(engines):
                if (label, engine.label) in self._sides:
                    continue
                nat = lab.add_nat(f"n{label}{i}", engine)
                host = lab.add_host(f"{label}{i}", behind=nat)
                loop = NamespaceLoop(host.netns, limit=self.limit).start()
                side = _Side(label, engine, host, loop)
                side.aio = loop.run(_running_loop())
                self._sides[(label, engine.label)] = side
        stun_loop = NamespaceLoop(stun_host.netns, limit=self.limit).start()
        self._server_loops.append(stun_loop)
        stun_endpoint = self.stun_endpoint

        self._stun = stun_loop.run(start_stun_server(OsStack(), stun_endpoint))
        for host in turn_hosts:
            turn_loop = NamespaceLoop(host.netns, limit=self.limit).start()
            self._server_loops.append(turn_loop)
            self._turn_loops.append(turn_loop)
            self._turns.append(turn_loop.run(self._start_turn(host.address)))
        return self

    async def _start_turn(self, ip: str) -> TurnServerRunner:
        return await start_relay(OsStack(), ip, tls=self.tls_server, seed=self.seed)

    def open_sip(self) -> Endpoint:
        """natkit's SIP server (registrar and proxy for :data:`DOMAIN`, open
        registration) on the public host ``sip``, once; its UDP endpoint."""
        if self.sip_endpoint is not None:
            return self.sip_endpoint
        host = self.lab.add_public_host("sip")
        loop = NamespaceLoop(host.netns, limit=self.limit).start()
        self._sip_loop = loop
        seed = self.seed

        async def start() -> contextlib.AsyncExitStack:
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(
                lab_registrar(OnStack(OsStack(), host.address), seed=seed)
            )
            return stack

        self._sip_stack = loop.run(start())
        self.sip_endpoint = Endpoint(host.address, SIP_PORT)
        return self.sip_endpoint

    def close(self) -> None:
        """Stop the servers and every loop (the lab itself is the caller's)."""
        if self._sip_loop is not None:
            if self._sip_stack is not None:
                with contextlib.suppress(NatkitError, OSError, concurrent.futures.TimeoutError):
                    self._sip_loop.run(self._sip_stack.aclose(), timeout=10.0)
            self._sip_loop.close()
        for runner, loop in zip(self._turns, self._turn_loops, strict=True):
            with contextlib.suppress(NatkitError, OSError, concurrent.futures.TimeoutError):
                loop.run(stop_turn_server(runner), timeout=10.0)
        if self._stun is not None and self._server_loops:
            stun = self._stun

            async def stop_stun() -> None:
                stun.close()
                await stun.wait_closed()

            with contextlib.suppress(NatkitError, OSError, concurrent.futures.TimeoutError):
                self._server_loops[0].run(stop_stun(), timeout=10.0)
        for side in self._sides.values():
            side.loop.close()
        for loop in self._server_loops:
            loop.close()

    def __enter__(self) -> IceNamespaceLab:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running pairs --------------------------------------------------------------

    def _side(self, label: str, engine: NatEngine) -> _Side:
        try:
            return self._sides[(label, engine.label)]
        except KeyError:
            raise NatkitError(f"no NAT {engine.label} on side {label} in this lab") from None

    def _gather_config(self, index: int, seed: int, *, tls: bool | None = None) -> GatherConfig:
        assert self.stun_endpoint is not None  # set by open()
        ips = tuple(self.turn_ips)
        if len(ips) > 1:
            ips = (ips[index],)
        use_tls = self.tls_client is not None if tls is None else tls
        stun_servers, specs = ice_servers(ips, stun=self.stun_endpoint, tls=use_tls)
        return GatherConfig(stun_servers=stun_servers, turn_servers=specs, rng=seeded_rng(seed))

    def _agents(self, a: _Side, b: _Side) -> tuple[AsyncIceAgent, AsyncIceAgent]:
        self._runs += 1
        seed = self.seed * 1000 + self._runs * 10

        def make(index: int) -> Coroutine[Any, Any, AsyncIceAgent]:
            async def build() -> AsyncIceAgent:
                return AsyncIceAgent(
                    OsStack(),
                    controlling=index == 0,
                    config=IceConfig(rng=seeded_rng(seed + index)),
                    gather_config=self._gather_config(index, seed + 5 + index),
                    tls=self.tls_client,
                )

            return build()

        return a.loop.run(make(0)), b.loop.run(make(1))

    def connect(
        self,
        engine_a: NatEngine,
        engine_b: NatEngine,
        *,
        timeout: float = 20.0,
        settle: float = 1.5,
    ) -> ConnectResult:
        """Two fresh agents behind ``engine_a`` and ``engine_b``: connect,
        settle (see :meth:`ConnectLab.connect`), one datagram each way, close."""
        a, b = self._side("a", engine_a), self._side("b", engine_b)
        agent_a, agent_b = self._agents(a, b)
        try:
            return self._connect(a, b, agent_a, agent_b, timeout=timeout, settle=settle)
        finally:
            self._close_agents(a, b, agent_a, agent_b)

    def _connect(
        self,
        a: _Side,
        b: _Side,
        agent_a: AsyncIceAgent,
        agent_b: AsyncIceAgent,
        *,
        timeout: float,
        settle: float,
    ) -> ConnectResult:
        result = ConnectResult(a.engine.label, b.engine.label, connected=False, mode="netns")
        self._signal(a, b, agent_a, agent_b)
        starts = [self._submit(a, agent_a.start()), self._submit(b, agent_b.start())]
        for fut in starts:
            fut.result(timeout)
        waits = [self._submit(a, agent_a.connect()), self._submit(b, agent_b.connect())]
        deadline = time.monotonic() + timeout
        try:
            for fut in waits:
                fut.result(max(0.0, deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            result.error = f"not connected within {timeout:g} s"
        except NatkitError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for fut in waits:
                fut.cancel()
        started = min(t for t in (agent_a.started_at, agent_b.started_at) if t is not None)
        # Read the agents on their own loops: they are live.
        a.loop.run(_fill(result, agent_a, agent_b, started))
        if result.connected and settle > 0:
            time.sleep(settle)  # see ConnectLab.connect: a late direct pair may replace a relay
            a.loop.run(_fill(result, agent_a, agent_b, started))
        if result.connected:
            result.data_ok = self._exchange(a, b, agent_a, agent_b)
        return result

    def _submit(self, side: _Side, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert side.aio is not None  # set by open()
        return asyncio.run_coroutine_threadsafe(coro, side.aio)

    def _signal(self, a: _Side, b: _Side, agent_a: AsyncIceAgent, agent_b: AsyncIceAgent) -> None:
        assert a.aio is not None and b.aio is not None

        def deliver(to: AsyncIceAgent, loop: asyncio.AbstractEventLoop) -> Any:
            def on_candidate(candidate: Candidate | None) -> None:
                if candidate is None:
                    loop.call_soon_threadsafe(to.end_of_remote_candidates)
                else:
                    remote = dataclasses.replace(candidate, base=None)
                    loop.call_soon_threadsafe(to.add_remote_candidate, remote)

            return on_candidate

        agent_a.on_candidate = deliver(agent_b, b.aio)
        agent_b.on_candidate = deliver(agent_a, a.aio)
        ca, cb = agent_a.local_credentials, agent_b.local_credentials

        async def credentials(agent: AsyncIceAgent, ufrag: str, pwd: str) -> None:
            agent.set_remote_credentials(ufrag, pwd)

        a.loop.run(credentials(agent_a, cb.ufrag, cb.pwd))
        b.loop.run(credentials(agent_b, ca.ufrag, ca.pwd))

    def _exchange(self, a: _Side, b: _Side, agent_a: AsyncIceAgent, agent_b: AsyncIceAgent) -> bool:
        ping_a, ping_b = b"natkit ice lab: from a", b"natkit ice lab: from b"
        got = [
            self._submit(b, _expect(agent_b, ping_a)),
            self._submit(a, _expect(agent_a, ping_b)),
        ]
        sent = [self._submit(a, _send(agent_a, ping_a)), self._submit(b, _send(agent_b, ping_b))]
        try:
            return all(f.result(5.0) for f in sent) and all(f.result(5.0) for f in got)
        except concurrent.futures.TimeoutError:
            return False
        finally:
            for fut in got:
                fut.cancel()

    def _close_agents(
        self, a: _Side, b: _Side, agent_a: AsyncIceAgent, agent_b: AsyncIceAgent
    ) -> None:
        closing = [self._submit(a, agent_a.close()), self._submit(b, agent_b.close())]
        for fut in closing:
            with contextlib.suppress(NatkitError, OSError, concurrent.futures.TimeoutError):
                fut.result(10.0)

    # -- relay failover -------------------------------------------------------------

    def relay_failover(
        self,
        engine_a: NatEngine,
        engine_b: NatEngine,
        *,
        before: float = 1.0,
        after: float = 5.0,
        period: float = 0.02,
    ) -> FailoverOutcome:
        """Connect over a relay, send media, kill the TURN server in use,
        measure the silence (needs ``turn_servers=2``)."""
        if len(self._turns) < 2:
            raise NatkitError("relay failover needs two TURN servers")
        a, b = self._side("a", engine_a), self._side("b", engine_b)
        agent_a, agent_b = self._agents(a, b)
        try:
            result = self._connect(a, b, agent_a, agent_b, timeout=20.0, settle=0.0)
            outcome = FailoverOutcome(result)
            if not result.connected:
                return outcome
            pumps = [_Pump(agent_a, period), _Pump(agent_b, period)]
            for side, pump in zip((a, b), pumps, strict=True):
                side.loop.run(pump.start())
            time.sleep(before)
            killed = a.loop.run(_relay_ip(agent_a))
            outcome.killed = killed
            killed_at = time.monotonic()
            for ip, runner, loop in zip(self.turn_ips, self._turns, self._turn_loops, strict=True):
                if ip == killed:
                    loop.run(_kill(runner))
            time.sleep(after)
            for side, pump in zip((a, b), pumps, strict=True):
                side.loop.run(pump.stop())
            end = time.monotonic()
            outcome.survivor = a.loop.run(_relay_ip(agent_a))
            outcome.gap_a = _longest_gap(pumps[0].arrivals, killed_at, end)
            outcome.gap_b = _longest_gap(pumps[1].arrivals, killed_at, end)
            outcome.received_a, outcome.received_b = (len(p.arrivals) for p in pumps)
            outcome.flowing = all(p.arrivals and p.arrivals[-1] > end - 0.1 for p in pumps)
            return outcome
        finally:
            self._close_agents(a, b, agent_a, agent_b)

    # -- calls between two user agents ----------------------------------------------

    def _ua_settings(self, side: _Side, user: str, tone: float, index: int) -> UserAgentSettings:
        assert self.sip_endpoint is not None and self.stun_endpoint is not None
        seed = self.seed * 1000 + self._runs * 10 + index
        return UserAgentSettings(
            aor=SipUri(scheme="sip", host=DOMAIN, user=user),
            local_ip=side.host.address,
            sip_port=SIP_PORT,
            proxy=self.sip_endpoint,
            register=True,
            stun_server=self.stun_endpoint,
            source=MediaSource(tone_hz=tone),
            # STUN, TURN over UDP and TCP: an INVITE of some 1,900 bytes, which
            # crosses the TUN NATs in IP fragments (natkit.ipfrag), as it would
            # cross Linux's NAT. (TURN/TLS needs a client context the UA lacks.)
            ice=self._gather_config(index, seed + 5, tls=False),
            ice_config=IceConfig(rng=seeded_rng(seed + 7)),
            rng=seeded_rng(seed),
        )

    def call(
        self,
        engine_a: NatEngine,
        engine_b: NatEngine,
        *,
        seconds: float = 2.0,
        timeout: float = 15.0,
    ) -> CallOutcome:
        """A call from a UA behind ``engine_a`` to one behind ``engine_b``
        (see the module docstring): ``seconds`` of two tones, then the
        caller hangs up. Fresh UAs (own users, sockets, NAT mappings) per call."""
        a, b = self._side("a", engine_a), self._side("b", engine_b)
        self.open_sip()
        self._runs += 1
        run = self._runs
        outcome = CallOutcome(a.engine.label, b.engine.label)
        ua_a = a.loop.run(_new_ua(self._ua_settings(a, f"alice{run}", TONE_A, 0)))
        ua_b = b.loop.run(_new_ua(self._ua_settings(b, f"bob{run}", TONE_B, 1)))
        try:
            starts = [self._submit(a, ua_a.start()), self._submit(b, ua_b.start())]
            for fut in starts:
                fut.result(timeout)
            self._talk(a, b, ua_a, ua_b, outcome, seconds=seconds, timeout=timeout)
        except concurrent.futures.TimeoutError:
            outcome.error = outcome.error or f"timed out after {timeout:g} s"
        except (NatkitError, OSError) as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        finally:
            closing = [self._submit(a, ua_a.close()), self._submit(b, ua_b.close())]
            for fut in closing:
                with contextlib.suppress(NatkitError, OSError, concurrent.futures.TimeoutError):
                    fut.result(10.0)
        outcome.observed = _call_verdict(outcome)
        return outcome

    def _talk(
        self,
        a: _Side,
        b: _Side,
        ua_a: UserAgent,
        ua_b: UserAgent,
        outcome: CallOutcome,
        *,
        seconds: float,
        timeout: float,
    ) -> None:
        started = time.monotonic()
        incoming = self._submit(b, _next_call(ua_b, timeout))
        call_a = a.loop.run(ua_a.call(f"sip:bob{self._runs}@{DOMAIN}"), timeout)
        call_b = incoming.result(timeout)
        deadline = started + timeout
        for side, call in ((a, call_a), (b, call_b)):
            side.loop.run(_established(call, deadline - time.monotonic()), timeout)
        outcome.setup_s = time.monotonic() - started
        time.sleep(seconds)
        a.loop.run(_read_path(call_a, outcome))
        a.loop.run(ua_a.hangup(call_a))
        with contextlib.suppress(concurrent.futures.TimeoutError, TimeoutError):
            b.loop.run(_ended(call_b, 5.0), 6.0)
        outcome.media_a = None if call_a.path is None else call_a.path.value
        outcome.media_b = None if call_b.path is None else call_b.path.value
        half = seconds / 2
        rec_a = a.loop.run(_recording(call_a))
        rec_b = b.loop.run(_recording(call_b))
        outcome.check_a = check_recording(rec_a, far_hz=TONE_B, own_hz=TONE_A, min_duration=half)
        outcome.check_b = check_recording(rec_b, far_hz=TONE_A, own_hz=TONE_B, min_duration=half)


async def _new_ua(settings: UserAgentSettings) -> UserAgent:
    return UserAgent(OsStack(), settings)


async def _next_call(ua: UserAgent, timeout: float) -> Call:
    async with asyncio.timeout(timeout):
        return await ua.incoming.get()


async def _established(call: Call, timeout: float) -> None:
    async with asyncio.timeout(max(0.0, timeout)):
        await call.established.wait()


async def _ended(call: Call, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        await call.ended.wait()


async def _recording(call: Call) -> Any:
    return call.recording()


async def _read_path(call: Call, outcome: CallOutcome) -> None:
    if call.ice is None:
        return
    described = describe_pair(call.ice)
    if described is None:
        return
    local, remote, _ = described
    outcome.path = path_of(local, remote)
    outcome.local_type, outcome.remote_type = local.type.value, remote.type.value


def _call_verdict(outcome: CallOutcome) -> str:
    if outcome.error is not None:
        return f"failed: {outcome.error}"
    if outcome.check_a is None or outcome.check_b is None:
        return "failed"
    audio = verdict(outcome.check_a, outcome.check_b)
    if outcome.media_a != MediaPath.ICE or outcome.media_b != MediaPath.ICE:
        return f"no ICE ({outcome.media_a}/{outcome.media_b}), {audio}"
    if audio != "two-way":
        return f"{audio} ({outcome.path})"
    return outcome.path or "failed"


async def _fill(
    result: ConnectResult, agent_a: AsyncIceAgent, agent_b: AsyncIceAgent, started: float
) -> None:
    fill_result(result, agent_a, agent_b, started)


async def _expect(agent: AsyncIceAgent, wanted: bytes) -> bool:
    while True:
        _, data = await agent.recv()
        if data == wanted:
            return True


async def _send(agent: AsyncIceAgent, data: bytes) -> bool:
    return agent.send(1, data)


async def _relay_ip(agent: AsyncIceAgent) -> str | None:
    pair = agent.selected_pair(1)
    if pair is None:
        return None
    for cand in pair:
        if cand.type is CandidateType.RELAYED:
            return cand.address.host
    return None


async def _kill(runner: TurnServerRunner) -> None:
    runner.close()


def _longest_gap(arrivals: list[float], since: float, until: float) -> float:
    times = sorted(t for t in arrivals if since <= t <= until)
    edges = [since, *times, until]
    return max(y - x for x, y in itertools.pairwise(edges))


def grid(names: Sequence[str] = ECC_TYPES) -> list[tuple[TunNat, TunNat]]:
    """Every ordered pair of natkit TUN NAT presets among ``names``."""
    return [(TunNat(a), TunNat(b)) for a in names for b in names]
