"""Matrix scenarios: IPv6 and IPv4 hosts reaching each other through a
dual-stack TURN server (RFC 6314 §6, RFC 6156 §3/§4): the client asks for a
relayed address of the family its peer has (REQUESTED-ADDRESS-FAMILY), the
server relays between the families; both directions must carry data."""

from __future__ import annotations

import asyncio
import random

from natkit.addr import Endpoint, Family, Transport
from natkit.lab.matrix import Scenario
from natkit.net.sim import Internet, Link, run_virtual
from natkit.turn.aio.client import AsyncTurnClient
from natkit.turn.aio.server import TurnServerRunner
from natkit.turn.credentials import StaticCredentials
from natkit.turn.server import TurnServerConfig

USER, PASSWORD, REALM = "matrix", "secret", "matrix.example"
TURN_V4, TURN_V6 = "203.0.113.14", "2001:db8::14"
CASES = (
    # (client address, TURN address it uses, relay family, peer address)
    ("2001:db8:1::2", TURN_V6, Family.IPV4, "198.51.100.20"),
    ("192.0.2.2", TURN_V4, Family.IPV6, "2001:db8:2::20"),
)


async def relay_between_families(
    client_ip: str, server_ip: str, family: Family, peer_ip: str, *, seed: int = 0
) -> str:
    """``"relayed both ways"`` when the peer got the client's datagram from
    the relayed address and the client got the peer's answer; else what failed."""
    net = Internet(seed=seed, default_link=Link(delay=0.02))
    turn_host = net.add_host("turn", [TURN_V4, TURN_V6])
    client_host = net.add_host("client", [client_ip])
    peer_host = net.add_host("peer", [peer_ip])
    server = TurnServerRunner(
        turn_host.stack,
        TurnServerConfig(
            realm=REALM, relay_ips=(TURN_V4, TURN_V6), rng=random.Random(seed), min_port=61000
        ),
        StaticCredentials.from_passwords({USER: PASSWORD}, REALM),
        listen=[(Transport.UDP, Endpoint(TURN_V4, 3478)), (Transport.UDP, Endpoint(TURN_V6, 3478))],
    )
    await server.start()
    got: asyncio.Queue[tuple[bytes, Endpoint]] = asyncio.Queue()
    peer = Endpoint(peer_ip, 6000)
    sock = await peer_host.stack.open_udp(peer, lambda d, a: got.put_nowait((d, a)))
    try:
        client = await AsyncTurnClient.connect(
            client_host.stack, Endpoint(server_ip, 3478), credentials=(USER, PASSWORD)
        )
        async with client:
            alloc = await client.allocate(family=family)
            relayed = alloc.relayed_endpoint
            await client.bind_channel(peer)
            client.send_to(b"to the peer", peer)
            data, source = await asyncio.wait_for(got.get(), 5)
            if (data, source) != (b"to the peer", relayed):
                return "peer saw something else"
            sock.send(b"to the client", relayed)
            answer = await asyncio.wait_for(client.recv(), 5)
            return "relayed both ways" if answer == (b"to the client", peer) else "one-way"
    except TimeoutError:
        return "failed"
    finally:
        sock.close()
        server.close()
        await server.wait_closed()


def _case(client_ip: str, server_ip: str, family: Family, peer_ip: str) -> Scenario:
    client_v = "v6" if ":" in client_ip else "v4"
    peer_v = "v6" if ":" in peer_ip else "v4"

    def run(seed: int) -> str:
        async def main() -> str:
            return await relay_between_families(client_ip, server_ip, family, peer_ip, seed=seed)

        return run_virtual(main, time_limit=600.0)

    return Scenario(
        name=f"ipv6/{client_v}-only-to-{peer_v}-only",
        group="ipv6",
        claim="RFC 6314 §6, RFC 6156: an IPv6-only and an IPv4-only host reach each "
        "other through a TURN relay of the other family",
        expected="relayed both ways",
        run=run,
    )


def scenarios() -> list[Scenario]:
    return [_case(*case) for case in CASES]
