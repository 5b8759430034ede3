"""Named NAT and firewall behaviours, as the founding documents name them.

The ECC report (Annex A, after RFC 3489) names NATs by the classic cone
taxonomy; RFC 4787 replaced it with separate mapping and filtering
behaviours. Each preset here is a :class:`~natkit.nat.box.NatBehavior` with
the classic name as its key and the RFC 4787 terms beside it, so a lab
scenario can say ``preset("restricted-cone")`` and a reader can see exactly
what that means. :func:`classic_nat_type` says which RFC 3489 §10.1 outcome
a behaviour should produce, and :func:`carrier_grade_tandem` lays out a
carrier-grade NAT in front of a home NAT (the ECC report's §6.1 cascade).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from natkit.nat.box import NatBehavior, NatBox, Pooling, PortAssignment, Refresh
from natkit.nat.types import Filtering, Mapping, NatType
from natkit.packet import IpProto
from natkit.rng import Rng

__all__ = [
    "CARRIER_GRADE",
    "FULL_CONE",
    "LINUX_MASQUERADE",
    "NatLayer",
    "OPEN",
    "PORT_RESTRICTED_CONE",
    "PRESETS",
    "RESTRICTED_CONE",
    "SYMMETRIC",
    "SYMMETRIC_UDP_FIREWALL",
    "UDP_BLOCKED",
    "WEB_ONLY",
    "carrier_grade_tandem",
    "classic_nat_type",
    "preset",
]

_EIM = Mapping.ENDPOINT_INDEPENDENT
_APDM = Mapping.ADDRESS_AND_PORT_DEPENDENT
_EIF = Filtering.ENDPOINT_INDEPENDENT
_ADF = Filtering.ADDRESS_DEPENDENT
_APDF = Filtering.ADDRESS_AND_PORT_DEPENDENT

# No NAT, no filter: the host holds a public address.
OPEN = NatBehavior(translate=False, filtering=None)

# Endpoint-independent mapping, endpoint-independent filtering.
FULL_CONE = NatBehavior(mapping=_EIM, filtering=_EIF)

# Endpoint-independent mapping, address-dependent filtering.
RESTRICTED_CONE = NatBehavior(mapping=_EIM, filtering=_ADF)

# Endpoint-independent mapping, address-and-port-dependent filtering.
PORT_RESTRICTED_CONE = NatBehavior(mapping=_EIM, filtering=_APDF)

# Address-and-port-dependent mapping and filtering, random external ports.
SYMMETRIC = NatBehavior(
    mapping=_APDM, filtering=_APDF, port_assignment=PortAssignment.RANDOM, hairpinning=False
)

# No translation; address-and-port-dependent filtering (a stateful firewall).
SYMMETRIC_UDP_FIREWALL = NatBehavior(translate=False, filtering=_APDF)

# No translation; UDP dropped both ways, TCP through a stateful
# address-and-port-dependent filter.
UDP_BLOCKED = NatBehavior(translate=False, filtering=_APDF, udp_blocked=True)

# No translation; only outbound TCP to ports 80 and 443 (and its replies),
# as a corporate web-only firewall (ECC report §6.5).
WEB_ONLY = NatBehavior(
    translate=False,
    filtering=_APDF,
    udp_blocked=True,
    allowed_outbound=frozenset({(IpProto.TCP, 80), (IpProto.TCP, 443)}),
)

# Linux conntrack with `nft ... masquerade`: endpoint-independent mapping
# (conntrack keeps the source port when the new tuple is unique, which it is
# for every destination once the port is ours), port preservation,
# address-and-port-dependent filtering (only a conntrack entry's reply tuple
# gets back in), no hairpinning (PEERS.md: Debian's `stun` says "Independent
# Mapping, Port Dependent Filter, preserves ports, no hairpin"). Timers are
# the kernel's defaults: an answered-once UDP flow lives 30 s
# (nf_conntrack_udp_timeout), refreshed by packets both ways; TCP 5 days
# established and 120 s for SYN-sent/TIME-WAIT (below RFC 5382 REQ-5's
# 4 min: Linux is not conformant there). With no input rules the router's
# own stack answers what conntrack does not match with port unreachable.
LINUX_MASQUERADE = NatBehavior(
    mapping=_EIM,
    filtering=_APDF,
    port_assignment=PortAssignment.PRESERVING,
    hairpinning=False,
    udp_mapping_timeout=30.0,
    refresh=Refresh.BOTH,
    tcp_established_timeout=432000.0,
    tcp_transitory_timeout=120.0,
    icmp_on_closed=True,
)

# Carrier-grade NAT (RFC 6888): RFC 4787/5382 conformance (REQ-1), so
# endpoint-independent mapping and hairpinning (RFC 4787 REQ-9); paired
# pooling (REQ-2); address-and-port-dependent filtering; random ports,
# since many subscribers share each public address and port preservation
# would only favour whoever came first.
CARRIER_GRADE = NatBehavior(
    mapping=_EIM,
    filtering=_APDF,
    port_assignment=PortAssignment.RANDOM,
    pooling=Pooling.PAIRED,
    hairpinning=True,
)

PRESETS: dict[str, NatBehavior] = {
    "open": OPEN,
    "full-cone": FULL_CONE,
    "restricted-cone": RESTRICTED_CONE,
    "port-restricted-cone": PORT_RESTRICTED_CONE,
    "symmetric": SYMMETRIC,
    "symmetric-udp-firewall": SYMMETRIC_UDP_FIREWALL,
    "udp-blocked": UDP_BLOCKED,
    "web-only": WEB_ONLY,
    "linux-masquerade": LINUX_MASQUERADE,
    "carrier-grade": CARRIER_GRADE,
}


def preset(name: str) -> NatBehavior:
    """The behaviour named ``name``; ``ValueError`` listing the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        valid = ", ".join(PRESETS)
        raise ValueError(f"unknown NAT preset {name!r}; valid presets: {valid}") from None


def classic_nat_type(behavior: NatBehavior) -> NatType:
    """The RFC 3489 §10.1 outcome (ECC report Annex A) a correct classic
    detection reports behind ``behavior``.

    UDP that cannot get through at all is "UDP blocked"; without translation
    a filter that lets the changed-address answer (Test II) in is the open
    Internet, any stricter one a symmetric UDP firewall; with translation any
    endpoint-dependent mapping is symmetric and the filtering names the cone.
    """
    udp_allowed = behavior.allowed_outbound is None or any(
        proto is IpProto.UDP for proto, _ in behavior.allowed_outbound
    )
    if behavior.udp_blocked or not udp_allowed:
        return NatType.UDP_BLOCKED
    if not behavior.translate:
        if behavior.filtering in (None, _EIF):
            return NatType.OPEN_INTERNET
        return NatType.SYMMETRIC_UDP_FIREWALL
    if behavior.mapping is not _EIM:
        return NatType.SYMMETRIC
    if behavior.filtering is _EIF:
        return NatType.FULL_CONE
    if behavior.filtering is _ADF:
        return NatType.RESTRICTED_CONE
    return NatType.PORT_RESTRICTED_CONE


@dataclass(frozen=True, slots=True, kw_only=True)
class NatLayer:
    """One NAT of a topology: its behaviour and where it sits."""

    name: str
    behavior: NatBehavior
    public_ips: tuple[str, ...]
    inside_networks: tuple[str, ...]

    def build(self, *, rng: Rng | None = None, trace: bool = True) -> NatBox:
        """A :class:`NatBox` for this layer."""
        return NatBox(
            self.behavior,
            self.public_ips,
            inside_networks=self.inside_networks,
            rng=rng,
            name=self.name,
            trace=trace,
        )


def carrier_grade_tandem(
    home: str | NatBehavior = "port-restricted-cone",
    *,
    cgn_public_ips: Sequence[str] = ("203.0.113.100", "203.0.113.101"),
    cgn_inside: str = "100.64.0.0/10",
    home_public_ip: str = "100.64.0.2",
    home_inside: str = "192.168.1.0/24",
) -> tuple[NatLayer, NatLayer]:
    """NATs in tandem: ``(carrier-grade NAT, home NAT)``, outermost first.

    The carrier-grade NAT (:data:`CARRIER_GRADE`) owns documentation
    addresses and has the RFC 6598 shared space 100.64.0.0/10 inside; the
    home NAT (``home``, a preset name or a behaviour) sits in that space
    with a private network behind it. A host behind both learns a public
    address from STUN that its own router does not know about, which is what
    makes UPnP/NAT-PMP/PCP fail in a cascade (ECC report §6.1).
    """
    home_behavior = preset(home) if isinstance(home, str) else home
    return (
        NatLayer(
            name="cgn",
            behavior=CARRIER_GRADE,
            public_ips=tuple(cgn_public_ips),
            inside_networks=(cgn_inside,),
        ),
        NatLayer(
            name="home",
            behavior=home_behavior,
            public_ips=(home_public_ip,),
            inside_networks=(home_inside,),
        ),
    )
