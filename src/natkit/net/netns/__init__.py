"""The namespace lab: real packets through real and emulated NATs.

DESIGN.md principle 2's third stack: Linux network namespaces joined by veth
links, with NATs that are either the kernel's (nftables masquerade,
:class:`KernelNat`) or natkit's own NAT box on TUN devices
(:class:`TunNat`, every preset of :mod:`natkit.nat.presets`). Unmodified
programs run on lab hosts through ``ip netns exec`` (:meth:`Lab.exec`,
:meth:`Lab.run`). See :mod:`natkit.net.netns.topology` for the layout and the
safety rules, :mod:`natkit.net.netns.scenario` for the ready-made "STUN
server pair, a NAT, a host behind it" lab that ``natkit lab`` uses.

Everything here needs root; :class:`LabUnavailable` explains what is missing.
"""

from natkit.net.netns.errors import LabError, LabUnavailable
from natkit.net.netns.system import CleanReport, check_available, clean, lab_namespaces
from natkit.net.netns.topology import (
    Host,
    KernelNat,
    Lab,
    LabInterrupted,
    Nat,
    NatEngine,
    TunNat,
)

__all__ = [
    "CleanReport",
    "Host",
    "KernelNat",
    "Lab",
    "LabError",
    "LabInterrupted",
    "LabUnavailable",
    "Nat",
    "NatEngine",
    "TunNat",
    "check_available",
    "clean",
    "lab_namespaces",
]
