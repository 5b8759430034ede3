"""NAT behaviour: discovery (what NAT am I behind?) and emulation (the NAT box)."""

from natkit.nat.box import NatBehavior, NatBox, Pooling, PortAssignment, Refresh, Side
from natkit.nat.presets import PRESETS, preset

__all__ = [
    "PRESETS",
    "NatBehavior",
    "NatBox",
    "Pooling",
    "PortAssignment",
    "Refresh",
    "Side",
    "preset",
]
