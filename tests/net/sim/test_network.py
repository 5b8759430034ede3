"""The simulated internet: delivery, delays, loss, TCP, and natkit's own
asyncio code (STUN server, client, natcheck) running unchanged on it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from natkit.addr import Endpoint
from natkit.errors import TransactionTimeout, TransportError
from natkit.nat.aio import natcheck
from natkit.nat.events import Side
from natkit.nat.natcheck import NatCheckConfig
from natkit.net.sim import Internet, Link, SimulationStalled, run_virtual
from natkit.net.stack import DatagramEndpoint, Stack, StreamConnection
from natkit.packet import Packet
from natkit.rng import seeded_rng
from natkit.stun.aio import AsyncStunClient, StunServerRunner
from natkit.stun.server import StunServerConfig
from natkit.stun.transaction import StunClientConfig

SERVER_IPS = ["203.0.113.10", "203.0.113.11"]


def test_sim_stack_implements_the_stack_protocol() -> None:
    async def main() -> None:
        net = Internet()
        assert isinstance(net.add_host("a", "192.0.2.1").stack, Stack)

    run_virtual(main)


def test_udp_delivery_takes_exactly_the_link_delays() -> None:
    async def main() -> tuple[bytes, Endpoint, float]:
        net = Internet(default_link=Link(delay=0.010))
        a = net.add_host("a", "192.0.2.1")
        b = net.add_host("b", "198.51.100.1", link=Link(delay=0.040))
        got: asyncio.Future[tuple[bytes, Endpoint, float]] = (
            asyncio.get_running_loop().create_future()
        )
        loop = asyncio.get_running_loop()
        await b.stack.open_udp(
            Endpoint("0.0.0.0", 3478), lambda d, r: got.set_result((d, r, loop.time()))
        )
        ep = await a.stack.open_udp(Endpoint("0.0.0.0", 0), lambda d, r: None)
        ep.send(b"hello", Endpoint("198.51.100.1", 3478))
        return await got

    data, src, at = run_virtual(main)
    assert (data, src.host) == (b"hello", "192.0.2.1")
    assert at == pytest.approx(0.050)


def test_binding_conflicts_and_foreign_addresses_are_refused() -> None:
    async def main() -> None:
        net = Internet()
        a = net.add_host("a", "192.0.2.1")
        ep = await a.stack.open_udp(Endpoint("192.0.2.1", 5000), lambda d, r: None)
        with pytest.raises(TransportError, match="in use"):
            await a.stack.open_udp(Endpoint("0.0.0.0", 5000), lambda d, r: None)
        with pytest.raises(TransportError, match="not an address"):
            await a.stack.open_udp(Endpoint("192.0.2.99", 5000), lambda d, r: None)
        ep.close()
        await ep.wait_closed()
        await a.stack.open_udp(Endpoint("0.0.0.0", 5000), lambda d, r: None)

    run_virtual(main)


def test_topology_rejects_reused_names_and_addresses() -> None:
    async def main() -> None:
        net = Internet()
        net.add_host("a", "192.0.2.1")
        with pytest.raises(ValueError, match="taken"):
            net.add_host("a", "192.0.2.2")
        with pytest.raises(ValueError, match="already used"):
            net.add_host("b", "192.0.2.1")
        with pytest.raises(ValueError, match="impossible link"):
            Link(loss=2.0)

    run_virtual(main)


async def _stun_pair(net: Internet) -> tuple[StunServerRunner, Endpoint]:
    server = net.add_host("stun", SERVER_IPS)
    primary, alternate = Endpoint(SERVER_IPS[0], 3478), Endpoint(SERVER_IPS[1], 3479)
    runner = StunServerRunner(
        server.stack, StunServerConfig(primary=primary, alternate=alternate, rfc5780=True)
    )
    await runner.start()
    return runner, primary


def test_natcheck_runs_unchanged_in_the_simulated_internet() -> None:
    async def main() -> dict[str, object]:
        net = Internet(default_link=Link(delay=0.025))
        runner, primary = await _stun_pair(net)
        client = net.add_host("client", "192.0.2.7")
        result = await natcheck(client.stack, primary, NatCheckConfig(rng=seeded_rng(1)))
        runner.close()
        return result.to_json()

    wall = time.perf_counter()
    result = run_virtual(main)
    assert time.perf_counter() - wall < 2.0
    assert result["classic"] == "open-internet"
    assert result["mapping"] == "endpoint-independent"
    assert result["filtering"] == "endpoint-independent"
    assert result["public_address"] == result["local_address"]
    # Everything ran concurrently: the answer took a few 50 ms round trips.
    assert result["elapsed_s"] == pytest.approx(0.1, abs=0.051)


def test_a_run_replays_exactly_from_its_seed() -> None:
    def once(seed: int) -> list[str]:
        async def main() -> list[str]:
            net = Internet(
                seed=seed, trace=True, default_link=Link(delay=0.02, jitter=0.01, loss=0.2)
            )
            runner, primary = await _stun_pair(net)
            client = net.add_host("client", "192.0.2.7")
            await natcheck(client.stack, primary, NatCheckConfig(rng=seeded_rng(seed)))
            runner.close()
            return net.trace_lines()

        return run_virtual(main)

    first = once(3)
    assert first == once(3)
    assert first != once(4)
    assert any("dropped" in line for line in first)


def test_minutes_of_stun_keepalives_run_fast() -> None:
    async def main() -> int:
        net = Internet(default_link=Link(delay=0.02))
        runner, primary = await _stun_pair(net)
        client = net.add_host("client", "192.0.2.7")
        async with await AsyncStunClient.open_udp(client.stack, Endpoint("0.0.0.0", 0)) as c:
            for _ in range(40):  # one Binding every 15 s for 10 minutes
                await c.binding(primary)
                await asyncio.sleep(15)
        runner.close()
        return runner.core.stats.responses

    wall = time.perf_counter()
    assert run_virtual(main) == 40
    assert time.perf_counter() - wall < 2.0


def test_unanswered_requests_time_out_in_virtual_time() -> None:
    async def main() -> float:
        net = Internet()
        client = net.add_host("client", "192.0.2.7")
        loop = asyncio.get_running_loop()
        async with await AsyncStunClient.open_udp(client.stack, Endpoint("0.0.0.0", 0)) as c:
            with pytest.raises(TransactionTimeout):
                await c.binding(Endpoint("198.51.100.200", 3478))
        return loop.time()

    assert run_virtual(main) == pytest.approx(39.5)


def test_waiting_forever_is_detected() -> None:
    async def main() -> None:
        net = Internet()
        a = net.add_host("a", "192.0.2.1")
        got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await a.stack.open_udp(Endpoint("0.0.0.0", 1), lambda d, r: got.set_result(d))
        await got  # nobody will ever send anything

    with pytest.raises(SimulationStalled):
        run_virtual(main)


def _collector(conn: StreamConnection) -> tuple[list[bytes], asyncio.Event]:
    chunks: list[bytes] = []
    eof = asyncio.Event()

    def on_data(data: bytes) -> None:
        if data:
            chunks.append(data)
        else:
            eof.set()

    conn.set_handler(on_data)
    return chunks, eof


@pytest.mark.parametrize(
    ("loss", "seed"),
    [pytest.param(0.0, 1, id="clean")]
    + [pytest.param(0.2, seed, id=f"lossy-seed{seed}") for seed in range(1, 9)],
)
def test_tcp_delivers_a_reliable_ordered_stream(loss: float, seed: int) -> None:
    payload = bytes(range(256)) * 40  # 10 KiB: several segments

    async def main() -> tuple[bytes, bytes]:
        net = Internet(seed=seed, default_link=Link(delay=0.01, loss=loss))
        a = net.add_host("a", "192.0.2.1")
        b = net.add_host("b", "198.51.100.1")
        server_side: list[tuple[list[bytes], asyncio.Event]] = []

        def on_connection(conn: StreamConnection) -> None:
            server_side.append(_collector(conn))
            conn.write(b"welcome")

        await b.stack.listen_stream(Endpoint("0.0.0.0", 443), on_connection)
        conn = await a.stack.connect_stream(Endpoint("198.51.100.1", 443), timeout=60)
        chunks, eof = _collector(conn)
        conn.write(payload)
        conn.close()
        await asyncio.wait_for(conn.wait_closed(), 600)
        await asyncio.wait_for(server_side[0][1].wait(), 600)
        assert eof.is_set()  # the server closed its side in answer to our FIN
        return b"".join(server_side[0][0]), b"".join(chunks)

    to_server, to_client = run_virtual(main)
    assert to_server == payload
    assert to_client == b"welcome"


def test_tcp_connect_to_a_closed_port_is_refused() -> None:
    async def main() -> None:
        net = Internet()
        a = net.add_host("a", "192.0.2.1")
        net.add_host("b", "198.51.100.1")
        with pytest.raises(TransportError, match="reset"):
            await a.stack.connect_stream(Endpoint("198.51.100.1", 80))
        with pytest.raises(TransportError, match="timed out"):
            await a.stack.connect_stream(Endpoint("198.51.100.99", 80), timeout=5)

    run_virtual(main)


def test_stun_over_tcp_in_the_simulation() -> None:
    async def main() -> tuple[Endpoint, Endpoint]:
        net = Internet()
        server = net.add_host("stun", "203.0.113.10")
        client = net.add_host("client", "192.0.2.7")
        async with StunServerRunner(
            server.stack, StunServerConfig(primary=Endpoint("203.0.113.10", 3478))
        ):
            c = await AsyncStunClient.connect(
                client.stack,
                Endpoint("203.0.113.10", 3478),
                config=StunClientConfig(rng=seeded_rng(2)),
            )
            mapped = await c.binding()
            c.close()
            return mapped, c.local_endpoint

    mapped, local = run_virtual(main)
    assert mapped == local


class _PassThrough:
    """A test middlebox that forwards without translating (a plain router)."""

    def __init__(self) -> None:
        self._out: list[tuple[Side, Packet]] = []

    def receive_packet(self, packet: Packet, *, side: Side, now: float) -> None:
        self._out.append((Side.OUTSIDE if side is Side.INSIDE else Side.INSIDE, packet))

    def packets_to_send(self, *, now: float) -> list[tuple[Side, Packet]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, *, now: float) -> None:
        pass

    def next_event(self) -> None:
        return None


def test_private_addresses_are_not_routable_from_the_internet() -> None:
    async def main() -> tuple[int, list[str]]:
        net = Internet(trace=True)
        router = net.add_middlebox(
            "router", _PassThrough(), ["198.51.100.50"], inside="10.0.0.0/24"
        )
        inside = net.add_host("inside", behind=router)
        net.add_host("stun", "203.0.113.10")
        assert inside.ip == "10.0.0.2"
        ep = await inside.stack.open_udp(Endpoint("0.0.0.0", 0), lambda d, r: None)
        ep.send(b"x", Endpoint("203.0.113.10", 9))
        await asyncio.sleep(1)
        return router.packets, net.trace_lines()

    packets, trace = run_virtual(main)
    assert packets == 1  # it went through the router ...
    assert any("delivered" in line for line in trace)  # ... reached the server's host ...
    assert not any("no route" in line for line in trace)  # (the server port is just closed)


def test_links_write_pcap_files_that_tshark_reads(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is missing: scripts/setup.sh installs Debian's tshark")
        pytest.skip("tshark not installed (Debian package tshark)")
    pcap = tmp_path / "client.pcap"

    async def main() -> None:
        net = Internet(default_link=Link(delay=0.02))
        runner, primary = await _stun_pair(net)
        client = net.add_host("client", "192.0.2.7")
        with pytest.raises(ValueError, match="no link"):
            net.capture("nobody", tmp_path / "x.pcap")
        net.capture("client", pcap)
        async with await AsyncStunClient.open_udp(client.stack, Endpoint("0.0.0.0", 0)) as c:
            await c.binding(primary)
        net.close_captures()
        runner.close()

    run_virtual(main)
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "frame.time_relative",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "stun.type",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line.strip()]
    assert [(r[1], r[2]) for r in rows] == [
        ("192.0.2.7", "203.0.113.10"),
        ("203.0.113.10", "192.0.2.7"),
    ]
    assert rows[0][3] == "0x0001" and rows[1][3] == "0x0101"  # Binding request, success response
    assert float(rows[1][0]) == pytest.approx(0.08)  # one virtual round trip: 2 x (20 + 20) ms


def test_a_middlebox_gateway_address_runs_services_for_the_inside() -> None:
    async def main() -> tuple[bytes, Endpoint]:
        net = Internet()
        router = net.add_middlebox(
            "router", _PassThrough(), ["198.51.100.50"], inside="10.0.0.0/24", gateway_ip="10.0.0.1"
        )
        assert router.gateway_host is not None
        inside = net.add_host("inside", behind=router)
        gw = router.gateway_host
        gw_ep_box: list[DatagramEndpoint] = []
        gw_ep = await gw.stack.open_udp(
            Endpoint("10.0.0.1", 5351), lambda d, r: gw_ep_box[0].send(b"pong:" + d, r)
        )
        gw_ep_box.append(gw_ep)
        got: asyncio.Future[tuple[bytes, Endpoint]] = asyncio.get_running_loop().create_future()
        ep = await inside.stack.open_udp(
            Endpoint("0.0.0.0", 0), lambda d, r: got.set_result((d, r))
        )
        ep.send(b"ping", Endpoint("10.0.0.1", 5351))
        return await got

    data, src = run_virtual(main)
    assert (data, src) == (b"pong:ping", Endpoint("10.0.0.1", 5351))


def test_nat_events_are_drained_and_can_be_observed() -> None:
    from natkit.nat.box import NatBox
    from natkit.nat.events import MappingCreated, PacketTranslated
    from natkit.nat.presets import PRESETS

    async def main() -> tuple[list[object], int]:
        net = Internet()
        box = NatBox(PRESETS["full-cone"], ["198.51.100.1"], inside_networks=["192.168.1.0/24"])
        nat = net.add_middlebox("nat", box, ["198.51.100.1"], inside="192.168.1.0/24")
        seen: list[object] = []
        nat.on_event = seen.append
        client = net.add_host("client", behind=nat)
        net.add_host("sink", "203.0.113.20")
        ep = await client.stack.open_udp(Endpoint("0.0.0.0", 0), lambda d, r: None)
        for _ in range(100):
            ep.send(b"x", Endpoint("203.0.113.20", 9))
        await asyncio.sleep(1)
        return seen, len(box._events)  # nothing left queued in the core

    seen, left = run_virtual(main)
    assert left == 0
    assert sum(isinstance(e, MappingCreated) for e in seen) == 1
    assert sum(isinstance(e, PacketTranslated) for e in seen) == 100


def test_a_cancelled_connect_frees_its_port_and_stops_sending() -> None:
    async def main() -> tuple[int, int, int]:
        net = Internet()
        a = net.add_host("a", "192.0.2.1")
        before = len(a.stack.bound())
        task = asyncio.ensure_future(
            a.stack.connect_stream(Endpoint("198.51.100.99", 80), timeout=60)
        )
        await asyncio.sleep(2.5)
        during = len(a.stack.bound())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        sent = net.delivered + net.dropped
        await asyncio.sleep(100)
        return before, during, len(a.stack.bound()) + (net.delivered + net.dropped - sent)

    before, during, after = run_virtual(main)
    assert (before, during, after) == (0, 1, 0)
