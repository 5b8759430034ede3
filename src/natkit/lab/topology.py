"""The lab's one topology piece every scenario shares: a NAT (or a routed
firewall) in front of a client, optionally behind a second NAT in tandem.

Addresses are documentation and private ranges only: the NAT's public side
is ``NAT_PUBLIC_IP`` (198.51.100.1, TEST-NET-2), or 100.64.0.2 inside a
carrier-grade tandem; translated clients live in ``NAT_INSIDE``, clients
behind a routed firewall in ``FIREWALL_INSIDE`` (public TEST-NET-3 space the
internet routes to the firewall).
"""

from __future__ import annotations

from natkit.nat.box import NatBehavior, NatBox
from natkit.nat.presets import NatLayer
from natkit.net.sim import Internet, Middlebox
from natkit.rng import seeded_rng

__all__ = ["FIREWALL_INSIDE", "NAT_INSIDE", "NAT_PUBLIC_IP", "attach_nat"]

NAT_PUBLIC_IP = "198.51.100.1"
NAT_INSIDE = "192.168.1.0/24"
FIREWALL_INSIDE = "192.0.2.0/24"  # hosts behind a firewall keep public addresses


def attach_nat(
    net: Internet, behavior: NatBehavior, *, seed: int, tandem: NatLayer | None = None
) -> Middlebox:
    """Add the middlebox named ``nat`` with ``behavior`` to ``net`` (behind
    ``tandem``'s NAT when given, named after it) and return it: add the
    client with ``net.add_host(..., behind=box)``."""
    outer = None
    if tandem is not None:
        outer = net.add_middlebox(
            tandem.name,
            tandem.build(rng=seeded_rng(seed + 2), trace=False),
            list(tandem.public_ips),
            inside=list(tandem.inside_networks),
        )
    if behavior.translate:
        public = "100.64.0.2" if outer is not None else NAT_PUBLIC_IP
        box = NatBox(
            behavior, [public], inside_networks=[NAT_INSIDE], rng=seeded_rng(seed + 1), trace=False
        )
        return net.add_middlebox("nat", box, [public], inside=NAT_INSIDE, behind=outer)
    box = NatBox(
        behavior, [], inside_networks=[FIREWALL_INSIDE], rng=seeded_rng(seed + 1), trace=False
    )
    return net.add_middlebox("nat", box, [], inside=FIREWALL_INSIDE, behind=outer, routed=True)
