"""ICE across emulated NATs (the lab's NatBox core): direct where a direct
path exists, relayed elsewhere (DESIGN.md's matrix, RFC 6314 §5.2.2.3)."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint
from natkit.ice.agent import IceAgent
from natkit.ice.candidate import Candidate, CandidateType
from natkit.ice.events import ChecksCompleted, DataReceived
from natkit.nat import presets
from natkit.nat.box import NatBehavior, NatBox
from natkit.nat.presets import PORT_RESTRICTED_CONE as PRC
from natkit.rng import seeded_rng
from tests.ice.test_agent_harness import Net, as_remote, config, host, relay

STUN_SERVER = Endpoint("198.51.100.1", 3478)


def srflx_of(net: Net, box: NatBox, base: Candidate) -> Candidate:
    """Learn the NAT mapping toward the STUN server, as gathering would."""
    assert base.base is not None
    routed = net._through_boxes(base.base, STUN_SERVER)
    assert routed is not None
    return Candidate.local(
        CandidateType.SERVER_REFLEXIVE,
        routed[0],
        base=base.base,
        server=STUN_SERVER,
        related=base.base,
    )


def side(
    net: Net, seed: int, behavior: NatBehavior, n: int, *, controlling: bool
) -> tuple[IceAgent, list[Candidate]]:
    agent = net.add(IceAgent(config(seed), controlling=controlling))
    agent.add_stream()
    inside = f"10.{n}.0.0/16"
    box = NatBox(
        behavior, [f"203.0.113.{n}"], inside_networks=[inside], rng=seeded_rng(seed), name=f"n{n}"
    )
    net.add_box(box, inside)
    h = host(f"10.{n}.0.2", 5000)
    cands = [h, srflx_of(net, box, h), relay(f"198.51.100.{100 + n}", 7000)]
    for c in cands:
        assert c.base is not None
        net.add(agent, c.base)
    return agent, cands


CASES = [
    pytest.param(presets.FULL_CONE, presets.FULL_CONE, "direct", id="full-full"),
    pytest.param(PRC, presets.RESTRICTED_CONE, "direct", id="prc-rc"),
    pytest.param(PRC, PRC, "direct", id="prc-prc"),
    pytest.param(presets.SYMMETRIC, presets.FULL_CONE, "direct", id="sym-full"),
    pytest.param(presets.SYMMETRIC, presets.RESTRICTED_CONE, "direct", id="sym-rc"),
    pytest.param(presets.SYMMETRIC, PRC, "relay", id="sym-prc"),
    pytest.param(presets.SYMMETRIC, presets.SYMMETRIC, "relay", id="sym-sym"),
]


@pytest.mark.parametrize(("nat_a", "nat_b", "path"), CASES)
def test_connects_direct_where_theory_says_and_relayed_elsewhere(
    nat_a: NatBehavior, nat_b: NatBehavior, path: str
) -> None:
    net = Net(delay=0.05)  # 50 ms one way
    a, a_c = side(net, 60, nat_a, 1, controlling=True)
    b, b_c = side(net, 61, nat_b, 2, controlling=False)
    for x, y in ((a, b), (b, a)):
        creds = y.local_credentials(0)
        x.set_remote_credentials(0, creds.ufrag, creds.pwd)
    for c in a_c:
        a.add_local_candidate(0, c)
        b.add_remote_candidate(0, as_remote(c))
    for c in b_c:
        b.add_local_candidate(0, c)
        a.add_remote_candidate(0, as_remote(c))
    t = net.run(10.0, lambda: bool(net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)))
    assert net.of(a, ChecksCompleted) and net.of(b, ChecksCompleted)
    assert t < 1.0, f"connected after {t:.2f} s of virtual time"
    # Regular nomination waits a few round trips of the first valid pair
    # (IceConfig.nomination_rtts); a direct pair that succeeds later only on
    # a retransmission (symmetric/restricted-cone: the peer's check had to
    # open the filter first) replaces the relayed selection (upgrade).
    net.run(1.5)
    sel_a, sel_b = a.selected_pair(0, 1), b.selected_pair(0, 1)
    assert sel_a is not None and sel_b is not None
    relayed = CandidateType.RELAYED in (sel_a[0].type, sel_a[1].type)
    assert ("relay" if relayed else "direct") == path
    checks = a.checks_sent + b.checks_sent
    print(f"\n{path}: {sel_a[0].type}->{sel_a[1].type} at {t:.3f} s, {checks} checks")
    assert (CandidateType.RELAYED in (sel_b[0].type, sel_b[1].type)) == relayed
    assert a.send_data(0, 1, b"\x80ping", now=net.now)
    assert b.send_data(0, 1, b"\x80pong", now=net.now)
    net.run(0.5)
    assert net.of(b, DataReceived)[-1].data == b"\x80ping"
    assert net.of(a, DataReceived)[-1].data == b"\x80pong"
