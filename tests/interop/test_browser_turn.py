"""A real browser through the TURN server: headless Chromium's WebRTC stack.

One page, two RTCPeerConnections with ``iceTransportPolicy: 'relay'`` and a
single TURN server (tests/interop/browser.py): the data channel can only
open through two relayed allocations on that server. Each case sends
messages both ways, checks every one arrived in order, and checks from
``getStats()`` that both ends of each side's selected candidate pair are
``relay`` candidates on the server's relay address and port range, gathered
from the URL the page was given (so the traffic went through this server
and this transport: UDP, TCP, or TLS with a test CA's certificate and
``--ignore-certificate-errors``), and that the server counted the
allocations.

Servers: natkit's :class:`~natkit.turn.aio.server.TurnServerRunner` in
this process on the OS stack (loopback peers allowed: the browser's relayed
addresses are 127.0.0.1), and coturn's turnserver as the control: when
natkit fails a case that coturn passes, the harness is right and the server
is not. Credentials: a static user, and TURN REST ephemeral credentials
(``rest_credentials``; coturn's ``use-auth-secret``). For natkit the test
also waits for both allocations to go once the page closes its connections
(the browser deallocates with Refresh LIFETIME 0).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import ssl
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import trustme

from natkit.addr import Endpoint, Transport
from natkit.net.os_stack import OsStack
from natkit.turn.credentials import (
    CredentialSource,
    RestCredentials,
    StaticCredentials,
    rest_credentials,
)
from natkit.turn.server import TurnServerConfig

from .browser import (
    IceServer,
    RelayFailed,
    RelayResult,
    chromium,
    expected_messages,
    relay_data_channel,
    relay_page,
    turn_url,
)
from .conftest import (
    LOOPBACK,
    ManagedProcess,
    free_ports,
    natkit_command,
    require_program,
    start_process,
    wait_for_stun,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

REALM = "example.org"
USER = ("test", "test")
REST_SECRET = "natkit-browser-secret"
MIN_PORT = 61000
MAX_PORT = 65535
MESSAGES = 100
CONNECT_TIMEOUT = 20.0
TCP_READY_TRIES = 200


@dataclass
class TurnUnderTest:
    """A running TURN server the browser is pointed at."""

    name: str
    host: str
    ports: dict[str, int]  # "udp", "tcp", "tls" -> listening port
    min_port: int
    max_port: int
    allocations: Callable[[], int]  # allocations the server has created so far
    live_allocations: Callable[[], int] | None = None  # allocations it holds now
    refreshed: Callable[[], int] | None = None  # Refresh successes seen (a lower bound)

    def ice_server(self, transport: str, auth: str) -> IceServer:
        url = turn_url(self.host, self.ports[transport], transport)
        if auth == "rest":
            username, password = rest_credentials(
                REST_SECRET, "browser", expiry=int(time.time()) + 3600
            )
            return IceServer(url, username, password)
        return IceServer(url, *USER)


def wait_for_tcp(endpoint: Endpoint, process: ManagedProcess) -> None:
    """Connect until ``endpoint`` accepts (bounded), failing if ``process`` exits."""
    for _ in range(TCP_READY_TRIES):
        if process.popen.poll() is not None:
            pytest.fail(f"{process.name} exited:\n{process.log()}", pytrace=False)
        try:
            with socket.create_connection(endpoint, timeout=0.05):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{process.name} never accepted TCP on {endpoint}:\n{process.log()}")


def write_certificate(ca: trustme.CA, directory: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 from the session's test CA, as PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = directory / "turn-cert.pem", directory / "turn-key.pem"
    for index, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(cert_path), append=index > 0)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


COTURN_TURN_CONFIG = """\
# natkit interop: coturn as a TURN server for headless Chromium on loopback.
listening-ip={host}
relay-ip={host}
listening-port={port}
tls-listening-port={tls_port}
min-port={min_port}
max-port={max_port}
{auth}
realm={realm}
allow-loopback-peers
cert={cert}
pkey={pkey}
no-dtls
no-cli
no-rfc5780
pidfile={dir}/turnserver.pid
log-file={dir}/turnserver.log
simple-log
verbose
userdb={dir}/turndb
"""


def coturn_count(log_path: Path, line: str) -> Callable[[], int]:
    """How often coturn's verbose log has said ``line`` so far."""

    def count() -> int:
        try:
            text = log_path.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count(line)

    return count


def coturn_auth(auth: str) -> str:
    """coturn's keys for static users or REST secrets (``use-auth-secret``
    replaces the static users: one server does one or the other)."""
    if auth == "rest":
        return f"use-auth-secret\nstatic-auth-secret={REST_SECRET}"
    return f"lt-cred-mech\nuser={USER[0]}:{USER[1]}"


@dataclass(frozen=True)
class Lifetimes:
    """Short lifetimes, so that a test sees the browser refresh: seconds an
    allocation is granted (the server's default and maximum) and a nonce lasts."""

    allocation: int
    nonce: int


@asynccontextmanager
async def start_coturn(
    tmp_path: Path, tls_ca: trustme.CA, auth: str, lifetimes: Lifetimes | None = None
) -> AsyncIterator[TurnUnderTest]:
    """coturn's turnserver on 127.0.0.1 (UDP+TCP on one port, TLS on another)."""
    turnserver = require_program("turnserver", "coturn")
    port, tls_port = free_ports(2, hosts=(LOOPBACK,))
    cert, pkey = write_certificate(tls_ca, tmp_path)
    config = tmp_path / "turnserver.conf"
    config.write_text(
        COTURN_TURN_CONFIG.format(
            host=LOOPBACK,
            port=port,
            tls_port=tls_port,
            min_port=MIN_PORT,
            max_port=MAX_PORT,
            auth=coturn_auth(auth),
            realm=REALM,
            cert=cert,
            pkey=pkey,
            dir=tmp_path,
        )
    )
    if lifetimes is not None:
        with config.open("a") as f:
            f.write(f"max-allocate-lifetime={lifetimes.allocation}\n")
            f.write(f"stale-nonce={lifetimes.nonce}\n")
    proc = start_process("turnserver", [turnserver, "-c", str(config)], tmp_path)
    try:
        wait_for_stun([Endpoint(LOOPBACK, port)], proc)
        wait_for_tcp(Endpoint(LOOPBACK, tls_port), proc)
        yield TurnUnderTest(
            "coturn",
            LOOPBACK,
            {"udp": port, "tcp": port, "tls": tls_port},
            MIN_PORT,
            MAX_PORT,
            coturn_count(tmp_path / "turnserver.log", "ALLOCATE processed, success"),
            refreshed=coturn_count(tmp_path / "turnserver.log", "REFRESH processed, success"),
        )
    finally:
        proc.stop()


@asynccontextmanager
async def start_natkit(
    tmp_path: Path, tls_ca: trustme.CA, auth: str, lifetimes: Lifetimes | None = None
) -> AsyncIterator[TurnUnderTest]:
    """natkit's TURN server in this process, on the OS stack: UDP, TCP and
    TLS listeners on 127.0.0.1 (ports picked by the kernel), relays on
    127.0.0.1, loopback peers allowed (the browser's relayed addresses)."""
    from natkit.turn.aio.server import TurnServerRunner

    cert, pkey = write_certificate(tls_ca, tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, pkey)
    credentials: CredentialSource
    if auth == "rest":
        credentials = RestCredentials([REST_SECRET], REALM)
    else:
        credentials = StaticCredentials.from_passwords({USER[0]: USER[1]}, REALM)
    config = TurnServerConfig(
        realm=REALM,
        relay_ips=(LOOPBACK,),
        min_port=MIN_PORT,
        max_port=MAX_PORT,
        allowed_peers=(ipaddress.ip_network("127.0.0.0/8"),),
        wallclock=time.time,
    )
    if lifetimes is not None:
        config = dataclasses.replace(
            config,
            default_lifetime=lifetimes.allocation,
            max_lifetime=lifetimes.allocation,
            nonce_lifetime=lifetimes.nonce,
        )
    runner = TurnServerRunner(
        OsStack(),
        config,
        credentials,
        listen=[
            (Transport.UDP, Endpoint(LOOPBACK, 0)),
            (Transport.TCP, Endpoint(LOOPBACK, 0)),
            (Transport.TLS, Endpoint(LOOPBACK, 0)),
        ],
        tls=tls,
    )
    await runner.start()
    try:
        yield TurnUnderTest(
            "natkit",
            LOOPBACK,
            {
                "udp": runner.endpoint(Transport.UDP).port,
                "tcp": runner.endpoint(Transport.TCP).port,
                "tls": runner.endpoint(Transport.TLS).port,
            },
            MIN_PORT,
            MAX_PORT,
            lambda: runner.core.stats.allocations_created,
            lambda: len(runner.core.allocations()),
            lambda: sum(
                1
                for a in runner.core.allocations()
                if a.expires > a.created + config.default_lifetime + 0.1
            ),
        )
    finally:
        runner.close()
        await runner.wait_closed()


def natkit_metric(admin: Endpoint, name: str) -> int:
    """One unlabelled sample of ``natkit turn-server``'s /metrics."""
    with urllib.request.urlopen(f"http://{admin.host}:{admin.port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        metric, _, value = line.partition(" ")
        if metric == name:
            return int(float(value))
    raise AssertionError(f"no {name} in /metrics:\n{text}")


@asynccontextmanager
async def start_natkit_cli(
    tmp_path: Path, tls_ca: trustme.CA, auth: str, lifetimes: Lifetimes | None = None
) -> AsyncIterator[TurnUnderTest]:
    """``natkit turn-server`` as a subprocess, the way operators run it: a
    static user and a REST secret at once, loopback peers allowed, the admin
    endpoint on loopback for its allocation counters."""
    if lifetimes is not None:
        raise ValueError("natkit turn-server has no flag for the nonce lifetime")
    udp, tcp, tls, admin_port = free_ports(4, hosts=(LOOPBACK,))
    cert, pkey = write_certificate(tls_ca, tmp_path)
    admin = Endpoint(LOOPBACK, admin_port)
    argv = [
        *natkit_command(),
        "turn-server",
        *("--listen", f"udp:{LOOPBACK}:{udp}"),
        *("--listen", f"tcp:{LOOPBACK}:{tcp}"),
        *("--listen", f"tls:{LOOPBACK}:{tls}"),
        *("--tls-cert", str(cert), "--tls-key", str(pkey)),
        *("--realm", REALM, "--user", f"{USER[0]}:{USER[1]}", "--auth-secret", REST_SECRET),
        *("--relay-ip", LOOPBACK, "--allow-peer", "127.0.0.0/8"),
        *("--min-port", str(MIN_PORT), "--max-port", str(MAX_PORT)),
        *("--admin", f"{admin.host}:{admin.port}"),
    ]
    proc = start_process("natkit-turn-server", argv, tmp_path)
    status: int | None = None
    try:
        wait_for_stun([Endpoint(LOOPBACK, udp)], proc)
        wait_for_tcp(Endpoint(LOOPBACK, tcp), proc)
        wait_for_tcp(Endpoint(LOOPBACK, tls), proc)
        wait_for_tcp(admin, proc)
        yield TurnUnderTest(
            "natkit-cli",
            LOOPBACK,
            {"udp": udp, "tcp": tcp, "tls": tls},
            MIN_PORT,
            MAX_PORT,
            lambda: natkit_metric(admin, "natkit_turn_allocations_created_total"),
            lambda: natkit_metric(admin, "natkit_turn_allocations"),
        )
    finally:
        status = proc.stop()
    # SIGTERM is a graceful shutdown for the command (cli/turn_server.py).
    assert status == 0, f"natkit turn-server exited with {status}:\n{proc.log()}"


SERVERS = {"coturn": start_coturn, "natkit": start_natkit, "natkit-cli": start_natkit_cli}

CASES = [
    ("udp", "static"),
    ("tcp", "static"),
    ("tls", "static"),
    ("udp", "rest"),
    ("tls", "rest"),
]
CLI_CASES = [("udp", "static"), ("tls", "rest")]
"""The subprocess runs the same runner: two cases show the command's flags
(listeners, certificate, users, secrets, peers) reach it."""
PARAMS = [
    pytest.param(server, transport, auth, id=f"{server}-{transport}-{auth}")
    for server in SERVERS
    for transport, auth in (CLI_CASES if server == "natkit-cli" else CASES)
]


def check_relayed(
    result: RelayResult, server: TurnUnderTest, ice: IceServer, transport: str
) -> None:
    relay_protocol = "tls" if transport == "tls" else transport
    pairs = {"pc1": result.pc1, "pc2": result.pc2}
    for name, pair in pairs.items():
        other = pairs["pc2" if name == "pc1" else "pc1"]
        # libwebrtc shows a pair "in-progress" while a consent check is out.
        assert pair.state in ("succeeded", "in-progress"), (name, pair)
        assert pair.nominated and pair.responses_received > 0, (name, pair)
        assert pair.local.candidate_type == "relay", (name, pair.local)
        assert pair.remote.candidate_type == "relay", (name, pair.remote)
        assert pair.local.url == ice.url, (name, pair.local)
        assert pair.local.relay_protocol == relay_protocol, (name, pair.local)
        for end in (pair.local, pair.remote):
            assert end.address == server.host, (name, end)
            assert server.min_port <= end.port <= server.max_port, (name, end)
        # The remote end is the other side's relayed address: both allocations are ours.
        assert (pair.remote.address, pair.remote.port) == (other.local.address, other.local.port)
        assert pair.bytes_sent > 0 and pair.bytes_received > 0, (name, pair)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module (each case gets a fresh browser context);
    certificate errors ignored for the ``turns:`` cases' test CA."""
    async with chromium(ignore_certificate_errors=True) as launched:
        yield launched


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("server", "transport", "auth"), PARAMS)
async def test_chromium_data_channel_through_turn(
    browser: Browser, tmp_path: Path, tls_ca: trustme.CA, server: str, transport: str, auth: str
) -> None:
    async with SERVERS[server](tmp_path, tls_ca, auth) as turn:
        ice = turn.ice_server(transport, auth)
        result = await relay_data_channel(browser, ice, messages=MESSAGES, timeout=CONNECT_TIMEOUT)
        assert result.received_by_pc2 == expected_messages("pc1", "pc2", MESSAGES)
        assert result.received_by_pc1 == expected_messages("pc2", "pc1", MESSAGES)
        check_relayed(result, turn, ice, transport)
        assert turn.allocations() >= 2
        live = turn.live_allocations
        if live is not None:
            # Closing a connection deallocates (Refresh with LIFETIME 0, RFC 8656 §7.3).
            await wait_until(lambda: live() == 0, "allocations to go")


async def wait_until(condition: Callable[[], bool], what: str, *, timeout: float = 5.0) -> None:
    """Poll ``condition`` every 20 ms for at most ``timeout`` seconds."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"gave up waiting {timeout} s for {what}")


def refused_credentials(turn: TurnUnderTest, case: str) -> IceServer:
    """A wrong password for the static user, or a REST username that expired
    a minute ago (with the password its secret gives: only the time is wrong)."""
    if case == "expired-rest":
        username, password = rest_credentials(REST_SECRET, "browser", expiry=int(time.time()) - 60)
        return IceServer(turn.ice_server("udp", "rest").url, username, password)
    good = turn.ice_server("udp", "static")
    return IceServer(good.url, good.username, "not-the-password")


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", ["wrong-password", "expired-rest"])
@pytest.mark.parametrize("server", ["coturn", "natkit"])
async def test_chromium_with_refused_credentials_gets_the_servers_401(
    browser: Browser, tmp_path: Path, tls_ca: trustme.CA, server: str, case: str
) -> None:
    auth = "rest" if case == "expired-rest" else "static"
    async with SERVERS[server](tmp_path, tls_ca, auth) as turn:
        ice = refused_credentials(turn, case)
        with pytest.raises(RelayFailed) as failed:
            await relay_data_channel(browser, ice, messages=1, timeout=CONNECT_TIMEOUT)
        assert turn.allocations() == 0
    assert failed.value.state is not None
    errors = failed.value.state["errors"]
    assert {e["pc"] for e in errors} == {"pc1", "pc2"}, errors
    assert {(e["url"], e["errorCode"]) for e in errors} == {(ice.url, 401)}, errors


SHORT = Lifetimes(allocation=2, nonce=1)
"""libwebrtc refreshes a lifetime under 2 minutes at half of it: every second
here, and with nonces lasting 1 s the second refresh meets 438 Stale Nonce
and is retried with the new nonce (seen in a capture of the natkit cases;
coturn answers a Refresh without LIFETIME with 600 s, so it refreshes once)."""


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("server", "transport"), [("coturn", "udp"), ("natkit", "udp"), ("natkit", "tcp")]
)
async def test_chromium_keeps_relaying_across_refreshes_and_stale_nonces(
    browser: Browser, tmp_path: Path, tls_ca: trustme.CA, server: str, transport: str
) -> None:
    count, interval = 14, 0.2
    async with SERVERS[server](tmp_path, tls_ca, "static", SHORT) as turn:
        ice = turn.ice_server(transport, "static")
        async with relay_page(browser) as relay:
            await relay.connect(ice, timeout=CONNECT_TIMEOUT)
            to_pc1, to_pc2 = await relay.exchange(count, interval=interval, timeout=5.0)
            assert to_pc2 == expected_messages("pc1", "pc2", count)
            assert to_pc1 == expected_messages("pc2", "pc1", count)
            # 2.8 s of traffic outlived the first 2 s allocations: both were refreshed.
            assert turn.refreshed is not None
            assert turn.refreshed() >= 2
            pc1, pc2 = await relay.selected_pairs()
            assert pc1.local.candidate_type == pc2.local.candidate_type == "relay"
            await relay.close()
