"""The kernel's NAT, as the lab configures it: one nftables ``masquerade`` rule.

``masquerade`` rewrites the source of every packet leaving ``wan`` to the
router's address there, and conntrack sends the replies back. What that
means in RFC 4787 terms, as measured in this lab (docs/lab.md, "what Linux
NAT does"): endpoint-independent mapping with port preservation while the
port is free, address-and-port-dependent filtering (only a conntrack
entry's reply tuple gets back in), no hairpinning. ``fully-random``
(iptables' ``--random-fully``) picks a fresh random port for every new
flow, so the mapping becomes address-and-port dependent: a symmetric NAT.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from natkit.net.netns.topology import KernelNat

__all__ = ["TABLE", "masquerade_ruleset"]

TABLE = "natkit"


def masquerade_ruleset(engine: KernelNat, *, wan: str = "wan") -> str:
    """The ``nft -f`` input for a lab router whose outside interface is ``wan``."""
    flags = " fully-random" if engine.random_fully else ""
    return (
        f"table ip {TABLE} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    oifname "{wan}" masquerade{flags}\n'
        "  }\n"
        "}\n"
    )
