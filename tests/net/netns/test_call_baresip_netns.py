"""baresip behind a NAT calls natkit's UA (and is called by it) through
``natkit serve`` and its media relay.

::

    phone 192.168.N.x   baresip (aufile 1000 Hz, sndfile recorder), Outbound to the server
      |
    nat                 natkit's TUN NAT, symmetric (or the kernel's masquerade)
      |
    server 203.0.113.x  natkit serve (SIP :5060, media relay, admin :9640)
                        + natkit's UserAgent alice (in-process, in the namespace), 440 Hz

baresip does no ICE and sits behind the NAT. ``natkit serve`` (policy
``auto``) anchors the call on its relay either way: when baresip calls, it
sees a NATed caller; when natkit's public UA calls baresip, it judges the
callee by its registered binding (a private Contact registered from the
NAT's address). Both SDPs name relay ports and the relay latches onto
baresip's NAT mapping. Both recordings must hold the
far tone, and ``/status.json`` must show the call relayed with packets.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.interop import call_peers as cp
from tests.interop import sip_peers as sp
from tests.interop.conftest import natkit_command

from natkit.addr import Endpoint
from natkit.net.netns import KernelNat, Lab, NatEngine, TunNat
from natkit.net.netns.system import in_namespace
from natkit.ua.aio.agent import Call, UserAgent

from .conftest import require_program

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]

DOMAIN = sp.DOMAIN
SIP_PORT = 5060
ADMIN_PORT = 9640
UA_PORT = 5070

SERVE_CONFIG = """\
data-dir = "{state}"
[stun]
listen = ["{ip}:3479"]
[turn]
enabled = false
[sip]
listen = ["udp:{ip}:{sip_port}"]
domain = ["{domain}"]
no-auth = true
[media_relay]
ipv4 = "{ip}"
min-port = 30000
max-port = 30999
policy = "{policy}"
[admin]
listen = "{ip}:{admin_port}"
insecure = true
"""


def status(netns: str, ip: str) -> dict[str, Any]:
    """``natkit serve``'s /status.json, fetched from inside the server's namespace."""

    def fetch() -> dict[str, Any]:
        url = f"http://{ip}:{ADMIN_PORT}/status.json"
        with urllib.request.urlopen(url, timeout=2) as response:
            loaded: dict[str, Any] = json.loads(response.read())
            return loaded

    return in_namespace(netns, fetch)


def wait_status(netns: str, ip: str, ready: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Exception | dict[str, Any] | None = None
    while time.monotonic() < deadline:
        try:
            doc = status(netns, ip)
        except OSError as exc:
            last = exc
        else:
            if ready(doc):
                return doc
            last = doc
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s (last: {last})")


@pytest.mark.parametrize("baresip_calls", [True, False], ids=["baresip-calls", "natkit-calls"])
@pytest.mark.parametrize(
    "engine",
    [
        pytest.param(TunNat("symmetric"), id="tun-symmetric"),
        pytest.param(KernelNat(), id="kernel-masquerade"),
    ],
)
def test_call_with_baresip_behind_nat_through_serve_relay(
    lab: Lab, tmp_path: Path, engine: NatEngine, baresip_calls: bool
) -> None:
    require_program("baresip", "baresip-core")
    nat = lab.add_nat("nat", engine)
    phone = lab.add_host("phone", behind=nat)
    server = lab.add_public_host("server")
    ip = server.address
    config = tmp_path / "natkit.toml"
    config.write_text(
        SERVE_CONFIG.format(
            state=tmp_path / "state",
            ip=ip,
            sip_port=SIP_PORT,
            admin_port=ADMIN_PORT,
            domain=DOMAIN,
            # auto relays a NATed caller, and a NATed callee judged by its
            # registered binding (docs/serve.md)
            policy="auto",
        )
    )
    argv = [*natkit_command(), "serve", "--config", str(config)]
    serve = lab.exec(server, argv, log_name="serve")
    try:
        wait_status(server.netns, ip, lambda d: "calls" in d, 15, "natkit serve never answered")
        outbound = f"sip:{ip}:{SIP_PORT};transport=udp"
        account = sp.account_line("bob", DOMAIN, outbound=outbound)
        peer = cp.start_baresip_caller(
            tmp_path / "phone", [account], host=phone.address, netns=phone.netns
        )
        try:
            wait_status(
                server.netns,
                ip,
                lambda d: any("bob" in r.get("aor", "") for r in d.get("registrations", [])),
                10,
                "baresip did not register through the NAT",
            )
            settings = cp.natkit_settings(
                "alice",
                Endpoint(ip, SIP_PORT),
                sip_port=UA_PORT,
                register=True,
                local_ip=ip,
            )

            async def scenario(ua: UserAgent) -> Call:
                if baresip_calls:
                    await asyncio.to_thread(peer.control.command, "dial", f"sip:alice@{DOMAIN}")
                    async with asyncio.timeout(10):
                        call = await ua.incoming.get()
                else:
                    call = await ua.call(f"sip:bob@{DOMAIN}")
                await cp.talk(call, hang_up=ua)
                return call

            result = in_namespace(
                server.netns, lambda: cp.run_natkit_ua(settings, scenario), timeout=60
            )
            peer.control.wait_event("CALL_CLOSED", timeout=5)
            heard_by_baresip = cp.baresip_recording(peer)
        finally:
            peer.stop()
        doc = status(server.netns, ip)
        calls = doc["calls"]
        assert calls, doc
        assert calls[0]["relayed"] is True and calls[0]["path"] == "relay", calls
        assert calls[0]["packets"] > 100, calls  # 2 x 3 s of 20 ms packets went through
        cp.assert_heard(result.recording, far_hz=cp.PEER_HZ, own_hz=cp.NATKIT_HZ, who="natkit")
        cp.assert_heard(heard_by_baresip, far_hz=cp.NATKIT_HZ, own_hz=cp.PEER_HZ, who="baresip")
    finally:
        status_code = lab.stop(serve)
        log = lab.log_text("serve")
    assert status_code == 0, f"natkit serve exited with {status_code}:\n{log[-4000:]}"
