"""Names for NAT behaviour, as the founding documents and RFC 4787 use them."""

from __future__ import annotations

import enum

__all__ = ["Filtering", "Mapping", "NatType"]


class NatType(enum.StrEnum):
    """Outcomes of the classic RFC 3489 §10.1 test (the ECC report's Annex A)."""

    OPEN_INTERNET = "open-internet"
    FULL_CONE = "full-cone"
    RESTRICTED_CONE = "restricted-cone"
    PORT_RESTRICTED_CONE = "port-restricted-cone"
    SYMMETRIC = "symmetric"
    SYMMETRIC_UDP_FIREWALL = "symmetric-udp-firewall"
    UDP_BLOCKED = "udp-blocked"
    UNDETERMINED = "server-cannot-tell"
    """The server could not run the test: it has no alternate address,
    ignores CHANGE-REQUEST, or answered from the wrong address."""


class Mapping(enum.StrEnum):
    """RFC 4787 §4.1 mapping behaviour (RFC 5780 §4.3 discovers it)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class Filtering(enum.StrEnum):
    """RFC 4787 §5 filtering behaviour (RFC 5780 §4.4 discovers it)."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
