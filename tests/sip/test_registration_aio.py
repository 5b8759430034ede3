"""The registration agent against natkit's SIP server on the simulated
internet (virtual clock): digest, Outbound, keepalives, flow failure."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from natkit.addr import Endpoint
from natkit.net.sim import Internet, run_virtual
from natkit.rng import seeded_rng
from natkit.sip.aio.registration import RegistrationAgent
from natkit.sip.aio.server import SipServer, SipServerConfig
from natkit.sip.aio.users import add_user
from natkit.sip.flow import SipTransport, Target
from natkit.sip.registration import FlowConfig, RegistrationConfig
from natkit.sip.registration_events import FlowFailed, RegistrationSucceeded, Unregistered
from natkit.sip.uri import SipUri, parse_uri
from natkit.store.memory import MemoryStore

SERVER_IP = "203.0.113.10"
ALICE_IP = "192.0.2.7"
EPOCH = 1_800_000_000.0


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def wallclock() -> float:
    return EPOCH + asyncio.get_running_loop().time()


def agent_config(transport: SipTransport, password: str = "secret") -> RegistrationConfig:
    return RegistrationConfig(
        aor=sip("sip:alice@example.org"),
        registrar=sip("sip:example.org"),
        contact=sip(f"sip:alice@{ALICE_IP}:5070;transport={transport.value}"),
        sent_by=Endpoint(ALICE_IP, 5070),
        flows=(
            FlowConfig(
                Target(transport, Endpoint(SERVER_IP, 5060)),
                sip(f"sip:{SERVER_IP}:5060;transport={transport.value}"),
            ),
        ),
        expires=600,
        username="alice",
        password=password,
        rng=seeded_rng(5),
    )


@pytest.mark.parametrize(
    "transport",
    [pytest.param(SipTransport.TCP, id="tcp"), pytest.param(SipTransport.UDP, id="udp")],
)
def test_register_keepalives_for_an_hour_then_unregister(transport: SipTransport) -> None:
    async def main() -> None:
        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((transport, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
            flow_timer=30,
        )
        async with (
            SipServer(server_host.stack, config, store, rng=seeded_rng(1)),
            RegistrationAgent(alice_host.stack, agent_config(transport)) as agent,
        ):
            await asyncio.wait_for(agent.registered(), 30)
            first = agent.events.get_nowait()
            assert isinstance(first, RegistrationSucceeded)
            assert first.outbound and first.flow_timer == 30
            assert first.expires == 600
            await asyncio.sleep(3600)
            events = [agent.events.get_nowait() for _ in range(agent.events.qsize())]
            refreshes = [e for e in events if isinstance(e, RegistrationSucceeded)]
            assert not [e for e in events if isinstance(e, FlowFailed)]
            assert 11 <= len(refreshes) <= 13  # every 300 s
            assert agent.registered_flows == {1}
            await agent.unregister()
            assert agent.registered_flows == frozenset()
            last = [agent.events.get_nowait() for _ in range(agent.events.qsize())]
            assert any(isinstance(e, Unregistered) and e.status == 200 for e in last)

    run_virtual(main)


def test_server_closing_the_flow_fails_it_and_it_recovers() -> None:
    async def main() -> None:
        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((SipTransport.TCP, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
        )
        async with (
            SipServer(server_host.stack, config, store, rng=seeded_rng(1)) as server,
            RegistrationAgent(alice_host.stack, agent_config(SipTransport.TCP)) as agent,
        ):
            await asyncio.wait_for(agent.registered(), 30)
            while not agent.events.empty():
                agent.events.get_nowait()
            for source in server.transport.flows():
                server.transport.close_flow(source.flow)
            failed = await asyncio.wait_for(agent.events.get(), 30)
            assert isinstance(failed, FlowFailed)
            started = asyncio.get_running_loop().time()
            assert 30.0 <= failed.retry_at - started <= 60.0
            again = await asyncio.wait_for(agent.events.get(), 120)
            assert isinstance(again, RegistrationSucceeded)
            assert asyncio.get_running_loop().time() >= failed.retry_at

    run_virtual(main)


EDGE_IPS = ("203.0.113.21", "203.0.113.22")


def test_two_flows_via_two_edges_one_edge_dies_the_other_stays_registered() -> None:
    async def main() -> None:
        net = Internet(seed=4)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        store = MemoryStore(clock=wallclock)
        registrar = SipServer(
            server_host.stack,
            SipServerConfig(
                listen=((SipTransport.UDP, Endpoint(SERVER_IP, 5060)),),
                domains=frozenset({"example.org"}),
                secret=b"s" * 32,
                authenticate=False,
            ),
            store,
            rng=seeded_rng(1),
        )
        edges = [
            SipServer(
                net.add_host(f"edge{i}", ip).stack,
                SipServerConfig(
                    listen=(
                        (SipTransport.UDP, Endpoint(ip, 5060)),  # towards the registrar
                        (SipTransport.TCP, Endpoint(ip, 5060)),
                    ),
                    domains=frozenset(),
                    secret=b"s" * 32,
                    edge_upstream=Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060)),
                ),
                MemoryStore(clock=wallclock),
                rng=seeded_rng(10 + i),
            )
            for i, ip in enumerate(EDGE_IPS)
        ]
        config = dataclasses.replace(
            agent_config(SipTransport.TCP),
            flows=tuple(
                FlowConfig(
                    Target(SipTransport.TCP, Endpoint(ip, 5060)),
                    sip(f"sip:{ip}:5060;transport=tcp"),
                )
                for ip in EDGE_IPS
            ),
            username=None,
            password=None,
        )
        async with registrar, edges[0], edges[1]:
            agent = RegistrationAgent(alice_host.stack, config)
            await agent.start()
            await asyncio.wait_for(agent.registered(2), 30)
            bindings = await registrar.location.lookup("sip:alice@example.org")
            assert sorted(b.reg_id or 0 for b in bindings) == [1, 2]
            while not agent.events.empty():
                agent.events.get_nowait()
            await edges[0].close()
            failed = await asyncio.wait_for(agent.events.get(), 200)
            assert isinstance(failed, FlowFailed) and failed.flow == 1
            now = asyncio.get_running_loop().time()
            assert 90.0 <= failed.retry_at - now <= 180.0  # flow 2 is up: base 90 s
            assert agent.registered_flows == {2}
            await asyncio.sleep(1800)
            assert 2 in agent.registered_flows
            await agent.close()

    run_virtual(main)


def test_stun_keepalives_unanswered_fail_the_udp_flow_before_the_refresh() -> None:
    # RFC 5626 §4.4.1: the edge stops answering (here: the server is gone).
    # The STUN transaction times out (39.5 s) and the flow fails at once,
    # not at the REGISTER refresh 300 s later.
    async def main() -> tuple[str, float]:
        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((SipTransport.UDP, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
            flow_timer=30,
        )
        server = SipServer(server_host.stack, config, store, rng=seeded_rng(1))
        await server.start()
        async with RegistrationAgent(alice_host.stack, agent_config(SipTransport.UDP)) as agent:
            await asyncio.wait_for(agent.registered(), 30)
            await asyncio.sleep(100)  # a few keepalives answered
            while not agent.events.empty():
                assert not isinstance(agent.events.get_nowait(), FlowFailed)
            await server.close()
            stopped = asyncio.get_running_loop().time()
            failed = await asyncio.wait_for(agent.events.get(), 200)
            assert isinstance(failed, FlowFailed)
            return failed.reason, asyncio.get_running_loop().time() - stopped

    reason, after = run_virtual(main)
    assert reason == "STUN keepalive timed out"
    assert after <= 30 + 39.5 + 1  # one keepalive interval plus the STUN timeout


def test_a_nat_rebinding_the_udp_flow_fails_it_at_the_next_keepalive() -> None:
    # RFC 5626 §4.4.1: after the NAT forgot its mappings, the next STUN
    # keepalive comes out of a new external port; its XOR-MAPPED-ADDRESS is
    # not the address alice registered with, so the flow fails and is
    # registered again (§4.5) over the new mapping.
    from natkit.lab.topology import attach_nat
    from natkit.nat.box import NatBox
    from natkit.nat.presets import SYMMETRIC

    async def main() -> tuple[str, float, bool]:
        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        nat = attach_nat(net, SYMMETRIC, seed=3)
        alice_host = net.add_host("alice", behind=nat)
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((SipTransport.UDP, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
            flow_timer=30,
        )
        agent_cfg = dataclasses.replace(
            agent_config(SipTransport.UDP),
            contact=sip(f"sip:alice@{alice_host.ip}:5070;transport=udp"),
            sent_by=Endpoint(alice_host.ip, 5070),
        )
        loop = asyncio.get_running_loop()
        async with (
            SipServer(server_host.stack, config, store, rng=seeded_rng(1)),
            RegistrationAgent(alice_host.stack, agent_cfg) as agent,
        ):
            await asyncio.wait_for(agent.registered(), 30)
            await asyncio.sleep(70)
            while not agent.events.empty():
                assert not isinstance(agent.events.get_nowait(), FlowFailed)
            core = nat.core
            assert isinstance(core, NatBox)
            core.reboot(now=loop.time())
            nat.rearm()
            rebooted = loop.time()
            failed = await asyncio.wait_for(agent.events.get(), 100)
            assert isinstance(failed, FlowFailed)
            detected = loop.time() - rebooted
            again = await asyncio.wait_for(agent.events.get(), 100)
            return failed.reason, detected, isinstance(again, RegistrationSucceeded)

    reason, detected, registered_again = run_virtual(main)
    assert reason == "mapped address changed"
    assert detected <= 30 + 1  # within one keepalive interval (Flow-Timer)
    assert registered_again


def test_a_failed_flow_forgets_its_keepalive_under_way() -> None:
    # A STUN keepalive still retransmitting when its flow fails for another
    # reason must not report on the flow later (it may be registered anew by
    # then, and a late timeout would fail it for nothing).
    async def main() -> tuple[int, int]:
        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((SipTransport.UDP, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
            flow_timer=30,
        )
        server = SipServer(server_host.stack, config, store, rng=seeded_rng(1))
        await server.start()
        async with RegistrationAgent(alice_host.stack, agent_config(SipTransport.UDP)) as agent:
            await asyncio.wait_for(agent.registered(), 30)
            await server.close()
            while agent.stun.pending == 0:  # the next keepalive, unanswered
                await asyncio.sleep(0.5)
            in_flight = agent.stun.pending
            agent.client.flow_closed(1, now=asyncio.get_running_loop().time())
            agent._pump()
            return in_flight, agent.stun.pending

    in_flight, left = run_virtual(main)
    assert in_flight == 1 and left == 0


def test_requests_over_the_registered_flow_go_to_the_application() -> None:
    # A user agent shares the flow it registered (RFC 5626 §4.3): the home
    # proxy's requests for the contact, and responses to anything but REGISTER,
    # reach on_other_message; REGISTER responses stay with the client.
    async def main() -> list[str]:
        from natkit.sip.aio.transport import SipTransportLayer
        from natkit.sip.flow import Source
        from natkit.sip.message import SipMessage, SipRequest, SipResponse

        net = Internet(seed=3)
        server_host = net.add_host("server", SERVER_IP)
        alice_host = net.add_host("alice", ALICE_IP)
        bob_host = net.add_host("bob", "198.51.100.9")
        store = MemoryStore(clock=wallclock)
        await add_user(store, "example.org", "alice", "secret")
        config = SipServerConfig(
            listen=((SipTransport.UDP, Endpoint(SERVER_IP, 5060)),),
            domains=frozenset({"example.org"}),
            secret=b"s" * 32,
            authenticate=False,
        )
        seen: list[str] = []

        def other(message: SipMessage, source: Source) -> None:
            if isinstance(message, SipRequest):
                seen.append(message.method)
            elif isinstance(message, SipResponse):
                seen.append(f"{message.status} {message.cseq.method}")

        bob = SipTransportLayer(bob_host.stack, lambda m, s: None)
        await bob.listen(SipTransport.UDP, Endpoint("198.51.100.9", 5060))
        async with (
            SipServer(server_host.stack, config, store, rng=seeded_rng(1)),
            RegistrationAgent(
                alice_host.stack, agent_config(SipTransport.UDP), on_other_message=other
            ) as agent,
        ):
            await asyncio.wait_for(agent.registered(), 30)
            message = (
                b"MESSAGE sip:alice@example.org SIP/2.0\r\n"
                b"Via: SIP/2.0/UDP 198.51.100.9:5060;branch=z9hG4bKother1;rport\r\n"
                b"Max-Forwards: 70\r\nFrom: <sip:bob@example.org>;tag=b1\r\n"
                b"To: <sip:alice@example.org>\r\nCall-ID: other-1\r\nCSeq: 1 MESSAGE\r\n"
                b"Content-Length: 0\r\n\r\n"
            )
            await bob.send(message, Target(SipTransport.UDP, Endpoint(SERVER_IP, 5060)))
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.05)
            bob.close()
        return seen

    assert run_virtual(main) == ["MESSAGE"]
