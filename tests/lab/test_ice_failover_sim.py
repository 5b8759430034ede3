"""Issue 6 failover, simulated internet: mid-session the TURN server in use
is killed, or a NAT drops every mapping; media (20 ms datagrams both ways)
resumes within 2 s of virtual time without a new offer/answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from natkit.ice.candidate import CandidateType
from natkit.ice.events import SelectedPairChanged
from natkit.lab.ice_connect import TURN_IPS, ConnectLab, MediaProbe
from natkit.net.sim import run_virtual

BREAK_AT = 1.0  # seconds of media before the failure
AFTER = 5.0  # seconds of media after it


async def media_across(
    lab: ConnectLab, breaker: Callable[[], Awaitable[None]]
) -> tuple[MediaProbe, float, float]:
    """Connect, send media, break something at BREAK_AT; returns the probe,
    when the break happened and when media stopped."""
    result = await lab.connect()
    assert result.connected and result.data_ok, result.to_json()
    loop = asyncio.get_running_loop()
    probe = MediaProbe(lab.a, lab.b)
    probe.start()
    await asyncio.sleep(BREAK_AT)
    broke_at = loop.time()
    await breaker()
    await asyncio.sleep(AFTER)
    await probe.stop()
    return probe, broke_at, loop.time()


def relay_ips(lab: ConnectLab) -> set[str]:
    pair = lab.a.selected_pair(1)
    assert pair is not None
    return {c.address.host for c in pair if c.type is CandidateType.RELAYED}


@pytest.mark.parametrize(
    ("nat_a", "nat_b"),
    [
        pytest.param("symmetric", "symmetric", id="symmetric--symmetric"),
        pytest.param("symmetric", "port-restricted-cone", id="symmetric--port-restricted"),
        pytest.param("port-restricted-cone", "symmetric", id="port-restricted--symmetric"),
    ],
)
def test_killing_the_turn_server_in_use_moves_media_to_the_hot_spare(
    nat_a: str, nat_b: str
) -> None:
    async def main() -> None:
        # Each agent gathers from its own TURN server: the spare path cannot
        # share the failure (see docs/ice.md, "Hot spares").
        lab = await ConnectLab.build(nat_a, nat_b, turn_servers=2, split_turn=True)
        killed: set[str] = set()

        async def kill_the_relay_in_use() -> None:
            killed.update(relay_ips(lab))
            assert len(killed) == 1
            for ip, runner in zip(TURN_IPS, lab.turn_servers, strict=True):
                if ip in killed:
                    runner.close()

        try:
            probe, broke_at, end = await media_across(lab, kill_the_relay_in_use)
            for side in ("a", "b"):
                gap = probe.longest_gap(side, since=broke_at - 0.1, until=end)
                assert gap < 2.0, (side, gap)
                assert probe.arrivals[side][-1] > end - 0.1  # still flowing at the end
            survivor = relay_ips(lab)
            assert survivor and not survivor & killed
            # The controlling agent fails over and re-nominates; the controlled
            # one fails over on its own or follows that nomination.
            reasons = [
                {e.reason for e in agent.events if isinstance(e, SelectedPairChanged)}
                for agent in (lab.a, lab.b)
            ]
            assert "failover" in reasons[0], reasons
            assert reasons[1] & {"failover", "nomination"}, reasons
        finally:
            await lab.close()

    run_virtual(main)


@pytest.mark.parametrize(
    ("nat_a", "nat_b"),
    [
        pytest.param("symmetric", "symmetric", id="symmetric--symmetric"),
        pytest.param("symmetric", "port-restricted-cone", id="symmetric--port-restricted"),
    ],
)
def test_with_both_turn_servers_shared_a_killed_server_takes_no_spare_with_it(
    nat_a: str, nat_b: str
) -> None:
    # Both agents gather from both servers: pairs through the dead server on
    # either side fail together, and the spare chosen must not be one of them
    # (failure domains, natkit.ice.consent), or media would wait for a second
    # timeout and the hold-down.
    async def main() -> None:
        lab = await ConnectLab.build(nat_a, nat_b, turn_servers=2)
        killed: set[str] = set()

        async def kill_one_relay_in_use() -> None:
            in_use = sorted(relay_ips(lab))
            assert in_use
            killed.add(in_use[0])
            for ip, runner in zip(TURN_IPS, lab.turn_servers, strict=True):
                if ip in killed:
                    runner.close()

        try:
            probe, broke_at, end = await media_across(lab, kill_one_relay_in_use)
            for side in ("a", "b"):
                gap = probe.longest_gap(side, since=broke_at - 0.1, until=end)
                assert gap < 2.0, (side, gap)
                assert probe.arrivals[side][-1] > end - 0.1
            assert not relay_ips(lab) & killed
        finally:
            await lab.close()

    run_virtual(main)


@pytest.mark.parametrize(
    ("nat_a", "nat_b", "rebooted", "path"),
    [
        pytest.param("full-cone", "port-restricted-cone", "nat-b", "direct", id="direct"),
        pytest.param("symmetric", "port-restricted-cone", "nat-b", "relay", id="relayed"),
        pytest.param("tandem", "full-cone", "cgn-a", "direct", id="tandem-cgn"),
        # A symmetric NAT maps anew after its reboot: the peer learns the new
        # mapping as a peer-reflexive candidate and moves media there.
        pytest.param("symmetric", "port-restricted-cone", "nat-a", "relay", id="symmetric"),
        pytest.param("symmetric", "symmetric", "nat-a", "relay", id="symmetric-both"),
    ],
)
def test_media_survives_a_nat_dropping_its_mappings(
    nat_a: str, nat_b: str, rebooted: str, path: str
) -> None:
    async def main() -> None:
        lab = await ConnectLab.build(nat_a, nat_b, turn_servers=2, split_turn=True)
        loop = asyncio.get_running_loop()
        dropped: list[int] = []

        async def reboot() -> None:
            dropped.append(lab.nat_boxes[rebooted].reboot(now=loop.time()))

        try:
            probe, broke_at, end = await media_across(lab, reboot)
            assert dropped[0] > 0  # there were mappings to lose
            for side in ("a", "b"):
                gap = probe.longest_gap(side, since=broke_at - 0.1, until=end)
                assert gap < 2.0, (side, gap)
                assert probe.arrivals[side][-1] > end - 0.1
            pair = lab.a.selected_pair(1)
            assert pair is not None
            relayed = any(c.type is CandidateType.RELAYED for c in pair)
            assert relayed == (path == "relay")
        finally:
            await lab.close()

    run_virtual(main)
