"""The SIP server element end to end on the simulated internet: digest REGISTER,
a call routed over the callee's registered flow, the edge-only shape with Path."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from natkit.addr import Endpoint
from natkit.net.sim import Internet, SimHost, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.aio.resolve import ResolverConfig, SipResolver, StaticZone
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.aio.transport import SipTransportLayer
from natkit.sip.aio.users import add_user
from natkit.sip.digest import DigestClient
from natkit.sip.flow import SipTransport, Source, Target
from natkit.sip.message import SipMessage, SipRequest, SipResponse, make_response, parse_message
from natkit.sip.via_routing import client_via, response_target
from natkit.store.memory import MemoryStore

SERVER_IP = "203.0.113.10"
EDGE_IP = "203.0.113.20"
ALICE_IP = "192.0.2.7"
BOB_IP = "198.51.100.9"
SECRET = b"s" * 32
EPOCH = 1_800_000_000.0


def wallclock() -> float:
    return EPOCH + asyncio.get_running_loop().time()


@dataclass
class Phone:
    """A minimal user agent: a transport layer, hand-built requests, a queue of what arrives."""

    host: SimHost
    transport: SipTransport
    port: int
    layer: SipTransportLayer = field(init=False)
    inbox: asyncio.Queue[tuple[SipMessage, Source]] = field(default_factory=asyncio.Queue)
    cseq: int = 0

    def __post_init__(self) -> None:
        self.layer = SipTransportLayer(self.host.stack, self._on, rng=seeded_rng(self.port))

    def _on(self, message: SipMessage, source: Source) -> None:
        self.inbox.put_nowait((message, source))

    async def start(self) -> None:
        await self.layer.listen(self.transport, Endpoint(self.host.ip, self.port))

    async def next(self) -> tuple[SipMessage, Source]:
        return await asyncio.wait_for(self.inbox.get(), 30)

    def request(self, method: str, uri: str, *, to: str, user: str, extra: str = "") -> SipRequest:
        self.cseq += 1
        via = client_via(self.transport, Endpoint(self.host.ip, self.port), seeded_rng(self.cseq))
        text = (
            f"{method} {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:{user}@example.org>;tag={user}1\r\nTo: <{to}>\r\n"
            f"Call-ID: {user}-{method.lower()}\r\nCSeq: {self.cseq} {method}\r\n"
            f"Contact: <sip:{user}@{self.host.ip}:{self.port};transport={self.transport.value}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n"
        )
        parsed = parse_message(text.encode())
        assert isinstance(parsed, SipRequest)
        return parsed

    async def send(self, message: SipMessage, target: Target) -> None:
        await self.layer.send(message, target)

    async def reply(self, request: SipRequest, source: Source, status: int) -> SipResponse:
        response = make_response(request, status, to_tag="callee", copy_record_route=True)
        response.headers.add("Contact", f"<sip:alice@{self.host.ip}:{self.port}>")
        target = response_target(response, source)
        assert target is not None
        await self.layer.send(response, target)
        return response


INSTANCE = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


async def registered(
    phone: Phone,
    server: Target,
    *,
    password: str | None = "secret",
    instance: str | None = None,
    call_id: str | None = None,
) -> SipResponse:
    """Register alice from ``phone``; with ``instance``, as that
    ``+sip.instance`` asking for GRUUs (RFC 5627 §4.1)."""
    request = phone.request("REGISTER", "sip:example.org", to="sip:alice@example.org", user="alice")
    if instance is not None:
        contact = request.headers.get("Contact")
        request.headers.set("Contact", f'{contact};+sip.instance="<{instance}>"')
        request.headers.set("Supported", "gruu")
    if call_id is not None:
        request.headers.set("Call-ID", call_id)
    await phone.send(request, server)
    response, _ = await phone.next()
    assert isinstance(response, SipResponse)
    if response.status == 401:
        assert password is not None
        client = DigestClient("alice", password, rng=seeded_rng(3))
        retry = client.authorize(request, response)
        assert retry is not None
        phone.cseq += 1
        retry.headers.set("CSeq", f"{phone.cseq} REGISTER")
        via = client_via(phone.transport, Endpoint(phone.host.ip, phone.port), seeded_rng(99))
        retry.headers.set("Via", str(via))
        await phone.send(retry, server)
        response, _ = await phone.next()
        assert isinstance(response, SipResponse)
    assert response.status == 200, response.status
    return response


def world() -> tuple[Internet, SimHost, SimHost, SimHost]:
    net = Internet(seed=11)
    return (
        net,
        net.add_host("server", SERVER_IP),
        net.add_host("alice", ALICE_IP),
        net.add_host("bob", BOB_IP),
    )


def server_config(**changes: object) -> SipServerConfig:
    base: dict[str, object] = {
        "listen": (
            (SipTransport.UDP, Endpoint(SERVER_IP, 5060)),
            (SipTransport.TCP, Endpoint(SERVER_IP, 5060)),
        ),
        "domains": frozenset({"example.org"}),
        "secret": SECRET,
    }
    base.update(changes)
    return SipServerConfig(**base)  # type: ignore[arg-type]


UDP_SERVER = Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060))
TCP_SERVER = Target(SipTransport.TCP, Endpoint(SERVER_IP, 5060))


def test_register_with_digest_then_a_call_over_the_registered_tcp_flow() -> None:
    async def main() -> None:
        _, server_host, alice_host, bob_host = world()
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        async with SipServer(server_host.stack, server_config(), store, rng=seeded_rng(1)):
            alice = Phone(alice_host, SipTransport.TCP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(alice, TCP_SERVER)
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            await bob.send(invite, UDP_SERVER)
            # Alice gets the INVITE over the TCP connection she registered on.
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "INVITE"
            assert source.transport is SipTransport.TCP and source.remote.host == SERVER_IP
            assert str(arrived.uri).startswith(f"sip:alice@{ALICE_IP}")
            assert arrived.headers.get("Record-Route") is not None
            await alice.reply(arrived, source, 200)
            statuses = []
            while True:
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                statuses.append(response.status)
                if response.status >= 200:
                    break
            assert statuses[-1] == 200
            assert response.call_id == invite.call_id
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_wrong_password_is_challenged_again() -> None:
    async def main() -> None:
        _, server_host, alice_host, _ = world()
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        async with SipServer(server_host.stack, server_config(), store, rng=seeded_rng(1)):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            await alice.start()
            request = alice.request(
                "REGISTER", "sip:example.org", to="sip:alice@example.org", user="alice"
            )
            await alice.send(request, UDP_SERVER)
            challenge, _ = await alice.next()
            assert isinstance(challenge, SipResponse) and challenge.status == 401
            retry = DigestClient("alice", "wrong", rng=seeded_rng(3)).authorize(request, challenge)
            assert retry is not None
            retry.headers.set("CSeq", "2 REGISTER")
            retry.headers.set(
                "Via", str(client_via(SipTransport.UDP, Endpoint(ALICE_IP, 5070), seeded_rng(5)))
            )
            await alice.send(retry, UDP_SERVER)
            again, _ = await alice.next()
            assert isinstance(again, SipResponse) and again.status == 401
            alice.layer.close()

    run_virtual(main)


def test_unregistered_user_is_404_and_foreign_domains_are_refused() -> None:
    async def main() -> None:
        _, server_host, _, bob_host = world()
        store = MemoryStore(clock=wallclock)
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, store, rng=seeded_rng(1)):
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await bob.start()
            for uri, status in (("sip:nobody@example.org", 404), ("sip:x@elsewhere.example", 403)):
                await bob.send(bob.request("MESSAGE", uri, to=uri, user="bob"), UDP_SERVER)
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                assert response.status == status, uri
            await bob.send(
                bob.request("OPTIONS", "sip:example.org", to="sip:example.org", user="bob"),
                UDP_SERVER,
            )
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            bob.layer.close()

    run_virtual(main)


def test_split_edge_and_registrar_route_the_call_through_the_path() -> None:
    async def main() -> None:
        net, server_host, alice_host, bob_host = world()
        edge_host = net.add_host("edge", EDGE_IP)
        store = MemoryStore(clock=wallclock)
        registrar = SipServer(
            server_host.stack, server_config(authenticate=False), store, rng=seeded_rng(1)
        )
        edge_config = server_config(
            listen=(
                (SipTransport.UDP, Endpoint(EDGE_IP, 5060)),
                (SipTransport.TCP, Endpoint(EDGE_IP, 5060)),
            ),
            domains=frozenset(),
            edge_upstream=UDP_SERVER,
        )
        edge = SipServer(
            edge_host.stack, edge_config, MemoryStore(clock=wallclock), rng=seeded_rng(2)
        )
        async with registrar, edge:
            alice = Phone(alice_host, SipTransport.TCP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(
                alice, Target(SipTransport.TCP, Endpoint(EDGE_IP, 5060)), password=None
            )
            (binding,) = await registrar.location.lookup("sip:alice@example.org")
            assert binding.path and EDGE_IP in binding.path[0]
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            await bob.send(invite, UDP_SERVER)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "INVITE"
            assert source.remote.host == EDGE_IP and source.transport is SipTransport.TCP
            await alice.reply(arrived, source, 486)
            while True:
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                if response.status >= 200:
                    break
            assert response.status == 486
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_in_dialog_request_for_a_user_agent_on_the_servers_own_address_is_forwarded() -> None:
    # A UA on the server's IP at another port (sipp on loopback): its Contact
    # has no user part. A BYE that came through our Record-Route goes to that
    # remote target (RFC 3261 §16.12); it is not a request for the server (404).
    async def main() -> None:
        _, server_host, _, bob_host = world()
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)) as server:
            callee = Phone(server_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await callee.start()
            await bob.start()
            # The Record-Route the server gave bob's side of the dialog.
            bob_flow = Source(
                SipTransport.UDP, Endpoint(BOB_IP, 5080), Endpoint(SERVER_IP, 5060), "-"
            )
            route = f"<sip:{server.signer.encode(bob_flow)}@{SERVER_IP}:5060;lr>"
            bye = bob.request(
                "BYE",
                f"sip:{SERVER_IP}:5070",
                to="sip:alice@example.org",
                user="bob",
                extra=f"Route: {route}\r\n",
            )
            bye.headers.set("To", "<sip:alice@example.org>;tag=callee")  # in dialog
            assert bye.to.tag == "callee"
            await bob.send(bye, UDP_SERVER)
            arrived, source = await callee.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "BYE"
            assert arrived.headers.get("Route") is None
            await callee.reply(arrived, source, 200)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            callee.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_in_dialog_requests_for_a_served_gruu_go_over_the_registered_flow() -> None:
    # baresip's Contact in a dialog is its public GRUU (sip:USER@DOMAIN;gr=...,
    # RFC 5627 §5.1): the ACK and the BYE that come through our Record-Route
    # are routed by the location service, not resolved as a host name.
    async def main() -> None:
        _, server_host, alice_host, bob_host = world()
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)) as server:
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(alice, UDP_SERVER, password=None, instance=INSTANCE)
            gruu = f"sip:alice@example.org;gr={INSTANCE}"
            # The Record-Route the server gave bob's side (tokens make it ours).
            bob_flow = Source(
                SipTransport.UDP, Endpoint(BOB_IP, 5080), Endpoint(SERVER_IP, 5060), "-"
            )
            route = f"<sip:{server.signer.encode(bob_flow)}@{SERVER_IP}:5060;lr>"
            for method in ("ACK", "BYE"):
                request = bob.request(
                    method,
                    gruu,
                    to="sip:alice@example.org",
                    user="bob",
                    extra=f"Route: {route}\r\n",
                )
                request.headers.set("To", "<sip:alice@example.org>;tag=callee")
                await bob.send(request, UDP_SERVER)
                arrived, source = await alice.next()
                assert isinstance(arrived, SipRequest) and arrived.method == method
                assert source.remote.host == SERVER_IP
            assert isinstance(arrived, SipRequest)
            await alice.reply(arrived, source, 200)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_foreign_routes_and_forged_tokens_are_not_relayed() -> None:
    # Not an open relay: a Route or Request-URI elsewhere is followed only on a
    # Record-Route this server issued (a sealed token), never on host alone.
    async def main() -> None:
        _, server_host, _, bob_host = world()
        async with SipServer(
            server_host.stack, server_config(authenticate=False), MemoryStore(clock=wallclock)
        ):
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await bob.start()
            cases = [
                ("sip:x@elsewhere.example", "Route: <sip:198.51.100.77;lr>\r\n", 403),
                ("sip:x@elsewhere.example", f"Route: <sip:{SERVER_IP}:5060;lr>\r\n", 403),
                ("sip:x@198.51.100.77", f"Route: <sip:AAAAforged@{SERVER_IP}:5060;lr>\r\n", 403),
                ("sip:alice@example.org", "Route: garbage<<\r\n", 400),
            ]
            for uri, route, status in cases:
                request = bob.request("MESSAGE", uri, to=uri, user="bob", extra=route)
                await bob.send(request, UDP_SERVER)
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                assert response.status == status, (uri, route, response.status)
            bob.layer.close()

    run_virtual(main)


def test_a_call_to_a_natted_ua_keeps_its_dialog_on_her_flow() -> None:
    # alice's Contact is a private address behind a NAT; the double
    # Record-Route with both flows' tokens takes bob's ACK and BYE to her
    # over the flow she registered on (RFC 5658, RFC 5626 §5.3).
    from natkit.lab.topology import attach_nat
    from natkit.nat.presets import PORT_RESTRICTED_CONE

    async def main() -> None:
        net, server_host, _, bob_host = world()
        nat = attach_nat(net, PORT_RESTRICTED_CONE, seed=3)
        alice_host = net.add_host("alice-natted", behind=nat)
        async with SipServer(
            server_host.stack, server_config(authenticate=False), MemoryStore(clock=wallclock)
        ):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(alice, UDP_SERVER, password=None)
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            await bob.send(invite, UDP_SERVER)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "INVITE"
            assert len(arrived.name_addrs("Record-Route")) == 2
            await alice.reply(arrived, source, 200)
            while True:
                ok, _ = await bob.next()
                assert isinstance(ok, SipResponse)
                if ok.status >= 200:
                    break
            assert ok.status == 200
            routes = ", ".join(str(r) for r in reversed(ok.name_addrs("Record-Route")))
            remote_target = str(ok.contacts[0].uri) if ok.contacts != "*" else ""
            assert alice_host.ip in remote_target  # a private address
            for method in ("ACK", "BYE"):
                request = bob.request(
                    method,
                    remote_target,
                    to="sip:alice@example.org",
                    user="bob",
                    extra=f"Route: {routes}\r\n",
                )
                request.headers.set("To", str(ok.to))
                request.headers.set("Call-ID", invite.call_id)
                if method == "ACK":
                    request.headers.set("CSeq", f"{invite.cseq.seq} ACK")
                await bob.send(request, UDP_SERVER)
                got, got_source = await alice.next()
                assert isinstance(got, SipRequest) and got.method == method
            assert isinstance(got, SipRequest)
            await alice.reply(got, got_source, 200)
            bye_ok, _ = await bob.next()
            assert isinstance(bye_ok, SipResponse) and bye_ok.status == 200
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_a_wildcard_listener_names_the_server_by_its_address() -> None:
    # Listening on 0.0.0.0 must not put 0.0.0.0 in Via/Record-Route/Path, and
    # every local address is the server's own (no self-forwarding loops).
    async def main() -> None:
        _, server_host, _, bob_host = world()
        config = server_config(
            listen=((SipTransport.UDP, Endpoint("0.0.0.0", 5060)),), authenticate=False
        )
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)) as server:
            assert server.host == SERVER_IP
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await bob.start()
            uri = f"sip:{SERVER_IP}"
            await bob.send(bob.request("OPTIONS", uri, to=uri, user="bob"), UDP_SERVER)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            bob.layer.close()

    run_virtual(main)


def test_register_addressed_to_the_servers_ip_registers_in_the_to_domain() -> None:
    async def main() -> None:
        _, server_host, alice_host, _ = world()
        store = MemoryStore(clock=wallclock)
        async with SipServer(server_host.stack, server_config(authenticate=False), store) as server:
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            await alice.start()
            request = alice.request(
                "REGISTER", f"sip:{SERVER_IP}", to="sip:alice@example.org", user="alice"
            )
            await alice.send(request, UDP_SERVER)
            response, _ = await alice.next()
            assert isinstance(response, SipResponse) and response.status == 200
            assert await server.location.lookup("sip:alice@example.org")
            alice.layer.close()

    run_virtual(main)


def test_a_request_routed_back_to_the_server_itself_is_answered_482() -> None:
    # §16.3 step 4: a Record-Route token naming the server's own address as
    # the far party sends the MESSAGE back to the server; the second pass
    # carries our Via with the hash we would compute now: 482, not another
    # round (nor 403 for the Request-URI it would otherwise be refused on).
    async def main() -> None:
        _, server_host, _, bob_host = world()
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)) as server:
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await bob.start()
            to_itself = Source(
                SipTransport.UDP, Endpoint(SERVER_IP, 5060), Endpoint(SERVER_IP, 5060), "-"
            )
            route = f"<sip:{server.signer.encode(to_itself)}@{SERVER_IP}:5060;lr>"
            uri = "sip:carol@elsewhere.example"
            message = bob.request("MESSAGE", uri, to=uri, user="bob", extra=f"Route: {route}\r\n")
            await bob.send(message, UDP_SERVER)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 482
            bob.layer.close()

    run_virtual(main)


DEAD_IP = "198.51.100.66"
CARRIER_IP = "198.51.100.77"


def carrier_resolver(transport: str) -> SipResolver:
    """carrier.example: two SRV targets, the dead one first (RFC 3263 §4.3)."""
    service = "_sip._udp" if transport == "udp" else "_sip._tcp"
    zone = StaticZone(
        {
            ("carrier.example", "NAPTR"): [
                f'10 50 "s" "SIP+D2{"U" if transport == "udp" else "T"}" "" '
                f"{service}.carrier.example."
            ],
            (f"{service}.carrier.example", "SRV"): [
                "10 0 5060 dead.carrier.example.",
                "20 0 5060 live.carrier.example.",
            ],
            ("dead.carrier.example", "A"): [DEAD_IP],
            ("live.carrier.example", "A"): [CARRIER_IP],
        }
    )
    transports = (SipTransport.UDP,) if transport == "udp" else (SipTransport.TCP,)
    return SipResolver(zone, config=ResolverConfig(transports=transports), rng=seeded_rng(4))


@pytest.mark.parametrize("transport", [pytest.param("udp", id="udp-icmp"), "tcp"])
def test_a_forwarded_request_fails_over_to_the_next_server_of_the_plan(transport: str) -> None:
    # bob's BYE comes on his own Record-Route towards carol at carrier.example,
    # whose first SRV target is down: ICMP port unreachable (UDP) or a refused
    # connect (TCP) is a transport error, and the proxy tries the next server
    # of the plan with a new branch at once (RFC 3263 §4.3, RFC 3261 §16.7).
    async def main() -> None:
        net, server_host, _, bob_host = world()
        dead = net.add_host("dead", DEAD_IP)
        dead.stack.port_unreachable = True
        carrier_host = net.add_host("carrier", CARRIER_IP)
        config = server_config(authenticate=False)
        server = SipServer(
            server_host.stack,
            config,
            MemoryStore(clock=wallclock),
            resolver=carrier_resolver(transport),
        )
        async with server:
            sip_transport = SipTransport.UDP if transport == "udp" else SipTransport.TCP
            carol = Phone(carrier_host, sip_transport, 5060)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await carol.start()
            await bob.start()
            bob_flow = Source(
                SipTransport.UDP, Endpoint(BOB_IP, 5080), Endpoint(SERVER_IP, 5060), "-"
            )
            route = f"<sip:{server.signer.encode(bob_flow)}@{SERVER_IP}:5060;lr>"
            bye = bob.request(
                "BYE",
                "sip:carol@carrier.example",
                to="sip:carol@carrier.example",
                user="bob",
                extra=f"Route: {route}\r\n",
            )
            bye.headers.set("To", "<sip:carol@carrier.example>;tag=callee")
            started = asyncio.get_running_loop().time()
            await bob.send(bye, UDP_SERVER)
            arrived, source = await carol.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "BYE"
            assert asyncio.get_running_loop().time() - started < 1.0  # no timer F wait
            await carol.reply(arrived, source, 200)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            carol.layer.close()
            bob.layer.close()

    run_virtual(main)


def test_a_silent_first_server_is_left_after_the_transaction_timeout() -> None:
    # No ICMP (the dead host drops silently): timer F ends the first branch,
    # then the second server of the plan gets the request.
    async def main() -> None:
        net, server_host, _, bob_host = world()
        net.add_host("dead", DEAD_IP)
        carrier_host = net.add_host("carrier", CARRIER_IP)
        server = SipServer(
            server_host.stack,
            server_config(authenticate=False),
            MemoryStore(clock=wallclock),
            resolver=carrier_resolver("udp"),
        )
        async with server:
            carol = Phone(carrier_host, SipTransport.UDP, 5060)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await carol.start()
            await bob.start()
            bob_flow = Source(
                SipTransport.UDP, Endpoint(BOB_IP, 5080), Endpoint(SERVER_IP, 5060), "-"
            )
            route = f"<sip:{server.signer.encode(bob_flow)}@{SERVER_IP}:5060;lr>"
            uri = "sip:carol@carrier.example"
            message = bob.request("MESSAGE", uri, to=uri, user="bob", extra=f"Route: {route}\r\n")
            started = asyncio.get_running_loop().time()
            await bob.send(message, UDP_SERVER)
            arrived, _ = await asyncio.wait_for(carol.inbox.get(), 60)
            assert isinstance(arrived, SipRequest) and arrived.method == "MESSAGE"
            assert asyncio.get_running_loop().time() - started >= 32.0  # 64*T1
            carol.layer.close()
            bob.layer.close()

    run_virtual(main)


def temp_gruu_of(response: SipResponse) -> str:
    (contact,) = [c for c in response.contacts if c != "*"]
    assert not isinstance(contact, str)
    value = contact.param("temp-gruu")
    assert value
    return value.strip('"')


def test_a_request_for_a_temporary_gruu_reaches_that_instance_only() -> None:
    # RFC 5627 §8.4.1: the temp-gruu the registrar issued reaches the bindings
    # of that instance registered under the Call-ID it was issued with; the
    # AoR's other bindings (another phone of alice's) are not forked to.
    async def main() -> None:
        net, server_host, alice_host, bob_host = world()
        desk_host = net.add_host("desk", "192.0.2.8")
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            desk = Phone(desk_host, SipTransport.UDP, 5071)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            for phone in (alice, desk, bob):
                await phone.start()
            ok = await registered(alice, UDP_SERVER, password=None, instance=INSTANCE)
            await registered(desk, UDP_SERVER, password=None, call_id="desk-register")
            temp = temp_gruu_of(ok)
            assert ";gr" in temp and "alice" not in temp  # it hides the AoR (§3.2)
            message = bob.request("MESSAGE", temp, to=temp, user="bob")
            await bob.send(message, UDP_SERVER)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "MESSAGE"
            assert desk.inbox.empty()
            await alice.reply(arrived, source, 200)
            response, _ = await bob.next()
            assert isinstance(response, SipResponse) and response.status == 200
            for phone in (alice, desk, bob):
                phone.layer.close()

    run_virtual(main)


def test_gruus_without_a_binding_are_404_or_480() -> None:
    # §8.4.1: a GRUU that is not (or no longer) valid is 404, like any unknown
    # URI of the domain; a valid public GRUU whose instance has no contact
    # registered now is 480. A temporary GRUU dies with its Call-ID (§3.2).
    async def main() -> None:
        _, server_host, alice_host, bob_host = world()
        config = server_config(authenticate=False)
        async with SipServer(server_host.stack, config, MemoryStore(clock=wallclock)):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            first = await registered(alice, UDP_SERVER, password=None, instance=INSTANCE)
            old_temp = temp_gruu_of(first)
            # alice reboots: a new Call-ID for the same instance.
            await registered(
                alice, UDP_SERVER, password=None, instance=INSTANCE, call_id="after-reboot"
            )
            forged = old_temp.replace("tgruu.", "tgruu.AAAA")
            other = "sip:alice@example.org;gr=urn:uuid:00000000-0000-4000-8000-000000000000"
            cases = [(old_temp, 404), (forged, 404), (other, 480)]
            for uri, status in cases:
                await bob.send(bob.request("MESSAGE", uri, to=uri, user="bob"), UDP_SERVER)
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                assert response.status == status, uri
            assert alice.inbox.empty()
            alice.layer.close()
            bob.layer.close()

    run_virtual(main)


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param("expiry", id="registration-expires"),
        pytest.param("unregister", id="expires-0"),
    ],
)
def test_nat_pings_end_with_the_binding(ending: str) -> None:
    # A NATed UA without Outbound is pinged while registered; once its
    # binding expires unrefreshed, or it unregisters, no OPTIONS goes to it
    # any more and the pinger holds nothing (docs/sip-nat.md).
    from natkit.lab.sip_phone import LabPhone, lab_registrar
    from natkit.lab.topology import attach_nat
    from natkit.nat.presets import PORT_RESTRICTED_CONE

    async def main() -> tuple[int, int, int]:
        net = Internet(seed=3)
        nat = attach_nat(net, PORT_RESTRICTED_CONE, seed=3)
        registrar_host = net.add_host("registrar", "203.0.113.10")
        alice = LabPhone(net.add_host("alice", behind=nat), "alice")
        async with lab_registrar(registrar_host, nat_pings=True) as server:
            assert server.pinger is not None
            await alice.start()
            await alice.register(expires=60)
            assert (await alice.final_response(10)) is not None
            await asyncio.sleep(55.0)
            while_registered = sum(1 for r in alice.requests if r.method == "OPTIONS")
            if ending == "unregister":
                await alice.register(expires=0)
                assert (await alice.final_response(10)) is not None
            await asyncio.sleep(20.0)  # past the expiry either way
            after_end = sum(1 for r in alice.requests if r.method == "OPTIONS")
            await asyncio.sleep(300.0)
            later = sum(1 for r in alice.requests if r.method == "OPTIONS")
            alice.close()
            return while_registered, later - after_end, server.pinger.binding_count

    while_registered, pinged_after, tracked = run_virtual(main)
    assert while_registered >= 2  # every 20-25 s
    assert pinged_after == 0 and tracked == 0


def test_each_domain_challenges_in_its_own_realm_with_its_own_users() -> None:
    # One realm per served domain: alice@example.org and alice@example.net are
    # different users with their own passwords (users stored per realm); the
    # one's password does not register the other.
    async def main() -> None:
        _, server_host, alice_host, _ = world()
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "org-secret")
        await add_user(store, "example.net", "alice", "net-secret")
        config = server_config(domains=frozenset({"example.org", "example.net"}))
        async with SipServer(server_host.stack, config, store, rng=seeded_rng(1)):
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            await alice.start()
            cases = [
                ("example.org", "org-secret", 200),
                ("example.net", "net-secret", 200),
                ("example.net", "org-secret", 401),
            ]
            for domain, password, expected in cases:
                request = alice.request(
                    "REGISTER", f"sip:{domain}", to=f"sip:alice@{domain}", user="alice"
                )
                request.headers.set("From", f"<sip:alice@{domain}>;tag=a1")
                await alice.send(request, UDP_SERVER)
                challenge, _ = await alice.next()
                assert isinstance(challenge, SipResponse) and challenge.status == 401
                realms = {
                    value.split('realm="', 1)[1].split('"', 1)[0]
                    for value in challenge.headers.get_all("WWW-Authenticate")
                }
                assert realms == {domain}
                retry = DigestClient("alice", password, rng=seeded_rng(3)).authorize(
                    request, challenge
                )
                assert retry is not None
                alice.cseq += 1
                retry.headers.set("CSeq", f"{alice.cseq} REGISTER")
                via = client_via(SipTransport.UDP, Endpoint(ALICE_IP, 5070), seeded_rng(alice.cseq))
                retry.headers.set("Via", str(via))
                await alice.send(retry, UDP_SERVER)
                response, _ = await alice.next()
                assert isinstance(response, SipResponse)
                assert response.status == expected, (domain, password)
            alice.layer.close()

    run_virtual(main)


def test_a_configured_realm_is_shared_by_every_domain() -> None:
    async def main() -> None:
        _, server_host, alice_host, _ = world()
        config = server_config(domains=frozenset({"example.org", "example.net"}), realm="corp")
        async with SipServer(
            server_host.stack, config, MemoryStore(clock=wallclock), rng=seeded_rng(1)
        ) as server:
            alice = Phone(alice_host, SipTransport.UDP, 5070)
            for domain in ("example.org", "example.net"):
                request = alice.request(
                    "REGISTER", f"sip:{domain}", to=f"sip:alice@{domain}", user="alice"
                )
                assert server.realm_for(request) == "corp"

    run_virtual(main)


@pytest.mark.parametrize(
    ("trusted", "connections"),
    [
        pytest.param(True, 1, id="alias-honoured"),
        pytest.param(False, 2, id="untrusted-peer-new-connection"),
    ],
)
def test_connection_reuse_between_edge_and_registrar(trusted: bool, connections: int) -> None:
    # RFC 5923: the edge's Via carries alias on its TCP connection to the
    # registrar; a registrar that trusts the edge sends the call for alice
    # (Path first hop: the edge's address and port) back over that very
    # connection instead of opening one to the edge's listening port.
    async def main() -> tuple[int, bool]:
        net, server_host, alice_host, bob_host = world()
        edge_host = net.add_host("edge", EDGE_IP)
        registrar = SipServer(
            server_host.stack,
            server_config(
                authenticate=False, alias_peers=frozenset({EDGE_IP} if trusted else set())
            ),
            MemoryStore(clock=wallclock),
            rng=seeded_rng(1),
        )
        edge_config = server_config(
            listen=((SipTransport.TCP, Endpoint(EDGE_IP, 5060)),),
            domains=frozenset(),
            edge_upstream=TCP_SERVER,
            connection_reuse=True,
        )
        edge = SipServer(
            edge_host.stack, edge_config, MemoryStore(clock=wallclock), rng=seeded_rng(2)
        )
        async with registrar, edge:
            alice = Phone(alice_host, SipTransport.TCP, 5070)
            bob = Phone(bob_host, SipTransport.UDP, 5080)
            await alice.start()
            await bob.start()
            await registered(
                alice, Target(SipTransport.TCP, Endpoint(EDGE_IP, 5060)), password=None
            )
            invite = bob.request(
                "INVITE", "sip:alice@example.org", to="sip:alice@example.org", user="bob"
            )
            await bob.send(invite, UDP_SERVER)
            arrived, source = await alice.next()
            assert isinstance(arrived, SipRequest) and arrived.method == "INVITE"
            await alice.reply(arrived, source, 200)
            while True:
                response, _ = await bob.next()
                assert isinstance(response, SipResponse)
                if response.status >= 200:
                    break
            to_edge = [f for f in registrar.transport.flows() if f.remote.host == EDGE_IP]
            alice.layer.close()
            bob.layer.close()
            return len(to_edge), response.status == 200

    count, answered = run_virtual(main)
    assert answered
    assert count == connections
