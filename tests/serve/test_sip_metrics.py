"""natkit.sip.aio.metrics on the simulated internet: requests by method (an
unknown one counts as other), responses by class and direction, stream flows,
transactions, and the registration view behind /sessions and its kick."""

from __future__ import annotations

import asyncio

from natkit.addr import Endpoint
from natkit.lab.sip_phone import DOMAIN, REGISTRAR_IP
from natkit.net.sim import Internet, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.aio.metrics import RegistrationView, SipAdmin, SipCounters, SipMetrics, instrument
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipResponse
from natkit.store.memory import MemoryStore

CLIENT_IP = "198.51.100.80"


def _request(method: str, transport: str, port: int, n: int) -> bytes:
    uri = f"sip:{DOMAIN}" if method in ("REGISTER", "OPTIONS") else f"sip:nobody@{DOMAIN}"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {CLIENT_IP}:{port};branch=z9hG4bKm{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@{DOMAIN}>;tag=t{n}\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\nCall-ID: m{n}\r\nCSeq: {n} {method}\r\n"
        f"Contact: <sip:alice@{CLIENT_IP}:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_counters_gauges_and_the_registration_view() -> None:
    async def main() -> tuple[str, list[str], list[int], str]:
        net = Internet(seed=1)
        server_host = net.add_host("sip", [REGISTRAR_IP])
        client = net.add_host("client", [CLIENT_IP])
        got: asyncio.Queue[SipResponse] = asyncio.Queue()

        def on(message: SipMessage, source: Source) -> None:
            if isinstance(message, SipResponse):
                got.put_nowait(message)

        loop = asyncio.get_running_loop()
        config = SipServerConfig(
            listen=(
                (SipTransport.UDP, Endpoint(REGISTRAR_IP, 5060)),
                (SipTransport.TCP, Endpoint(REGISTRAR_IP, 5060)),
            ),
            domains=frozenset({DOMAIN}),
            secret=b"metrics-secret-metrics-secret-32",
            authenticate=False,
        )
        store = MemoryStore(clock=lambda: 1_800_000_000.0 + loop.time())
        async with SipServer(server_host.stack, config, store, rng=seeded_rng(1)) as server:
            counters = SipCounters()
            instrument(server, counters)
            view = RegistrationView(server.store)
            metrics = SipMetrics(server, counters, view)
            admin = SipAdmin(server, metrics, view)
            layer = SipTransportLayer(client.stack, on)
            await layer.listen(SipTransport.UDP, Endpoint(CLIENT_IP, 5060))
            udp = Target(SipTransport.UDP, Endpoint(REGISTRAR_IP, 5060))
            statuses = []
            for n, method in enumerate(("REGISTER", "OPTIONS", "FOO", "INVITE"), 1):
                await layer.send(_request(method, "UDP", 5060, n), udp)
                while (response := await asyncio.wait_for(got.get(), 10)).status < 200:
                    pass
                statuses.append(response.status)
            tcp = Target(SipTransport.TCP, Endpoint(REGISTRAR_IP, 5060))
            await layer.send(_request("OPTIONS", "TCP", 5060, 5), tcp)
            statuses.append((await asyncio.wait_for(got.get(), 10)).status)
            await view.refresh()
            before = metrics.render().decode()
            sessions = admin.sessions()
            assert admin.kick(sessions[0]["id"]) and not admin.kick(999)
            await admin.close()
            await view.refresh()
            after = [s["aor"] for s in admin.sessions()]
            layer.close()
        return before, after, statuses, sessions[0]["aor"]

    text, after, statuses, aor = run_virtual(main)
    assert statuses[:2] == [200, 200] and statuses[2] >= 400 and statuses[3:] == [404, 200]
    assert 'natkit_sip_requests_total{method="REGISTER"} 1.0' in text
    assert 'natkit_sip_requests_total{method="OPTIONS"} 2.0' in text
    assert 'natkit_sip_requests_total{method="other"} 1.0' in text
    assert 'natkit_sip_requests_total{method="INVITE"} 1.0' in text
    assert 'natkit_sip_responses_total{class="2xx",direction="sent"} 3.0' in text
    assert 'natkit_sip_responses_total{class="4xx",direction="sent"} 2.0' in text
    assert 'natkit_sip_flows{transport="tcp"} 1.0' in text
    assert "natkit_sip_registrations 1.0" in text and "natkit_sip_registered_aors 1.0" in text
    assert aor == f"sip:alice@{DOMAIN}" and after == []
